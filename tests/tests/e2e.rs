//! End-to-end tests: the `lockdown` binary attached to one side of a veth pair between two fresh
//! network namespaces, with real sockets on both sides.
//!
//! Needs root, iproute2, util-linux (nsenter, setpriv), iputils-ping and a bpffs at /sys/fs/bpf, and
//! the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test e2e -- --test-threads=1
//! ```
//!
//! Each test builds its own namespace pair and pin root and removes both when it ends, pass or
//! fail. Timeouts only make a dropped packet fail fast; no test asserts on timing.

use std::{collections::BTreeMap, io, net::SocketAddr, process::Child, time::Duration};

use lockdown_common::contract::maps::{ALL, PIN_LINK_EGRESS, PIN_LINK_INGRESS};
use lockdown_testbed::{
    cli::{Lockdown, check_refused, wait_for},
    flood::syn_flood,
    origin::Origin,
    pair::{FLOOD_NET, FLOOD_PREFIX, Family, NetPair, ORIGIN_IF, ORIGIN_V4},
    traffic::{
        DROP_TIMEOUT, OK_TIMEOUT, exchange, pattern, ping, tcp_connect, tcp_fetch, udp_query,
    },
};
use lockdown_user::datapath::pins::PIN_PROG_EGRESS_TC;
use nix::{sys::signal::Signal, unistd::Pid};

const SSH: u16 = 22;
const WEB: u16 = 8080;
const UDP_PORT: u16 = 5353;
const DOWNLOAD_PORT: u16 = 9000;
const DOWNLOAD_SIZE: usize = 1 << 20;
const FLOOD_SIZE: u64 = 2000;
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(20);

/// What the end-to-end tests do through an [`Origin`].
trait EndToEnd {
    /// Adds the origin's services: TCP echo on 22 and 8080, UDP echo on 5353 (IPv4 and IPv6).
    fn with_origin_services(self) -> Self;
    /// Adds the peer's services: 1 MiB download on 9000, UDP echo on 5353 (IPv4 and IPv6).
    fn with_peer_services(self) -> Self;
    /// A datagram from the peer to the origin's UDP echo server must be dropped: no reply, and
    /// the server saw nothing.
    fn assert_inbound_udp_dropped(&self, family: Family);
}

impl EndToEnd for Origin {
    fn with_origin_services(self) -> Self {
        self.origin_echo(&[SSH, WEB]).origin_udp(UDP_PORT)
    }

    fn with_peer_services(self) -> Self {
        self.peer_bytes(DOWNLOAD_PORT, DOWNLOAD_SIZE)
            .peer_udp(UDP_PORT)
    }

    fn assert_inbound_udp_dropped(&self, family: Family) {
        let addr = SocketAddr::new(family.origin(), UDP_PORT);
        let received = self.udp[0].received();
        if let Ok(reply) = udp_query(&self.pair.peer, addr, b"inbound udp", DROP_TIMEOUT) {
            panic!(
                "inbound UDP to {addr} should be dropped, but got a reply {:?}\n{}",
                String::from_utf8_lossy(&reply),
                self.context()
            );
        }
        assert_eq!(
            self.udp[0].received(),
            received,
            "the origin's UDP server received the datagram to {addr}\n{}",
            self.context()
        );
    }
}

/// The difference of every counter between two snapshots.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, i128> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                i128::from(*v) - i128::from(before.get(k).copied().unwrap_or(0)),
            )
        })
        .collect()
}

fn get(d: &BTreeMap<String, i128>, name: &str) -> i128 {
    *d.get(name)
        .unwrap_or_else(|| panic!("no counter {name:?} in {d:?}"))
}

/// A child process killed (SIGKILL) and reaped on drop if still running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound: only the allowed port gets in.

fn inbound(family: Family, tag: &str) {
    let w = Origin::new(tag).with_origin_services();
    // Without lockdown, every service answers: what fails later fails because of the filter.
    w.assert_inbound_ok(family, SSH);
    w.assert_inbound_ok(family, WEB);
    let udp = SocketAddr::new(family.origin(), UDP_PORT);
    udp_query(&w.pair.peer, udp, b"baseline", OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("baseline: UDP to {udp} gets no reply without lockdown: {e}"));
    assert!(
        ping(&w.pair.peer, family.origin()),
        "baseline: ping {} fails without lockdown",
        family.origin()
    );

    w.ld.up(&[]);
    let before = w.ld.counters();
    w.assert_inbound_ok(family, SSH);
    w.assert_inbound_dropped(family, WEB);
    w.assert_inbound_udp_dropped(family);
    assert!(
        !ping(&w.pair.peer, family.origin()),
        "inbound ping to {} should be dropped\n{}",
        family.origin(),
        w.context()
    );
    let d = delta(&before, &w.ld.counters());
    assert!(
        get(&d, "pass_allowed_port") >= 1,
        "pass_allowed_port did not move for the tcp/22 connection: {d:?}"
    );
    // At least the SYN to 8080, the UDP datagram and the echo request.
    assert!(
        get(&d, "drop_new") >= 3,
        "drop_new should count the dropped SYN, datagram and echo request: {d:?}"
    );
}

#[test]
fn inbound_only_allowed_port_v4() {
    inbound(Family::V4, "in4");
}

#[test]
fn inbound_only_allowed_port_v6() {
    inbound(Family::V6, "in6");
}

// ---------------------------------------------------------------------------------------------
// Outbound: what the origin starts gets its replies.

fn outbound(w: &Origin, family: Family) {
    let peer = family.peer();
    let before = w.ld.counters();

    let addr = SocketAddr::new(peer, DOWNLOAD_PORT);
    let data = tcp_fetch(&w.pair.origin, addr, OK_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "outbound TCP download from {addr} failed: {e}\n{}",
            w.context()
        )
    });
    assert_eq!(
        data.len(),
        DOWNLOAD_SIZE,
        "the download from {addr} was cut short\n{}",
        w.context()
    );
    if let Some(i) = data.iter().enumerate().position(|(i, b)| *b != pattern(i)) {
        panic!("the download from {addr} is corrupt at byte {i}");
    }

    let addr = SocketAddr::new(peer, UDP_PORT);
    let reply =
        udp_query(&w.pair.origin, addr, b"outbound query", OK_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "outbound UDP query to {addr} got no reply: {e}\n{}",
                w.context()
            )
        });
    assert_eq!(reply, b"outbound query", "wrong UDP reply from {addr}");

    assert!(
        ping(&w.pair.origin, peer),
        "outbound ping to {peer} got no reply\n{}",
        w.context()
    );

    let d = delta(&before, &w.ld.counters());
    assert!(
        get(&d, "egress_flows_created") >= 3,
        "the TCP, UDP and echo flows should have been learned: {d:?}"
    );
    assert!(
        get(&d, "pass_established") >= 3,
        "replies should pass as established: {d:?}"
    );
    assert_eq!(
        get(&d, "drop_invalid"),
        0,
        "a reply was dropped as invalid: {d:?}"
    );
    assert!(
        w.ld.flows() >= 3,
        "the learned flows should be live\n{}",
        w.context()
    );
}

#[test]
fn outbound_replies_v4() {
    let w = Origin::new("out4").with_peer_services();
    w.ld.up(&[]);
    outbound(&w, Family::V4);
}

#[test]
fn outbound_replies_v6() {
    let w = Origin::new("out6").with_peer_services();
    w.ld.up(&[]);
    outbound(&w, Family::V6);
}

// ---------------------------------------------------------------------------------------------
// Generic (skb) XDP.

#[test]
fn skb_mode_enforces() {
    let w = Origin::new("skb")
        .with_origin_services()
        .with_peer_services();
    w.ld.up(&["--mode", "skb"]);
    let status = w.ld.status_json();
    assert_eq!(
        status["mode"], "skb",
        "status should report skb mode: {status}"
    );
    let xdp = w.pair.origin_xdp();
    assert!(
        matches!(xdp, Some((2, _))),
        "expected a generic (skb) XDP attachment, got {xdp:?}\n{}",
        w.pair.origin_link_text()
    );
    for family in [Family::V4, Family::V6] {
        w.assert_inbound_ok(family, SSH);
        w.assert_inbound_dropped(family, WEB);
        outbound(&w, family);
    }
}

// ---------------------------------------------------------------------------------------------
// Live allowlist changes.

#[test]
fn allow_add_and_del_live() {
    let w = Origin::new("allow").with_origin_services();
    w.ld.up(&[]);
    let status = w.ld.status_json();
    assert_eq!(
        status["mode"], "native",
        "status should report native mode: {status}"
    );
    w.assert_inbound_dropped(Family::V4, WEB);

    let out =
        w.ld.must(&["allow", "add", "tcp/8080", "--iface", ORIGIN_IF]);
    assert!(
        out.stdout.contains("tcp/8080"),
        "allow add should confirm: {out}"
    );
    let list =
        w.ld.must(&["allow", "list", "--iface", ORIGIN_IF, "--json"]);
    let rules: serde_json::Value = serde_json::from_str(list.stdout.trim())
        .unwrap_or_else(|e| panic!("allow list --json is not JSON ({e}): {list}"));
    let specs: Vec<&str> = rules
        .as_array()
        .unwrap_or_else(|| panic!("allow list --json is not an array: {list}"))
        .iter()
        .filter_map(|r| r["spec"].as_str())
        .collect();
    assert_eq!(
        specs,
        ["tcp/22", "tcp/8080"],
        "allow list after add: {list}"
    );

    // A rule without --from opens the port for both families.
    w.assert_inbound_ok(Family::V6, WEB);
    let addr = SocketAddr::new(Family::V4.origin(), WEB);
    let mut open = tcp_connect(&w.pair.peer, addr, OK_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "tcp/8080 should connect after allow add: {e}\n{}",
            w.context()
        )
    });
    exchange(&mut open, b"before del")
        .unwrap_or_else(|e| panic!("exchange on 8080 before del: {e}"));

    w.ld.must(&["allow", "del", "tcp/8080", "--iface", ORIGIN_IF]);
    assert_eq!(w.ld.allow(), ["tcp/22"], "allow list after del");
    w.assert_inbound_dropped(Family::V4, WEB);
    w.assert_inbound_dropped(Family::V6, WEB);

    // The connection opened while the port was allowed carries on.
    for i in 0..3 {
        exchange(&mut open, format!("after del #{i}").as_bytes()).unwrap_or_else(|e| {
            panic!(
                "the already-open connection on 8080 stopped carrying data after `allow del` (message {i}): {e}\n{}",
                w.context()
            )
        });
    }
    w.assert_inbound_ok(Family::V4, SSH);
}

/// A connection accepted while its port was allowed, but on which the origin has not sent anything
/// yet (the client speaks first, as with HTTP), must also survive `allow del`: the allow docs
/// promise "open flows are untouched".
#[test]
fn allow_del_keeps_idle_accepted_connection() {
    let w = Origin::new("idle").with_origin_services();
    w.ld.up(&["--allow", "tcp/22", "--allow", "tcp/8080"]);
    let addr = SocketAddr::new(Family::V4.origin(), WEB);
    let mut open = tcp_connect(&w.pair.peer, addr, OK_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "tcp/8080 should connect while allowed: {e}\n{}",
            w.context()
        )
    });
    // Wait until the origin has accepted it (the handshake is complete on both sides).
    wait_for(OK_TIMEOUT, || (w.servers[1].accepted() >= 1).then_some(()))
        .unwrap_or_else(|| panic!("the origin never accepted the connection on 8080"));

    w.ld.must(&["allow", "del", "tcp/8080", "--iface", ORIGIN_IF]);
    w.assert_inbound_dropped(Family::V4, WEB);
    for i in 0..3 {
        exchange(&mut open, format!("first words #{i}").as_bytes()).unwrap_or_else(|e| {
            panic!(
                "a connection accepted on 8080 before `allow del` (idle until then) cannot carry data after it \
                 (message {i}): {e}\n{}",
                w.context()
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// A spoofed SYN flood creates no state.

#[test]
fn spoofed_syn_flood_leaves_flows_flat() {
    let w = Origin::new("flood").with_origin_services();
    // The kernel answers the flood here (its SYN-ACKs go out through the egress program, which
    // must learn nothing from them). With the default `auto`, 2000 SYNs at this pace would
    // engage SYN cookies, which answer from XDP instead: tests/syncookies.rs covers that path.
    w.ld.up(&["--syn-cookies", "off"]);
    // A real connection first: the origin learns the peer's MAC (its SYN-ACKs to the spoofed
    // sources are routed via the peer) and tcp/22 is known to work.
    w.assert_inbound_ok(Family::V4, SSH);

    let flows_before = w.ld.flows();
    let before = w.ld.counters();
    for port in [SSH, WEB] {
        let r = syn_flood(&w.pair, ORIGIN_V4, port, FLOOD_SIZE, FLOOD_TIME_LIMIT);
        eprintln!("flood to port {port}: {r:?}");
        assert_eq!(
            r.sent, FLOOD_SIZE,
            "the flood to port {port} stopped at its time limit after {} SYNs",
            r.sent
        );
    }
    let min = i128::from(FLOOD_SIZE * 9 / 10);
    // The flood must really have arrived: counted as allowed (22) and as dropped (8080).
    let d = wait_for(Duration::from_secs(5), || {
        let d = delta(&before, &w.ld.counters());
        (get(&d, "pass_allowed_port") >= min && get(&d, "drop_new") >= min).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "the flood did not arrive: expected pass_allowed_port and drop_new to rise by about {FLOOD_SIZE} each, got {:?}",
            delta(&before, &w.ld.counters())
        )
    });
    // The origin answered the SYNs to 22 with SYN-ACKs to the spoofed sources (routed via the
    // peer), so the egress program saw them, and must not have learned anything from them.
    assert!(
        get(&d, "egress_packets") >= min / 2,
        "the origin's SYN-ACKs to {FLOOD_NET}/{FLOOD_PREFIX} should have gone out through the egress program: {d:?}"
    );
    let d = delta(&before, &w.ld.counters());
    assert_eq!(
        get(&d, "egress_flows_created"),
        0,
        "the flood created flow entries: {d:?}"
    );
    let flows_after = w.ld.flows();
    eprintln!("flows {flows_before} -> {flows_after}; counter deltas {d:?}");
    assert_eq!(
        flows_after, flows_before,
        "the spoofed SYN flood changed the flow count: {flows_before} -> {flows_after}; counters {d:?}"
    );
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);
}

// ---------------------------------------------------------------------------------------------
// `up` exits and leaves no process; `down` restores everything.

#[test]
fn up_leaves_no_process_and_down_restores() {
    let w = Origin::new("updown").with_origin_services();
    w.assert_inbound_ok(Family::V4, WEB);

    let out = w.ld.up(&[]);
    assert!(out.stdout.contains(ORIGIN_IF), "up should confirm: {out}");
    let procs = w.ld.processes();
    assert!(
        procs.is_empty(),
        "`lockdown up` left processes running {} behind: {procs:?}",
        w.ld.bin.display()
    );
    let xdp = w.pair.origin_xdp();
    assert!(
        matches!(&xdp, Some((1, name)) if name.starts_with("lockdown")),
        "expected lockdown's program attached in native (driver) mode, got {xdp:?}\n{}",
        w.pair.origin_link_text()
    );
    let dir = w.ld.pin_dir();
    let egress_pin = match w.ld.egress_kind() {
        "tcx" => PIN_LINK_EGRESS,
        _ => PIN_PROG_EGRESS_TC,
    };
    for name in ALL.iter().chain(&[PIN_LINK_INGRESS, egress_pin]) {
        assert!(
            dir.join(name).exists(),
            "{} is not pinned after up",
            dir.join(name).display()
        );
    }
    let link_ids = w.ld.pinned_link_ids();
    w.assert_inbound_dropped(Family::V4, WEB);
    w.assert_inbound_ok(Family::V4, SSH);

    let out = w.ld.down();
    assert!(out.stdout.contains(ORIGIN_IF), "down should confirm: {out}");
    let xdp = w.pair.origin_xdp();
    assert!(
        xdp.is_none(),
        "an XDP program is still attached after down: {xdp:?}\n{}",
        w.pair.origin_link_text()
    );
    assert!(!dir.exists(), "{} still exists after down", dir.display());
    let remaining = wait_for(Duration::from_secs(2), || {
        let live: Vec<u32> = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .map(|l| l.id())
            .filter(|id| link_ids.contains(id))
            .collect();
        live.is_empty().then_some(())
    });
    assert!(
        remaining.is_some(),
        "the XDP/TC links {link_ids:?} still exist in the kernel after down"
    );
    assert_eq!(
        w.ld.netlink_filter(),
        None,
        "lockdown's TC egress filter is still there after down"
    );
    assert!(
        w.ld.processes().is_empty(),
        "a lockdown process is running after down"
    );
    w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_ok(Family::V6, WEB);
    w.assert_inbound_ok(Family::V4, SSH);
    w.ld.refuse(&["status", "--iface", ORIGIN_IF], &["not locked down"]);
}

// ---------------------------------------------------------------------------------------------
// Bad input is refused and changes nothing.

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let w = Origin::new("bad").with_origin_services();
    let ld = &w.ld;
    let iface = ORIGIN_IF;

    // Before anything is locked down: a refused `up` must leave the interface open.
    let bad_ups: &[(&[&str], &[&str])] = &[
        (
            &["up", "--iface", iface, "--allow", "tcp/0"],
            &["tcp/0", "port"],
        ),
        (
            &["up", "--iface", iface, "--allow", "tcp/65536"],
            &["tcp/65536", "port"],
        ),
        (
            &["up", "--iface", iface, "--allow", "sctp/22"],
            &["sctp/22", "protocol"],
        ),
        (
            &["up", "--iface", "nosuch0"],
            &["nosuch0", "unknown interface"],
        ),
        (&["up", "--iface", "lo"], &["loopback"]),
        (
            &["up", "--iface", iface, "--max-flows", "0"],
            &["max-flows"],
        ),
    ];
    for (args, needles) in bad_ups {
        ld.refuse(args, needles);
        assert!(
            !ld.is_locked(),
            "a refused `{}` locked the interface down",
            args.join(" ")
        );
        assert!(
            w.pair.origin_xdp().is_none(),
            "a refused `{}` attached XDP",
            args.join(" ")
        );
    }
    let out = ld.run_unprivileged(&["up", "--iface", iface]);
    check_refused(&out, &["root", "CAP_BPF"]);
    assert!(
        !ld.is_locked(),
        "an unprivileged `up` locked the interface down"
    );
    assert!(
        w.pair.origin_xdp().is_none(),
        "an unprivileged `up` attached XDP"
    );
    ld.refuse(&["down", "--iface", iface], &["not locked down"]);

    // With nothing locked down under a (separate, empty) pin root, `allow` has nothing to change.
    let empty = Lockdown::new(&w.pair.origin, iface, "bad-empty");
    empty.refuse(&["allow", "add", "tcp/8080"], &["nothing is locked down"]);
    empty.refuse(&["allow", "list"], &["nothing is locked down"]);
    empty.refuse(
        &["allow", "add", "tcp/8080", "--iface", iface],
        &["not locked down"],
    );
    empty.refuse(&["status"], &["nothing is locked down"]);
    drop(empty);
    w.assert_inbound_ok(Family::V4, WEB);

    ld.up(&[]);
    let status_before = ld.status_json();
    let bad: &[(&[&str], &[&str])] = &[
        (
            &["allow", "add", "tcp/0", "--iface", iface],
            &["tcp/0", "port"],
        ),
        (
            &["allow", "add", "tcp/65536", "--iface", iface],
            &["tcp/65536", "port"],
        ),
        (&["allow", "add", "udp/0"], &["udp/0", "port"]),
        (
            &["allow", "add", "sctp/22", "--iface", iface],
            &["sctp/22", "protocol"],
        ),
        (
            &[
                "allow",
                "add",
                "tcp/8080",
                "--from",
                "10.0.0.0/33",
                "--iface",
                iface,
            ],
            &["10.0.0.0/33", "prefix length"],
        ),
        (
            &["allow", "add", "tcp/8080", "--iface", "nosuch0"],
            &["nosuch0", "not locked down"],
        ),
        (
            &["allow", "del", "tcp/8080", "--iface", iface],
            &["tcp/8080", "not in the allowlist"],
        ),
        (
            &["up", "--iface", "nosuch0"],
            &["nosuch0", "unknown interface"],
        ),
        (&["up", "--iface", iface], &[iface, "already locked down"]),
        (
            &[
                "up", "--iface", iface, "--allow", "tcp/8080", "--mode", "skb",
            ],
            &[iface, "already locked down"],
        ),
        (
            &["status", "--iface", "nosuch0"],
            &["nosuch0", "not locked down"],
        ),
    ];
    for (args, needles) in bad {
        ld.refuse(args, needles);
        assert_eq!(
            ld.allow(),
            ["tcp/22"],
            "a refused `{}` changed the allowlist",
            args.join(" ")
        );
    }
    for args in [
        &["allow", "add", "tcp/8080", "--iface", iface][..],
        &["status", "--iface", iface],
        &["down", "--iface", iface],
        &["up", "--iface", iface],
    ] {
        let out = ld.run_unprivileged(args);
        check_refused(&out, &["root", "CAP_BPF"]);
    }
    assert!(ld.is_locked(), "refused commands unlocked the interface");
    assert_eq!(
        ld.allow(),
        ["tcp/22"],
        "refused commands changed the allowlist"
    );
    let status_after = ld.status_json();
    for key in ["mode", "interface", "max_flows", "monitor", "allow"] {
        assert_eq!(
            status_after[key], status_before[key],
            "refused commands changed {key} in the status"
        );
    }
    let xdp = w.pair.origin_xdp();
    assert!(
        matches!(xdp, Some((1, _))),
        "XDP is no longer attached natively: {xdp:?}"
    );
    // The filter still works.
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);
    w.assert_inbound_ok(Family::V6, SSH);
    w.assert_inbound_dropped(Family::V6, WEB);
}

// ---------------------------------------------------------------------------------------------
// `run`: foreground, enforcing, detaches on SIGTERM.

#[test]
fn run_enforces_in_foreground_and_detaches_on_sigterm() {
    let w = Origin::new("run").with_origin_services();
    let mut child = ChildGuard(w.ld.spawn(&["run", "--iface", ORIGIN_IF]));
    let pid = child.0.id();

    let locked = wait_for(Duration::from_secs(10), || {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("`lockdown run` exited early with {status}");
        }
        w.ld.is_locked().then_some(())
    });
    assert!(
        locked.is_some(),
        "`lockdown run` did not lock {ORIGIN_IF} down"
    );
    let procs = w.ld.processes();
    assert!(
        procs.contains(&pid),
        "`lockdown run` (pid {pid}) should stay in the foreground; running: {procs:?}"
    );
    let status = w.ld.status_json();
    assert_eq!(status["mode"], "native", "status while running: {status}");
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);
    w.assert_inbound_dropped(Family::V6, WEB);
    assert!(
        matches!(child.0.try_wait(), Ok(None)),
        "`lockdown run` should still be running"
    );

    let raw_pid = i32::try_from(pid).unwrap_or_else(|_| panic!("pid {pid} out of range"));
    nix::sys::signal::kill(Pid::from_raw(raw_pid), Signal::SIGTERM)
        .unwrap_or_else(|e| panic!("sending SIGTERM to {pid}: {e}"));
    let exit = wait_for(Duration::from_secs(10), || {
        child.0.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("`lockdown run` did not exit after SIGTERM"));
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.0.stdout.take() {
        let _ = io::Read::read_to_string(&mut s, &mut stdout);
    }
    if let Some(mut s) = child.0.stderr.take() {
        let _ = io::Read::read_to_string(&mut s, &mut stderr);
    }
    assert!(
        exit.success(),
        "`lockdown run` exited with {exit} after SIGTERM\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !w.ld.pin_dir().exists(),
        "{} still exists after `run` detached",
        w.ld.pin_dir().display()
    );
    let xdp = w.pair.origin_xdp();
    assert!(
        xdp.is_none(),
        "XDP still attached after `run` detached: {xdp:?}"
    );
    w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_ok(Family::V6, WEB);
}

/// On an interface whose driver has no native XDP (a bridge), `up` fails, says so, suggests
/// `--mode skb`, and leaves nothing behind; it never falls back silently. `--mode skb` then works.
#[test]
fn native_mode_unsupported_suggests_skb_and_never_falls_back() {
    const BRIDGE: &str = "ldbr0";
    let pair = NetPair::new("nat");
    lockdown_testbed::netns::ip(&pair.origin, &["link", "add", BRIDGE, "type", "bridge"]);
    lockdown_testbed::netns::ip(&pair.origin, &["link", "set", BRIDGE, "up"]);
    let ld = Lockdown::new(&pair.origin, BRIDGE, "nat");
    ld.refuse(
        &["up", "--iface", BRIDGE],
        &["native XDP is not supported", "--mode skb"],
    );
    assert!(
        !ld.is_locked(),
        "a refused native attach must leave no pins"
    );
    assert!(
        !lockdown_testbed::netns::ip(&pair.origin, &["link", "show", BRIDGE]).contains("xdp"),
        "a refused native attach must leave no XDP program"
    );
    ld.up(&["--mode", "skb"]);
    assert!(
        lockdown_testbed::netns::ip(&pair.origin, &["link", "show", BRIDGE]).contains("xdpgeneric"),
        "--mode skb attaches generic XDP"
    );
    ld.down();
}
