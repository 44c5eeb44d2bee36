//! Section 6: SYN cookies (issue 18).
//!
//! **Receive CPU per flood SYN**, measured as section 2 measures it (generator on CPU0, the
//! origin's receive work steered to CPU1 and read off a SCHED_IDLE cycle soaker there), for three
//! paths in alternating rounds of one run: a SYN to tcp/22 answered by lockdown with a cookie
//! SYN-ACK (`--syn-cookies on`, `XDP_TX`), a SYN to a closed port dropped by lockdown in the same
//! mode, and, beside them, a SYN to tcp/22 with cookies off, which lockdown passes and the
//! kernel's listener answers (with its own syncookies once its queue overflows). The peer's veth
//! runs an XDP_PASS program (so that it receives the `XDP_TX` frames at all) with threaded NAPI
//! pinned to CPU0, so that receiving the SYN-ACKs is not charged to CPU1. The ratio cookie /
//! closed is taken per round, then the median.
//!
//! **Logins during a full-speed flood**: a real sshd in the origin, the real ssh client logging
//! in from fresh sources while the generator floods tcp/22 from anywhere at full speed, with
//! cookies on and off, without a rate and with `--rate 2/min --burst 3`, and with the rate and
//! SYNs spoofed in the login sources' own names beforehand: the share that got in.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lockdown_testbed::{
    flood::{self, Flood, Pace, Shape, Sources},
    host, netns,
    pair::{Family, GEN_CPU, Link, NetPair, ORIGIN_IF, ORIGIN_V4, RX_CPU},
    ssh::{SSH_PORT, Sshd},
    traffic::{Serve, TcpServer},
};
use serde::Serialize;

use crate::{
    filters::Env,
    rxcpu::{self, CLOSED_PORT, Snap},
    stats::{median, per_round},
    sys::{self, Soaker},
};

/// The strict rate of the login runs.
const RATE: &str = "2/min";
const BURST: &str = "3";
/// SYNs spoofed in each login source's name before it logs in, in the runs that do so.
pub(crate) const SPOOFS_PER_SOURCE: u64 = 10;
/// Logins at once.
pub(crate) const BATCH: usize = 5;
/// Flood frames sent before the first login.
pub(crate) const PRIMING: u64 = 200_000;

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub rounds: usize,
    pub flood: Duration,
    pub max_packets: u64,
    /// Logins per login run.
    pub logins: usize,
    /// Bound of each login run's flood (it stops when the logins are done).
    pub login_flood: Duration,
    pub login_flood_packets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Path {
    /// SYN to tcp/22 under `--syn-cookies on`: a cookie SYN-ACK by `XDP_TX`.
    Cookie,
    /// SYN to a closed port under `--syn-cookies on`: dropped.
    Closed,
    /// SYN to tcp/22 under `--syn-cookies off`: passed, answered by the kernel.
    Kernel,
}

impl Path {
    const ALL: [Self; 3] = [Self::Cookie, Self::Closed, Self::Kernel];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Cookie => "SYN to tcp/22 answered with a cookie (--syn-cookies on)",
            Self::Closed => "SYN to a closed port, dropped (--syn-cookies on)",
            Self::Kernel => "SYN to tcp/22 answered by the kernel (--syn-cookies off)",
        }
    }

    const fn mode(self) -> &'static str {
        match self {
            Self::Cookie | Self::Closed => "on",
            Self::Kernel => "off",
        }
    }

    const fn port(self) -> u16 {
        match self {
            Self::Cookie | Self::Kernel => SSH_PORT,
            Self::Closed => CLOSED_PORT,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    pub round: usize,
    pub sent: u64,
    pub send_secs: f64,
    pub rx_packets: u64,
    /// What answered or dropped them: `syn_cookie_sent`, the `drop_*` counters, or the origin's
    /// transmitted packets (the kernel's SYN-ACKs).
    pub handled: u64,
    pub cpu1_ms: f64,
    pub ns_per_packet: f64,
    pub cpu0_util: f64,
    pub cpu1_util: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct PathResult {
    pub path: Path,
    pub label: &'static str,
    pub ns_per_packet: f64,
    pub rx_pps: f64,
    pub sent_pps: f64,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Ratio {
    pub path: Path,
    pub vs: Path,
    pub ratio: f64,
    pub samples: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct LoginRun {
    pub cookies: &'static str,
    /// `2/min burst 3`, or `None`.
    pub rate: Option<String>,
    /// SYNs spoofed in each login source's name before its login.
    pub spoofed_per_source: u64,
    pub attempted: usize,
    pub got_in: usize,
    pub share: f64,
    /// Of the logins that got in (NaN if none did).
    pub median_login_ms: f64,
    pub flood_sent: u64,
    pub flood_pps: f64,
    /// Whether the flood still ran when the last login ended.
    pub flood_covered: bool,
    /// Counters that moved over the run.
    pub counters: BTreeMap<String, u64>,
    /// The first failure, for the reader.
    pub first_failure: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Section {
    pub rounds: usize,
    pub flood_secs: f64,
    pub max_packets: u64,
    pub gen_cpu: usize,
    pub rx_cpu: usize,
    pub paths: Vec<PathResult>,
    pub ratios: Vec<Ratio>,
    pub login_flood_secs: f64,
    pub login_flood_packets: u64,
    pub logins: Vec<LoginRun>,
}

impl Section {
    pub(crate) fn path(&self, p: Path) -> Option<&PathResult> {
        self.paths.iter().find(|r| r.path == p)
    }

    pub(crate) fn ratio(&self, p: Path, vs: Path) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.path == p && r.vs == vs)
    }
}

/// The lockdown CLI in the origin namespace with the bench's pin root.
fn lockdown(env: &Env, ns: &str) -> Command {
    let mut c = netns::ns_command(ns, &env.lockdown);
    c.env("LOCKDOWN_PIN_ROOT", &env.pin_root)
        .env_remove("SSH_CONNECTION");
    c
}

/// lockdown up on the origin's veth; `lockdown down` on drop.
struct Up<'a> {
    env: &'a Env,
    ns: String,
    active: bool,
}

impl<'a> Up<'a> {
    fn new(env: &'a Env, pair: &NetPair, mode: &str) -> Result<Self> {
        let mut c = lockdown(env, &pair.origin);
        c.args(["up", "--iface", ORIGIN_IF, "--mode", "native", "--force"])
            .args(["--syn-cookies", mode]);
        host::run(&mut c).with_context(|| format!("lockdown up --syn-cookies {mode}"))?;
        Ok(Self {
            env,
            ns: pair.origin.clone(),
            active: true,
        })
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let mut c = lockdown(self.env, &self.ns);
        c.args(args);
        host::run(&mut c)
    }

    fn counters(&self) -> Result<BTreeMap<String, u64>> {
        let out = self.cli(&["status", "--iface", ORIGIN_IF, "--json", "--interval", "0"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("parsing `lockdown status --json`")?;
        v["counters"]
            .as_object()
            .context("status --json has no counters")?
            .iter()
            .map(|(k, v)| {
                v.as_u64()
                    .map(|n| (k.clone(), n))
                    .with_context(|| format!("counter {k} is not an integer"))
            })
            .collect()
    }

    fn down(mut self) -> Result<()> {
        self.active = false;
        self.cli(&["down", "--iface", ORIGIN_IF]).map(drop)
    }
}

impl Drop for Up<'_> {
    fn drop(&mut self) {
        if self.active
            && let Err(e) = self.cli(&["down", "--iface", ORIGIN_IF])
        {
            eprintln!("lockdown-bench: warning: lockdown down: {e:#}");
        }
    }
}

fn delta(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>, name: &str) -> Result<u64> {
    let get = |m: &BTreeMap<String, u64>| {
        m.get(name)
            .copied()
            .with_context(|| format!("status --json has no counter {name}"))
    };
    Ok(get(b)?.saturating_sub(get(a)?))
}

fn measure(
    pair: &NetPair,
    up: &Up<'_>,
    path: Path,
    soaker: &Soaker,
    opts: &Options,
    round: usize,
) -> Result<Sample> {
    let rate = rxcpu::soak_rate(soaker, rxcpu::CALIBRATION)?;
    let c0 = up.counters()?;
    let o0 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let s0 = Snap::now(soaker)?;
    let st = Flood::start(
        pair,
        flood::Spec {
            cpu: Some(GEN_CPU),
            shape: Shape::Linux,
            sources: Sources::FloodNet,
            ..flood::Spec::new(path.port(), opts.max_packets, opts.flood)
        },
    )?
    .wait()?;
    let s1 = Snap::now(soaker)?;
    sys::sleep(rxcpu::DRAIN)?;
    let s2 = Snap::now(soaker)?;
    let o1 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let c1 = up.counters()?;
    let rx = o1.rx_packets - o0.rx_packets;
    if rx == 0 {
        bail!("no flood packet reached {ORIGIN_IF} ({} sent)", st.sent);
    }
    let handled = match path {
        Path::Cookie => delta(&c0, &c1, "syn_cookie_sent")?,
        Path::Closed => c1
            .iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(k, v)| v.saturating_sub(c0.get(k).copied().unwrap_or(0)))
            .sum(),
        Path::Kernel => o1.tx_packets - o0.tx_packets,
    };
    // Setup checks: the flood met the path we think it did.
    let want = match path {
        Path::Kernel => 0.5,
        _ => 0.9,
    };
    if (handled as f64) < want * rx as f64 {
        bail!(
            "{}: only {handled} of {rx} SYNs received were answered or dropped as expected",
            path.label()
        );
    }
    let taken = s0.taken(&s2, rate);
    Ok(Sample {
        round,
        sent: st.sent,
        send_secs: st.elapsed.as_secs_f64(),
        rx_packets: rx,
        handled,
        cpu1_ms: taken * 1e3,
        ns_per_packet: taken * 1e9 / rx as f64,
        cpu0_util: s0.cpu0_util(&s1),
        cpu1_util: (s0.taken(&s1, rate) / s0.wall(&s1)).clamp(0.0, 1.0),
    })
}

fn receive_cpu(opts: &Options, env: &Env) -> Result<(Vec<PathResult>, Vec<Ratio>)> {
    let pair = NetPair::create("sc", Link::QUIET)?;
    pair.steer_receive()?;
    pair.peer_xdp_pass()?;
    pair.peer_threaded_napi()?;
    // The listener of tcp/22 for the kernel's path (backlog 128: it overflows at once, and the
    // kernel answers with its own syncookies).
    let _listener = TcpServer::start(
        &pair.origin,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SSH_PORT),
        Serve::Echo,
    );
    let soaker = Soaker::start(RX_CPU)?;
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); Path::ALL.len()];
    for round in 0..opts.rounds {
        for k in 0..Path::ALL.len() {
            sys::check_interrupted()?;
            let i = (k + round) % Path::ALL.len();
            let path = Path::ALL[i];
            let up = Up::new(env, &pair, path.mode())?;
            pair.threaded_napi()?;
            sys::sleep(Duration::from_secs(1))?;
            let s = measure(&pair, &up, path, &soaker, opts, round)?;
            up.down()?;
            println!(
                "    round {} {:<58} {:>6.0} ns/pkt  rx {:>8.0} pps  sent {:>8.0} pps  CPU0 {:>3.0}%  CPU1 {:>3.0}%",
                round + 1,
                path.label(),
                s.ns_per_packet,
                s.rx_packets as f64 / s.send_secs,
                s.sent as f64 / s.send_secs,
                s.cpu0_util * 100.0,
                s.cpu1_util * 100.0
            );
            samples[i].push(s);
        }
    }
    drop(soaker);
    let paths: Vec<PathResult> = Path::ALL
        .iter()
        .zip(samples)
        .map(|(&path, s)| {
            let m = |g: &dyn Fn(&Sample) -> f64| median(&s.iter().map(g).collect::<Vec<_>>());
            PathResult {
                path,
                label: path.label(),
                ns_per_packet: m(&|x| x.ns_per_packet),
                rx_pps: m(&|x| x.rx_packets as f64 / x.send_secs),
                sent_pps: m(&|x| x.sent as f64 / x.send_secs),
                samples: s,
            }
        })
        .collect();
    let ratio = |p: Path, vs: Path| -> Option<Ratio> {
        let a = paths.iter().find(|r| r.path == p)?;
        let b = paths.iter().find(|r| r.path == vs)?;
        let (ratio, samples) = per_round(&a.samples, &b.samples, |x| x.ns_per_packet);
        Some(Ratio {
            path: p,
            vs,
            ratio,
            samples,
        })
    };
    let ratios = [(Path::Cookie, Path::Closed), (Path::Kernel, Path::Closed)]
        .into_iter()
        .filter_map(|(p, vs)| ratio(p, vs))
        .collect();
    Ok((paths, ratios))
}

/// One login run: a fresh pair, sshd, lockdown in `cookies` mode (with the rate if asked), SYNs
/// spoofed in the sources' names if asked, then the flood and the logins in batches.
fn login_run(
    opts: &Options,
    env: &Env,
    cookies: &'static str,
    rated: bool,
    spoofs: u64,
) -> Result<LoginRun> {
    let pair = NetPair::create("scl", Link::DUAL_STACK)?;
    pair.peer_xdp_pass()?;
    let sshd = Sshd::start(&pair, "bench")?;
    let up = Up::new(env, &pair, cookies)?;
    if rated {
        up.cli(&["allow", "add", "tcp/22", "--rate", RATE, "--burst", BURST])?;
    }
    let sources = (0..opts.logins)
        .map(|_| pair.fresh_source(Family::V4))
        .collect::<Result<Vec<_>>>()?;
    let before = up.counters()?;
    for &src in sources.iter().filter(|_| spoofs > 0) {
        Flood::start(
            &pair,
            flood::Spec {
                shape: Shape::Linux,
                sources: Sources::Only(src),
                pace: Some(Pace::LIGHT),
                ..flood::Spec::new(SSH_PORT, spoofs, Duration::from_secs(5))
            },
        )?
        .wait()?;
    }
    let flood = Flood::start(
        &pair,
        flood::Spec {
            cpu: Some(GEN_CPU),
            shape: Shape::Linux,
            sources: Sources::Anywhere,
            ..flood::Spec::new(SSH_PORT, opts.login_flood_packets, opts.login_flood)
        },
    )?;
    let t = Instant::now();
    while flood.sent() < PRIMING && !flood.is_finished() && t.elapsed() < opts.login_flood {
        sys::sleep(Duration::from_millis(10))?;
    }
    let mut logins = Vec::new();
    for batch in sources.chunks(BATCH) {
        sys::check_interrupted()?;
        logins.extend(sshd.logins_from(batch, IpAddr::V4(ORIGIN_V4)));
    }
    let covered = !flood.is_finished();
    let st = flood.stop()?;
    let after = up.counters()?;
    let got_in = logins.iter().filter(|l| l.ok).count();
    let mut times: Vec<f64> = logins
        .iter()
        .filter(|l| l.ok)
        .map(|l| l.elapsed.as_secs_f64() * 1e3)
        .collect();
    if times.is_empty() {
        times.push(f64::NAN);
    }
    let counters = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect();
    up.down()?;
    drop(sshd);
    drop(pair);
    Ok(LoginRun {
        cookies,
        rate: rated.then(|| format!("{RATE} burst {BURST}")),
        spoofed_per_source: spoofs,
        attempted: logins.len(),
        got_in,
        share: got_in as f64 / logins.len().max(1) as f64,
        median_login_ms: median(&times),
        flood_sent: st.sent,
        flood_pps: st.pps(),
        flood_covered: covered,
        counters,
        first_failure: logins.iter().find(|l| !l.ok).map(ToString::to_string),
    })
}

pub(crate) fn run(opts: &Options, env: &Env) -> Result<Section> {
    println!(
        "==> [6] SYN cookies: receive CPU per flood SYN ({} rounds x {} paths, floods of {} s or {} packets), then logins during full-speed floods",
        opts.rounds,
        Path::ALL.len(),
        opts.flood.as_secs_f64(),
        opts.max_packets
    );
    let (paths, ratios) = receive_cpu(opts, env)?;
    // The logins run on both CPUs (sshd and the clients inherit this thread's affinity); only
    // the generator is pinned to CPU0.
    let logins = std::thread::scope(|s| {
        s.spawn(|| -> Result<Vec<LoginRun>> {
            host::pin(0, &[GEN_CPU, RX_CPU])?;
            let mut runs = Vec::new();
            for (cookies, rated, spoofs) in [
                ("on", false, 0),
                ("off", false, 0),
                ("on", true, 0),
                ("off", true, 0),
                ("on", true, SPOOFS_PER_SOURCE),
                ("off", true, SPOOFS_PER_SOURCE),
            ] {
                let r = login_run(opts, env, cookies, rated, spoofs).with_context(|| {
                    format!("logins with --syn-cookies {cookies}, rate {rated}, spoofs {spoofs}")
                })?;
                println!(
                    "    logins --syn-cookies {:<3} rate {:<16} spoofed {:>2}/source: {}/{} got in (median {:.0} ms), flood {} frames at {:.0}/s{}",
                    r.cookies,
                    r.rate.as_deref().unwrap_or("none"),
                    r.spoofed_per_source,
                    r.got_in,
                    r.attempted,
                    r.median_login_ms,
                    r.flood_sent,
                    r.flood_pps,
                    if r.flood_covered {
                        ""
                    } else {
                        " (ended before the last login)"
                    }
                );
                runs.push(r);
            }
            Ok(runs)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the login runs panicked"))?
    })?;
    Ok(Section {
        rounds: opts.rounds,
        flood_secs: opts.flood.as_secs_f64(),
        max_packets: opts.max_packets,
        gen_cpu: GEN_CPU,
        rx_cpu: RX_CPU,
        paths,
        ratios,
        login_flood_secs: opts.login_flood.as_secs_f64(),
        login_flood_packets: opts.login_flood_packets,
        logins,
    })
}
