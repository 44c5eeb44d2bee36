//! The verdict: composes the stages, in packet order, into the whole decision for an ingress
//! packet ([`ingress`]: fast path, parse, deny, fragments, then per protocol the allowlist, the
//! rate limit, conntrack and related), and the flow-learning step for an egress packet
//! ([`egress`]). The eBPF programs call these with their maps behind [`Tables`]; the reference
//! model ([`crate::model`]) calls them with host tables.

use core::mem::MaybeUninit;

use crate::{
    contract::{
        allow::PORT_RATED,
        config::{FLAG_MONITOR, FLAG_PASS_DHCP, FLAG_PASS_RA},
        counters::Counter,
        flow::{
            FAMILY_V4, FlowKey, FlowState, FlowValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
            PROTO_UDP,
        },
    },
    fastpath,
    packet::{Packet, PacketMut},
    stages::{
        conntrack::{
            echo_key, egress_key, ingress_key,
            table::{self, Update},
            tcp_egress, tcp_ingress, tcp_is_new, udp_ingress,
        },
        deny, frag,
        parse::{self, Frag, Ip, L4},
        policy::{allowed, port_flags},
        ratelimit,
        related::{
            ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
            ICMPV6_ROUTER_ADVERT, is_icmp_error, related,
        },
        syncookie,
    },
    tables::Tables,
};

/// An ingress decision: the reason it is counted under, and whether the packet passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Counter,
    pub pass: bool,
}

/// What the datapath does with an inbound packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pass,
    Drop,
    /// Sent back out of the interface it came in on (`XDP_TX`): a SYN-cookie SYN-ACK.
    Transmit,
}

impl Decision {
    /// What the datapath does, once the cookie stage (if the packet went there) has decided.
    pub fn action(self) -> Action {
        if self.reason == Counter::SynCookieSent {
            Action::Transmit
        } else if self.pass {
            Action::Pass
        } else {
            Action::Drop
        }
    }

    const fn of(reason: Counter, monitor: bool) -> Self {
        Self {
            reason,
            pass: !reason.is_drop() || monitor,
        }
    }
}

/// Whether [`ingress`] handed the packet to the cookie stage ([`cookie`]): a SYN to answer or an
/// ACK to check, under a SYN flood. In the kernel, the ingress program tail-calls the cookie
/// program for these; if it cannot (no cookie program: a kernel without the hand-off kfunc), the
/// SYN goes to the kernel's handshake uncharged ([`Counter::PassSynToKernel`]: the rate limit
/// fails open while a flood lasts) and the ACK passes ([`Counter::PassAllowed`]).
pub const fn to_cookie_stage(reason: Counter) -> bool {
    matches!(reason, Counter::SynCookieSent | Counter::PassCookieAck)
}

/// The decision for a packet [`ingress`] handed to the cookie stage when there is none to take it
/// (see [`to_cookie_stage`]).
pub const fn without_cookie_stage(d: Decision) -> Decision {
    match d.reason {
        Counter::SynCookieSent => Decision::of(Counter::PassSynToKernel, true),
        Counter::PassCookieAck => Decision::of(Counter::PassAllowed, true),
        _ => d,
    }
}

/// The cookie stage on a packet [`ingress`] handed to it: the SYN-ACK written in place of a SYN
/// (reason [`Counter::SynCookieSent`], action [`Action::Transmit`]), or an ACK's fate.
#[inline(always)]
pub fn cookie<P: PacketMut + ?Sized, T: Tables + ?Sized>(p: &mut P, t: &mut T) -> Decision {
    let monitor = t.config().flags & FLAG_MONITOR != 0;
    Decision::of(syncookie::stage(p, t), monitor)
}

/// The whole ingress decision as the datapath takes it: [`ingress`], then [`cookie`] on the
/// packets it hands over, if there is a cookie `stage` to take them (in the kernel, two programs
/// and a tail call; on the host, the model, one call).
pub fn ingress_answer<P: PacketMut + ?Sized, T: Tables + ?Sized>(
    p: &mut P,
    t: &mut T,
    stage: bool,
) -> Decision {
    let d = ingress(p, t);
    match (to_cookie_stage(d.reason), stage) {
        (true, true) => cookie(p, t),
        (true, false) => without_cookie_stage(d),
        (false, _) => d,
    }
}

/// Decides an inbound packet, updating the flow and fragment tables.
#[inline(always)]
pub fn ingress<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Decision {
    let reason = classify(p, t);
    Decision::of(reason, t.config().flags & FLAG_MONITOR != 0)
}

#[inline(always)]
fn classify<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Counter {
    if let Some(reason) = fastpath::ingress_tcp4(p, t) {
        return reason;
    }
    full_path(p, t)
}

/// The whole decision without the fast path (which must agree with it: see the tests in
/// [`crate::fastpath`]).
#[inline(always)]
pub(crate) fn full_path<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Counter {
    let (ethertype, off) = match parse::ethernet(p) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let mut slot = MaybeUninit::uninit();
    let ip = match parse::ip(p, ethertype, off, &mut slot) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Counter::PassNonIp,
        Err(c) => return c,
    };
    // The blocklist before anything else, established flows and fragments included.
    if deny::denied(t, ip.family, &ip.src) {
        return Counter::DropDenied;
    }
    if ip.frag == Frag::Later {
        return frag::later(t, ip);
    }
    let l4 = match parse::l4(p, ip) {
        Ok(l4) => l4,
        Err(c) => return c,
    };
    let reason = match ip.proto {
        PROTO_TCP => tcp(t, ip, &l4),
        PROTO_UDP => udp(t, ip, &l4),
        // Errors go straight to `related`, which parses the quoted header: one call deep.
        PROTO_ICMP | PROTO_ICMPV6
            if (ip.proto == PROTO_ICMP) == (ip.family == FAMILY_V4)
                && is_icmp_error(ip.family, l4.icmp_type) =>
        {
            related(p, t, ip)
        }
        PROTO_ICMP if ip.family == FAMILY_V4 => icmp(t, ip, &l4),
        PROTO_ICMPV6 if ip.family != FAMILY_V4 => icmp(t, ip, &l4),
        _ => Counter::DropProtocol,
    };
    if ip.frag == Frag::First && !reason.is_drop() {
        frag::first(t, ip, reason);
    }
    reason
}

// The per-protocol handlers are not inlined: in the kernel each is a BPF subprogram with a stack
// frame of its own, called from a thin parsing entry, so their flow keys and table temporaries do
// not add up in one 512-byte frame.

/// A TCP or UDP packet the allowlist vouches for passes on that alone, with no flow lookup: the
/// table holds only what the allowlist cannot vouch for.
#[inline(never)]
fn tcp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Counter {
    if allowed(t, ip.family, ip.proto, l4.dport, &ip.src) {
        // Under a SYN flood the cookie stage answers SYNs and checks ACKs, and the rate is
        // charged at a valid cookie's ACK instead of at the SYN.
        let plain = ip.frag == Frag::Whole && ip.l4_off == syncookie::plain_l4_off(ip.family);
        let triaged = syncookie::triage(t, l4.dport, l4.tcp_flags, plain);
        if let Some(c @ (Counter::SynCookieSent | Counter::PassCookieAck)) = triaged {
            return c;
        }
        // A connection request to a rated port: within its source's rate?
        if tcp_is_new(l4.tcp_flags)
            && port_flags(t, PROTO_TCP, l4.dport) & PORT_RATED != 0
            && ratelimit::over_rate(t, ip.family, l4.dport, &ip.src)
        {
            return Counter::DropRateLimited;
        }
        return triaged.unwrap_or(Counter::PassAllowed);
    }
    // A connection request to a port that is not allowed: no flow lookup either.
    if tcp_is_new(l4.tcp_flags) {
        return Counter::DropNew;
    }
    let now = t.now();
    let (flags, ack) = (l4.tcp_flags, l4.ack);
    let update = table::update(t, &ingress_key(ip, l4), |v| {
        let next = tcp_ingress(v.state()?, flags, ack, v.origin_seq)?;
        Some(FlowValue {
            state: next as u8,
            last_seen_ns: now,
            ..*v
        })
    });
    match update {
        Update::Done => Counter::PassEstablished,
        Update::Refused => Counter::DropInvalid,
        Update::Missing => Counter::DropNew,
    }
}

#[inline(always)]
const fn is_dhcp_reply(ip: &Ip, l4: &L4) -> bool {
    if ip.family == FAMILY_V4 {
        l4.sport == 67 && l4.dport == 68
    } else {
        l4.sport == 547 && l4.dport == 546
    }
}

#[inline(never)]
fn udp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Counter {
    if t.config().flags & FLAG_PASS_DHCP != 0 && is_dhcp_reply(ip, l4) {
        return Counter::PassDhcp;
    }
    if allowed(t, ip.family, ip.proto, l4.dport, &ip.src) {
        return Counter::PassAllowed;
    }
    let now = t.now();
    let update = table::update(t, &ingress_key(ip, l4), |v| {
        Some(FlowValue {
            state: udp_ingress(v.state()?) as u8,
            last_seen_ns: now,
            ..*v
        })
    });
    match update {
        Update::Done => Counter::PassEstablished,
        Update::Refused | Update::Missing => Counter::DropNew,
    }
}

/// The refreshed value of an entry that saw a packet and keeps its state.
#[inline(always)]
const fn refreshed(v: &FlowValue, now: u64) -> Option<FlowValue> {
    Some(FlowValue {
        last_seen_ns: now,
        ..*v
    })
}

#[inline(never)]
fn icmp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Counter {
    let v6 = ip.family != FAMILY_V4;
    let ty = l4.icmp_type;
    if v6 && ty == ICMPV6_ROUTER_ADVERT {
        return if t.config().flags & FLAG_PASS_RA != 0 {
            Counter::PassRa
        } else {
            Counter::DropNew
        };
    }
    if v6 && matches!(ty, 133 | 135 | 136 | 137) {
        return Counter::PassNdp;
    }
    if v6 && matches!(ty, 130 | 131 | 132 | 143) {
        // Multicast listener discovery: without answers to the router's queries, MLD-snooping
        // switches stop forwarding the solicited-node multicast that neighbour discovery needs.
        return Counter::PassMld;
    }
    if (!v6 && ty == ICMP_ECHO_REPLY) || (v6 && ty == ICMPV6_ECHO_REPLY) {
        let now = t.now();
        let key = echo_key(ip.dst, ip.src, l4.sport, ip);
        return match table::update(t, &key, |v| refreshed(v, now)) {
            Update::Done => Counter::PassEstablished,
            Update::Refused | Update::Missing => Counter::DropNew,
        };
    }
    Counter::DropNew
}

/// Learns from an outbound packet: creates or updates its flow. Returns
/// [`Counter::EgressFlowsCreated`] when it created an entry. Never drops.
///
/// A TCP or UDP packet from a port the allowlist opens to its destination is left alone, before
/// any flow lookup: the allowlist vouches for its connection, so it takes no entry, and the origin's
/// answers to spoofed packets on an allowed port can never create state.
#[inline(always)]
pub fn egress<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Option<Counter> {
    if fastpath::egress_vouched4(p, t) {
        return None;
    }
    egress_full_path(p, t)
}

/// [`egress`] without the fast path.
#[inline(always)]
pub(crate) fn egress_full_path<P: Packet + ?Sized, T: Tables + ?Sized>(
    p: &P,
    t: &mut T,
) -> Option<Counter> {
    let (ethertype, off) = parse::ethernet(p).ok()?;
    let mut slot = MaybeUninit::uninit();
    let ip = parse::ip(p, ethertype, off, &mut slot).ok()??;
    if ip.frag == Frag::Later {
        return None;
    }
    let l4 = parse::l4(p, ip).ok()?;
    if matches!(ip.proto, PROTO_TCP | PROTO_UDP)
        && allowed(t, ip.family, ip.proto, l4.sport, &ip.dst)
    {
        return None;
    }
    match ip.proto {
        PROTO_TCP => egress_tcp(t, ip, &l4),
        PROTO_UDP => learn(t, &egress_key(ip, &l4), FlowState::UdpUnreplied),
        PROTO_ICMP | PROTO_ICMPV6
            if l4.icmp_type == ICMP_ECHO_REQUEST && ip.family == FAMILY_V4
                || l4.icmp_type == ICMPV6_ECHO_REQUEST && ip.family != FAMILY_V4 =>
        {
            learn(
                t,
                &echo_key(ip.src, ip.dst, l4.sport, ip),
                FlowState::IcmpEcho,
            )
        }
        _ => None,
    }
}

/// An outbound TCP segment the allowlist does not vouch for: its flow's transition, or a new
/// entry. A BPF subprogram (as the ingress handlers are).
#[inline(never)]
fn egress_tcp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Option<Counter> {
    let now = t.now();
    let key = egress_key(ip, l4);
    let (flags, seq) = (l4.tcp_flags, l4.seq);
    let update = table::update(t, &key, |v| {
        let next = tcp_egress(v.state(), flags)?;
        Some(
            if next == FlowState::TcpSynSent && v.state() != Some(next) {
                // The 4-tuple is reused for a new connection: a fresh entry.
                FlowValue::new(next, now, seq)
            } else {
                FlowValue {
                    state: next as u8,
                    last_seen_ns: now,
                    origin_seq: if next == FlowState::TcpSynSent {
                        seq
                    } else {
                        v.origin_seq
                    },
                    ..*v
                }
            },
        )
    });
    if update != Update::Missing {
        return None;
    }
    let value = FlowValue::new(tcp_egress(None, flags)?, now, seq);
    table::create(t, &key, &value).then_some(Counter::EgressFlowsCreated)
}

/// An outbound UDP datagram or echo request: refreshes its flow, or creates it in `state`.
#[inline(never)]
fn learn<T: Tables + ?Sized>(t: &mut T, key: &FlowKey, state: FlowState) -> Option<Counter> {
    let now = t.now();
    if table::update(t, key, |v| refreshed(v, now)) != Update::Missing {
        return None;
    }
    table::create(t, key, &FlowValue::new(state, now, 0)).then_some(Counter::EgressFlowsCreated)
}
