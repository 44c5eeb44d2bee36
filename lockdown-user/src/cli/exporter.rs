//! `lockdown exporter`: serve the Prometheus metrics of the locked-down interfaces.

use anyhow::Result;
use clap::Args;
use lockdown_user::{datapath::pins, observe::metrics};

/// Serve Prometheus metrics (`/metrics`) read from the pinned maps: packets and bytes by reason,
/// live flows, capacity and table pressure. Works with `up`: it needs no running `lockdown run`.
///
/// Example: lockdown exporter --listen 127.0.0.1:9477
#[derive(Debug, Args)]
pub(super) struct Exporter {
    /// Address to listen on, e.g. 127.0.0.1:9477 or [::1]:9477.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Only this interface (default: every locked-down interface).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

impl Exporter {
    pub(super) fn run(self) -> Result<()> {
        println!(
            "lockdown: serving metrics on http://{}/metrics",
            self.listen
        );
        metrics::serve(&self.listen, &pins::root(), self.iface.as_deref())
    }
}
