//! What `status` reports, as one serialisable value.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::maps::MapInfo;
use lockdown_common::{
    config::{ATTACH_NATIVE, ATTACH_SKB, Timeouts},
    counters::CounterKind,
    maps::FLOWS,
};
use serde::Serialize;

use crate::{handles::Handles, pins::PinDir};

#[derive(Debug, Serialize)]
pub struct Status {
    pub interface: String,
    pub mode: String,
    pub monitor: bool,
    /// Whether dropped-packet events are being written (a `lockdown log` reader runs).
    pub logging: bool,
    /// The event rate limit, per CPU per second.
    pub log_per_sec: u32,
    /// Every inbound packet and byte the XDP program saw (the sum of the pass and drop counters).
    pub total_packets: u64,
    pub total_bytes: u64,
    /// Current number of live flow entries.
    pub flows: usize,
    pub max_flows: u32,
    pub allow: Vec<String>,
    /// Idle timeouts in seconds, by name.
    pub timeouts: BTreeMap<&'static str, u32>,
    /// Packets per counter name.
    pub counters: BTreeMap<&'static str, u64>,
    /// Bytes per counter name.
    pub bytes: BTreeMap<&'static str, u64>,
    /// Packets per second per counter name, over `rate_interval_secs` (absent when 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates_pps: Option<BTreeMap<&'static str, f64>>,
    pub rate_interval_secs: f64,
}

/// The status of one interface; counter rates are measured over `interval` (none if zero).
pub fn status(dir: &PinDir, interval: std::time::Duration) -> Result<Status> {
    let handles = Handles::open(dir)?;
    let max_flows = MapInfo::from_pin(dir.map(FLOWS))
        .context("reading the flow table's info")?
        .max_entries();
    let config = handles.read_config()?;
    let flows = handles.live_flows(crate::clock_ns())?.len();
    let allow = handles.rules()?.iter().map(ToString::to_string).collect();
    let mut counters = BTreeMap::new();
    let mut bytes = BTreeMap::new();
    let first = handles.counters()?;
    let rates_pps = if interval.is_zero() {
        None
    } else {
        let start = std::time::Instant::now();
        std::thread::sleep(interval);
        let second = handles.counters()?;
        let secs = start.elapsed().as_secs_f64();
        Some(
            first
                .iter()
                .zip(&second)
                .map(|((c, a), (_, b))| {
                    (c.name(), b.packets.saturating_sub(a.packets) as f64 / secs)
                })
                .collect(),
        )
    };
    let (mut total_packets, mut total_bytes) = (0, 0);
    for (c, v) in first {
        counters.insert(c.name(), v.packets);
        bytes.insert(c.name(), v.bytes);
        if matches!(c.kind(), CounterKind::Pass | CounterKind::Drop) {
            total_packets += v.packets;
            total_bytes += v.bytes;
        }
    }
    let mut t = config.timeouts;
    let timeouts = Timeouts::NAMES
        .iter()
        .filter_map(|(name, _)| t.field_mut(name).map(|v| (*name, *v)))
        .collect();
    Ok(Status {
        timeouts,
        interface: dir.iface.clone(),
        mode: match config.attach_mode {
            ATTACH_NATIVE => "native",
            ATTACH_SKB => "skb",
            _ => "unknown",
        }
        .to_owned(),
        monitor: config.has(lockdown_common::config::FLAG_MONITOR),
        logging: config.has(lockdown_common::config::FLAG_LOG),
        log_per_sec: config.log_per_sec,
        total_packets,
        total_bytes,
        flows,
        max_flows,
        allow,
        counters,
        bytes,
        rates_pps,
        rate_interval_secs: interval.as_secs_f64(),
    })
}
