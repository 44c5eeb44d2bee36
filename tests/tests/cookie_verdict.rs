//! The SYN-cookie stage in the kernel, through `BPF_PROG_TEST_RUN`: the multi-buffer ingress
//! program tail-calls the cookie program, which answers SYNs (`XDP_TX`) and checks ACKs. Every
//! case runs through the model too and must agree: reason, action, and the SYN-ACK byte for byte.
//! The test runs in a network namespace of its own, where a real listener on tcp/22 and a real
//! connection to it are what the programs' socket lookups find (tcp/2222 is allowed, but nothing
//! listens on it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};

use lockdown_common::{
    contract::{
        counters::Counter::{self, *},
        flow::FAMILY_V4,
        maps::{PROG_INGRESS, PROG_INGRESS_LINEAR},
        syncookie::{CookieConfig, MODE_AUTO, MODE_OFF, MODE_ON},
    },
    model::HostTables,
    packet::Frame,
    rules::allow::PortSpec,
    verdict::Action,
};
use lockdown_testbed::{
    netns::in_private_netns,
    packets::{LINUX_SYN_OPTIONS, Pkt, TCP_SYN, ack_for, addr16, hex},
    testrun::{Datapath, XDP_DROP, XDP_PASS, XDP_TX, now, rules, test_config},
};
use lockdown_tests::model::snapshot;

const RULES: &[&str] = &["tcp/22", "tcp/2222"];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ORIGIN4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7);
const ORIGIN6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1);

fn cookie_config(mode: u32) -> CookieConfig {
    CookieConfig {
        keys: [[0x0123_4567, 0x89ab_cdef], [0x1111, 0x2222]],
        mode,
        ..CookieConfig::OFF
    }
}

/// The kernel and the model, with the same rules and cookie configuration.
struct Side {
    dp: Datapath,
    model: HostTables,
}

impl Side {
    fn new(mode: u32, ingress: &'static str) -> Self {
        let mut dp = Datapath::with_ingress(test_config(), RULES, None, ingress);
        let c = cookie_config(mode);
        dp.set_cookie_config(&c);
        let mut model = snapshot(&dp);
        model.cookie = Some(c);
        model.cookies = ingress == PROG_INGRESS;
        model.listeners.insert(22);
        Self { dp, model }
    }

    /// Runs `frame` through both; they must agree. Returns the reason and the frame as the
    /// program left it.
    fn run(&mut self, frame: &[u8]) -> (Counter, Vec<u8>) {
        let mut f = Frame {
            bytes: frame.to_vec(),
            meta: None,
        };
        let want = self.model.ingress_frame(&mut f, now());
        let (action, reason, out) = self.dp.ingress_out(frame);
        let want_action = match want.action() {
            Action::Pass => XDP_PASS,
            Action::Drop => XDP_DROP,
            Action::Transmit => XDP_TX,
        };
        assert_eq!(
            (action, reason),
            (want_action, want.reason),
            "kernel vs model on {}",
            hex(frame)
        );
        if action == XDP_TX {
            assert_eq!(
                hex(&out),
                hex(&f.bytes),
                "the SYN-ACK differs from the model's"
            );
        }
        (reason, out)
    }
}

fn listen() -> TcpListener {
    // Dual-stack: IPv4 lookups find it too.
    TcpListener::bind("[::]:22").expect("listening on tcp/22 in the test's namespace")
}

fn addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (CLIENT6.into(), ORIGIN6.into())
    } else {
        (CLIENT4.into(), ORIGIN4.into())
    }
}

fn syn(v6: bool, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let (c, o) = addrs(v6);
    Pkt::tcp(c, o, sport, dport, TCP_SYN)
        .seq(seq)
        .tcp_options(&LINUX_SYN_OPTIONS)
        .bytes()
}

#[test]
fn a_syn_is_answered_and_its_ack_handed_to_the_listener() {
    in_private_netns("cookie_verdict", || {
        let _l = listen();
        let mut s = Side::new(MODE_ON, PROG_INGRESS);
        for v6 in [false, true] {
            let (reason, synack) = s.run(&syn(v6, 40000, 22, 1000));
            assert_eq!(reason, SynCookieSent);
            assert_eq!(s.run(&ack_for(&synack, 0)).0, PassCookieAck);
            assert_eq!(s.run(&ack_for(&synack, 1)).0, DropCookieInvalid);
            assert_eq!(s.run(&ack_for(&synack, 1 << 20)).0, DropCookieInvalid);
        }
        assert!(
            s.dp.flow_entries().is_empty(),
            "the handshake stored nothing"
        );
    });
}

#[test]
fn an_ack_with_no_listener_is_dropped_and_a_connections_own_passes() {
    in_private_netns("cookie_verdict", || {
        let l = listen();
        let mut s = Side::new(MODE_ON, PROG_INGRESS);
        // tcp/2222 is allowed but nothing listens: the SYN is answered (no lookup for it), the
        // ACK is not handed to anyone.
        let (_, synack) = s.run(&syn(false, 40001, 2222, 5));
        assert_eq!(s.run(&ack_for(&synack, 0)).0, DropCookieNoListener);
        // A real connection on loopback: its segments pass as any allowed port's.
        let client = TcpStream::connect("127.0.0.1:22").expect("connecting on loopback");
        let _server = l.accept().expect("accepting");
        let port = client.local_addr().expect("local address").port();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        s.model
            .connections
            .insert((FAMILY_V4, addr16(lo), addr16(lo), port, 22));
        let ack = Pkt::tcp(lo, lo, port, 22, lockdown_testbed::packets::TCP_ACK)
            .seq(7)
            .ack(9)
            .payload(b"data")
            .bytes();
        assert_eq!(s.run(&ack).0, PassAllowed);
    });
}

#[test]
fn a_rated_port_charges_the_cookie_ack_not_the_syn() {
    in_private_netns("cookie_verdict", || {
        let _l = listen();
        let mut s = Side::new(MODE_ON, PROG_INGRESS);
        let all = rules(RULES);
        let rates = [(
            PortSpec::parse("tcp/22").expect("a port"),
            lockdown_common::contract::rate::RateSpec::parse_rate("2/min", 2).expect("a rate"),
        )]
        .into_iter()
        .collect();
        s.dp.set_rates(&all, &rates, 99);
        s.model.set_rates(&all, &rates, 99).expect("rates");
        // SYNs from one source, however many, spend nothing.
        let mut synack = Vec::new();
        for seq in 0..20 {
            let (reason, out) = s.run(&syn(false, 40002, 22, seq));
            assert_eq!(reason, SynCookieSent);
            synack = out;
        }
        // Its valid ACKs spend the burst of 2; the third is over the rate.
        for want in [PassCookieAck, PassCookieAck, DropRateLimited] {
            assert_eq!(s.run(&ack_for(&synack, 0)).0, want);
        }
    });
}

#[test]
fn off_auto_below_the_threshold_and_other_shapes_keep_the_kernel_handshake() {
    in_private_netns("cookie_verdict", || {
        let _l = listen();
        for mode in [MODE_OFF, MODE_AUTO] {
            let mut s = Side::new(mode, PROG_INGRESS);
            assert_eq!(
                s.run(&syn(false, 40003, 22, 1)).0,
                PassAllowed,
                "mode {mode}"
            );
        }
        let mut s = Side::new(MODE_ON, PROG_INGRESS);
        let tagged = Pkt::tcp(CLIENT4, ORIGIN4, 40004, 22, TCP_SYN)
            .vlan(7)
            .tcp_options(&LINUX_SYN_OPTIONS)
            .bytes();
        assert_eq!(s.run(&tagged).0, PassSynToKernel);
        let with_ip_options = Pkt::tcp(CLIENT4, ORIGIN4, 40004, 22, TCP_SYN)
            .ipv4_options(&[1, 1, 1, 0])
            .bytes();
        assert_eq!(s.run(&with_ip_options).0, PassSynToKernel);
        // A closed port stays closed.
        assert_eq!(s.run(&syn(false, 40004, 9999, 1)).0, DropNew);
    });
}

#[test]
fn the_single_buffer_program_has_no_cookie_stage() {
    in_private_netns("cookie_verdict", || {
        let _l = listen();
        let mut s = Side::new(MODE_ON, PROG_INGRESS_LINEAR);
        assert_eq!(s.run(&syn(false, 40005, 22, 1)).0, PassAllowed);
    });
}

#[test]
fn forged_acks_are_all_refused() {
    in_private_netns("cookie_verdict", || {
        let _l = listen();
        let mut s = Side::new(MODE_ON, PROG_INGRESS);
        let mut x = 0x9e37_79b9_u32;
        for i in 0..2000u16 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let ack = Pkt::tcp(
                CLIENT4,
                ORIGIN4,
                1024 + i,
                22,
                lockdown_testbed::packets::TCP_ACK,
            )
            .seq(x.rotate_left(7))
            .ack(x)
            .bytes();
            assert_eq!(s.run(&ack).0, DropCookieInvalid);
        }
    });
}
