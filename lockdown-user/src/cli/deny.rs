//! `lockdown deny add|del|flush|list`: the blocklist, changed live through the pinned maps.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use lockdown_common::{
    rules::deny::DenyNet,
    stages::deny::{FOREVER, in_force},
};
use lockdown_user::{
    attach::guard,
    datapath::{
        blocklist::{Blocklist, time_left},
        pins,
    },
};
use serde::Serialize;

/// Block sources before anything else: a denied address or network is dropped at XDP, established
/// connections included (as a fail2ban ban is). Entries live in pinned maps, so they survive `run`
/// restarts and `up --replace`; a timed entry stops matching in the datapath the moment it
/// expires.
#[derive(Debug, Subcommand)]
pub(super) enum Deny {
    /// Deny a source. Example: lockdown deny add 203.0.113.7 --for 1h
    ///
    /// Adding an entry that exists replaces its expiry. Refuses to deny the source of an SSH
    /// session into this host unless --force.
    Add(AddArgs),
    /// Stop denying a source (an entry that is not there is only noted). Example: lockdown deny
    /// del 203.0.113.7
    Del(EntryArgs),
    /// Remove every entry. Example: lockdown deny flush
    Flush(IfaceArgs),
    /// List the entries in force with their time left. Example: lockdown deny list --json
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(super) struct AddArgs {
    /// An IPv4 or IPv6 address or CIDR (203.0.113.7, 198.51.100.0/24, 2001:db8::/48).
    #[arg(value_name = "CIDR")]
    cidr: String,
    /// For how long: 90s, 10m, 1h, 7d (default: until removed).
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    #[command(flatten)]
    iface: IfaceArgs,
    /// Deny even a source that an SSH session into this host comes from.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
pub(super) struct EntryArgs {
    /// The address or CIDR, as added.
    #[arg(value_name = "CIDR")]
    cidr: String,
    #[command(flatten)]
    iface: IfaceArgs,
}

#[derive(Debug, Args)]
pub(super) struct IfaceArgs {
    /// The locked-down interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    iface: IfaceArgs,
    /// Print JSON: [{"cidr": "203.0.113.7/32", "expires_in_secs": 3599}, …] (null: no expiry).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct EntryJson {
    cidr: String,
    expires_in_secs: Option<u64>,
}

fn parse_net(s: &str) -> Result<DenyNet> {
    DenyNet::parse(s).with_context(|| format!("{s:?} is not an IPv4 or IPv6 address or CIDR"))
}

/// Parses a `--for` duration: a positive humantime span (`90s`, `10m`, `1h`, `7d`).
fn parse_duration(s: &str) -> Result<Duration> {
    let d = humantime::parse_duration(s)
        .with_context(|| format!("--for {s:?}: not a duration (examples: 90s, 10m, 1h, 7d)"))?;
    if d.is_zero() {
        bail!("--for {s:?}: the duration must be longer than zero");
    }
    Ok(d)
}

impl Deny {
    pub(super) fn run(self) -> Result<()> {
        match self {
            Self::Add(a) => a.run(),
            Self::Del(a) => a.run(),
            Self::Flush(a) => a.flush(),
            Self::List(a) => a.run(),
        }
    }
}

/// Opens the blocklist of the chosen interface, under the pin root's lock, with expired entries
/// reaped.
fn open(iface: &IfaceArgs) -> Result<(pins::Lock, Blocklist)> {
    let root = pins::root();
    let lock = pins::lock(&root)?;
    let dir = pins::select(&root, iface.iface.as_deref())?;
    let mut list = Blocklist::open(&dir)?;
    list.reap(lockdown_user::clock_ns())?;
    Ok((lock, list))
}

impl AddArgs {
    fn run(self) -> Result<()> {
        // Everything is checked before anything changes.
        let net = parse_net(&self.cidr)?;
        let duration = self.duration.as_deref().map(parse_duration).transpose()?;
        if !self.force {
            guard::check_deny(&[net])?;
        }
        let (_lock, mut list) = open(&self.iface)?;
        let expires = match duration {
            Some(d) => {
                let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                lockdown_user::clock_ns().saturating_add(ns)
            }
            None => FOREVER,
        };
        list.add(&net, expires)?;
        match duration {
            Some(d) => println!(
                "lockdown: denied {net} for {}",
                humantime::format_duration(d)
            ),
            None => println!("lockdown: denied {net} until removed"),
        }
        Ok(())
    }
}

impl EntryArgs {
    fn run(self) -> Result<()> {
        let net = parse_net(&self.cidr)?;
        let (_lock, mut list) = open(&self.iface)?;
        if list.remove(&net)? {
            println!("lockdown: no longer denying {net}");
        } else {
            eprintln!("lockdown: {net} was not denied (or its time had run out)");
        }
        Ok(())
    }
}

impl IfaceArgs {
    fn flush(self) -> Result<()> {
        let (_lock, mut list) = open(&self)?;
        let entries: Vec<_> = list.entries()?.into_keys().collect();
        let n = list.remove_all(&entries)?;
        println!("lockdown: removed {n} blocklist entries");
        Ok(())
    }
}

impl ListArgs {
    fn run(self) -> Result<()> {
        let dir = pins::select(&pins::root(), self.iface.iface.as_deref())?;
        let now = lockdown_user::clock_ns();
        let entries: Vec<_> = Blocklist::open(&dir)?
            .entries()?
            .into_iter()
            .filter(|(_, e)| in_force(*e, now))
            .collect();
        if self.json {
            let out: Vec<EntryJson> = entries
                .iter()
                .map(|(n, e)| EntryJson {
                    cidr: n.to_string(),
                    expires_in_secs: time_left(*e, now).map(|d| d.as_secs()),
                })
                .collect();
            println!("{}", serde_json::to_string(&out)?);
        } else {
            for (n, e) in &entries {
                match time_left(*e, now) {
                    Some(d) => println!(
                        "{n:<43} {} left",
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    ),
                    None => println!("{n:<43} until removed"),
                }
            }
        }
        Ok(())
    }
}
