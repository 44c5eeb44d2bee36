//! `lockdown down`: detach from an interface and remove its pins.

use anyhow::{Result, bail};
use clap::Args;
use lockdown_user::{attach, datapath::pins};

/// Detach lockdown from an interface and remove its pins (flows, counters, allowlist).
///
/// Example: lockdown down --iface eth0
#[derive(Debug, Args)]
pub(super) struct Down {
    /// The locked-down interface.
    #[arg(long, value_name = "IF")]
    iface: String,
}

impl Down {
    pub(super) fn run(self) -> Result<()> {
        let dir = pins::PinDir::new(&pins::root(), &self.iface);
        if !dir.dir.exists() {
            bail!("{} is not locked down", self.iface);
        }
        attach::detach(&dir)?;
        println!("lockdown: {} released", self.iface);
        Ok(())
    }
}
