//! Runs lockdown's programs on packets with `BPF_PROG_TEST_RUN`, no interface involved: the
//! verdict tests and the model comparison drive a [`Datapath`], and the bench times the same one.
//!
//! [`Datapath::load`] loads the embedded object unpinned, loads the XDP and TC programs, takes
//! lockdown-user's own handles on every map (its [`Handles`] and [`Blocklist`]), and writes a
//! config and an allowlist. The XDP program the verdict tests run is `$LOCKDOWN_TEST_INGRESS`
//! ([`ingress_under_test`]): the multi-buffer variant unless it names the single-buffer one, so
//! every verdict test runs against either. [`Datapath::ingress`] runs the XDP program once and
//! reports its action and the reason counter that moved; [`Datapath::egress`] runs the TC program;
//! [`Datapath::time`] runs a program `repeat` times and returns the kernel's mean duration. The
//! test-facing methods panic with a message instead of returning errors.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    os::fd::AsFd as _,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, ProgramArray},
    programs::{Program, ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use lockdown_common::{
    contract::{
        allow::AllowRule,
        config::{Config, Timeouts},
        counters::{Counter, CounterKind},
        flow::{FAMILY_V4, FAMILY_V6, FlowKey, FlowTable, FlowValue, FragKey, FragValue},
        maps::{
            CONFIG, FLOW_MAPS, FRAGS, PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_LINEAR,
            SKETCH_ENTRIES, flow_capacity,
        },
        rate::RateSpec,
        syncookie::{
            COOKIE_PROG, COOKIE_PROGS, COOKIE_SLOT, CookieConfig, PortFlood, SYN_PORTS,
            SYN_PORTS_ENTRIES, SYNCOOKIE,
        },
    },
    rules::{allow::PortSpec, deny::DenyNet},
};
use lockdown_user::{
    EBPF_OBJECT,
    datapath::{blocklist::Blocklist, flows::FlowEntry, handles::Handles},
};

use crate::packets::{addr16, hex};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
/// What the TC program returns: "no opinion, go on".
pub const TC_ACT_UNSPEC: i32 = -1;

/// The smallest frame `BPF_PROG_TEST_RUN` accepts (an Ethernet header); shorter input is `EINVAL`
/// from the kernel before the program runs. TC test runs of an IPv4/IPv6 ethertype also need the
/// fixed IP header (see [`Datapath::try_egress_counted`]).
pub const MIN_TEST_RUN_LEN: usize = 14;

/// Parses `"tcp/22"` or `"tcp/22 from 10.0.0.0/8"` into a rule.
pub fn rule(s: &str) -> AllowRule {
    let (spec, from) = match s.split_once(" from ") {
        Some((spec, from)) => (spec.trim(), Some(from.trim())),
        None => (s.trim(), None),
    };
    AllowRule::parse(spec, from).unwrap_or_else(|e| panic!("bad rule {s:?}: {e}"))
}

/// Parses a list of rules (see [`rule`]).
pub fn rules(list: &[&str]) -> BTreeSet<AllowRule> {
    list.iter().map(|s| rule(s)).collect()
}

fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// The flow key of a connection from `local:local_port` (the origin) to `remote:remote_port`.
pub fn flow_key(
    local: impl Into<IpAddr>,
    local_port: u16,
    remote: impl Into<IpAddr>,
    remote_port: u16,
    proto: u8,
) -> FlowKey {
    let (local, remote) = (local.into(), remote.into());
    assert_eq!(
        local.is_ipv4(),
        remote.is_ipv4(),
        "flow key of mixed families"
    );
    FlowKey {
        local: addr16(local),
        remote: addr16(remote),
        local_port,
        remote_port,
        proto,
        family: family(local),
        _pad: 0,
    }
}

/// The flow key of the origin's ICMP echo with identifier `id`.
pub fn echo_flow_key(local: impl Into<IpAddr>, remote: impl Into<IpAddr>, id: u16) -> FlowKey {
    let local = local.into();
    let proto = if local.is_ipv4() { 1 } else { 58 };
    flow_key(local, id, remote, 0, proto)
}

/// The fragment-table key of datagram `id` from `src` to `dst`.
pub fn frag_key(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, id: u32, proto: u8) -> FragKey {
    let (src, dst) = (src.into(), dst.into());
    FragKey {
        src: addr16(src),
        dst: addr16(dst),
        id,
        proto,
        family: family(src),
        _pad: 0,
    }
}

/// A config for tests: the defaults (DHCP and RA pass, not monitoring).
pub const fn test_config() -> Config {
    Config::DEFAULT
}

/// A config whose every timeout is `secs`: long, so that liveness cannot change during a test
/// run, or short, so that entries can be aged past it.
pub const fn uniform_timeouts(flags: u32, secs: u32) -> Config {
    Config {
        timeouts: Timeouts {
            tcp_syn_sent: secs,
            tcp_established: secs,
            tcp_closing: secs,
            tcp_closed: secs,
            udp_unreplied: secs,
            udp_replied: secs,
            icmp: secs,
            fragment: secs,
        },
        flags,
        ..Config::DEFAULT
    }
}

/// `CLOCK_MONOTONIC_COARSE` now, the datapath's clock.
pub fn now() -> u64 {
    lockdown_user::clock_ns()
}

/// Whether `c` is an ingress verdict reason (as opposed to an egress or other statistic).
pub const fn is_reason(c: Counter) -> bool {
    matches!(
        c.kind(),
        CounterKind::Pass | CounterKind::Drop | CounterKind::Answer
    )
}

fn ignore_missing<T>(r: std::result::Result<T, MapError>, what: &str) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(MapError::KeyNotFound) => None,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// The XDP program variant test runs go through: `$LOCKDOWN_TEST_INGRESS` (`lockdown_ingress`,
/// the default, or `lockdown_linear`); any other value panics.
pub fn ingress_under_test() -> &'static str {
    match std::env::var("LOCKDOWN_TEST_INGRESS").as_deref() {
        Err(_) | Ok("") => PROG_INGRESS,
        Ok(name) if name == PROG_INGRESS => PROG_INGRESS,
        Ok(name) if name == PROG_INGRESS_LINEAR => PROG_INGRESS_LINEAR,
        Ok(other) => {
            panic!("LOCKDOWN_TEST_INGRESS={other:?}: use {PROG_INGRESS} or {PROG_INGRESS_LINEAR}")
        }
    }
}

/// lockdown's programs and maps, loaded for test runs.
pub struct Datapath {
    ebpf: Ebpf,
    /// The XDP program the test runs go through.
    ingress: &'static str,
    pub handles: Handles,
    pub frags: HashMap<MapData, FragKey, FragValue>,
    pub blocklist: Blocklist,
    config: Config,
    /// Packets per counter after the last run, if nothing else has moved them since.
    counters: Option<Vec<u64>>,
}

/// A second handle on the object's array map `name` (one the [`Handles`] take too).
fn duplicate(ebpf: &Ebpf, name: &str) -> Result<Map> {
    let Some(Map::Array(data)) = ebpf.map(name) else {
        bail!("array map {name} missing from the object");
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating the descriptor of map {name}"))?;
    Ok(Map::from_map_data(MapData::from_fd(fd)?)?)
}

impl Datapath {
    /// Loads the object with `config` and `rules` and the default flow-table size.
    pub fn new(config: Config, rules: &[&str]) -> Self {
        Self::with_max_flows(config, rules, None)
    }

    /// Loads the object; `max_flows` overrides the live flow tables' capacity (and so the
    /// closing tables').
    pub fn with_max_flows(config: Config, rules: &[&str], max_flows: Option<u32>) -> Self {
        Self::with_ingress(config, rules, max_flows, ingress_under_test())
    }

    /// [`Datapath::with_max_flows`] running the XDP program `ingress` (a variant's name).
    pub fn with_ingress(
        config: Config,
        rules: &[&str],
        max_flows: Option<u32>,
        ingress: &'static str,
    ) -> Self {
        Self::load(config, &crate::testrun::rules(rules), max_flows, ingress)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Loads the object with `config` and `rules`, the XDP program `ingress` (a variant's name)
    /// and the TC program; `max_flows` overrides the live flow tables' capacity (and so the
    /// closing tables').
    pub fn load(
        config: Config,
        rules: &BTreeSet<AllowRule>,
        max_flows: Option<u32>,
        ingress: &'static str,
    ) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        if let Some(n) = max_flows {
            for (name, table, _) in FLOW_MAPS {
                loader.map_max_entries(name, flow_capacity(table, n));
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the lockdown eBPF object (are we root?)")?;
        let xdp: &mut Xdp = program_mut(&mut ebpf, ingress)?;
        xdp.load().with_context(|| format!("loading {ingress}"))?;
        if ingress == PROG_INGRESS {
            // The cookie stage, in the ingress program's tail-call slot as the loader puts it.
            let cookie: &mut Xdp = program_mut(&mut ebpf, COOKIE_PROG)?;
            cookie
                .load()
                .with_context(|| format!("loading {COOKIE_PROG}"))?;
            let fd = cookie.fd()?.try_clone()?;
            let mut slots = ProgramArray::try_from(
                ebpf.map_mut(COOKIE_PROGS)
                    .with_context(|| format!("map {COOKIE_PROGS} missing from the object"))?,
            )?;
            slots
                .set(COOKIE_SLOT, &fd, 0)
                .context("filling the cookie program's tail-call slot")?;
        }
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, PROG_EGRESS)?;
        tc.load()
            .with_context(|| format!("loading {PROG_EGRESS}"))?;
        let frags = ebpf
            .take_map(FRAGS)
            .with_context(|| format!("map {FRAGS} missing from the object"))?
            .try_into()
            .with_context(|| format!("map {FRAGS}"))?;
        let mut config_map = Some(duplicate(&ebpf, CONFIG)?);
        let handles = Handles::take(&mut ebpf).context("taking the maps")?;
        let blocklist = Blocklist::from_maps("the test run", |name| match name {
            CONFIG => config_map.take().context("the config map, twice"),
            _ => ebpf
                .take_map(name)
                .with_context(|| format!("map {name} missing from the object")),
        })
        .context("taking the blocklist maps")?;
        let mut dp = Self {
            ebpf,
            ingress,
            handles,
            frags,
            blocklist,
            config,
            counters: None,
        };
        dp.handles
            .write_config(&config)
            .context("writing the config")?;
        dp.handles
            .set_rules(rules)
            .with_context(|| format!("writing the rules {rules:?}"))?;
        Ok(dp)
    }

    /// Writes the SYN-cookie configuration (`LD_SYNCOOKIE`).
    pub fn set_cookie_config(&mut self, c: &CookieConfig) {
        self.counters = None;
        let map = self
            .ebpf
            .map_mut(SYNCOOKIE)
            .unwrap_or_else(|| panic!("map {SYNCOOKIE} missing from the object"));
        let mut a: Array<_, CookieConfig> = Array::try_from(map).unwrap_or_else(|e| panic!("{e}"));
        a.set(0, c, 0)
            .unwrap_or_else(|e| panic!("writing {SYNCOOKIE}: {e}"));
    }

    /// Clears every port's SYN-flood detector (`LD_SYN_PORTS`).
    pub fn clear_syn_ports(&mut self) {
        let map = self
            .ebpf
            .map_mut(SYN_PORTS)
            .unwrap_or_else(|| panic!("map {SYN_PORTS} missing from the object"));
        let mut a: Array<_, PortFlood> = Array::try_from(map).unwrap_or_else(|e| panic!("{e}"));
        for port in 0..SYN_PORTS_ENTRIES {
            if a.get(&port, 0).is_ok_and(|f| f != PortFlood::default()) {
                a.set(port, &PortFlood::default(), 0)
                    .unwrap_or_else(|e| panic!("clearing {SYN_PORTS}[{port}]: {e}"));
            }
        }
    }

    /// Loads XDP program `name` of the object too (the bench's bare baselines), for
    /// [`Datapath::time`].
    pub fn load_xdp(&mut self, name: &str) -> Result<()> {
        let xdp: &mut Xdp = program_mut(&mut self.ebpf, name)?;
        xdp.load().with_context(|| format!("loading {name}"))
    }

    /// Runs the loaded program `name` (XDP or TC) `repeat` times on `frame`: its return value and
    /// the kernel's mean duration of one run. Counters move as for any run.
    pub fn time(&mut self, name: &str, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        self.counters = None;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        let r = match self.ebpf.program(name) {
            Some(Program::Xdp(p)) => p.test_run(opts),
            Some(Program::SchedClassifier(p)) => p.test_run(opts),
            Some(_) => bail!("program {name} is neither XDP nor TC"),
            None => bail!("program {name} missing from the object"),
        }
        .map_err(|e| anyhow!("BPF_PROG_TEST_RUN of {name}: {}", chain(&e)))?;
        Ok((r.return_value, r.duration))
    }

    pub const fn config(&self) -> &Config {
        &self.config
    }

    pub fn set_config(&mut self, config: &Config) {
        self.handles
            .write_config(config)
            .unwrap_or_else(|e| panic!("writing the config: {e:#}"));
        self.config = *config;
    }

    /// Sets a config flag (`FLAG_*`) on or off.
    pub fn set_flag(&mut self, flag: u32, on: bool) {
        let mut c = self.config;
        if on {
            c.flags |= flag;
        } else {
            c.flags &= !flag;
        }
        self.set_config(&c);
    }

    /// Replaces the allowlist.
    pub fn set_rules(&mut self, rules: &BTreeSet<AllowRule>) {
        self.handles
            .set_rules(rules)
            .unwrap_or_else(|e| panic!("writing the rules {rules:?}: {e:#}"));
    }

    /// Replaces the rates and the sketch's seed (the sketch's buckets are kept: under a new seed,
    /// stale buckets only matter where all of a stream's rows meet one, which a test's few
    /// streams never do in practice).
    pub fn set_rates(
        &mut self,
        rules: &BTreeSet<AllowRule>,
        rates: &BTreeMap<PortSpec, RateSpec>,
        seed: u64,
    ) {
        self.handles
            .set_policy(rules, rates)
            .unwrap_or_else(|e| panic!("writing the rates {rates:?}: {e:#}"));
        self.handles
            .sketch
            .set(SKETCH_ENTRIES, &seed, 0)
            .unwrap_or_else(|e| panic!("writing the sketch seed: {e}"));
    }

    /// Replaces the blocklist with `entries` through lockdown's own [`Blocklist`] (its maps and
    /// its address filter). The config's `FLAG_DENY*` bits stay the caller's, as set through
    /// [`Datapath::set_config`].
    pub fn set_deny(&mut self, entries: &BTreeMap<DenyNet, u64>) {
        let old: Vec<DenyNet> = self
            .blocklist
            .entries()
            .unwrap_or_else(|e| panic!("reading the blocklist: {e:#}"))
            .into_keys()
            .collect();
        self.blocklist
            .remove_all(&old)
            .unwrap_or_else(|e| panic!("clearing the blocklist: {e:#}"));
        for (net, expires) in entries {
            self.blocklist
                .add(net, *expires)
                .unwrap_or_else(|e| panic!("adding {net} to the blocklist: {e:#}"));
        }
        let config = self.config;
        self.set_config(&config);
    }

    /// Adds `net` to the blocklist until `expires`, as `lockdown deny add` does: the config's
    /// `FLAG_DENY*` bits go on with it.
    pub fn deny(&mut self, net: &DenyNet, expires: u64) -> Result<()> {
        self.blocklist.add(net, expires)?;
        self.config = self.handles.read_config()?;
        Ok(())
    }

    /// Packets per counter, summed over CPUs, in index order.
    pub fn counter_packets(&self) -> Vec<u64> {
        Counter::ALL
            .iter()
            .map(|&c| {
                let per_cpu = self
                    .handles
                    .counters
                    .get(&(c as u32), 0)
                    .unwrap_or_else(|e| panic!("reading counter {}: {e}", c.name()));
                per_cpu.iter().map(|v| v.packets).sum()
            })
            .collect()
    }

    fn take_counters(&mut self) -> Vec<u64> {
        match self.counters.take() {
            Some(c) => c,
            None => self.counter_packets(),
        }
    }

    /// Runs the XDP program on `frame` once: its action (`XDP_PASS`/`XDP_DROP`/`XDP_TX`) and the
    /// reason it counted. Panics unless exactly one counter moved, by one packet.
    pub fn ingress(&mut self, frame: &[u8]) -> (u32, Counter) {
        let (ret, c, _) = self.ingress_out(frame);
        (ret, c)
    }

    /// [`Datapath::ingress`], with the frame as the program left it (the SYN-ACK of `XDP_TX`).
    pub fn ingress_out(&mut self, frame: &[u8]) -> (u32, Counter, Vec<u8>) {
        assert!(
            frame.len() >= MIN_TEST_RUN_LEN,
            "BPF_PROG_TEST_RUN needs at least {MIN_TEST_RUN_LEN} bytes, got {}",
            frame.len()
        );
        let before = self.take_counters();
        let xdp: &Xdp = program(&self.ebpf, self.ingress).unwrap_or_else(|e| panic!("{e:#}"));
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..TestRunOptions::default()
        };
        let r = xdp.test_run(opts).unwrap_or_else(|e| {
            panic!(
                "test run of {} on {}: {}",
                self.ingress,
                hex(frame),
                chain(&e)
            )
        });
        out.truncate(r.data_size_out as usize);
        let ret = r.return_value;
        let after = self.counter_packets();
        // Only pass and drop reasons; other counters (e.g. logging statistics) may move too.
        let moved: Vec<(Counter, u64)> = Counter::ALL
            .iter()
            .zip(before.iter().zip(&after))
            .filter(|(c, (b, a))| a != b && is_reason(**c))
            .map(|(&c, (b, a))| (c, a.wrapping_sub(*b)))
            .collect();
        self.counters = Some(after);
        match moved[..] {
            [(c, 1)] => (ret, c, out),
            _ => panic!(
                "expected exactly one ingress counter to move by one packet, got {moved:?} (action {ret}) for {}",
                hex(frame)
            ),
        }
    }

    /// Runs the TC egress program on `frame` once; returns its TC action.
    pub fn egress(&mut self, frame: &[u8]) -> i32 {
        self.egress_counted(frame).0
    }

    /// Runs the TC egress program on `frame` once: its TC action and whether it counted a created
    /// flow. Panics if the kernel refuses the input (see [`Datapath::try_egress_counted`]).
    pub fn egress_counted(&mut self, frame: &[u8]) -> (i32, bool) {
        self.try_egress_counted(frame).unwrap_or_else(|| {
            panic!(
                "the kernel refuses a TC test run of {} ({} bytes): an IPv4/IPv6 frame needs a whole IP header",
                hex(frame),
                frame.len()
            )
        })
    }

    /// Like [`Datapath::egress_counted`], but `None` if the kernel refuses the input with
    /// `EINVAL`. For SchedClassifier test runs the kernel wants a whole Ethernet header, and for
    /// an IPv4 or IPv6 ethertype (the outermost one) also a whole fixed IP header (20 / 40 bytes)
    /// behind it; XDP test runs only need the Ethernet header.
    pub fn try_egress_counted(&mut self, frame: &[u8]) -> Option<(i32, bool)> {
        let before = self.take_counters();
        let tc: &SchedClassifier =
            program(&self.ebpf, PROG_EGRESS).unwrap_or_else(|e| panic!("{e:#}"));
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        };
        let ret = match tc.test_run(opts) {
            Ok(r) => r.return_value as i32,
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EINVAL) =>
            {
                self.counters = Some(before);
                return None;
            }
            Err(e) => panic!("test run of {PROG_EGRESS} on {}: {}", hex(frame), chain(&e)),
        };
        let after = self.counter_packets();
        let delta = |c: Counter| after[c as usize] - before[c as usize];
        assert_eq!(
            delta(Counter::EgressPackets),
            1,
            "the egress program counts every packet"
        );
        let created = delta(Counter::EgressFlowsCreated);
        assert!(created <= 1, "one egress packet created {created} flows");
        for &c in Counter::ALL {
            if is_reason(c) {
                assert_eq!(delta(c), 0, "egress moved the ingress counter {}", c.name());
            }
        }
        self.counters = Some(after);
        Some((ret, created == 1))
    }

    /// Runs the raw XDP test run on `frame`, returning the syscall's error if any (for input the
    /// kernel refuses, e.g. shorter than an Ethernet header).
    pub fn try_ingress_raw(&mut self, frame: &[u8]) -> std::result::Result<u32, String> {
        self.counters = None;
        let xdp: &Xdp = program(&self.ebpf, self.ingress).unwrap_or_else(|e| panic!("{e:#}"));
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..TestRunOptions::default()
        };
        xdp.test_run(opts)
            .map(|r| r.return_value)
            .map_err(|e| chain(&e))
    }

    // The flow tables.

    /// The entry of `key` in `table`, live or expired.
    pub fn flow_in(&mut self, table: FlowTable, key: &FlowKey) -> Option<FlowValue> {
        self.handles
            .flows
            .get(table, key)
            .unwrap_or_else(|e| panic!("reading the flow tables: {e:#}"))
    }

    /// The entry of `key` in the live table, else in the closing table.
    pub fn flow(&mut self, key: &FlowKey) -> Option<FlowValue> {
        self.flow_in(FlowTable::Live, key)
            .or_else(|| self.flow_in(FlowTable::Closing, key))
    }

    /// Writes an entry into the table its state belongs in.
    pub fn set_flow(&mut self, key: &FlowKey, value: &FlowValue) {
        self.handles
            .flows
            .insert(value.table(), key, value, 0)
            .unwrap_or_else(|e| panic!("writing flow {key:?}: {e}"));
    }

    /// Removes `key` from both tables.
    pub fn remove_flow(&mut self, key: &FlowKey) {
        for table in FlowTable::ALL {
            self.handles
                .flows
                .remove(table, key)
                .unwrap_or_else(|e| panic!("removing a flow: {e:#}"));
        }
    }

    /// Every entry of every flow table, live or expired, with its table.
    pub fn flow_entries(&self) -> Vec<FlowEntry> {
        self.handles
            .flows
            .entries()
            .unwrap_or_else(|e| panic!("listing the flow tables: {e:#}"))
    }

    /// Every entry of every flow table, live or expired.
    pub fn flows(&self) -> Vec<(FlowKey, FlowValue)> {
        self.flow_entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    pub fn clear_flows(&mut self) {
        for e in self.flow_entries() {
            self.handles
                .flows
                .remove(e.table, &e.key)
                .unwrap_or_else(|e| panic!("removing a flow: {e:#}"));
        }
    }

    // The fragment table.

    pub fn frag(&self, key: &FragKey) -> Option<FragValue> {
        ignore_missing(self.frags.get(key, 0), "reading the fragment table")
    }

    pub fn set_frag(&mut self, key: &FragKey, value: &FragValue) {
        self.frags
            .insert(key, value, 0)
            .unwrap_or_else(|e| panic!("writing fragment entry {key:?}: {e}"));
    }

    pub fn remove_frag(&mut self, key: &FragKey) {
        ignore_missing(self.frags.remove(key), "removing a fragment entry");
    }

    pub fn frag_entries(&self) -> Vec<(FragKey, FragValue)> {
        let keys: Vec<FragKey> = self
            .frags
            .keys()
            .filter_map(|k| ignore_missing(k, "listing the fragment table"))
            .collect();
        keys.into_iter()
            .filter_map(|k| self.frag(&k).map(|v| (k, v)))
            .collect()
    }

    pub fn clear_frags(&mut self) {
        for (k, _) in self.frag_entries() {
            self.remove_frag(&k);
        }
    }
}

/// An error and its sources, e.g. "`bpf_prog_test_run` failed: Invalid argument (os error 22)".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

fn program<'a, P>(ebpf: &'a Ebpf, name: &str) -> Result<&'a P>
where
    &'a P: TryFrom<&'a Program>,
    <&'a P as TryFrom<&'a Program>>::Error: std::fmt::Display,
{
    let p = ebpf
        .program(name)
        .with_context(|| format!("program {name} missing from the object"))?;
    p.try_into()
        .map_err(|e| anyhow!("program {name} has an unexpected type: {e}"))
}

fn program_mut<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program>,
    <&'a mut P as TryFrom<&'a mut Program>>::Error: std::fmt::Display,
{
    let p = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the object"))?;
    p.try_into()
        .map_err(|e| anyhow!("program {name} has an unexpected type: {e}"))
}
