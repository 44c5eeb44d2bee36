//! The blocklist stage: a denied source is dropped right after its IP header is parsed, before any
//! other stage looks at the packet, established flows included, as a fail2ban ban is. Entries carry their expiry and the datapath
//! enforces it: an entry stops matching the moment it expires, and userspace reaps it later.
//!
//! Three maps: exact IPv4 and IPv6 addresses in hash maps (the fail2ban case), and shorter
//! prefixes in an LPM trie keyed like the allowlist's source trie ([`CidrKey`] with protocol and
//! port 0). Config flags say which are in use, so an origin without a blocklist pays nothing. In
//! front of the hash maps sits a one-bit-per-hash filter of the addresses (an array the verifier
//! inlines, [`FILTER_BITS`] bits): a source whose bit is clear is not on the list, so most packets
//! pay one array read instead of a hash lookup (with 10 000 addresses, 1% of sources find their
//! bit set by another address and take the hash lookup).

use crate::{
    contract::{
        allow::CidrKey,
        config::{FLAG_DENY, FLAG_DENY_NETS},
        maps::FILTER_BITS_LOG2,
    },
    tables::Tables,
};

/// The expiry value of an entry that holds until removed.
pub const FOREVER: u64 = 0;

/// Whether an entry expiring at `expires_ns` (or [`FOREVER`]) holds at `now`.
#[inline(always)]
pub const fn in_force(expires_ns: u64, now: u64) -> bool {
    expires_ns == FOREVER || now < expires_ns
}

/// Where a whole address's bit lies in the filter: (word, mask). The family is part of the hash.
#[inline(always)]
pub const fn filter_slot(family: u8, src: &[u8; 16]) -> (u32, u64) {
    let a = u64::from_ne_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let b = u64::from_ne_bytes([
        src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
    ]);
    let x = (a ^ b.rotate_left(29) ^ family as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let bit = (x >> (64 - FILTER_BITS_LOG2)) as u32;
    (bit / 64, 1 << (bit % 64))
}

/// Whether the blocklist denies `src`. The flag and filter tests are inlined at the call site;
/// the lookups are one subprogram in the kernel.
#[inline(always)]
pub fn denied<T: Tables + ?Sized>(t: &mut T, family: u8, src: &[u8; 16]) -> bool {
    let flags = t.config().flags;
    if flags & FLAG_DENY == 0 {
        return false;
    }
    let (word, mask) = filter_slot(family, src);
    let maybe_host = t.deny_filter(word) & mask != 0;
    if !maybe_host && flags & FLAG_DENY_NETS == 0 {
        return false;
    }
    lookup(t, family, src, maybe_host)
}

#[inline(never)]
fn lookup<T: Tables + ?Sized>(t: &mut T, family: u8, src: &[u8; 16], maybe_host: bool) -> bool {
    if maybe_host
        && let Some(expires) = t.deny_exact(family, src)
        && in_force(expires, t.now())
    {
        return true;
    }
    if t.config().flags & FLAG_DENY_NETS == 0 {
        return false;
    }
    // The longest prefix covering the source decides.
    match t.deny_net(&CidrKey::lookup(family, 0, 0, *src)) {
        Some(expires) => in_force(expires, t.now()),
        None => false,
    }
}

/// The key of the exact IPv4 map: the address's four bytes as they lie in the packet.
#[inline(always)]
pub const fn key4(src: &[u8; 16]) -> u32 {
    u32::from_ne_bytes([src[0], src[1], src[2], src[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString as _;

    use crate::{contract::config::Config, model::HostTables, rules::deny::DenyNet};

    const NOW: u64 = 5_000_000_000;

    fn tables(entries: &[(&str, u64)]) -> HostTables {
        let mut t = HostTables::new(Config::DEFAULT, vec![0; 8192], Default::default());
        for (s, exp) in entries {
            t.deny_add(DenyNet::parse(s).unwrap(), *exp);
        }
        t
    }

    fn src(s: &str) -> (u8, [u8; 16]) {
        crate::contract::flow::addr_bytes(s.parse().unwrap())
    }

    fn is_denied(t: &mut HostTables, s: &str) -> bool {
        let (family, addr) = src(s);
        t.now = NOW;
        denied(t, family, &addr)
    }

    #[test]
    fn addresses_and_prefixes_of_both_families() {
        let mut t = tables(&[
            ("203.0.113.7", FOREVER),
            ("198.51.100.0/24", FOREVER),
            ("2001:db8::1", FOREVER),
            ("2001:db8:1::/48", FOREVER),
        ]);
        for yes in [
            "203.0.113.7",
            "198.51.100.200",
            "2001:db8::1",
            "2001:db8:1:2::3",
        ] {
            assert!(is_denied(&mut t, yes), "{yes} should be denied");
        }
        for no in [
            "203.0.113.8",
            "198.51.101.1",
            "2001:db8::2",
            "2001:db8:2::1",
            "::ffff:203.0.113.7",
        ] {
            assert!(!is_denied(&mut t, no), "{no} should pass");
        }
    }

    #[test]
    fn an_expired_entry_stops_matching_at_once() {
        let mut t = tables(&[("203.0.113.7", NOW + 1), ("198.51.100.0/24", NOW)]);
        assert!(is_denied(&mut t, "203.0.113.7"), "one ns before expiry");
        assert!(!is_denied(&mut t, "198.51.100.9"), "at its expiry");
        t.deny_add(DenyNet::parse("203.0.113.7").unwrap(), NOW - 1);
        assert!(!is_denied(&mut t, "203.0.113.7"), "after its expiry");
    }

    #[test]
    fn an_expired_address_falls_back_to_a_covering_prefix() {
        let mut t = tables(&[("203.0.113.7", NOW - 1), ("203.0.113.0/24", FOREVER)]);
        assert!(is_denied(&mut t, "203.0.113.7"));
    }

    #[test]
    fn the_flags_gate_the_lookups() {
        let mut t = tables(&[("203.0.113.7", FOREVER), ("198.51.100.0/24", FOREVER)]);
        t.config.flags &= !FLAG_DENY_NETS;
        assert!(
            !is_denied(&mut t, "198.51.100.1"),
            "prefixes unused without FLAG_DENY_NETS"
        );
        assert!(is_denied(&mut t, "203.0.113.7"));
        t.config.flags &= !FLAG_DENY;
        assert!(
            !is_denied(&mut t, "203.0.113.7"),
            "nothing without FLAG_DENY"
        );
    }

    #[test]
    fn the_filter_only_skips_sources_that_are_not_listed() {
        let listed = "203.0.113.7";
        let mut t = tables(&[(listed, FOREVER)]);
        let (family, addr) = src(listed);
        let slot = filter_slot(family, &addr);
        // An unlisted address that shares the listed one's bit takes the lookup and passes.
        let twin = (0..u32::MAX)
            .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
            .find(|a| {
                let (f, b) = src(a);
                filter_slot(f, &b) == slot
            })
            .expect("some address shares the bit");
        assert!(
            !is_denied(&mut t, &twin),
            "{twin} shares the filter bit, is not listed"
        );
        assert!(is_denied(&mut t, listed));
        // The word is what the loader writes: the listed addresses' bits.
        assert_eq!(t.deny_filter(slot.0), slot.1);
        let other = (0..100u8)
            .map(|i| std::format!("198.51.100.{i}"))
            .find(|a| {
                let (f, b) = src(a);
                filter_slot(f, &b).0 != slot.0
            })
            .unwrap();
        let (f, b) = src(&other);
        assert_eq!(t.deny_filter(filter_slot(f, &b).0), 0);
    }

    #[test]
    fn parsing_and_display() {
        let n = DenyNet::parse("198.51.100.77/24").unwrap();
        assert_eq!(n.to_string(), "198.51.100.0/24");
        assert!(!n.is_host());
        assert!(n.contains("198.51.100.1".parse().unwrap()));
        assert!(!n.contains("198.51.101.1".parse().unwrap()));
        assert_eq!(DenyNet::from_net_key(&n.net_key()), n);
        assert!(DenyNet::parse("2001:db8::1").unwrap().is_host());
        assert_eq!(
            DenyNet::parse("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        for bad in [
            "",
            "300.1.1.1",
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0.0/",
            "x",
        ] {
            assert!(DenyNet::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
