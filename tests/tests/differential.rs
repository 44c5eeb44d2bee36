//! The differential suite: one scenario list run against two origins — one protected by the seed's
//! iptables chain plus its ip6tables twin (which also accepts NDP), one protected by lockdown — and
//! the same outcome asserted scenario by scenario. Where lockdown is deliberately different (a
//! spoofed flood creates no state; DHCP replies pass) the difference is asserted explicitly.
//!
//! The same scenarios also show, with real sockets, that related ICMP errors lower the kernel's
//! path MTU for a tracked flow (and an error quoting an untracked flow does not), and that 4000-byte
//! UDP replies arrive whole although they travel as fragments.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    thread,
    time::Duration,
};

use lockdown_testbed::{
    cli::Lockdown,
    flood::syn_flood,
    netns::ns_must,
    packets::{Pkt, ipv4_checksum},
    pair::{Family, NetPair, ORIGIN_IF, ORIGIN_V4, PEER_V4},
    traffic::{
        DROP_TIMEOUT, OK_TIMEOUT, Serve, TcpServer, UdpEcho, exchange, ping, tcp_connect,
        tcp_fetch, udp_query,
    },
};

/// What protects the origin.
enum Guard {
    Iptables,
    Lockdown(Lockdown),
}

/// Fields drop in order: the guard (`lockdown down`) before the namespaces it lives in.
struct Side {
    name: &'static str,
    guard: Guard,
    pair: NetPair,
}

const SEED_V4: &[&str] = &[
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
    "-A INPUT -j DROP",
];

/// The ip6tables twin: the same chain, plus neighbour discovery (ICMPv6 133–137), without which
/// IPv6 stops working at all.
const SEED_V6: &[&str] = &[
    "-A INPUT -i lo -j ACCEPT",
    "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    "-A INPUT -p ipv6-icmp --icmpv6-type 133 -j ACCEPT",
    "-A INPUT -p ipv6-icmp --icmpv6-type 134 -j ACCEPT",
    "-A INPUT -p ipv6-icmp --icmpv6-type 135 -j ACCEPT",
    "-A INPUT -p ipv6-icmp --icmpv6-type 136 -j ACCEPT",
    "-A INPUT -p ipv6-icmp --icmpv6-type 137 -j ACCEPT",
    "-A INPUT -p tcp --dport 22 -j ACCEPT",
    "-A INPUT -j DROP",
];

fn tables(ns: &str, v6: bool, rule: &str) {
    let prog = if v6 { "ip6tables" } else { "iptables" };
    let args: Vec<&str> = rule.split_whitespace().collect();
    ns_must(ns, prog, &args);
}

impl Side {
    fn iptables() -> Self {
        let pair = NetPair::new("dk");
        for rule in SEED_V4 {
            tables(&pair.origin, false, rule);
        }
        for rule in SEED_V6 {
            tables(&pair.origin, true, rule);
        }
        Self {
            name: "iptables",
            pair,
            guard: Guard::Iptables,
        }
    }

    fn lockdown() -> Self {
        let pair = NetPair::new("dl");
        let ld = Lockdown::new(&pair.origin, ORIGIN_IF, "diff");
        ld.up(&[]);
        Self {
            name: "lockdown",
            pair,
            guard: Guard::Lockdown(ld),
        }
    }

    fn origin(&self) -> &str {
        &self.pair.origin
    }

    fn peer(&self) -> &str {
        &self.pair.peer
    }

    /// Opens (`open`) or closes `tcp/port` for new connections.
    fn set_port(&self, port: u16, open: bool) {
        match &self.guard {
            Guard::Iptables => {
                let rule = format!(
                    "{} -p tcp --dport {port} -j ACCEPT",
                    if open { "-I INPUT 3" } else { "-D INPUT" }
                );
                for v6 in [false, true] {
                    tables(self.origin(), v6, &rule);
                }
            }
            Guard::Lockdown(ld) => {
                let verb = if open { "add" } else { "del" };
                ld.must(&["allow", verb, &format!("tcp/{port}")]);
            }
        }
    }

    /// Tracked state: lockdown's live flows, or the kernel's conntrack entries.
    fn state_entries(&self) -> u64 {
        match &self.guard {
            Guard::Iptables => ns_must(
                self.origin(),
                "cat",
                &["/proc/sys/net/netfilter/nf_conntrack_count"],
            )
            .trim()
            .parse()
            .expect("nf_conntrack_count is a number"),
            Guard::Lockdown(ld) => ld.flows(),
        }
    }
}

fn sa(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

// ---- scenarios: each returns whether the traffic got through ----

fn inbound_tcp(side: &Side, fam: Family, port: u16) -> bool {
    let _server = TcpServer::start(side.origin(), sa(fam.any(), port), Serve::Echo);
    tcp_connect(side.peer(), sa(fam.origin(), port), DROP_TIMEOUT).is_ok()
}

fn inbound_udp(side: &Side, fam: Family) -> bool {
    let _echo = UdpEcho::start(side.origin(), sa(fam.any(), 5353));
    udp_query(side.peer(), sa(fam.origin(), 5353), b"hello?", DROP_TIMEOUT).is_ok()
}

fn inbound_ping(side: &Side, fam: Family) -> bool {
    ping(side.peer(), fam.origin())
}

fn outbound_tcp_1mb(side: &Side, fam: Family) -> bool {
    const SIZE: usize = 1 << 20;
    let _server = TcpServer::start(side.peer(), sa(fam.any(), 8443), Serve::Bytes(SIZE));
    tcp_fetch(side.origin(), sa(fam.peer(), 8443), OK_TIMEOUT).is_ok_and(|d| d.len() == SIZE)
}

fn outbound_udp(side: &Side, fam: Family) -> bool {
    let _echo = UdpEcho::start(side.peer(), sa(fam.any(), 5300));
    udp_query(side.origin(), sa(fam.peer(), 5300), b"query", OK_TIMEOUT)
        .is_ok_and(|r| r == b"query")
}

fn outbound_ping(side: &Side, fam: Family) -> bool {
    ping(side.origin(), fam.peer())
}

/// The origin sends a small query; the peer answers with a 4000-byte datagram, which the peer's
/// kernel fragments (MTU 1500). Whether it arrives whole at the origin's socket.
fn fragmented_reply(side: &Side, fam: Family) -> bool {
    const SIZE: usize = 4000;
    let server =
        lockdown_testbed::netns::in_ns(side.peer(), move || UdpSocket::bind(sa(fam.any(), 5400)))
            .expect("binding the big-reply server");
    server.set_read_timeout(Some(OK_TIMEOUT)).expect("timeout");
    let t = thread::spawn(move || {
        let mut buf = [0u8; 64];
        if let Ok((_, from)) = server.recv_from(&mut buf) {
            let reply: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
            let _ = server.send_to(&reply, from);
        }
    });
    let got = lockdown_testbed::netns::in_ns(side.origin(), move || -> io::Result<usize> {
        let s = UdpSocket::bind(sa(fam.any(), 0))?;
        s.set_read_timeout(Some(OK_TIMEOUT))?;
        s.send_to(b"big please", sa(fam.peer(), 5400))?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(
            if buf[..n]
                .iter()
                .enumerate()
                .all(|(i, b)| *b == (i % 251) as u8)
            {
                n
            } else {
                0
            },
        )
    });
    let _ = t.join();
    got.is_ok_and(|n| n == SIZE)
}

/// The route MTU the origin's kernel holds for the peer, if it has lowered it.
fn cached_mtu(side: &Side, fam: Family) -> Option<u32> {
    let peer = fam.peer().to_string();
    let out = ns_must(side.origin(), "ip", &["route", "get", &peer]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == "mtu")
        .and_then(|w| w[1].parse().ok())
}

/// Sends, from the peer, an ICMP "fragmentation needed" (v4) or "packet too big" (v6) with MTU
/// `mtu`, quoting a UDP datagram from the origin's `lport` to the peer's `pport`.
fn send_pmtu_error(side: &Side, fam: Family, lport: u16, pport: u16, mtu: u16) {
    let origin = fam.origin();
    let peer = fam.peer();
    lockdown_testbed::netns::in_ns(side.peer(), move || {
        // The datagram the origin sent (or, for an untracked flow, did not send), as quoted.
        let quoted = Pkt::udp(origin, peer, lport, pport)
            .payload(&[0; 1400])
            .quote();
        let (domain, proto, mut msg) = if origin.is_ipv4() {
            // Type 3 code 4, checksum, unused, next-hop MTU.
            let mut m = vec![3u8, 4, 0, 0, 0, 0];
            m.extend_from_slice(&mtu.to_be_bytes());
            (libc::AF_INET, libc::IPPROTO_ICMP, m)
        } else {
            // Type 2 (packet too big), code 0, checksum (the kernel fills it in), MTU.
            let mut m = vec![2u8, 0, 0, 0];
            m.extend_from_slice(&u32::from(mtu).to_be_bytes());
            (libc::AF_INET6, libc::IPPROTO_ICMPV6, m)
        };
        msg.extend_from_slice(&quoted);
        if domain == libc::AF_INET {
            let sum = ipv4_checksum(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        // SAFETY: plain socket(2); checked below.
        let raw = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(raw >= 0, "raw ICMP socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sent = match origin {
            IpAddr::V4(o) => {
                // SAFETY: all-zero sockaddr_in is valid.
                let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                to.sin_family = libc::AF_INET as u16;
                to.sin_addr.s_addr = u32::from_ne_bytes(o.octets());
                // SAFETY: buffers valid for the call.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        msg.as_ptr().cast(),
                        msg.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    )
                }
            }
            IpAddr::V6(o) => {
                // SAFETY: all-zero sockaddr_in6 is valid.
                let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                to.sin6_family = libc::AF_INET6 as u16;
                to.sin6_addr.s6_addr = o.octets();
                // SAFETY: buffers valid for the call.
                unsafe {
                    libc::sendto(
                        fd.as_raw_fd(),
                        msg.as_ptr().cast(),
                        msg.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_in6>() as u32,
                    )
                }
            }
        };
        assert!(
            sent >= 0,
            "sending the ICMP error: {}",
            io::Error::last_os_error()
        );
    });
}

/// The origin keeps a UDP socket (bound, unconnected) that has sent to the peer's port 5500. The
/// peer then sends a PMTU error quoting an *untracked* flow (to port 5501: the origin never sent
/// there, but its socket would match) and then one quoting the tracked flow. Returns whether each
/// lowered the route MTU: (unrelated, related).
fn pmtu(side: &Side, fam: Family) -> (bool, bool) {
    let _echo = UdpEcho::start(side.peer(), sa(fam.any(), 5500));
    let sock =
        lockdown_testbed::netns::in_ns(side.origin(), move || UdpSocket::bind(sa(fam.any(), 0)))
            .expect("bind");
    sock.set_read_timeout(Some(OK_TIMEOUT)).expect("timeout");
    sock.send_to(b"track me", sa(fam.peer(), 5500))
        .expect("send");
    let mut buf = [0u8; 64];
    sock.recv_from(&mut buf)
        .expect("the peer's echo must come back");
    let lport = sock.local_addr().expect("local addr").port();
    assert_eq!(
        cached_mtu(side, fam),
        None,
        "{}: no PMTU lowered yet",
        side.name
    );

    send_pmtu_error(side, fam, lport, 5501, 1300);
    thread::sleep(Duration::from_millis(300));
    let unrelated = cached_mtu(side, fam).is_some();

    send_pmtu_error(side, fam, lport, 5500, 1300);
    thread::sleep(Duration::from_millis(300));
    let related = cached_mtu(side, fam) == Some(1300);
    drop(sock);
    (unrelated, related)
}

/// Opens tcp/8080, connects, closes the port again, and checks that the open connection keeps
/// exchanging data while a new connection is refused: (old still works, new refused).
fn port_removed_while_open(side: &Side, fam: Family) -> (bool, bool) {
    let _server = TcpServer::start(side.origin(), sa(fam.any(), 8080), Serve::Echo);
    side.set_port(8080, true);
    let mut conn = tcp_connect(side.peer(), sa(fam.origin(), 8080), OK_TIMEOUT)
        .expect("allowed port connects");
    exchange(&mut conn, b"before").expect("exchange before removal");
    side.set_port(8080, false);
    let old = (0..5).all(|i| exchange(&mut conn, format!("after {i}").as_bytes()).is_ok());
    let new_refused = tcp_connect(side.peer(), sa(fam.origin(), 8080), DROP_TIMEOUT).is_err();
    (old, new_refused)
}

/// A DHCPv4 reply (udp 67 → 68) from the peer: whether a client socket on port 68 receives it.
fn dhcp_reply(side: &Side) -> bool {
    let client = lockdown_testbed::netns::in_ns(side.origin(), || {
        UdpSocket::bind(sa(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 68))
    })
    .expect("bind 68");
    client
        .set_read_timeout(Some(DROP_TIMEOUT))
        .expect("timeout");
    let server = lockdown_testbed::netns::in_ns(side.peer(), || {
        UdpSocket::bind(sa(IpAddr::V4(PEER_V4), 67))
    })
    .expect("bind 67");
    server
        .send_to(b"DHCPOFFER", sa(IpAddr::V4(ORIGIN_V4), 68))
        .expect("send");
    let mut buf = [0u8; 64];
    client.recv_from(&mut buf).is_ok()
}

/// Entries created by a bounded spoofed SYN flood to port 22.
fn flood_state(side: &Side) -> (u64, u64) {
    let _ssh = TcpServer::start(
        side.origin(),
        sa(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 22),
        Serve::Echo,
    );
    let before = side.state_entries();
    let report = syn_flood(&side.pair, ORIGIN_V4, 22, 2_000, Duration::from_secs(10));
    assert_eq!(
        report.sent, 2_000,
        "{}: the flood must be sent whole",
        side.name
    );
    thread::sleep(Duration::from_millis(300));
    (before, side.state_entries())
}

#[derive(Debug, PartialEq, Eq)]
struct Outcomes(Vec<(String, bool)>);

fn scenarios(side: &Side) -> Outcomes {
    let mut out = Vec::new();
    let mut record = |name: String, v: bool| {
        eprintln!("{:>9}: {name}: {v}", side.name);
        out.push((name, v));
    };
    for fam in [Family::V4, Family::V6] {
        let f = format!("{fam:?}");
        record(
            format!("{f} inbound tcp/22 connects"),
            inbound_tcp(side, fam, 22),
        );
        record(
            format!("{f} inbound tcp/8081 (listening) connects"),
            inbound_tcp(side, fam, 8081),
        );
        record(
            format!("{f} inbound udp/5353 answered"),
            inbound_udp(side, fam),
        );
        record(
            format!("{f} inbound ping answered"),
            inbound_ping(side, fam),
        );
        record(
            format!("{f} outbound tcp carries 1 MB back"),
            outbound_tcp_1mb(side, fam),
        );
        record(
            format!("{f} outbound udp query answered"),
            outbound_udp(side, fam),
        );
        record(
            format!("{f} outbound ping answered"),
            outbound_ping(side, fam),
        );
        record(
            format!("{f} 4000-byte fragmented udp reply arrives whole"),
            fragmented_reply(side, fam),
        );
        let (unrelated, related) = pmtu(side, fam);
        record(
            format!("{f} PMTU error quoting an untracked flow lowers the MTU"),
            unrelated,
        );
        record(
            format!("{f} PMTU error quoting a tracked flow lowers the MTU"),
            related,
        );
        let (old, new_refused) = port_removed_while_open(side, fam);
        record(
            format!("{f} open connection survives its port's removal"),
            old,
        );
        record(
            format!("{f} new connection refused after the port's removal"),
            new_refused,
        );
    }
    Outcomes(out)
}

/// Control: with no firewall at all, both PMTU errors reach the socket and lower the MTU. This is
/// what makes "the untracked one has no effect" above a result of filtering, not of the scenario.
#[test]
fn pmtu_scenario_control_without_a_firewall() {
    let bare = Side {
        name: "none",
        guard: Guard::Iptables,
        pair: NetPair::new("dn"),
    };
    for fam in [Family::V4, Family::V6] {
        let (unrelated, _) = pmtu(&bare, fam);
        assert!(
            unrelated,
            "{fam:?}: without a firewall the untracked error must lower the MTU"
        );
    }
}

#[test]
fn lockdown_decides_like_the_seed_chain() {
    let kernel = Side::iptables();
    let lockdown = Side::lockdown();
    let k = scenarios(&kernel);
    let l = scenarios(&lockdown);
    let expected: Vec<bool> = [
        true, false, false, false, true, true, true, true, false, true, true, true,
    ]
    .iter()
    .chain(&[
        true, false, false, false, true, true, true, true, false, true, true, true,
    ])
    .copied()
    .collect();
    for ((i, (name, kv)), (_, lv)) in k.0.iter().enumerate().zip(&l.0) {
        assert_eq!(
            kv, lv,
            "scenario {name:?}: iptables says {kv}, lockdown says {lv}"
        );
        assert_eq!(
            *kv, expected[i],
            "scenario {name:?}: both say {kv}, expected {}",
            expected[i]
        );
    }
    assert_eq!(k.0.len(), expected.len());

    // Deliberate differences, asserted explicitly (and listed in the README).
    let (kb, ka) = flood_state(&kernel);
    let (lb, la) = flood_state(&lockdown);
    assert!(
        ka >= kb + 1_000,
        "iptables: conntrack should track the spoofed SYNs ({kb} → {ka})"
    );
    assert_eq!(
        la, lb,
        "lockdown: a spoofed SYN flood must create no flow entries ({lb} → {la})"
    );
    if let Guard::Lockdown(ld) = &lockdown.guard {
        // Passed to the listener, or, once the default `auto` engaged SYN cookies on the port
        // (above 1000 SYN/s), answered from XDP with a cookie.
        let (passed, answered) = (
            ld.counter("pass_allowed_port"),
            ld.counter("syn_cookie_sent"),
        );
        assert!(
            passed + answered >= 2_000,
            "the flood reached lockdown's port 22 ({passed} passed, {answered} answered with a \
             cookie)"
        );
        assert!(
            ld.counter("pass_related") >= 2,
            "the tracked PMTU errors passed as related"
        );
        assert!(
            ld.counter("drop_unrelated_icmp") >= 2,
            "the untracked PMTU errors were dropped as unrelated"
        );
        assert!(
            ld.counter("pass_fragment") >= 4,
            "the fragmented replies' later fragments passed"
        );
    }
    assert!(
        !dhcp_reply(&kernel),
        "iptables drops a DHCP reply to the origin"
    );
    assert!(
        dhcp_reply(&lockdown),
        "lockdown passes DHCP replies by default"
    );
}
