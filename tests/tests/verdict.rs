//! Verdicts of the XDP ingress program (and flow learning of the TC egress program), through
//! `BPF_PROG_TEST_RUN`: every pass and drop path, IPv4 and IPv6. Needs root.
//!
//! Each test loads its own unpinned copy of the object, so tests are independent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lockdown_common::{
    contract::{
        config::{FLAG_MONITOR, FLAG_PASS_DHCP, FLAG_PASS_RA},
        counters::Counter::{self, *},
        flow::{FlowState, FlowValue, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
        maps::{PROG_INGRESS, PROG_INGRESS_LINEAR},
    },
    stages::parse::MAX_IPV6_EXT,
};
use lockdown_testbed::{
    packets::{
        ETHERTYPE_LLDP, Ext, PROTO_GRE, Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN,
        TCP_SYN_ACK, arp_request, from_hex, hex, raw_frame,
    },
    testrun::{
        Datapath, MIN_TEST_RUN_LEN, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, echo_flow_key, flow_key,
        frag_key, now, test_config, uniform_timeouts,
    },
};
use lockdown_tests::model::DIFF_RULES;

/// The allowlist of every test: two open ports, and one port open to one CIDR per family.
const RULES: &[&str] = &[
    "tcp/22",
    "udp/53",
    "tcp/8080 from 198.51.100.0/24",
    "tcp/8080 from 2001:db8:f00::/48",
];

/// The addresses of one family's tests. `local` is the host lockdown protects.
#[derive(Clone, Copy, Debug)]
struct Net {
    local: IpAddr,
    remote: IpAddr,
    /// Inside the source CIDR of tcp/8080.
    friend: IpAddr,
    /// Outside it.
    stranger: IpAddr,
    /// A router on the path, sender of ICMP errors.
    router: IpAddr,
}

const V4: Net = Net {
    local: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    remote: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
    friend: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
    stranger: IpAddr::V4(Ipv4Addr::new(198, 51, 101, 7)),
    router: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254)),
};

const V6: Net = Net {
    local: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    remote: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 0x10)),
    friend: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf00, 0xa, 0, 0, 0, 7)),
    stranger: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf01, 0, 0, 0, 0, 7)),
    router: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
};

const NETS: [Net; 2] = [V4, V6];

const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// `secs` seconds before now on the datapath's clock.
fn ago(secs: u64) -> u64 {
    now().checked_sub(secs * 1_000_000_000).unwrap_or_else(|| {
        panic!("this machine booted less than {secs} s ago; the expiry tests need more")
    })
}

fn datapath() -> Datapath {
    Datapath::new(test_config(), RULES)
}

/// Asserts that `frame` gets `want`, and passes or drops accordingly (monitor mode off).
#[track_caller]
fn expect_frame(dp: &mut Datapath, frame: &[u8], want: Counter, what: &str) {
    let (action, reason) = dp.ingress(frame);
    let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
    assert_eq!(
        (action, reason),
        (want_action, want),
        "{what}: got action {action} for {}, want {} for {}\npacket: {}",
        reason.name(),
        want_action,
        want.name(),
        hex(frame)
    );
}

#[track_caller]
fn expect(dp: &mut Datapath, pkt: &Pkt, want: Counter, what: &str) {
    expect_frame(dp, &pkt.bytes(), want, what);
}

/// Runs the origin's outbound packet through the egress program; returns whether it created a
/// flow.
#[track_caller]
fn send(dp: &mut Datapath, pkt: &Pkt) -> bool {
    let (ret, created) = dp.egress_counted(&pkt.bytes());
    assert_eq!(ret, TC_ACT_UNSPEC, "the egress program never decides");
    created
}

fn state(v: Option<FlowValue>) -> Option<FlowState> {
    v.and_then(|v| v.state())
}

#[test]
fn non_ip_passes() {
    let mut dp = datapath();
    let arp = arp_request(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
    expect_frame(&mut dp, &arp, PassNonIp, "ARP request");
    expect_frame(
        &mut dp,
        &raw_frame(&[], ETHERTYPE_LLDP, &[0; 32]),
        PassNonIp,
        "LLDP",
    );
    expect_frame(
        &mut dp,
        &raw_frame(&[7], 0x0806, &arp[14..]),
        PassNonIp,
        "ARP in a VLAN",
    );
    expect_frame(
        &mut dp,
        &raw_frame(&[7, 8], 0x0806, &arp[14..]),
        PassNonIp,
        "ARP in QinQ",
    );
    // The shortest frame a test run accepts: a bare Ethernet header.
    expect_frame(
        &mut dp,
        &raw_frame(&[], 0x0806, &[]),
        PassNonIp,
        "bare Ethernet header",
    );
}

#[test]
fn ndp_passes_and_router_adverts_follow_the_flag() {
    let mut dp = datapath();
    for ty in [133, 135, 136, 137] {
        expect(
            &mut dp,
            &Pkt::ndp(LINK_LOCAL, ALL_NODES, ty),
            PassNdp,
            &format!("ICMPv6 {ty}"),
        );
    }
    let ra = Pkt::ndp(LINK_LOCAL, ALL_NODES, 134);
    expect(&mut dp, &ra, PassRa, "router advert, pass_ra on");
    dp.set_flag(FLAG_PASS_RA, false);
    expect(&mut dp, &ra, DropNew, "router advert, pass_ra off");
    // NDP does not depend on the RA flag.
    expect(
        &mut dp,
        &Pkt::ndp(LINK_LOCAL, ALL_NODES, 135),
        PassNdp,
        "NS, pass_ra off",
    );
    // Multicast listener discovery (queries and reports) passes: MLD-snooping switches need the
    // answers to keep forwarding neighbour discovery's multicast.
    for ty in [130, 131, 132, 143] {
        expect(
            &mut dp,
            &Pkt::ndp(LINK_LOCAL, ALL_NODES, ty),
            PassMld,
            &format!("MLD ICMPv6 {ty}"),
        );
    }
    // ICMPv4 has no NDP: type 135 over IPv4 is just an unknown type.
    expect(
        &mut dp,
        &Pkt::icmp(V4.remote, V4.local, 135, 0, [0; 4]),
        DropNew,
        "ICMPv4 type 135",
    );
}

#[test]
fn dhcp_replies_follow_the_flag() {
    let mut dp = datapath();
    for net in NETS {
        let reply = Pkt::dhcp_reply(net.remote, net.local);
        expect(&mut dp, &reply, PassDhcp, "DHCP reply, pass_dhcp on");
        dp.set_flag(FLAG_PASS_DHCP, false);
        expect(&mut dp, &reply, DropNew, "DHCP reply, pass_dhcp off");
        dp.set_flag(FLAG_PASS_DHCP, true);
        // Only the server → client direction is a reply.
        let (sport, dport) = if net.local.is_ipv4() {
            (68, 67)
        } else {
            (546, 547)
        };
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, sport, dport),
            DropNew,
            "DHCP request inbound",
        );
    }
    // DHCPv4 ports over IPv6 and vice versa are not DHCP.
    expect(
        &mut dp,
        &Pkt::udp(V6.remote, V6.local, 67, 68),
        DropNew,
        "67→68 over IPv6",
    );
    expect(
        &mut dp,
        &Pkt::udp(V4.remote, V4.local, 547, 546),
        DropNew,
        "547→546 over IPv4",
    );
}

#[test]
fn syn_to_allowed_port_passes_and_to_closed_port_drops() {
    let mut dp = datapath();
    for net in NETS {
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN),
            PassAllowed,
            "SYN to tcp/22",
        );
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 23, TCP_SYN),
            DropNew,
            "SYN to tcp/23",
        );
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, 40000, 53),
            PassAllowed,
            "udp/53",
        );
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, 40000, 22),
            DropNew,
            "udp/22 (only tcp/22 is open)",
        );
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 53, TCP_SYN),
            DropNew,
            "tcp/53 (only udp/53 is open)",
        );
        // Segments of an untracked connection to an allowed port pass on the allowlist.
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 22, TCP_ACK),
            PassAllowed,
            "ACK to tcp/22",
        );
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 23, TCP_ACK),
            DropNew,
            "ACK to tcp/23",
        );
    }
    assert!(dp.flows().is_empty(), "ingress never creates flows");
}

#[test]
fn source_cidr_rules() {
    let mut dp = datapath();
    for net in NETS {
        let syn = |src| Pkt::tcp(src, net.local, 40000, 8080, TCP_SYN);
        expect(
            &mut dp,
            &syn(net.friend),
            PassAllowed,
            "SYN from inside the CIDR",
        );
        expect(
            &mut dp,
            &syn(net.stranger),
            DropNew,
            "SYN from outside the CIDR",
        );
        expect(&mut dp, &syn(net.remote), DropNew, "SYN from elsewhere");
        expect(
            &mut dp,
            &Pkt::tcp(net.friend, net.local, 40000, 8081, TCP_SYN),
            DropNew,
            "SYN from inside the CIDR to another port",
        );
    }
    // Each CIDR rule applies only to its family: an IPv4 source never matches the IPv6 CIDR.
    dp.set_rules(&lockdown_testbed::testrun::rules(&[
        "tcp/8080 from 2001:db8:f00::/48",
    ]));
    expect(
        &mut dp,
        &Pkt::tcp(V4.friend, V4.local, 1, 8080, TCP_SYN),
        DropNew,
        "IPv4 vs an IPv6 CIDR",
    );
    expect(
        &mut dp,
        &Pkt::tcp(V6.friend, V6.local, 1, 8080, TCP_SYN),
        PassAllowed,
        "IPv6 CIDR",
    );
    // /0 opens the port to the whole family.
    dp.set_rules(&lockdown_testbed::testrun::rules(&[
        "tcp/8080 from 0.0.0.0/0",
    ]));
    expect(
        &mut dp,
        &Pkt::tcp(V4.stranger, V4.local, 1, 8080, TCP_SYN),
        PassAllowed,
        "IPv4 /0",
    );
    expect(
        &mut dp,
        &Pkt::tcp(V6.stranger, V6.local, 1, 8080, TCP_SYN),
        DropNew,
        "IPv6 vs IPv4 /0",
    );
}

#[test]
fn tcp_flow_created_by_egress_lets_the_handshake_in() {
    let mut dp = datapath();
    for net in NETS {
        let key = flow_key(net.local, 41000, net.remote, 443, PROTO_TCP);
        let out = |flags| Pkt::tcp(net.local, net.remote, 41000, 443, flags);
        let inb = |flags| Pkt::tcp(net.remote, net.local, 443, 41000, flags);

        // Before the origin's SYN, a SYN-ACK is just traffic to a closed port.
        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).seq(9000).ack(5001),
            DropNew,
            "SYN-ACK before any SYN",
        );
        assert!(
            send(&mut dp, &out(TCP_SYN).seq(5000)),
            "the origin's SYN creates a flow"
        );
        let v = dp.flow(&key).expect("flow after the SYN");
        assert_eq!(
            (v.state(), v.origin_seq),
            (Some(FlowState::TcpSynSent), 5000)
        );

        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).seq(9000).ack(5000),
            DropInvalid,
            "SYN-ACK acking seq, not seq+1",
        );
        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).seq(9000).ack(12345),
            DropInvalid,
            "forged SYN-ACK",
        );
        expect(
            &mut dp,
            &inb(TCP_ACK).seq(9000).ack(5001),
            DropInvalid,
            "data before the SYN-ACK",
        );
        expect(
            &mut dp,
            &inb(TCP_RST).ack(0),
            DropInvalid,
            "RST without ACK in SYN_SENT",
        );
        assert_eq!(
            state(dp.flow(&key)),
            Some(FlowState::TcpSynSent),
            "invalid segments change nothing"
        );
        // A new inbound SYN on the same 4-tuple is decided by the allowlist alone.
        expect(
            &mut dp,
            &inb(TCP_SYN).seq(1),
            DropNew,
            "inbound SYN on the tuple",
        );

        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).seq(9000).ack(5001),
            PassEstablished,
            "SYN-ACK acking the SYN",
        );
        assert_eq!(state(dp.flow(&key)), Some(FlowState::TcpEstablished));
        assert!(
            !send(&mut dp, &out(TCP_ACK).seq(5001).ack(9001)),
            "the flow exists already"
        );

        let data = inb(TCP_ACK | TCP_PSH).seq(9001).ack(5001).payload(b"hello");
        expect(
            &mut dp,
            &data,
            PassEstablished,
            "data on the established flow",
        );
        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).ack(1),
            PassEstablished,
            "any segment once established",
        );

        expect(&mut dp, &inb(TCP_FIN | TCP_ACK), PassEstablished, "FIN");
        assert_eq!(state(dp.flow(&key)), Some(FlowState::TcpClosing));
        expect(&mut dp, &inb(TCP_RST), PassEstablished, "RST after FIN");
        assert_eq!(state(dp.flow(&key)), Some(FlowState::TcpClosed));
        expect(
            &mut dp,
            &inb(TCP_ACK),
            PassEstablished,
            "closed flows still match until they expire",
        );

        // The origin reuses the 4-tuple: a fresh SYN_SENT with the new sequence number.
        assert!(
            !send(&mut dp, &out(TCP_SYN).seq(7000)),
            "reusing the entry is not a creation"
        );
        let v = dp.flow(&key).expect("flow after the second SYN");
        assert_eq!(
            (v.state(), v.origin_seq),
            (Some(FlowState::TcpSynSent), 7000)
        );
        expect(
            &mut dp,
            &inb(TCP_SYN_ACK).ack(5001),
            DropInvalid,
            "SYN-ACK for the old SYN",
        );
        expect(
            &mut dp,
            &inb(TCP_RST | TCP_ACK).ack(7001),
            PassEstablished,
            "RST refusing the new SYN",
        );
        assert_eq!(state(dp.flow(&key)), Some(FlowState::TcpClosed));
    }
}

#[test]
fn udp_reply_after_outbound_query() {
    let mut dp = datapath();
    for net in NETS {
        let query = Pkt::udp(net.local, net.remote, 45000, 123);
        let reply = Pkt::udp(net.remote, net.local, 123, 45000);
        expect(&mut dp, &reply, DropNew, "unsolicited UDP");
        assert!(send(&mut dp, &query), "the query creates a flow");
        let key = flow_key(net.local, 45000, net.remote, 123, PROTO_UDP);
        assert_eq!(state(dp.flow(&key)), Some(FlowState::UdpUnreplied));
        expect(&mut dp, &reply, PassEstablished, "reply to the query");
        assert_eq!(state(dp.flow(&key)), Some(FlowState::UdpReplied));
        expect(&mut dp, &reply, PassEstablished, "second reply");
        assert!(!send(&mut dp, &query), "a second query refreshes the flow");
        assert_eq!(state(dp.flow(&key)), Some(FlowState::UdpReplied));
        // Another peer, or another port of the same peer, is not the flow.
        expect(
            &mut dp,
            &Pkt::udp(net.stranger, net.local, 123, 45000),
            DropNew,
            "other peer",
        );
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, 124, 45000),
            DropNew,
            "other remote port",
        );
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, 123, 45001),
            DropNew,
            "other local port",
        );
    }
}

#[test]
fn echo_reply_after_outbound_echo_request() {
    let mut dp = datapath();
    for net in NETS {
        expect(
            &mut dp,
            &Pkt::echo_request(net.remote, net.local, 7, 1),
            DropNew,
            "inbound echo request",
        );
        expect(
            &mut dp,
            &Pkt::echo_reply(net.remote, net.local, 7, 1),
            DropNew,
            "unsolicited echo reply",
        );
        assert!(
            send(&mut dp, &Pkt::echo_request(net.local, net.remote, 7, 1)),
            "echo request creates a flow"
        );
        assert_eq!(
            state(dp.flow(&echo_flow_key(net.local, net.remote, 7))),
            Some(FlowState::IcmpEcho)
        );
        expect(
            &mut dp,
            &Pkt::echo_reply(net.remote, net.local, 7, 1),
            PassEstablished,
            "echo reply",
        );
        expect(
            &mut dp,
            &Pkt::echo_reply(net.remote, net.local, 8, 1),
            DropNew,
            "reply with another id",
        );
        expect(
            &mut dp,
            &Pkt::echo_reply(net.stranger, net.local, 7, 1),
            DropNew,
            "reply from another host",
        );
        expect(
            &mut dp,
            &Pkt::echo_request(net.remote, net.local, 7, 2),
            DropNew,
            "inbound request, same id",
        );
        // The reply of the other direction's protocol is not an echo reply.
        let ty = if net.local.is_ipv4() { 129 } else { 0 };
        expect(
            &mut dp,
            &Pkt::icmp(net.remote, net.local, ty, 0, [0, 7, 0, 1]),
            DropNew,
            "wrong-family reply type",
        );
    }
}

#[test]
fn icmp_errors_quoting_tracked_flows_are_related() {
    let mut dp = datapath();
    for net in NETS {
        let tcp_out = Pkt::tcp(net.local, net.remote, 42000, 443, TCP_SYN).seq(100);
        let udp_out = Pkt::udp(net.local, net.remote, 42001, 4500);
        let echo_out = Pkt::echo_request(net.local, net.remote, 99, 1);
        let untracked = Pkt::tcp(net.local, net.remote, 42002, 443, TCP_ACK);

        // Before anything is tracked, every error is unrelated.
        for inner in [&tcp_out, &udp_out, &echo_out] {
            expect(
                &mut dp,
                &Pkt::frag_needed(net.router, net.local, 1400, inner),
                DropUnrelatedIcmp,
                "error before the flow",
            );
        }
        for p in [&tcp_out, &udp_out, &echo_out] {
            assert!(send(&mut dp, p), "outbound packet creates a flow");
        }
        for inner in [&tcp_out, &udp_out, &echo_out] {
            let what = format!("error quoting {:?}", inner.l4);
            expect(
                &mut dp,
                &Pkt::frag_needed(net.router, net.local, 1400, inner),
                PassRelated,
                &what,
            );
            expect(
                &mut dp,
                &Pkt::time_exceeded(net.router, net.local, inner),
                PassRelated,
                &what,
            );
            expect(
                &mut dp,
                &Pkt::port_unreachable(net.remote, net.local, inner),
                PassRelated,
                &what,
            );
            // Inside a VLAN and with the IPv6 extension headers of the quoted packet.
            expect(
                &mut dp,
                &Pkt::frag_needed(net.router, net.local, 1400, inner).vlan(9),
                PassRelated,
                &what,
            );
        }
        if !net.local.is_ipv4() {
            let inner = Pkt::udp(net.local, net.remote, 42001, 4500).ext_chain(2);
            expect(
                &mut dp,
                &Pkt::frag_needed(net.router, net.local, 1280, &inner),
                PassRelated,
                "inner with exts",
            );
        }
        expect(
            &mut dp,
            &Pkt::frag_needed(net.router, net.local, 1400, &untracked),
            DropUnrelatedIcmp,
            "untracked",
        );
        // The quoted packet must have been sent by the origin: quoting the reply direction, or
        // addressed to another host, is unrelated.
        let reversed = Pkt::tcp(net.remote, net.local, 443, 42000, TCP_SYN_ACK);
        expect(
            &mut dp,
            &Pkt::frag_needed(net.router, net.local, 1400, &reversed),
            DropUnrelatedIcmp,
            "reversed",
        );
        expect(
            &mut dp,
            &Pkt::frag_needed(net.router, net.stranger, 1400, &tcp_out),
            DropUnrelatedIcmp,
            "to another host",
        );
        // A quoted non-first fragment has no ports.
        let frag = tcp_out.clone().later_fragment(5, 10).payload(&[0; 8]);
        expect(
            &mut dp,
            &Pkt::frag_needed(net.router, net.local, 1400, &frag),
            DropUnrelatedIcmp,
            "quoted later fragment",
        );
        // A quoted echo reply (not a request) is not an echo flow.
        let reply_quote = Pkt::echo_reply(net.local, net.remote, 99, 1);
        expect(
            &mut dp,
            &Pkt::time_exceeded(net.router, net.local, &reply_quote),
            DropUnrelatedIcmp,
            "quoted echo reply",
        );
        // Quoting a protocol without flows.
        let gre = Pkt::proto(net.local, net.remote, PROTO_GRE, &[0; 8]);
        expect(
            &mut dp,
            &Pkt::port_unreachable(net.router, net.local, &gre),
            DropUnrelatedIcmp,
            "quoted GRE",
        );
        // A quote cut short of the 8 L4 bytes is malformed; so is one without a whole IP header.
        let mut short = Pkt::frag_needed(net.router, net.local, 1400, &tcp_out).bytes();
        short.truncate(short.len() - 1);
        expect_frame(&mut dp, &short, DropMalformed, "quote one byte short");
        let outer = Pkt::frag_needed(net.router, net.local, 1400, &tcp_out);
        let mut no_ip = outer.bytes();
        no_ip.truncate(outer.l4_off() + 8 + tcp_out.l3_len() - 1);
        expect_frame(
            &mut dp,
            &no_ip,
            DropMalformed,
            "quote without a whole IP header",
        );
    }
}

#[test]
fn fragments_follow_their_first_fragment() {
    let mut dp = datapath();
    for net in NETS {
        let proto = PROTO_TCP;
        let first = Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN)
            .payload(&[0; 32])
            .first_fragment(0x4242);
        let later = Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN).later_fragment(0x4242, 7);
        let orphan = Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN).later_fragment(0x4343, 7);

        expect(
            &mut dp,
            &orphan,
            DropFragment,
            "later fragment without a first",
        );
        expect(
            &mut dp,
            &later,
            DropFragment,
            "later fragment before its first",
        );
        expect(
            &mut dp,
            &first,
            PassAllowed,
            "first fragment to an allowed port",
        );
        let entry = dp
            .frag(&frag_key(net.remote, net.local, 0x4242, proto))
            .expect("fragment entry");
        assert_eq!(entry.reason, PassAllowed as u32);
        expect(
            &mut dp,
            &later,
            PassFragment,
            "later fragment after its first",
        );
        expect(&mut dp, &later, PassFragment, "again");
        expect(
            &mut dp,
            &orphan,
            DropFragment,
            "another datagram's later fragment",
        );
        // The datagram id, source and protocol all belong to the key.
        let from_other =
            Pkt::tcp(net.stranger, net.local, 40000, 22, TCP_SYN).later_fragment(0x4242, 7);
        expect(
            &mut dp,
            &from_other,
            DropFragment,
            "same id from another source",
        );
        let other_proto = Pkt::udp(net.remote, net.local, 40000, 22).later_fragment(0x4242, 7);
        expect(
            &mut dp,
            &other_proto,
            DropFragment,
            "same id, other protocol",
        );

        // A dropped first fragment leaves nothing for its later fragments.
        let closed_first = Pkt::tcp(net.remote, net.local, 40000, 23, TCP_SYN)
            .payload(&[0; 32])
            .first_fragment(0x5151);
        let closed_later =
            Pkt::tcp(net.remote, net.local, 40000, 23, TCP_SYN).later_fragment(0x5151, 7);
        expect(
            &mut dp,
            &closed_first,
            DropNew,
            "first fragment to a closed port",
        );
        assert!(
            dp.frag(&frag_key(net.remote, net.local, 0x5151, proto))
                .is_none()
        );
        expect(
            &mut dp,
            &closed_later,
            DropFragment,
            "later fragment of a dropped datagram",
        );

        // UDP fragments of a reply on a tracked flow.
        assert!(send(&mut dp, &Pkt::udp(net.local, net.remote, 46000, 443)));
        let udp_first = Pkt::udp(net.remote, net.local, 443, 46000)
            .payload(&[1; 64])
            .first_fragment(0x6161);
        let udp_later = Pkt::udp(net.remote, net.local, 443, 46000).later_fragment(0x6161, 9);
        expect(
            &mut dp,
            &udp_first,
            PassEstablished,
            "first fragment of a reply",
        );
        expect(
            &mut dp,
            &udp_later,
            PassFragment,
            "later fragment of a reply",
        );

        // An expired fragment entry is absent.
        let key = frag_key(net.remote, net.local, 0x4242, proto);
        let mut old = dp.frag(&key).expect("fragment entry");
        old.first_seen_ns = ago(u64::from(dp.config().timeouts.fragment) + 60);
        dp.set_frag(&key, &old);
        expect(
            &mut dp,
            &later,
            DropFragment,
            "later fragment after its entry expired",
        );

        // The first fragment's L4 header must be whole.
        let mut tiny = Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN)
            .first_fragment(0x7171)
            .bytes();
        tiny.truncate(tiny.len() - 12);
        expect_frame(&mut dp, &tiny, DropMalformed, "tiny first fragment");
    }
    // IPv6: an atomic fragment (offset 0, no more fragments) is a whole datagram.
    let atomic = Pkt::tcp(V6.remote, V6.local, 40000, 22, TCP_SYN).ext(Ext::Fragment {
        offset: 0,
        more: false,
        id: 0x8181,
    });
    expect(&mut dp, &atomic, PassAllowed, "atomic fragment");
    assert!(
        dp.frag(&frag_key(V6.remote, V6.local, 0x8181, PROTO_TCP))
            .is_none()
    );
    // IPv4: the DF bit does not make a fragment.
    expect(
        &mut dp,
        &Pkt::udp(V4.remote, V4.local, 1, 53)
            .payload(&[0; 8])
            .first_fragment(9),
        PassAllowed,
        "IPv4 first fragment, udp/53",
    );
}

/// Representative packets and their verdicts with no flows and the test rules.
fn representative(net: Net) -> Vec<(Pkt, Counter)> {
    vec![
        (
            Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN),
            PassAllowed,
        ),
        (Pkt::tcp(net.remote, net.local, 40000, 23, TCP_SYN), DropNew),
        (
            Pkt::tcp(net.friend, net.local, 40000, 8080, TCP_SYN),
            PassAllowed,
        ),
        (Pkt::udp(net.remote, net.local, 40000, 53), PassAllowed),
        (Pkt::udp(net.remote, net.local, 40000, 54), DropNew),
        (Pkt::echo_request(net.remote, net.local, 1, 1), DropNew),
        (Pkt::dhcp_reply(net.remote, net.local), PassDhcp),
        (
            Pkt::frag_needed(
                net.router,
                net.local,
                1400,
                &Pkt::udp(net.local, net.remote, 1, 2),
            ),
            DropUnrelatedIcmp,
        ),
        (
            Pkt::tcp(net.remote, net.local, 40000, 22, TCP_SYN).later_fragment(3, 3),
            DropFragment,
        ),
        (
            Pkt::proto(net.remote, net.local, PROTO_GRE, &[0; 4]),
            DropProtocol,
        ),
    ]
}

#[test]
fn vlan_tags_do_not_change_verdicts() {
    let mut dp = datapath();
    for net in NETS {
        for (pkt, want) in representative(net) {
            expect(&mut dp, &pkt, want, "untagged");
            expect(&mut dp, &pkt.clone().vlans(&[100]), want, "802.1Q");
            expect(
                &mut dp,
                &pkt.clone().vlans(&[100, 200]),
                want,
                "802.1ad + 802.1Q",
            );
            expect(
                &mut dp,
                &pkt.clone().vlans(&[100, 200, 300]),
                DropTooDeep,
                "three tags",
            );
        }
    }
    expect(
        &mut dp,
        &Pkt::ndp(LINK_LOCAL, ALL_NODES, 135).vlans(&[1, 2]),
        PassNdp,
        "NDP in QinQ",
    );
    // Two 802.1Q tags (no 802.1ad) are walked the same way.
    let mut b = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN)
        .vlans(&[1, 2])
        .bytes();
    b[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    expect_frame(&mut dp, &b, PassAllowed, "802.1Q + 802.1Q");
}

#[test]
fn truncated_headers_are_malformed() {
    let mut dp = datapath();
    // The kernel refuses test runs of less than an Ethernet header, so a frame shorter than 14
    // bytes never reaches the program; a truncated VLAN tag is the shortest Ethernet truncation.
    assert!(
        dp.try_ingress_raw(&[0u8; MIN_TEST_RUN_LEN - 1]).is_err(),
        "13-byte test run accepted"
    );
    let tagged = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN)
        .vlans(&[5, 6])
        .bytes();
    for len in [14, 15, 16, 17, 18, 19, 20, 21] {
        expect_frame(
            &mut dp,
            &tagged[..len],
            DropMalformed,
            &format!("QinQ frame cut at {len}"),
        );
    }
    for net in NETS {
        let family = if net.local.is_ipv4() { "IPv4" } else { "IPv6" };
        let cases = [
            (Pkt::tcp(net.remote, net.local, 1, 22, TCP_SYN), "TCP"),
            (Pkt::udp(net.remote, net.local, 1, 53), "UDP"),
            (Pkt::echo_request(net.remote, net.local, 1, 1), "ICMP"),
        ];
        for (pkt, l4) in cases {
            let b = pkt.bytes();
            let whole = pkt.l4_off() + pkt.l4.header_len();
            for len in pkt.l3_off()..whole {
                let layer = if len < pkt.l4_off() { family } else { l4 };
                expect_frame(
                    &mut dp,
                    &b[..len],
                    DropMalformed,
                    &format!("{layer} header of {l4} cut at {len}"),
                );
            }
            // Exactly the headers, no payload, is fine.
            let want = if l4 == "ICMP" { DropNew } else { PassAllowed };
            expect_frame(
                &mut dp,
                &b[..whole],
                want,
                &format!("{family} {l4} headers only"),
            );
        }
    }
    // Options or extension headers cut short.
    let opts = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).ipv4_options(&[1; 8]);
    expect_frame(
        &mut dp,
        &opts.bytes()[..14 + 24],
        DropMalformed,
        "IPv4 options cut short",
    );
    let exts = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN).ext(Ext::DestOpts { units: 2 });
    for len in [14 + 40 + 4, 14 + 40 + 8, 14 + 40 + 23] {
        expect_frame(
            &mut dp,
            &exts.bytes()[..len],
            DropMalformed,
            &format!("extension header cut at {len}"),
        );
    }
    // A TCP data offset below 5 is malformed.
    let mut b = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).bytes();
    b[14 + 20 + 12] = 0x40;
    expect_frame(&mut dp, &b, DropMalformed, "TCP data offset 4");
}

#[test]
fn bad_ipv4_headers_are_malformed() {
    let mut dp = datapath();
    for ihl in 0..5 {
        let p = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).ihl(ihl);
        expect(&mut dp, &p, DropMalformed, &format!("IHL {ihl}"));
    }
    // IHL 15 (60 bytes) on a 40-byte datagram: the header runs past the total length.
    expect(
        &mut dp,
        &Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).ihl(15),
        DropMalformed,
        "IHL past total length",
    );
    // Version 6 in an IPv4 ethertype, and version 4 in an IPv6 one.
    let mut b = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).bytes();
    b[14] = 0x65;
    expect_frame(&mut dp, &b, DropMalformed, "IPv4 ethertype, version 6");
    let mut b = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN).bytes();
    b[14] = 0x45;
    expect_frame(&mut dp, &b, DropMalformed, "IPv6 ethertype, version 4");
    // A total length below the header length.
    let mut b = Pkt::tcp(V4.remote, V4.local, 1, 22, TCP_SYN).bytes();
    b[16..18].copy_from_slice(&19u16.to_be_bytes());
    expect_frame(&mut dp, &b, DropMalformed, "total length 19");
}

#[test]
fn ipv4_options_are_skipped() {
    let mut dp = datapath();
    for opts in [&[1u8; 4][..], &[1; 20], &[1; 40], &[0x94, 4, 0, 0]] {
        let n = opts.len();
        let p = |dport| Pkt::tcp(V4.remote, V4.local, 40000, dport, TCP_SYN).ipv4_options(opts);
        expect(
            &mut dp,
            &p(22),
            PassAllowed,
            &format!("{n} bytes of options, tcp/22"),
        );
        expect(
            &mut dp,
            &p(23),
            DropNew,
            &format!("{n} bytes of options, tcp/23"),
        );
        let u = Pkt::udp(V4.remote, V4.local, 40000, 53).ipv4_options(opts);
        expect(
            &mut dp,
            &u,
            PassAllowed,
            &format!("{n} bytes of options, udp/53"),
        );
        // ICMP errors with options on the outer and the quoted header.
        let inner = Pkt::udp(V4.local, V4.remote, 47000, 443).ipv4_options(opts);
        assert!(send(&mut dp, &Pkt::udp(V4.local, V4.remote, 47000, 443)));
        let err = Pkt::frag_needed(V4.router, V4.local, 1400, &inner).ipv4_options(opts);
        expect(
            &mut dp,
            &err,
            PassRelated,
            &format!("{n} bytes of options, inner and outer"),
        );
        dp.clear_flows();
    }
}

#[test]
fn ipv6_extension_chains_are_bounded() {
    let mut dp = datapath();
    for n in 0..=MAX_IPV6_EXT {
        expect(
            &mut dp,
            &Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN).ext_chain(n),
            PassAllowed,
            &format!("{n} exts, tcp/22"),
        );
        expect(
            &mut dp,
            &Pkt::tcp(V6.remote, V6.local, 1, 23, TCP_SYN).ext_chain(n),
            DropNew,
            &format!("{n} exts, tcp/23"),
        );
        expect(
            &mut dp,
            &Pkt::udp(V6.remote, V6.local, 1, 53).ext_chain(n),
            PassAllowed,
            &format!("{n} exts, udp/53"),
        );
    }
    for n in MAX_IPV6_EXT + 1..=MAX_IPV6_EXT + 3 {
        expect(
            &mut dp,
            &Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN).ext_chain(n),
            DropTooDeep,
            &format!("{n} exts"),
        );
    }
    // Every kind of extension header, with longer bodies.
    let mixed = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN)
        .ext(Ext::HopByHop { units: 3 })
        .ext(Ext::Routing { units: 2 })
        .ext(Ext::Ah { units: 4 })
        .ext(Ext::DestOpts { units: 1 });
    expect(
        &mut dp,
        &mixed,
        PassAllowed,
        "hop-by-hop, routing, AH, destination options",
    );
    // A fragment header counts toward the bound like any other.
    let frag6 = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN)
        .ext_chain(MAX_IPV6_EXT - 1)
        .first_fragment(77);
    expect(
        &mut dp,
        &frag6,
        PassAllowed,
        "five exts and a fragment header",
    );
    let frag7 = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN)
        .ext_chain(MAX_IPV6_EXT)
        .first_fragment(78);
    expect(
        &mut dp,
        &frag7,
        DropTooDeep,
        "six exts and a fragment header",
    );
    // A later fragment stops the walk at its fragment header.
    expect(
        &mut dp,
        &Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN)
            .ext_chain(5)
            .later_fragment(77, 20),
        PassFragment,
        "later fragment after five exts",
    );
    // Large extension headers push the L4 header beyond lockdown's reach.
    let deep = Pkt::tcp(V6.remote, V6.local, 1, 22, TCP_SYN)
        .ext(Ext::HopByHop { units: 255 })
        .ext(Ext::DestOpts { units: 0 });
    expect(&mut dp, &deep, DropTooDeep, "L4 header past 512 bytes");
}

#[test]
fn unknown_protocols_are_dropped() {
    let mut dp = datapath();
    for net in NETS {
        expect(
            &mut dp,
            &Pkt::proto(net.remote, net.local, PROTO_GRE, &[0, 0, 0x08, 0]),
            DropProtocol,
            "GRE",
        );
        expect(
            &mut dp,
            &Pkt::proto(net.remote, net.local, 132, &[0; 12]),
            DropProtocol,
            "SCTP",
        );
        // Even with nothing after the IP header: an unknown protocol needs no L4 header.
        expect(
            &mut dp,
            &Pkt::proto(net.remote, net.local, 50, &[]),
            DropProtocol,
            "ESP, empty",
        );
    }
    // ICMPv6 in IPv4 and ICMPv4 in IPv6 are not ICMP.
    expect(
        &mut dp,
        &Pkt::proto(
            V4.remote,
            V4.local,
            PROTO_ICMPV6,
            &[129, 0, 0, 0, 0, 7, 0, 1],
        ),
        DropProtocol,
        "ICMPv6 in IPv4",
    );
    expect(
        &mut dp,
        &Pkt::proto(V6.remote, V6.local, PROTO_ICMP, &[0, 0, 0, 0, 0, 7, 0, 1]),
        DropProtocol,
        "ICMP in IPv6",
    );
    // A GRE fragment's later fragments follow the dropped first.
    let first = Pkt::proto(V4.remote, V4.local, PROTO_GRE, &[0; 8])
        .payload(&[0; 16])
        .first_fragment(5);
    expect(&mut dp, &first, DropProtocol, "GRE first fragment");
    expect(
        &mut dp,
        &Pkt::proto(V4.remote, V4.local, PROTO_GRE, &[]).later_fragment(5, 3),
        DropFragment,
        "GRE later fragment",
    );
}

#[test]
fn egress_learns_only_from_the_origins_own_connections() {
    let mut dp = datapath();
    for net in NETS {
        // Replies of a service on an allowed port to a spoofed SYN / ACK scan create nothing.
        let syn_ack = Pkt::tcp(net.local, net.remote, 22, 40000, TCP_SYN_ACK)
            .seq(1)
            .ack(2);
        assert!(
            !send(&mut dp, &syn_ack),
            "the origin's SYN-ACK creates no flow"
        );
        assert!(
            !send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 22, 40000, TCP_RST)
            ),
            "RST creates no flow"
        );
        assert!(
            !send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 23, 40000, TCP_RST | TCP_ACK)
            ),
            "RST-ACK creates no flow"
        );
        assert!(
            !send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 41000, 80, TCP_FIN)
            ),
            "bare FIN creates no flow"
        );
        assert!(dp.flows().is_empty(), "no flows: {:?}", dp.flows());
        // So the peer's next segment is decided by the allowlist.
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 40000, 23, TCP_ACK),
            DropNew,
            "ACK after the RST",
        );
        // The origin's UDP from a service port (a reply to a client) creates nothing either.
        assert!(
            !send(&mut dp, &Pkt::udp(net.local, net.remote, 53, 40000)),
            "UDP from udp/53 creates no flow"
        );
        assert!(
            send(&mut dp, &Pkt::udp(net.local, net.friend, 8080, 40000)),
            "UDP from port 8080 creates a flow: only tcp/8080 is a service port"
        );
        dp.clear_flows();
        // TCP from a port the allowlist opens takes no entry, past the handshake too: the
        // allowlist vouches for the connection.
        assert!(
            !send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 22, 40000, TCP_ACK)
            ),
            "the origin's ACK on an allowed port creates no flow"
        );
        assert!(dp.flows().is_empty(), "no flows: {:?}", dp.flows());
        // A connection past its handshake that nothing vouches for (accepted before its rule
        // went) is tracked from the origin's first segment.
        assert!(
            send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 41000, 40000, TCP_ACK)
            ),
            "the origin's ACK from a port that is not allowed creates a flow"
        );
        assert_eq!(
            state(dp.flow(&flow_key(net.local, 41000, net.remote, 40000, PROTO_TCP))),
            Some(FlowState::TcpEstablished)
        );
        // Non-first fragments and non-IP frames teach nothing.
        assert!(
            !send(
                &mut dp,
                &Pkt::udp(net.local, net.remote, 41000, 9).later_fragment(1, 2)
            ),
            "later fragment"
        );
        assert!(
            !send(&mut dp, &Pkt::echo_reply(net.local, net.remote, 5, 5)),
            "echo reply"
        );
        assert!(
            !send(
                &mut dp,
                &Pkt::proto(net.local, net.remote, PROTO_GRE, &[0; 4])
            ),
            "GRE"
        );
        dp.clear_flows();
    }
    let (ret, created) = dp.egress_counted(&arp_request(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(10, 0, 0, 2),
    ));
    assert_eq!((ret, created), (TC_ACT_UNSPEC, false), "ARP");
}

#[test]
fn monitor_mode_passes_what_it_would_drop() {
    let mut dp = datapath();
    dp.set_flag(FLAG_MONITOR, true);
    for net in NETS {
        let cases = [
            (
                Pkt::tcp(net.remote, net.local, 1, 23, TCP_SYN).bytes(),
                DropNew,
            ),
            (
                Pkt::tcp(net.remote, net.local, 1, 22, TCP_SYN).bytes()[..30].to_vec(),
                DropMalformed,
            ),
            (
                Pkt::proto(net.remote, net.local, PROTO_GRE, &[0; 4]).bytes(),
                DropProtocol,
            ),
            (
                Pkt::udp(net.remote, net.local, 1, 22)
                    .later_fragment(4, 4)
                    .bytes(),
                DropFragment,
            ),
            (
                Pkt::tcp(net.remote, net.local, 1, 22, TCP_SYN)
                    .vlans(&[1, 2, 3])
                    .bytes(),
                DropTooDeep,
            ),
            (
                Pkt::tcp(net.remote, net.local, 1, 22, TCP_SYN).bytes(),
                PassAllowed,
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(
                dp.ingress(&frame),
                (XDP_PASS, want),
                "monitor mode: {}",
                hex(&frame)
            );
        }
    }
    dp.set_flag(FLAG_MONITOR, false);
    expect(
        &mut dp,
        &Pkt::tcp(V4.remote, V4.local, 1, 23, TCP_SYN),
        DropNew,
        "monitor off again",
    );
}

#[test]
fn expired_flows_are_absent() {
    // Short timeouts, so that entries can be aged past them without a long uptime.
    let mut dp = Datapath::new(uniform_timeouts(test_config().flags, 30), RULES);
    let long_ago = ago(100);
    for net in NETS {
        let age = |dp: &mut Datapath, key| {
            let mut v: FlowValue = dp.flow(&key).expect("flow to age");
            v.last_seen_ns = long_ago;
            dp.set_flow(&key, &v);
        };
        // TCP: an expired SYN_SENT does not let the SYN-ACK in, and ingress leaves it alone.
        let tcp = flow_key(net.local, 43000, net.remote, 443, PROTO_TCP);
        assert!(send(
            &mut dp,
            &Pkt::tcp(net.local, net.remote, 43000, 443, TCP_SYN).seq(10)
        ));
        age(&mut dp, tcp);
        let syn_ack = Pkt::tcp(net.remote, net.local, 443, 43000, TCP_SYN_ACK).ack(11);
        expect(&mut dp, &syn_ack, DropNew, "SYN-ACK on an expired flow");
        assert_eq!(
            dp.flow(&tcp).map(|v| v.last_seen_ns),
            Some(long_ago),
            "ingress does not revive"
        );
        // Its ICMP errors are unrelated.
        let inner = Pkt::tcp(net.local, net.remote, 43000, 443, TCP_SYN);
        expect(
            &mut dp,
            &Pkt::frag_needed(net.router, net.local, 1400, &inner),
            DropUnrelatedIcmp,
            "error on an expired flow",
        );
        // Egress over an expired entry starts afresh and counts a creation.
        assert!(
            send(
                &mut dp,
                &Pkt::tcp(net.local, net.remote, 43000, 443, TCP_SYN).seq(20)
            ),
            "re-created"
        );
        let v = dp.flow(&tcp).expect("re-created flow");
        assert_eq!((v.state(), v.origin_seq), (Some(FlowState::TcpSynSent), 20));
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 443, 43000, TCP_SYN_ACK).ack(21),
            PassEstablished,
            "after re-creation",
        );
        // An established flow past its timeout: even allowed-port rules decide again.
        age(&mut dp, tcp);
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 443, 43000, TCP_ACK),
            DropNew,
            "ACK on an expired flow",
        );

        // UDP and ICMP echo.
        let udp = flow_key(net.local, 43001, net.remote, 53, PROTO_UDP);
        assert!(send(&mut dp, &Pkt::udp(net.local, net.remote, 43001, 53)));
        age(&mut dp, udp);
        expect(
            &mut dp,
            &Pkt::udp(net.remote, net.local, 53, 43001),
            DropNew,
            "UDP reply on an expired flow",
        );
        assert_eq!(
            state(dp.flow(&udp)),
            Some(FlowState::UdpUnreplied),
            "not promoted"
        );
        let echo = echo_flow_key(net.local, net.remote, 77);
        assert!(send(
            &mut dp,
            &Pkt::echo_request(net.local, net.remote, 77, 1)
        ));
        age(&mut dp, echo);
        expect(
            &mut dp,
            &Pkt::echo_reply(net.remote, net.local, 77, 1),
            DropNew,
            "echo reply on an expired flow",
        );

        // A state byte that is no state is absent too.
        let mut bogus = FlowValue::new(FlowState::TcpEstablished, now(), 0);
        bogus.state = 0;
        let k = flow_key(net.local, 43002, net.remote, 443, PROTO_TCP);
        dp.set_flow(&k, &bogus);
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 443, 43002, TCP_ACK),
            DropNew,
            "flow with state 0",
        );
        // A flow written directly (as the loader seeds them) is as good as a learnt one.
        let seeded = flow_key(net.local, 43003, net.remote, 443, PROTO_TCP);
        dp.set_flow(
            &seeded,
            &FlowValue::new(FlowState::TcpEstablished, now(), 0),
        );
        expect(
            &mut dp,
            &Pkt::tcp(net.remote, net.local, 443, 43003, TCP_ACK),
            PassEstablished,
            "seeded flow",
        );
    }
}

/// BUG (lockdown-common/src/parse.rs, `ipv6()` + verdict.rs `frag_key`): the fragment-table key
/// of an IPv6 datagram uses `ip.proto`, which for the first fragment is the upper-layer protocol
/// found after walking the whole chain, but for a later fragment is the Fragment header's Next
/// Header, i.e. the first header of the fragmentable part. When that part starts with an extension
/// header (a Destination Options header or AH after the Fragment header, as RFC 8200 §4.1 orders
/// them, e.g. fragmented IPsec AH traffic), the keys differ (proto 6 vs 60/51) and every later
/// fragment of an allowed datagram is dropped as `drop_fragment`. IPv4 is not affected. A fix:
/// key fragments on the Fragment header's Next Header in both cases.
#[test]
fn ipv6_later_fragments_match_when_an_extension_header_follows_the_fragment_header() {
    let mut dp = datapath();
    for (ext, kind) in [(Ext::DEST_OPTS, "destination options"), (Ext::AH, "AH")] {
        let id = 0x9000 + u32::from(ext.kind());
        let first = Pkt::tcp(V6.remote, V6.local, 40000, 22, TCP_SYN)
            .ext(Ext::Fragment {
                offset: 0,
                more: true,
                id,
            })
            .ext(ext)
            .payload(&[0; 32]);
        expect(
            &mut dp,
            &first,
            PassAllowed,
            &format!("first fragment, {kind} after the fragment header"),
        );
        // The later fragment's Fragment header names the header that follows it in the first.
        let later = Pkt::proto(V6.remote, V6.local, ext.kind(), &[]).later_fragment(id, 7);
        let frame = later.bytes();
        assert_eq!(
            frame[14 + 40],
            ext.kind(),
            "Next Header of the later fragment's Fragment header"
        );
        expect_frame(
            &mut dp,
            &frame,
            PassFragment,
            &format!("BUG: later fragment, {kind} after the fragment header"),
        );
    }
}

/// Regressions from the differential test (`model_vs_bpf`): paste the line it prints for a
/// disagreement, `(packet hex, config flags, expected reason)`. The tables are those of the
/// differential test ([`DIFF_RULES`], no flows); the first entries are examples of the format.
#[test]
fn model_regressions() {
    let cases: &[(&str, u32, Counter)] = &[
        // QinQ frame cut inside the inner tag.
        (
            "02000000000102000000000288a8000581000006",
            0x6,
            DropMalformed,
        ),
        // Seven IPv6 extension headers.
        (
            "02000000000102000000000286dd600000000040004020010db800000000000000000000000220010db80000000000000000000000013c000104000000002b0001040000000000000400000000003c000104000000002b00010400000000000004000000000011000104000000009c40007b000807ae",
            0x6,
            DropTooDeep,
        ),
        // IPv4 router-alert option, SYN to tcp/80 from the one host allowed (/32).
        (
            "02000000000102000000000208004600002c123440004006c788c000020a0a000001940400009c400050000003e8000000005002faf0486e0000",
            0x6,
            PassAllowed,
        ),
        // Six IPv6 extension headers, udp/123 from the one host allowed (/128).
        (
            "02000000000102000000000286dd600000000038004020010db800000000000000000000000220010db80000000000000000000000013c000104000000002b0001040000000000000400000000003c000104000000002b0001040000000011000400000000009c40007b000807ae",
            0x6,
            PassAllowed,
        ),
        // IHL 4.
        (
            "0200000000010200000000020800440000281234400040065c91c000020a0a0000019c400050000003e8000000005002faf0486e0000",
            0x6,
            DropMalformed,
        ),
    ];
    let mut dp = Datapath::new(test_config(), DIFF_RULES);
    for (i, (h, flags, want)) in cases.iter().enumerate() {
        let mut config = test_config();
        config.flags = *flags;
        dp.set_config(&config);
        expect_frame(&mut dp, &from_hex(h), *want, &format!("regression {i}"));
    }
}

/// Bytes counted under `c` so far, over all CPUs.
fn counted_bytes(dp: &Datapath, c: Counter) -> u64 {
    dp.handles
        .counters()
        .unwrap_or_else(|e| panic!("reading the counters: {e:#}"))
        .into_iter()
        .find(|(k, _)| *k == c)
        .map_or(0, |(_, v)| v.bytes)
}

/// Jumbo frames reach a multi-buffer (`xdp.frags`) program split over several buffers: the test
/// run puts what does not fit the first page into fragments, as a driver does. The headers are in
/// the first buffer, so the verdicts are those of the same packets at 64 bytes, and the byte
/// counters count the whole frames.
#[test]
fn multi_buffer_frames_are_decided_on_their_headers_and_counted_whole() {
    const JUMBO: usize = 9000;
    // Only the multi-buffer variant takes frames larger than a page.
    let mut dp = Datapath::with_ingress(test_config(), RULES, None, PROG_INGRESS);
    for net in NETS {
        let key = flow_key(net.local, 41000, net.remote, 443, PROTO_TCP);
        dp.set_flow(&key, &FlowValue::new(FlowState::TcpEstablished, now(), 0));
        let pad = |p: Pkt| {
            let bare = p.payload(&[]);
            let len = bare.bytes().len();
            bare.payload(&vec![0x5a; JUMBO - len])
        };
        let cases = [
            (
                pad(Pkt::tcp(net.remote, net.local, 443, 41000, TCP_ACK)),
                PassEstablished,
                "an ACK of a tracked flow",
            ),
            (
                pad(Pkt::tcp(net.remote, net.local, 40000, 22, TCP_ACK)),
                PassAllowed,
                "an ACK to an allowed port",
            ),
            (
                pad(Pkt::tcp(net.remote, net.local, 40000, 23, TCP_ACK)),
                DropNew,
                "an ACK to a closed port",
            ),
            (
                pad(Pkt::tcp(net.remote, net.local, 40000, 23, TCP_SYN)),
                DropNew,
                "a SYN to a closed port",
            ),
            (
                pad(Pkt::echo_request(net.remote, net.local, 7, 1)),
                DropNew,
                "an echo request to the origin",
            ),
        ];
        for (pkt, want, what) in cases {
            let frame = pkt.bytes();
            assert_eq!(frame.len(), JUMBO, "{what}: frame size");
            let before = counted_bytes(&dp, want);
            expect_frame(&mut dp, &frame, want, what);
            assert_eq!(
                counted_bytes(&dp, want) - before,
                JUMBO as u64,
                "{what}: the byte counter should count the whole {JUMBO}-byte frame"
            );
        }
        dp.clear_flows();
    }
}

/// The kernel accepts the object's BTF, so every program loads with it (function and line info
/// for the verifier). bpf-linker leaves Rust's names on union types, which the kernel refuses;
/// the build renames them (lockdown-user/build/btf.rs). Without that, aya loads the programs
/// without BTF and says nothing.
#[test]
fn the_programs_load_with_their_btf() {
    let mut ebpf = aya::Ebpf::load(lockdown_user::EBPF_OBJECT).expect("the object loads");
    for name in [PROG_INGRESS, PROG_INGRESS_LINEAR] {
        let prog: &mut aya::programs::Xdp = ebpf
            .program_mut(name)
            .expect("program in the object")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("the program verifies");
        let info = prog.info().expect("program info");
        assert!(info.btf_id().is_some(), "{name} loaded without BTF");
    }
}
