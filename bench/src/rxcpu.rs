//! Section 2: CPU time per received packet on the receiving core, for a spoofed SYN flood to a
//! closed port, under each filter.
//!
//! The generator runs on CPU0 in the peer namespace; RPS (and, for native XDP, threaded NAPI)
//! puts all of the origin's receive work on CPU1. CPU1 also runs a SCHED_IDLE cycle soaker
//! ([`sys::Soaker`]): the work it loses during the flood, against its rate just before, is the
//! CPU time the receive path took. Divided by the packets the origin's veth took in, that is the
//! receive cost per packet. The soaker keeps CPU1 out of idle, so the figures are those of a
//! busy core: on this VM each wake-up from idle is a VM exit, which would otherwise be charged
//! per packet to whichever filter is fast enough to let CPU1 sleep between packets. The kernel
//! time /proc/stat samples on CPU1 (system + irq + softirq) is kept as a cross-check.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use lockdown_testbed::{
    flood::{self, Flood},
    pair::{GEN_CPU, Link, NetPair, ORIGIN_IF, PEER_IF, RX_CPU},
};
use serde::Serialize;

use crate::{
    filters::{Applied, Env, Filter},
    stats::{median, per_round},
    sys::{self, CpuTime, Soaker},
};

/// A port nothing listens on, and no rule allows.
pub(crate) const CLOSED_PORT: u16 = 8080;
/// How long the soaker's undisturbed rate is measured before each flood.
pub(crate) const CALIBRATION: Duration = Duration::from_millis(500);
/// After the flood, until CPU1's backlog has surely drained.
pub(crate) const DRAIN: Duration = Duration::from_millis(300);

#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub rounds: usize,
    pub flood: Duration,
    pub max_packets: u64,
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    pub round: usize,
    pub sent: u64,
    pub send_secs: f64,
    /// Packets the origin's veth took in (and CPU1 processed).
    pub rx_packets: u64,
    /// Frames the veth dropped before the origin saw them (ring or backlog full).
    pub veth_dropped: u64,
    /// Packets the filter counted as dropped, if it counts.
    pub filter_dropped: Option<u64>,
    /// Packets the origin sent back (RSTs with no filter).
    pub origin_tx: u64,
    /// CPU1 time the receive path took (the soaker's loss), ms.
    pub cpu1_ms: f64,
    /// `cpu1_ms` per received packet, ns.
    pub ns_per_packet: f64,
    /// Cross-check: CPU1 system + irq + softirq time sampled by the tick, per packet, ns.
    pub ns_per_packet_ticks: f64,
    /// Fraction of CPU0 busy while sending.
    pub cpu0_util: f64,
    /// Fraction of CPU1 the receive path took while the flood ran.
    pub cpu1_util: f64,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct FilterResult {
    pub filter: Filter,
    pub label: &'static str,
    /// Medians over the rounds.
    pub ns_per_packet: f64,
    pub ns_per_packet_ticks: f64,
    pub rx_pps: f64,
    pub sent_pps: f64,
    pub cpu0_util: f64,
    pub cpu1_util: f64,
    pub bottleneck: String,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Ratio {
    pub filter: Filter,
    pub vs: Filter,
    /// Median of the per-round ratios of ns per packet.
    pub ratio: f64,
    pub samples: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Section {
    pub rounds: usize,
    pub flood_secs: f64,
    pub max_packets: u64,
    pub gen_cpu: usize,
    pub rx_cpu: usize,
    /// Fraction of CPU1 that something other than the soaker took over one second with no
    /// flood, before the runs (background noise).
    pub idle_cpu1_util: f64,
    pub napi_threads: Vec<String>,
    pub filters: Vec<FilterResult>,
    pub ratios: Vec<Ratio>,
}

impl Section {
    pub(crate) fn filter(&self, f: Filter) -> Option<&FilterResult> {
        self.filters.iter().find(|r| r.filter == f)
    }

    pub(crate) fn ratio(&self, f: Filter, vs: Filter) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.filter == f && r.vs == vs)
    }
}

/// Wall time, the soaker's count and /proc/stat at one moment.
pub(crate) struct Snap {
    at: Instant,
    soaked: u64,
    cpu: Vec<CpuTime>,
}

impl Snap {
    pub(crate) fn now(soaker: &Soaker) -> Result<Self> {
        Ok(Self {
            cpu: sys::cpu_times()?,
            soaked: soaker.count(),
            at: Instant::now(),
        })
    }

    pub(crate) fn wall(&self, later: &Self) -> f64 {
        later.at.duration_since(self.at).as_secs_f64()
    }

    /// Seconds of CPU1 not given to the soaker, at the soaker's undisturbed `rate`.
    pub(crate) fn taken(&self, later: &Self, rate: f64) -> f64 {
        let soaked = later.soaked.saturating_sub(self.soaked) as f64 / rate;
        (self.wall(later) - soaked).max(0.0)
    }

    /// Fraction of CPU0 not idle (/proc/stat idle is exact; shown in 10 ms ticks).
    pub(crate) fn cpu0_util(&self, later: &Self) -> f64 {
        let idle = later.cpu[GEN_CPU]
            .idle
            .saturating_sub(self.cpu[GEN_CPU].idle) as f64
            / sys::clk_tck() as f64;
        (1.0 - idle / self.wall(later)).clamp(0.0, 1.0)
    }

    /// Seconds of CPU1 kernel time sampled by the tick.
    fn kernel_ticks(&self, later: &Self) -> f64 {
        later.cpu[RX_CPU]
            .kernel
            .saturating_sub(self.cpu[RX_CPU].kernel) as f64
            / sys::clk_tck() as f64
    }
}

/// The soaker's undisturbed rate (units per second) over `d`.
pub(crate) fn soak_rate(soaker: &Soaker, d: Duration) -> Result<f64> {
    let a = Snap::now(soaker)?;
    sys::sleep(d)?;
    let b = Snap::now(soaker)?;
    let rate = b.soaked.saturating_sub(a.soaked) as f64 / a.wall(&b);
    if rate <= 0.0 {
        bail!("the cycle soaker on CPU{RX_CPU} made no progress");
    }
    Ok(rate)
}

fn measure(
    pair: &NetPair,
    applied: &Applied<'_>,
    soaker: &Soaker,
    opts: &Options,
    round: usize,
) -> Result<Sample> {
    let rate = soak_rate(soaker, CALIBRATION)?;
    let o0 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let p0 = sys::dev_stats(&pair.peer, PEER_IF)?;
    let s0 = Snap::now(soaker)?;
    let flood = Flood::start(
        pair,
        flood::Spec {
            cpu: Some(GEN_CPU),
            ..flood::Spec::new(CLOSED_PORT, opts.max_packets, opts.flood)
        },
    )?;
    let st = flood.wait()?;
    let s1 = Snap::now(soaker)?;
    sys::sleep(DRAIN)?;
    let s2 = Snap::now(soaker)?;
    let o1 = sys::dev_stats(&pair.origin, ORIGIN_IF)?;
    let p1 = sys::dev_stats(&pair.peer, PEER_IF)?;
    let rx = o1.rx_packets - o0.rx_packets;
    if rx == 0 {
        bail!("no flood packet reached {ORIGIN_IF} ({} sent)", st.sent);
    }
    let filter_dropped = applied.dropped()?;
    let origin_tx = o1.tx_packets - o0.tx_packets;
    let f = applied.filter;
    // Setup checks: the flood must have met the filter we think is in place.
    if let Some(d) = filter_dropped
        && (d as f64) < 0.9 * rx as f64
    {
        bail!(
            "{} counted {d} drops for {rx} packets received: the filter is not working",
            f.label()
        );
    }
    if f.drops() && (origin_tx as f64) > 0.05 * rx as f64 {
        bail!(
            "{}: the origin answered {origin_tx} of {rx} SYNs to a closed port",
            f.label()
        );
    }
    if !f.drops() && (origin_tx as f64) < 0.5 * rx as f64 {
        bail!("no filter: the origin answered only {origin_tx} of {rx} SYNs with a RST");
    }
    let taken = s0.taken(&s2, rate);
    Ok(Sample {
        round,
        sent: st.sent,
        send_secs: st.elapsed.as_secs_f64(),
        rx_packets: rx,
        veth_dropped: (p1.tx_dropped - p0.tx_dropped) + (o1.rx_dropped - o0.rx_dropped),
        filter_dropped,
        origin_tx,
        cpu1_ms: taken * 1e3,
        ns_per_packet: taken * 1e9 / rx as f64,
        ns_per_packet_ticks: s0.kernel_ticks(&s2) * 1e9 / rx as f64,
        cpu0_util: s0.cpu0_util(&s1),
        cpu1_util: (s0.taken(&s1, rate) / s0.wall(&s1)).clamp(0.0, 1.0),
    })
}

fn bottleneck(cpu0: f64, cpu1: f64) -> String {
    if cpu1 >= 0.9 {
        format!("receiver (CPU1 {:.0}% taken)", cpu1 * 100.0)
    } else if cpu0 >= 0.9 {
        format!("generator (CPU0 {:.0}% busy)", cpu0 * 100.0)
    } else {
        format!(
            "neither (CPU0 {:.0}%, CPU1 {:.0}%)",
            cpu0 * 100.0,
            cpu1 * 100.0
        )
    }
}

pub(crate) fn run(opts: &Options, env: &Env) -> Result<Section> {
    println!(
        "==> [2/4] receive CPU per packet on a veth ({} rounds x {} filters, floods of {} s or {} packets, generator CPU{GEN_CPU}, receive CPU{RX_CPU})",
        opts.rounds,
        opts.filters.len(),
        opts.flood.as_secs_f64(),
        opts.max_packets
    );
    let pair = NetPair::create("rx", Link::QUIET)?;
    pair.steer_receive()?;
    let soaker = Soaker::start(RX_CPU)?;
    // Background noise: what takes CPU1 from the soaker with no flood, against its best rate.
    let r1 = soak_rate(&soaker, Duration::from_millis(500))?;
    let r2 = soak_rate(&soaker, Duration::from_secs(1))?;
    let idle_cpu1_util = (1.0 - r2 / r1.max(r2)).max(0.0);
    println!(
        "    CPU1 taken from the soaker with no flood: {:.1}%",
        idle_cpu1_util * 100.0
    );
    if idle_cpu1_util > 0.05 {
        eprintln!(
            "lockdown-bench: warning: something else is taking {:.0}% of CPU1 before any flood; the receive figures will be noisy",
            idle_cpu1_util * 100.0
        );
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); opts.filters.len()];
    let mut napi_threads = Vec::new();
    for round in 0..opts.rounds {
        for k in 0..opts.filters.len() {
            sys::check_interrupted()?;
            let i = (k + round) % opts.filters.len();
            let f = opts.filters[i];
            let applied = Applied::apply(f, &pair, env)?;
            if napi_threads.is_empty() {
                napi_threads.clone_from(&applied.napi_threads);
            }
            // Let the previous filter's deferred teardown (RCU, page pools, NAPI) finish.
            sys::sleep(Duration::from_secs(1))?;
            let s = measure(&pair, &applied, &soaker, opts, round)?;
            applied.remove()?;
            println!(
                "    round {} {:<32} {:>6.0} ns/pkt (ticks {:>5.0})  rx {:>8.0} pps  sent {:>8.0} pps  CPU0 {:>3.0}%  CPU1 {:>3.0}%",
                round + 1,
                f.label(),
                s.ns_per_packet,
                s.ns_per_packet_ticks,
                s.rx_packets as f64 / s.send_secs,
                s.sent as f64 / s.send_secs,
                s.cpu0_util * 100.0,
                s.cpu1_util * 100.0
            );
            samples[i].push(s);
        }
    }
    drop(soaker);
    drop(pair);

    let filters: Vec<FilterResult> = opts
        .filters
        .iter()
        .zip(samples)
        .map(|(&f, s)| {
            let m = |g: &dyn Fn(&Sample) -> f64| median(&s.iter().map(g).collect::<Vec<_>>());
            let cpu0 = m(&|x| x.cpu0_util);
            let cpu1 = m(&|x| x.cpu1_util);
            FilterResult {
                filter: f,
                label: f.label(),
                ns_per_packet: m(&|x| x.ns_per_packet),
                ns_per_packet_ticks: m(&|x| x.ns_per_packet_ticks),
                rx_pps: m(&|x| x.rx_packets as f64 / x.send_secs),
                sent_pps: m(&|x| x.sent as f64 / x.send_secs),
                cpu0_util: cpu0,
                cpu1_util: cpu1,
                bottleneck: bottleneck(cpu0, cpu1),
                samples: s,
            }
        })
        .collect();
    let ratio = |f: Filter, vs: Filter| -> Option<Ratio> {
        let a = filters.iter().find(|r| r.filter == f)?;
        let b = filters.iter().find(|r| r.filter == vs)?;
        let (ratio, samples) = per_round(&a.samples, &b.samples, |x| x.ns_per_packet);
        Some(Ratio {
            filter: f,
            vs,
            ratio,
            samples,
        })
    };
    let ratios = [
        (Filter::LockdownSkb, Filter::Iptables),
        (Filter::LockdownNative, Filter::Iptables),
        (Filter::Nftables, Filter::Iptables),
        (Filter::LockdownSkb, Filter::BareDropSkb),
        (Filter::LockdownNative, Filter::BareDropNative),
    ]
    .into_iter()
    .filter_map(|(f, vs)| ratio(f, vs))
    .collect();
    Ok(Section {
        rounds: opts.rounds,
        flood_secs: opts.flood.as_secs_f64(),
        max_packets: opts.max_packets,
        gen_cpu: GEN_CPU,
        rx_cpu: RX_CPU,
        idle_cpu1_util,
        napi_threads,
        filters,
        ratios,
    })
}
