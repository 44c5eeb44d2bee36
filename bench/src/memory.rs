//! Section 4: memory. Bytes per flow entry from the types, and the kernel's memlock of every map
//! of the object at the default flow-table size and at 1M flows, read from
//! `/proc/self/fdinfo/<map fd>` ("memlock:").

use std::{collections::BTreeMap, fs};

use anyhow::{Context as _, Result};
use aya::{EbpfLoader, maps::MapInfo};
use lockdown_common::contract::{
    flow::{FlowKey4, FlowValue},
    maps::{DEFAULT_MAX_FLOWS, FLOW_MAPS, FLOWS4 as FLOWS, flow_capacity},
};
use lockdown_user::EBPF_OBJECT;
use serde::Serialize;

use crate::sys;

#[derive(Clone, Debug, Serialize)]
pub(crate) struct MapMem {
    pub name: String,
    pub map_type: u32,
    pub map_type_name: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries_default: u32,
    pub memlock_default: u64,
    pub max_entries_big: u32,
    pub memlock_big: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Section {
    pub key_bytes: usize,
    pub value_bytes: usize,
    pub key_value_bytes: usize,
    pub default_max_flows: u32,
    pub big_max_flows: u32,
    /// (memlock of the flow table at `big` − at default) / (big − default entries).
    pub memlock_per_flow: f64,
    pub total_memlock_default: u64,
    pub total_memlock_big: u64,
    pub maps: Vec<MapMem>,
}

#[derive(Clone, Debug)]
struct FdMap {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    memlock: u64,
}

/// Every BPF map this process holds an fd of, by map id.
fn held_maps() -> Result<BTreeMap<u32, FdMap>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir("/proc/self/fdinfo").context("reading /proc/self/fdinfo")? {
        let Ok(text) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let kv = sys::key_values(&text);
        let Some(id) = kv.get("map_id").and_then(|v| v.parse::<u32>().ok()) else {
            continue;
        };
        let num = |k: &str| kv.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(
            id,
            FdMap {
                map_type: num("map_type") as u32,
                key_size: num("key_size") as u32,
                value_size: num("value_size") as u32,
                max_entries: num("max_entries") as u32,
                memlock: num("memlock"),
            },
        );
    }
    Ok(out)
}

/// Loads the object with the flow table at `max_flows` and returns its maps by name.
fn object_maps(max_flows: u32) -> Result<BTreeMap<String, FdMap>> {
    let before = held_maps()?;
    let mut loader = EbpfLoader::new();
    for (name, table, _) in FLOW_MAPS {
        loader.map_max_entries(name, flow_capacity(table, max_flows));
    }
    let ebpf = loader
        .load(EBPF_OBJECT)
        .context("loading the lockdown eBPF object")?;
    let after = held_maps()?;
    let mut out = BTreeMap::new();
    for (id, m) in after {
        if before.contains_key(&id) {
            continue;
        }
        let info = MapInfo::from_id(id).with_context(|| format!("map id {id}"))?;
        let name = info
            .name_as_str()
            .map_or_else(|| format!("id {id}"), str::to_owned);
        out.insert(name, m);
    }
    drop(ebpf);
    Ok(out)
}

/// `BPF_MAP_TYPE_*` names for the types an object like this one uses.
const fn map_type_name(t: u32) -> &'static str {
    match t {
        1 => "hash",
        2 => "array",
        4 => "perf_event_array",
        5 => "percpu_hash",
        6 => "percpu_array",
        9 => "lru_hash",
        10 => "lru_percpu_hash",
        11 => "lpm_trie",
        27 => "ringbuf",
        _ => "other",
    }
}

pub(crate) fn run(big: u32) -> Result<Section> {
    println!(
        "==> [4/4] memory (fdinfo memlock of every map, flow table at {DEFAULT_MAX_FLOWS} and {big})"
    );
    let small = object_maps(DEFAULT_MAX_FLOWS)?;
    let large = object_maps(big)?;
    let mut maps = Vec::new();
    for (name, d) in &small {
        let l = large
            .get(name)
            .with_context(|| format!("map {name} missing from the second load"))?;
        maps.push(MapMem {
            name: name.clone(),
            map_type: d.map_type,
            map_type_name: map_type_name(d.map_type),
            key_size: d.key_size,
            value_size: d.value_size,
            max_entries_default: d.max_entries,
            memlock_default: d.memlock,
            max_entries_big: l.max_entries,
            memlock_big: l.memlock,
        });
    }
    // Kernel map names are cut at 15 bytes; LD_FLOWS4 fits. Its entries are IPv4 flows.
    let flows = maps.iter().find(|m| m.name == FLOWS).with_context(|| {
        format!(
            "no map {FLOWS} among {:?}",
            small.keys().collect::<Vec<_>>()
        )
    })?;
    let memlock_per_flow = (flows.memlock_big as f64 - flows.memlock_default as f64)
        / (f64::from(flows.max_entries_big) - f64::from(flows.max_entries_default));
    let section = Section {
        key_bytes: size_of::<FlowKey4>(),
        value_bytes: size_of::<FlowValue>(),
        key_value_bytes: size_of::<FlowKey4>() + size_of::<FlowValue>(),
        default_max_flows: DEFAULT_MAX_FLOWS,
        big_max_flows: big,
        memlock_per_flow,
        total_memlock_default: maps.iter().map(|m| m.memlock_default).sum(),
        total_memlock_big: maps.iter().map(|m| m.memlock_big).sum(),
        maps,
    };
    println!(
        "    flow entry: {} B key + {} B value = {} B; kernel memlock {:.1} B per entry; all maps {:.1} MiB at {} flows, {:.1} MiB at {}",
        section.key_bytes,
        section.value_bytes,
        section.key_value_bytes,
        section.memlock_per_flow,
        section.total_memlock_default as f64 / 1048576.0,
        DEFAULT_MAX_FLOWS,
        section.total_memlock_big as f64 / 1048576.0,
        big
    );
    Ok(section)
}
