//! Fast paths: for the commonest packet shape — untagged IPv4 with a plain 20-byte header, TCP or
//! UDP, not a fragment — the full path's answer from one flat header read and the port table, with
//! no header copies, no parser calls and no flow lookup. Each returns `None` for every packet it
//! does not decide, which then takes the full path ([`crate::verdict`]); for the packets it does
//! decide, the full path would answer the same (the model-vs-program test holds both to that).

use crate::{
    contract::{
        allow::{PORT_ANY_V4, PORT_CIDR, PORT_RATED},
        counters::Counter,
        flow::{FAMILY_V4, FlowKey, FlowState, FlowTable, PROTO_TCP, PROTO_UDP},
    },
    packet::Packet,
    stages::{
        conntrack::tcp_is_new,
        deny::denied,
        parse::{ETH_P_IP, TCP_FIN, TCP_RST, TCP_SYN, v4_addr},
        policy::port_flags,
        syncookie,
    },
    tables::Tables,
};

/// Ethernet (14) + IPv4 without options (20), checked: the IPv4 protocol, if this is the shape
/// the fast paths decide.
#[inline(always)]
fn plain_ipv4(h: &[u8]) -> Option<u8> {
    let ethertype = u16::from_be_bytes([h[12], h[13]]);
    let total_len = u16::from_be_bytes([h[16], h[17]]);
    let frag = u16::from_be_bytes([h[20], h[21]]);
    (ethertype == ETH_P_IP && h[14] == 0x45 && total_len >= 20 && frag & 0x3fff == 0)
        .then_some(h[23])
}

/// Inbound IPv4 TCP: a segment to a port open to every IPv4 source passes (whatever its flags: the
/// allowlist vouches for the connection); a connection request (SYN) to a port with no rule is
/// dropped (the spoofed-SYN-flood path); and a plain ACK of an established flow the origin tracks
/// passes and refreshes it, and one of no tracked flow is dropped. Everything else (FIN, RST, other
/// states, closing flows, source-CIDR ports) takes the full path.
#[inline(always)]
pub fn ingress_tcp4<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &mut T) -> Option<Counter> {
    // IPv4 as above + TCP up to its flags (14).
    let h: [u8; 48] = p.load(0)?;
    if plain_ipv4(&h)? != PROTO_TCP || h[46] >> 4 < 5 {
        return None;
    }
    // The rest of the TCP header must be there too, as the full parser requires.
    p.load::<u8>(53)?;
    // The blocklist first, as on the full path.
    if denied(t, FAMILY_V4, &v4_addr([h[26], h[27], h[28], h[29]])) {
        return Some(Counter::DropDenied);
    }
    let dport = u16::from_be_bytes([h[36], h[37]]);
    let flags = port_flags(t, PROTO_TCP, dport);
    if flags & PORT_ANY_V4 != 0 {
        // A connection request to a rated port goes by its source's rate (the full path).
        if flags & PORT_RATED != 0 && tcp_is_new(h[47]) {
            return None;
        }
        // Under a SYN flood, the cookie stage's SYNs and ACKs (this shape is the plain one).
        return Some(syncookie::triage(t, dport, h[47], true).unwrap_or(Counter::PassAllowed));
    }
    if flags & PORT_CIDR != 0 {
        return None;
    }
    if tcp_is_new(h[47]) {
        return Some(Counter::DropNew);
    }
    if h[47] & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return None;
    }
    let key = FlowKey {
        local: v4_addr([h[30], h[31], h[32], h[33]]),
        remote: v4_addr([h[26], h[27], h[28], h[29]]),
        local_port: dport,
        remote_port: u16::from_be_bytes([h[34], h[35]]),
        proto: PROTO_TCP,
        family: FAMILY_V4,
        _pad: 0,
    };
    let timeouts = t.config().timeouts;
    let ttl_ns = u64::from(timeouts.tcp_established) * 1_000_000_000;
    let now = t.now();
    let Some(v) = t.flow_mut(FlowTable::Live, &key) else {
        // Not a live flow: unless a closing one, nothing lets it in (the spoofed-ACK path).
        return match t.flow_mut(FlowTable::Closing, &key) {
            Some(c) if c.is_live(now, &timeouts) => None,
            _ => Some(Counter::DropNew),
        };
    };
    if v.state != FlowState::TcpEstablished as u8 || now.saturating_sub(v.last_seen_ns) > ttl_ns {
        return None;
    }
    // A packet in the same clock tick writes nothing (see `flowtable::update`).
    if v.last_seen_ns != now {
        v.last_seen_ns = now;
    }
    Some(Counter::PassEstablished)
}

/// Outbound IPv4 TCP or UDP from a port open to every IPv4 source: the allowlist vouches for its
/// connection, so the egress program learns nothing from it (`true`). The heavy direction of a
/// serving origin.
#[inline(always)]
pub fn egress_vouched4<P: Packet + ?Sized, T: Tables + ?Sized>(p: &P, t: &T) -> bool {
    // IPv4 as above + the source port.
    let Some(h) = p.load::<[u8; 36]>(0) else {
        return false;
    };
    // The whole L4 header must be there, as the full parser requires: its last byte is.
    let whole = match plain_ipv4(&h) {
        Some(PROTO_TCP) => {
            p.load::<u8>(34 + 19).is_some() && p.load::<u8>(34 + 12).is_some_and(|d| d >> 4 >= 5)
        }
        Some(PROTO_UDP) => p.load::<u8>(34 + 7).is_some(),
        _ => false,
    };
    whole && port_flags(t, h[23], u16::from_be_bytes([h[34], h[35]])) & PORT_ANY_V4 != 0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use etherparse::PacketBuilder;

    use super::*;
    use crate::{
        contract::{
            allow::AllowRule,
            config::Config,
            flow::{FlowValue, PROTO_TCP},
            syncookie::{CookieConfig, MODE_AUTO, MODE_OFF, MODE_ON},
        },
        model::HostTables,
        stages::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
        verdict::{egress_full_path, full_path},
    };

    /// Late enough that an entry idle longer than the longest timeout (5 days) can exist.
    const NOW: u64 = 1_000_000 * 1_000_000_000;
    const LOCAL: [u8; 4] = [192, 0, 2, 1];
    const REMOTE: [u8; 4] = [198, 51, 100, 7];

    fn tables() -> HostTables {
        let rules: BTreeSet<AllowRule> = [
            AllowRule::parse("tcp/22", None),
            AllowRule::parse("udp/53", None),
            AllowRule::parse("tcp/8080", Some("198.51.100.0/24")),
            AllowRule::parse("tcp/8443", Some("2001:db8::/32")),
        ]
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("rules");
        HostTables::from_rules(Config::DEFAULT, &rules).expect("compile")
    }

    /// An IPv4 TCP frame with every flag in `flags` (SYN, ACK, FIN, RST, PSH, URG bits).
    fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8, options: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, 7, 64240);
        for (bit, set) in [
            (TCP_SYN, 0),
            (TCP_ACK, 1),
            (TCP_FIN, 2),
            (TCP_RST, 3),
            (0x08, 4),
            (0x20, 5),
        ] {
            if flags & bit != 0 {
                b = match set {
                    0 => b.syn(),
                    1 => b.ack(1001),
                    2 => b.fin(),
                    3 => b.rst(),
                    4 => b.psh(),
                    _ => b.urg(0),
                };
            }
        }
        if options {
            b = b
                .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1400)])
                .expect("options");
        }
        let mut out = Vec::new();
        b.write(&mut out, b"data").expect("frame");
        out
    }

    fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16)) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src.0, dst.0, 64)
            .udp(src.1, dst.1)
            .write(&mut out, b"q")
            .expect("frame");
        out
    }

    /// Frames of the fast paths' shape and of shapes next to it: every TCP flag combination to an
    /// open port, a source-CIDR port and a closed one, with and without TCP options, every
    /// truncation of some of them, and a few IPv4 header variations.
    fn frames(inbound: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for port in [22u16, 8080, 8443, 9999, 40000] {
            for flags in 0..64u8 {
                let f = [TCP_SYN, TCP_ACK, TCP_FIN, TCP_RST, 0x08, 0x20]
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| flags & (1 << i) != 0)
                    .fold(0, |acc, (_, b)| acc | b);
                for options in [false, true] {
                    out.push(if inbound {
                        tcp((REMOTE, 40000), (LOCAL, port), f, options)
                    } else {
                        tcp((LOCAL, port), (REMOTE, 40000), f, options)
                    });
                }
            }
            out.push(if inbound {
                udp((REMOTE, 40000), (LOCAL, port))
            } else {
                udp((LOCAL, port), (REMOTE, 40000))
            });
        }
        out.push(udp((LOCAL, 53), (REMOTE, 40000)));
        let base = out.clone();
        for f in base.iter().step_by(17) {
            for len in 0..f.len() {
                out.push(f[..len].to_vec());
            }
            for (i, b) in [
                (14, 0x46u8),
                (20, 0x20),
                (21, 0x01),
                (16, 0),
                (17, 4),
                (46, 0x40),
            ] {
                let mut g = f.clone();
                if i < g.len() {
                    g[i] = b;
                    out.push(g);
                }
            }
        }
        out
    }

    /// The flow entries a test starts with: none, or the connection in each state, live or expired.
    fn flow_states() -> Vec<Option<FlowValue>> {
        let mut out = vec![None];
        for state in 1..=7u8 {
            for last in [NOW, NOW - 500_000 * 1_000_000_000] {
                out.push(Some(FlowValue {
                    created_ns: last,
                    last_seen_ns: last,
                    origin_seq: 1000,
                    state,
                    flags: 0,
                    _pad: 0,
                }));
            }
        }
        out
    }

    fn key(port: u16) -> FlowKey {
        FlowKey {
            local: v4_addr(LOCAL),
            remote: v4_addr(REMOTE),
            local_port: port,
            remote_port: 40000,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: 0,
        }
    }

    #[test]
    fn the_ingress_fast_path_answers_as_the_full_path() {
        let mut decided = 0;
        let mut denied = 0;
        let mut cookies = 0;
        for frame in frames(true) {
            for ((entry, deny), cookie) in flow_states()
                .into_iter()
                .flat_map(|e| deny_states().into_iter().map(move |d| (e, d)))
                .flat_map(|ed| cookie_states().into_iter().map(move |c| (ed.clone(), c)))
            {
                let mut fast = tables();
                fast.cookie = cookie;
                let port = frame
                    .get(36..38)
                    .map_or(0, |p| u16::from_be_bytes([p[0], p[1]]));
                if let Some(v) = entry {
                    fast.load_flows([(v.table(), key(port), v)]);
                }
                for (net, expires) in deny {
                    fast.deny_add(
                        crate::rules::deny::DenyNet::parse(net).expect("a CIDR"),
                        expires,
                    );
                }
                fast.now = NOW;
                let mut full = fast.clone();
                let Some(reason) = ingress_tcp4(frame.as_slice(), &mut fast) else {
                    continue;
                };
                decided += 1;
                denied += usize::from(reason == Counter::DropDenied);
                cookies += usize::from(crate::verdict::to_cookie_stage(reason));
                assert_eq!(
                    reason,
                    full_path(frame.as_slice(), &mut full),
                    "frame {frame:02x?}, entry {entry:?}"
                );
                assert_eq!(
                    fast.flows, full.flows,
                    "flows after {frame:02x?}, {entry:?}"
                );
                assert_eq!(fast.closing, full.closing);
                assert_eq!(fast.syn_ports, full.syn_ports, "the flood detector");
            }
        }
        assert!(decided > 1000, "the fast path decided only {decided} cases");
        assert!(denied > 100, "the fast path denied only {denied} cases");
        assert!(
            cookies > 100,
            "the fast path gave the cookie stage only {cookies} cases"
        );
    }

    /// The SYN-cookie settings a test starts with: none written, off, on, and auto with every SYN
    /// a flood.
    fn cookie_states() -> Vec<Option<CookieConfig>> {
        let with = |mode, threshold| {
            Some(CookieConfig {
                keys: [[1, 2], [3, 4]],
                mode,
                threshold,
                ..CookieConfig::OFF
            })
        };
        vec![
            None,
            with(MODE_OFF, 0),
            with(MODE_ON, 1000),
            with(MODE_AUTO, 0),
        ]
    }

    /// The blocklists a test starts with: none, the remote address (in force or expired), a
    /// prefix covering it, and another address.
    fn deny_states() -> Vec<Vec<(&'static str, u64)>> {
        vec![
            vec![],
            vec![("198.51.100.7", crate::stages::deny::FOREVER)],
            vec![("198.51.100.7", NOW)],
            vec![("198.51.100.0/24", NOW + 1)],
            vec![("198.51.100.8", crate::stages::deny::FOREVER)],
        ]
    }

    #[test]
    fn the_egress_fast_path_only_skips_what_the_full_path_learns_nothing_from() {
        let mut skipped = 0;
        for frame in frames(false) {
            let t = tables();
            if egress_vouched4(frame.as_slice(), &t) {
                skipped += 1;
                let mut full = t.clone();
                assert_eq!(
                    egress_full_path(frame.as_slice(), &mut full),
                    None,
                    "{frame:02x?}"
                );
                assert!(
                    full.touched_flows.is_empty(),
                    "{frame:02x?} looked up a flow"
                );
            }
        }
        assert!(skipped > 100, "the fast path skipped only {skipped} frames");
    }
}
