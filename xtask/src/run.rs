//! `cargo xtask run`: builds lockdown and runs it as root with the given arguments.

use std::{ffi::OsString, os::unix::process::CommandExt as _, process::Command};

use anyhow::bail;
use clap::Parser;

use crate::util::{build_lockdown, display, is_root, which};

#[derive(Parser)]
pub(crate) struct Options {
    /// Build and run the release binary.
    #[arg(long)]
    pub release: bool,
    /// Arguments for lockdown, after `--` (e.g. `-- up --iface eth0`).
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub(crate) fn run(opts: Options) -> anyhow::Result<()> {
    let Options { release, args } = opts;
    let bin = build_lockdown(release)?;
    let mut cmd = if is_root() {
        Command::new(&bin)
    } else if let Some(sudo) = which("sudo") {
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&bin);
        cmd
    } else {
        bail!(
            "lockdown needs root (to load BPF programs) and sudo is not installed: \
             run `{}` as root",
            bin.display()
        );
    };
    cmd.args(args);
    println!("$ {}", display(&cmd));
    // Replace this process so that signals and the exit code are lockdown's own.
    let err = cmd.exec();
    bail!("failed to run `{}`: {err}", display(&cmd))
}
