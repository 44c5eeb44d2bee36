//! `Tables` over the BPF maps, so the shared decision logic runs on them.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key};
use lockdown_common::{
    config::Config,
    counters::Counter,
    flow::{FlowKey, FlowValue, FragKey, FragValue},
    rules::CidrKey,
    verdict::Tables,
};

use crate::maps::{CIDRS, CONFIG, COUNTERS, FLOWS, FRAGS, PORTS};

pub struct MapTables {
    config: &'static Config,
    /// `bpf_ktime_get_coarse_ns`, read on first use (0: not yet).
    now: u64,
}

static DEFAULT_CONFIG: Config = Config::DEFAULT;

impl MapTables {
    #[inline(always)]
    pub fn new() -> Self {
        Self {
            config: CONFIG.get(0).unwrap_or(&DEFAULT_CONFIG),
            now: 0,
        }
    }
}

impl Tables for MapTables {
    #[inline(always)]
    fn config(&self) -> &Config {
        self.config
    }

    #[inline(always)]
    fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut FlowValue> {
        // SAFETY: the pointer comes from a successful lookup and stays valid for this program
        // run (RCU); concurrent writers on other CPUs race benignly on plain integers.
        FLOWS.get_ptr_mut(key).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue) {
        // A failed insert leaves the flow untracked; its next packet tries again.
        let _ = FLOWS.insert(key, value, 0);
    }

    #[inline(always)]
    fn port_entry(&self, index: u32) -> u64 {
        PORTS.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn cidr_match(&self, key: &CidrKey) -> bool {
        CIDRS.get(&Key::new(key.prefix_len, key.data())).is_some()
    }

    #[inline(always)]
    fn frag_get(&self, key: &FragKey) -> Option<FragValue> {
        // SAFETY: as for `flow_mut`; the value is copied out at once.
        unsafe { FRAGS.get(key).copied() }
    }

    #[inline(always)]
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
        let _ = FRAGS.insert(key, value, 0);
    }

    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.now == 0 {
            // SAFETY: a plain helper call with no arguments.
            self.now = unsafe { bpf_ktime_get_coarse_ns() };
        }
        self.now
    }
}

/// Adds one packet of `bytes` to a counter on this CPU.
#[inline(always)]
pub fn count(counter: Counter, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and the program is not preempted on this CPU while it runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
