//! What `status` reports, as one serialisable value.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use lockdown_common::contract::{config::Timeouts, counters::CounterKind, flow::FlowTable};
use serde::Serialize;

use crate::{
    attach::{cookies, egress, variant::Variant},
    datapath::{build_id, flows::Occupancy, handles::Handles, pins::PinDir},
    host::link::XdpMode,
};

#[derive(Debug, Serialize)]
pub struct Status {
    pub interface: String,
    /// SHA-256 of the eBPF object whose programs are attached, as recorded when they were
    /// (`None`: attached by a release that did not record it).
    pub programs_sha256: Option<String>,
    /// SHA-256 of the eBPF object this binary embeds.
    pub binary_sha256: String,
    /// The attached programs are not this binary's: `up --replace` loads them.
    pub replace_due: bool,
    pub mode: String,
    /// The name the kernel has for the attached XDP program.
    pub xdp_program: Option<String>,
    /// Which XDP program variant that is (`frags` or `linear`; none if unknown).
    pub xdp_variant: Option<Variant>,
    /// The TC egress attachment: its kind (`tcx` or `netlink`) and whether it is in place.
    pub egress: egress::State,
    pub monitor: bool,
    /// Whether dropped-packet events are being written (a `lockdown log` reader runs).
    pub logging: bool,
    /// The event rate limit, per CPU per second.
    pub log_per_sec: u32,
    /// Every inbound packet and byte the XDP program saw (the sum of the pass and drop counters).
    pub total_packets: u64,
    pub total_bytes: u64,
    /// Live entries in the live tables (both families): flows the origin opened, and connections
    /// whose allow rule has been removed.
    pub flows: usize,
    /// Capacity of each family's live table.
    pub max_flows: u32,
    /// Live entries in the closing tables (TCP flows that saw a FIN or RST).
    pub closing_flows: usize,
    /// How full each flow map is, with its high-water mark.
    pub tables: Vec<Occupancy>,
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
    /// SYN cookies: mode, whether they answer here (and why not), settings, engaged ports, the
    /// hand-off's counters.
    pub syn_cookies: cookies::CookieStatus,
}

/// The status of one interface; counter rates are measured over `interval` (none if zero).
pub fn status(dir: &PinDir, interval: std::time::Duration) -> Result<Status> {
    let mut handles = Handles::open(dir)?;
    let config = handles.read_config()?;
    let live = handles.live_flows(crate::clock_ns())?;
    let tables = handles.flows.occupancy(&live)?;
    let count = |table| live.iter().filter(|e| e.table == table).count();
    let (flows, closing_flows) = (count(FlowTable::Live), count(FlowTable::Closing));
    let max_flows = tables.first().map_or(0, |o| o.capacity);
    let rules = handles.rules()?;
    let allow = rules.iter().map(ToString::to_string).collect();
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
        if matches!(
            c.kind(),
            CounterKind::Pass | CounterKind::Drop | CounterKind::Answer
        ) {
            total_packets += v.packets;
            total_bytes += v.bytes;
        }
    }
    let mut t = config.timeouts;
    let timeouts = Timeouts::NAMES
        .iter()
        .filter_map(|(name, _)| t.field_mut(name).map(|v| (*name, *v)))
        .collect();
    let xdp_program = xdp_program(dir)?;
    let xdp_variant = xdp_program.as_deref().and_then(Variant::from_kernel_name);
    let syn_cookies = cookies::status(dir, &rules, xdp_variant)?;
    let programs = build_id::running(dir)?;
    let binary = build_id::object_sha256();
    Ok(Status {
        programs_sha256: programs.as_ref().map(build_id::hex),
        binary_sha256: build_id::hex(binary),
        replace_due: programs.as_ref() != Some(binary),
        timeouts,
        interface: dir.iface.clone(),
        mode: XdpMode::from_config(config.attach_mode)
            .map_or("unknown", XdpMode::name)
            .to_owned(),
        xdp_variant,
        xdp_program,
        egress: egress::state(dir)?,
        monitor: config.has(lockdown_common::contract::config::FLAG_MONITOR),
        logging: config.has(lockdown_common::contract::config::FLAG_LOG),
        log_per_sec: config.log_per_sec,
        total_packets,
        total_bytes,
        flows,
        max_flows,
        closing_flows,
        tables,
        allow,
        counters,
        bytes,
        rates_pps,
        rate_interval_secs: interval.as_secs_f64(),
        syn_cookies,
    })
}

/// The kernel's name for the program in the pinned XDP link (`None` if it cannot be read).
fn xdp_program(dir: &PinDir) -> Result<Option<String>> {
    use aya::programs::links::{FdLink, PinnedLink};
    let link = FdLink::from(
        PinnedLink::from_pin(dir.link_ingress())
            .with_context(|| format!("opening {}", dir.link_ingress().display()))?,
    );
    let id = link
        .info()
        .context("reading the ingress link")?
        .program_id();
    Ok(crate::host::link::prog_name(id))
}
