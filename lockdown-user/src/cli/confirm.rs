//! `lockdown confirm`, and the hidden `watchdog` that rolls back an unconfirmed `up --confirm`.

use anyhow::Result;
use clap::Args;
use lockdown_user::{
    attach::{self, confirm},
    datapath::pins,
};

/// Keep a change made with `up --confirm SECONDS`; without this, it is rolled back.
///
/// Example: lockdown confirm --iface eth0
#[derive(Debug, Args)]
pub(super) struct Confirm {
    /// The interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

impl Confirm {
    pub(super) fn run(self) -> Result<()> {
        let dir = pins::select(&pins::root(), self.iface.as_deref())?;
        confirm::confirm(
            &confirm::pending_path(&confirm::run_dir(), &dir.iface),
            &dir.iface,
        )?;
        println!("lockdown: change on {} confirmed", dir.iface);
        Ok(())
    }
}

/// Internal: the rollback watchdog that `up --confirm` leaves behind.
#[derive(Debug, Args)]
pub(super) struct Watchdog {
    #[arg(long)]
    iface: String,
    #[arg(long)]
    after: u64,
    #[arg(long)]
    token: u64,
}

impl Watchdog {
    pub(super) fn run(self) -> Result<()> {
        std::thread::sleep(std::time::Duration::from_secs(self.after));
        let dir = pins::PinDir::new(&pins::root(), &self.iface);
        let path = confirm::pending_path(&confirm::run_dir(), &self.iface);
        if attach::roll_back_if_pending(&path, &dir, self.token)? {
            log::warn!(
                "{}: change not confirmed within {} s; rolled back",
                self.iface,
                self.after
            );
        }
        Ok(())
    }
}
