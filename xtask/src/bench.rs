//! `cargo xtask bench`: builds lockdown and lockdown-bench in release mode and runs the
//! benchmarks, which write bench/RESULTS.md, bench/results.json and bench/chart.svg.

use std::{ffi::OsString, process::Command};

use clap::Parser;

use crate::util::{cargo, ensure_bpffs, exec, require_root, target_dir, workspace_root};

#[derive(Parser)]
pub(crate) struct Options {
    /// A short smoke run: fewer repeats, rounds and packets (still writes the outputs).
    #[arg(long)]
    pub quick: bool,
    /// Extra arguments for lockdown-bench, after `--` (e.g. `--only rx --filters iptables,lockdown-skb`).
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("`cargo xtask bench`")?;
    ensure_bpffs()?;

    println!("==> building lockdown and lockdown-bench (release)");
    exec(cargo().args([
        "build",
        "--release",
        "-p",
        "lockdown-user",
        "-p",
        "lockdown-bench",
    ]))?;

    let bin = target_dir().join("release");
    let mut bench = Command::new(bin.join("lockdown-bench"));
    bench
        .arg("--out")
        .arg(workspace_root().join("bench"))
        .arg("--lockdown")
        .arg(bin.join("lockdown"));
    if opts.quick {
        bench.arg("--quick");
    }
    bench.args(&opts.args);
    // lockdown-bench bounds every flood and wait itself, and cleans up on errors and Ctrl-C.
    exec(&mut bench)
}
