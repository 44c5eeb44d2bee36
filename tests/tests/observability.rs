//! Observability end-to-end tests: counters, the flow listing, the drop log, Prometheus metrics,
//! `status` and the help text, checked against real traffic between two namespaces.
//!
//! Each test builds its own namespace pair (see `lockdown_testbed::pair`) and pin root and removes
//! both when it ends, pass or fail. Needs root and the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test observability -- --test-threads=1
//! ```
//!
//! Timeouts only make a dropped packet or a hung command fail fast; no test asserts on timing.

use std::{
    collections::BTreeMap,
    fs,
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::Duration,
};

use lockdown_testbed::{
    bg::{Bg, log_events},
    cli::{self, wait_for},
    flood::syn_flood,
    netns::{in_ns, ip, ns_command},
    origin::Origin,
    pair::{ORIGIN_IF, ORIGIN_V4, PEER_IF, PEER_V4, PEER_V6, origin_addr, peer_addr},
    traffic::{OK_TIMEOUT, exchange, ping, tcp_connect, udp_query},
};
use nix::sys::signal::Signal;

const SSH: u16 = 22;
/// A listening origin service that is not allowed.
const WEB: u16 = 8080;
const PEER_ECHO: u16 = 7000;
const PEER_UDP: u16 = 5353;
/// Where the metrics servers listen, on the origin namespace's own loopback.
const METRICS_PORT: u16 = 19477;

type Counters = BTreeMap<String, u64>;

/// What the observability tests do through an [`Origin`].
trait Observe {
    /// Echo servers on the origin's 22 and 8080, the peer's 7000, and a UDP echo in the peer.
    fn with_services(self) -> Self;
    /// Every counter of `status --json --interval 0`.
    fn counters(&self) -> Counters;
}

impl Observe for Origin {
    fn with_services(self) -> Self {
        self.origin_echo(&[SSH, WEB])
            .peer_echo(&[PEER_ECHO])
            .peer_udp(PEER_UDP)
    }

    fn counters(&self) -> Counters {
        map_u64(&self.status(), "counters")
    }
}

/// An object of numbers in `status --json` (`counters`, `bytes`).
fn map_u64(s: &serde_json::Value, key: &str) -> Counters {
    s[key]
        .as_object()
        .unwrap_or_else(|| panic!("status --json has no {key:?} object: {s}"))
        .iter()
        .map(|(k, v)| {
            let n = v
                .as_u64()
                .unwrap_or_else(|| panic!("{key}.{k} is not an integer: {s}"));
            (k.clone(), n)
        })
        .collect()
}

fn delta(before: &Counters, after: &Counters) -> BTreeMap<String, i128> {
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

/// Runs `action`, then waits (bounded) until every counter in `rises` has risen by at least the
/// given amount; every counter in `still` must not have moved. Panics with the deltas otherwise.
fn expect_counters(
    w: &Origin,
    what: &str,
    action: impl FnOnce(),
    rises: &[(&str, i128)],
    still: &[&str],
) {
    let before = w.counters();
    for (name, _) in rises {
        assert!(
            before.contains_key(*name),
            "status --json has no counter {name:?}: {before:?}"
        );
    }
    action();
    let ok = |d: &BTreeMap<String, i128>| rises.iter().all(|(name, min)| d[*name] >= *min);
    let d = wait_for(Duration::from_secs(5), || {
        let d = delta(&before, &w.counters());
        ok(&d).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: expected {rises:?} to rise; counter deltas: {:?}",
            delta(&before, &w.counters())
        )
    });
    for name in still {
        assert_eq!(
            d[*name], 0,
            "{what}: {name} should not move; counter deltas: {d:?}"
        );
    }
    eprintln!("{what}: {d:?}");
}

/// A non-lockdown child (e.g. `ping`), killed and reaped on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// One raw SYN from the peer to the origin's `port` (no retransmission can follow).
fn one_syn(w: &Origin, port: u16) {
    let r = syn_flood(&w.pair, ORIGIN_V4, port, 1, Duration::from_secs(5));
    assert_eq!(r.sent, 1, "the SYN to {port} was not sent: {r:?}");
}

// ---------------------------------------------------------------------------------------------
// Counters.

#[test]
fn counters_move_by_reason() {
    let w = Origin::new("o-count").with_services();
    w.ld.up(&[]);

    expect_counters(
        &w,
        "inbound SYN to a closed port",
        || {
            let addr = origin_addr(WEB);
            match tcp_connect(&w.pair.peer, addr, Duration::from_millis(300)) {
                Ok(_) => panic!("inbound TCP to {addr} connected\n{}", w.context()),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "connect to {addr}: {e}"),
            }
        },
        &[("drop_new", 1)],
        &["pass_allowed_port"],
    );
    expect_counters(
        &w,
        "inbound connection to tcp/22",
        || {
            let mut s = tcp_connect(&w.pair.peer, origin_addr(SSH), OK_TIMEOUT)
                .unwrap_or_else(|e| panic!("inbound TCP to 22: {e}\n{}", w.context()));
            exchange(&mut s, b"ssh-ish").unwrap_or_else(|e| panic!("exchange on 22: {e}"));
        },
        &[("pass_allowed_port", 1)],
        &[],
    );
    expect_counters(
        &w,
        "inbound ping",
        || {
            assert!(
                !ping(&w.pair.peer, IpAddr::V4(ORIGIN_V4)),
                "an inbound ping got a reply"
            );
        },
        &[("drop_new", 1)],
        &["pass_established"],
    );
    expect_counters(
        &w,
        "outbound ping and its reply",
        || {
            assert!(
                ping(&w.pair.origin, IpAddr::V4(PEER_V4)),
                "outbound ping got no reply\n{}",
                w.context()
            );
        },
        &[
            ("egress_packets", 1),
            ("egress_flows_created", 1),
            ("pass_established", 1),
        ],
        &[],
    );
    expect_counters(
        &w,
        "ARP (after flushing the origin's neighbour cache)",
        || {
            ip(&w.pair.origin, &["-4", "neigh", "flush", "dev", ORIGIN_IF]);
            assert!(
                ping(&w.pair.origin, IpAddr::V4(PEER_V4)),
                "outbound ping after the ARP flush got no reply\n{}",
                w.context()
            );
        },
        &[("pass_non_ip", 1), ("pass_established", 1)],
        &[],
    );
    expect_counters(
        &w,
        "neighbour discovery (after flushing the origin's IPv6 neighbours)",
        || {
            ip(&w.pair.origin, &["-6", "neigh", "flush", "dev", ORIGIN_IF]);
            assert!(
                ping(&w.pair.origin, IpAddr::V6(PEER_V6)),
                "outbound ping6 got no reply\n{}",
                w.context()
            );
        },
        &[("pass_ndp", 1), ("pass_established", 1)],
        &[],
    );
    expect_counters(
        &w,
        "outbound TCP connection",
        || {
            let mut s = tcp_connect(&w.pair.origin, peer_addr(PEER_ECHO), OK_TIMEOUT)
                .unwrap_or_else(|e| panic!("outbound TCP: {e}\n{}", w.context()));
            exchange(&mut s, b"outbound").unwrap_or_else(|e| panic!("outbound exchange: {e}"));
        },
        &[
            ("egress_packets", 3),
            ("egress_flows_created", 1),
            ("pass_established", 2),
        ],
        &["drop_invalid"],
    );
    expect_counters(
        &w,
        "outbound UDP query",
        || {
            udp_query(&w.pair.origin, peer_addr(PEER_UDP), b"query", OK_TIMEOUT).unwrap_or_else(
                |e| panic!("outbound UDP query got no reply: {e}\n{}", w.context()),
            );
        },
        &[
            ("egress_packets", 1),
            ("egress_flows_created", 1),
            ("pass_established", 1),
        ],
        &[],
    );
    let s = w.status();
    let bytes = map_u64(&s, "bytes");
    let packets = map_u64(&s, "counters");
    for name in [
        "drop_new",
        "pass_allowed_port",
        "pass_established",
        "egress_packets",
    ] {
        assert!(
            bytes[name] >= 40 * packets[name],
            "bytes.{name} = {} is too small for {} packets: {s}",
            bytes[name],
            packets[name]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The flow table listing.

#[test]
fn flows_lists_filters_and_flushes() {
    let w = Origin::new("o-flows").with_services();
    w.ld.up(&[]);
    let mut conn = tcp_connect(&w.pair.origin, peer_addr(PEER_ECHO), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("outbound TCP: {e}"));
    exchange(&mut conn, b"listed").unwrap_or_else(|e| panic!("exchange: {e}"));
    udp_query(&w.pair.origin, peer_addr(PEER_UDP), b"q", OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("outbound UDP: {e}"));
    let local = conn.local_addr().expect("local address");
    let local_port = local.port();

    let is_ours = |f: &serde_json::Value| {
        f["proto"] == "tcp" && f["local_port"] == local_port && f["remote_port"] == PEER_ECHO
    };
    let all = w.flows_json(&[]);
    let ours = all
        .iter()
        .find(|f| is_ours(f))
        .unwrap_or_else(|| panic!("the outbound connection is not listed: {all:?}"));
    assert_eq!(
        ours["local"],
        ORIGIN_V4.to_string(),
        "local address: {ours}"
    );
    assert_eq!(
        ours["remote"],
        PEER_V4.to_string(),
        "remote address: {ours}"
    );
    assert_eq!(ours["state"], "established", "state: {ours}");
    assert_eq!(ours["seeded"], false, "learned, not seeded: {ours}");
    for key in ["age_secs", "idle_secs"] {
        assert!(
            ours[key].as_f64().is_some_and(|v| v >= 0.0),
            "{key} should be a non-negative number: {ours}"
        );
    }
    assert!(
        all.iter()
            .any(|f| f["proto"] == "udp" && f["remote_port"] == PEER_UDP),
        "the UDP query's flow is not listed: {all:?}"
    );

    let peer = PEER_V4.to_string();
    let port = local_port.to_string();
    let echo = PEER_ECHO.to_string();
    let origin = ORIGIN_V4.to_string();
    let cases: &[(&[&str], bool)] = &[
        (&["--proto", "tcp"], true),
        (&["--proto", "udp"], false),
        (&["--proto", "icmp"], false),
        (&["--port", &echo], true),
        (&["--port", &port], true),
        (&["--port", "7001"], false),
        (&["--addr", &peer], true),
        (&["--addr", &origin], true),
        (&["--addr", "10.231.0.99"], false),
        (&["--addr", "fd00:231::2"], false),
        (&["--proto", "tcp", "--port", &echo, "--addr", &peer], true),
        (&["--proto", "udp", "--port", &echo], false),
    ];
    for (filter, listed) in cases {
        let got = w.flows_json(filter);
        assert_eq!(
            got.iter().any(is_ours),
            *listed,
            "`flows {}` should {}list the connection: {got:?}",
            filter.join(" "),
            if *listed { "" } else { "not " }
        );
        if filter.first() == Some(&"--proto") {
            let proto = filter[1];
            assert!(
                got.iter().all(|f| f["proto"] == proto),
                "`flows {}` lists other protocols: {got:?}",
                filter.join(" ")
            );
        }
    }
    let udp = w.flows_json(&["--proto", "udp"]);
    assert!(
        !udp.is_empty() && udp.iter().all(|f| f["proto"] == "udp"),
        "`flows --proto udp`: {udp:?}"
    );
    w.ld.refuse(
        &["flows", "--iface", ORIGIN_IF, "--proto", "sctp"],
        &["sctp"],
    );

    let human = w.ld.must(&["flows", "--iface", ORIGIN_IF]);
    assert!(
        human.stdout.contains(&format!("{PEER_V4}:{PEER_ECHO}"))
            && human.stdout.contains(&format!("{ORIGIN_V4}:{local_port}"))
            && human.stdout.contains("established")
            && human.stdout.contains(" flows"),
        "human flows listing: {human}"
    );

    // Without --yes and without a terminal (stdin is /dev/null): refused, nothing removed.
    let n = all.len();
    w.ld.refuse(&["flows", "flush", "--iface", ORIGIN_IF], &["--yes"]);
    let still = w.flows_json(&[]);
    assert!(
        still.len() >= n && still.iter().any(is_ours),
        "a refused flush removed flows: {n} -> {still:?}"
    );

    let out =
        w.ld.must(&["flows", "flush", "--iface", ORIGIN_IF, "--yes"]);
    assert!(out.stdout.contains("flushed"), "flush should report: {out}");
    let left = w.flows_json(&[]);
    assert!(left.is_empty(), "flows flush --yes left flows: {left:?}");
    assert_eq!(w.status()["flows"], 0, "status after the flush");

    // The origin speaks first: its next packet tracks the connection again.
    exchange(&mut conn, b"after flush").unwrap_or_else(|e| {
        panic!(
            "the connection did not survive the flush: {e}\n{}",
            w.context()
        )
    });
    let again = w.flows_json(&["--port", &port]);
    assert!(
        again.iter().any(is_ours),
        "the connection was not tracked again after the flush: {again:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The drop log.

#[test]
fn log_count_prints_one_event_per_probe_and_exits() {
    const PROBED: u16 = 8443;
    let w = Origin::new("o-log");
    // The peer's IPv6 multicast-listener reports would be dropped and logged too; silence them.
    let peer = w.pair.peer.clone();
    in_ns(&peer, || {
        for path in [
            format!("/proc/sys/net/ipv6/conf/{PEER_IF}/disable_ipv6"),
            "/proc/sys/net/ipv6/conf/default/disable_ipv6".to_owned(),
        ] {
            fs::write(&path, "1").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        }
    });
    w.ld.up(&[]);

    // Drain whatever the ring already holds, so `--count 3` sees only the probes.
    let pending = w.counters()["log_events"];
    if pending > 0 {
        let drain = Bg::spawn(&w.ld, &["log", "--iface", ORIGIN_IF, "--json"]);
        wait_for(Duration::from_secs(10), || {
            let seen = drain.stdout_lines().len() as u64;
            (seen >= w.counters()["log_events"]).then_some(())
        })
        .unwrap_or_else(|| panic!("draining the ring failed\n{}", drain.output()));
        drain.signal(Signal::SIGKILL);
        eprintln!("drained: {:?}", drain.stdout_lines());
    }

    let mut events_before = 0;
    let events = log_events(&w.ld, 3, || {
        events_before = w.counters()["log_events"];
        for _ in 0..3 {
            one_syn(&w, PROBED);
        }
    });
    for e in &events {
        assert_eq!(e["reason"], "drop_new", "event: {e}");
        assert_eq!(e["proto"], "tcp", "event: {e}");
        assert_eq!(e["dport"], PROBED, "event: {e}");
        assert_eq!(e["dst"], ORIGIN_V4.to_string(), "event: {e}");
        assert_eq!(e["tcp_flags"], "S", "event: {e}");
        assert_eq!(e["interface"], ORIGIN_IF, "event: {e}");
        assert!(
            e["time"].as_str().is_some_and(|t| !t.is_empty()),
            "event without a time: {e}"
        );
    }
    let events_after = w.counters()["log_events"];
    assert!(
        events_after >= events_before + 3,
        "log_events should count the three events: {events_before} -> {events_after}"
    );
}

/// Under a flood the log is rate-limited, but every drop is accounted for: either an event was
/// written (`log_events`) or it was held back (`log_suppressed`).
#[test]
fn every_drop_is_logged_or_counted_as_suppressed() {
    const FLOOD: u64 = 1000;
    let w = Origin::new("o-budget");
    w.ld.up(&[]);
    // Events are written only while a reader runs.
    let reader = Bg::spawn(&w.ld, &["log", "--iface", ORIGIN_IF, "--json"]);
    wait_for(Duration::from_secs(10), || {
        reader.holds_bpf_map().then_some(())
    })
    .unwrap_or_else(|| panic!("`log` never opened the ring buffer\n{}", reader.output()));
    assert_eq!(
        w.ld.status_json()["logging"],
        true,
        "a running `log` turns events on"
    );
    let before = w.counters();
    let r = syn_flood(&w.pair, ORIGIN_V4, WEB, FLOOD, Duration::from_secs(20));
    assert_eq!(r.sent, FLOOD, "the flood stopped early: {r:?}");
    let drops = |d: &BTreeMap<String, i128>| -> i128 {
        d.iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(_, v)| *v)
            .sum()
    };
    let d = wait_for(Duration::from_secs(5), || {
        let d = delta(&before, &w.counters());
        (d["drop_new"] >= 900 && d["log_events"] + d["log_suppressed"] == drops(&d)).then_some(d)
    })
    .unwrap_or_else(|| {
        let d = delta(&before, &w.counters());
        panic!(
            "expected log_events + log_suppressed == all drops ({}) after a {FLOOD}-SYN flood: {d:?}",
            drops(&d)
        )
    });
    eprintln!(
        "{} drops: {} logged, {} suppressed",
        drops(&d),
        d["log_events"],
        d["log_suppressed"]
    );
    assert!(d["log_events"] >= 1, "nothing was logged: {d:?}");
    reader.signal(Signal::SIGTERM);
    wait_for(Duration::from_secs(10), || {
        (w.ld.status_json()["logging"] == false).then_some(())
    })
    .unwrap_or_else(|| panic!("`log` did not turn events off at exit\n{}", reader.output()));
    // With no reader, drops cost no event and no suppression count.
    let before = w.counters();
    let r = syn_flood(&w.pair, ORIGIN_V4, WEB, 100, Duration::from_secs(20));
    assert_eq!(r.sent, 100);
    let d = wait_for(Duration::from_secs(5), || {
        let d = delta(&before, &w.counters());
        (d["drop_new"] >= 90).then_some(d)
    })
    .unwrap_or_else(|| panic!("the second flood did not arrive"));
    assert_eq!(
        d["log_events"] + d["log_suppressed"],
        0,
        "no reader, no events: {d:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus metrics.

/// `GET path` over HTTP/1.0 to `addr` from inside `ns`: (status line, body).
fn http_get(ns: &str, addr: SocketAddr, path: &str) -> io::Result<(String, String)> {
    let path = path.to_owned();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, OK_TIMEOUT)?;
        s.set_read_timeout(Some(OK_TIMEOUT))?;
        s.set_write_timeout(Some(OK_TIMEOUT))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other(format!("no header end in {raw:?}")))?;
        let status = head.lines().next().unwrap_or("").to_owned();
        Ok((status, body.to_owned()))
    })
}

/// A parsed sample: metric name and labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
}

/// Parses Prometheus / OpenMetrics text, panicking on any malformed line. Returns the samples
/// and the metric families that have both HELP and TYPE lines.
fn parse_metrics(text: &str) -> (BTreeMap<Sample, f64>, BTreeMap<String, String>) {
    let mut samples = BTreeMap::new();
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_owned(), text.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("TYPE line without a type: {line:?}"));
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("metrics value is not a number ({e}): {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
                let labels = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("label without '=': {line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label value: {line:?}"));
                        assert!(
                            !k.is_empty()
                                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                            "bad label name {k:?}: {line:?}"
                        );
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.starts_with("lockdown_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?} should be lockdown_*: {line:?}"
        );
        let previous = samples.insert(
            Sample {
                name: name.to_owned(),
                labels,
            },
            value,
        );
        assert!(previous.is_none(), "duplicate series: {line:?}");
    }
    let described = types
        .into_iter()
        .filter(|(name, _)| help.contains_key(name))
        .collect();
    (samples, described)
}

/// The value of `name` with exactly `labels`.
fn sample(samples: &BTreeMap<Sample, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = Sample {
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    samples.get(&key).copied()
}

/// Scrapes `/metrics` until it answers (bounded), checks the format, and returns the samples.
fn scrape(w: &Origin, server: &mut Bg) -> BTreeMap<Sample, f64> {
    let addr: SocketAddr = format!("127.0.0.1:{METRICS_PORT}")
        .parse()
        .expect("address");
    let (status, body) = wait_for(Duration::from_secs(10), || {
        assert!(
            server.running(),
            "the metrics server exited\n{}",
            server.output()
        );
        http_get(&w.pair.origin, addr, "/metrics").ok()
    })
    .unwrap_or_else(|| panic!("/metrics on {addr} never answered\n{}", server.output()));
    assert!(status.contains(" 200"), "GET /metrics: {status}\n{body}");
    let (samples, described) = parse_metrics(&body);
    for family in [
        "lockdown_packets",
        "lockdown_bytes",
        "lockdown_flows",
        "lockdown_flows_capacity",
        "lockdown_flows_high_water",
        "lockdown_flow_table_pressure",
    ] {
        assert!(
            described.contains_key(family),
            "no HELP and TYPE lines for {family}: {described:?}\n{body}"
        );
    }
    assert_eq!(described["lockdown_packets"], "counter", "{body}");
    assert_eq!(described["lockdown_flows"], "gauge", "{body}");
    samples
}

/// Checks the scraped counters against `status`: every counter is there, and drop_new equals
/// status's when no packet arrived between the two reads (retried a few times otherwise).
fn check_metrics_match_status(w: &Origin, server: &mut Bg) {
    let labels = |reason: &'static str, kind: &'static str| {
        [("interface", ORIGIN_IF), ("reason", reason), ("kind", kind)]
    };
    let mut last = String::new();
    for _ in 0..5 {
        let before = w.status();
        let samples = scrape(w, server);
        let after = w.status();
        let counters = map_u64(&before, "counters");
        for name in counters.keys() {
            let found = samples
                .iter()
                .any(|(s, _)| s.name == "lockdown_packets_total" && s.labels["reason"] == *name);
            assert!(
                found,
                "no lockdown_packets_total for reason {name}: {samples:?}"
            );
        }
        let metric = sample(
            &samples,
            "lockdown_packets_total",
            &labels("drop_new", "drop"),
        )
        .unwrap_or_else(|| panic!("no drop_new sample: {samples:?}"));
        let bytes = sample(
            &samples,
            "lockdown_bytes_total",
            &labels("drop_new", "drop"),
        )
        .unwrap_or_else(|| panic!("no drop_new bytes sample: {samples:?}"));
        for (table, family) in [
            ("live", "ipv4"),
            ("live", "ipv6"),
            ("closing", "ipv4"),
            ("closing", "ipv6"),
        ] {
            let labels = [
                ("interface", ORIGIN_IF),
                ("table", table),
                ("family", family),
            ];
            let capacity = sample(&samples, "lockdown_flows_capacity", &labels);
            let want = before["tables"]
                .as_array()
                .and_then(|t| {
                    t.iter()
                        .find(|o| o["table"] == table && o["family"] == family)
                })
                .and_then(|o| o["capacity"].as_f64());
            assert!(
                want.is_some(),
                "status has no {table} {family} table: {before}"
            );
            assert_eq!(
                capacity, want,
                "lockdown_flows_capacity vs status for {table} {family}"
            );
            if table == "live" {
                assert_eq!(
                    want,
                    before["max_flows"].as_f64(),
                    "live capacity is max_flows"
                );
            }
            let pressure = sample(&samples, "lockdown_flow_table_pressure", &labels)
                .unwrap_or_else(|| panic!("no lockdown_flow_table_pressure: {samples:?}"));
            assert!((0.0..=1.0).contains(&pressure), "pressure {pressure}");
            for gauge in ["lockdown_flows", "lockdown_flows_high_water"] {
                assert!(
                    sample(&samples, gauge, &labels).is_some(),
                    "no {gauge} for {table} {family}: {samples:?}"
                );
            }
        }
        let (b, a) = (
            before["counters"]["drop_new"].as_f64().unwrap_or(-1.0),
            after["counters"]["drop_new"].as_f64().unwrap_or(-1.0),
        );
        let (bb, ab) = (
            before["bytes"]["drop_new"].as_f64().unwrap_or(-1.0),
            after["bytes"]["drop_new"].as_f64().unwrap_or(-1.0),
        );
        assert!(
            b <= metric && metric <= a && bb <= bytes && bytes <= ab,
            "the scraped drop_new ({metric} packets, {bytes} bytes) is outside status's \
             [{b}, {a}] packets, [{bb}, {ab}] bytes"
        );
        assert!(
            metric >= 3.0,
            "the three probes are not in drop_new: {metric}"
        );
        if b == a {
            assert_eq!(metric, b, "lockdown_packets_total drop_new vs status");
            assert_eq!(bytes, bb, "lockdown_bytes_total drop_new vs status");
            return;
        }
        last = format!("drop_new moved during the scrape: {b} -> {a}");
    }
    panic!("could not compare a quiet scrape with status: {last}");
}

#[test]
fn exporter_serves_prometheus_text() {
    let w = Origin::new("o-exp").with_services();
    w.ld.up(&[]);
    for _ in 0..3 {
        one_syn(&w, WEB);
    }
    let listen = format!("127.0.0.1:{METRICS_PORT}");
    let mut server = Bg::spawn(&w.ld, &["exporter", "--listen", &listen]);
    server.wait_stdout("serving", Duration::from_secs(10));
    check_metrics_match_status(&w, &mut server);

    let addr: SocketAddr = listen.parse().expect("address");
    let (status, _) =
        http_get(&w.pair.origin, addr, "/nope").unwrap_or_else(|e| panic!("GET /nope: {e}"));
    assert!(status.contains(" 404"), "GET /nope: {status}");
    // The metrics are read at each scrape: a new drop shows up.
    let before = sample(
        &scrape(&w, &mut server),
        "lockdown_packets_total",
        &[
            ("interface", ORIGIN_IF),
            ("reason", "drop_new"),
            ("kind", "drop"),
        ],
    )
    .expect("drop_new sample");
    one_syn(&w, WEB);
    wait_for(Duration::from_secs(5), || {
        let now = sample(
            &scrape(&w, &mut server),
            "lockdown_packets_total",
            &[
                ("interface", ORIGIN_IF),
                ("reason", "drop_new"),
                ("kind", "drop"),
            ],
        )
        .expect("drop_new sample");
        (now > before).then_some(())
    })
    .unwrap_or_else(|| panic!("a new drop never showed in /metrics"));
}

#[test]
fn run_metrics_serves_the_same() {
    let w = Origin::new("o-runm").with_services();
    let listen = format!("127.0.0.1:{METRICS_PORT}");
    let mut run = Bg::spawn(&w.ld, &["run", "--iface", ORIGIN_IF, "--metrics", &listen]);
    run.wait_stdout("locked down", Duration::from_secs(10));
    for _ in 0..3 {
        one_syn(&w, WEB);
    }
    check_metrics_match_status(&w, &mut run);
    run.signal(Signal::SIGTERM);
    let status = run.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "`run --metrics` after SIGTERM: {status}\n{}",
        run.output()
    );
    assert!(
        !w.ld.is_locked(),
        "`run --metrics` did not release on SIGTERM"
    );
}

// ---------------------------------------------------------------------------------------------
// status.

#[test]
fn status_human_shows_the_essentials() {
    let w = Origin::new("o-stat").with_services();
    w.ld.up(&["--allow", "tcp/22", "--allow", "udp/5353"]);
    let _conn = tcp_connect(&w.pair.origin, peer_addr(PEER_ECHO), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("outbound TCP: {e}"));
    let out = w.ld.must(&["status", "--iface", ORIGIN_IF]);
    let field = |name: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).filter(|r| r.starts_with(' ')))
            .unwrap_or_else(|| panic!("status has no {name:?} line: {out}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("interface"), ORIGIN_IF, "{out}");
    let mode = field("mode");
    assert!(
        mode.contains("native") && mode.contains("enforce"),
        "mode line: {mode:?}\n{out}"
    );
    let allow = field("allow");
    assert!(
        allow.contains("tcp/22") && allow.contains("udp/5353"),
        "allow line: {allow:?}\n{out}"
    );
    let flows = field("flows");
    let (n, rest) = flows
        .split_once(" / ")
        .unwrap_or_else(|| panic!("flows line is not \"N / capacity\": {flows:?}"));
    let n: u64 = n
        .parse()
        .unwrap_or_else(|e| panic!("flow count {n:?} ({e}): {out}"));
    assert!(n >= 1, "the outbound connection is not counted: {out}");
    assert!(rest.starts_with("65536"), "capacity: {flows:?}");
    let header = out
        .stdout
        .lines()
        .find(|l| l.starts_with("counter"))
        .unwrap_or_else(|| panic!("no counter table: {out}"));
    assert!(
        header.contains("packets") && header.contains("bytes") && header.contains("pps"),
        "counter table header: {header:?}"
    );
    let names: Vec<String> = w.counters().into_keys().collect();
    for name in &names {
        let row = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}: {out}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 4, "row {row:?}");
        for c in &cols[1..] {
            assert!(c.parse::<f64>().is_ok(), "non-numeric column in {row:?}");
        }
    }

    w.ld.down();
    w.ld.up(&["--monitor"]);
    let out =
        w.ld.must(&["status", "--iface", ORIGIN_IF, "--interval", "0"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("mode") && l.contains("monitor")),
        "status should show monitor mode: {out}"
    );
}

#[test]
fn status_rates_under_steady_traffic() {
    let w = Origin::new("o-rate").with_services();
    w.ld.up(&[]);
    let quick = w.status();
    assert!(
        quick.get("rates_pps").is_none(),
        "--interval 0 should skip rates: {quick}"
    );
    let before = w.counters()["pass_established"];
    let _ping = ChildGuard(
        ns_command(&w.pair.origin, "ping")
            .args(["-4", "-n", "-q", "-i", "0.05", "-c", "200", "-W", "1"])
            .arg(PEER_V4.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ping: {e}")),
    );
    wait_for(Duration::from_secs(5), || {
        (w.counters()["pass_established"] > before + 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the ping replies are not counted\n{}", w.context()));
    let out = w.ld.must(&[
        "status",
        "--iface",
        ORIGIN_IF,
        "--json",
        "--interval",
        "0.5",
    ]);
    let s: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"));
    assert_eq!(s["rate_interval_secs"], 0.5, "{s}");
    let rates = s["rates_pps"]
        .as_object()
        .unwrap_or_else(|| panic!("no rates_pps with --interval 0.5: {s}"));
    for name in map_u64(&s, "counters").keys() {
        assert!(
            rates
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .is_some(),
            "no rate for {name}: {s}"
        );
    }
    for name in ["pass_established", "egress_packets"] {
        let r = rates[name].as_f64().unwrap_or(0.0);
        assert!(
            r > 0.0,
            "{name} rate under steady pings should be positive: {s}"
        );
    }
    w.ld.refuse(
        &["status", "--iface", ORIGIN_IF, "--interval", "61"],
        &["--interval"],
    );
}

// ---------------------------------------------------------------------------------------------
// Help.

#[test]
fn every_verb_has_help_with_an_example() {
    let bin = cli::bin();
    let top = Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("running lockdown --help: {e}"));
    assert!(top.status.success(), "lockdown --help: {}", top.status);
    let text = String::from_utf8_lossy(&top.stdout).into_owned();
    let verbs: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|v| *v != "help")
        .map(str::to_owned)
        .collect();
    for expected in [
        "up", "down", "run", "allow", "status", "confirm", "flows", "log", "exporter",
    ] {
        assert!(
            verbs.iter().any(|v| v == expected),
            "`lockdown --help` does not list {expected}: {text}"
        );
    }
    let mut missing = Vec::new();
    for verb in &verbs {
        let out = Command::new(&bin)
            .args([verb.as_str(), "--help"])
            .output()
            .unwrap_or_else(|e| panic!("running lockdown {verb} --help: {e}"));
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "`lockdown {verb} --help` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if !help
            .lines()
            .any(|l| l.contains("Example") && l.contains("lockdown "))
        {
            missing.push(format!("--- lockdown {verb} --help ---\n{help}"));
        }
    }
    assert!(
        missing.is_empty(),
        "verbs whose --help has no Example line:\n{}",
        missing.join("\n")
    );
}
