//! Differential test: the XDP/TC programs (through `BPF_PROG_TEST_RUN`) against the host reference
//! model (`lockdown_common::verdict` over [`HostTables`]), on the same table contents.
//!
//! A seeded generator produces valid packets of every verdict path, then decorates them (VLAN
//! stacks 0-3, IPv6 extension chains 0-8, IPv4 options, fragments) and mutates some (truncation,
//! bit flips, byte overwrites, bad IHL). Every packet goes through both sides: ingress packets
//! compare (pass/drop, reason); egress packets compare whether a flow was created; both compare
//! the flow and fragment entries the packet touched (state, origin sequence number, flags,
//! fragment reason), and at the end of every epoch the whole tables. Times are not compared: the
//! timeouts are chosen so that no entry's liveness can differ between the model's "now" (read
//! right before each run) and the kernel's.
//!
//! Reproduce with `LOCKDOWN_MODEL_SEED=<seed>`; `LOCKDOWN_MODEL_CASES=<n>` changes the number of
//! test runs (at least 100 000 by default). A disagreement prints the packet as hex, ready to be
//! pasted into `verdict.rs`'s `model_regressions`. Needs root.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener},
    time::Instant,
};

use lockdown_common::{
    contract::{
        config::{Config, FLAG_DENY, FLAG_DENY_NETS, FLAG_MONITOR, FLAG_PASS_DHCP, FLAG_PASS_RA},
        counters::Counter,
        flow::{
            FAMILY_V4, FlowKey, FlowState, FlowTable, FlowValue, FragKey, FragValue, PROTO_ICMP,
            PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
        },
        maps::{PROG_INGRESS, PROG_INGRESS_LINEAR},
        rate::RateSpec,
        syncookie::{CookieConfig, MODE_AUTO, MODE_OFF, MODE_ON},
    },
    packet::Frame,
    rules::{allow::PortSpec, deny::DenyNet},
    stages::deny::FOREVER,
    verdict::{Action, Decision},
};
use lockdown_testbed::{
    netns::in_private_netns,
    packets::{
        ETHERTYPE_LLDP, Ext, Fragment, Pkt, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, ack_for,
        arp_request, hex, raw_frame,
    },
    testrun::{
        Datapath, MIN_TEST_RUN_LEN, TC_ACT_UNSPEC, XDP_DROP, XDP_PASS, XDP_TX, ingress_under_test,
        now, rules, uniform_timeouts,
    },
};
use lockdown_tests::model::{DIFF_RULES as RULES, HostTables};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

/// The reasons only the cookie stage gives.
const COOKIE_REASONS: [Counter; 5] = [
    Counter::SynCookieSent,
    Counter::PassCookieAck,
    Counter::DropCookieInvalid,
    Counter::DropCookieNoListener,
    Counter::PassSynToKernel,
];

const DEFAULT_SEED: u64 = 0x10c4_d0e5_2025;
const DEFAULT_CASES: usize = 100_000;
/// Test runs between table resets. Keeps the LRU tables far from full, so that the kernel never
/// evicts what the model keeps.
const EPOCH: usize = 1_000;
const MAX_FLOWS: u32 = 8_192;
/// Disagreements printed in full.
const MAX_REPORTED: usize = 40;

const LOCAL4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const REMOTES4: [Ipv4Addr; 7] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(198, 51, 100, 7),
    Ipv4Addr::new(198, 51, 101, 7),
    Ipv4Addr::new(203, 0, 113, 5),
    Ipv4Addr::new(203, 0, 113, 17),
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 200, 1, 1),
];
const REMOTES6: [Ipv6Addr; 7] = [
    Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 0x10),
    Ipv6Addr::new(0x2001, 0xdb8, 0xf00, 0, 0, 0, 0, 7),
    Ipv6Addr::new(0x2001, 0xdb8, 0xf01, 0, 0, 0, 0, 7),
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2),
    Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 3),
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
];
const PORTS: [u16; 22] = [
    1, 5, 22, 53, 67, 68, 80, 123, 443, 546, 547, 5000, 8000, 8010, 8011, 8080, 8081, 40000, 40001,
    40002, 50000, 65535,
];
/// Echo identifiers and fragment ids come from small pools, so that replies and later fragments
/// often hit an entry.
const IDS: [u16; 6] = [0, 1, 2, 7, 0x1234, 0xffff];
const FRAG_IDS: [u32; 5] = [1, 2, 3, 0x4242, 0xdead_beef];

/// A number from the environment (decimal or 0x-hex), or `default`.
fn env_u64(name: &str, default: u64) -> u64 {
    let Ok(s) = std::env::var(name) else {
        return default;
    };
    let s = s.trim();
    let parsed = match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{name}={s:?} is not a number"))
}

fn ip(a: [u8; 16], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

fn local(v6: bool) -> IpAddr {
    if v6 { LOCAL6.into() } else { LOCAL4.into() }
}

fn remote(rng: &mut StdRng, v6: bool) -> IpAddr {
    match (v6, rng.random_ratio(1, 10)) {
        (false, false) => (*REMOTES4.choose(rng).expect("pool")).into(),
        (true, false) => (*REMOTES6.choose(rng).expect("pool")).into(),
        (false, true) => Ipv4Addr::from(rng.random::<u32>()).into(),
        (true, true) => Ipv6Addr::from(rng.random::<u128>()).into(),
    }
}

fn port(rng: &mut StdRng) -> u16 {
    if rng.random_ratio(85, 100) {
        *PORTS.choose(rng).expect("pool")
    } else {
        rng.random()
    }
}

fn tcp_flags(rng: &mut StdRng) -> u8 {
    const COMMON: [u8; 9] = [
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_ACK | TCP_PSH,
        TCP_RST,
        TCP_RST | TCP_ACK,
        TCP_FIN | TCP_ACK,
        TCP_SYN | TCP_FIN,
        TCP_SYN | TCP_RST,
    ];
    if rng.random_ratio(4, 5) {
        *COMMON.choose(rng).expect("flags")
    } else {
        rng.random()
    }
}

fn bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// Where a case's packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

struct Case {
    frame: Vec<u8>,
    dir: Dir,
    label: String,
}

/// The per-epoch random state the generator draws on.
struct Gen {
    rng: StdRng,
    /// Flow keys that exist or existed this epoch, to aim packets at.
    known: Vec<FlowKey>,
    known_set: HashSet<FlowKey>,
    /// Whether this epoch has SYN cookies on (then a quarter of the cases are cookie cases).
    cookies: bool,
    /// ACKs for the SYN-ACKs the cookie stage sent, to send back.
    pending: Vec<Vec<u8>>,
}

impl Gen {
    fn learn(&mut self, key: FlowKey) {
        if self.known_set.insert(key) {
            self.known.push(key);
        }
    }

    fn known_flow(&mut self) -> Option<FlowKey> {
        self.known.choose(&mut self.rng).copied()
    }

    /// VLAN tags, IPv6 extension headers, IPv4 options and a payload.
    fn decorate(&mut self, mut p: Pkt) -> Pkt {
        let rng = &mut self.rng;
        let tags = match rng.random_range(0..100) {
            0..65 => 0,
            65..80 => 1,
            80..93 => 2,
            _ => 3,
        };
        p.vlans = (0..tags).map(|_| rng.random_range(0..4096)).collect();
        if p.is_v4() {
            if rng.random_ratio(1, 8) {
                let n = 4 * rng.random_range(1..=10);
                p.ipv4_options = (0..n).map(|_| rng.random()).collect();
            }
        } else if rng.random_ratio(2, 5) {
            let n = rng.random_range(1..=8);
            p.ipv6_ext = (0..n).map(|_| random_ext(rng)).collect();
        }
        if p.payload.is_empty() && rng.random_ratio(1, 3) {
            p.payload = bytes(rng, 40);
        }
        p
    }

    /// Fragmentation: first or later fragment with an id from the pool.
    fn fragment(&mut self, p: Pkt) -> Pkt {
        let id = *FRAG_IDS.choose(&mut self.rng).expect("pool");
        if self.rng.random_bool(0.5) {
            let p = p.first_fragment(id);
            if p.payload.is_empty() {
                p.payload(&[0x55; 24])
            } else {
                p
            }
        } else {
            let offset = self.rng.random_range(1..200);
            let more = self.rng.random_bool(0.5);
            let mut p = p.later_fragment(id, offset);
            p.frag = Fragment::Later { id, offset, more };
            p
        }
    }

    /// An inbound packet of the flow `k`, as the peer would send it.
    fn reply_on(&mut self, k: FlowKey, model: &HostTables) -> Pkt {
        let (local, remote) = (ip(k.local, k.family), ip(k.remote, k.family));
        let rng = &mut self.rng;
        match k.proto {
            PROTO_TCP => {
                let flags = tcp_flags(rng);
                let seq = model.flows.get(&k).map_or(0, |v| v.origin_seq);
                let ack = match rng.random_range(0..4) {
                    0 | 1 => seq.wrapping_add(1),
                    2 => seq,
                    _ => rng.random(),
                };
                Pkt::tcp(remote, local, k.remote_port, k.local_port, flags)
                    .seq(rng.random())
                    .ack(ack)
            }
            PROTO_UDP => Pkt::udp(remote, local, k.remote_port, k.local_port),
            _ if rng.random_ratio(4, 5) => {
                Pkt::echo_reply(remote, local, k.local_port, rng.random())
            }
            _ => Pkt::echo_request(remote, local, k.local_port, rng.random()),
        }
    }

    /// An outbound packet of the flow `k`, as the origin would send it.
    fn send_on(&mut self, k: FlowKey) -> Pkt {
        let (local, remote) = (ip(k.local, k.family), ip(k.remote, k.family));
        let rng = &mut self.rng;
        match k.proto {
            PROTO_TCP => Pkt::tcp(local, remote, k.local_port, k.remote_port, tcp_flags(rng))
                .seq(rng.random()),
            PROTO_UDP => Pkt::udp(local, remote, k.local_port, k.remote_port),
            _ => Pkt::echo_request(local, remote, k.local_port, rng.random()),
        }
    }

    fn random_tcp_udp(&mut self, inbound: bool) -> Pkt {
        let v6 = self.rng.random_bool(0.5);
        let (me, peer) = (local(v6), remote(&mut self.rng, v6));
        let (src, dst) = if inbound { (peer, me) } else { (me, peer) };
        let (sport, dport) = (port(&mut self.rng), port(&mut self.rng));
        if self.rng.random_bool(0.6) {
            let flags = tcp_flags(&mut self.rng);
            Pkt::tcp(src, dst, sport, dport, flags)
                .seq(self.rng.random())
                .ack(self.rng.random())
        } else {
            Pkt::udp(src, dst, sport, dport)
        }
    }

    fn random_icmp(&mut self) -> Pkt {
        let v6 = self.rng.random_bool(0.5);
        let (src, dst) = (remote(&mut self.rng, v6), local(v6));
        let rng = &mut self.rng;
        let ty = if rng.random_ratio(1, 5) {
            rng.random()
        } else if v6 {
            *[1u8, 2, 3, 4, 128, 129, 130, 133, 134, 135, 136, 137]
                .choose(rng)
                .expect("types")
        } else {
            *[0u8, 3, 4, 5, 8, 11, 12, 13].choose(rng).expect("types")
        };
        let id = *IDS.choose(rng).expect("pool");
        let [a, b] = id.to_be_bytes();
        let code = if rng.random_ratio(3, 4) {
            0
        } else {
            rng.random()
        };
        Pkt::icmp(src, dst, ty, code, [a, b, rng.random(), rng.random()]).payload(&bytes(rng, 48))
    }

    /// An ICMP error quoting a known flow (as the origin sent it) or a random packet.
    fn icmp_error(&mut self) -> Pkt {
        let inner = match self.known_flow() {
            Some(k) if self.rng.random_ratio(2, 3) => {
                let mut p = self.send_on(k);
                if self.rng.random_ratio(1, 10) {
                    // The reply direction instead.
                    std::mem::swap(&mut p.src, &mut p.dst);
                }
                p
            }
            _ => {
                let p = self.random_tcp_udp(false);
                if self.rng.random_ratio(1, 4) {
                    let v6 = !p.is_v4();
                    Pkt::echo_request(
                        local(v6),
                        p.dst,
                        *IDS.choose(&mut self.rng).expect("pool"),
                        1,
                    )
                } else {
                    p
                }
            }
        };
        let mut inner = inner;
        if self.rng.random_ratio(1, 6) {
            inner = self.fragment(inner);
        }
        if inner.is_v4() && self.rng.random_ratio(1, 10) {
            inner.ipv4_options = vec![1; 4 * self.rng.random_range(1..=4)];
        }
        if !inner.is_v4() && self.rng.random_ratio(1, 5) {
            inner.ipv6_ext = (0..self.rng.random_range(1..=7))
                .map(|_| random_ext(&mut self.rng))
                .collect();
        }
        let v6 = !inner.is_v4();
        let rng = &mut self.rng;
        let src = remote(rng, v6);
        let dst = if rng.random_ratio(9, 10) {
            local(v6)
        } else {
            remote(rng, v6)
        };
        let (ty, code) = match (v6, rng.random_range(0..6)) {
            (false, 0) => (3, 4),
            (false, 1) => (3, rng.random_range(0..16)),
            (false, 2) => (11, 0),
            (false, 3) => (12, 0),
            (true, 0) => (2, 0),
            (true, 1) => (1, rng.random_range(0..8)),
            (true, 2) => (3, 0),
            (true, 3) => (4, rng.random_range(0..3)),
            _ => (rng.random(), rng.random()),
        };
        Pkt::icmp_error(src, dst, ty, code, [0, 0, 0x05, 0xdc], &inner)
    }

    fn non_ip(&mut self) -> Vec<u8> {
        let rng = &mut self.rng;
        let tags: Vec<u16> = (0..rng.random_range(0..=3))
            .map(|_| rng.random_range(0..4096))
            .collect();
        match rng.random_range(0..3) {
            0 => {
                let arp = arp_request(LOCAL4, *REMOTES4.choose(rng).expect("pool"));
                raw_frame(&tags, 0x0806, &arp[14..])
            }
            1 => raw_frame(&tags, ETHERTYPE_LLDP, &bytes(rng, 60)),
            _ => raw_frame(&tags, rng.random(), &bytes(rng, 80)),
        }
    }

    /// A valid (unmutated) case.
    fn valid(&mut self, model: &HostTables) -> Case {
        let roll = self.rng.random_range(0..100);
        let (label, dir, frame) = match roll {
            0..22 => match self.known_flow() {
                Some(k) => {
                    let p = self.reply_on(k, model);
                    ("flow_reply", Dir::Ingress, self.decorate(p).bytes())
                }
                None => ("tcp_udp", Dir::Ingress, self.random_tcp_udp(true).bytes()),
            },
            22..36 => {
                let p = self.random_tcp_udp(true);
                ("tcp_udp", Dir::Ingress, self.decorate(p).bytes())
            }
            36..44 => {
                let p = self.random_icmp();
                ("icmp", Dir::Ingress, self.decorate(p).bytes())
            }
            44..56 => {
                let p = self.icmp_error();
                ("icmp_error", Dir::Ingress, self.decorate(p).bytes())
            }
            56..59 => {
                let v6 = self.rng.random_bool(0.5);
                let p = Pkt::dhcp_reply(remote(&mut self.rng, v6), local(v6));
                ("dhcp", Dir::Ingress, self.decorate(p).bytes())
            }
            59..69 => {
                let p = match self.known_flow() {
                    Some(k) if self.rng.random_bool(0.5) => self.reply_on(k, model),
                    _ => self.random_tcp_udp(true),
                };
                let p = self.fragment(p);
                ("fragment", Dir::Ingress, self.decorate(p).bytes())
            }
            69..72 => ("non_ip", Dir::Ingress, self.non_ip()),
            72..76 => {
                let v6 = self.rng.random_bool(0.5);
                let proto = self.rng.random();
                let header = bytes(&mut self.rng, 16);
                let p = Pkt::proto(remote(&mut self.rng, v6), local(v6), proto, &header);
                ("proto", Dir::Ingress, self.decorate(p).bytes())
            }
            76..79 => {
                let ty = self.rng.random_range(133..=137);
                let p = Pkt::ndp(*REMOTES6.choose(&mut self.rng).expect("pool"), LOCAL6, ty);
                ("ndp", Dir::Ingress, self.decorate(p).bytes())
            }
            _ => {
                let p = match (self.known_flow(), self.rng.random_range(0..10)) {
                    (Some(k), 0..3) => self.send_on(k),
                    (_, 3..5) => {
                        let v6 = self.rng.random_bool(0.5);
                        let id = *IDS.choose(&mut self.rng).expect("pool");
                        let peer = remote(&mut self.rng, v6);
                        if self.rng.random_ratio(4, 5) {
                            Pkt::echo_request(local(v6), peer, id, 1)
                        } else {
                            Pkt::echo_reply(local(v6), peer, id, 1)
                        }
                    }
                    _ => self.random_tcp_udp(false),
                };
                let p = if self.rng.random_ratio(1, 10) {
                    self.fragment(p)
                } else {
                    p
                };
                ("egress", Dir::Egress, self.decorate(p).bytes())
            }
        };
        Case {
            frame,
            dir,
            label: label.to_string(),
        }
    }

    /// A case for the cookie stage: an ACK for a SYN-ACK sent earlier (sometimes forged), or a
    /// SYN in one of the common option layouts to tcp/22 (listened on) or tcp/443 (not), now and
    /// then tagged, with IP options or cut short.
    fn cookie_case(&mut self) -> Case {
        let rng = &mut self.rng;
        if !self.pending.is_empty() && rng.random_bool(0.5) {
            let i = rng.random_range(0..self.pending.len());
            let mut frame = self.pending.swap_remove(i);
            let label = if rng.random_ratio(1, 4) {
                // Another acknowledgment number: a forged cookie.
                let l4 = if frame[12] == 0x86 { 54 } else { 34 };
                frame[l4 + 11] ^= 1 << rng.random_range(0..8);
                fix_tcp_checksum(&mut frame, l4);
                "cookie-ack+forged"
            } else {
                "cookie-ack"
            };
            return Case {
                frame,
                dir: Dir::Ingress,
                label: label.into(),
            };
        }
        let v6 = rng.random_bool(0.5);
        let remote = remote(rng, v6);
        let dport = if rng.random_ratio(3, 4) { 22 } else { 443 };
        let layouts: [&[u8]; 6] = [
            &lockdown_testbed::packets::LINUX_SYN_OPTIONS,
            &[2, 4, 0x05, 0x78, 1, 3, 3, 8, 1, 1, 4, 2],
            &[
                2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0,
            ],
            &[2, 4, 0x02, 0x18],
            &[],
            &[1, 1, 1, 1, 2, 4, 0x05, 0xb4],
        ];
        let opts = *layouts.choose(rng).expect("layouts");
        let mut p = Pkt::tcp(remote, local(v6), rng.random(), dport, TCP_SYN)
            .seq(rng.random())
            .tcp_options(opts);
        if rng.random_ratio(1, 8) {
            p = p.vlan(rng.random_range(1..4095));
        }
        if !v6 && rng.random_ratio(1, 10) {
            p.ipv4_options = vec![1, 1, 1, 0];
        }
        if rng.random_ratio(1, 10) {
            p.payload = bytes(rng, 40);
        }
        let mut frame = p.bytes();
        if rng.random_ratio(1, 10) {
            frame.truncate(rng.random_range(14..frame.len()));
        }
        Case {
            frame,
            dir: Dir::Ingress,
            label: "cookie-syn".into(),
        }
    }

    /// A case, mutated with some probability.
    fn case(&mut self, model: &HostTables) -> Case {
        if self.cookies && self.rng.random_ratio(1, 4) {
            return self.cookie_case();
        }
        let mut c = self.valid(model);
        let rng = &mut self.rng;
        let len = c.frame.len();
        let mutation = match rng.random_range(0..100) {
            0..4 if c.dir == Dir::Ingress => {
                // A jumbo frame: the kernel's test run puts all but the first page into
                // fragments, as a driver does with multi-buffer XDP.
                let target = rng.random_range(4_000..=9_100).max(len);
                c.frame.extend(bytes(rng, target - len));
                "jumbo"
            }
            0..62 => return c,
            62..74 => {
                c.frame.truncate(rng.random_range(0..len));
                "truncated"
            }
            74..88 => {
                // Mostly in the headers.
                let span = if rng.random_ratio(3, 4) {
                    len.min(80)
                } else {
                    len
                };
                for _ in 0..rng.random_range(1..=3) {
                    let bit = rng.random_range(0..span * 8);
                    c.frame[bit / 8] ^= 1 << (bit % 8);
                }
                "bitflip"
            }
            88..96 => {
                let span = len.min(100);
                let i = rng.random_range(0..span);
                c.frame[i] = rng.random();
                "byte"
            }
            96..98 => {
                // Bad IHL on an IPv4 packet (0x45 right after an ethertype).
                if let Some(i) =
                    (12..len.saturating_sub(2)).find(|&i| c.frame[i..i + 3] == [0x08, 0x00, 0x45])
                {
                    c.frame[i + 2] = 0x40 | rng.random_range(0..16);
                }
                "ihl"
            }
            _ => {
                c.frame = bytes(rng, 120);
                "garbage"
            }
        };
        c.label = format!("{}+{mutation}", c.label);
        c
    }
}

fn random_ext(rng: &mut StdRng) -> Ext {
    match rng.random_range(0..10) {
        0..3 => Ext::HopByHop {
            units: rng.random_range(0..3),
        },
        3..6 => Ext::DestOpts {
            units: rng.random_range(0..3),
        },
        6..8 => Ext::Routing {
            units: rng.random_range(0..2),
        },
        8 => Ext::Ah {
            units: rng.random_range(1..5),
        },
        _ => Ext::Fragment {
            offset: if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(1..100)
            },
            more: rng.random_bool(0.5),
            id: *FRAG_IDS.choose(rng).expect("pool"),
        },
    }
}

type FlowEntry = (FlowKey, FlowValue);
type FragEntry = (FragKey, FragValue);

/// Seeds the flow and fragment tables for an epoch: entries in every state, live and expired
/// (`t` is the unit timeout in seconds: an entry idle for 1.5 t is live under 2 t and expired
/// under t), and some with a state byte that is no state.
fn seed_tables(rng: &mut StdRng, now: u64, t: u64) -> (Vec<FlowEntry>, Vec<FragEntry>) {
    let ns = 1_000_000_000;
    let age = |rng: &mut StdRng| match rng.random_range(0..10) {
        0..7 => now,
        7..9 => now - 3 * t * ns / 2,
        _ => now - 3 * t * ns,
    };
    let mut flows = Vec::new();
    for _ in 0..40 {
        let v6 = rng.random_bool(0.5);
        let proto = *[PROTO_TCP, PROTO_TCP, PROTO_UDP, PROTO_ICMP]
            .choose(rng)
            .expect("protos");
        let me = if rng.random_ratio(9, 10) {
            local(v6)
        } else {
            remote(rng, v6)
        };
        let peer = remote(rng, v6);
        let (proto, local_port, remote_port, state) = match proto {
            PROTO_TCP => (PROTO_TCP, port(rng), port(rng), rng.random_range(1..=4)),
            PROTO_UDP => (PROTO_UDP, port(rng), port(rng), rng.random_range(5..=6)),
            _ => (
                if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
                *IDS.choose(rng).expect("pool"),
                0,
                7,
            ),
        };
        let state = if rng.random_ratio(1, 10) {
            *[0u8, 8, 99, rng.random_range(1..=7)]
                .choose(rng)
                .expect("s")
        } else {
            state
        };
        let key = lockdown_testbed::testrun::flow_key(me, local_port, peer, remote_port, proto);
        let last = age(rng);
        let value = FlowValue {
            created_ns: last,
            last_seen_ns: last,
            origin_seq: rng.random(),
            state,
            flags: rng.random_range(0..2),
            _pad: 0,
        };
        flows.push((key, value));
    }
    let mut frags = Vec::new();
    for _ in 0..12 {
        let v6 = rng.random_bool(0.5);
        let proto = *[
            PROTO_TCP,
            PROTO_UDP,
            if v6 { PROTO_ICMPV6 } else { PROTO_ICMP },
        ]
        .choose(rng)
        .expect("p");
        let key = lockdown_testbed::testrun::frag_key(
            remote(rng, v6),
            local(v6),
            *FRAG_IDS.choose(rng).expect("pool"),
            proto,
        );
        let value = FragValue {
            first_seen_ns: age(rng),
            reason: Counter::PassAllowed as u32,
            _pad: 0,
        };
        frags.push((key, value));
    }
    (flows, frags)
}

/// A random blocklist for an epoch: none half the time, else one to three entries covering some
/// of the remotes (whole addresses or prefixes), in force or long expired.
fn epoch_deny(rng: &mut StdRng) -> BTreeMap<DenyNet, u64> {
    let mut out = BTreeMap::new();
    if rng.random_bool(0.5) {
        return out;
    }
    let t = now();
    for _ in 0..rng.random_range(1..=3) {
        let v6 = rng.random_bool(0.5);
        let addr = remote(rng, v6);
        let len = match (addr.is_ipv4(), rng.random_bool(0.6)) {
            (true, true) => 32,
            (true, false) => 24,
            (false, true) => 128,
            (false, false) => 48,
        };
        let net = DenyNet::parse(&format!("{addr}/{len}")).expect("a CIDR");
        let expires = *[FOREVER, t + 3_600_000_000_000, 1]
            .choose(rng)
            .expect("choices");
        out.insert(net, expires);
    }
    out
}

/// A random config for an epoch: flags, and each timeout `t` or `2t` seconds.
fn epoch_config(rng: &mut StdRng, t: u32) -> Config {
    let mut flags = 0;
    if rng.random_ratio(1, 5) {
        flags |= FLAG_MONITOR;
    }
    if rng.random_ratio(7, 10) {
        flags |= FLAG_PASS_DHCP;
    }
    if rng.random_ratio(7, 10) {
        flags |= FLAG_PASS_RA;
    }
    let mut c = uniform_timeouts(flags, t);
    let mut pick = || if rng.random_bool(0.5) { t } else { 2 * t };
    let to = &mut c.timeouts;
    to.tcp_syn_sent = pick();
    to.tcp_established = pick();
    to.tcp_closing = pick();
    to.tcp_closed = pick();
    to.udp_unreplied = pick();
    to.udp_replied = pick();
    to.icmp = pick();
    to.fragment = pick();
    c
}

fn flow_summary(v: Option<&FlowValue>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => format!(
            "state {} ({}), origin_seq {}, flags {}",
            v.state,
            FlowState::from_u8(v.state).map_or("-", FlowState::name),
            v.origin_seq,
            v.flags
        ),
    }
}

fn same_flow(a: Option<&FlowValue>, b: Option<&FlowValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a.state, a.origin_seq, a.flags) == (b.state, b.origin_seq, b.flags),
        _ => false,
    }
}

fn same_frag(a: Option<&FragValue>, b: Option<&FragValue>) -> bool {
    a.map(|v| v.reason) == b.map(|v| v.reason)
}

struct Runner {
    dp: Datapath,
    model: HostTables,
    seed: u64,
    epoch: usize,
    runs: usize,
    model_only: usize,
    disagreements: Vec<String>,
    /// (kind of disagreement, label) → count.
    kinds: BTreeMap<String, usize>,
    /// Reasons seen, to show coverage.
    reasons: BTreeMap<&'static str, usize>,
    created: usize,
}

impl Runner {
    fn report(&mut self, kind: String, case: &Case, detail: String) {
        *self.kinds.entry(kind.clone()).or_default() += 1;
        if self.disagreements.len() < MAX_REPORTED {
            self.disagreements.push(format!(
                "DISAGREEMENT {kind}\n  seed {:#x}, epoch {}, run {}, {:?} case {:?}, config flags {:#x}\n  packet: {}\n{detail}",
                self.seed,
                self.epoch,
                self.runs,
                case.dir,
                case.label,
                self.model.config.flags,
                hex(&case.frame),
            ));
        }
        // Carry on from the kernel's tables.
        let entries = self.dp.flow_entries();
        self.model
            .load_flows(entries.into_iter().map(|e| (e.table, e.key, e.value)));
        self.model.frags = self.dp.frag_entries().into_iter().collect();
    }

    fn run(&mut self, case: &Case, generator: &mut Gen) {
        if case.frame.len() < MIN_TEST_RUN_LEN {
            // The kernel refuses such test runs; the model must find them malformed.
            self.model_only += 1;
            let now = now();
            match case.dir {
                Dir::Ingress => {
                    let d = self.model.ingress(&case.frame, now);
                    if d.reason != Counter::DropMalformed {
                        let detail =
                            format!("  model: {d:?} for a frame shorter than an Ethernet header");
                        self.report("short frame not malformed".into(), case, detail);
                    }
                }
                Dir::Egress => {
                    if let Some(c) = self.model.egress(&case.frame, now) {
                        let detail =
                            format!("  model: {c:?} for a frame shorter than an Ethernet header");
                        self.report("short frame learnt".into(), case, detail);
                    }
                }
            }
            return;
        }
        self.runs += 1;
        let now = now();
        let mut detail = String::new();
        let mut kind = None;
        match case.dir {
            Dir::Ingress => {
                let mut frame = Frame {
                    bytes: case.frame.clone(),
                    meta: None,
                };
                let want: Decision = self.model.ingress_frame(&mut frame, now);
                let (action, reason, out) = self.dp.ingress_out(&case.frame);
                *self.reasons.entry(reason.name()).or_default() += 1;
                let want_action = match want.action() {
                    Action::Pass => XDP_PASS,
                    Action::Drop => XDP_DROP,
                    Action::Transmit => XDP_TX,
                };
                if action == XDP_TX && want_action == XDP_TX {
                    if out == frame.bytes {
                        generator.pending.push(ack_for(&out, 0));
                    } else {
                        kind = Some(format!("SYN-ACK bytes [{}]", case.label));
                        let _ = writeln!(
                            detail,
                            "  bpf:   {}\n  model: {}",
                            hex(&out),
                            hex(&frame.bytes)
                        );
                    }
                }
                if (action, reason) != (want_action, want.reason) {
                    kind = Some(format!(
                        "ingress: bpf {} vs model {} [{}]",
                        reason.name(),
                        want.reason.name(),
                        case.label
                    ));
                    let _ = writeln!(detail, "  bpf:   action {action}, reason {}", reason.name());
                    let _ = writeln!(
                        detail,
                        "  model: action {want_action}, reason {}",
                        want.reason.name()
                    );
                    let _ = writeln!(
                        detail,
                        "  regression line for verdict.rs `model_regressions` (config flags, model's verdict):\n    (\"{}\", {:#x}, {:?}),",
                        hex(&case.frame),
                        self.model.config.flags,
                        want.reason
                    );
                }
            }
            Dir::Egress => {
                let want = self.model.egress(&case.frame, now);
                let Some((ret, created)) = self.dp.try_egress_counted(&case.frame) else {
                    // The kernel refuses a TC test run of an IP frame without a whole IP header.
                    self.runs -= 1;
                    self.model_only += 1;
                    if want.is_some() {
                        let detail =
                            format!("  model: {want:?} for a frame without a whole IP header");
                        self.report("egress: short frame learnt".into(), case, detail);
                    }
                    return;
                };
                self.created += usize::from(created);
                if ret != TC_ACT_UNSPEC || created != want.is_some() {
                    kind = Some(format!(
                        "egress: bpf created {created} vs model {} [{}]",
                        want.is_some(),
                        case.label
                    ));
                    let _ = writeln!(detail, "  bpf:   action {ret}, created {created}");
                    let _ = writeln!(detail, "  model: {want:?}");
                }
            }
        }
        let mut touched = self.model.touched_flows.clone();
        touched.dedup();
        // Every flow the model looked at, after the packet: context for a disagreement.
        let mut flows = String::new();
        for (table, k) in &touched {
            let bpf = self.dp.flow_in(*table, k);
            let model = self.model.table(*table).get(k);
            if bpf.is_some() {
                generator.learn(*k);
            }
            let same = same_flow(bpf.as_ref(), model);
            if !same {
                kind.get_or_insert_with(|| format!("{:?} flow entry [{}]", case.dir, case.label));
            }
            let _ = writeln!(
                flows,
                "  {table:?} flow {k:?}{}\n    bpf:   {}\n    model: {}",
                if same { "" } else { " DIFFERS" },
                flow_summary(bpf.as_ref()),
                flow_summary(model)
            );
        }
        detail.push_str(&flows);
        let touched = self.model.touched_frags.clone();
        for k in &touched {
            let bpf = self.dp.frag(k);
            let model = self.model.frags.get(k);
            if !same_frag(bpf.as_ref(), model) {
                kind.get_or_insert_with(|| {
                    format!("{:?} fragment entry [{}]", case.dir, case.label)
                });
                let _ = writeln!(
                    detail,
                    "  fragment {k:?}\n    bpf:   {bpf:?}\n    model: {model:?}"
                );
            }
        }
        if let Some(kind) = kind {
            self.report(kind, case, detail);
        }
    }

    /// Compares the whole flow and fragment tables.
    fn compare_tables(&mut self) {
        let bpf: HashMap<(FlowTable, FlowKey), FlowValue> = self
            .dp
            .flow_entries()
            .into_iter()
            .map(|e| ((e.table, e.key), e.value))
            .collect();
        let model: HashMap<(FlowTable, FlowKey), FlowValue> = self
            .model
            .flow_entries()
            .map(|(t, k, v)| ((t, k), v))
            .collect();
        let keys: HashSet<&(FlowTable, FlowKey)> = bpf.keys().chain(model.keys()).collect();
        let mut bad = Vec::new();
        for k in keys {
            if !same_flow(bpf.get(k), model.get(k)) {
                bad.push(format!(
                    "  flow {k:?}\n    bpf:   {}\n    model: {}",
                    flow_summary(bpf.get(k)),
                    flow_summary(model.get(k))
                ));
            }
        }
        let bpf_frags: HashMap<FragKey, FragValue> = self.dp.frag_entries().into_iter().collect();
        let keys: HashSet<&FragKey> = bpf_frags.keys().chain(self.model.frags.keys()).collect();
        for k in keys {
            if !same_frag(bpf_frags.get(k), self.model.frags.get(k)) {
                bad.push(format!(
                    "  fragment {k:?}: bpf {:?}, model {:?}",
                    bpf_frags.get(k),
                    self.model.frags.get(k)
                ));
            }
        }
        if !bad.is_empty() {
            let case = Case {
                frame: Vec::new(),
                dir: Dir::Ingress,
                label: "end of epoch".into(),
            };
            let n = bad.len();
            bad.truncate(10);
            self.report(
                format!("tables differ at the end of an epoch ({n} entries)"),
                &case,
                bad.join("\n"),
            );
        }
    }

    /// Resets both sides to the same fresh tables and config.
    fn reset(&mut self, rng: &mut StdRng, t: u64) -> Gen {
        let mut config = epoch_config(rng, t as u32);
        let deny = epoch_deny(rng);
        if !deny.is_empty() {
            config.flags |= FLAG_DENY;
        }
        if deny.keys().any(|n| !n.is_host()) {
            config.flags |= FLAG_DENY_NETS;
        }
        self.dp.set_config(&config);
        self.model.config = config;
        self.dp.set_deny(&deny);
        self.model.deny = deny;
        // Half the epochs limit tcp/22 to one connection per source an hour: the second SYN
        // from a source is refused, and no clock difference between the two sides matters.
        let rates = if rng.random_bool(0.5) {
            BTreeMap::from([(
                PortSpec::parse("tcp/22").expect("a spec"),
                RateSpec::parse_rate("1/h", 1).expect("a rate"),
            )])
        } else {
            BTreeMap::new()
        };
        let seed = rng.random::<u64>() | 1;
        let all = rules(RULES);
        self.dp.set_rates(&all, &rates, seed);
        self.model
            .set_rates(&all, &rates, seed)
            .unwrap_or_else(|e| panic!("the rates: {e}"));
        // SYN cookies: on in two epochs of five, auto with a threshold of 0 (every SYN a flood)
        // in one, off otherwise; fresh keys and detectors each epoch.
        let mode = match rng.random_range(0..5) {
            0 | 1 => MODE_ON,
            2 => MODE_AUTO,
            _ => MODE_OFF,
        };
        let cookie = CookieConfig {
            keys: [[rng.random(), rng.random()], [rng.random(), rng.random()]],
            mode,
            threshold: 0,
            key_gen: rng.random_range(0..4),
            ..CookieConfig::OFF
        };
        self.dp.set_cookie_config(&cookie);
        self.dp.clear_syn_ports();
        self.model.cookie = Some(cookie);
        self.model.syn_ports.clear();
        self.dp.clear_flows();
        self.dp.clear_frags();
        let (flows, frags) = seed_tables(rng, now(), t);
        for (k, v) in &flows {
            self.dp.set_flow(k, v);
        }
        for (k, v) in &frags {
            self.dp.set_frag(k, v);
        }
        self.model
            .load_flows(flows.iter().map(|(k, v)| (v.table(), *k, *v)));
        self.model.frags = frags.iter().copied().collect();
        let known: Vec<FlowKey> = flows.iter().map(|(k, _)| *k).collect();
        Gen {
            rng: StdRng::seed_from_u64(rng.random()),
            known_set: known.iter().copied().collect(),
            known,
            cookies: mode != MODE_OFF && self.model.cookies,
            pending: Vec::new(),
        }
    }
}

#[test]
fn model_agrees_with_bpf() {
    model_agrees(ingress_under_test(), DEFAULT_CASES);
}

/// The single-buffer variant (generic XDP's, and native XDP's before Linux 5.18) against the same
/// model, with a quarter of the cases: the two variants share every decision but the entry point.
#[test]
fn model_agrees_with_the_linear_variant() {
    model_agrees(PROG_INGRESS_LINEAR, DEFAULT_CASES / 4);
}

/// Runs in a network namespace of its own, where a listener on tcp/22 is what the cookie
/// program's socket lookups find (the model's `listeners`).
fn model_agrees(ingress: &'static str, default_cases: usize) {
    in_private_netns("model_vs_bpf", || {
        let _listener = TcpListener::bind("[::]:22").expect("listening on tcp/22");
        model_agrees_here(ingress, default_cases);
    });
}

fn model_agrees_here(ingress: &'static str, default_cases: usize) {
    let seed = env_u64("LOCKDOWN_MODEL_SEED", DEFAULT_SEED);
    let cases = usize::try_from(env_u64("LOCKDOWN_MODEL_CASES", default_cases as u64))
        .expect("case count fits");
    println!(
        "model_vs_bpf ({ingress}): seed {seed:#x}, {cases} test runs (LOCKDOWN_MODEL_SEED / LOCKDOWN_MODEL_CASES to change)"
    );
    let started = Instant::now();

    // The unit timeout: long against an epoch's duration, short enough that entries can be aged
    // past it on this machine's uptime.
    let uptime = now() / 1_000_000_000;
    let t = (uptime / 4).min(600);
    assert!(
        t >= 10,
        "this machine booted {uptime} s ago; the model test needs 40 s of uptime"
    );

    let mut rng = StdRng::seed_from_u64(seed);
    let first = epoch_config(&mut rng, t as u32);
    let dp = Datapath::with_ingress(first, RULES, Some(MAX_FLOWS), ingress);
    let mut model = lockdown_tests::model::snapshot(&dp);
    model.cookies = ingress == PROG_INGRESS;
    model.listeners.insert(22);
    // The kernel's port table and trie hold exactly what `compile` makes of the rules.
    let compiled = HostTables::from_rules(first, &rules(RULES))
        .unwrap_or_else(|e| panic!("compiling the rules: {e}"));
    assert!(
        model.ports == compiled.ports,
        "the port table differs from compile()"
    );
    assert_eq!(
        model.cidrs, compiled.cidrs,
        "the CIDR trie differs from compile()"
    );
    assert_eq!(model.config, first, "config read back");

    let mut r = Runner {
        dp,
        model,
        seed,
        epoch: 0,
        runs: 0,
        model_only: 0,
        disagreements: Vec::new(),
        kinds: BTreeMap::new(),
        reasons: BTreeMap::new(),
        created: 0,
    };

    // First, every truncation of one valid packet of each kind.
    let mut g = r.reset(&mut rng, t);
    let mut templates = Vec::new();
    for _ in 0..60 {
        let c = g.valid(&r.model);
        templates.push(c);
    }
    for c in &templates {
        for len in 0..=c.frame.len() {
            let t = Case {
                frame: c.frame[..len].to_vec(),
                dir: c.dir,
                label: format!("{}+cut{len}", c.label),
            };
            r.run(&t, &mut g);
        }
    }
    r.compare_tables();
    let sweep = r.runs;

    // Then random cases, epoch by epoch.
    while r.runs < cases + sweep {
        r.epoch += 1;
        let mut g = r.reset(&mut rng, t);
        for _ in 0..EPOCH {
            let c = g.case(&r.model);
            r.run(&c, &mut g);
        }
        r.compare_tables();
    }

    let elapsed = started.elapsed();
    println!(
        "model_vs_bpf: {} test runs ({sweep} in the truncation sweep) + {} model-only short frames in {:.1?}, {} epochs, {} flows created by egress",
        r.runs, r.model_only, elapsed, r.epoch, r.created
    );
    println!("ingress reasons seen: {:?}", r.reasons);
    let missing: Vec<&str> = Counter::ALL
        .iter()
        .filter(|c| lockdown_testbed::testrun::is_reason(**c) && !r.reasons.contains_key(c.name()))
        // The single-buffer program has no cookie stage.
        .filter(|c| ingress == PROG_INGRESS || !COOKIE_REASONS.contains(c))
        .map(|c| c.name())
        .collect();
    assert!(
        missing.is_empty(),
        "the generator never reached {missing:?}"
    );
    if !r.disagreements.is_empty() {
        for d in &r.disagreements {
            eprintln!("{d}");
        }
        let total: usize = r.kinds.values().sum();
        let mut summary = String::new();
        for (k, n) in &r.kinds {
            let _ = writeln!(summary, "  {n:6}  {k}");
        }
        panic!(
            "{total} disagreements between the model and the BPF programs (seed {seed:#x}); first {} printed above. By kind:\n{summary}",
            r.disagreements.len()
        );
    }
}

/// Recomputes the TCP checksum of an untagged IPv4 or IPv6 frame whose TCP header is at `l4`.
fn fix_tcp_checksum(frame: &mut [u8], l4: usize) {
    frame[l4 + 16] = 0;
    frame[l4 + 17] = 0;
    let v6 = l4 == 54;
    let tcp_len = frame.len() - l4;
    let mut sum: u32 = 6 + tcp_len as u32;
    let addrs = if v6 { &frame[22..54] } else { &frame[26..34] };
    for c in addrs.chunks(2).chain(frame[l4..].chunks(2)) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = (!(sum as u16)).to_be_bytes();
    frame[l4 + 16] = c[0];
    frame[l4 + 17] = c[1];
}
