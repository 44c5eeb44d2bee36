//! `cargo xtask build`: builds the lockdown binary with its embedded eBPF objects.

use clap::Parser;

use crate::util::build_lockdown;

#[derive(Parser)]
pub(crate) struct Options {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    let bin = build_lockdown(opts.release)?;
    println!("==> built {}", bin.display());
    Ok(())
}
