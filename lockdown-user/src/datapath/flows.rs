//! The four flow maps (live and closing, per family) seen as one table keyed by the
//! family-independent [`FlowKey`], and their occupancy — live entries, capacity and high-water mark
//! — that `status`, `flows` and `/metrics` report.

use anyhow::{Context as _, Result};
use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};
use lockdown_common::contract::{
    flow::{FAMILY_V4, FlowKey, FlowKey4, FlowTable, FlowValue},
    maps::{FLOW_MAPS, HIGH_WATER},
};
use serde::Serialize;

use crate::datapath::pins::is_not_found;

/// One flow entry and the table it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    pub table: FlowTable,
    pub key: FlowKey,
    pub value: FlowValue,
}

/// How full one flow map is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Occupancy {
    /// The map's name (`LD_FLOWS4`, …).
    pub map: &'static str,
    /// `live` or `closing`.
    pub table: &'static str,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    /// Live (unexpired) entries now.
    pub entries: usize,
    pub capacity: u32,
    /// The most live entries any reader has counted since the interface was locked down.
    pub high_water: u32,
}

impl Occupancy {
    /// Entries as a fraction of capacity.
    pub fn fill(&self) -> f64 {
        self.entries as f64 / f64::from(self.capacity.max(1))
    }
}

/// Typed handles on the four flow maps and the high-water marks.
pub struct Flows {
    live4: HashMap<MapData, FlowKey4, FlowValue>,
    live6: HashMap<MapData, FlowKey, FlowValue>,
    closing4: HashMap<MapData, FlowKey4, FlowValue>,
    closing6: HashMap<MapData, FlowKey, FlowValue>,
    high_water: Array<MapData, u32>,
}

/// Runs `$body` with `$m` bound to the map of `$table` for `$key`'s family and `$k` to the key in
/// that map's type.
macro_rules! with_map {
    ($self:expr, $table:expr, $key:expr, |$m:ident, $k:ident| $body:expr) => {
        match ($table, $key.family == FAMILY_V4) {
            (FlowTable::Live, true) => {
                let ($m, $k) = (&mut $self.live4, &$key.v4());
                $body
            }
            (FlowTable::Closing, true) => {
                let ($m, $k) = (&mut $self.closing4, &$key.v4());
                $body
            }
            (FlowTable::Live, false) => {
                let ($m, $k) = (&mut $self.live6, $key);
                $body
            }
            (FlowTable::Closing, false) => {
                let ($m, $k) = (&mut $self.closing6, $key);
                $body
            }
        }
    };
}

/// Every entry of one map, widened to [`FlowKey`]. Entries that vanish while we read are skipped.
fn read_all<K: aya::Pod>(
    map: &HashMap<MapData, K, FlowValue>,
    table: FlowTable,
    widen: impl Fn(&K) -> FlowKey,
    out: &mut Vec<FlowEntry>,
) -> Result<()> {
    for entry in map.iter() {
        match entry {
            Ok((k, value)) => out.push(FlowEntry {
                table,
                key: widen(&k),
                value,
            }),
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(e).context("reading the flow tables"),
        }
    }
    Ok(())
}

impl Flows {
    /// Takes the maps by name from `get` (pins or a loaded object).
    pub fn from_maps(get: &mut impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        let [l4, l6, c4, c6] = FLOW_MAPS.map(|(name, _, _)| name);
        Ok(Self {
            live4: get(l4)?.try_into()?,
            live6: get(l6)?.try_into()?,
            closing4: get(c4)?.try_into()?,
            closing6: get(c6)?.try_into()?,
            high_water: get(HIGH_WATER)?.try_into()?,
        })
    }

    /// The entry of `key` in `table`, live or expired.
    pub fn get(&mut self, table: FlowTable, key: &FlowKey) -> Result<Option<FlowValue>> {
        match with_map!(self, table, key, |m, k| m.get(k, 0)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).context("reading the flow tables"),
        }
    }

    /// Writes an entry with `BPF_*` `flags`.
    pub fn insert(
        &mut self,
        table: FlowTable,
        key: &FlowKey,
        value: &FlowValue,
        flags: u64,
    ) -> Result<(), MapError> {
        with_map!(self, table, key, |m, k| m.insert(k, value, flags))
    }

    /// Removes an entry; `false` if there was none.
    pub fn remove(&mut self, table: FlowTable, key: &FlowKey) -> Result<bool> {
        match with_map!(self, table, key, |m, k| m.remove(k)) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e).context("removing a flow"),
        }
    }

    /// Every entry of the four maps, live or expired (expired entries stay in an LRU map until
    /// their slot is reused).
    pub fn entries(&self) -> Result<Vec<FlowEntry>> {
        let mut out = Vec::new();
        read_all(&self.live4, FlowTable::Live, FlowKey4::widen, &mut out)?;
        read_all(&self.live6, FlowTable::Live, |k| *k, &mut out)?;
        read_all(
            &self.closing4,
            FlowTable::Closing,
            FlowKey4::widen,
            &mut out,
        )?;
        read_all(&self.closing6, FlowTable::Closing, |k| *k, &mut out)?;
        Ok(out)
    }

    /// The entries that are live at `now`.
    pub fn live(
        &self,
        now: u64,
        timeouts: &lockdown_common::contract::config::Timeouts,
    ) -> Result<Vec<FlowEntry>> {
        let mut all = self.entries()?;
        all.retain(|e| e.value.is_live(now, timeouts));
        Ok(all)
    }

    /// Capacity of each map, in [`FLOW_MAPS`] order.
    pub fn capacities(&self) -> Result<[u32; 4]> {
        let info = |m: &MapData| -> Result<u32> {
            Ok(m.info().context("reading a flow map's info")?.max_entries())
        };
        Ok([
            info(self.live4.map())?,
            info(self.live6.map())?,
            info(self.closing4.map())?,
            info(self.closing6.map())?,
        ])
    }

    /// How full each map is (in [`FLOW_MAPS`] order), counting `live` entries; raises the pinned
    /// high-water marks to what it counted.
    pub fn occupancy(&mut self, live: &[FlowEntry]) -> Result<Vec<Occupancy>> {
        let capacities = self.capacities()?;
        let mut out = Vec::with_capacity(FLOW_MAPS.len());
        for (i, (map, table, family)) in FLOW_MAPS.iter().enumerate() {
            let entries = live
                .iter()
                .filter(|e| e.table == *table && e.key.family == *family)
                .count();
            let index = i as u32;
            let mut high_water = self
                .high_water
                .get(&index, 0)
                .context("reading the high-water marks")?;
            let now = u32::try_from(entries).unwrap_or(u32::MAX);
            if now > high_water {
                high_water = now;
                self.high_water
                    .set(index, &high_water, 0)
                    .context("writing the high-water marks")?;
            }
            out.push(Occupancy {
                map,
                table: table.name(),
                family: if *family == FAMILY_V4 { "ipv4" } else { "ipv6" },
                entries,
                capacity: capacities[i],
                high_water,
            });
        }
        Ok(out)
    }
}
