//! `cargo xtask test`: the project's full test command.

use std::ffi::OsString;

use clap::Parser;

use crate::{
    deb, previous,
    util::{build_lockdown, cargo, ensure_bpffs, exec, require_root},
};

#[derive(Parser, Default)]
pub(crate) struct Options {
    /// Extra arguments for the integration test harness, after `--` (e.g. a test name filter).
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("`cargo xtask test`")?;
    ensure_bpffs()?;

    println!("==> building lockdown (the integration tests run it)");
    let bin = build_lockdown(false)?;
    let previous = previous::build()?;
    let package = deb::build()?;

    println!("==> host unit tests");
    exec(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "lockdown-ebpf",
        "--exclude",
        "lockdown-tests",
    ]))?;

    println!("==> kernel-state integration tests, one at a time");
    exec(
        cargo()
            .args(["test", "-p", "lockdown-tests", "--", "--test-threads=1"])
            .args(&opts.args)
            .env("LOCKDOWN_BIN", bin)
            .env("LOCKDOWN_PREVIOUS_BIN", previous)
            .env("LOCKDOWN_DEB", package),
    )?;

    println!("==> all tests passed");
    Ok(())
}
