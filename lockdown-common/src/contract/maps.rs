//! Map names, pin names and sizes: the contract between the eBPF object and the loader.

use crate::contract::flow::{FAMILY_V4, FAMILY_V6, FlowTable};

/// IPv4 live flows (LRU hash): [`crate::contract::flow::FlowKey4`] → [`crate::contract::flow::FlowValue`].
pub const FLOWS4: &str = "LD_FLOWS4";
/// IPv6 live flows (LRU hash): [`crate::contract::flow::FlowKey`] → [`crate::contract::flow::FlowValue`].
pub const FLOWS6: &str = "LD_FLOWS6";
/// IPv4 closing flows (LRU hash), keyed as [`FLOWS4`].
pub const CLOSING4: &str = "LD_CLOSING4";
/// IPv6 closing flows (LRU hash), keyed as [`FLOWS6`].
pub const CLOSING6: &str = "LD_CLOSING6";

/// The four flow maps: (name, table, family).
pub const FLOW_MAPS: [(&str, FlowTable, u8); 4] = [
    (FLOWS4, FlowTable::Live, FAMILY_V4),
    (FLOWS6, FlowTable::Live, FAMILY_V6),
    (CLOSING4, FlowTable::Closing, FAMILY_V4),
    (CLOSING6, FlowTable::Closing, FAMILY_V6),
];

/// The flow map that holds `table` entries of `family`.
pub const fn flow_map(table: FlowTable, family: u8) -> &'static str {
    match (table, family == FAMILY_V4) {
        (FlowTable::Live, true) => FLOWS4,
        (FlowTable::Live, false) => FLOWS6,
        (FlowTable::Closing, true) => CLOSING4,
        (FlowTable::Closing, false) => CLOSING6,
    }
}

/// Capacity of each closing table for a live-table capacity of `max_flows`: a quarter, at least
/// [`MIN_CLOSING`]. Closing flows need their entry for the few round trips of the close; the LRU
/// drops the ones closed longest ago first.
pub const fn closing_capacity(max_flows: u32) -> u32 {
    let n = max_flows / 4;
    if n < MIN_CLOSING { MIN_CLOSING } else { n }
}

/// Smallest closing-table capacity.
pub const MIN_CLOSING: u32 = 256;

/// Capacity of `table` for a live-table capacity of `max_flows`.
pub const fn flow_capacity(table: FlowTable, max_flows: u32) -> u32 {
    match table {
        FlowTable::Live => max_flows,
        FlowTable::Closing => closing_capacity(max_flows),
    }
}
/// Port allow table (array of packed nibbles, see [`crate::contract::allow::port_slot`]).
pub const PORTS: &str = "LD_PORTS";
/// Source-CIDR allow rules (LPM trie): [`crate::contract::allow::CidrKey`] → `u8`.
pub const CIDRS: &str = "LD_CIDRS";
/// The operator's rules as written (hash): [`crate::contract::allow::AllowRule`] → `u8`. Read only by the
/// loader, for listing and for recomputing [`PORTS`] and [`CIDRS`].
pub const RULES: &str = "LD_RULES";
/// Per-CPU counters (per-CPU array): index [`crate::contract::counters::Counter`] →
/// [`crate::contract::counters::CounterValue`].
pub const COUNTERS: &str = "LD_COUNTERS";
/// Runtime configuration (array of one): [`crate::contract::config::Config`].
pub const CONFIG: &str = "LD_CONFIG";
/// Fragment verdicts (LRU hash): [`crate::contract::flow::FragKey`] → [`crate::contract::flow::FragValue`].
pub const FRAGS: &str = "LD_FRAGS";

/// Dropped-packet events (ring buffer) of [`crate::contract::events::DropEvent`], rate-limited per CPU.
pub const EVENTS: &str = "LD_EVENTS";
/// Per-CPU rate-limit windows for [`EVENTS`] (per-CPU array of one
/// [`crate::contract::events::LogWindow`]).
pub const LOG_WINDOW: &str = "LD_LOG_WINDOW";

/// The highest occupancy seen of each flow map, in [`FLOW_MAPS`] order (array of 4 `u32`). Only
/// the loader reads and writes it: every reader that counts the tables (`status`, `flows`, the
/// exporter, and `run` every [`HIGH_WATER_SAMPLE_SECS`]) raises it.
pub const HIGH_WATER: &str = "LD_HIGH_WATER";

/// How often a foreground `run` counts the flow tables to keep [`HIGH_WATER`] current.
pub const HIGH_WATER_SAMPLE_SECS: u64 = 10;

/// The blocklist's whole IPv4 addresses (hash): the address as a native-order `u32` of its wire
/// bytes ([`crate::stages::deny::key4`]) → expiry (`CLOCK_MONOTONIC_COARSE` ns, 0 = none).
pub const DENY4: &str = "LD_DENY4";
/// The blocklist's whole IPv6 addresses (hash): `[u8; 16]` → expiry.
pub const DENY6: &str = "LD_DENY6";
/// The blocklist's prefixes (LPM trie, keyed like [`CIDRS`] with protocol and port 0) → expiry.
pub const DENY_NETS: &str = "LD_DENY_NETS";
/// The blocklist's address filter (array of [`crate::stages::deny::FILTER_WORDS`] `u64`): a bit per hash
/// of each whole address in [`DENY4`] and [`DENY6`], kept by the loader.
pub const DENY_FILTER: &str = "LD_DENY_FILTER";
/// Capacity of each blocklist map.
pub const MAX_DENY: u32 = 65_536;
/// log2 of the address filter's bits.
pub const FILTER_BITS_LOG2: u32 = 20;
/// Bits of the address filter.
pub const FILTER_BITS: u32 = 1 << FILTER_BITS_LOG2;
/// `u64` words of the address filter ([`DENY_FILTER`]).
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;

/// The rated ports (hash): [`crate::contract::allow::rate_key`] → [`crate::contract::rate::RateSpec`].
pub const RATES: &str = "LD_RATES";
/// Capacity of [`RATES`].
pub const MAX_RATED_PORTS: u32 = 4_096;
/// The rate-limit sketch (array of `u64`): [`SKETCH_ENTRIES`] buckets, then the
/// hash seed (written once by the loader, random).
pub const SKETCH: &str = "LD_SKETCH";
/// Entries of [`SKETCH`]: the buckets and the seed.
pub const SKETCH_MAP_ENTRIES: u32 = SKETCH_ENTRIES + 1;
/// Rows of the rate-limit sketch.
pub const ROWS: u32 = 4;
/// log2 of [`WIDTH`].
pub const WIDTH_BITS: u32 = 18;
/// Buckets per row of the rate-limit sketch. 4 rows of 2^18 (8 MiB) rather than 2 of 2^19 at the
/// same memory: more rows isolate real heavy sources (scanners) from everyone else far better,
/// at a small cost against spoofed floods (figures: bench/RESULTS.md, README "rate limits").
pub const WIDTH: u32 = 1 << WIDTH_BITS;
/// Entries of the sketch's buckets: [`ROWS`] rows of [`WIDTH`] buckets, row-major.
pub const SKETCH_ENTRIES: u32 = ROWS * WIDTH;

/// SHA-256 of the eBPF object whose programs are attached (array of one `[u8; 32]`), written by
/// the loader when it attaches or replaces them; all zeros until then. Only the loader uses it.
pub const BUILD: &str = "LD_BUILD";

/// Every map the loader pins, in pin order.
pub const ALL: [&str; 22] = [
    FLOWS4,
    FLOWS6,
    CLOSING4,
    CLOSING6,
    PORTS,
    CIDRS,
    RULES,
    COUNTERS,
    CONFIG,
    FRAGS,
    EVENTS,
    LOG_WINDOW,
    HIGH_WATER,
    BUILD,
    DENY4,
    DENY6,
    DENY_NETS,
    DENY_FILTER,
    RATES,
    SKETCH,
    super::syncookie::SYNCOOKIE,
    super::syncookie::SYN_PORTS,
];

/// Ring-buffer size for [`EVENTS`] (bytes, a power of two).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// XDP ingress program name in the object: the multi-buffer variant (`xdp.frags`).
pub const PROG_INGRESS: &str = "lockdown_ingress";
/// The single-buffer variant of the XDP ingress program (the same decisions, no `xdp.frags`).
/// Its first 15 bytes, the name the kernel keeps, differ from [`PROG_INGRESS`]'s.
pub const PROG_INGRESS_LINEAR: &str = "lockdown_linear";
/// TC egress program name in the object.
pub const PROG_EGRESS: &str = "lockdown_egress";

/// Benchmark baselines in the object (never attached): bare `XDP_DROP` and `XDP_PASS`.
pub const PROG_BASELINE_DROP: &str = "baseline_drop";
pub const PROG_BASELINE_PASS: &str = "baseline_pass";
/// Benchmark diagnostic in the object (never attached): one lookup in the IPv4 live table (an LRU
/// hash with a 16-byte key), no parsing: the floor of any 5-tuple table.
pub const PROG_BASELINE_LOOKUP: &str = "baseline_lookup";

/// Root of everything lockdown pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lockdown";
/// Pin name of the XDP link, inside the interface's pin directory.
pub const PIN_LINK_INGRESS: &str = "link_ingress";
/// Pin name of the TC egress link, inside the interface's pin directory.
pub const PIN_LINK_EGRESS: &str = "link_egress";

/// Default capacity of each live flow table (one per family).
pub const DEFAULT_MAX_FLOWS: u32 = 65_536;
/// Capacity of the source-CIDR trie (entries are per port × CIDR).
pub const MAX_CIDR_ENTRIES: u32 = 65_536;
/// Capacity of the rule registry.
pub const MAX_RULES: u32 = 1_024;
/// Capacity of the fragment table.
pub const MAX_FRAGS: u32 = 8_192;
