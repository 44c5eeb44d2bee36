//! Map names, pin names and sizes: the contract between the eBPF object and the loader.

/// Flow table (LRU hash): [`crate::flow::FlowKey`] → [`crate::flow::FlowValue`].
pub const FLOWS: &str = "LD_FLOWS";
/// Port allow table (array of packed nibbles, see [`crate::rules::port_slot`]).
pub const PORTS: &str = "LD_PORTS";
/// Source-CIDR allow rules (LPM trie): [`crate::rules::CidrKey`] → `u8`.
pub const CIDRS: &str = "LD_CIDRS";
/// The operator's rules as written (hash): [`crate::rules::AllowRule`] → `u8`. Read only by the
/// loader, for listing and for recomputing [`PORTS`] and [`CIDRS`].
pub const RULES: &str = "LD_RULES";
/// Per-CPU counters (per-CPU array): index [`crate::counters::Counter`] →
/// [`crate::counters::CounterValue`].
pub const COUNTERS: &str = "LD_COUNTERS";
/// Runtime configuration (array of one): [`crate::config::Config`].
pub const CONFIG: &str = "LD_CONFIG";
/// Fragment verdicts (LRU hash): [`crate::flow::FragKey`] → [`crate::flow::FragValue`].
pub const FRAGS: &str = "LD_FRAGS";

/// Dropped-packet events (ring buffer) of [`crate::events::DropEvent`], rate-limited per CPU.
pub const EVENTS: &str = "LD_EVENTS";
/// Per-CPU rate-limit windows for [`EVENTS`] (per-CPU array of one
/// [`crate::events::LogWindow`]).
pub const LOG_WINDOW: &str = "LD_LOG_WINDOW";

/// Every map the loader pins, in pin order.
pub const ALL: [&str; 9] = [
    FLOWS, PORTS, CIDRS, RULES, COUNTERS, CONFIG, FRAGS, EVENTS, LOG_WINDOW,
];

/// Ring-buffer size for [`EVENTS`] (bytes, a power of two).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// XDP ingress program name in the object.
pub const PROG_INGRESS: &str = "lockdown_ingress";
/// TC egress program name in the object.
pub const PROG_EGRESS: &str = "lockdown_egress";

/// Benchmark baselines in the object (never attached): bare `XDP_DROP` and `XDP_PASS`.
pub const PROG_BASELINE_DROP: &str = "baseline_drop";
pub const PROG_BASELINE_PASS: &str = "baseline_pass";
/// Benchmark diagnostic in the object (never attached): one flow-table lookup, no parsing.
pub const PROG_BASELINE_LOOKUP: &str = "baseline_lookup";

/// Root of everything lockdown pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/lockdown";
/// Pin name of the XDP link, inside the interface's pin directory.
pub const PIN_LINK_INGRESS: &str = "link_ingress";
/// Pin name of the TC egress link, inside the interface's pin directory.
pub const PIN_LINK_EGRESS: &str = "link_egress";

/// Default flow-table capacity.
pub const DEFAULT_MAX_FLOWS: u32 = 65_536;
/// Capacity of the source-CIDR trie (entries are per port × CIDR).
pub const MAX_CIDR_ENTRIES: u32 = 65_536;
/// Capacity of the rule registry.
pub const MAX_RULES: u32 = 1_024;
/// Capacity of the fragment table.
pub const MAX_FRAGS: u32 = 8_192;
