#!/usr/bin/env bash
# Fresh-machine bootstrap for lockdown. Idempotent: each step checks what is
# present and installs only what is missing. Safe to run from any directory.
#
#   - Debian packages used by the tests and the demo (bpftool if the archive has it)
#   - rustup toolchains: 1.98.0 (+clippy, rustfmt) for userspace and
#     nightly-2026-07-01 (+rust-src) for the eBPF programs
#   - bpf-linker 0.10.1
#   - bpffs mounted at /sys/fs/bpf
#
# Keep the versions in step with rust-toolchain.toml and lockdown-user/build.rs.
set -euo pipefail

USER_TOOLCHAIN="1.98.0"
USER_COMPONENTS=(clippy rustfmt)
EBPF_TOOLCHAIN="nightly-2026-07-01"
EBPF_COMPONENTS=(rust-src)
BPF_LINKER_VERSION="0.10.1"
APT_PACKAGES=(iproute2 iputils-ping iptables nftables ethtool netcat-openbsd procps util-linux systemd)
APT_OPTIONAL=(bpftool)

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Never let rustup install a toolchain behind our back; we do it explicitly below.
export RUSTUP_AUTO_INSTALL=0

step() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run as root directly; otherwise through sudo when it exists.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run this script as root or install sudo)"
    fi
}

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# ---------------------------------------------------------------- apt packages
apt_updated=0
apt_update_once() {
    if [[ $apt_updated -eq 0 ]]; then
        step "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
}
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    step "apt packages (${APT_PACKAGES[*]}): already present"
else
    apt_update_once
    step "apt-get install ${missing[*]}"
    apt_install "${missing[@]}"
fi

for p in "${APT_OPTIONAL[@]}"; do
    if pkg_installed "$p"; then
        step "optional apt package $p: already present"
        continue
    fi
    apt_update_once
    candidate="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z "$candidate" || "$candidate" == "(none)" ]]; then
        step "optional apt package $p: not available from apt, skipping"
        continue
    fi
    step "apt-get install $p (optional, $candidate)"
    apt_install "$p" || note "warning: installing optional package $p failed; continuing"
done

# ------------------------------------------------------------ rust toolchains
command -v rustup >/dev/null 2>&1 ||
    die "rustup not found (looked in PATH and ~/.cargo/bin); install rustup first"

# Capture first, then match: `cmd | grep -q` can fail under pipefail when grep
# exits early and cmd gets SIGPIPE.
toolchain_installed() {
    local list
    list="$(rustup toolchain list)"
    grep -q -- "^$1-" <<<"$list"
}
component_installed() { # toolchain component
    local list
    list="$(rustup component list --toolchain "$1" --installed 2>/dev/null || true)"
    grep -Eq -- "^$2(-|$)" <<<"$list"
}

ensure_toolchain() { # toolchain components...
    local tc="$1"
    shift
    local comps=("$@")
    if toolchain_installed "$tc"; then
        step "rust toolchain $tc: already present"
    else
        local joined
        joined="$(IFS=,; echo "${comps[*]}")"
        step "rustup toolchain install $tc --profile minimal --component $joined"
        rustup toolchain install "$tc" --profile minimal --component "$joined" --no-self-update
    fi
    local c
    for c in "${comps[@]}"; do
        if component_installed "$tc" "$c"; then
            step "component $c for $tc: already present"
        else
            step "rustup component add --toolchain $tc $c"
            rustup component add --toolchain "$tc" "$c"
        fi
    done
}

ensure_toolchain "$USER_TOOLCHAIN" "${USER_COMPONENTS[@]}"
ensure_toolchain "$EBPF_TOOLCHAIN" "${EBPF_COMPONENTS[@]}"

# ----------------------------------------------------------------- bpf-linker
have_linker=""
if command -v bpf-linker >/dev/null 2>&1; then
    have_linker="$(bpf-linker --version 2>/dev/null | awk '{print $2}' || true)"
fi
if [[ "$have_linker" == "$BPF_LINKER_VERSION" ]]; then
    step "bpf-linker $BPF_LINKER_VERSION: already present"
else
    if [[ -n "$have_linker" ]]; then
        note "found bpf-linker ${have_linker}, need ${BPF_LINKER_VERSION}"
    fi
    step "cargo +$USER_TOOLCHAIN install bpf-linker@$BPF_LINKER_VERSION --locked --force (about 80 s)"
    # Run outside the repo so the workspace's rust-toolchain.toml plays no part.
    (cd / && cargo "+$USER_TOOLCHAIN" install "bpf-linker@$BPF_LINKER_VERSION" --locked --force)
    got="$(bpf-linker --version | awk '{print $2}')"
    [[ "$got" == "$BPF_LINKER_VERSION" ]] ||
        die "bpf-linker --version reports '$got' after install, expected $BPF_LINKER_VERSION"
fi

# ---------------------------------------------------------------------- bpffs
if mountpoint -q /sys/fs/bpf; then
    step "bpffs at /sys/fs/bpf: already present"
else
    step "mount -t bpf bpf /sys/fs/bpf"
    as_root mkdir -p /sys/fs/bpf
    as_root mount -t bpf bpf /sys/fs/bpf
fi

step "setup done (repo: $REPO_ROOT)"
