//! `Tables` over the BPF maps, so the shared decision logic runs on them.

use aya_ebpf::{
    bindings::{bpf_sock_tuple, xdp_md},
    helpers::{
        bpf_ktime_get_coarse_ns,
        generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    },
    maps::lpm_trie::Key,
};
use lockdown_common::{
    contract::{
        allow::{CidrKey, rate_key},
        config::Config,
        counters::Counter,
        flow::{FAMILY_V4, FlowKey, FlowTable, FlowValue, FragKey, FragValue},
        maps::SKETCH_ENTRIES,
        rate::RateSpec,
        syncookie::{CookieConfig, PortFlood},
    },
    stages::deny,
    tables::{Socket, Tables},
};

use crate::maps::{
    CIDRS, CLOSING4, CLOSING6, CONFIG, COUNTERS, DENY_FILTER, DENY_NETS, DENY4, DENY6, FLOWS4,
    FLOWS6, FRAGS, PORTS, RATES, SKETCH, SYN_PORTS, SYNCOOKIE,
};

/// What a program does with SYN cookies, and what it needs for it.
pub(crate) trait Variant {
    /// Whether the decision includes the cookie stage's triage (`Tables::cookies`).
    const COOKIES: bool;
    /// The XDP context to look sockets up with (null: the program does no lookups).
    fn ctx(&self) -> *mut xdp_md;
}

/// No cookie stage: the single-buffer XDP program and the TC program.
pub(crate) struct Plain;
/// The multi-buffer ingress program: triage for the cookie stage, no socket lookups.
pub(crate) struct Triage;
/// The cookie program: socket lookups with its context.
pub(crate) struct Stage(pub(crate) *mut xdp_md);

impl Variant for Plain {
    const COOKIES: bool = false;
    fn ctx(&self) -> *mut xdp_md {
        core::ptr::null_mut()
    }
}

impl Variant for Triage {
    const COOKIES: bool = true;
    fn ctx(&self) -> *mut xdp_md {
        core::ptr::null_mut()
    }
}

impl Variant for Stage {
    const COOKIES: bool = true;
    fn ctx(&self) -> *mut xdp_md {
        self.0
    }
}

/// The maps, for a program of variant `V`. Only the cookie program carries a context: a field
/// more in every program's tables costs the other programs' verification about a third more
/// (measured: 433k to 652k instructions for `lockdown_ingress` on 6.18).
pub(crate) struct MapTables<V: Variant = Plain> {
    config: &'static Config,
    /// `bpf_ktime_get_coarse_ns`, read on first use (0: not yet).
    now: u64,
    variant: V,
}

static DEFAULT_CONFIG: Config = Config::DEFAULT;

/// `BPF_F_CURRENT_NETNS`: look sockets up in the interface's network namespace.
const CURRENT_NETNS: u64 = u64::MAX;
/// `TCP_LISTEN` in `struct bpf_sock`'s `state`.
const TCP_LISTEN: u32 = 10;

impl<V: Variant> MapTables<V> {
    #[inline(always)]
    pub(crate) fn new(variant: V) -> Self {
        Self {
            config: CONFIG.get(0).unwrap_or(&DEFAULT_CONFIG),
            now: 0,
            variant,
        }
    }
}

impl<V: Variant> Tables for MapTables<V> {
    #[inline(always)]
    fn config(&self) -> &Config {
        self.config
    }

    #[inline(always)]
    fn flow_mut(&mut self, table: FlowTable, key: &FlowKey) -> Option<&mut FlowValue> {
        let p = match (table, key.family == FAMILY_V4) {
            (FlowTable::Live, true) => FLOWS4.get_ptr_mut(&key.v4()),
            (FlowTable::Closing, true) => CLOSING4.get_ptr_mut(&key.v4()),
            (FlowTable::Live, false) => FLOWS6.get_ptr_mut(key),
            (FlowTable::Closing, false) => CLOSING6.get_ptr_mut(key),
        };
        // SAFETY: the pointer comes from a successful lookup and stays valid for this program
        // run (RCU); concurrent writers on other CPUs race benignly on plain integers.
        p.map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn flow_insert(&mut self, table: FlowTable, key: &FlowKey, value: &FlowValue) -> bool {
        let r = match (table, key.family == FAMILY_V4) {
            (FlowTable::Live, true) => FLOWS4.insert(&key.v4(), value, 0),
            (FlowTable::Closing, true) => CLOSING4.insert(&key.v4(), value, 0),
            (FlowTable::Live, false) => FLOWS6.insert(key, value, 0),
            (FlowTable::Closing, false) => CLOSING6.insert(key, value, 0),
        };
        // A failed insert leaves the flow untracked (or where it was); its next packet tries
        // again. Counted, so that `status` shows it.
        if r.is_err() {
            count(Counter::FlowInsertFailed, 0);
        }
        r.is_ok()
    }

    #[inline(always)]
    fn flow_remove(&mut self, table: FlowTable, key: &FlowKey) {
        let _ = match (table, key.family == FAMILY_V4) {
            (FlowTable::Live, true) => FLOWS4.remove(&key.v4()),
            (FlowTable::Closing, true) => CLOSING4.remove(&key.v4()),
            (FlowTable::Live, false) => FLOWS6.remove(key),
            (FlowTable::Closing, false) => CLOSING6.remove(key),
        };
    }

    #[inline(always)]
    fn port_entry(&self, index: u32) -> u64 {
        PORTS.get(index).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn cidr_match(&self, key: &CidrKey) -> bool {
        // SAFETY: `CidrKey` is `repr(C)`: the prefix length, then the 20 bytes of `data()` in
        // order, 24 bytes with no padding — exactly the packed `Key<[u8; 20]>` (alignment 1), so
        // the trie reads the key in place instead of from a copy on the stack.
        let key = unsafe { &*core::ptr::from_ref(key).cast::<Key<[u8; 20]>>() };
        CIDRS.get(key).is_some()
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
    fn deny_exact(&self, family: u8, src: &[u8; 16]) -> Option<u64> {
        // SAFETY: as for `frag_get`: the value is copied out at once.
        unsafe {
            if family == FAMILY_V4 {
                DENY4.get(&deny::key4(src)).copied()
            } else {
                DENY6.get(src).copied()
            }
        }
    }

    #[inline(always)]
    fn deny_filter(&self, word: u32) -> u64 {
        DENY_FILTER.get(word).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn deny_net(&self, key: &CidrKey) -> Option<u64> {
        // SAFETY: as in `cidr_match`.
        let key = unsafe { &*core::ptr::from_ref(key).cast::<Key<[u8; 20]>>() };
        DENY_NETS.get(key).copied()
    }

    #[inline(always)]
    fn rate_spec(&self, proto: u8, port: u16) -> Option<RateSpec> {
        // SAFETY: as for `frag_get`: the value is copied out at once.
        unsafe { RATES.get(&rate_key(proto, port)).copied() }
    }

    #[inline(always)]
    fn sketch_seed(&self) -> u64 {
        SKETCH.get(SKETCH_ENTRIES).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn sketch_bucket(&mut self, index: u32) -> Option<&mut u64> {
        // SAFETY: an array element lives as long as the map; the decision logic holds one bucket
        // at a time (races between CPUs only err towards admitting, see `ratelimit`).
        SKETCH.get_ptr_mut(index).map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn cookies(&self) -> bool {
        V::COOKIES
    }

    #[inline(always)]
    fn cookie_config(&self) -> Option<&CookieConfig> {
        SYNCOOKIE.get(0)
    }

    #[inline(always)]
    fn syn_port(&mut self, port: u16) -> Option<&mut PortFlood> {
        // SAFETY: an array element lives as long as the map; CPUs race benignly on its counts
        // (see `PortFlood`).
        SYN_PORTS
            .get_ptr_mut(u32::from(port))
            .map(|p| unsafe { &mut *p })
    }

    #[inline(always)]
    fn socket(
        &mut self,
        family: u8,
        src: &[u8; 16],
        dst: &[u8; 16],
        (sport, dport): (u16, u16),
    ) -> Socket {
        let ctx = self.variant.ctx();
        if ctx.is_null() {
            // No context to look up with: say "a connection", which passes as without cookies.
            return Socket::Connection;
        }
        // `struct bpf_sock_tuple`: addresses and ports in network order, IPv4 (12 bytes) or IPv6
        // (36 bytes); built from words (a zeroed byte array would be a `memset`).
        let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
        let (s, d) = (sport.to_be_bytes(), dport.to_be_bytes());
        let ports = u32::from_ne_bytes([s[0], s[1], d[0], d[1]]);
        let v4 = family == FAMILY_V4;
        let mut tuple: [u32; 9] = if v4 {
            [w(src, 0), w(dst, 0), ports, 0, 0, 0, 0, 0, 0]
        } else {
            [
                w(src, 0),
                w(src, 4),
                w(src, 8),
                w(src, 12),
                w(dst, 0),
                w(dst, 4),
                w(dst, 8),
                w(dst, 12),
                ports,
            ]
        };
        let size = if v4 { 12 } else { 36 };
        // SAFETY: `ctx` is this program's XDP context; the tuple lives on the stack for the call
        // and `size` of its bytes are initialised; a socket found is released before returning.
        unsafe {
            let sk = bpf_skc_lookup_tcp(
                ctx.cast(),
                tuple.as_mut_ptr().cast::<bpf_sock_tuple>(),
                size,
                CURRENT_NETNS,
                0,
            );
            if sk.is_null() {
                return Socket::None;
            }
            let state = (*sk).state;
            bpf_sk_release(sk.cast());
            if state == TCP_LISTEN {
                Socket::Listener
            } else {
                Socket::Connection
            }
        }
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
pub(crate) fn count(counter: Counter, bytes: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, and the program is not preempted on this CPU while it runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
