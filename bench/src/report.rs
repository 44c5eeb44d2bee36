//! The results as one value: targets, results.json and RESULTS.md.

use std::fmt::Write as _;

use lockdown_testbed::pair::{FLOOD_NET, FLOOD_PREFIX};
use serde::Serialize;

use crate::{attack, filters::Filter, legit, memory, progcost, rxcpu, syncookies};

#[derive(Debug, Serialize)]
pub(crate) struct Meta {
    pub date_utc: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub commit: String,
    pub quick: bool,
    pub iptables: String,
    pub nft: String,
    pub total_secs: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub meta: Meta,
    pub program_cost: Option<progcost::Section>,
    pub receive_cpu: Option<rxcpu::Section>,
    pub attack: Option<attack::Section>,
    pub memory: Option<memory::Section>,
    pub legit: Option<legit::Section>,
    pub syn_cookies: Option<syncookies::Section>,
    pub targets: Vec<Target>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub value: Option<f64>,
    /// `None` when the section did not run.
    pub met: Option<bool>,
}

impl Target {
    pub(crate) const fn status(&self) -> &'static str {
        match self.met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "NOT MEASURED",
        }
    }
}

fn target(
    name: &str,
    goal: &str,
    value: Option<f64>,
    measured: impl Fn(f64) -> String,
    ok: impl Fn(f64) -> bool,
) -> Target {
    Target {
        name: name.to_owned(),
        target: goal.to_owned(),
        measured: value.map_or_else(|| "not measured".to_owned(), &measured),
        value,
        met: value.map(|v| !v.is_nan() && ok(v)),
    }
}

/// The targets of issues 6, 9 and 10, judged on the measured values (reported, never asserted).
pub(crate) fn targets(
    p: Option<&progcost::Section>,
    r: Option<&rxcpu::Section>,
    a: Option<&attack::Section>,
    m: Option<&memory::Section>,
    l: Option<&legit::Section>,
    c: Option<&syncookies::Section>,
) -> Vec<Target> {
    let ratio = |id: &str| p.and_then(|p| p.path(id)).and_then(|x| x.ratio);
    let ns = |id: &str| p.and_then(|p| p.path(id)).map_or(f64::NAN, |x| x.ns);
    let rx = |f: Filter| {
        r.and_then(|r| r.ratio(f, Filter::Iptables))
            .map(|x| x.ratio)
    };
    let rx_ns = |f: Filter| {
        r.and_then(|r| r.filter(f))
            .map_or(f64::NAN, |x| x.ns_per_packet)
    };
    let ipt = rx_ns(Filter::Iptables);
    vec![
        target(
            "Program cost: dropped SYN",
            "<= 1.5x bare XDP_DROP",
            ratio("drop_syn_closed"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("drop_syn_closed"),
                    ns("baseline_drop")
                )
            },
            |v| v <= 1.5,
        ),
        target(
            "Program cost: established ACK",
            "<= 2x bare XDP_PASS",
            ratio("established_ack"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("established_ack"),
                    ns("baseline_pass")
                )
            },
            |v| v <= 2.0,
        ),
        target(
            "Program cost: established ACK against the lookup floor",
            "<= 1.3x one 16-byte-key LRU lookup",
            ratio("established_ack_vs_lookup"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("established_ack_vs_lookup"),
                    ns("lookup_only")
                )
            },
            |v| v <= 1.3,
        ),
        target(
            "Program cost: 9000-byte multi-buffer frame, established path",
            "<= 1.1x the same path at 54 bytes",
            ratio("jumbo_established"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("jumbo_established"),
                    ns("established_ack")
                )
            },
            |v| v <= 1.1,
        ),
        target(
            "Program cost: 9000-byte multi-buffer frame, drop path",
            "<= 1.1x the same path at 54 bytes",
            ratio("jumbo_drop"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("jumbo_drop"),
                    ns("drop_ack_closed")
                )
            },
            |v| v <= 1.1,
        ),
        target(
            "Program cost: SYN to a rate-limited allowed port",
            "<= 2x bare XDP_PASS",
            ratio("rated_syn"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("rated_syn"),
                    ns("baseline_pass")
                )
            },
            |v| v <= 2.0,
        ),
        target(
            "Program cost: established ACK with a 10 000-entry blocklist loaded",
            "<= 1.2x the same path without a blocklist",
            ratio("blocklist_established"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("blocklist_established"),
                    ns("established_ack")
                )
            },
            |v| v <= 1.2,
        ),
        target(
            "Rate-limit sketch: legitimate sources refused under a 1M-source spoofed flood",
            "measured, at or under the analytic count-min bound (10/min burst 5)",
            p.map(|p| p.sketch.after_flood),
            |v| {
                let s = &p.expect("measured").sketch;
                format!(
                    "{v:.2e} of {} probes right after the flood ({:.2e} during; bound {:.2e})",
                    s.probes, s.during_flood, s.bound
                )
            },
            |v| v <= p.map_or(0.0, |p| p.sketch.bound),
        ),
        target(
            "Egress cost: reply from an allowed service port",
            "<= 1.3x bare TC",
            ratio("egress_service"),
            |v| {
                format!(
                    "{v:.2}x ({:.1} ns vs {:.1} ns)",
                    ns("egress_service"),
                    ns("baseline_tc")
                )
            },
            |v| v <= 1.3,
        ),
        target(
            "Receive CPU per dropped packet: lockdown --mode skb",
            "<= 0.5x the seed iptables chain (same run)",
            rx(Filter::LockdownSkb),
            |v| {
                format!(
                    "{v:.2}x ({:.0} ns vs {ipt:.0} ns)",
                    rx_ns(Filter::LockdownSkb)
                )
            },
            |v| v <= 0.5,
        ),
        target(
            "Receive CPU per dropped packet: lockdown --mode native",
            "<= 0.5x the seed iptables chain (same run)",
            rx(Filter::LockdownNative),
            |v| {
                format!(
                    "{v:.2}x ({:.0} ns vs {ipt:.0} ns)",
                    rx_ns(Filter::LockdownNative)
                )
            },
            |v| v <= 0.5,
        ),
        target(
            "Spoofed SYN flood: flow entries created by lockdown",
            "0",
            a.and_then(|a| a.filter(Filter::LockdownNative))
                .map(|x| x.entries_created as f64),
            |v| {
                let sent = a
                    .and_then(|a| a.filter(Filter::LockdownNative))
                    .map_or(0, |x| x.flood_sent);
                format!("{v:.0} entries after {sent} spoofed SYNs")
            },
            |v| v == 0.0,
        ),
        target(
            "Flow entry size",
            "<= 64 bytes of key plus value",
            m.map(|m| m.key_value_bytes as f64),
            |v| {
                let (k, val) = m.map_or((0, 0), |m| (m.key_bytes, m.value_bytes));
                format!("{v:.0} B ({k} B key + {val} B value)")
            },
            |v| v <= 64.0,
        ),
        target(
            "Legit load: origin-initiated flows lost",
            "0",
            l.map(|l| l.lockdown.outbound.lost as f64),
            |v| {
                let x = l.map(|l| &l.lockdown);
                format!(
                    "{v:.0} of {} after {}{}",
                    x.map_or(0, |x| x.outbound.connections),
                    x.map_or_else(String::new, legit_load),
                    x.filter(|x| !x.reached_goal())
                        .map(|x| format!(
                            ", short of {}x capacity ({}){}",
                            legit::LOAD_FACTOR,
                            x.goal_connections,
                            if l.is_some_and(|l| l.quick) {
                                ", --quick"
                            } else {
                                ""
                            }
                        ))
                        .unwrap_or_default()
                )
            },
            // A full run must also have driven the load past 3x the table's capacity.
            |v| v == 0.0 && l.is_some_and(|l| l.quick || l.lockdown.reached_goal()),
        ),
        target(
            "Legit load: table entries created by accepted connections",
            "0",
            l.map(|l| l.lockdown.entries_created() as f64),
            |v| {
                let x = l.map(|l| &l.lockdown);
                format!(
                    "{v:.0} (egress_flows_created +{} over {}; {} live / {} closing entries on tcp/{})",
                    x.map_or(0, |x| x.load_flows_created),
                    x.map_or_else(String::new, legit_load),
                    x.map_or(0, |x| x.port_live_entries),
                    x.map_or(0, |x| x.port_closing_entries),
                    legit::SERVICE_PORT
                )
            },
            |v| v == 0.0,
        ),
        target(
            "SYN cookies: receive CPU per SYN answered with a cookie",
            "<= 1.3x a SYN to a closed port dropped by lockdown (same mode)",
            c.and_then(|c| c.ratio(syncookies::Path::Cookie, syncookies::Path::Closed))
                .map(|x| x.ratio),
            |v| {
                let ns = |p| {
                    c.and_then(|c| c.path(p))
                        .map_or(f64::NAN, |x| x.ns_per_packet)
                };
                format!(
                    "{v:.2}x ({:.0} vs {:.0} ns; the kernel's own answer, cookies off: {:.0} ns)",
                    ns(syncookies::Path::Cookie),
                    ns(syncookies::Path::Closed),
                    ns(syncookies::Path::Kernel)
                )
            },
            |v| v <= 1.3,
        ),
        target(
            "SYN cookies: logins during a full-speed flood, cookies on",
            "all get in, with and without --rate 2/min --burst 3 (and SYNs spoofed in their names)",
            c.and_then(|c| {
                c.logins
                    .iter()
                    .filter(|r| r.cookies == "on")
                    .map(|r| r.share)
                    .reduce(f64::min)
            }),
            |v| {
                let runs: Vec<String> = c
                    .map(|c| {
                        c.logins
                            .iter()
                            .filter(|r| r.cookies == "on")
                            .map(|r| format!("{}/{}", r.got_in, r.attempted))
                            .collect()
                    })
                    .unwrap_or_default();
                format!("{} at worst ({})", pct(v), runs.join(", "))
            },
            |v| v >= 1.0,
        ),
    ]
}

/// "N accepted connections in S s (R/s) against a table of C": the load behind a legit-load
/// target.
fn legit_load(x: &legit::LockdownRun) -> String {
    format!(
        "{} accepted connections in {:.1} s ({:.0}/s), table capacity {}",
        x.load.connections, x.load.secs, x.load.per_sec, x.live_capacity
    )
}

fn mib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / 1_048_576.0)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// Observations computed from the measurements, for the reader of RESULTS.md.
fn findings(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(p) = &r.program_cost {
        let ns = |id: &str| p.path(id).map_or(f64::NAN, |x| x.ns);
        let floor = ns("baseline_drop");
        let clock = ns("clock_boot_ns") - floor;
        if clock.is_finite() {
            let extra = ns("drop_syn_closed") - ns("allowed_syn");
            let like_clock = extra > 5.0 && (extra - clock).abs() < 0.3 * clock;
            out.push(format!(
                "One `bpf_ktime_get_boot_ns()` costs about {clock:.0} ns here (a bare XDP_DROP that \
                 calls it first: {:.0} ns, against {floor:.0} ns), `bpf_ktime_get_coarse_ns()` \
                 {:.0} ns and `bpf_jiffies64()` {:.0} ns. The dropped SYN costs {:.0} ns and the \
                 allowed SYN {:.0} ns ({extra:+.0} ns{}); with drop events off the dropped SYN \
                 costs {:.0} ns.",
                ns("clock_boot_ns"),
                ns("clock_coarse_ns") - floor,
                ns("clock_jiffies64") - floor,
                ns("drop_syn_closed"),
                ns("allowed_syn"),
                if like_clock { ", about one boot-clock read" } else { "" },
                ns("drop_syn_closed_nolog"),
            ));
        }
        out.push(format!(
            "Established paths cost {:.0}–{:.0} ns against {:.0} ns for the allowed SYN, which \
             parses the same headers without a flow lookup; the size of the flow table barely \
             matters on a hit ({:.2}x for {} against {} entries).",
            [
                "established_ack",
                "udp_reply",
                "ipv6_established",
                "vlan_established"
            ]
            .iter()
            .map(|id| ns(id))
            .fold(f64::INFINITY, f64::min),
            [
                "established_ack",
                "udp_reply",
                "ipv6_established",
                "vlan_established",
                "related_icmp"
            ]
            .iter()
            .map(|id| ns(id))
            .fold(f64::NEG_INFINITY, f64::max),
            ns("allowed_syn"),
            p.table_size.ratio_big_to_small,
            p.table_size.big_entries,
            p.table_size.small_entries,
        ));
    }
    if let Some(x) = &r.receive_cpu {
        let ns = |f: Filter| x.filter(f).map_or(f64::NAN, |r| r.ns_per_packet);
        let ipt = ns(Filter::Iptables);
        let floor = ns(Filter::BareDropSkb).min(ns(Filter::BareDropNative));
        if floor.is_finite() && ipt.is_finite() {
            out.push(format!(
                "On this veth a bare XDP_DROP already costs {:.0} ns (skb) / {:.0} ns (native) of \
                 receive CPU per packet, {:.2}x the iptables chain's {ipt:.0} ns: the receive path \
                 around the program (RPS hand-off or the veth's NAPI ring, skb handling, wake-ups \
                 in a VM) dominates, so no XDP program can reach 0.5x here. lockdown against that \
                 floor: {:.2}x (skb), {:.2}x (native), median of per-round ratios.",
                ns(Filter::BareDropSkb),
                ns(Filter::BareDropNative),
                floor / ipt,
                x.ratio(Filter::LockdownSkb, Filter::BareDropSkb)
                    .map_or(f64::NAN, |q| q.ratio),
                x.ratio(Filter::LockdownNative, Filter::BareDropNative)
                    .map_or(f64::NAN, |q| q.ratio),
            ));
        }
    }
    if let Some(a) = &r.attack
        && let (Some(l), Some(i)) = (a.filter(Filter::LockdownNative), a.filter(Filter::Iptables))
    {
        out.push(format!(
            "Under {} spoofed SYNs to an open port, lockdown created {} flow entries (its egress \
             program saw {} packets, the SYN-ACKs, and learned none of them) while conntrack \
             filled to {} entries{}.",
            a.packets,
            l.entries_created,
            l.counters.get("egress_packets").copied().unwrap_or(0),
            i.entries_after,
            i.conntrack_max
                .filter(|m| i.entries_after >= *m)
                .map(|m| format!(
                    ", its limit (nf_conntrack_max {m}): further new connections are dropped"
                ))
                .unwrap_or_default()
        ));
    }
    if let Some(l) = &r.legit {
        let x = &l.lockdown;
        let ipt = l.iptables.as_ref().map(|i| {
            format!(
                "; the seed iptables chain, under the same load ({} connections), left {} more \
                 conntrack entries ({} -> {}{})",
                i.load.connections,
                i.conntrack_created,
                i.conntrack_before,
                i.conntrack_after,
                i.conntrack_max
                    .map(|m| format!(" of nf_conntrack_max {m}"))
                    .unwrap_or_default()
            )
        });
        out.push(format!(
            "{} connections accepted on an allowed port ({:.1}x the {}-entry live table) created \
             {} flow entries in lockdown, and {} of the origin's {} own flows were lost{}.",
            x.load.connections,
            x.load.connections as f64 / x.live_capacity.max(1) as f64,
            x.live_capacity,
            x.entries_created(),
            x.outbound.lost,
            x.outbound.connections,
            ipt.unwrap_or_default()
        ));
    }
    out
}

/// RESULTS.md.
pub(crate) fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.meta;
    let _ = writeln!(s, "# lockdown benchmarks\n");
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench{}`{} on {} — Linux {}, {} CPUs ({}), commit {}; {:.0} s in all. \
         Every figure is a median over repeated runs, and every ratio is computed within one run \
         (one repetition or round) and then the median taken. Raw samples are in `results.json`; \
         `chart.svg` plots sections 1–3.\n",
        if m.quick { " --quick" } else { "" },
        if m.quick {
            " (a smoke run: fewer repeats and packets)"
        } else {
            ""
        },
        m.date_utc,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.commit,
        m.total_secs
    );
    let _ = writeln!(s, "## Targets\n");
    let notes = findings(r);
    let _ = writeln!(s, "| target | goal | measured | status |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | **{}** |",
            t.name,
            t.target,
            t.measured,
            t.status()
        );
    }
    let _ = writeln!(s);
    if !notes.is_empty() {
        let _ = writeln!(s, "Reading the numbers (derived from this run):\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
        let _ = writeln!(s);
    }

    if let Some(p) = &r.program_cost {
        let _ = writeln!(s, "## 1. Program cost (BPF_PROG_TEST_RUN)\n");
        let _ = writeln!(
            s,
            "Each path's frame is run {} times per measurement by the kernel, which reports the mean \
             duration per run; {} measurements per path, interleaved (the order rotates each \
             repetition), on CPU{}. The object's bare `XDP_DROP` / `XDP_PASS` programs (and a \
             two-instruction TC program for the egress paths) are measured in the same repetitions; \
             the ratio is the median of the per-repetition ratios. Drop paths compare with \
             `XDP_DROP`, pass paths with `XDP_PASS`. Each path's verdict was checked with one run \
             (action and the counter that moved) before it was timed. The floor includes the \
             test-run loop itself, so a bare program is not free.\n",
            p.repeat, p.reps, p.cpu
        );
        let _ = writeln!(
            s,
            "| path | program | verdict | frame | ns/packet | vs baseline | samples (ns) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for x in &p.paths {
            let ratio = match (x.ratio, x.baseline) {
                (Some(v), Some(b)) => format!("{v:.2}x {}", b.label()),
                _ => "—".into(),
            };
            let samples: Vec<String> = x.ns_samples.iter().map(|v| format!("{v:.0}")).collect();
            let _ = writeln!(
                s,
                "| {} | `{}` | {} | {} B | {:.1} | {} | {} |",
                x.label,
                x.program,
                x.verdict,
                x.frame_bytes,
                x.ns,
                ratio,
                samples.join(" ")
            );
        }
        let t = &p.table_size;
        let _ = writeln!(
            s,
            "\nFlow-table size: a hit in a table holding {} entries (capacity {}) against one holding {} \
             (capacity {}), separate loads of the object with `map_max_entries({})`: \
             **{:.2}x** (median of per-repetition ratios). Filling both took {:.1} s. The same \
             key is looked up on every run, so its bucket stays in cache: this shows the cost of \
             the table's size on a hit, not of cache misses on a cold table.\n",
            t.big_entries,
            t.big_max_entries,
            t.small_entries,
            t.small_max_entries,
            lockdown_common::contract::maps::FLOWS4,
            t.ratio_big_to_small,
            t.fill_secs
        );
    }

    if let Some(x) = &r.receive_cpu {
        let _ = writeln!(s, "## 2. Receive CPU per packet on a veth\n");
        let _ = writeln!(
            s,
            "Two namespaces made by the bench, joined by a veth. A Rust generator (AF_PACKET, \
             `sendmmsg` batches of 64) pinned to CPU{g} floods the origin with SYNs to closed port \
             {port} from random spoofed sources in {FLOOD_NET}/{FLOOD_PREFIX}, for {secs} s or {max} packets, \
             whichever comes first. RPS on the origin's veth steers receive processing to CPU{r} \
             (and RPS on the peer's veth steers the origin's replies back to CPU{g}); for native \
             XDP the veth's NAPI is threaded and its kthread pinned to CPU{r} ({napi}).\n\n\
             **How CPU{r} is measured.** A SCHED_IDLE cycle soaker runs on CPU{r} throughout: \
             interrupts, softirqs and kernel threads preempt it at once, so the work it loses \
             during a flood, against its undisturbed rate measured just before, is the CPU time the \
             receive path took — including the hypervisor time of the VM exits it causes, which \
             the guest's tick accounting cannot see. That time, over the flood and a 300 ms drain, \
             divided by the packets the origin's veth took in, is the **ns/packet** below. The \
             soaker also keeps CPU{r} out of idle: without it, every wake-up from idle (a VM exit \
             here) lands on the packets of whichever filter is fast enough to let CPU{r} sleep \
             between them, and the cheaper filters come out dearer (measured while developing \
             this bench: a bare XDP_DROP at 2 µs, above the iptables chain). **ticks** is the \
             cross-check from /proc/stat: CPU{r}'s system + irq + softirq time as sampled by the \
             tick, per packet. A receiver that is not saturated (CPU{r} taken < 90%) still pays \
             per wake-up (RPS IPI or NAPI kthread wake) for small batches, so its figure is an \
             upper bound of its cost at saturation; the saturated chains are measured at capacity. \
             CPU{g} busy is from /proc/stat's exact idle time. Medians of {rounds} rounds; each \
             round applies the filters in turn (the order rotates). With no flood, something \
             else took {noise:.1}% of CPU{r}. A sample is accepted only if the filter's own drop \
             counter (where it has one) accounts for ≥ 90% of the packets, the origin answered \
             (RST) with no filter and did not with one.\n",
            g = x.gen_cpu,
            port = rxcpu::CLOSED_PORT,
            secs = x.flood_secs,
            max = x.max_packets,
            r = x.rx_cpu,
            napi = if x.napi_threads.is_empty() {
                "no native run".to_owned()
            } else {
                x.napi_threads.join(", ")
            },
            rounds = x.rounds,
            noise = x.idle_cpu1_util * 100.0
        );
        let _ = writeln!(
            s,
            "| filter | CPU{} ns/packet | ticks | received pps | sent pps | CPU{} busy | CPU{} taken | bottleneck | samples (ns/packet) |",
            x.rx_cpu, x.gen_cpu, x.rx_cpu
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for f in &x.filters {
            let samples: Vec<String> = f
                .samples
                .iter()
                .map(|v| format!("{:.0}", v.ns_per_packet))
                .collect();
            let _ = writeln!(
                s,
                "| {} | **{:.0}** | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} |",
                f.label,
                f.ns_per_packet,
                f.ns_per_packet_ticks,
                f.rx_pps,
                f.sent_pps,
                pct(f.cpu0_util),
                pct(f.cpu1_util),
                f.bottleneck,
                samples.join(" ")
            );
        }
        let _ = writeln!(
            s,
            "\n| ratio (CPU per packet, per round) | median | rounds |"
        );
        let _ = writeln!(s, "|---|---|---|");
        for q in &x.ratios {
            let samples: Vec<String> = q.samples.iter().map(|v| format!("{v:.2}")).collect();
            let _ = writeln!(
                s,
                "| {} / {} | **{:.2}x** | {} |",
                q.filter.label(),
                q.vs.label(),
                q.ratio,
                samples.join(" ")
            );
        }
        let _ = writeln!(s);
    }

    if let Some(a) = &r.attack {
        let _ = writeln!(s, "## 3. State under attack\n");
        let _ = writeln!(
            s,
            "A spoofed SYN flood of {} packets to tcp/{} (allowed, with a listener in the origin), \
             generator on CPU0 at SCHED_IDLE, receive on CPU1 as in section 2, a fresh pair of \
             namespaces per filter. Entries are counted before the flood and 500 ms after it. An \
             echo connection from the peer to the origin's port {} (established before the \
             flood) measures request/response time for {}-byte messages: up to the configured \
             number of round trips idle, then as many as fit while the flood runs.\n",
            a.packets, a.port, a.port, a.message_bytes
        );
        let _ = writeln!(
            s,
            "| filter | SYNs sent | received | entries counted | before | after | created by the flood | RTT idle median / p99 | RTT under flood median / p99 | probes under flood |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        for f in &a.filters {
            let limit = f
                .conntrack_max
                .map(|m| format!(" (nf_conntrack_max {m})"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} in {:.1} s | {} | {}{} | {} | {} | **{}** | {:.0} / {:.0} µs | {:.0} / {:.0} µs | {}{}{} |",
                f.label,
                f.flood_sent,
                f.flood_secs,
                f.rx_packets,
                f.entries_of,
                limit,
                f.entries_before,
                f.entries_after,
                f.entries_created,
                f.idle.median_us,
                f.idle.p99_us,
                f.flood.median_us,
                f.flood.p99_us,
                f.flood.round_trips,
                if f.flood.timeouts > 0 {
                    ", one timed out (5 s)"
                } else {
                    ""
                },
                if f.probe_within_flood {
                    ""
                } else {
                    " (flood ended first)"
                }
            );
        }
        for f in a.filters.iter().filter(|f| !f.counters.is_empty()) {
            let c: Vec<String> = f.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(
                s,
                "\nlockdown counters over the flood ({}): {}.",
                f.label,
                c.join(", ")
            );
        }
        let _ = writeln!(s);
    }

    if let Some(m) = &r.memory {
        let _ = writeln!(s, "## 4. Memory\n");
        let _ = writeln!(
            s,
            "An IPv4 flow entry is a {} B key (`FlowKey4`) and a {} B value (`FlowValue`): **{} B** \
             (IPv6: a 40 B `FlowKey`). The kernel charges **{:.1} B per entry** of the IPv4 live \
             table (memlock at {} entries minus \
             at {}, over the difference: hash element header, key and value rounded to 8 bytes, \
             and the bucket array). Every map's memlock, read from `/proc/self/fdinfo/<fd>` after \
             loading the object (no program attached): **{}** at the default {} flows, **{}** at \
             {} flows. Hash and LRU maps preallocate every entry; the LPM trie allocates a node \
             per CIDR rule as rules are added, so it shows (almost) nothing here.\n",
            m.key_bytes,
            m.value_bytes,
            m.key_value_bytes,
            m.memlock_per_flow,
            m.big_max_flows,
            m.default_max_flows,
            mib(m.total_memlock_default),
            m.default_max_flows,
            mib(m.total_memlock_big),
            m.big_max_flows
        );
        let _ = writeln!(
            s,
            "| map | type | key B | value B | entries (default) | memlock (default) | entries (big) | memlock (big) |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for x in &m.maps {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                x.name,
                x.map_type_name,
                x.key_size,
                x.value_size,
                x.max_entries_default,
                mib(x.memlock_default),
                x.max_entries_big,
                mib(x.memlock_big)
            );
        }
        let _ = writeln!(s);
    }

    if let Some(l) = &r.legit {
        legit_markdown(&mut s, l);
    }
    if let Some(c) = &r.syn_cookies {
        syncookies_markdown(&mut s, c);
    }
    s
}

fn syncookies_markdown(s: &mut String, c: &syncookies::Section) {
    let _ = writeln!(
        s,
        "## 6. SYN cookies
"
    );
    let _ = writeln!(
        s,
        "**Receive CPU per flood SYN**, measured as in section 2 (generator on CPU{g}, the \
         origin's receive work on CPU{r}, read off the cycle soaker there), {rounds} alternating \
         rounds of floods of {secs} s or {max} Linux-shaped SYNs (74 bytes: MSS, SACK-permitted, \
         timestamps, window scale) from {FLOOD_NET}/{FLOOD_PREFIX}, with `lockdown up --mode native \
         --syn-cookies MODE` attached afresh for each measurement. The peer's veth runs an \
         XDP_PASS program (without one it does not receive `XDP_TX` frames on this kernel) with \
         threaded NAPI pinned to CPU{g}, so that receiving the cookie SYN-ACKs is not charged to \
         CPU{r}. A listener (backlog 128) serves tcp/22 for the kernel's path; it overflows at \
         once and the kernel answers with its own syncookies. Ratios are per round, then the \
         median.\n",
        g = c.gen_cpu,
        r = c.rx_cpu,
        rounds = c.rounds,
        secs = c.flood_secs,
        max = c.max_packets,
    );
    let _ = writeln!(
        s,
        "| path | ns/packet (CPU{}) | received pps | sent pps | samples (ns) |",
        c.rx_cpu
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for p in &c.paths {
        let samples: Vec<String> = p
            .samples
            .iter()
            .map(|x| format!("{:.0}", x.ns_per_packet))
            .collect();
        let _ = writeln!(
            s,
            "| {} | **{:.0}** | {:.0} | {:.0} | {} |",
            p.label,
            p.ns_per_packet,
            p.rx_pps,
            p.sent_pps,
            samples.join(" ")
        );
    }
    let _ = writeln!(s);
    for x in &c.ratios {
        let samples: Vec<String> = x.samples.iter().map(|v| format!("{v:.2}")).collect();
        let _ = writeln!(
            s,
            "- {} against {}: **{:.2}x** (rounds: {})",
            x.path.label(),
            x.vs.label(),
            x.ratio,
            samples.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\n**Logins during a full-speed flood.** A fresh pair of namespaces per run, a real sshd \
         (Debian's OpenSSH) in the origin, and the real ssh client logging in as root with a key \
         and running `echo ok`, {} at a time, each from a source address no connection used \
         before, while the generator (pinned to CPU{}) floods tcp/22 with Linux-shaped SYNs \
         from random sources over the whole IPv4 space, at full speed, for up to {:.0} s or {} \
         frames; the logins start after {PRIMING} flood frames and the flood stops when they are \
         done. Where the run says so, {} SYNs are first spoofed in each login source's own name \
         (more than its burst). A login counts as got in if the command ran.\n",
        syncookies::BATCH,
        c.gen_cpu,
        c.login_flood_secs,
        c.login_flood_packets,
        syncookies::SPOOFS_PER_SOURCE,
        PRIMING = syncookies::PRIMING,
    );
    let _ = writeln!(
        s,
        "| cookies | rate | spoofed per source | got in | median login | flood | counters that moved |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for r in &c.logins {
        let moved: Vec<String> = r
            .counters
            .iter()
            .filter(|(k, _)| {
                k.contains("cookie")
                    || k.contains("rate")
                    || k.contains("syn")
                    || k.contains("flow")
            })
            .map(|(k, v)| format!("{k} +{v}"))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | **{}/{}** ({}) | {} | {} frames at {:.0}/s{} | {} |",
            r.cookies,
            r.rate.as_deref().unwrap_or("none"),
            r.spoofed_per_source,
            r.got_in,
            r.attempted,
            pct(r.share),
            if r.median_login_ms.is_nan() {
                "—".to_owned()
            } else {
                format!("{:.0} ms", r.median_login_ms)
            },
            r.flood_sent,
            r.flood_pps,
            if r.flood_covered {
                ""
            } else {
                " (ended before the last login)"
            },
            moved.join(", ")
        );
    }
    if let Some(f) = c.logins.iter().find_map(|r| r.first_failure.as_ref()) {
        let _ = writeln!(s, "\nFirst failed login: {f}");
    }
    let _ = writeln!(s);
}

fn legit_markdown(s: &mut String, l: &legit::Section) {
    let x = &l.lockdown;
    let _ = writeln!(
        s,
        "## 5. State under legit load
"
    );
    let _ = writeln!(
        s,
        "A fresh pair of namespaces per filter. lockdown runs on the origin's veth as `lockdown up \
         --mode {} --max-flows {} {}`: an IPv4 live table of **{} entries** and a closing table of \
         {}. The origin serves tcp/{} (one byte echoed per connection, {} server threads) and opens \
         {} idle IPv4 connections of its own to tcp/{} in the peer namespace, each checked with one \
         byte before the load. The peer then opens connections to the origin's tcp/{}, sends a \
         byte, reads the echo and closes, {} at a time, for {:.0} s or {} attempts, whichever \
         comes first (the goal: at least {}x the live table's capacity, {} connections). After \
         the load the peer pushes one byte down each of the origin's own connections; a \
         connection whose byte the origin did not receive within {} ms is **lost** (its flow \
         entry was evicted, so lockdown drops the reply). Entries created by the accepted \
         connections: the `egress_flows_created` counter over the load alone (the {} outbound \
         connections were opened before it), and the entries with local port {} in `lockdown \
         flows --json` right after it; the target counts the larger. The tables are also sampled \
         every 500 ms during the load. One run per filter, no repeats.\n",
        x.mode,
        x.max_flows,
        x.allow
            .iter()
            .map(|a| format!("--allow {a}"))
            .collect::<Vec<_>>()
            .join(" "),
        x.live_capacity,
        x.closing_capacity,
        l.service_port,
        l.parallel,
        l.outbound,
        l.outbound_port,
        l.service_port,
        l.parallel,
        l.duration_secs,
        l.max_connections,
        legit::LOAD_FACTOR,
        x.goal_connections,
        x.outbound.timeout_ms,
        l.outbound,
        l.service_port,
    );
    let _ = writeln!(
        s,
        "| filter | accepted connections | per second | failed | connect + echo median / p99 | origin-initiated flows lost | entries created by the accepted connections | entries counted |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} in {:.1} s{} | {:.0} | {} | {:.0} / {:.0} µs | **{} of {}** | **{}** | egress_flows_created +{}; {} live / {} closing entries on tcp/{}; peak {} live / {} closing ({} samples) |",
        x.label,
        x.load.connections,
        x.load.secs,
        if x.reached_goal() {
            String::new()
        } else {
            format!(" (short of {})", x.goal_connections)
        },
        x.load.per_sec,
        x.load.failed,
        x.load.median_us,
        x.load.p99_us,
        x.outbound.lost,
        x.outbound.connections,
        x.entries_created(),
        x.load_flows_created,
        x.port_live_entries,
        x.port_closing_entries,
        l.service_port,
        x.peak_live,
        x.peak_closing,
        x.samples,
    );
    if let Some(i) = &l.iptables {
        let _ = writeln!(
            s,
            "| {} | {} in {:.1} s | {:.0} | {} | {:.0} / {:.0} µs | **{} of {}** | **{}** | nf_conntrack_count {} -> {} (peak {}{}) |",
            i.label,
            i.load.connections,
            i.load.secs,
            i.load.per_sec,
            i.load.failed,
            i.load.median_us,
            i.load.p99_us,
            i.outbound.lost,
            i.outbound.connections,
            i.conntrack_created,
            i.conntrack_before,
            i.conntrack_after,
            i.conntrack_peak,
            i.conntrack_max
                .map(|m| format!(", nf_conntrack_max {m}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "\nFor the iptables chain the column is the growth of nf_conntrack_count over the \
             load: every accepted connection takes a conntrack entry, which stays after the close \
             (TIME_WAIT, 120 s by default). The peer reuses its source ports (`tcp_tw_reuse`, \
             ephemeral range 10000–65000, of which connect() takes one parity), and a reused \
             4-tuple reuses its entry, so the count grows with the distinct 4-tuples, not with \
             the connections."
        );
    }
    let _ = writeln!(
        s,
        "\nlockdown's flow maps after the load (entries now, high-water mark as counted by the \
         samples):\n"
    );
    let _ = writeln!(
        s,
        "| map | table | family | entries | capacity | high-water |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for t in &x.tables {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            t.map, t.table, t.family, t.entries, t.capacity, t.high_water
        );
    }
    if !x.counters.is_empty() {
        let c: Vec<String> = x.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            s,
            "\nlockdown counters over the load: {}. The origin's own connections took {} \
             `egress_flows_created` when they were opened.",
            c.join(", "),
            x.outbound_flows_created
        );
    }
    if x.load.failed > 0 {
        let _ = writeln!(
            s,
            "\n{} load connections failed through lockdown (first: {}).",
            x.load.failed,
            x.load.first_error.as_deref().unwrap_or("?")
        );
    }
    if let Some(i) = l.iptables.as_ref().filter(|i| i.load.failed > 0) {
        let _ = writeln!(
            s,
            "\n{} load connections failed through the iptables chain (first: {}).",
            i.load.failed,
            i.load.first_error.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(s);
}
