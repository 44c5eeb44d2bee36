//! `cargo xtask ci`: what `.ci/run` runs once scripts/setup.sh has prepared the machine.

use crate::{lint, test};

pub fn run() -> anyhow::Result<()> {
    lint::run()?;
    test::run(&test::Options::default())
}
