//! `cargo xtask setup`: runs scripts/setup.sh.
//!
//! The versions it installs (userspace toolchain 1.98.0, eBPF toolchain nightly-2026-07-01 with
//! rust-src, bpf-linker 0.10.1) live in that script; keep them in step with rust-toolchain.toml
//! and `EBPF_TOOLCHAIN` in lockdown-user/build.rs. On a machine without the 1.98.0 toolchain
//! this verb cannot be built yet: run `scripts/setup.sh` directly there.

use std::process::Command;

use crate::util::{exec, workspace_root};

pub(crate) fn run() -> anyhow::Result<()> {
    let root = workspace_root();
    exec(
        Command::new("bash")
            .arg(root.join("scripts/setup.sh"))
            .current_dir(root),
    )
}
