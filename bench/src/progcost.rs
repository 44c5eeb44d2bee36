//! Section 1: what each datapath path costs, per packet, through BPF_PROG_TEST_RUN. The kernel
//! runs the program `repeat` times on the same frame and returns the mean duration; the bare
//! `XDP_DROP` / `XDP_PASS` programs of the same object (and a two-instruction TC program) are
//! measured in the same repetition, interleaved, so every ratio compares like with like.

use std::{
    net::{Ipv4Addr, Ipv6Addr, TcpListener},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use lockdown_common::{
    contract::{
        config::Config,
        counters::{Counter, CounterKind},
        flow::{FAMILY_V4, FlowKey, FlowState, FlowValue, PROTO_TCP, PROTO_UDP},
        maps::{
            PROG_BASELINE_DROP, PROG_BASELINE_LOOKUP, PROG_BASELINE_PASS, PROG_EGRESS, PROG_INGRESS,
        },
        syncookie::{CookieConfig, MODE_ON},
    },
    rules::deny::DenyNet,
};
use lockdown_testbed::{
    netns::in_private_netns,
    packets::{LINUX_SYN_OPTIONS, Pkt, TCP_ACK, TCP_SYN, ack_for, addr16},
    pair::GEN_CPU,
    testrun::{self, Datapath, XDP_TX, flow_key, now},
};
use serde::Serialize;

use crate::{
    raw::{self, RawProg},
    stats::{median, median_of},
    sys,
};

/// The origin (where lockdown would be attached), as the programs see it. These frames only ever
/// go through BPF_PROG_TEST_RUN: documentation ranges, never a network.
const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The remote peer.
const REMOTE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A router on the path that sends ICMP errors.
const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC (-1) as the test run reports it.
const TC_NEXT: u32 = u32::MAX;

/// The connection the established paths belong to: the origin's port 40000 to the remote's 443.
const EST_LOCAL_PORT: u16 = 40_000;
const EST_REMOTE_PORT: u16 = 443;
const UDP_LOCAL_PORT: u16 = 40_001;
const UDP_REMOTE_PORT: u16 = 53;
const SYN_LOCAL_PORT: u16 = 40_002;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    /// BPF_PROG_TEST_RUN repeat count per measurement.
    pub repeat: u32,
    /// Measurements per path (the median is reported).
    pub reps: usize,
    /// Flow-table sizes of the table-size comparison.
    pub small_table: u32,
    pub big_table: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Baseline {
    XdpDrop,
    XdpPass,
    BareTc,
    /// One hit in an LRU hash with a 16-byte key, nothing else: the floor of any 5-tuple table.
    Lookup16,
    /// The same path with its 54-byte frame: the cost of a multi-buffer jumbo frame.
    EstablishedSmall,
    /// The same drop path with its 54-byte frame.
    DropSmall,
    /// The established ACK with no blocklist: the cost of a loaded blocklist.
    EstablishedNoBlocklist,
    /// A SYN to a closed port, dropped: the floor of a cookie answer (a drop plus a rewrite and a
    /// transmit), timed run by run as the cookie paths are.
    DropSynClosed,
}

impl Baseline {
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::XdpDrop => "bare XDP_DROP",
            Self::XdpPass => "bare XDP_PASS",
            Self::BareTc => "bare TC",
            Self::Lookup16 => "16-byte-key LRU lookup",
            Self::EstablishedSmall | Self::DropSmall => "the same path at 54 bytes",
            Self::EstablishedNoBlocklist => "the same path without a blocklist",
            Self::DropSynClosed => "a dropped SYN to a closed port",
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct PathResult {
    pub id: &'static str,
    pub label: String,
    pub program: &'static str,
    /// The verdict reason counted (ingress), or what the egress program did.
    pub verdict: String,
    pub frame_bytes: usize,
    /// Median of the per-repetition means, ns per packet.
    pub ns: f64,
    pub ns_samples: Vec<f64>,
    /// The bare program this path is compared with (none for the baselines themselves).
    pub baseline: Option<Baseline>,
    /// Median of the per-repetition ratios path / baseline.
    pub ratio: Option<f64>,
    pub ratio_samples: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TableSize {
    pub small_entries: usize,
    pub big_entries: usize,
    pub small_max_entries: u32,
    pub big_max_entries: u32,
    pub fill_secs: f64,
    /// Median of per-repetition ratios: hit in the big table / hit in the small one.
    pub ratio_big_to_small: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Section {
    pub repeat: u32,
    pub reps: usize,
    pub cpu: usize,
    pub paths: Vec<PathResult>,
    pub table_size: TableSize,
    pub sketch: SketchFalsePositives,
}

/// The rate-limit sketch under a spoofed flood, simulated on the host with the datapath's own
/// code (`lockdown_common::ratelimit`): how often a legitimate source under its rate is refused.
#[derive(Debug, Serialize)]
pub(crate) struct SketchFalsePositives {
    pub rate: String,
    pub flood_sources: u32,
    pub probes: u32,
    /// Fraction of legitimate probes refused while the flood arrives, and right after it.
    pub during_flood: f64,
    pub after_flood: f64,
    /// The analytic bound, `P(Poisson(N/WIDTH) >= burst)^ROWS`.
    pub bound: f64,
}

fn sketch_false_positives() -> SketchFalsePositives {
    use lockdown_common::{
        contract::{
            maps::{ROWS, WIDTH},
            rate::RateSpec,
        },
        stages::ratelimit::{false_positive_bound, false_positive_rate},
    };
    const SOURCES: u32 = 1_000_000;
    const PROBES: u32 = 100_000;
    let spec: RateSpec = "10/min burst 5".parse().expect("the bench's rate parses");
    let fp = false_positive_rate(&spec, SOURCES, 1, PROBES, 7);
    SketchFalsePositives {
        rate: spec.to_string(),
        flood_sources: SOURCES,
        probes: PROBES,
        during_flood: fp.during_flood,
        after_flood: fp.after_flood,
        bound: false_positive_bound(
            u64::from(SOURCES) + 2 * u64::from(PROBES),
            ROWS,
            WIDTH,
            spec.burst(),
        ),
    }
}

impl Section {
    pub(crate) fn path(&self, id: &str) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.id == id)
    }
}

/// One loaded copy of the object: the [`Datapath`] the verdict tests drive, with the bare
/// baseline programs of the same object loaded too (none attached).
struct Loaded {
    dp: Datapath,
}

impl Loaded {
    fn new(max_flows: Option<u32>) -> Result<Self> {
        // What `lockdown up` writes by default: the default config and tcp/22.
        let mut dp = Datapath::load(
            Config::DEFAULT,
            &testrun::rules(&["tcp/22"]),
            max_flows,
            PROG_INGRESS,
        )?;
        for name in [PROG_BASELINE_DROP, PROG_BASELINE_PASS, PROG_BASELINE_LOOKUP] {
            dp.load_xdp(name)?;
        }
        Ok(Self { dp })
    }

    fn run(&mut self, prog: Prog, frame: &[u8], repeat: u32, raws: &Raws) -> Result<(u32, f64)> {
        let raw = match prog {
            Prog::BareTc => Some(&raws.tc),
            Prog::ClockDrop(raw::HELPER_KTIME_GET_BOOT_NS) => Some(&raws.boot),
            Prog::ClockDrop(raw::HELPER_KTIME_GET_COARSE_NS) => Some(&raws.coarse),
            Prog::ClockDrop(raw::HELPER_JIFFIES64) => Some(&raws.jiffies),
            Prog::ClockDrop(h) => bail!("no hand-assembled program for helper {h}"),
            _ => None,
        };
        if let Some(p) = raw {
            let r = p.test_run(frame, repeat)?;
            return Ok((r.retval, f64::from(r.ns)));
        }
        let (ret, duration) = self.dp.time(prog.name(), frame, repeat)?;
        Ok((ret, duration.as_nanos() as f64))
    }

    /// Packets per counter, in [`Counter::ALL`] order.
    fn counters(&self) -> Vec<u64> {
        self.dp.counter_packets()
    }

    /// Puts `n` addresses (198.18.0.0/15, never the bench's peer) on the blocklist, with
    /// expiries, as fail2ban's bans would be.
    fn deny(&mut self, n: u32) -> Result<()> {
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
        let expires = now() + 3_600_000_000_000;
        for i in 0..n {
            let host = DenyNet {
                family: FAMILY_V4,
                prefix_len: 32,
                addr: addr16(Ipv4Addr::from(base + i).into()),
            };
            self.dp.deny(&host, expires)?;
        }
        Ok(())
    }

    /// Limits tcp/22 per source at a rate the timed runs never exhaust (every SYN is admitted
    /// and charged, the full cost of the check).
    fn rate_tcp22(&mut self) -> Result<()> {
        let handles = &mut self.dp.handles;
        let rules = handles.rules()?;
        let spec = lockdown_common::contract::rate::RateSpec::parse_rate("1000000000/s", 1_000_000)
            .map_err(|e| anyhow::anyhow!("the bench's rate: {e}"))?;
        let rates = std::collections::BTreeMap::from([(
            lockdown_common::rules::allow::PortSpec::parse("tcp/22")
                .map_err(|e| anyhow::anyhow!("tcp/22: {e}"))?,
            spec,
        )]);
        handles.set_policy(&rules, &rates)?;
        handles.ensure_sketch_seed()
    }

    fn insert(&mut self, key: &FlowKey, state: FlowState) {
        self.dp.set_flow(key, &FlowValue::new(state, now(), 0));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Ingress,
    Egress,
    BaseDrop,
    BasePass,
    /// One lookup in the IPv4 flow table (16-byte key) keyed by the frame's first 16 bytes.
    Lookup,
    BareTc,
    /// Bare XDP_DROP after one call to the helper of this id.
    ClockDrop(i32),
}

impl Prog {
    const fn name(self) -> &'static str {
        match self {
            Self::Ingress => PROG_INGRESS,
            Self::Egress => PROG_EGRESS,
            Self::BaseDrop => PROG_BASELINE_DROP,
            Self::BasePass => PROG_BASELINE_PASS,
            Self::Lookup => PROG_BASELINE_LOOKUP,
            Self::BareTc => "bare_tc (hand-assembled)",
            Self::ClockDrop(raw::HELPER_KTIME_GET_BOOT_NS) => {
                "call bpf_ktime_get_boot_ns; XDP_DROP"
            }
            Self::ClockDrop(raw::HELPER_KTIME_GET_COARSE_NS) => {
                "call bpf_ktime_get_coarse_ns; XDP_DROP"
            }
            Self::ClockDrop(raw::HELPER_JIFFIES64) => "call bpf_jiffies64; XDP_DROP",
            Self::ClockDrop(_) => "call helper; XDP_DROP",
        }
    }
}

/// The hand-assembled programs.
struct Raws {
    tc: RawProg,
    boot: RawProg,
    coarse: RawProg,
    jiffies: RawProg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Obj {
    Default,
    /// Default, but with dropped-packet events off (`log_per_sec` 0).
    NoLog,
    Small,
    Big,
    /// Default, with [`BLOCKLIST`] addresses on the blocklist (none of them the bench's peer).
    Blocklist,
    /// Default, with tcp/22 limited per source at a rate no repeated run exhausts.
    Rated,
}

/// One [`Loaded`] object per [`Obj`].
struct Objects {
    default: Loaded,
    nolog: Loaded,
    small: Loaded,
    big: Loaded,
    blocked: Loaded,
    rated: Loaded,
}

impl Objects {
    const fn get(&mut self, obj: Obj) -> &mut Loaded {
        match obj {
            Obj::Default => &mut self.default,
            Obj::NoLog => &mut self.nolog,
            Obj::Small => &mut self.small,
            Obj::Big => &mut self.big,
            Obj::Blocklist => &mut self.blocked,
            Obj::Rated => &mut self.rated,
        }
    }
}

/// Entries of the blocklist of [`Obj::Blocklist`].
pub(crate) const BLOCKLIST: u32 = 10_000;

/// What a path must do when run once, checked before it is timed.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Ingress(u32, Counter),
    /// Egress: whether the checked run creates a flow.
    Egress {
        creates: bool,
    },
    Ret(u32),
}

struct Case {
    id: &'static str,
    label: String,
    obj: Obj,
    prog: Prog,
    frame: Vec<u8>,
    expect: Expect,
    baseline: Option<Baseline>,
}

/// An inbound TCP segment from `REMOTE4:remote_port` to `LOCAL4:local_port` (an ACK
/// acknowledges 5001).
fn inbound(remote_port: u16, local_port: u16, flags: u8) -> Pkt {
    segment(
        Pkt::tcp(REMOTE4, LOCAL4, remote_port, local_port, flags),
        flags,
    )
}

/// [`inbound`] over IPv6.
fn inbound6(remote_port: u16, local_port: u16, flags: u8) -> Pkt {
    segment(
        Pkt::tcp(REMOTE6, LOCAL6, remote_port, local_port, flags),
        flags,
    )
}

/// An outbound TCP segment from `LOCAL4:local_port` to `REMOTE4:remote_port`.
fn outbound(local_port: u16, remote_port: u16, flags: u8) -> Pkt {
    segment(
        Pkt::tcp(LOCAL4, REMOTE4, local_port, remote_port, flags),
        flags,
    )
}

fn segment(p: Pkt, flags: u8) -> Pkt {
    if flags & TCP_ACK != 0 {
        p.ack(5_001)
    } else {
        p
    }
}

/// `p`'s frame cut `keep` bytes into its L4 header.
fn truncated_l4(p: &Pkt, keep: usize) -> Vec<u8> {
    let mut b = p.bytes();
    b.truncate(p.l4_off() + keep);
    b
}

/// "1k entries", "1M entries", or the plain number.
pub(crate) fn entries(n: u32) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M entries", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}k entries", n >> 10),
        n => format!("{n} entries"),
    }
}

fn est_key4() -> FlowKey {
    flow_key(LOCAL4, EST_LOCAL_PORT, REMOTE4, EST_REMOTE_PORT, PROTO_TCP)
}

/// `frame` grown to 9000 bytes (the IP lengths left as they are: only the headers are read). A
/// test run puts what does not fit the first page into fragments, as a multi-buffer driver does.
fn jumbo(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(9000, 0x5a);
    frame
}

fn cases(opts: &Options) -> Vec<Case> {
    let ack_in = inbound(EST_REMOTE_PORT, EST_LOCAL_PORT, TCP_ACK);
    let ack_out = outbound(EST_LOCAL_PORT, EST_REMOTE_PORT, TCP_ACK);
    let drop = Some(Baseline::XdpDrop);
    let pass = Some(Baseline::XdpPass);
    let tc = Some(Baseline::BareTc);
    let c = |id, label: &str, obj, prog, frame, expect, baseline| Case {
        id,
        label: label.to_owned(),
        obj,
        prog,
        frame,
        expect,
        baseline,
    };
    vec![
        c(
            "baseline_drop",
            "bare XDP_DROP (baseline)",
            Obj::Default,
            Prog::BaseDrop,
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ret(XDP_DROP),
            None,
        ),
        c(
            "baseline_pass",
            "bare XDP_PASS (baseline)",
            Obj::Default,
            Prog::BasePass,
            ack_in.bytes(),
            Expect::Ret(XDP_PASS),
            None,
        ),
        c(
            "baseline_tc",
            "bare TC, return TC_ACT_UNSPEC (baseline)",
            Obj::Default,
            Prog::BareTc,
            ack_out.bytes(),
            Expect::Ret(TC_NEXT),
            None,
        ),
        c(
            "drop_syn_closed",
            "SYN to a closed port (dropped)",
            Obj::Default,
            Prog::Ingress,
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ingress(XDP_DROP, Counter::DropNew),
            drop,
        ),
        c(
            "drop_syn_closed_nolog",
            "SYN to a closed port, drop events off (log_per_sec 0)",
            Obj::NoLog,
            Prog::Ingress,
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ingress(XDP_DROP, Counter::DropNew),
            drop,
        ),
        c(
            "allowed_syn",
            "SYN to an allowed port (tcp/22)",
            Obj::Default,
            Prog::Ingress,
            inbound(40_000, 22, TCP_SYN).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassAllowed),
            pass,
        ),
        c(
            "established_ack",
            "established TCP ACK (IPv4)",
            Obj::Default,
            Prog::Ingress,
            ack_in.bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "established_ack_vs_lookup",
            "established TCP ACK (IPv4), against the lookup floor",
            Obj::Default,
            Prog::Ingress,
            ack_in.bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            Some(Baseline::Lookup16),
        ),
        c(
            "jumbo_established",
            "established TCP ACK (IPv4), 9000-byte multi-buffer frame",
            Obj::Default,
            Prog::Ingress,
            jumbo(ack_in.bytes()),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            Some(Baseline::EstablishedSmall),
        ),
        c(
            "rated_syn",
            "SYN to a rate-limited allowed port (tcp/22 --rate, within its rate)",
            Obj::Rated,
            Prog::Ingress,
            inbound(40_000, 22, TCP_SYN).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassAllowed),
            pass,
        ),
        c(
            "blocklist_established",
            &format!("established TCP ACK (IPv4), {BLOCKLIST}-entry blocklist loaded"),
            Obj::Blocklist,
            Prog::Ingress,
            ack_in.bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            Some(Baseline::EstablishedNoBlocklist),
        ),
        c(
            "blocklist_denied",
            &format!("a denied source's packet, {BLOCKLIST}-entry blocklist"),
            Obj::Blocklist,
            Prog::Ingress,
            Pkt::tcp(Ipv4Addr::new(198, 18, 0, 7), LOCAL4, 40_000, 22, TCP_SYN).bytes(),
            Expect::Ingress(XDP_DROP, Counter::DropDenied),
            drop,
        ),
        c(
            "drop_ack_closed",
            "ACK to a closed port (dropped after a flow lookup)",
            Obj::Default,
            Prog::Ingress,
            inbound(40_000, 8080, TCP_ACK).bytes(),
            Expect::Ingress(XDP_DROP, Counter::DropNew),
            drop,
        ),
        c(
            "jumbo_drop",
            "ACK to a closed port, 9000-byte multi-buffer frame",
            Obj::Default,
            Prog::Ingress,
            jumbo(inbound(40_000, 8080, TCP_ACK).bytes()),
            Expect::Ingress(XDP_DROP, Counter::DropNew),
            Some(Baseline::DropSmall),
        ),
        c(
            "allowed_ack",
            "TCP ACK to an allowed port (tcp/22; no flow lookup)",
            Obj::Default,
            Prog::Ingress,
            inbound(40_000, 22, TCP_ACK).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassAllowed),
            pass,
        ),
        c(
            "udp_reply",
            "UDP reply on a tracked flow",
            Obj::Default,
            Prog::Ingress,
            Pkt::udp(REMOTE4, LOCAL4, UDP_REMOTE_PORT, UDP_LOCAL_PORT)
                .payload(&[0x5a; 32])
                .bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "related_icmp",
            "ICMP frag-needed quoting a tracked flow",
            Obj::Default,
            Prog::Ingress,
            Pkt::frag_needed(ROUTER4, LOCAL4, 1400, &ack_out).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassRelated),
            pass,
        ),
        c(
            "ipv6_established",
            "established TCP ACK (IPv6)",
            Obj::Default,
            Prog::Ingress,
            inbound6(EST_REMOTE_PORT, EST_LOCAL_PORT, TCP_ACK).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "vlan_established",
            "established TCP ACK, one VLAN tag",
            Obj::Default,
            Prog::Ingress,
            ack_in.clone().vlan(7).bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "malformed_tcp",
            "truncated TCP header (malformed, dropped)",
            Obj::Default,
            Prog::Ingress,
            truncated_l4(&ack_in, 10),
            Expect::Ingress(XDP_DROP, Counter::DropMalformed),
            drop,
        ),
        c(
            "flows_small_hit",
            &format!(
                "established ACK, full flow table of {}",
                entries(opts.small_table)
            ),
            Obj::Small,
            Prog::Ingress,
            ack_in.bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "flows_big_hit",
            &format!(
                "established ACK, full flow table of {}",
                entries(opts.big_table)
            ),
            Obj::Big,
            Prog::Ingress,
            ack_in.bytes(),
            Expect::Ingress(XDP_PASS, Counter::PassEstablished),
            pass,
        ),
        c(
            "lookup_only",
            "diagnostic: one hit in a 16-byte-key LRU table, no parsing (key = the frame's first 16 bytes)",
            Obj::Default,
            Prog::Lookup,
            ack_in.bytes(),
            Expect::Ret(XDP_PASS),
            pass,
        ),
        c(
            "clock_boot_ns",
            "diagnostic: bare XDP_DROP after bpf_ktime_get_boot_ns()",
            Obj::Default,
            Prog::ClockDrop(raw::HELPER_KTIME_GET_BOOT_NS),
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ret(XDP_DROP),
            drop,
        ),
        c(
            "clock_coarse_ns",
            "diagnostic: bare XDP_DROP after bpf_ktime_get_coarse_ns()",
            Obj::Default,
            Prog::ClockDrop(raw::HELPER_KTIME_GET_COARSE_NS),
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ret(XDP_DROP),
            drop,
        ),
        c(
            "clock_jiffies64",
            "diagnostic: bare XDP_DROP after bpf_jiffies64()",
            Obj::Default,
            Prog::ClockDrop(raw::HELPER_JIFFIES64),
            inbound(40_000, 8080, TCP_SYN).bytes(),
            Expect::Ret(XDP_DROP),
            drop,
        ),
        c(
            "egress_syn",
            "egress: outbound SYN (flow exists after the first)",
            Obj::Default,
            Prog::Egress,
            outbound(SYN_LOCAL_PORT, EST_REMOTE_PORT, TCP_SYN).bytes(),
            Expect::Egress { creates: true },
            tc,
        ),
        c(
            "egress_service",
            "egress: reply from an allowed service port (tcp/22; no flow lookup)",
            Obj::Default,
            Prog::Egress,
            outbound(22, 40_000, TCP_ACK).bytes(),
            Expect::Egress { creates: false },
            tc,
        ),
        c(
            "egress_ack",
            "egress: outbound ACK on an origin-opened established flow",
            Obj::Default,
            Prog::Egress,
            ack_out.bytes(),
            Expect::Egress { creates: false },
            tc,
        ),
    ]
}

/// Fills `l`'s flow table with `n - 1` distinct entries, then the established flow last (the most
/// recent, so LRU keeps it). Returns the number of entries the table holds.
fn fill(l: &mut Loaded, n: u32) -> Result<usize> {
    let base = u32::from(Ipv4Addr::new(100, 64, 0, 0));
    let v = FlowValue::new(FlowState::TcpEstablished, now(), 0);
    let flows = &mut l.dp.handles.flows;
    for i in 0..n.saturating_sub(1) {
        if i % 65_536 == 0 {
            sys::check_interrupted()?;
        }
        let k = flow_key(LOCAL4, 50_000, Ipv4Addr::from(base + i), 443, PROTO_TCP);
        flows
            .insert(v.table(), &k, &v, 0)
            .with_context(|| format!("filling the flow table (entry {i})"))?;
    }
    l.insert(&est_key4(), FlowState::TcpEstablished);
    let flows = &mut l.dp.handles.flows;
    ensure!(
        flows
            .get(
                lockdown_common::contract::flow::FlowTable::Live,
                &est_key4()
            )?
            .is_some(),
        "the established flow is missing from the filled table"
    );
    Ok(flows.entries()?.len())
}

fn check(l: &mut Loaded, case: &Case, raws: &Raws) -> Result<String> {
    let before = l.counters();
    let (ret, _) = l.run(case.prog, &case.frame, 1, raws)?;
    let after = l.counters();
    let moved: Vec<(Counter, u64)> = Counter::ALL
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a != b)
        .map(|(&c, (b, a))| (c, a - b))
        .collect();
    let reasons: Vec<(Counter, u64)> = moved
        .iter()
        .copied()
        .filter(|(c, _)| matches!(c.kind(), CounterKind::Pass | CounterKind::Drop))
        .collect();
    match case.expect {
        Expect::Ret(want) => {
            ensure!(ret == want, "{}: returned {ret}, expected {want}", case.id);
            Ok(if want == XDP_DROP {
                "XDP_DROP".into()
            } else if want == XDP_PASS {
                "XDP_PASS".into()
            } else {
                "TC_ACT_UNSPEC".into()
            })
        }
        Expect::Ingress(want, reason) => {
            ensure!(
                ret == want && reasons == [(reason, 1)],
                "{}: expected action {want} counted as {}, got action {ret} with counters {moved:?}",
                case.id,
                reason.name()
            );
            Ok(reason.name().into())
        }
        Expect::Egress { creates } => {
            let created = moved
                .iter()
                .find(|(c, _)| *c == Counter::EgressFlowsCreated)
                .map_or(0, |(_, n)| *n);
            ensure!(
                ret == TC_NEXT && reasons.is_empty() && created == u64::from(creates),
                "{}: expected TC_ACT_UNSPEC, {} flow created; got {ret:#x}, counters {moved:?}",
                case.id,
                u8::from(creates)
            );
            if creates {
                // From now on the flow exists: the timed runs create nothing.
                let before = l.counters();
                l.run(case.prog, &case.frame, 1, raws)?;
                let after = l.counters();
                let i = Counter::EgressFlowsCreated as usize;
                ensure!(
                    after[i] == before[i],
                    "{}: a second SYN created another flow",
                    case.id
                );
                Ok("egress_packets (created 1 flow on the first run, 0 after)".into())
            } else {
                Ok("egress_packets (no flow created)".into())
            }
        }
    }
}

pub(crate) fn run(opts: &Options) -> Result<Section> {
    let cpu = GEN_CPU;
    println!(
        "==> [1/4] program cost (BPF_PROG_TEST_RUN, repeat {}, {} repetitions, CPU{cpu})",
        opts.repeat, opts.reps
    );
    let raws = Raws {
        tc: RawProg::bare_tc()?,
        boot: RawProg::xdp_drop_after(raw::HELPER_KTIME_GET_BOOT_NS)?,
        coarse: RawProg::xdp_drop_after(raw::HELPER_KTIME_GET_COARSE_NS)?,
        jiffies: RawProg::xdp_drop_after(raw::HELPER_JIFFIES64)?,
    };
    let mut default = Loaded::new(None)?;
    default.insert(&est_key4(), FlowState::TcpEstablished);
    // The lookup diagnostic's key: the established ACK frame's first 16 bytes, as an IPv4 key.
    let head = inbound(EST_REMOTE_PORT, EST_LOCAL_PORT, TCP_ACK).bytes();
    let raw_key = bytemuck::pod_read_unaligned::<lockdown_common::contract::flow::FlowKey4>(
        &head[..size_of::<lockdown_common::contract::flow::FlowKey4>()],
    )
    .widen();
    default.insert(&raw_key, FlowState::TcpEstablished);
    default.insert(
        &flow_key(LOCAL6, EST_LOCAL_PORT, REMOTE6, EST_REMOTE_PORT, PROTO_TCP),
        FlowState::TcpEstablished,
    );
    default.insert(
        &flow_key(LOCAL4, UDP_LOCAL_PORT, REMOTE4, UDP_REMOTE_PORT, PROTO_UDP),
        FlowState::UdpReplied,
    );
    let mut nolog = Loaded::new(None)?;
    nolog.dp.set_config(&Config {
        log_per_sec: 0,
        ..Config::DEFAULT
    });
    let mut blocked = Loaded::new(None)?;
    blocked.insert(&est_key4(), FlowState::TcpEstablished);
    blocked.deny(BLOCKLIST)?;
    let mut rated = Loaded::new(None)?;
    rated.rate_tcp22()?;
    let mut small = Loaded::new(Some(opts.small_table))?;
    let mut big = Loaded::new(Some(opts.big_table))?;
    let t = Instant::now();
    let small_entries = fill(&mut small, opts.small_table)?;
    let big_entries = fill(&mut big, opts.big_table)?;
    let fill_secs = t.elapsed().as_secs_f64();
    println!(
        "    flow tables filled in {fill_secs:.1} s: {small_entries} / {} and {big_entries} / {} entries",
        opts.small_table, opts.big_table
    );

    let mut objs = Objects {
        default,
        nolog,
        small,
        big,
        blocked,
        rated,
    };
    let cases = cases(opts);
    let mut verdicts = Vec::new();
    for case in &cases {
        let l = objs.get(case.obj);
        verdicts.push(check(l, case, &raws)?);
    }

    let mut samples = vec![Vec::with_capacity(opts.reps); cases.len()];
    for rep in 0..opts.reps {
        sys::check_interrupted()?;
        // Interleave, and rotate the order so no path always runs first.
        for k in 0..cases.len() {
            let i = (k + rep) % cases.len();
            let case = &cases[i];
            let l = objs.get(case.obj);
            let (ret, ns) = l.run(case.prog, &case.frame, opts.repeat, &raws)?;
            let want = match case.expect {
                Expect::Ingress(r, _) | Expect::Ret(r) => r,
                Expect::Egress { .. } => TC_NEXT,
            };
            if ret != want {
                bail!("{}: returned {ret} during timing, expected {want}", case.id);
            }
            samples[i].push(ns);
        }
    }

    let index = |id: &str| {
        cases
            .iter()
            .position(|c| c.id == id)
            .expect("baseline case")
    };
    let base_sample = |b: Baseline| match b {
        Baseline::XdpDrop => &samples[index("baseline_drop")],
        Baseline::XdpPass => &samples[index("baseline_pass")],
        Baseline::BareTc => &samples[index("baseline_tc")],
        Baseline::Lookup16 => &samples[index("lookup_only")],
        Baseline::EstablishedSmall => &samples[index("established_ack")],
        Baseline::DropSmall => &samples[index("drop_ack_closed")],
        Baseline::EstablishedNoBlocklist => &samples[index("established_ack")],
        Baseline::DropSynClosed => unreachable!("only the cookie paths compare with it"),
    };
    let mut paths = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let ratio_samples: Vec<f64> = case.baseline.map_or_else(Vec::new, |b| {
            samples[i]
                .iter()
                .zip(base_sample(b))
                .map(|(p, b)| p / b.max(1.0))
                .collect()
        });
        paths.push(PathResult {
            id: case.id,
            label: case.label.clone(),
            program: case.prog.name(),
            verdict: verdicts[i].clone(),
            frame_bytes: case.frame.len(),
            ns: median(&samples[i]),
            ns_samples: samples[i].clone(),
            baseline: case.baseline,
            ratio: (!ratio_samples.is_empty()).then(|| median(&ratio_samples)),
            ratio_samples,
        });
    }
    paths.extend(cookie_paths(opts)?);
    let big_i = index("flows_big_hit");
    let small_i = index("flows_small_hit");
    let ratio_big_to_small = median_of(
        samples[big_i]
            .iter()
            .zip(&samples[small_i])
            .map(|(b, s)| b / s.max(1.0)),
    );
    let section = Section {
        repeat: opts.repeat,
        reps: opts.reps,
        cpu,
        paths,
        table_size: TableSize {
            small_entries,
            big_entries,
            small_max_entries: opts.small_table,
            big_max_entries: opts.big_table,
            fill_secs,
            ratio_big_to_small,
        },
        sketch: sketch_false_positives(),
    };
    println!(
        "    rate-limit sketch, {} spoofed sources: {:.2e} of {} legitimate probes refused during \
         the flood, {:.2e} after (bound {:.2e})",
        section.sketch.flood_sources,
        section.sketch.during_flood,
        section.sketch.probes,
        section.sketch.after_flood,
        section.sketch.bound
    );
    for p in &section.paths {
        println!(
            "    {:<52} {:>7.1} ns {}",
            p.label,
            p.ns,
            p.ratio
                .map(|r| format!("{r:>5.2}x {}", p.baseline.map_or("", Baseline::label)))
                .unwrap_or_default()
        );
    }
    Ok(section)
}

/// Single test runs per sample for the cookie paths.
const COOKIE_RUNS: u32 = 2_000;

/// The SYN-cookie paths: a SYN to tcp/22 answered with a cookie (`XDP_TX`, the ingress program
/// tail-calling the cookie program) and the handshake's ACK checked and handed over, against a
/// bare `XDP_DROP` and a SYN to a closed port dropped by lockdown, in one interleaved run. Timed
/// one run at a time ([`COOKIE_RUNS`] per sample): the cookie program rewrites its input in place
/// (the SYN becomes its SYN-ACK; the ACK gains metadata), so a test run repeated on one buffer
/// would time something else after the first. In a network namespace of its own, with a listener
/// on tcp/22 for the ACK's socket lookup to find.
fn cookie_paths(opts: &Options) -> Result<Vec<PathResult>> {
    in_private_netns("bench", || {
        let _listener = TcpListener::bind("[::]:22").context("listening on tcp/22")?;
        let mut l = Loaded::new(None)?;
        l.dp.set_cookie_config(&CookieConfig {
            keys: [[0x5eed, 0xc00c1e], [1, 2]],
            mode: MODE_ON,
            ..CookieConfig::OFF
        });
        let syn = Pkt::tcp(REMOTE4, LOCAL4, 40_000, 22, TCP_SYN)
            .tcp_options(&LINUX_SYN_OPTIONS)
            .bytes();
        let (ret, reason, synack) = l.dp.ingress_out(&syn);
        ensure!(
            ret == XDP_TX && reason == Counter::SynCookieSent,
            "a SYN to tcp/22 under cookies: action {ret}, {}",
            reason.name()
        );
        let ack = ack_for(&synack, 0);
        let closed = inbound(40_000, 8080, TCP_SYN).bytes();
        let cases: [(
            &'static str,
            &str,
            Prog,
            &[u8],
            Option<Baseline>,
            Option<Counter>,
        ); 4] = [
            (
                "cookie_baseline_drop",
                "bare XDP_DROP, one run at a time (baseline)",
                Prog::BaseDrop,
                &syn,
                None,
                None,
            ),
            (
                "cookie_drop_syn_closed",
                "SYN to a closed port (dropped), one run at a time",
                Prog::Ingress,
                &closed,
                Some(Baseline::XdpDrop),
                Some(Counter::DropNew),
            ),
            (
                "cookie_syn",
                "SYN to tcp/22 answered with a SYN cookie (XDP_TX)",
                Prog::Ingress,
                &syn,
                Some(Baseline::DropSynClosed),
                Some(Counter::SynCookieSent),
            ),
            (
                "cookie_ack",
                "the handshake's ACK with a valid cookie, handed over",
                Prog::Ingress,
                &ack,
                Some(Baseline::DropSynClosed),
                Some(Counter::PassCookieAck),
            ),
        ];
        for (id, _, prog, frame, _, want) in &cases {
            if let Some(want) = want {
                let (_, reason, _) = l.dp.ingress_out(frame);
                ensure!(
                    reason == *want,
                    "{id}: counted {}, expected {}",
                    reason.name(),
                    want.name()
                );
            } else {
                l.dp.time(prog.name(), frame, 1)?;
            }
        }
        let runs = COOKIE_RUNS.min(opts.repeat.max(1));
        let mut samples = vec![Vec::with_capacity(opts.reps); cases.len()];
        for rep in 0..opts.reps {
            sys::check_interrupted()?;
            for k in 0..cases.len() {
                let i = (k + rep) % cases.len();
                let (id, _, prog, frame, ..) = &cases[i];
                let mut total = 0.0;
                for _ in 0..runs {
                    let (_, d) = l.dp.time(prog.name(), frame, 1)?;
                    total += d.as_nanos() as f64;
                }
                ensure!(total > 0.0, "{id}: the kernel timed nothing");
                samples[i].push(total / f64::from(runs));
            }
        }
        let base = |b: Baseline| match b {
            Baseline::DropSynClosed => &samples[1],
            _ => &samples[0],
        };
        Ok(cases
            .iter()
            .enumerate()
            .map(|(i, (id, label, prog, frame, baseline, want))| {
                let ratio_samples: Vec<f64> = baseline.map_or_else(Vec::new, |b| {
                    samples[i]
                        .iter()
                        .zip(base(b))
                        .map(|(p, b)| p / b.max(1.0))
                        .collect()
                });
                PathResult {
                    id,
                    label: (*label).to_owned(),
                    program: prog.name(),
                    verdict: want.map_or_else(|| "XDP_DROP".to_owned(), |c| c.name().to_owned()),
                    frame_bytes: frame.len(),
                    ns: median(&samples[i]),
                    ns_samples: samples[i].clone(),
                    baseline: *baseline,
                    ratio: (!ratio_samples.is_empty()).then(|| median(&ratio_samples)),
                    ratio_samples,
                }
            })
            .collect())
    })
}
