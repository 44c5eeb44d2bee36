//! `lockdown allow add|del|list`: the allowlist, changed live through the pinned maps.

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use lockdown_common::{
    contract::{allow::AllowRule, rate::RateSpec},
    rules::{allow::PortSpec, rate::DEFAULT_BURST},
};
use lockdown_user::{
    attach::change::{Rates, RuleChange},
    datapath::{handles::Handles, pins},
};
use serde::Serialize;

/// Change or list the allowlist live, through the pinned maps: no reload, and open flows are
/// untouched (a removed port refuses new connections; established ones carry on).
#[derive(Debug, Subcommand)]
pub(super) enum Allow {
    /// Allow inbound connections to a port. Example: lockdown allow add tcp/443 --from 203.0.113.0/24
    Add(RuleArgs),
    /// Stop allowing new inbound connections to a port. Example: lockdown allow del tcp/443
    Del(RuleArgs),
    /// List the allowlist. Example: lockdown allow list --json
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(super) struct RuleArgs {
    /// tcp/22, udp/51820 or tcp/8000-8100.
    #[arg(value_name = "SPEC")]
    spec: String,
    /// Only from this source (IPv4 or IPv6 CIDR). Without it, the rule applies to every IPv4 and
    /// IPv6 source.
    #[arg(long, value_name = "CIDR")]
    from: Option<String>,
    /// The locked-down interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// With `del`: remove the rule even if it would refuse new connections from the SSH session
    /// this runs in.
    #[arg(long)]
    force: bool,
    /// With `add`: limit new TCP connections to the spec's ports per source (an IPv4 address, an
    /// IPv6 /64): `10/min`, `5/s`, `100/h`; `none` lifts the limit. Applies to every rule for those
    /// ports. Adding a spec that is already allowed sets its rate.
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,
    /// With --rate: how many connections a source may open at once before the rate applies
    /// (default 5).
    #[arg(long, value_name = "N", requires = "rate")]
    burst: Option<u64>,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// The locked-down interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct RuleJson {
    proto: &'static str,
    port_lo: u16,
    port_hi: u16,
    from: Option<String>,
    spec: String,
    /// The per-source rate of new connections to the ports (`10/min burst 5`), if limited.
    rate: Option<String>,
}

impl Allow {
    pub(super) fn run(self) -> Result<()> {
        match self {
            Self::Add(a) => a.change(true),
            Self::Del(a) => a.change(false),
            Self::List(a) => a.list(),
        }
    }
}

/// What `--rate` asks for: a limit, or none.
enum RateChange {
    Keep,
    Set(RateSpec),
    Lift,
}

impl RuleArgs {
    fn rate_change(&self) -> Result<RateChange> {
        match self.rate.as_deref() {
            None => Ok(RateChange::Keep),
            Some("none") if self.burst.is_none() => Ok(RateChange::Lift),
            Some(r) => RateSpec::parse_rate(r, self.burst.unwrap_or(DEFAULT_BURST))
                .map(RateChange::Set)
                .with_context(|| format!("--rate {r}")),
        }
    }

    fn change(self, add: bool) -> Result<()> {
        let rule =
            AllowRule::parse(&self.spec, self.from.as_deref()).with_context(|| {
                match &self.from {
                    Some(f) => format!("{} --from {f}", self.spec),
                    None => self.spec.clone(),
                }
            })?;
        if !add && self.rate.is_some() {
            bail!("--rate applies to `allow add`; `allow del` removes the rule and its rate");
        }
        let change = self.rate_change()?;
        let root = pins::root();
        let _lock = pins::lock(&root)?;
        let dir = pins::select(&root, self.iface.as_deref())?;
        let mut handles = Handles::open(&dir)?;
        let mut rules = handles.rules()?;
        if add {
            let ports = PortSpec::of(&rule);
            let mut rates = handles.rates()?;
            let before = rates.get(&ports).copied();
            match change {
                RateChange::Keep => {}
                RateChange::Set(r) => {
                    rates.insert(ports, r);
                }
                RateChange::Lift => {
                    rates.remove(&ports);
                }
            }
            let added = rules.insert(rule);
            if !added && rates.get(&ports).copied() == before {
                println!("lockdown: {rule} is already allowed on {}", dir.iface);
                return Ok(());
            }
            handles.set_policy(&rules, &rates)?;
            match (added, rates.get(&ports)) {
                (true, None) => println!("lockdown: allowed {rule} on {}", dir.iface),
                (true, Some(r)) => println!(
                    "lockdown: allowed {rule} on {}, {r} new connections per source",
                    dir.iface
                ),
                (false, Some(r)) => println!(
                    "lockdown: {ports} on {}: {r} new connections per source",
                    dir.iface
                ),
                (false, None) => println!("lockdown: {ports} on {}: no rate limit", dir.iface),
            }
            return Ok(());
        }
        if !rules.remove(&rule) {
            bail!("{rule} is not in the allowlist of {}", dir.iface);
        }
        // The lockout guard, as for `up`: the admin must be able to reconnect. Connections the
        // rule let in survive it, as with iptables' conntrack.
        RuleChange::guarded(&rules, Rates::Kept, &[], self.force)?.apply(&mut handles)?;
        println!("lockdown: removed {rule} on {}", dir.iface);
        Ok(())
    }
}

impl ListArgs {
    fn list(self) -> Result<()> {
        let dir = pins::select(&pins::root(), self.iface.as_deref())?;
        let handles = Handles::open(&dir)?;
        let rules = handles.rules()?;
        let rates = handles.rates()?;
        let rate = |r: &AllowRule| rates.get(&PortSpec::of(r)).map(ToString::to_string);
        if self.json {
            let out: Vec<RuleJson> = rules
                .iter()
                .map(|r| RuleJson {
                    proto: r.proto_name(),
                    port_lo: r.port_lo,
                    port_hi: r.port_hi,
                    from: r.source().map(|(a, l)| format!("{a}/{l}")),
                    spec: r.to_string(),
                    rate: rate(r),
                })
                .collect();
            println!("{}", serde_json::to_string(&out)?);
        } else {
            for r in &rules {
                match rate(r) {
                    Some(rate) => println!("{r}  ({rate} new connections per source)"),
                    None => println!("{r}"),
                }
            }
        }
        Ok(())
    }
}
