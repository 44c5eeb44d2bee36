//! Typed handles on lockdown's maps, opened from the pins or taken from a freshly loaded object,
//! and the all-or-nothing allowlist update.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
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
    contract::{
        allow::AllowRule,
        config::Config,
        counters::{Counter, CounterValue},
        maps::{CIDRS, CONFIG, COUNTERS, PORTS, RATES, RULES, SKETCH, SKETCH_ENTRIES},
        rate::RateSpec,
    },
    rules::{
        allow::PortSpec,
        policy::{Compiled, Policy},
    },
};

use crate::datapath::{
    flows::{FlowEntry, Flows},
    pins::{PinDir, is_not_found, open_pinned},
};

/// The maps of one attachment.
pub struct Handles {
    pub flows: Flows,
    pub ports: Array<MapData, u64>,
    pub cidrs: LpmTrie<MapData, [u8; 20], u8>,
    pub rules: HashMap<MapData, AllowRule, u8>,
    pub counters: PerCpuArray<MapData, CounterValue>,
    pub config: Array<MapData, Config>,
    pub rates: HashMap<MapData, u32, RateSpec>,
    pub sketch: Array<MapData, u64>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

impl Handles {
    /// Opens the pinned maps of an attachment; an earlier release's layout is refused with the
    /// way out.
    pub fn open(dir: &PinDir) -> Result<Self> {
        dir.require_current_layout()?;
        Self::open_paths(|name| dir.map(name))
    }

    /// Opens the maps pinned at `path(name)` (an upgrade's staging pins, see
    /// [`crate::datapath::migrate::Plan::path`]).
    pub fn open_paths(path: impl Fn(&str) -> PathBuf) -> Result<Self> {
        Self::from_maps(|name| open_pinned(&path(name)))
    }

    /// Takes the maps out of a loaded object (tests that run programs without pins).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Self::from_maps(|name| take(ebpf, name))
    }

    fn from_maps(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            flows: Flows::from_maps(&mut get)?,
            ports: get(PORTS)?.try_into()?,
            cidrs: get(CIDRS)?.try_into()?,
            rules: get(RULES)?.try_into()?,
            counters: get(COUNTERS)?.try_into()?,
            config: get(CONFIG)?.try_into()?,
            rates: get(RATES)?.try_into()?,
            sketch: get(SKETCH)?.try_into()?,
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

    /// The rates of the rated ports, ports with one rate merged into ranges.
    pub fn rates(&self) -> Result<BTreeMap<PortSpec, RateSpec>> {
        let entries = self
            .rates
            .iter()
            .filter(|kv| !matches!(kv, Err(e) if is_not_found(e)))
            .collect::<Result<BTreeMap<u32, RateSpec>, _>>()
            .context("reading the rates map")?;
        Ok(lockdown_common::rules::rate::ranges(&entries))
    }

    /// Replaces the allowlist with `new`, keeping the rates of the ports it still allows
    /// entirely (see [`Handles::set_policy`]).
    pub fn set_rules(&mut self, new: &BTreeSet<AllowRule>) -> Result<()> {
        let mut rates = self.rates()?;
        rates.retain(|spec, _| {
            (spec.lo..=spec.hi).all(|p| new.iter().any(|r| PortSpec::of(r).contains(spec.proto, p)))
        });
        self.set_policy(new, &rates)
    }

    /// Replaces the allowlist and the rates, all or nothing. Limits are checked before anything
    /// is written; if a write fails, the previous policy is written back.
    pub fn set_policy(
        &mut self,
        new: &BTreeSet<AllowRule>,
        new_rates: &BTreeMap<PortSpec, RateSpec>,
    ) -> Result<()> {
        let old = self.rules()?;
        let old_rates = self.rates()?;
        let new_c = compile_policy(new, new_rates)?;
        let old_c = compile_policy(&old, &old_rates)?;
        if let Err(e) = self.write(&old, new, &old_c, &new_c) {
            // Roll back; report the original failure.
            let rollback = self.write(new, &old, &new_c, &old_c);
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
        o: &Compiled,
        n: &Compiled,
    ) -> Result<()> {
        // Open first, then close: the rule registry last, so it always describes a superset. A
        // rate entry is in place before its port is marked rated and goes after the mark does (a
        // marked port without an entry is not limited).
        for k in n.cidrs.difference(&o.cidrs) {
            self.cidrs
                .insert(&Key::new(k.prefix_len, k.data()), &1, 0)
                .context("adding a source-CIDR entry")?;
        }
        for (k, v) in &n.rates {
            if o.rates.get(k) != Some(v) {
                self.rates
                    .insert(k, v, 0)
                    .context("writing a port's rate")?;
            }
        }
        for (i, (a, b)) in o.ports.iter().zip(&n.ports).enumerate() {
            if a != b {
                self.ports
                    .set(i as u32, b, 0)
                    .context("writing the port table")?;
            }
        }
        for k in o.rates.keys().filter(|k| !n.rates.contains_key(k)) {
            self.rates.remove(k).context("removing a port's rate")?;
        }
        for k in o.cidrs.difference(&n.cidrs) {
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

    /// Gives the rate-limit sketch a random hash seed, unless it has one.
    pub fn ensure_sketch_seed(&mut self) -> Result<()> {
        let seed = self
            .sketch
            .get(&SKETCH_ENTRIES, 0)
            .context("reading the sketch seed")?;
        if seed != 0 {
            return Ok(());
        }
        let mut bytes = [0u8; 8];
        getrandom(&mut bytes)?;
        let seed = u64::from_ne_bytes(bytes) | 1;
        self.sketch
            .set(SKETCH_ENTRIES, &seed, 0)
            .context("writing the sketch seed")
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

/// The maps' contents for the allowlist `rules` with the rates `rates`; an error names what is
/// wrong.
pub fn compile_policy(
    rules: &BTreeSet<AllowRule>,
    rates: &BTreeMap<PortSpec, RateSpec>,
) -> Result<Compiled> {
    Ok(Policy::new(rules.clone(), rates.clone()).compile()?)
}

/// Fills `buf` from the kernel's random pool (getrandom(2)).
fn getrandom(buf: &mut [u8]) -> Result<()> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(std::io::Error::last_os_error()).context("getrandom");
    }
    Ok(())
}
