//! `lockdown check-config` and `lockdown import-iptables`: the configuration file, checked or
//! written from an iptables ruleset, without touching the kernel.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lockdown_user::config::{self, import};

/// Validate a config file without touching anything: every interface, rule, timeout and limit is
/// checked, and errors name the key and the line.
///
/// Example: lockdown check-config /etc/lockdown/lockdown.toml
#[derive(Debug, Args)]
pub(super) struct CheckConfig {
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Also require that the file configures this interface (as `run --iface IF` will).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

impl CheckConfig {
    pub(super) fn run(self) -> Result<()> {
        let file = config::file::load(&self.file).map_err(config::file::invalid)?;
        if let Some(iface) = &self.iface {
            file.interface(Some(iface)).map_err(config::file::invalid)?;
        }
        for o in file.interfaces() {
            println!(
                "{}: {} ({} XDP, {} flows{}): allow {}",
                self.file.display(),
                o.iface,
                o.mode.name(),
                o.max_flows,
                if o.config
                    .has(lockdown_common::contract::config::FLAG_MONITOR)
                {
                    ", monitor"
                } else {
                    ""
                },
                o.rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!("{}: OK", self.file.display());
        Ok(())
    }
}

/// Translate `iptables-save` / `ip6tables-save` output into a lockdown config, printed to stdout.
/// Covers the INPUT chain of the filter table; a rule lockdown cannot express exactly is an error
/// that quotes the line — never silently dropped.
///
/// Example: iptables-save > v4.rules; ip6tables-save > v6.rules;
///          cat v4.rules v6.rules > all.rules; lockdown import-iptables all.rules > lockdown.toml
#[derive(Debug, Args)]
pub(super) struct ImportIptables {
    /// The saved rules ("-" for standard input).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

impl ImportIptables {
    pub(super) fn run(self) -> Result<()> {
        let text = if self.file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(&self.file)
                .with_context(|| format!("reading {}", self.file.display()))?
        };
        print!("{}", import::import(&text)?);
        Ok(())
    }
}
