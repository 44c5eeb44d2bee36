//! `lockdown flows`: list the flow tables' live entries, or flush them.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    net::{IpAddr, SocketAddr},
};

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use lockdown_common::contract::flow::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, ip_addr};
use lockdown_user::datapath::{flows::FlowEntry, handles::Handles, pins};
use serde::Serialize;

/// List the flow tables (like `conntrack -L`): tuple, state, age and idle time of each live entry,
/// then how full each table is.
///
/// Connections the allowlist vouches for (accepted on an allowed port) take no entry and are not
/// listed. Reads the pinned flow tables; changes nothing.
///
/// Examples: lockdown flows --proto tcp --port 443
///           lockdown flows flush --yes
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(super) struct Flows {
    #[command(subcommand)]
    command: Option<FlowsCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, Subcommand)]
enum FlowsCommand {
    /// Empty the flow tables. Open connections then pass only if their port is allowed, until their
    /// next outbound packet tracks them again. Asks first unless --yes.
    /// Example: lockdown flows flush --yes
    Flush(FlushArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Print JSON (an array of flows).
    #[arg(long)]
    json: bool,
    /// Only this protocol: tcp, udp, icmp or icmpv6.
    #[arg(long, value_name = "P")]
    proto: Option<String>,
    /// Only flows with this local or remote port.
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// Only flows with this local or remote address.
    #[arg(long, value_name = "A")]
    addr: Option<IpAddr>,
}

#[derive(Debug, Args)]
struct FlushArgs {
    /// The interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

#[derive(Debug, Serialize)]
struct FlowJson {
    proto: &'static str,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
    state: &'static str,
    /// `live` or `closing`: the table the entry is in.
    table: &'static str,
    age_secs: f64,
    idle_secs: f64,
    seeded: bool,
}

fn proto_name(p: u8) -> &'static str {
    match p {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        PROTO_ICMPV6 => "icmpv6",
        _ => "?",
    }
}

fn to_json(e: &FlowEntry, now: u64) -> FlowJson {
    let (k, v) = (&e.key, &e.value);
    FlowJson {
        proto: proto_name(k.proto),
        local: ip_addr(k.family, &k.local),
        local_port: k.local_port,
        remote: ip_addr(k.family, &k.remote),
        remote_port: k.remote_port,
        state: v.state().map_or("?", |s| s.name()),
        table: e.table.name(),
        age_secs: now.saturating_sub(v.created_ns) as f64 / 1e9,
        idle_secs: now.saturating_sub(v.last_seen_ns) as f64 / 1e9,
        seeded: v.flags & lockdown_common::contract::flow::FLOW_FLAG_SEEDED != 0,
    }
}

impl Flows {
    pub(super) fn run(self) -> Result<()> {
        match self.command {
            Some(FlowsCommand::Flush(f)) => f.run(),
            None => self.list.run(),
        }
    }
}

impl ListArgs {
    fn run(self) -> Result<()> {
        let proto = match self.proto.as_deref() {
            None => None,
            Some("tcp") => Some(PROTO_TCP),
            Some("udp") => Some(PROTO_UDP),
            Some("icmp") => Some(PROTO_ICMP),
            Some("icmpv6") => Some(PROTO_ICMPV6),
            Some(p) => bail!("unknown protocol {p:?}: expected tcp, udp, icmp or icmpv6"),
        };
        let dir = pins::select(&pins::root(), self.iface.as_deref())?;
        let now = lockdown_user::clock_ns();
        let mut handles = Handles::open(&dir)?;
        let live = handles.live_flows(now)?;
        let occupancy = handles.flows.occupancy(&live)?;
        let mut flows: Vec<FlowJson> = live
            .iter()
            .filter(|e| proto.is_none_or(|p| e.key.proto == p))
            .filter(|e| {
                self.port
                    .is_none_or(|p| e.key.local_port == p || e.key.remote_port == p)
            })
            .filter(|e| {
                let k = &e.key;
                self.addr.is_none_or(|a| {
                    ip_addr(k.family, &k.local) == a || ip_addr(k.family, &k.remote) == a
                })
            })
            .map(|e| to_json(e, now))
            .collect();
        flows.sort_by(|a, b| a.age_secs.total_cmp(&b.age_secs).reverse());
        if self.json {
            println!("{}", serde_json::to_string(&flows)?);
            return Ok(());
        }
        println!(
            "{:<7} {:<41} {:<41} {:<12} {:>10} {:>10}",
            "proto", "local", "remote", "state", "age", "idle"
        );
        for f in &flows {
            println!(
                "{:<7} {:<41} {:<41} {:<12} {:>9.1}s {:>9.1}s{}",
                f.proto,
                SocketAddr::new(f.local, f.local_port).to_string(),
                SocketAddr::new(f.remote, f.remote_port).to_string(),
                if f.table == "closing" {
                    format!("{} (c)", f.state)
                } else {
                    f.state.to_owned()
                },
                f.age_secs,
                f.idle_secs,
                if f.seeded { "  (seeded)" } else { "" }
            );
        }
        println!("{} flows ((c): in a closing table)", flows.len());
        for o in &occupancy {
            println!(
                "{:<8} {:<5} {:>8} / {:<8} ({:.1}% full, high-water {})",
                o.table,
                o.family,
                o.entries,
                o.capacity,
                100.0 * o.fill(),
                o.high_water
            );
        }
        Ok(())
    }
}

impl FlushArgs {
    fn run(self) -> Result<()> {
        let root = pins::root();
        let _lock = pins::lock(&root)?;
        let dir = pins::select(&root, self.iface.as_deref())?;
        let mut handles = Handles::open(&dir)?;
        let keys = handles.flows.entries()?;
        if !self.yes {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "refusing to flush {} flows without a terminal to ask on; pass --yes",
                    keys.len()
                );
            }
            print!("Flush {} flow entries on {}? [y/N] ", keys.len(), dir.iface);
            std::io::stdout().flush()?;
            let mut answer = String::new();
            std::io::stdin().lock().read_line(&mut answer)?;
            if !matches!(answer.trim(), "y" | "Y" | "yes") {
                bail!("not flushed");
            }
        }
        let mut removed = 0;
        for e in &keys {
            removed += usize::from(handles.flows.remove(e.table, &e.key)?);
        }
        println!("lockdown: flushed {removed} flows on {}", dir.iface);
        Ok(())
    }
}
