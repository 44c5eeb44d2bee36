//! The fragment stage: a first fragment that passed is remembered ([`first`]) so that the
//! datagram's later fragments, which carry no ports, follow its verdict for a short while
//! ([`later`]). Nothing else is kept: a later fragment without a remembered first is dropped.

use crate::{
    contract::{
        counters::Counter,
        flow::{FragKey, FragValue},
    },
    stages::parse::Ip,
    tables::Tables,
};

/// Remembers that a first fragment passed, for the datagram's later fragments.
#[inline(never)]
pub fn first<T: Tables + ?Sized>(t: &mut T, ip: &Ip, reason: Counter) {
    let value = FragValue {
        first_seen_ns: t.now(),
        reason: reason as u32,
        _pad: 0,
    };
    t.frag_insert(&frag_key(ip), &value);
}

#[inline(always)]
const fn frag_key(ip: &Ip) -> FragKey {
    FragKey {
        src: ip.src,
        dst: ip.dst,
        id: ip.frag_id,
        proto: ip.frag_proto,
        family: ip.family,
        _pad: 0,
    }
}

/// A non-first fragment follows its first fragment's verdict, if that passed recently.
#[inline(never)]
pub fn later<T: Tables + ?Sized>(t: &mut T, ip: &Ip) -> Counter {
    let now = t.now();
    let ttl = u64::from(t.config().timeouts.fragment) * 1_000_000_000;
    match t.frag_get(&frag_key(ip)) {
        Some(v) if now.saturating_sub(v.first_seen_ns) <= ttl => Counter::PassFragment,
        _ => Counter::DropFragment,
    }
}
