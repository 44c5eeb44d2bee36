//! `cargo xtask ci`: what `.ci/run` runs once scripts/setup.sh has prepared the machine.

use clap::Parser as _;

use crate::{lint, test, test_kernels};

pub(crate) fn run() -> anyhow::Result<()> {
    lint::run()?;
    test::run(&test::Options::default())?;
    test_kernels::run(&test_kernels::Options::parse_from(["test-kernels"]))
}
