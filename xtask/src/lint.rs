//! `cargo xtask lint`: formatting check, and clippy with warnings denied on the host crates and on
//! the eBPF crate for the BPF target.

use crate::util::{cargo, exec, workspace_root};

/// The eBPF toolchain (`scripts/setup.sh` installs it with clippy and rust-src).
const EBPF_TOOLCHAIN: &str = "+nightly-2026-07-01";

pub(crate) fn run() -> anyhow::Result<()> {
    println!("==> rustfmt");
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("==> clippy (host crates)");
    exec(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "lockdown-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("==> clippy (lockdown-ebpf, bpfel-unknown-none)");
    exec(
        cargo()
            .args([
                EBPF_TOOLCHAIN,
                "clippy",
                "-p",
                "lockdown-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
            // Its own target directory: the host build's fingerprints stay untouched.
            .env("CARGO_TARGET_DIR", workspace_root().join("target/bpf-lint")),
    )?;
    println!("==> lint clean");
    Ok(())
}
