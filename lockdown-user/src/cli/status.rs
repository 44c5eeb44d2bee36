//! `lockdown status`: what is attached, its policy, counters and flow tables.

use anyhow::Result;
use clap::Args;
use lockdown_common::contract::counters::Counter;
use lockdown_user::{
    attach::{cookies, egress},
    datapath::pins,
    host::tc,
    observe::report,
};

/// Show each locked-down interface's mode, allowlist, flow tables and counters.
///
/// With no --iface, every locked-down interface, one after another (with --json: one object for
/// one interface, an array for several).
///
/// Example: lockdown status --json
#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// Only this interface (default: every locked-down interface).
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Measure counter rates (packets/s) over this many seconds; 0 skips them.
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    interval: f64,
}

impl StatusArgs {
    pub(super) fn run(self) -> Result<()> {
        if !(0.0..=60.0).contains(&self.interval) {
            anyhow::bail!("--interval must be between 0 and 60 seconds");
        }
        let dirs = pins::select_all(&pins::root(), self.iface.as_deref())?;
        let interval = std::time::Duration::from_secs_f64(self.interval);
        let all = dirs
            .iter()
            .map(|d| report::status(d, interval))
            .collect::<Result<Vec<_>>>()?;
        if self.json {
            match &all[..] {
                [one] => println!("{}", serde_json::to_string(one)?),
                _ => println!("{}", serde_json::to_string(&all)?),
            }
            return Ok(());
        }
        for (i, s) in all.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_status(s);
        }
        Ok(())
    }
}

/// How the egress program is attached, and what is wrong with it, if anything.
fn egress_line(e: &egress::State) -> String {
    let mut line = match e.kind {
        Some(egress::Kind::Tcx) => "tcx link".to_owned(),
        Some(egress::Kind::Netlink) => format!(
            "netlink tc filter (clsact egress, priority {:#x}, handle {:#x}; clsact qdisc {})",
            tc::PRIORITY,
            tc::HANDLE,
            if e.clsact_created {
                "created by lockdown"
            } else {
                "already there"
            }
        ),
        None => "none".to_owned(),
    };
    if let Some(p) = &e.problem {
        line.push_str(&format!(" — PROBLEM: {p}"));
    }
    line
}

/// The SYN-cookie line: mode, whether they answer (or why not), settings, engaged ports,
/// hand-off counters.
fn cookie_line(c: &cookies::CookieStatus) -> String {
    let answering = match (&c.reason, c.answering) {
        (_, true) => "answering".to_owned(),
        (Some(r), false) => format!("not answering: {r}"),
        (None, false) => "not answering".to_owned(),
    };
    let engaged = if c.engaged_ports.is_empty() {
        "none".to_owned()
    } else {
        c.engaged_ports
            .iter()
            .map(|p| format!("tcp/{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let handoff = c
        .handoff
        .iter()
        .map(|(k, v)| format!("{} {v}", k.trim_start_matches("handoff_")))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{}, {answering}; threshold {} SYN/s per port, calm {} s; engaged: {engaged}; hand-off: {handoff}",
        c.mode, c.threshold_per_sec, c.calm_secs
    )
}

/// The text form of one interface's status.
fn print_status(s: &report::Status) {
    println!("interface  {}", s.interface);
    println!(
        "mode       {} ({})",
        s.mode,
        if s.monitor { "monitor" } else { "enforce" }
    );
    match (&s.xdp_program, s.xdp_variant) {
        (Some(_), Some(v)) => println!("xdp        {}: {}", v.program(), v.describe()),
        (Some(name), None) => println!("xdp        {name}"),
        (None, _) => println!("xdp        (program name unreadable)"),
    }
    println!("egress     {}", egress_line(&s.egress));
    match (&s.programs_sha256, s.replace_due) {
        (Some(h), false) => println!("programs   sha256 {h} (this binary's)"),
        (Some(h), true) => println!(
            "programs   sha256 {h}; this binary's is {}: `lockdown up --replace --iface {}` loads it",
            s.binary_sha256, s.interface
        ),
        (None, _) => println!(
            "programs   attached by an earlier release (no build recorded): `lockdown up --replace --iface {}` loads this binary's",
            s.interface
        ),
    }
    println!("allow      {}", s.allow.join(", "));
    println!("syn cookies {}", cookie_line(&s.syn_cookies));
    for o in &s.tables {
        println!(
            "{:<10} {} / {} {} ({:.1}% full, high-water {})",
            if o.table == "live" {
                "flows"
            } else {
                "closing"
            },
            o.entries,
            o.capacity,
            o.family,
            100.0 * o.fill(),
            o.high_water
        );
    }
    println!(
        "{:<28} {:>14} {:>16} {:>12}",
        "counter", "packets", "bytes", "pps"
    );
    // Index order: passes, then drops, then egress and log statistics.
    for name in Counter::ALL.iter().map(|c| c.name()) {
        let pps = s.rates_pps.as_ref().map_or(0.0, |r| r[name]);
        println!(
            "{name:<28} {:>14} {:>16} {pps:>12.1}",
            s.counters[name], s.bytes[name]
        );
    }
}
