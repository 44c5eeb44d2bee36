//! The flow table under legitimate load: connections the allowlist vouches for take no entry, closing
//! flows never push out the origin's live ones, and removing a rule keeps the connections it let
//! in — also those DNAT'd to a server in another namespace (a container's published port).
//!
//! Each scenario is the one the flow-table issue describes, on a veth pair between fresh
//! namespaces, with `--max-flows 1024` and three times that many connections. Every loop is
//! bounded in count and each connection in time.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use lockdown_testbed::{
    netns::{self, in_ns, ip, ns_must, ns_run},
    origin::Origin,
    pair::{Family, any},
    traffic::{OK_TIMEOUT, Serve, TcpServer, exchange, tcp_connect},
};

const MAX_FLOWS: u32 = 1024;
/// Three times the table: enough to evict the idle flow many times over if churn could.
const CHURN: usize = 3 * MAX_FLOWS as usize;
const WEB: u16 = 8080;
/// Where the peer listens for the origin's idle outbound connection.
const IDLE_PORT: u16 = 9100;
/// Where the peer echoes for the origin's churning outbound connections.
const UPSTREAM_PORT: u16 = 9200;

/// What the flow-table tests do through an [`Origin`].
trait StateChecks {
    /// `lockdown up --max-flows MAX_FLOWS --allow RULE…`.
    fn up_allowing(&self, allow: &[&str]);
    /// Flows from `flows --json` with `local_port` `port`.
    fn flows_on(&self, port: u16) -> Vec<serde_json::Value>;
    /// `status` and `flows`, for failure messages.
    fn status_and_flows(&self) -> String;
}

impl StateChecks for Origin {
    fn up_allowing(&self, allow: &[&str]) {
        let max = MAX_FLOWS.to_string();
        let mut args = vec!["--max-flows", max.as_str()];
        for a in allow {
            args.extend(["--allow", a]);
        }
        let out = self.ld.up(&args);
        assert!(out.success(), "lockdown up: {out}");
    }

    fn flows_on(&self, port: u16) -> Vec<serde_json::Value> {
        let out = self.ld.must(&["flows", "--json"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("flows --json is not a JSON array ({e}): {out}"));
        all.into_iter()
            .filter(|f| f["local_port"] == port)
            .collect()
    }

    fn status_and_flows(&self) -> String {
        let status = self.ld.run(&["status"]);
        let flows = self.ld.run(&["flows"]);
        format!("--- status\n{}\n--- flows\n{}", status.stdout, flows.stdout)
    }
}

/// A connection the origin opened to the peer and left idle; the peer will speak first.
struct Idle {
    origin_side: TcpStream,
    peer_side: TcpStream,
}

impl Idle {
    fn open(w: &Origin, family: Family) -> Self {
        let addr = SocketAddr::new(family.peer(), IDLE_PORT);
        let listener = in_ns(&w.pair.peer, move || {
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("binding {addr} in the peer: {e}"))
        });
        let origin_side = tcp_connect(&w.pair.origin, addr, OK_TIMEOUT)
            .unwrap_or_else(|e| panic!("the origin's outbound connection to {addr}: {e}"));
        let (peer_side, _) = listener
            .accept()
            .unwrap_or_else(|e| panic!("accepting the origin's connection: {e}"));
        Self {
            origin_side,
            peer_side,
        }
    }

    /// The peer pushes on the idle connection; the origin must receive it.
    fn assert_push_arrives(mut self, w: &Origin, what: &str) {
        let msg = b"the remote speaks first";
        self.peer_side
            .write_all(msg)
            .unwrap_or_else(|e| panic!("{what}: the peer's push: {e}"));
        self.origin_side
            .set_read_timeout(Some(OK_TIMEOUT))
            .unwrap_or_else(|e| panic!("setting a read timeout: {e}"));
        let mut got = vec![0u8; msg.len()];
        if let Err(e) = self.origin_side.read_exact(&mut got) {
            panic!(
                "{what}: the peer's push on the origin's idle connection was lost: {e}\n{}",
                w.status_and_flows()
            );
        }
        assert_eq!(&got, msg, "{what}: the push arrived garbled");
    }
}

/// `n` connections from `from` to `to`, each exchanging a byte and closing (the client closes
/// first), one after another. Panics on the first failure.
fn churn(from: &str, to: SocketAddr, n: usize) {
    in_ns(from, move || {
        for i in 0..n {
            let mut s = TcpStream::connect_timeout(&to, OK_TIMEOUT)
                .unwrap_or_else(|e| panic!("connection {i} of {n} to {to}: {e}"));
            s.set_read_timeout(Some(OK_TIMEOUT)).ok();
            exchange(&mut s, b"x").unwrap_or_else(|e| panic!("exchange {i} of {n}: {e}"));
        }
    });
}

fn accepted_churn_keeps_the_idle_outbound_flow(family: Family, tag: &str) {
    let mut w = Origin::new(tag);
    w.servers
        .push(TcpServer::start(&w.pair.origin, any(WEB), Serve::Echo));
    w.up_allowing(&["tcp/22", "tcp/8080"]);
    let idle = Idle::open(&w, family);
    let created = w.ld.counter("egress_flows_created");
    churn(&w.pair.peer, SocketAddr::new(family.origin(), WEB), CHURN);
    let on_web = w.flows_on(WEB);
    assert!(
        on_web.is_empty(),
        "accepted connections on an allowed port took flow entries: {on_web:?}"
    );
    assert_eq!(
        w.ld.counter("egress_flows_created"),
        created,
        "{CHURN} accepted connections created flow entries\n{}",
        w.status_and_flows()
    );
    idle.assert_push_arrives(
        &w,
        &format!("after {CHURN} accepted connections ({family:?})"),
    );
}

#[test]
fn accepted_churn_on_an_allowed_port_takes_no_state_ipv4() {
    accepted_churn_keeps_the_idle_outbound_flow(Family::V4, "st-acc4");
}

#[test]
fn accepted_churn_on_an_allowed_port_takes_no_state_ipv6() {
    accepted_churn_keeps_the_idle_outbound_flow(Family::V6, "st-acc6");
}

fn outbound_churn_keeps_the_idle_outbound_flow(family: Family, tag: &str) {
    let mut w = Origin::new(tag);
    w.servers.push(TcpServer::start(
        &w.pair.peer,
        any(UPSTREAM_PORT),
        Serve::Echo,
    ));
    w.up_allowing(&["tcp/22"]);
    let idle = Idle::open(&w, family);
    let created = w.ld.counter("egress_flows_created");
    churn(
        &w.pair.origin,
        SocketAddr::new(family.peer(), UPSTREAM_PORT),
        CHURN,
    );
    let made = w.ld.counter("egress_flows_created") - created;
    assert!(
        made >= CHURN as u64,
        "the origin's {CHURN} outbound connections should each have had an entry, got {made}"
    );
    let s = w.ld.status_json();
    let tables = s["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("status --json has no tables: {s}"));
    let closing_hw: u64 = tables
        .iter()
        .filter(|t| t["table"] == "closing")
        .map(|t| t["high_water"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        closing_hw > 0,
        "closed flows never reached a closing table: {s}"
    );
    idle.assert_push_arrives(
        &w,
        &format!("after {CHURN} outbound connections opened and closed ({family:?})"),
    );
}

#[test]
fn outbound_churn_never_evicts_a_live_flow_ipv4() {
    outbound_churn_keeps_the_idle_outbound_flow(Family::V4, "st-out4");
}

#[test]
fn outbound_churn_never_evicts_a_live_flow_ipv6() {
    outbound_churn_keeps_the_idle_outbound_flow(Family::V6, "st-out6");
}

/// A third namespace playing a container behind the origin: `ldc0` (origin, 10.232.0.1) ↔ `ldc1`
/// (container, 10.232.0.2). Deleted on drop.
struct Container {
    ns: String,
}

const CONTAINER_V4: &str = "10.232.0.2";

impl Container {
    fn new(origin: &str, tag: &str) -> Self {
        let ns = format!("ld-{tag}-c-{}", std::process::id());
        netns::add(&ns).unwrap_or_else(|e| panic!("{e:#}"));
        let c = Self { ns };
        ip(
            origin,
            &[
                "link", "add", "ldc0", "type", "veth", "peer", "name", "ldc1", "netns", &c.ns,
            ],
        );
        ip(origin, &["addr", "add", "10.232.0.1/24", "dev", "ldc0"]);
        ip(origin, &["link", "set", "ldc0", "up"]);
        ip(&c.ns, &["link", "set", "lo", "up"]);
        ip(
            &c.ns,
            &["addr", "add", &format!("{CONTAINER_V4}/24"), "dev", "ldc1"],
        );
        ip(&c.ns, &["link", "set", "ldc1", "up"]);
        ip(&c.ns, &["route", "add", "default", "via", "10.232.0.1"]);
        c
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = netns::del(&self.ns) {
            eprintln!("warning: {e:#}");
        }
    }
}

#[test]
fn allow_del_keeps_a_connection_dnatd_to_a_container() {
    let tag = "st-dnat";
    let mut w = Origin::new(tag);
    let c = Container::new(&w.pair.origin, tag);
    // The origin publishes the container's port 80 as its own 8080, as `docker run -p 8080:80`
    // does: DNAT in the origin's namespace, and forwarding.
    ns_must(
        &w.pair.origin,
        "sysctl",
        &["-q", "-w", "net.ipv4.ip_forward=1"],
    );
    let to = format!("{CONTAINER_V4}:80");
    let web = WEB.to_string();
    for cmd in [
        &["add", "table", "ip", "ldnat"][..],
        &[
            "add",
            "chain",
            "ip",
            "ldnat",
            "prerouting",
            "{ type nat hook prerouting priority dstnat ; }",
        ],
        &[
            "add",
            "rule",
            "ip",
            "ldnat",
            "prerouting",
            "tcp",
            "dport",
            &web,
            "dnat",
            "to",
            &to,
        ],
    ] {
        ns_must(&w.pair.origin, "nft", cmd);
    }
    w.servers
        .push(TcpServer::start(&c.ns, any(80), Serve::Echo));
    w.up_allowing(&["tcp/22", "tcp/8080"]);

    let web = SocketAddr::new(Family::V4.origin(), WEB);
    let mut conn = tcp_connect(&w.pair.peer, web, OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to the published port {web}: {e}"));
    exchange(&mut conn, b"before").unwrap_or_else(|e| panic!("exchange through DNAT: {e}"));
    assert!(
        w.flows_on(WEB).is_empty(),
        "the allowlist vouches for the published port: no entry"
    );
    // No socket of the origin's namespace holds the connection: only conntrack knows it.
    let out = ns_run(&w.pair.origin, "cat", &["/proc/net/tcp", "/proc/net/tcp6"]);
    let sockets = String::from_utf8_lossy(&out.stdout);
    assert!(
        !sockets.contains(":1F90 "),
        "the origin's namespace has a socket on 8080, so this would not test conntrack:\n{sockets}"
    );

    w.ld.must(&["allow", "del", "tcp/8080"]);
    let seeded = w.flows_on(WEB);
    assert_eq!(
        seeded.len(),
        1,
        "`allow del` should seed the DNAT'd connection from conntrack: {seeded:?}\n{}",
        w.status_and_flows()
    );
    assert_eq!(seeded[0]["seeded"], true, "{seeded:?}");
    exchange(&mut conn, b"after allow del").unwrap_or_else(|e| {
        panic!(
            "the DNAT'd connection was cut by allow del: {e}\n{}",
            w.status_and_flows()
        )
    });
    match tcp_connect(&w.pair.peer, web, Duration::from_secs(1)) {
        Ok(_) => panic!("a new connection to the removed port got through"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
    }
}
