//! SYN cookies (issue 18): under a full-speed spoofed SYN flood to tcp/22, lockdown answers
//! SYNs itself with cookie SYN-ACKs (`XDP_TX`), validates the returning ACK and hands it to the
//! listener, so real OpenSSH logins from fresh sources get in; a rate limit is charged at the
//! validated ACK, so a spoofed flood cannot drain it; `auto` engages and disengages with the
//! flood; `off` leaves the handshake to the kernel; a cookie connection negotiates the same TCP
//! options as a kernel one; forged ACKs are dropped and make nothing.
//!
//! A real sshd (Debian's openssh-server) runs in the origin namespace and the real ssh client in
//! the peer, each login from a source address no connection used before
//! (`NetPair::fresh_source`). The peer's veth carries an XDP_PASS program
//! (`NetPair::peer_xdp_pass`): without one, a veth on this kernel does not deliver the origin's
//! `XDP_TX` frames to the peer. Floods are bounded in packets and time and stopped as soon as the
//! logins they run against are done.
//!
//! Needs what the end-to-end tests need, plus openssh-server, openssh-client and hping3
//! (`scripts/setup.sh` installs them), and the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test syncookies -- --test-threads=1
//! ```
//!
//! No test asserts on timing: waits are bounded polls that fail with what they saw, and the
//! throughput of the bulk transfers is printed, not judged.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use lockdown_testbed::{
    bg::Bg,
    cli::{poll, wait_for},
    flood::{Flood, Kind, Pace, Shape, Sources, Spec, Stats},
    hping::{Hping, HpingSpec},
    netns::ns_must,
    origin::Origin,
    pair::{Family, ORIGIN_IF, ORIGIN_V4},
    ssh::{Login, SSH_PORT, Sshd, TcpInfo, require_openssh},
};

/// Logins per scenario, all at once, each from a fresh source.
const LOGINS: usize = 5;
/// Bounds of every full-speed flood: it is stopped as soon as its logins are done.
const FLOOD_MAX_PACKETS: u64 = 2_000_000;
const FLOOD_MAX_TIME: Duration = Duration::from_secs(8);
/// SYNs the flood sends before the logins start.
const PRIMING: u64 = 200_000;
/// With a rate limit: SYNs spoofed in the name of each login source before it logs in, well
/// beyond its burst of 3. Charged at the SYN, they would leave it nothing; charged at the
/// validated ACK (which only the real source can send), they cost it nothing.
const SPOOFS_PER_SOURCE: u64 = 10;
/// The strict rate of the rate-limit scenarios.
const RATE: [&str; 4] = ["--rate", "2/min", "--burst", "3"];
/// Bytes of each bulk transfer over SSH.
const BULK_BYTES: u64 = 200 << 20;
/// Forged ACKs per family (paced, so that the veth drops none).
const FORGED_ACKS: u64 = 20_000;
/// Bound for the detector, the log reader and status to show what they should.
const SETTLE: Duration = Duration::from_secs(15);

/// An origin with sshd, locked down with `up` arguments `up`, its peer receiving `XDP_TX`
/// frames. Fields drop in order: sshd (and every process left in the namespaces), then the
/// origin.
struct World {
    sshd: Sshd,
    o: Origin,
}

fn world(tag: &str, up: &[&str]) -> World {
    require_openssh();
    let o = Origin::new(tag);
    o.pair
        .peer_xdp_pass()
        .unwrap_or_else(|e| panic!("attaching XDP_PASS to the peer's veth: {e:#}"));
    let sshd = Sshd::start(&o.pair, tag).unwrap_or_else(|e| panic!("starting sshd: {e:#}"));
    o.up(up);
    World { sshd, o }
}

impl World {
    fn counters(&self) -> BTreeMap<String, u64> {
        self.o.ld.counters()
    }

    /// `status --json`'s `syn_cookies` object; panics if there is none.
    fn syn_cookies(&self) -> serde_json::Value {
        let s = self.o.status();
        let c = s["syn_cookies"].clone();
        assert!(
            c.is_object(),
            "status --json has no syn_cookies object: {s}"
        );
        c
    }

    /// The ports cookies are engaged on, from `status --json`.
    fn engaged(&self) -> Vec<u64> {
        let c = self.syn_cookies();
        c["engaged_ports"]
            .as_array()
            .unwrap_or_else(|| panic!("syn_cookies has no engaged_ports array: {c}"))
            .iter()
            .map(|p| {
                p.as_u64()
                    .unwrap_or_else(|| panic!("a non-integer engaged port: {c}"))
            })
            .collect()
    }

    /// One login from a fresh source of `family`; panics with sshd's log unless it ran the
    /// command.
    fn must_login(&self, family: Family, when: &str) -> Login {
        let l = self
            .sshd
            .login(&self.o.pair, family)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            l.ok,
            "{when}: {l}\n--- sshd ---\n{}\n{}",
            self.sshd.log(),
            self.o.context()
        );
        l
    }
}

/// Which flood runs during the logins.
#[derive(Clone, Copy, Debug)]
enum With {
    /// The project's generator at full speed: Linux-shaped SYNs to tcp/22 of `family`, from
    /// `sources`.
    Own(Family, Sources),
    /// `hping3 -S -p 22 --flood --rand-source` (IPv4).
    Hping,
}

enum Running {
    Own(Flood),
    Hping(Hping),
}

impl Running {
    fn start(w: &World, with: With, max_packets: u64, max_time: Duration) -> Self {
        match with {
            With::Own(family, sources) => {
                let spec = Spec {
                    dst: family.origin(),
                    shape: Shape::Linux,
                    sources,
                    ..Spec::new(SSH_PORT, max_packets, max_time)
                };
                Self::Own(
                    Flood::start(&w.o.pair, spec)
                        .unwrap_or_else(|e| panic!("starting the flood: {e:#}")),
                )
            }
            With::Hping => Self::Hping(
                Hping::start(
                    &w.o.pair,
                    HpingSpec {
                        dst: ORIGIN_V4,
                        dst_port: SSH_PORT,
                        max_packets,
                        max_time,
                    },
                )
                .unwrap_or_else(|e| panic!("starting hping3: {e:#}")),
            ),
        }
    }

    fn sent(&self) -> u64 {
        match self {
            Self::Own(f) => f.sent(),
            Self::Hping(h) => h.sent(),
        }
    }

    fn is_finished(&self) -> bool {
        match self {
            Self::Own(f) => f.is_finished(),
            Self::Hping(h) => h.is_finished(),
        }
    }

    fn stop(self) -> Stats {
        match self {
            Self::Own(f) => f.stop(),
            Self::Hping(h) => h.stop(),
        }
        .unwrap_or_else(|e| panic!("the flood failed: {e:#}"))
    }
}

/// What [`logins_under_flood`] saw.
struct UnderFlood {
    logins: Vec<Login>,
    flood: Stats,
    before: BTreeMap<String, u64>,
    after: BTreeMap<String, u64>,
    flows_before: u64,
    flows_after: u64,
}

impl UnderFlood {
    /// How much counter `name` grew; panics if status has no such counter.
    fn delta(&self, name: &str) -> u64 {
        let get = |m: &BTreeMap<String, u64>| {
            *m.get(name)
                .unwrap_or_else(|| panic!("status --json has no counter {name:?}: {m:?}"))
        };
        get(&self.after) - get(&self.before)
    }
}

/// [`LOGINS`] fresh sources of `family`.
fn fresh_sources(w: &World, family: Family) -> Vec<IpAddr> {
    (0..LOGINS)
        .map(|_| {
            w.o.pair
                .fresh_source(family)
                .unwrap_or_else(|e| panic!("{e:#}"))
        })
        .collect()
}

/// Starts the flood, waits until it has sent `prime` frames, logs in from each of `sources` at
/// once (to the origin's address of their family), checks the flood was still running when the
/// last login ended, stops it, and panics unless every login ran its command.
fn logins_under_flood(w: &World, sources: &[IpAddr], with: With, prime: u64) -> UnderFlood {
    let (max_packets, max_time) = (FLOOD_MAX_PACKETS, FLOOD_MAX_TIME);
    let dst = match sources.first() {
        Some(IpAddr::V6(_)) => Family::V6.origin(),
        _ => Family::V4.origin(),
    };
    let before = w.counters();
    let flows_before = w.o.ld.flows();
    let flood = Running::start(w, with, max_packets, max_time);
    let primed = wait_for(max_time, || (flood.sent() >= prime).then_some(()));
    assert!(
        primed.is_some() && !flood.is_finished(),
        "the flood ({with:?}) sent only {} of the {prime} frames wanted before the logins",
        flood.sent()
    );
    let logins = w.sshd.logins_from(sources, dst);
    let during = !flood.is_finished();
    let stats = flood.stop();
    let after = w.counters();
    let flows_after = w.o.ld.flows();
    eprintln!(
        "{with:?}: {} frames in {:.2?} = {:.0} frames/s",
        stats.sent,
        stats.elapsed,
        stats.pps()
    );
    for l in &logins {
        eprintln!("  {l}");
    }
    let failed: Vec<String> = logins
        .iter()
        .filter(|l| !l.ok)
        .map(ToString::to_string)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} logins under the flood ({with:?}) failed:\n{}\n--- sshd ---\n{}\n{}",
        failed.len(),
        logins.len(),
        failed.join("\n"),
        w.sshd.log(),
        w.o.context()
    );
    assert!(
        during,
        "the flood reached its bound ({} frames in {:.2?}) before the logins ended: they did not \
         all run under it",
        stats.sent, stats.elapsed
    );
    UnderFlood {
        logins,
        flood: stats,
        before,
        after,
        flows_before,
        flows_after,
    }
}

/// The logins got in through cookies, and the flood made no state.
fn assert_cookies_carried(w: &World, r: &UnderFlood) {
    let ctx = || format!("{:?} -> {:?}\n{}", r.before, r.after, w.o.context());
    assert!(
        r.delta("syn_cookie_sent") > 0,
        "no SYN was answered with a cookie under a flood of {} SYNs\n{}",
        r.flood.sent,
        ctx()
    );
    assert!(
        r.delta("pass_syn_cookie_ack") >= r.logins.len() as u64,
        "{} logins got in but only {} cookie ACKs were passed\n{}",
        r.logins.len(),
        r.delta("pass_syn_cookie_ack"),
        ctx()
    );
    assert_eq!(
        r.flows_after,
        r.flows_before,
        "the flow tables grew under the flood\n{}",
        ctx()
    );
    assert_eq!(
        r.after["flow_insert_failed"],
        0,
        "flow_insert_failed\n{}",
        ctx()
    );
}

fn cookies_on_carry_logins(tag: &str, family: Family) {
    let w = world(tag, &["--syn-cookies", "on"]);
    let sources = fresh_sources(&w, family);
    let r = logins_under_flood(&w, &sources, With::Own(family, Sources::Anywhere), PRIMING);
    assert_cookies_carried(&w, &r);
    assert_eq!(
        r.delta("pass_syn_to_kernel"),
        0,
        "with --syn-cookies on, no SYN to tcp/22 goes to the kernel"
    );
}

/// (a) `on`, a full-speed IPv4 flood from anywhere: five fresh IPv4 sources log in.
#[test]
fn on_ipv4_logins_get_in_under_a_full_speed_flood() {
    cookies_on_carry_logins("sc-on4", Family::V4);
}

/// (b) The same over IPv6.
#[test]
fn on_ipv6_logins_get_in_under_a_full_speed_flood() {
    cookies_on_carry_logins("sc-on6", Family::V6);
}

fn a_strict_rate_is_not_drained_by_spoofed_syns(tag: &str, family: Family) {
    let w = world(tag, &["--syn-cookies", "on"]);
    let mut args = vec!["allow", "add", "tcp/22"];
    args.extend_from_slice(&RATE);
    w.o.ld.must(&args);
    let sources = fresh_sources(&w, family);
    let before = w.counters();
    for &src in &sources {
        let spec = Spec {
            dst: family.origin(),
            shape: Shape::Linux,
            sources: Sources::Only(src),
            pace: Some(Pace::LIGHT),
            ..Spec::new(SSH_PORT, SPOOFS_PER_SOURCE, Duration::from_secs(5))
        };
        let st = Flood::start(&w.o.pair, spec)
            .and_then(Flood::wait)
            .unwrap_or_else(|e| panic!("spoofing SYNs from {src}: {e:#}"));
        assert_eq!(st.sent, SPOOFS_PER_SOURCE, "spoofed SYNs from {src}");
    }
    let spoofed = w.counters();
    assert!(
        spoofed["syn_cookie_sent"] - before["syn_cookie_sent"] >= SPOOFS_PER_SOURCE * LOGINS as u64,
        "the SYNs spoofed in the login sources' names were not answered with cookies: \
         {before:?} -> {spoofed:?}"
    );
    let r = logins_under_flood(&w, &sources, With::Own(family, Sources::Anywhere), PRIMING);
    assert_cookies_carried(&w, &r);
    assert_eq!(
        r.after["drop_rate_limited"] - before["drop_rate_limited"],
        0,
        "the rate is charged at the validated ACK: {} SYNs spoofed in the login sources' names, \
         a flood of {} from anywhere and {LOGINS} logins must refuse nothing\n{}",
        SPOOFS_PER_SOURCE * LOGINS as u64,
        r.flood.sent,
        w.o.context()
    );
}

/// (c) `on` with `--rate 2/min --burst 3` on tcp/22, IPv4: the rate is charged at the validated
/// ACK, so SYNs spoofed in a source's own name (ten each, beyond its burst) and a full-speed
/// flood from anywhere leave every fresh source its burst.
#[test]
fn on_ipv4_a_strict_rate_is_not_drained_by_spoofed_syns() {
    a_strict_rate_is_not_drained_by_spoofed_syns("sc-rate4", Family::V4);
}

/// (c) The same over IPv6 (the rate buckets IPv6 sources per /64; every spoofed source and
/// every login source is in a /64 of its own).
#[test]
fn on_ipv6_a_strict_rate_is_not_drained_by_spoofed_syns() {
    a_strict_rate_is_not_drained_by_spoofed_syns("sc-rate6", Family::V6);
}

/// (d) `on`, with hping3's `--flood --rand-source` as the flood.
#[test]
fn on_logins_get_in_under_an_hping3_flood() {
    let w = world("sc-hping", &["--syn-cookies", "on"]);
    let sources = fresh_sources(&w, Family::V4);
    let r = logins_under_flood(&w, &sources, With::Hping, PRIMING / 4);
    assert_cookies_carried(&w, &r);
}

/// A login between `before` and `after` took the kernel's own handshake: no SYN was answered
/// with a cookie and no cookie ACK passed, while the allowlist passed its segments.
fn assert_kernel_handshake(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    when: &str,
) {
    let d = |n: &str| {
        let get = |m: &BTreeMap<String, u64>| {
            *m.get(n)
                .unwrap_or_else(|| panic!("status --json has no counter {n:?}: {m:?}"))
        };
        get(after) - get(before)
    };
    assert!(
        d("syn_cookie_sent") == 0 && d("pass_syn_cookie_ack") == 0 && d("pass_allowed_port") > 0,
        "{when}, a login should take the kernel's handshake (cookies not engaged): \
         {before:?} -> {after:?}"
    );
}

/// (e) `auto` with a low threshold: cookies engage on tcp/22 under the flood (status and log
/// say so), disengage after the flood and the calm period (both say so), and logins work before,
/// during and after; before and after, through the kernel's own handshake (no cookie).
#[test]
fn auto_engages_under_a_flood_and_disengages_after_the_calm() {
    let w = world(
        "sc-auto",
        &[
            "--syn-cookies",
            "auto",
            "--syn-cookie-threshold",
            "100",
            "--syn-cookie-calm",
            "2",
        ],
    );
    let c = w.syn_cookies();
    assert_eq!(c["mode"], "auto", "{c}");
    assert_eq!(c["threshold_per_sec"], 100, "{c}");
    assert_eq!(c["calm_secs"], 2, "{c}");
    assert_eq!(
        c["answering"], true,
        "cookies can answer on this kernel: {c}"
    );
    assert!(w.engaged().is_empty(), "engaged before any flood: {c}");
    let mut log = Bg::spawn(&w.o.ld, &["log", "--iface", ORIGIN_IF]);
    wait_for(Duration::from_secs(10), || {
        assert!(log.running(), "`log` exited early\n{}", log.output());
        log.holds_bpf_map().then_some(())
    })
    .unwrap_or_else(|| panic!("`log` never opened the ring buffer\n{}", log.output()));

    // Before: the kernel's handshake.
    let before = w.counters();
    w.must_login(Family::V4, "a login before the flood");
    let after = w.counters();
    assert_kernel_handshake(&before, &after, "before the flood");

    // During: engaged, and logins get in through cookies.
    let r = std::thread::scope(|s| {
        let engaged = s.spawn(|| {
            poll(SETTLE, Duration::from_millis(100), || {
                w.engaged().contains(&u64::from(SSH_PORT)).then_some(())
            })
        });
        let r = logins_under_flood(
            &w,
            &fresh_sources(&w, Family::V4),
            With::Own(Family::V4, Sources::Anywhere),
            PRIMING,
        );
        let engaged = engaged.join().expect("the status poller");
        (r, engaged)
    });
    let (r, engaged) = r;
    assert!(
        engaged.is_some(),
        "status never showed tcp/22 engaged under the flood: {}",
        w.syn_cookies()
    );
    assert_cookies_carried(&w, &r);
    log.wait_stdout("syn cookies engaged on tcp/22", SETTLE);

    // After the flood and the calm period: disengaged, and the kernel's handshake again.
    let off = poll(SETTLE, Duration::from_millis(200), || {
        (!w.engaged().contains(&u64::from(SSH_PORT))).then_some(())
    });
    assert!(
        off.is_some(),
        "tcp/22 still engaged {SETTLE:?} after the flood (calm 2 s): {}",
        w.syn_cookies()
    );
    log.wait_stdout("syn cookies disengaged on tcp/22", SETTLE);
    let before = w.counters();
    w.must_login(Family::V4, "a login after cookies disengaged");
    let after = w.counters();
    assert_kernel_handshake(&before, &after, "after cookies disengaged");
}

/// (f) `off`: no cookie is ever sent, even under a flood, and logins still get in through the
/// kernel's own handshake (its own SYN cookies once sshd's queue overflows). The flood comes
/// from FLOOD_NET, which the origin routes, so the kernel really answers it.
#[test]
fn off_sends_no_cookie_and_the_kernel_lets_logins_in() {
    let w = world("sc-off", &["--syn-cookies", "off"]);
    let c = w.syn_cookies();
    assert_eq!(c["mode"], "off", "{c}");
    let r = logins_under_flood(
        &w,
        &fresh_sources(&w, Family::V4),
        With::Own(Family::V4, Sources::FloodNet),
        PRIMING,
    );
    for name in [
        "syn_cookie_sent",
        "pass_syn_cookie_ack",
        "drop_syn_cookie_invalid",
    ] {
        assert_eq!(r.delta(name), 0, "{name} under --syn-cookies off");
    }
    assert!(
        w.engaged().is_empty(),
        "engaged with cookies off: {}",
        w.syn_cookies()
    );
    assert_eq!(
        r.flows_after, r.flows_before,
        "the flow tables grew under the flood"
    );
}

/// The options both ends of a connection see, as a comparable tuple.
fn negotiated(i: &TcpInfo) -> (u32, Option<(u8, u8)>, bool, bool) {
    (i.mss, i.wscale, i.sack, i.timestamps)
}

/// (g) A connection accepted through a cookie negotiates what a kernel-made one does: the same
/// MSS, window scale, SACK and timestamps on both ends (window scaling in force), and a bulk
/// transfer over it completes (throughput printed beside the kernel-made one's, not judged).
#[test]
fn a_cookie_connection_negotiates_what_a_kernel_one_does() {
    require_openssh();
    let o = Origin::new("sc-opts");
    o.pair
        .peer_xdp_pass()
        .unwrap_or_else(|e| panic!("attaching XDP_PASS to the peer's veth: {e:#}"));
    let sshd = Sshd::start(&o.pair, "sc-opts").unwrap_or_else(|e| panic!("{e:#}"));
    // Made by the kernel, before anything is locked down; they stay open across `up`.
    let kernel: Vec<_> = [Family::V4, Family::V6]
        .into_iter()
        .map(|f| sshd.master(&o.pair, f).unwrap_or_else(|e| panic!("{e:#}")))
        .collect();
    o.up(&["--syn-cookies", "on"]);
    for (family, k) in [Family::V4, Family::V6].into_iter().zip(&kernel) {
        let before = o.ld.counter("pass_syn_cookie_ack");
        let cookie = sshd
            .master(&o.pair, family)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", o.context()));
        let acks = o.ld.counter("pass_syn_cookie_ack") - before;
        assert_eq!(
            acks, 1,
            "the {family:?} connection made under --syn-cookies on should be one cookie ACK"
        );
        let (ko, kp) = k.tcp_info().unwrap_or_else(|e| panic!("{e:#}"));
        let (co, cp) = cookie.tcp_info().unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!(
            "{family:?} kernel-made: origin {:?} peer {:?}\n{family:?} cookie:      origin {:?} peer {:?}",
            negotiated(&ko),
            negotiated(&kp),
            negotiated(&co),
            negotiated(&cp)
        );
        for (end, k, c) in [("origin", &ko, &co), ("peer", &kp, &cp)] {
            assert_eq!(
                negotiated(c),
                negotiated(k),
                "{family:?}, the {end}'s end: the cookie connection negotiated other options \
                 than the kernel-made one\n--- cookie ---\n{}\n--- kernel ---\n{}",
                c.raw,
                k.raw
            );
        }
        let (Some(o_ws), Some(p_ws)) = (co.wscale, cp.wscale) else {
            panic!(
                "{family:?}: window scaling is not in force on the cookie connection\n{}\n{}",
                co.raw, cp.raw
            )
        };
        assert_eq!(
            o_ws,
            (p_ws.1, p_ws.0),
            "{family:?}: the two ends disagree on the window scales"
        );
        let tk = k.bulk(BULK_BYTES).unwrap_or_else(|e| panic!("{e:#}"));
        let tc = cookie.bulk(BULK_BYTES).unwrap_or_else(|e| panic!("{e:#}"));
        eprintln!(
            "{family:?} bulk {} MiB: kernel-made {:.0} Mbit/s ({:.2?}), cookie {:.0} Mbit/s ({:.2?})",
            BULK_BYTES >> 20,
            tk.mbit_per_sec(),
            tk.elapsed,
            tc.mbit_per_sec(),
            tc.elapsed
        );
    }
    drop(kernel);
    drop(sshd);
}

/// (h) Forged ACKs (random sequence and acknowledgment numbers, from FLOOD_NET, which the origin
/// routes) to tcp/22 under `on` are dropped and counted as `drop_syn_cookie_invalid`: no socket,
/// no flow entry, no reset from the origin's kernel.
#[test]
fn forged_acks_are_dropped_and_make_nothing() {
    let w = world("sc-acks", &["--syn-cookies", "on"]);
    let sockets = |w: &World| {
        ns_must(&w.o.pair.origin, "ss", &["-Htan", "state", "all"])
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("LISTEN"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(sockets(&w).is_empty(), "sockets before: {:?}", sockets(&w));
    for family in [Family::V4, Family::V6] {
        let before = w.counters();
        let flows = w.o.ld.flows();
        let tx0 =
            w.o.pair
                .peer_packets()
                .unwrap_or_else(|e| panic!("{e:#}"))
                .1;
        let spec = Spec {
            dst: family.origin(),
            kind: Kind::Ack,
            shape: Shape::Linux,
            sources: Sources::FloodNet,
            pace: Some(Pace::LIGHT),
            ..Spec::new(SSH_PORT, FORGED_ACKS, Duration::from_secs(10))
        };
        let st = Flood::start(&w.o.pair, spec)
            .and_then(Flood::wait)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            st.sent, FORGED_ACKS,
            "the forged-ACK flood sent {}",
            st.sent
        );
        // Whatever the origin's kernel sends back comes in on the peer.
        std::thread::sleep(Duration::from_millis(300));
        let back =
            w.o.pair
                .peer_packets()
                .unwrap_or_else(|e| panic!("{e:#}"))
                .1
                - tx0;
        let after = w.counters();
        let d = |n: &str| after[n] - before[n];
        eprintln!(
            "{family:?}: {} forged ACKs, drop_syn_cookie_invalid +{}, {back} frames back",
            st.sent,
            d("drop_syn_cookie_invalid")
        );
        assert!(
            d("drop_syn_cookie_invalid") >= st.sent * 99 / 100,
            "{family:?}: {} of {} forged ACKs counted as drop_syn_cookie_invalid: {before:?} -> {after:?}",
            d("drop_syn_cookie_invalid"),
            st.sent
        );
        assert_eq!(
            d("pass_syn_cookie_ack"),
            0,
            "{family:?}: a forged ACK passed"
        );
        assert!(
            back < st.sent / 100,
            "{family:?}: the origin answered the forged ACKs ({back} frames back for {}): they \
             reached its kernel",
            st.sent
        );
        assert_eq!(
            w.o.ld.flows(),
            flows,
            "{family:?}: forged ACKs made flow entries"
        );
        assert!(
            sockets(&w).is_empty(),
            "{family:?}: forged ACKs made sockets: {:?}",
            sockets(&w)
        );
    }
    assert_eq!(w.counters()["flow_insert_failed"], 0);
    w.must_login(Family::V4, "a login after the forged ACKs");
}

/// Without the kfunc (Linux 6.1; here `LOCKDOWN_FORCE_NO_REQSK=1`), `auto` installs no cookie
/// program and says so in one line; the detector still runs. Under a full-speed spoofed flood to
/// a port with a strict rate, the SYNs go to the kernel's own handshake (and its own
/// syncookies) uncharged while the flood lasts: the rate limit fails open instead of locking
/// every source out, and the logins get in. Nothing is answered from XDP.
#[test]
fn without_the_kfunc_a_strict_rate_fails_open_under_a_flood() {
    require_openssh();
    let tag = "sc-fall";
    let o = Origin::new(tag);
    o.pair
        .peer_xdp_pass()
        .unwrap_or_else(|e| panic!("attaching XDP_PASS to the peer's veth: {e:#}"));
    let sshd = Sshd::start(&o.pair, tag).unwrap_or_else(|e| panic!("starting sshd: {e:#}"));
    let out = o.ld.run_env(
        &["up", "--iface", ORIGIN_IF],
        &[("LOCKDOWN_FORCE_NO_REQSK", "1".to_owned())],
    );
    assert!(out.success(), "up without the kfunc: {out}");
    assert_eq!(
        out.stdout.matches("syn cookies: off").count(),
        1,
        "up says once that cookies cannot answer: {out}"
    );
    let w = World { sshd, o };
    assert_eq!(
        w.syn_cookies()["answering"],
        false,
        "status: cookies cannot answer"
    );
    let mut args = vec!["allow", "add", "tcp/22"];
    args.extend_from_slice(&RATE);
    w.o.ld.must(&args);
    let sources = fresh_sources(&w, Family::V4);
    let r = logins_under_flood(
        &w,
        &sources,
        With::Own(Family::V4, Sources::Anywhere),
        PRIMING,
    );
    assert_eq!(
        r.delta("syn_cookie_sent"),
        0,
        "no cookie program, no cookie"
    );
    assert!(
        r.delta("pass_syn_to_kernel") > 0,
        "the flood's SYNs went to the kernel's handshake uncharged: {:?} -> {:?}",
        r.before,
        r.after
    );
    assert_eq!(
        r.flows_after, r.flows_before,
        "the flow tables grew under the flood"
    );
    assert_eq!(r.after["flow_insert_failed"], 0, "flow_insert_failed");
}
