//! The maps, named from `lockdown_common::contract::maps`. Sizes here are defaults; the loader overrides the
//! flow-table size (`--max-flows`).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use lockdown_common::contract::{
    allow::{AllowRule, CidrKey, PORT_TABLE_ENTRIES},
    config::Config,
    counters::{Counter, CounterValue},
    events::LogWindow,
    flow::{FlowKey, FlowKey4, FlowValue, FragKey, FragValue},
    maps::{
        DEFAULT_MAX_FLOWS, EVENTS_BYTES, FILTER_WORDS, MAX_CIDR_ENTRIES, MAX_DENY, MAX_FRAGS,
        MAX_RATED_PORTS, MAX_RULES, SKETCH_MAP_ENTRIES, closing_capacity,
    },
    rate::RateSpec,
    syncookie::{CookieConfig, PortFlood, SYN_PORTS_ENTRIES},
};

#[map(name = "LD_FLOWS4")]
pub(crate) static FLOWS4: LruHashMap<FlowKey4, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

#[map(name = "LD_FLOWS6")]
pub(crate) static FLOWS6: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

#[map(name = "LD_CLOSING4")]
pub(crate) static CLOSING4: LruHashMap<FlowKey4, FlowValue> =
    LruHashMap::with_max_entries(closing_capacity(DEFAULT_MAX_FLOWS), 0);

#[map(name = "LD_CLOSING6")]
pub(crate) static CLOSING6: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(closing_capacity(DEFAULT_MAX_FLOWS), 0);

#[map(name = "LD_PORTS")]
pub(crate) static PORTS: Array<u64> = Array::with_max_entries(PORT_TABLE_ENTRIES, 0);

/// The trie key without its prefix length, which `LpmTrie` adds.
#[map(name = "LD_CIDRS")]
pub(crate) static CIDRS: LpmTrie<[u8; 20], u8> = LpmTrie::with_max_entries(MAX_CIDR_ENTRIES, 0);

/// The blocklist (see `lockdown_common::stages::deny`): whole addresses, then prefixes. Only the loader
/// inserts, so the hash maps allocate entries as they come instead of preallocating 65 536.
#[map(name = "LD_DENY4")]
pub(crate) static DENY4: HashMap<u32, u64> = HashMap::with_max_entries(MAX_DENY, BPF_F_NO_PREALLOC);

#[map(name = "LD_DENY6")]
pub(crate) static DENY6: HashMap<[u8; 16], u64> =
    HashMap::with_max_entries(MAX_DENY, BPF_F_NO_PREALLOC);

#[map(name = "LD_DENY_FILTER")]
pub(crate) static DENY_FILTER: Array<u64> = Array::with_max_entries(FILTER_WORDS, 0);

#[map(name = "LD_DENY_NETS")]
pub(crate) static DENY_NETS: LpmTrie<[u8; 20], u64> = LpmTrie::with_max_entries(MAX_DENY, 0);

/// The rated ports and the rate-limit sketch (see `lockdown_common::stages::ratelimit`).
#[map(name = "LD_RATES")]
pub(crate) static RATES: HashMap<u32, RateSpec> =
    HashMap::with_max_entries(MAX_RATED_PORTS, BPF_F_NO_PREALLOC);

#[map(name = "LD_SKETCH")]
pub(crate) static SKETCH: Array<u64> = Array::with_max_entries(SKETCH_MAP_ENTRIES, 0);

#[map(name = "LD_RULES")]
pub(crate) static RULES: HashMap<AllowRule, u8> = HashMap::with_max_entries(MAX_RULES, 0);

#[map(name = "LD_COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<CounterValue> =
    PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "LD_CONFIG")]
pub(crate) static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "LD_FRAGS")]
pub(crate) static FRAGS: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(MAX_FRAGS, 0);

#[map(name = "LD_EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map(name = "LD_LOG_WINDOW")]
pub(crate) static LOG_WINDOW: PerCpuArray<LogWindow> = PerCpuArray::with_max_entries(1, 0);

/// Written and read by the loader only (see `lockdown_common::contract::maps::HIGH_WATER`); declared here so
/// it is created and pinned with the others.
#[map(name = "LD_HIGH_WATER")]
pub(crate) static HIGH_WATER: Array<u32> = Array::with_max_entries(4, 0);

/// Written and read by the loader only (see `lockdown_common::contract::maps::BUILD`).
#[map(name = "LD_BUILD")]
pub(crate) static BUILD: Array<[u8; 32]> = Array::with_max_entries(1, 0);

/// SYN cookies (see `lockdown_common::contract::syncookie`): the configuration, written by the
/// loader; the per-port flood detector; the tail-call table holding the cookie program.
#[map(name = "LD_SYNCOOKIE")]
pub(crate) static SYNCOOKIE: Array<CookieConfig> = Array::with_max_entries(1, 0);

#[map(name = "LD_SYN_PORTS")]
pub(crate) static SYN_PORTS: Array<PortFlood> = Array::with_max_entries(SYN_PORTS_ENTRIES, 0);

#[map(name = "LD_COOKIE_PROGS")]
pub(crate) static COOKIE_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Keeps `CidrKey`'s layout and the trie's key in step (`MapTables::cidr_match` relies on it).
const _: () = assert!(size_of::<CidrKey>() == size_of::<aya_ebpf::maps::lpm_trie::Key<[u8; 20]>>());
const _: () = assert!(core::mem::offset_of!(CidrKey, family) == 4);
const _: () = assert!(core::mem::offset_of!(CidrKey, addr) == 8);
