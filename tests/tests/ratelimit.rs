//! Per-source rate limits on new connections (`allow add tcp/22 --rate 10/min --burst 5`) on a
//! veth between two namespaces: the burst, then refusals, for one source only; the refill; no
//! limit on established connections; a spoofed SYN flood neither locks a legitimate source out
//! nor grows any map; bad input changes nothing.

use std::{net::SocketAddr, time::Duration};

use lockdown_testbed::{
    bg::log_events,
    cli::wait_for,
    flood::syn_flood,
    netns::{ip, ns_command},
    origin::Origin,
    pair::{Family, ORIGIN_V4, PEER_IF, PEER_V4},
    traffic::{OK_TIMEOUT, exchange, tcp_connect},
};

const SSH: u16 = 22;
/// A second source on the peer's link.
const OTHER: &str = "10.231.0.3";

/// A locked-down origin with an echo server on its SSH port, and [`OTHER`] on the peer's side.
/// The peer receives the origin's `XDP_TX` frames: under a flood the default `auto` answers
/// SYNs with cookie SYN-ACKs from XDP, legitimate sources' included.
fn world(tag: &str) -> Origin {
    let w = Origin::new(tag).origin_echo(&[SSH]);
    w.pair
        .peer_xdp_pass()
        .unwrap_or_else(|e| panic!("attaching XDP_PASS to the peer's veth: {e:#}"));
    ip(
        &w.pair.peer,
        &["addr", "add", &format!("{OTHER}/24"), "dev", PEER_IF],
    );
    w.up(&[]);
    w
}

/// What the rate-limit tests check through an [`Origin`].
trait RateChecks {
    /// One TCP connection to the origin's SSH port from `src`, closed at once: whether it
    /// connected within a second (a dropped SYN times out).
    fn connect_from(&self, src: &str) -> bool;
    /// `allow list --json`, parsed.
    fn allow_json(&self) -> serde_json::Value;
}

impl RateChecks for Origin {
    fn connect_from(&self, src: &str) -> bool {
        let out = ns_command(&self.pair.peer, "nc")
            .args(["-z", "-w", "1", "-s", src, &ORIGIN_V4.to_string(), "22"])
            .output()
            .unwrap_or_else(|e| panic!("running nc (Debian package netcat-openbsd): {e}"));
        out.status.success()
    }

    fn allow_json(&self) -> serde_json::Value {
        let out = self.ld.must(&["allow", "list", "--json"]);
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

#[test]
fn a_source_gets_its_burst_then_its_rate_and_others_are_unaffected() {
    let w = world("rl-burst");
    // An established connection from the limited source, opened before the limit.
    let mut open = tcp_connect(
        &w.pair.peer,
        SocketAddr::new(Family::V4.origin(), SSH),
        OK_TIMEOUT,
    )
    .expect("connecting before the limit");

    let out =
        w.ld.must(&["allow", "add", "tcp/22", "--rate", "10/min", "--burst", "5"]);
    assert!(out.stdout.contains("10/min burst 5"), "{out}");
    assert_eq!(
        w.allow_json()[0]["rate"],
        "10/min burst 5",
        "allow list shows the rate"
    );

    let src = PEER_V4.to_string();
    for i in 1..=5 {
        assert!(
            w.connect_from(&src),
            "connection {i} of the burst of 5 was refused"
        );
    }
    let before = w.ld.counter("drop_rate_limited");
    for i in 6..=7 {
        assert!(
            !w.connect_from(&src),
            "connection {i}, beyond the burst, got through"
        );
    }
    assert!(
        w.ld.counter("drop_rate_limited") > before,
        "drop_rate_limited did not count"
    );
    assert!(
        w.connect_from(OTHER),
        "a second source was limited by the first one's rate"
    );
    exchange(&mut open, b"established connections are never limited")
        .expect("the established connection of a limited source");

    // One connection per 6 s (10/min): the source gets through again after the refill interval.
    let back = wait_for(Duration::from_secs(15), || {
        w.connect_from(&src).then_some(())
    });
    assert!(
        back.is_some(),
        "no connection got through 15 s after the burst"
    );
    assert!(
        !w.connect_from(&src),
        "the refill gave back more than one connection"
    );

    // `none` lifts the limit.
    w.ld.must(&["allow", "add", "tcp/22", "--rate", "none"]);
    assert!(w.allow_json()[0]["rate"].is_null());
    for i in 1..=8 {
        assert!(
            w.connect_from(&src),
            "connection {i} refused after the limit was lifted"
        );
    }
}

#[test]
fn a_spoofed_flood_neither_locks_a_source_out_nor_grows_a_map() {
    let w = world("rl-flood");
    w.ld.must(&["allow", "add", "tcp/22", "--rate", "10/min", "--burst", "5"]);
    let flows_before = w.ld.flows();
    let flood = std::thread::scope(|s| {
        let pair = &w.pair;
        let flood =
            s.spawn(move || syn_flood(pair, ORIGIN_V4, SSH, 60_000, Duration::from_secs(20)));
        // The legitimate source, under its rate, connects while the flood runs.
        std::thread::sleep(Duration::from_millis(200));
        for i in 1..=3 {
            assert!(
                w.connect_from(OTHER),
                "legitimate connection {i} refused during the flood"
            );
        }
        flood.join().expect("the flood thread")
    });
    assert!(
        flood.sent > 10_000,
        "the flood sent only {} SYNs",
        flood.sent
    );
    assert!(
        w.connect_from(OTHER),
        "the legitimate source after the flood"
    );
    assert_eq!(w.ld.flows(), flows_before, "the flood created flow entries");
    let status = w.ld.status_json();
    for t in status["tables"].as_array().expect("tables") {
        assert!(
            t["entries"].as_u64() == Some(0),
            "a flow table grew: {status}"
        );
    }
    let limited = w.ld.counter("drop_rate_limited");
    eprintln!("flood: {} SYNs sent, {limited} limited", flood.sent);
}

#[test]
fn bad_rates_are_refused_and_change_nothing() {
    let w = world("rl-bad");
    w.ld.must(&["allow", "add", "udp/53"]);
    let before = w.allow_json();
    for (args, needle) in [
        (
            vec!["allow", "add", "tcp/22", "--rate", "0/min"],
            "--rate 0/min",
        ),
        (
            vec!["allow", "add", "tcp/22", "--rate", "10/fortnight"],
            "--rate 10/fortnight",
        ),
        (
            vec!["allow", "add", "tcp/22", "--rate", "ten/min"],
            "--rate ten/min",
        ),
        (
            vec!["allow", "add", "tcp/22", "--rate", "10/min", "--burst", "0"],
            "--rate 10/min",
        ),
        (
            vec!["allow", "add", "udp/53", "--rate", "1/s"],
            "rates limit TCP connection requests",
        ),
        (
            vec!["allow", "del", "tcp/22", "--rate", "1/s"],
            "--rate applies to `allow add`",
        ),
        (vec!["allow", "add", "tcp/22", "--burst", "3"], "--rate"),
    ] {
        w.ld.refuse(&args, &[needle]);
        assert_eq!(
            w.allow_json(),
            before,
            "`{}` changed the allowlist",
            args.join(" ")
        );
    }
}

#[test]
fn lockdown_log_names_the_rate_limited_drops() {
    let w = world("rl-log");
    w.ld.must(&["allow", "add", "tcp/22", "--rate", "1/h", "--burst", "1"]);
    let src = PEER_V4.to_string();
    assert!(w.connect_from(&src), "the burst of 1");
    let events = log_events(&w.ld, 1, || {
        assert!(!w.connect_from(&src), "beyond the burst")
    });
    assert_eq!(
        events[0]["reason"], "drop_rate_limited",
        "event: {}",
        events[0]
    );
    assert_eq!(events[0]["dport"], SSH, "event: {}", events[0]);
}
