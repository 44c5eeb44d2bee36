#!/usr/bin/env bash
# Fresh-machine bootstrap for lockdown. Idempotent: each step checks what is
# present and installs only what is missing. Safe to run from any directory.
#
#   - Debian packages used by the tests, the demo and the kernel matrix (QEMU, busybox-static;
#     bpftool if the archive has it)
#   - rustup toolchains: 1.98.0 (+clippy, rustfmt) for userspace and
#     nightly-2026-07-01 (+rust-src) for the eBPF programs
#   - bpf-linker 0.10.1
#   - cargo-deb 3.8.0 (`cargo xtask deb` builds the .deb with it)
#   - bpffs mounted at /sys/fs/bpf
#
# Keep the versions in step with rust-toolchain.toml and lockdown-user/build.rs.
set -euo pipefail

USER_TOOLCHAIN="1.98.0"
USER_COMPONENTS=(clippy rustfmt)
EBPF_TOOLCHAIN="nightly-2026-07-01"
EBPF_COMPONENTS=(rust-src clippy)
BPF_LINKER_VERSION="0.10.1"
CARGO_DEB_VERSION="3.8.0"
APT_PACKAGES=(iproute2 iputils-ping iptables nftables ethtool netcat-openbsd procps util-linux systemd
    dpkg-dev man-db bash-completion openssh-server openssh-client fail2ban
    qemu-system-x86 busybox-static xz-utils binutils
    clang libbpf-dev linux-libc-dev hping3 netsniff-ng)
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
# Daemons in these packages (sshd, fail2ban) must not start on the host: the tests run their own,
# inside network namespaces. policy-rc.d answering 101 forbids every start during the install.
apt_install() {
    local policy=/usr/sbin/policy-rc.d ours=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        ours=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" || rc=$?
    if [[ $ours -eq 1 ]]; then
        as_root rm -f "$policy"
    fi
    return "$rc"
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

# ------------------------------------------------- cargo tools: bpf-linker, cargo-deb
# The version a tool reports: the last word of `TOOL --version` (`bpf-linker 0.10.1`,
# `cargo-deb 3.8.0`), or nothing when it is not installed.
tool_version() {
    command -v "$1" >/dev/null 2>&1 || return 0
    "$1" --version 2>/dev/null | awk '{print $NF}' || true
}

ensure_cargo_tool() { # crate version what-it-costs
    local have
    have="$(tool_version "$1")"
    if [[ "$have" == "$2" ]]; then
        step "$1 $2: already present"
        return
    fi
    if [[ -n "$have" ]]; then
        note "found $1 ${have}, need $2"
    fi
    step "cargo +$USER_TOOLCHAIN install $1@$2 --locked --force ($3)"
    # Run outside the repo so the workspace's rust-toolchain.toml plays no part.
    (cd / && cargo "+$USER_TOOLCHAIN" install "$1@$2" --locked --force)
    have="$(tool_version "$1")"
    [[ "$have" == "$2" ]] || die "$1 --version reports '$have' after install, expected $2"
}

ensure_cargo_tool bpf-linker "$BPF_LINKER_VERSION" "about 80 s"
ensure_cargo_tool cargo-deb "$CARGO_DEB_VERSION" "about 2 min"

# ---------------------------------------------------------------------- bpffs
if mountpoint -q /sys/fs/bpf; then
    step "bpffs at /sys/fs/bpf: already present"
else
    step "mount -t bpf bpf /sys/fs/bpf"
    as_root mkdir -p /sys/fs/bpf
    as_root mount -t bpf bpf /sys/fs/bpf
fi

step "setup done (repo: $REPO_ROOT)"
