//! The command line: one module per verb.

mod allow;
mod config;
mod confirm;
mod deny;
mod down;
mod exporter;
mod flows;
mod generate;
mod log;
mod probe;
mod run;
mod status;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// lockdown: accept nothing from the internet except allowed ports and replies to what this host
/// started — the iptables INPUT chain `lo ACCEPT; RELATED,ESTABLISHED ACCEPT; tcp dport 22 ACCEPT;
/// DROP`, at XDP speed.
///
/// Every verb but check-config and import-iptables needs root (or CAP_BPF and CAP_NET_ADMIN).
/// State lives in bpffs under /sys/fs/bpf/lockdown/<iface>/, so the filter outlives this process.
#[derive(Debug, Parser)]
#[command(name = "lockdown", version = lockdown_user::datapath::build_id::version(), about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::Up),
    Down(down::Down),
    Run(run::Run),
    #[command(subcommand)]
    Allow(allow::Allow),
    #[command(subcommand)]
    Deny(deny::Deny),
    Status(status::StatusArgs),
    Confirm(confirm::Confirm),
    CheckConfig(config::CheckConfig),
    ImportIptables(config::ImportIptables),
    Flows(flows::Flows),
    Log(log::Log),
    Exporter(exporter::Exporter),
    #[command(hide = true)]
    Watchdog(confirm::Watchdog),
    #[command(hide = true)]
    Generate(generate::Generate),
    #[command(hide = true)]
    Probe(probe::Probe),
}

impl Cli {
    pub(crate) fn run(self) -> Result<()> {
        // Reading and translating files needs no privilege.
        if !matches!(
            self.command,
            Command::CheckConfig(_) | Command::ImportIptables(_) | Command::Generate(_)
        ) {
            lockdown_user::host::caps::require()?;
        }
        match self.command {
            Command::Up(a) => a.run(),
            Command::Down(a) => a.run(),
            Command::Run(a) => a.run(),
            Command::Allow(a) => a.run(),
            Command::Deny(a) => a.run(),
            Command::Status(a) => a.run(),
            Command::Confirm(a) => a.run(),
            Command::CheckConfig(a) => a.run(),
            Command::ImportIptables(a) => a.run(),
            Command::Flows(a) => a.run(),
            Command::Log(a) => a.run(),
            Command::Exporter(a) => a.run(),
            Command::Watchdog(a) => a.run(),
            Command::Generate(a) => a.run(),
            Command::Probe(a) => a.run(),
        }
    }
}
