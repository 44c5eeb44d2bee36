//! Confirm-or-roll-back (`up --confirm SECONDS`, like `iptables-apply` or Junos `commit
//! confirmed`): before applying, the previous state is saved in a pending file; a detached
//! watchdog restores it after the window ([`crate::attach::roll_back_if_pending`]) unless
//! `lockdown confirm` removed the file first.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use lockdown_common::{
    contract::{allow::AllowRule, config::Config, rate::RateSpec, syncookie::SYNCOOKIE},
    rules::allow::PortSpec,
};
use serde::{Deserialize, Serialize};

use crate::datapath::{handles::Handles, pins::PinDir};

/// What to restore if the change is not confirmed.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    /// Ties the watchdog to this change: a newer `--confirm` replaces the file and its token.
    pub token: u64,
    /// `None`: the interface was not locked down before.
    pub previous: Option<Previous>,
}

/// The policy before the change, as saved in the pending file.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Previous {
    pub rules: Vec<String>,
    pub config: Vec<u8>,
    /// The rated ports and their rates (`tcp/22`, `10/min burst 5`).
    #[serde(default)]
    pub rates: Vec<(String, String)>,
    /// The SYN-cookie settings as `LD_SYNCOOKIE` holds them: mode, threshold (SYNs per
    /// window), calm (windows). The keys are not saved: a rollback keeps the current ones.
    #[serde(default)]
    pub cookies: Option<[u32; 3]>,
}

/// [`Previous`] read back.
#[derive(Debug)]
pub struct Restored {
    pub rules: BTreeSet<AllowRule>,
    pub config: Config,
    pub rates: BTreeMap<PortSpec, RateSpec>,
}

impl Previous {
    /// The saved policy, parsed; an error names the entry that does not parse.
    pub fn parse(&self) -> Result<Restored> {
        let rules = self
            .rules
            .iter()
            .map(|s| parse_rule(s))
            .collect::<Result<BTreeSet<_>>>()?;
        let config: Config = bytemuck::pod_read_unaligned(
            self.config
                .get(..size_of::<Config>())
                .context("saved config is truncated")?,
        );
        let rates = self
            .rates
            .iter()
            .map(|(p, r)| {
                Ok((
                    PortSpec::parse(p).with_context(|| format!("saved rated port {p:?}"))?,
                    r.parse::<RateSpec>()
                        .with_context(|| format!("saved rate {r:?}"))?,
                ))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Restored {
            rules,
            config,
            rates,
        })
    }
}

/// Where pending changes are recorded: `/run/lockdown`, or `$LOCKDOWN_RUN_DIR`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("LOCKDOWN_RUN_DIR")
        .map_or_else(|| PathBuf::from("/run/lockdown"), PathBuf::from)
}

pub fn pending_path(run_dir: &Path, iface: &str) -> PathBuf {
    run_dir.join(format!("{iface}.pending"))
}

/// Captures the state `up --confirm` would change.
pub fn snapshot(dir: &PinDir) -> Result<Option<Previous>> {
    if !dir.is_locked() {
        return Ok(None);
    }
    let h = Handles::open(dir)?;
    let rules = h.rules()?.iter().map(rule_spec).collect();
    let config = bytemuck::bytes_of(&h.read_config()?).to_vec();
    let rates = h
        .rates()?
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect();
    let cookie_path = dir.map(SYNCOOKIE);
    let cookies = if cookie_path.exists() {
        let c = crate::attach::cookies::read_config(&cookie_path)?;
        Some([c.mode, c.threshold, c.calm])
    } else {
        None
    };
    Ok(Some(Previous {
        rules,
        config,
        rates,
        cookies,
    }))
}

/// A rule as `SPEC[ FROM]`, parseable by [`parse_rule`].
fn rule_spec(r: &AllowRule) -> String {
    let mut spec = PortSpec::of(r).to_string();
    if let Some((a, l)) = r.source() {
        spec.push_str(&format!(" {a}/{l}"));
    }
    spec
}

fn parse_rule(s: &str) -> Result<AllowRule> {
    let (spec, from) = match s.split_once(' ') {
        Some((spec, from)) => (spec, Some(from)),
        None => (s, None),
    };
    AllowRule::parse(spec, from).with_context(|| format!("saved rule {s:?}"))
}

pub fn write_pending(path: &Path, pending: &Pending) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, serde_json::to_vec(pending)?)
        .with_context(|| format!("writing {}", path.display()))
}

pub fn read_pending(path: &Path) -> Result<Option<Pending>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Forgets any change awaiting confirmation on `iface`: a deliberate `up`, `up --replace`, `run` or
/// `down` supersedes it, so its watchdog must not undo what came after.
pub fn clear_pending(iface: &str) -> Result<()> {
    let path = pending_path(&run_dir(), iface);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// `lockdown confirm`: keeps the change.
pub fn confirm(path: &Path, iface: &str) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "no change awaits confirmation on {iface} (it was confirmed, or already rolled back)"
            )
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_round_trip_through_the_pending_file() {
        for (spec, from) in [
            ("tcp/22", None),
            ("udp/5000-5100", Some("10.1.0.0/16")),
            ("tcp/1", Some("fd00::/8")),
        ] {
            let r = AllowRule::parse(spec, from).unwrap();
            assert_eq!(parse_rule(&rule_spec(&r)).unwrap(), r);
        }
    }
}
