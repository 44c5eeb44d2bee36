//! Layer 4: the verdict. Puts parse, conntrack and policy together into the whole decision for an
//! ingress packet, and the flow-learning step for an egress packet. The eBPF programs call these
//! with their maps behind [`Tables`]; the reference model calls them with host tables.

use crate::{
    config::{Config, FLAG_MONITOR, FLAG_PASS_DHCP, FLAG_PASS_RA},
    conntrack::{
        echo_key, egress_key, ingress_key, tcp_egress, tcp_ingress, tcp_is_new, udp_ingress,
    },
    counters::Counter,
    flow::{
        FAMILY_V4, FlowState, FlowValue, FragKey, FragValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP,
        PROTO_UDP,
    },
    parse::{self, Frag, Ip, L4, Packet},
    policy::{allowed, is_service_port},
};

/// The state lockdown decides with: the maps in the kernel, plain collections on the host.
pub trait Tables {
    fn config(&self) -> &Config;
    /// The live or expired entry for `key`, to read and update in place.
    fn flow_mut(&mut self, key: &crate::flow::FlowKey) -> Option<&mut FlowValue>;
    fn flow_insert(&mut self, key: &crate::flow::FlowKey, value: &FlowValue);
    /// One `u64` entry of the packed port table.
    fn port_entry(&self, index: u32) -> u64;
    /// Longest-prefix match in the source-CIDR trie.
    fn cidr_match(&self, key: &crate::rules::CidrKey) -> bool;
    fn frag_get(&self, key: &FragKey) -> Option<FragValue>;
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue);
    /// The time (`CLOCK_MONOTONIC_COARSE` ns), read only on the paths that need it: a connection request
    /// to a closed port is decided without it.
    fn now(&mut self) -> u64;
}

/// An ingress decision: the reason it is counted under, and whether the packet passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub reason: Counter,
    pub pass: bool,
}

/// Decides an inbound packet, updating the flow and fragment tables.
#[inline(always)]
pub fn ingress<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Decision {
    let reason = classify(p, t);
    let pass = !reason.is_drop() || t.config().flags & FLAG_MONITOR != 0;
    Decision { reason, pass }
}

/// The flood fast path: an untagged IPv4 TCP SYN with a plain 20-byte IP header, decided by the
/// port table alone, with no header copies and no flow lookup. `None` sends every other packet —
/// and any SYN whose port has source-CIDR rules — down the full path, which would decide this one
/// the same way: it is the full path's answer for exactly these packets, only cheaper.
#[inline(always)]
fn fast_syn<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &T) -> Option<Counter> {
    use crate::rules::{PORT_ANY_V4, PORT_CIDR};
    // Ethernet (14) + IPv4 without options (20) + TCP up to its flags (14).
    let h: [u8; 48] = p.load(0)?;
    let ethertype = u16::from_be_bytes([h[12], h[13]]);
    let total_len = u16::from_be_bytes([h[16], h[17]]);
    let frag = u16::from_be_bytes([h[20], h[21]]);
    if ethertype != parse::ETH_P_IP
        || h[14] != 0x45
        || total_len < 20
        || frag & 0x3fff != 0
        || h[23] != PROTO_TCP
        || h[46] >> 4 < 5
        || !tcp_is_new(h[47])
    {
        return None;
    }
    // The rest of the TCP header must be there too, as the full parser requires.
    p.load::<[u8; 6]>(48)?;
    let flags = crate::policy::port_flags(t, PROTO_TCP, u16::from_be_bytes([h[36], h[37]]));
    if flags & PORT_ANY_V4 != 0 {
        Some(Counter::PassAllowed)
    } else if flags & PORT_CIDR != 0 {
        None
    } else {
        Some(Counter::DropNew)
    }
}

#[inline(always)]
fn classify<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Counter {
    if let Some(reason) = fast_syn(p, t) {
        return reason;
    }
    let (ethertype, off) = match parse::ethernet(p) {
        Ok(x) => x,
        Err(c) => return c,
    };
    let ip = match parse::ip(p, ethertype, off) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Counter::PassNonIp,
        Err(c) => return c,
    };
    if ip.frag == Frag::Later {
        return later_fragment(t, &ip);
    }
    let l4 = match parse::l4(p, &ip) {
        Ok(l4) => l4,
        Err(c) => return c,
    };
    let reason = match ip.proto {
        PROTO_TCP => tcp(t, &ip, &l4),
        PROTO_UDP => udp(t, &ip, &l4),
        PROTO_ICMP if ip.family == FAMILY_V4 => icmp(p, t, &ip, &l4),
        PROTO_ICMPV6 if ip.family != FAMILY_V4 => icmp(p, t, &ip, &l4),
        _ => Counter::DropProtocol,
    };
    if ip.frag == Frag::First && !reason.is_drop() {
        let value = FragValue {
            first_seen_ns: t.now(),
            reason: reason as u32,
            _pad: 0,
        };
        t.frag_insert(&frag_key(&ip), &value);
    }
    reason
}

#[inline(always)]
const fn frag_key(ip: &Ip) -> FragKey {
    FragKey {
        src: ip.src,
        dst: ip.dst,
        id: ip.frag_id,
        proto: ip.frag_proto,
        family: ip.family,
        _pad: [0; 2],
    }
}

/// A non-first fragment follows its first fragment's verdict, if that passed recently.
#[inline(always)]
fn later_fragment<T: Tables + ?Sized>(t: &mut T, ip: &Ip) -> Counter {
    let now = t.now();
    let ttl = u64::from(t.config().timeouts.fragment) * 1_000_000_000;
    match t.frag_get(&frag_key(ip)) {
        Some(v) if now.saturating_sub(v.first_seen_ns) <= ttl => Counter::PassFragment,
        _ => Counter::DropFragment,
    }
}

#[inline(always)]
fn tcp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Counter {
    // A connection request is decided by the allowlist alone, before any flow lookup.
    if tcp_is_new(l4.tcp_flags) {
        return if allowed(t, ip.family, ip.proto, l4.dport, &ip.src) {
            Counter::PassAllowed
        } else {
            Counter::DropNew
        };
    }
    let timeouts = t.config().timeouts;
    let now = t.now();
    if let Some(v) = t.flow_mut(&ingress_key(ip, l4))
        && v.is_live(now, &timeouts)
        && let Some(state) = v.state()
    {
        return match tcp_ingress(state, l4.tcp_flags, l4.ack, v.origin_seq) {
            Some(next) => {
                v.state = next as u8;
                v.last_seen_ns = now;
                Counter::PassEstablished
            }
            None => Counter::DropInvalid,
        };
    }
    if allowed(t, ip.family, ip.proto, l4.dport, &ip.src) {
        Counter::PassAllowed
    } else {
        Counter::DropNew
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

#[inline(always)]
fn udp<T: Tables + ?Sized>(t: &mut T, ip: &Ip, l4: &L4) -> Counter {
    let config = *t.config();
    if config.flags & FLAG_PASS_DHCP != 0 && is_dhcp_reply(ip, l4) {
        return Counter::PassDhcp;
    }
    let now = t.now();
    if let Some(v) = t.flow_mut(&ingress_key(ip, l4))
        && v.is_live(now, &config.timeouts)
        && let Some(state) = v.state()
    {
        v.state = udp_ingress(state) as u8;
        v.last_seen_ns = now;
        return Counter::PassEstablished;
    }
    if allowed(t, ip.family, ip.proto, l4.dport, &ip.src) {
        Counter::PassAllowed
    } else {
        Counter::DropNew
    }
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
const ICMPV6_ROUTER_ADVERT: u8 = 134;

/// Whether an ICMP type is an error that quotes the offending packet.
#[inline(always)]
const fn is_icmp_error(family: u8, ty: u8) -> bool {
    if family == FAMILY_V4 {
        // Destination unreachable (incl. fragmentation needed), time exceeded, parameter problem.
        matches!(ty, 3 | 11 | 12)
    } else {
        // Destination unreachable, packet too big, time exceeded, parameter problem.
        matches!(ty, 1..=4)
    }
}

#[inline(always)]
fn icmp<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T, ip: &Ip, l4: &L4) -> Counter {
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
        let timeouts = t.config().timeouts;
        let now = t.now();
        if let Some(v) = t.flow_mut(&echo_key(ip.dst, ip.src, l4.sport, ip))
            && v.is_live(now, &timeouts)
        {
            v.last_seen_ns = now;
            return Counter::PassEstablished;
        }
        return Counter::DropNew;
    }
    if is_icmp_error(ip.family, ty) {
        return related(p, t, ip);
    }
    Counter::DropNew
}

/// An ICMP error passes only if the packet it quotes was sent by the origin on a live flow.
#[inline(always)]
fn related<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T, outer: &Ip) -> Counter {
    let inner_off = outer.l4_off + 8;
    let inner = match if outer.family == FAMILY_V4 {
        parse::ipv4(p, inner_off)
    } else {
        parse::ipv6(p, inner_off)
    } {
        Ok(ip) => ip,
        Err(c) => return c,
    };
    // The quoted packet must have left the origin: its source is the error's destination.
    if inner.src != outer.dst || inner.frag == Frag::Later {
        return Counter::DropUnrelatedIcmp;
    }
    let quoted = match parse::quoted_l4(p, &inner) {
        Ok(l4) => l4,
        Err(c) => return c,
    };
    let key = match inner.proto {
        PROTO_TCP | PROTO_UDP => egress_key(&inner, &quoted),
        PROTO_ICMP if quoted.icmp_type == ICMP_ECHO_REQUEST && inner.family == FAMILY_V4 => {
            echo_key(inner.src, inner.dst, quoted.sport, &inner)
        }
        PROTO_ICMPV6 if quoted.icmp_type == ICMPV6_ECHO_REQUEST && inner.family != FAMILY_V4 => {
            echo_key(inner.src, inner.dst, quoted.sport, &inner)
        }
        _ => return Counter::DropUnrelatedIcmp,
    };
    let timeouts = t.config().timeouts;
    let now = t.now();
    match t.flow_mut(&key) {
        Some(v) if v.is_live(now, &timeouts) => Counter::PassRelated,
        _ => Counter::DropUnrelatedIcmp,
    }
}

/// Learns from an outbound packet: creates or updates its flow. Returns
/// [`Counter::EgressFlowsCreated`] when it created an entry. Never drops.
#[inline(always)]
pub fn egress<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Option<Counter> {
    let (ethertype, off) = parse::ethernet(p).ok()?;
    let ip = parse::ip(p, ethertype, off).ok()??;
    if ip.frag == Frag::Later {
        return None;
    }
    let l4 = parse::l4(p, &ip).ok()?;
    let timeouts = t.config().timeouts;
    let now = t.now();
    match ip.proto {
        PROTO_TCP => {
            let key = egress_key(&ip, &l4);
            if let Some(v) = t.flow_mut(&key)
                && v.is_live(now, &timeouts)
            {
                if let Some(next) = tcp_egress(v.state(), l4.tcp_flags) {
                    if next == FlowState::TcpSynSent && v.state() != Some(FlowState::TcpSynSent) {
                        *v = FlowValue::new(next, now, l4.seq);
                    } else {
                        if next == FlowState::TcpSynSent {
                            v.origin_seq = l4.seq;
                        }
                        v.state = next as u8;
                        v.last_seen_ns = now;
                    }
                }
                return None;
            }
            let next = tcp_egress(None, l4.tcp_flags)?;
            t.flow_insert(&key, &FlowValue::new(next, now, l4.seq));
            Some(Counter::EgressFlowsCreated)
        }
        PROTO_UDP => {
            let key = egress_key(&ip, &l4);
            if let Some(v) = t.flow_mut(&key)
                && v.is_live(now, &timeouts)
            {
                v.last_seen_ns = now;
                return None;
            }
            if is_service_port(t, ip.proto, l4.sport) {
                return None;
            }
            t.flow_insert(&key, &FlowValue::new(FlowState::UdpUnreplied, now, 0));
            Some(Counter::EgressFlowsCreated)
        }
        PROTO_ICMP | PROTO_ICMPV6
            if l4.icmp_type == ICMP_ECHO_REQUEST && ip.family == FAMILY_V4
                || l4.icmp_type == ICMPV6_ECHO_REQUEST && ip.family != FAMILY_V4 =>
        {
            let key = echo_key(ip.src, ip.dst, l4.sport, &ip);
            if let Some(v) = t.flow_mut(&key)
                && v.is_live(now, &timeouts)
            {
                v.last_seen_ns = now;
                return None;
            }
            t.flow_insert(&key, &FlowValue::new(FlowState::IcmpEcho, now, 0));
            Some(Counter::EgressFlowsCreated)
        }
        _ => None,
    }
}
