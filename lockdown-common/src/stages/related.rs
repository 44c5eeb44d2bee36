//! The related stage: an ICMP error passes only if the packet it quotes left the origin on a
//! tracked flow, or on a connection the allowlist vouches for (iptables' `RELATED`).

use core::mem::MaybeUninit;

use crate::{
    contract::{
        counters::Counter,
        flow::{FAMILY_V4, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    },
    packet::Packet,
    stages::{
        conntrack::{echo_key, egress_key, table},
        parse::{self, Frag, Ip},
        policy::allowed,
    },
    tables::Tables,
};

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ICMPV6_ROUTER_ADVERT: u8 = 134;

/// Whether an ICMP type is an error that quotes the offending packet.
#[inline(always)]
pub const fn is_icmp_error(family: u8, ty: u8) -> bool {
    if family == FAMILY_V4 {
        // Destination unreachable (incl. fragmentation needed), time exceeded, parameter problem.
        matches!(ty, 3 | 11 | 12)
    } else {
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        matches!(ty, 1..=4)
    }
}

/// An ICMP error passes only if the packet it quotes was sent by the origin on a live flow (or
/// on a connection the allowlist vouches for). A subprogram of its own, off the echo path.
#[inline(never)]
pub fn related<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T, outer: &Ip) -> Counter {
    let inner_off = outer.l4_off + 8;
    let ethertype = if outer.family == FAMILY_V4 {
        parse::ETH_P_IP
    } else {
        parse::ETH_P_IPV6
    };
    let mut slot = MaybeUninit::uninit();
    let inner = match parse::ip(p, ethertype, inner_off, &mut slot) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Counter::DropMalformed,
        Err(c) => return c,
    };
    // The quoted packet must have left the origin: its source is the error's destination.
    if inner.src != outer.dst || inner.frag == Frag::Later {
        return Counter::DropUnrelatedIcmp;
    }
    let quoted = match parse::quoted_l4(p, inner) {
        Ok(l4) => l4,
        Err(c) => return c,
    };
    let key = match inner.proto {
        PROTO_TCP | PROTO_UDP => {
            // The quoted packet left from a port the allowlist opens to its destination: the
            // connection is one the allowlist vouches for, so its errors are related too.
            if allowed(t, inner.family, inner.proto, quoted.sport, &inner.dst) {
                return Counter::PassRelated;
            }
            egress_key(inner, &quoted)
        }
        PROTO_ICMP if quoted.icmp_type == ICMP_ECHO_REQUEST && inner.family == FAMILY_V4 => {
            echo_key(inner.src, inner.dst, quoted.sport, inner)
        }
        PROTO_ICMPV6 if quoted.icmp_type == ICMPV6_ECHO_REQUEST && inner.family != FAMILY_V4 => {
            echo_key(inner.src, inner.dst, quoted.sport, inner)
        }
        _ => return Counter::DropUnrelatedIcmp,
    };
    if table::is_tracked(t, &key) {
        Counter::PassRelated
    } else {
        Counter::DropUnrelatedIcmp
    }
}
