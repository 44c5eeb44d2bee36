//! `cargo xtask lint`: formatting check and clippy with warnings denied.

use crate::util::{cargo, exec};

pub fn run() -> anyhow::Result<()> {
    println!("==> rustfmt");
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    println!("==> clippy");
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
    println!("==> lint clean");
    Ok(())
}
