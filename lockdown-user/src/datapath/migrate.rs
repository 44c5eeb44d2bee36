//! Upgrades across a map-layout change, for `up --replace` and `run` adopting pins.
//!
//! A pinned map whose layout this binary's object still has is reused as it is. One the object
//! creates anew — absent from the pins, or pinned by an earlier release with another layout — is
//! created unpinned and pinned under a staging name; the pins of an earlier release that this
//! object has no map of are *legacy*. Data that matters is carried over from the old maps: the
//! flows of the single-table release (`LD_FLOWS`) into the four flow tables, and the counters into
//! a counters map with more entries. A map whose data this release cannot carry over is refused
//! before anything is changed, with the way out in the message.
//!
//! Around the program swap: the flows are copied once before it (so every established flow is
//! there when the new programs start), the ingress program is swapped before the egress program
//! (the new ingress never misses what the new egress learnt), and the flows are merged once more
//! after it (the old programs may have changed or created entries meanwhile; after the swap nothing
//! writes the old maps, and the newer `last_seen` wins). Then the staging pins are renamed over the
//! old ones (atomic on bpffs) and the legacy pins removed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::PathBuf,
};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfError,
    maps::{HashMap, MapData, MapError, MapInfo, PerCpuArray, PerCpuValues},
};
use lockdown_common::contract::{
    allow::AllowRule,
    counters::{Counter, CounterValue},
    flow::{FlowKey, FlowTable, FlowValue},
    maps::{ALL, COUNTERS, EVENTS, FLOWS4, FRAGS, HIGH_WATER, LOG_WINDOW},
};
use lockdown_common::rules::allow::vouched;

use crate::datapath::{
    handles::Handles,
    load::loader,
    pins::{PinDir, is_not_found},
};

/// The flow table of the releases before the split into four tables: 40-byte [`FlowKey`] →
/// 24-byte [`FlowValue`], both families, every state.
pub const LEGACY_FLOWS: &str = "LD_FLOWS";

pub use crate::datapath::pins::STAGING;

/// Maps whose contents may be dropped on an upgrade: short-lived or derived.
const EPHEMERAL: [&str; 4] = [FRAGS, EVENTS, LOG_WINDOW, HIGH_WATER];

/// What an upgrade does with each map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pinned, and the object's layout: reused as it is.
    pub reuse: BTreeSet<&'static str>,
    /// Created by the object (absent, or pinned with another layout); pinned at the end.
    pub fresh: BTreeSet<&'static str>,
    /// Of `fresh`, those pinned with another layout: their data is carried over, then the pin is
    /// replaced.
    pub relayout: BTreeSet<&'static str>,
    /// Pinned maps the object has no map of: carried over, then unpinned.
    pub legacy: BTreeSet<String>,
}

impl Plan {
    /// Whether anything but reusing pins is needed.
    pub fn is_migration(&self) -> bool {
        !self.relayout.is_empty() || !self.legacy.is_empty()
    }

    /// Where handles find map `name` during the upgrade: the staging pin of a fresh map, else the
    /// pin.
    pub fn path(&self, dir: &PinDir, name: &str) -> PathBuf {
        if self.fresh.contains(name) {
            dir.dir.join(format!("{STAGING}{name}"))
        } else {
            dir.map(name)
        }
    }
}

/// The refusal for a map whose data cannot be carried over.
fn cannot_carry(dir: &PinDir, name: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{iface} cannot be upgraded in place: its pinned map {name} {why}, and this release cannot carry its data over; nothing was changed. \
         Upgrade with `lockdown down --iface {iface}` then `lockdown up --iface {iface} …` (tracked flows are dropped; open connections are re-seeded from sockets and conntrack)",
        iface = dir.iface
    )
}

/// The pins in `dir` other than the links, after removing staging pins an interrupted upgrade left
/// (no pin name refers to them, so they hold nothing the filter needs).
fn pinned_maps(dir: &PinDir) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(&dir.dir).with_context(|| format!("reading {}", dir.dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING) {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing the leftover {}", entry.path().display()))?;
        } else if !crate::datapath::pins::is_attachment_pin(&name) {
            out.insert(name);
        }
    }
    Ok(out)
}

/// The live-table capacity the pinned flow tables were made with.
pub fn pinned_max_flows(dir: &PinDir) -> Result<u32> {
    let path = [FLOWS4, LEGACY_FLOWS]
        .iter()
        .map(|n| dir.map(n))
        .find(|p| p.exists())
        .with_context(|| format!("{} has no pinned flow table", dir.dir.display()))?;
    Ok(MapInfo::from_pin(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .max_entries())
}

/// Checks a legacy pin: only the single-table flow map of the previous layout can be carried.
fn check_legacy(dir: &PinDir, name: &str) -> Result<()> {
    if name != LEGACY_FLOWS {
        return Err(cannot_carry(
            dir,
            name,
            "belongs to no release this one knows",
        ));
    }
    let info = MapInfo::from_pin(dir.map(name)).with_context(|| format!("reading {name}"))?;
    let (k, v) = (info.key_size(), info.value_size());
    if (k, v) != (size_of::<FlowKey>() as u32, size_of::<FlowValue>() as u32) {
        return Err(cannot_carry(
            dir,
            name,
            &format!("has {k}-byte keys and {v}-byte values"),
        ));
    }
    Ok(())
}

/// Loads the object over the pins of `dir`: every compatible pin reused, every other map created
/// unpinned. Refuses (changing nothing) when a pin holds data this release cannot carry over.
/// Loading opens existing pins and creates unpinned maps only, so a refusal leaves nothing behind.
pub fn load(dir: &PinDir, max_flows: u32, debug_log: bool) -> Result<(Ebpf, Plan)> {
    let pinned = pinned_maps(dir)?;
    let mut plan = Plan::default();
    for name in ALL {
        if pinned.contains(name) {
            plan.reuse.insert(name);
        } else {
            plan.fresh.insert(name);
        }
    }
    for name in pinned.iter().filter(|n| !ALL.contains(&n.as_str())) {
        check_legacy(dir, name)?;
        plan.legacy.insert(name.clone());
    }
    // Each round finds at most one incompatible pin; there are at most ALL.len() of them.
    for _ in 0..=ALL.len() {
        let paths: Vec<(&str, PathBuf)> = plan.reuse.iter().map(|n| (*n, dir.map(n))).collect();
        match loader(&paths, max_flows, debug_log).load(crate::EBPF_OBJECT) {
            Ok(ebpf) => return Ok((ebpf, plan)),
            Err(EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name,
                property,
                expected,
                actual,
            })) => {
                let Some(&name) = ALL.iter().find(|n| **n == name) else {
                    bail!("the eBPF object has no map {name}");
                };
                if name != COUNTERS && !EPHEMERAL.contains(&name) {
                    return Err(cannot_carry(
                        dir,
                        name,
                        &format!("has {property} {actual} where this release needs {expected}"),
                    ));
                }
                plan.reuse.remove(name);
                plan.fresh.insert(name);
                plan.relayout.insert(name);
            }
            Err(e) => return Err(e).context("loading the eBPF object over the pinned maps"),
        }
    }
    bail!(
        "loading the eBPF object over the pinned maps of {} did not settle",
        dir.iface
    )
}

/// Pins every fresh map of `ebpf` under its staging name.
pub fn stage(ebpf: &Ebpf, dir: &PinDir, plan: &Plan) -> Result<()> {
    for name in &plan.fresh {
        let path = plan.path(dir, name);
        ebpf.map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))?
            .pin(&path)
            .with_context(|| format!("pinning {}", path.display()))?;
    }
    Ok(())
}

/// The old maps' data, read before the swap, for the merge after it.
#[derive(Default)]
pub struct CarriedOver {
    counters: BTreeMap<u32, Vec<CounterValue>>,
}

fn legacy_flows(dir: &PinDir) -> Result<Vec<(FlowKey, FlowValue)>> {
    let data = MapData::from_pin(dir.map(LEGACY_FLOWS))
        .with_context(|| format!("opening {LEGACY_FLOWS}"))?;
    let map: HashMap<MapData, FlowKey, FlowValue> = aya::maps::Map::from_map_data(data)?
        .try_into()
        .with_context(|| format!("{LEGACY_FLOWS} is not a flow table"))?;
    let mut out = Vec::new();
    for entry in map.iter() {
        match entry {
            Ok(kv) => out.push(kv),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {LEGACY_FLOWS}")),
        }
    }
    Ok(out)
}

fn old_counters(dir: &PinDir) -> Result<BTreeMap<u32, Vec<CounterValue>>> {
    let data = MapData::from_pin(dir.map(COUNTERS)).context("opening the old counters")?;
    let entries = data
        .info()
        .context("reading the old counters' info")?
        .max_entries();
    let map: PerCpuArray<MapData, CounterValue> =
        aya::maps::Map::from_map_data(data)?
            .try_into()
            .context("the old counters map is not a per-CPU array")?;
    (0..entries.min(Counter::COUNT))
        .map(|i| {
            Ok((
                i,
                map.get(&i, 0).context("reading the old counters")?.to_vec(),
            ))
        })
        .collect()
}

fn write_counters(
    handles: &mut Handles,
    values: impl Fn(u32, &[CounterValue]) -> Vec<CounterValue>,
    indices: impl Iterator<Item = u32>,
) -> Result<()> {
    for i in indices {
        let now = handles
            .counters
            .get(&i, 0)
            .context("reading the counters")?;
        let next =
            PerCpuValues::try_from(values(i, &now)).context("building per-CPU counter values")?;
        handles
            .counters
            .set(i, next, 0)
            .context("writing the counters")?;
    }
    Ok(())
}

/// Writes one old flow into the new tables unless they hold a newer entry for it.
fn merge_flow(handles: &mut Handles, key: &FlowKey, old: &FlowValue) -> Result<()> {
    let mut newest: Option<FlowValue> = None;
    for table in FlowTable::ALL {
        if let Some(v) = handles.flows.get(table, key)?
            && newest.is_none_or(|n| n.last_seen_ns < v.last_seen_ns)
        {
            newest = Some(v);
        }
    }
    if newest.is_some_and(|n| n.last_seen_ns >= old.last_seen_ns) {
        return Ok(());
    }
    handles
        .flows
        .insert(old.table(), key, old, 0)
        .context("carrying a flow over")?;
    for table in FlowTable::ALL.into_iter().filter(|t| *t != old.table()) {
        handles.flows.remove(table, key)?;
    }
    Ok(())
}

/// The copy before the swap: the legacy flows, the counters of a re-laid-out counters map.
/// Flows the allowlist (`rules`) vouches for are left behind: the new tables do not hold them.
pub fn carry_over(
    dir: &PinDir,
    plan: &Plan,
    handles: &mut Handles,
    rules: &BTreeSet<AllowRule>,
) -> Result<CarriedOver> {
    let mut out = CarriedOver::default();
    if plan.legacy.contains(LEGACY_FLOWS) {
        for (k, v) in legacy_flows(dir)? {
            if !vouched(rules, &k) {
                merge_flow(handles, &k, &v)?;
            }
        }
    }
    if plan.relayout.contains(COUNTERS) {
        out.counters = old_counters(dir)?;
        write_counters(
            handles,
            |i, _| out.counters[&i].clone(),
            out.counters.keys().copied(),
        )?;
    }
    Ok(out)
}

/// The merge after the swap, when nothing writes the old maps any more: flows the old programs
/// created or advanced since [`carry_over`], and the packets they counted meanwhile.
pub fn carry_over_again(
    dir: &PinDir,
    plan: &Plan,
    handles: &mut Handles,
    rules: &BTreeSet<AllowRule>,
    first: &CarriedOver,
) -> Result<()> {
    if plan.legacy.contains(LEGACY_FLOWS) {
        for (k, v) in legacy_flows(dir)? {
            if !vouched(rules, &k) {
                merge_flow(handles, &k, &v)?;
            }
        }
    }
    if plan.relayout.contains(COUNTERS) {
        let last = old_counters(dir)?;
        write_counters(
            handles,
            |i, now| {
                let (before, after) = (&first.counters[&i], &last[&i]);
                now.iter()
                    .enumerate()
                    .map(|(cpu, n)| {
                        let delta = |f: fn(&CounterValue) -> u64| {
                            let (a, b) =
                                (after.get(cpu).map_or(0, f), before.get(cpu).map_or(0, f));
                            a.saturating_sub(b)
                        };
                        CounterValue {
                            packets: n.packets + delta(|c| c.packets),
                            bytes: n.bytes + delta(|c| c.bytes),
                        }
                    })
                    .collect()
            },
            last.keys().copied(),
        )?;
    }
    Ok(())
}

/// Puts the fresh maps' staging pins in place (replacing a re-laid-out map's pin atomically) and
/// removes the legacy pins.
pub fn commit(dir: &PinDir, plan: &Plan) -> Result<()> {
    for name in &plan.fresh {
        let (from, to) = (plan.path(dir, name), dir.map(name));
        fs::rename(&from, &to)
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    }
    for name in &plan.legacy {
        let path = dir.map(name);
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Removes the staging pins after a failure before [`commit`].
pub fn abandon(dir: &PinDir, plan: &Plan) {
    for name in &plan.fresh {
        let _ = fs::remove_file(plan.path(dir, name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_maps_are_staged_and_the_rest_use_their_pins() {
        let dir = PinDir::new(std::path::Path::new("/sys/fs/bpf/lockdown"), "eth0");
        let plan = Plan {
            reuse: [COUNTERS].into(),
            fresh: [FLOWS4].into(),
            relayout: BTreeSet::new(),
            legacy: [LEGACY_FLOWS.to_owned()].into(),
        };
        assert!(plan.is_migration());
        assert_eq!(
            plan.path(&dir, FLOWS4),
            PathBuf::from("/sys/fs/bpf/lockdown/eth0/staging-LD_FLOWS4")
        );
        assert_eq!(
            plan.path(&dir, COUNTERS),
            PathBuf::from("/sys/fs/bpf/lockdown/eth0/LD_COUNTERS")
        );
        assert!(!Plan::default().is_migration());
    }

    #[test]
    fn a_refusal_names_the_map_and_the_way_out() {
        let dir = PinDir::new(std::path::Path::new("/sys/fs/bpf/lockdown"), "eth0");
        let e = cannot_carry(
            &dir,
            "LD_RULES",
            "has key_size 8 where this release needs 24",
        )
        .to_string();
        for needle in [
            "LD_RULES",
            "nothing was changed",
            "lockdown down --iface eth0",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from {e}");
        }
    }
}
