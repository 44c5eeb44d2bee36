//! Section 5: state under legit load. The origin serves tcp/8080 (allowed) and holds K idle
//! connections of its own to a server in the peer namespace; the peer then opens, uses and closes
//! connections to the origin's service as fast as it can, many times the flow table's capacity.
//! Connections accepted on an allowed port must take no flow entry, so the origin's own flows
//! must survive: after the load the peer pushes a byte down each of them and counts what the
//! origin did not receive. The same load against the seed iptables chain (with tcp/8080 added)
//! shows the conntrack entries it leaves behind, side by side.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lockdown_testbed::{
    host, netns,
    pair::{GEN_CPU, Link, NetPair, ORIGIN_IF, ORIGIN_V4, PEER_V4, RX_CPU},
};
use serde::Serialize;

use crate::{
    filters::{Applied, Env, Filter},
    stats::{median, percentile},
    sys,
};

/// The origin's allowed service port, where the load goes.
pub(crate) const SERVICE_PORT: u16 = 8080;
/// The peer's port the origin's own (outbound) connections go to.
pub(crate) const OUTBOUND_PORT: u16 = 9000;
/// `lockdown up --max-flows`.
pub(crate) const MAX_FLOWS: u32 = 1024;
/// The load must open at least this many times the live table's capacity.
pub(crate) const LOAD_FACTOR: u64 = 3;
/// How long the origin gets to receive the byte pushed down each of its own connections.
const PUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect and read timeout of one load connection.
const CONN_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the tables (or nf_conntrack_count) are sampled during the load.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// K: the origin's own idle outbound connections (at most 128, the listener's backlog).
    pub outbound: usize,
    /// How long the load runs (at most; it also stops at `max_connections`).
    pub duration: Duration,
    /// Upper bound on load connection attempts.
    pub max_connections: u64,
    /// Load connections in flight at once (one per peer thread).
    pub parallel: usize,
    /// Whether to run the same load against the seed iptables chain.
    pub iptables: bool,
    /// A smoke run: the load is not required to reach 3x capacity.
    pub quick: bool,
}

/// The load: connections to the origin's service, one byte each way, then closed by the peer.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Load {
    /// Connections that completed: connect, one byte echoed, close.
    pub connections: u64,
    /// Attempts that failed (connect or echo error or timeout).
    pub failed: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    pub secs: f64,
    /// Completed connections per second.
    pub per_sec: f64,
    /// Connect to echo received, per completed connection.
    pub median_us: f64,
    pub p99_us: f64,
    /// `time`, `count` (max_connections) or `interrupted`.
    pub stopped_by: &'static str,
}

/// The origin's own connections after the load.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Outbound {
    pub connections: usize,
    /// Connections whose pushed byte the origin did not receive within `timeout_ms`.
    pub lost: usize,
    pub timeout_ms: u64,
}

/// One flow map's occupancy, from `status --json` after the load.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Table {
    pub map: String,
    pub table: String,
    pub family: String,
    pub entries: u64,
    pub capacity: u64,
    pub high_water: u64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct LockdownRun {
    pub label: &'static str,
    pub mode: &'static str,
    pub allow: Vec<&'static str>,
    /// `--max-flows` as given.
    pub max_flows: u32,
    /// Capacity of the IPv4 live and closing tables, from `status --json`.
    pub live_capacity: u64,
    pub closing_capacity: u64,
    /// LOAD_FACTOR x the live capacity: the connections the load must reach.
    pub goal_connections: u64,
    pub load: Load,
    pub outbound: Outbound,
    /// `egress_flows_created` over the opening of the K outbound connections (should be K).
    pub outbound_flows_created: u64,
    /// `egress_flows_created` over the load alone.
    pub load_flows_created: u64,
    /// `flow_insert_failed` over the load.
    pub load_insert_failed: u64,
    /// Entries with local port 8080 in `flows --json` right after the load, per table.
    pub port_live_entries: u64,
    pub port_closing_entries: u64,
    /// The most live / closing entries seen by the samples during the load (the K outbound
    /// flows included).
    pub peak_live: u64,
    pub peak_closing: u64,
    pub samples: usize,
    /// Every flow map after the load.
    pub tables: Vec<Table>,
    /// Counter deltas over the load (non-zero only).
    pub counters: BTreeMap<String, u64>,
}

impl LockdownRun {
    /// Entries the accepted connections created: the larger of the two ways of counting them.
    pub(crate) fn entries_created(&self) -> u64 {
        self.load_flows_created
            .max(self.port_live_entries + self.port_closing_entries)
    }

    pub(crate) fn reached_goal(&self) -> bool {
        self.load.connections >= self.goal_connections
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct IptablesRun {
    pub label: &'static str,
    pub load: Load,
    pub outbound: Outbound,
    /// nf_conntrack_count in the origin's namespace before and right after the load.
    pub conntrack_before: u64,
    pub conntrack_after: u64,
    pub conntrack_created: u64,
    pub conntrack_peak: u64,
    pub conntrack_max: Option<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Section {
    pub quick: bool,
    pub service_port: u16,
    pub outbound_port: u16,
    pub outbound: usize,
    pub duration_secs: f64,
    pub max_connections: u64,
    pub parallel: usize,
    pub lockdown: LockdownRun,
    pub iptables: Option<IptablesRun>,
}

// ---- servers --------------------------------------------------------------------------------

/// Waits up to `ms` for `fd` to become readable.
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    unsafe { libc::poll(&raw mut p, 1, ms) > 0 }
}

/// The origin's service on tcp/8080: `threads` threads share the listener; each serves one
/// connection at a time: echo what arrives, close at the peer's FIN.
struct ServiceServer {
    stop: Arc<AtomicBool>,
    joins: Vec<JoinHandle<()>>,
}

impl ServiceServer {
    fn start(ns: &str, threads: usize) -> Result<Self> {
        let listener = netns::try_in_ns(ns, || {
            TcpListener::bind(SocketAddr::from((ORIGIN_V4, SERVICE_PORT)))
                .with_context(|| format!("listening on {ORIGIN_V4}:{SERVICE_PORT}"))
        })?;
        listener.set_nonblocking(true)?;
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Self {
            stop: Arc::clone(&stop),
            joins: Vec::new(),
        };
        for i in 0..threads.max(1) {
            let (l, st) = (Arc::clone(&listener), Arc::clone(&stop));
            let join = thread::Builder::new()
                .name(format!("legit-srv{i}"))
                .spawn(move || {
                    let _ = host::pin(0, &[GEN_CPU, RX_CPU]);
                    while !st.load(Ordering::Relaxed) {
                        if !readable(l.as_raw_fd(), 50) {
                            continue;
                        }
                        if let Ok((s, _)) = l.accept() {
                            serve(s);
                        }
                    }
                })
                .context("spawning the service threads")?;
            server.joins.push(join);
        }
        Ok(server)
    }
}

fn serve(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(CONN_TIMEOUT));
    let mut buf = [0u8; 64];
    // Bounded: every read ends in data, EOF, the timeout or an error, and the peer sends one byte.
    for _ in 0..16 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for ServiceServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

// ---- the origin's own connections ---------------------------------------------------------------

/// K connections from the origin to the peer's OUTBOUND_PORT: (origin end, peer end).
struct OwnFlows {
    pairs: Vec<(TcpStream, TcpStream)>,
    _listener: TcpListener,
}

impl OwnFlows {
    fn open(pair: &NetPair, k: usize) -> Result<Self> {
        let listener = netns::try_in_ns(&pair.peer, || {
            TcpListener::bind(SocketAddr::from((PEER_V4, OUTBOUND_PORT)))
                .with_context(|| format!("listening on {PEER_V4}:{OUTBOUND_PORT}"))
        })?;
        listener.set_nonblocking(true)?;
        let to = SocketAddr::from((PEER_V4, OUTBOUND_PORT));
        let pairs = netns::try_in_ns(&pair.origin, || {
            let mut pairs = Vec::with_capacity(k);
            for i in 0..k {
                sys::check_interrupted()?;
                let origin = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                    .with_context(|| format!("outbound connection {i} from the origin to {to}"))?;
                let port = origin.local_addr()?.port();
                // The handshake is done: the peer's end is in the accept queue.
                let deadline = Instant::now() + Duration::from_secs(3);
                let peer = loop {
                    match listener.accept() {
                        Ok((s, from)) if from.port() == port => break s,
                        Ok((_, from)) => bail!("unexpected connection from {from} on {to}"),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if Instant::now() >= deadline {
                                bail!("the peer did not accept outbound connection {i} within 3 s");
                            }
                            thread::sleep(Duration::from_millis(1));
                        }
                        Err(e) => return Err(e).context("accepting an outbound connection"),
                    }
                };
                peer.set_nonblocking(false)?;
                peer.set_nodelay(true)?;
                origin.set_nodelay(true)?;
                pairs.push((origin, peer));
            }
            Ok(pairs)
        })?;
        Ok(Self {
            pairs,
            _listener: listener,
        })
    }

    /// The peer writes `byte` down every connection; returns how many the origin did not receive
    /// within [`PUSH_TIMEOUT`] (all pushes run at once, so the timeout is for the whole batch).
    fn push(&mut self, byte: u8) -> Result<usize> {
        for (_, peer) in &mut self.pairs {
            peer.write_all(&[byte])
                .context("writing down an outbound connection from the peer")?;
        }
        let deadline = Instant::now() + PUSH_TIMEOUT;
        let mut lost = 0;
        for (origin, _) in &mut self.pairs {
            sys::check_interrupted()?;
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            origin.set_read_timeout(Some(left))?;
            let mut b = [0u8; 1];
            match origin.read_exact(&mut b) {
                Ok(()) if b[0] == byte => {}
                Ok(()) => bail!("an outbound connection delivered a different byte"),
                Err(_) => lost += 1,
            }
        }
        Ok(lost)
    }
}

// ---- the load -----------------------------------------------------------------------------------

/// One load connection from the peer: connect, one byte each way, close.
fn one_connection() -> Result<()> {
    let to = SocketAddr::from((ORIGIN_V4, SERVICE_PORT));
    let mut s = TcpStream::connect_timeout(&to, CONN_TIMEOUT).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(CONN_TIMEOUT))?;
    s.write_all(&[0x42]).context("write")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).context("echo")?;
    if b[0] != 0x42 {
        bail!("the service echoed a different byte");
    }
    Ok(())
}

#[derive(Default)]
struct WorkerOut {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    us: Vec<f64>,
}

fn worker(ns: &str, budget: &AtomicU64, deadline: Instant) -> Result<WorkerOut> {
    netns::enter(ns)?;
    let _ = host::pin(0, &[GEN_CPU, RX_CPU]);
    let mut out = WorkerOut::default();
    while Instant::now() < deadline && !host::interrupted() {
        // One attempt per unit of the shared budget: the total is bounded in count as well.
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let t = Instant::now();
        match one_connection() {
            Ok(()) => {
                out.ok += 1;
                out.us.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Err(e) => {
                out.failed += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    Ok(out)
}

/// Runs the load from the peer; calls `sample` every [`SAMPLE_EVERY`] while it runs.
fn load(pair: &NetPair, opts: &Options, mut sample: impl FnMut() -> Result<()>) -> Result<Load> {
    let budget = AtomicU64::new(opts.max_connections);
    let started = Instant::now();
    let deadline = started + opts.duration;
    let outs = thread::scope(|s| -> Result<Vec<WorkerOut>> {
        let handles: Vec<_> = (0..opts.parallel.max(1))
            .map(|_| s.spawn(|| worker(&pair.peer, &budget, deadline)))
            .collect();
        let mut next = Instant::now() + SAMPLE_EVERY;
        // The workers end by the deadline; the margin covers one connection's timeouts.
        let hard_end = deadline + 3 * CONN_TIMEOUT;
        while !handles.iter().all(thread::ScopedJoinHandle::is_finished)
            && Instant::now() < hard_end
        {
            sys::sleep(Duration::from_millis(20))?;
            if Instant::now() >= next {
                sample()?;
                next = Instant::now() + SAMPLE_EVERY;
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            })
            .collect()
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut us = Vec::new();
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    for o in outs {
        ok += o.ok;
        failed += o.failed;
        first_error = first_error.or(o.first_error);
        us.extend(o.us);
    }
    sys::check_interrupted()?;
    Ok(Load {
        connections: ok,
        failed,
        first_error,
        secs,
        per_sec: ok as f64 / secs,
        median_us: median(&us),
        p99_us: percentile(&us, 99.0),
        stopped_by: if budget.load(Ordering::Relaxed) == 0 {
            "count"
        } else {
            "time"
        },
    })
}

/// Many short connections in a row: let the peer reuse its ports (TIME_WAIT stays on its side,
/// which closes first) and widen its ephemeral range, so that the load is not bounded by ports.
/// The peer's side of a legit-load run. Its veth runs an XDP_PASS program, so that it receives
/// what the origin's XDP program sends back: at thousands of connections a second lockdown's
/// default `--syn-cookies auto` engages and answers the SYNs from XDP (`XDP_TX`), which a veth
/// delivers only to a peer with an XDP program of its own. Both filters get the same link.
fn prepare_peer(pair: &NetPair) -> Result<()> {
    pair.peer_xdp_pass()?;
    netns::sysctl_write(&pair.peer, "net/ipv4/ip_local_port_range", "10000 65000")?;
    netns::sysctl_write(&pair.peer, "net/ipv4/tcp_tw_reuse", "1")
}

/// One load connection through the filter before anything is measured.
fn check_service(pair: &NetPair, what: &str) -> Result<()> {
    netns::try_in_ns(&pair.peer, one_connection)
        .with_context(|| format!("a connection to {ORIGIN_V4}:{SERVICE_PORT} through {what}"))
}

// ---- lockdown -----------------------------------------------------------------------------------

const ALLOW: [&str; 2] = ["tcp/22", "tcp/8080"];
const MODE: &str = "native";

/// lockdown up on the origin's veth with this section's policy; dropping it runs `down`.
struct Lockdown<'a> {
    ns: &'a str,
    env: &'a Env,
    up: bool,
}

impl<'a> Lockdown<'a> {
    fn command(ns: &str, env: &Env) -> Command {
        let mut c = netns::ns_command(ns, &env.lockdown);
        // The bench's namespaces serve no SSH session: the caller's must not trip the guard.
        c.env("LOCKDOWN_PIN_ROOT", &env.pin_root)
            .env_remove("SSH_CONNECTION");
        c
    }

    fn up(ns: &'a str, env: &'a Env) -> Result<Self> {
        let mut c = Self::command(ns, env);
        c.args(["up", "--iface", ORIGIN_IF, "--mode", MODE, "--force"])
            .args(["--max-flows", &MAX_FLOWS.to_string()]);
        for a in ALLOW {
            c.args(["--allow", a]);
        }
        host::run(&mut c)?;
        Ok(Self { ns, env, up: true })
    }

    fn json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut c = Self::command(self.ns, self.env);
        c.args(args).args(["--iface", ORIGIN_IF, "--json"]);
        let out = host::run(&mut c)?;
        serde_json::from_str(&out).with_context(|| format!("parsing `lockdown {}`", args[0]))
    }

    fn status(&self) -> Result<serde_json::Value> {
        self.json(&["status", "--interval", "0"])
    }

    fn counters(&self) -> Result<BTreeMap<String, u64>> {
        Ok(self.status()?["counters"]
            .as_object()
            .context("status --json has no counters")?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
            .collect())
    }

    fn down(mut self) -> Result<()> {
        self.up = false;
        let mut c = Self::command(self.ns, self.env);
        c.args(["down", "--iface", ORIGIN_IF]);
        host::run(&mut c).map(drop)
    }
}

impl Drop for Lockdown<'_> {
    fn drop(&mut self) {
        if self.up {
            let mut c = Self::command(self.ns, self.env);
            c.args(["down", "--iface", ORIGIN_IF]);
            if let Err(e) = host::run(&mut c) {
                eprintln!("lockdown-bench: warning: lockdown down: {e:#}");
            }
        }
    }
}

fn tables(status: &serde_json::Value) -> Result<Vec<Table>> {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or("?").to_owned();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    Ok(status["tables"]
        .as_array()
        .context("status --json has no tables")?
        .iter()
        .map(|t| Table {
            map: s(t, "map"),
            table: s(t, "table"),
            family: s(t, "family"),
            entries: n(t, "entries"),
            capacity: n(t, "capacity"),
            high_water: n(t, "high_water"),
        })
        .collect())
}

fn capacity(tables: &[Table], table: &str) -> Result<u64> {
    tables
        .iter()
        .find(|t| t.table == table && t.family == "ipv4")
        .map(|t| t.capacity)
        .with_context(|| format!("status --json lists no ipv4 {table} table"))
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, k: &str) -> u64 {
    after
        .get(k)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(k).copied().unwrap_or(0))
}

fn run_lockdown(opts: &Options, env: &Env) -> Result<LockdownRun> {
    let pair = NetPair::create("lg", Link::QUIET)?;
    prepare_peer(&pair)?;
    let _server = ServiceServer::start(&pair.origin, opts.parallel)?;
    let ld = Lockdown::up(&pair.origin, env)?;
    let label = "lockdown --mode native";
    check_service(&pair, label)?;
    let st = ld.status()?;
    let t0 = tables(&st)?;
    let (live_capacity, closing_capacity) = (capacity(&t0, "live")?, capacity(&t0, "closing")?);
    let goal_connections = LOAD_FACTOR * live_capacity;
    println!(
        "    {label}, --max-flows {MAX_FLOWS}: IPv4 live table {live_capacity} entries, closing table {closing_capacity}; allow {}",
        ALLOW.join(", ")
    );

    let c0 = ld.counters()?;
    let mut own = OwnFlows::open(&pair, opts.outbound)?;
    // Each works before the load: the pushes below can only fail because of the load.
    let lost_before = own.push(0x01)?;
    if lost_before > 0 {
        bail!(
            "{lost_before} of the origin's {} outbound connections received nothing before the load",
            opts.outbound
        );
    }
    let c1 = ld.counters()?;

    let (mut peak_live, mut peak_closing, mut samples) = (0, 0, 0);
    let load = load(&pair, opts, || {
        let s = ld.status()?;
        peak_live = peak_live.max(s["flows"].as_u64().unwrap_or(0));
        peak_closing = peak_closing.max(s["closing_flows"].as_u64().unwrap_or(0));
        samples += 1;
        Ok(())
    })?;
    // Read the tables before the pushes: an origin that received nothing sends nothing, but read
    // first anyway, so the deltas cover the load alone.
    let c2 = ld.counters()?;
    let st = ld.status()?;
    peak_live = peak_live.max(st["flows"].as_u64().unwrap_or(0));
    peak_closing = peak_closing.max(st["closing_flows"].as_u64().unwrap_or(0));
    let flows = ld.json(&["flows", "--port", &SERVICE_PORT.to_string()])?;
    let on_port = |table: &str| {
        flows.as_array().map_or(0, |a| {
            a.iter()
                .filter(|f| {
                    f["local_port"].as_u64() == Some(u64::from(SERVICE_PORT))
                        && f["table"].as_str() == Some(table)
                })
                .count() as u64
        })
    };
    let (port_live_entries, port_closing_entries) = (on_port("live"), on_port("closing"));
    let lost = own.push(0x02)?;
    drop(own);
    ld.down()?;

    let counters = c2
        .keys()
        .map(|k| (k.clone(), delta(&c2, &c1, k)))
        .filter(|(_, v)| *v > 0)
        .collect();
    Ok(LockdownRun {
        label,
        mode: MODE,
        allow: ALLOW.to_vec(),
        max_flows: MAX_FLOWS,
        live_capacity,
        closing_capacity,
        goal_connections,
        outbound: Outbound {
            connections: opts.outbound,
            lost,
            timeout_ms: PUSH_TIMEOUT.as_millis() as u64,
        },
        outbound_flows_created: delta(&c1, &c0, "egress_flows_created"),
        load_flows_created: delta(&c2, &c1, "egress_flows_created"),
        load_insert_failed: delta(&c2, &c1, "flow_insert_failed"),
        port_live_entries,
        port_closing_entries,
        peak_live,
        peak_closing,
        samples,
        tables: tables(&st)?,
        counters,
        load,
    })
}

// ---- iptables -----------------------------------------------------------------------------------

fn conntrack_count(ns: &str) -> Result<u64> {
    netns::sysctl(ns, "net/netfilter/nf_conntrack_count")?
        .parse()
        .context("parsing nf_conntrack_count")
}

fn run_iptables(opts: &Options, env: &Env) -> Result<IptablesRun> {
    let pair = NetPair::create("lgi", Link::QUIET)?;
    prepare_peer(&pair)?;
    let _server = ServiceServer::start(&pair.origin, opts.parallel)?;
    let applied = Applied::apply(Filter::Iptables, &pair, env)?;
    // The seed chain allows tcp/22 only; open the service port as lockdown's --allow does.
    let mut c = netns::ns_command(&pair.origin, "iptables");
    c.args(["-w", "-I", "INPUT", "3", "-p", "tcp", "--dport"])
        .arg(SERVICE_PORT.to_string())
        .args(["-j", "ACCEPT"]);
    host::run(&mut c).context("adding the service port to the seed chain")?;
    let label = "seed iptables chain + tcp/8080 (conntrack)";
    check_service(&pair, label)?;

    let mut own = OwnFlows::open(&pair, opts.outbound)?;
    let lost_before = own.push(0x01)?;
    if lost_before > 0 {
        bail!(
            "{lost_before} of the origin's {} outbound connections received nothing before the load (iptables)",
            opts.outbound
        );
    }
    let conntrack_before = conntrack_count(&pair.origin)?;
    let mut conntrack_peak = conntrack_before;
    let load = load(&pair, opts, || {
        conntrack_peak = conntrack_peak.max(conntrack_count(&pair.origin)?);
        Ok(())
    })?;
    let conntrack_after = conntrack_count(&pair.origin)?;
    conntrack_peak = conntrack_peak.max(conntrack_after);
    let conntrack_max = netns::sysctl(&pair.origin, "net/netfilter/nf_conntrack_max")?
        .parse()
        .ok();
    let lost = own.push(0x02)?;
    drop(own);
    applied.remove()?;
    Ok(IptablesRun {
        label,
        load,
        outbound: Outbound {
            connections: opts.outbound,
            lost,
            timeout_ms: PUSH_TIMEOUT.as_millis() as u64,
        },
        conntrack_before,
        conntrack_after,
        conntrack_created: conntrack_after.saturating_sub(conntrack_before),
        conntrack_peak,
        conntrack_max,
    })
}

fn describe(l: &Load) -> String {
    format!(
        "{} connections in {:.1} s ({:.0}/s, stopped by {}), {} failed{}; connect+echo {:.0}/{:.0} us (median/p99)",
        l.connections,
        l.secs,
        l.per_sec,
        l.stopped_by,
        l.failed,
        l.first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        l.median_us,
        l.p99_us
    )
}

pub(crate) fn run(opts: &Options, env: &Env) -> Result<Section> {
    if opts.outbound == 0 || opts.outbound > 128 {
        bail!("the legit-load section needs 1 to 128 outbound connections");
    }
    println!(
        "==> [5/5] state under legit load: {} outbound IPv4 connections from the origin, then up to {:.0} s / {} connections from the peer to tcp/{SERVICE_PORT} (allowed), {} at a time",
        opts.outbound,
        opts.duration.as_secs_f64(),
        opts.max_connections,
        opts.parallel
    );
    let lockdown = run_lockdown(opts, env)?;
    let l = &lockdown;
    println!("    load: {}", describe(&l.load));
    if !l.reached_goal() {
        println!(
            "    note: the load reached {} connections, short of {LOAD_FACTOR}x the table's capacity ({}){}",
            l.load.connections,
            l.goal_connections,
            if opts.quick { " (--quick)" } else { "" }
        );
    }
    println!(
        "    origin-initiated flows lost: {} of {}; egress_flows_created: +{} for the outbound connections, +{} over the load; entries on tcp/{SERVICE_PORT}: {} live, {} closing; peak live {} / closing {} ({} samples)",
        l.outbound.lost,
        l.outbound.connections,
        l.outbound_flows_created,
        l.load_flows_created,
        l.port_live_entries,
        l.port_closing_entries,
        l.peak_live,
        l.peak_closing,
        l.samples
    );
    let iptables = if opts.iptables {
        sys::check_interrupted()?;
        let r = run_iptables(opts, env)?;
        println!(
            "    {}: {}; origin-initiated flows lost {} of {}; nf_conntrack_count {} -> {} (+{}, peak {}{})",
            r.label,
            describe(&r.load),
            r.outbound.lost,
            r.outbound.connections,
            r.conntrack_before,
            r.conntrack_after,
            r.conntrack_created,
            r.conntrack_peak,
            r.conntrack_max
                .map(|m| format!(", nf_conntrack_max {m}"))
                .unwrap_or_default()
        );
        Some(r)
    } else {
        None
    };
    Ok(Section {
        quick: opts.quick,
        service_port: SERVICE_PORT,
        outbound_port: OUTBOUND_PORT,
        outbound: opts.outbound,
        duration_secs: opts.duration.as_secs_f64(),
        max_connections: opts.max_connections,
        parallel: opts.parallel,
        lockdown,
        iptables,
    })
}
