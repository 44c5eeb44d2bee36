//! Section 3: state under attack. A spoofed SYN flood to port 22, where the origin listens: how
//! many flow entries it leaves behind (lockdown's flow table, or nf_conntrack for the iptables
//! chain), and what it does to the request/response latency of an established connection.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lockdown_testbed::{
    flood::{self, Flood},
    host, netns,
    pair::{GEN_CPU, Link, NetPair, ORIGIN_IF, ORIGIN_V4, RX_CPU},
};
use serde::Serialize;

use crate::{
    filters::{Applied, Env, Filter},
    stats::{median, percentile},
    sys,
};

const PORT: u16 = 22;
const MSG: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub packets: u64,
    pub max_time: Duration,
    pub round_trips: usize,
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Latency {
    pub round_trips: usize,
    pub median_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Round trips that got no answer within 5 s (the probe stops at the first).
    pub timeouts: usize,
}

impl Latency {
    fn from(us: &[f64], timeouts: usize) -> Self {
        Self {
            round_trips: us.len(),
            median_us: median(us),
            p99_us: percentile(us, 99.0),
            max_us: us.iter().copied().fold(f64::NAN, f64::max),
            timeouts,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FilterResult {
    pub filter: Filter,
    pub label: &'static str,
    pub flood_sent: u64,
    pub flood_secs: f64,
    /// Packets the origin's veth took in.
    pub rx_packets: u64,
    /// What counts entries: lockdown's live flows, or nf_conntrack_count.
    pub entries_of: &'static str,
    pub entries_before: u64,
    pub entries_after: u64,
    pub entries_created: u64,
    pub conntrack_max: Option<u64>,
    /// Counter deltas over the flood (lockdown only).
    pub counters: BTreeMap<String, u64>,
    pub idle: Latency,
    pub flood: Latency,
    /// Whether the flood was still running when the last probe under flood finished.
    pub probe_within_flood: bool,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Section {
    pub packets: u64,
    pub port: u16,
    pub message_bytes: usize,
    pub filters: Vec<FilterResult>,
}

impl Section {
    pub(crate) fn filter(&self, f: Filter) -> Option<&FilterResult> {
        self.filters.iter().find(|r| r.filter == f)
    }
}

/// An echo server on the origin's port 22; every accepted connection gets a thread.
struct EchoServer {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(ns: &str) -> Result<Self> {
        let listener = netns::try_in_ns(ns, || {
            TcpListener::bind(SocketAddr::from((ORIGIN_V4, PORT)))
                .with_context(|| format!("listening on {ORIGIN_V4}:{PORT}"))
        })?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let join = thread::Builder::new()
            .name("echo-accept".into())
            .spawn(move || {
                let mut conns = Vec::new();
                while !thread_stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let stop = Arc::clone(&thread_stop);
                            conns.push(thread::spawn(move || echo(s, &stop)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })
            .context("spawning the echo server")?;
        Ok(Self {
            stop,
            join: Some(join),
        })
    }
}

fn echo(mut s: TcpStream, stop: &AtomicBool) {
    // The server may run on either CPU, as a real one would.
    let _ = host::pin(0, &[GEN_CPU, RX_CPU]);
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Up to `n` request/response round trips of [`MSG`] bytes, in µs; stops early when `flood`
/// has finished. Returns the times and whether a round trip timed out.
fn round_trips(s: &mut TcpStream, n: usize, flood: Option<&Flood>) -> Result<(Vec<f64>, usize)> {
    let req = [0xa5u8; MSG];
    let mut resp = [0u8; MSG];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        sys::check_interrupted()?;
        if flood.is_some_and(Flood::is_finished) {
            break;
        }
        let t = Instant::now();
        s.write_all(&req).context("echo request")?;
        match s.read_exact(&mut resp) {
            Ok(()) => out.push(t.elapsed().as_secs_f64() * 1e6),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok((out, 1));
            }
            Err(e) => return Err(e).context("echo response"),
        }
        if resp != req {
            bail!("the echo server answered with different bytes");
        }
    }
    Ok((out, 0))
}

fn entries(applied: &Applied<'_>, ns: &str) -> Result<u64> {
    if applied.filter.is_lockdown() {
        let s = applied.lockdown_status()?;
        s["flows"].as_u64().context("status --json has no flows")
    } else {
        netns::sysctl(ns, "net/netfilter/nf_conntrack_count")?
            .parse()
            .context("parsing nf_conntrack_count")
    }
}

fn lockdown_counters(applied: &Applied<'_>) -> Result<BTreeMap<String, u64>> {
    if !applied.filter.is_lockdown() {
        return Ok(BTreeMap::new());
    }
    let s = applied.lockdown_status()?;
    Ok(s["counters"]
        .as_object()
        .context("status --json has no counters")?
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect())
}

fn one(filter: Filter, opts: &Options, env: &Env) -> Result<FilterResult> {
    let pair = NetPair::create("at", Link::QUIET)?;
    pair.steer_receive()?;
    let _server = EchoServer::start(&pair.origin)?;
    let applied = Applied::apply(filter, &pair, env)?;
    let mut client = netns::try_in_ns(&pair.peer, || {
        TcpStream::connect_timeout(&SocketAddr::from((ORIGIN_V4, PORT)), Duration::from_secs(3))
            .with_context(|| {
                format!(
                    "connecting to {ORIGIN_V4}:{PORT} through {}",
                    filter.label()
                )
            })
    })?;
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(Duration::from_secs(5)))?;
    // Warm up: the connection is established and tracked before anything is measured.
    round_trips(&mut client, 20, None)?;
    sys::sleep(Duration::from_millis(200))?;
    let (idle_us, idle_to) = round_trips(&mut client, opts.round_trips, None)?;
    if idle_to > 0 {
        bail!(
            "the echo connection timed out with no flood through {}",
            filter.label()
        );
    }

    let entries_before = entries(&applied, &pair.origin)?;
    let counters_before = lockdown_counters(&applied)?;
    let rx0 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let flood = Flood::start(
        &pair,
        flood::Spec {
            cpu: Some(GEN_CPU),
            sched_idle: true,
            ..flood::Spec::new(PORT, opts.packets, opts.max_time)
        },
    )?;
    sys::sleep(Duration::from_millis(100))?;
    let (flood_us, flood_to) = round_trips(&mut client, opts.round_trips, Some(&flood))?;
    let probe_within_flood = !flood.is_finished();
    let st = flood.wait()?;
    // SYN-ACK retransmissions and the backlog settle; entries would appear by now.
    sys::sleep(Duration::from_millis(500))?;
    let rx1 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let entries_after = entries(&applied, &pair.origin)?;
    let counters_after = lockdown_counters(&applied)?;
    let counters = counters_after
        .iter()
        .map(|(k, v)| (k.clone(), v - counters_before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let conntrack_max = if filter.is_lockdown() {
        None
    } else {
        netns::sysctl(&pair.origin, "net/netfilter/nf_conntrack_max")?
            .parse()
            .ok()
    };
    drop(client);
    applied.remove()?;
    Ok(FilterResult {
        filter,
        label: filter.label(),
        flood_sent: st.sent,
        flood_secs: st.elapsed.as_secs_f64(),
        rx_packets: rx1.rx_packets - rx0.rx_packets,
        entries_of: if filter.is_lockdown() {
            "lockdown flows (status --json)"
        } else {
            "nf_conntrack_count"
        },
        entries_before,
        entries_after,
        entries_created: entries_after.saturating_sub(entries_before),
        conntrack_max,
        counters,
        idle: Latency::from(&idle_us, 0),
        flood: Latency::from(&flood_us, flood_to),
        probe_within_flood,
    })
}

pub(crate) fn run(opts: &Options, env: &Env) -> Result<Section> {
    println!(
        "==> [3/4] state under attack: {} spoofed SYNs to tcp/{PORT} (listening), {} echo round trips idle and under flood",
        opts.packets, opts.round_trips
    );
    let mut filters = Vec::new();
    for &f in &opts.filters {
        sys::check_interrupted()?;
        let r = one(f, opts, env)?;
        println!(
            "    {:<34} {} sent in {:.1} s; {} {} -> {} (+{}); RTT idle {:.0}/{:.0} us, flood {:.0}/{:.0} us (median/p99, {} probes{})",
            f.label(),
            r.flood_sent,
            r.flood_secs,
            r.entries_of,
            r.entries_before,
            r.entries_after,
            r.entries_created,
            r.idle.median_us,
            r.idle.p99_us,
            r.flood.median_us,
            r.flood.p99_us,
            r.flood.round_trips,
            if r.flood.timeouts > 0 {
                ", a probe timed out"
            } else {
                ""
            }
        );
        filters.push(r);
    }
    Ok(Section {
        packets: opts.packets,
        port: PORT,
        message_bytes: MSG,
        filters,
    })
}
