//! Typed handles on lockdown's maps, opened from the pins or taken from a freshly loaded object,
//! and the all-or-nothing allowlist update.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{
        Array, HashMap, Map, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
};
use lockdown_common::{
    config::Config,
    counters::{Counter, CounterValue},
    maps::{CIDRS, CONFIG, COUNTERS, PORTS, RULES},
    rules::{AllowRule, CidrKey},
};

use crate::{
    flowmaps::{FlowEntry, FlowMaps},
    pins::PinDir,
};

/// The maps of one attachment.
pub struct Handles {
    pub flows: FlowMaps,
    pub ports: Array<MapData, u64>,
    pub cidrs: LpmTrie<MapData, [u8; 20], u8>,
    pub rules: HashMap<MapData, AllowRule, u8>,
    pub counters: PerCpuArray<MapData, CounterValue>,
    pub config: Array<MapData, Config>,
}

fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

impl Handles {
    /// Opens the pinned maps of an attachment.
    pub fn open(dir: &PinDir) -> Result<Self> {
        Self::open_paths(|name| dir.map(name))
    }

    /// Opens the maps pinned at `path(name)` (an upgrade's staging pins, see
    /// [`crate::migrate::Plan::path`]).
    pub fn open_paths(path: impl Fn(&str) -> PathBuf) -> Result<Self> {
        Self::from_maps(|name| open_pinned(&path(name)))
    }

    /// Takes the maps out of a loaded object (tests that run programs without pins).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_maps(|name| take(ebpf, name))
    }

    fn from_maps(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            flows: FlowMaps::from_maps(&mut get)?,
            ports: get(PORTS)?.try_into()?,
            cidrs: get(CIDRS)?.try_into()?,
            rules: get(RULES)?.try_into()?,
            counters: get(COUNTERS)?.try_into()?,
            config: get(CONFIG)?.try_into()?,
        })
    }

    pub fn read_config(&self) -> Result<Config> {
        self.config.get(&0, 0).context("reading the config map")
    }

    pub fn write_config(&mut self, config: &Config) -> Result<()> {
        self.config
            .set(0, config, 0)
            .context("writing the config map")
    }

    /// The allowlist as the operator wrote it.
    pub fn rules(&self) -> Result<BTreeSet<AllowRule>> {
        self.rules
            .keys()
            .map(|k| k.context("reading the rules map"))
            .collect()
    }

    /// Replaces the allowlist with `new`, all or nothing. Limits are checked before anything is
    /// written; if a write fails, the previous allowlist is written back.
    pub fn set_rules(&mut self, new: &BTreeSet<AllowRule>) -> Result<()> {
        let old = self.rules()?;
        let (new_ports, new_cidrs) = compile(new)?;
        let (old_ports, old_cidrs) = compile(&old)?;
        if let Err(e) = self.write(&old, new, &old_ports, &new_ports, &old_cidrs, &new_cidrs) {
            // Roll back; report the original failure.
            let rollback = self.write(new, &old, &new_ports, &old_ports, &new_cidrs, &old_cidrs);
            return Err(match rollback {
                Ok(()) => e.context("the allowlist was not changed"),
                Err(r) => e.context(format!("rolling back also failed: {r:#}")),
            });
        }
        Ok(())
    }

    fn write(
        &mut self,
        old: &BTreeSet<AllowRule>,
        new: &BTreeSet<AllowRule>,
        old_ports: &[u64],
        new_ports: &[u64],
        old_cidrs: &BTreeSet<CidrKey>,
        new_cidrs: &BTreeSet<CidrKey>,
    ) -> Result<()> {
        // Open first, then close: the rule registry last, so it always describes a superset.
        for k in new_cidrs.difference(old_cidrs) {
            self.cidrs
                .insert(&Key::new(k.prefix_len, k.data()), &1, 0)
                .context("adding a source-CIDR entry")?;
        }
        for (i, (o, n)) in old_ports.iter().zip(new_ports).enumerate() {
            if o != n {
                self.ports
                    .set(i as u32, n, 0)
                    .context("writing the port table")?;
            }
        }
        for k in old_cidrs.difference(new_cidrs) {
            self.cidrs
                .remove(&Key::new(k.prefix_len, k.data()))
                .context("removing a source-CIDR entry")?;
        }
        for r in new.difference(old) {
            self.rules
                .insert(r, &1, 0)
                .context("adding to the rules map")?;
        }
        for r in old.difference(new) {
            self.rules
                .remove(r)
                .context("removing from the rules map")?;
        }
        Ok(())
    }

    /// Per-counter totals over all CPUs, in index order.
    pub fn counters(&self) -> Result<Vec<(Counter, CounterValue)>> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = self
                    .counters
                    .get(&(c as u32), 0)
                    .context("reading counters")?;
                let sum = per_cpu
                    .iter()
                    .fold(CounterValue::default(), |acc, v| CounterValue {
                        packets: acc.packets + v.packets,
                        bytes: acc.bytes + v.bytes,
                    });
                Ok((c, sum))
            })
            .collect()
    }

    /// Live flow entries of every table (expired ones stay in the LRU maps until reused, but no
    /// longer count).
    pub fn live_flows(&self, now: u64) -> Result<Vec<FlowEntry>> {
        self.flows.live(now, &self.read_config()?.timeouts)
    }
}

/// Whether a map error means "no such key" (the entry vanished or never existed).
pub fn is_not_found(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// The port table and the source-CIDR trie entries that implement a rule set; an error names
/// the limit it exceeds.
pub fn compile(rules: &BTreeSet<AllowRule>) -> Result<(Vec<u64>, BTreeSet<CidrKey>)> {
    Ok(lockdown_common::rules::compile(rules)?)
}
