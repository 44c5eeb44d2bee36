//! The filters the receive-side sections compare, each applied to the origin's veth and removed
//! again by a guard.

use std::{
    path::PathBuf,
    sync::mpsc,
    thread::{self, JoinHandle},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    programs::{Xdp, XdpMode},
};
use lockdown_common::contract::maps::PROG_BASELINE_DROP;
use lockdown_user::EBPF_OBJECT;
use serde::Serialize;

use lockdown_testbed::{
    host, netns,
    pair::{NetPair, ORIGIN_IF},
};

/// Where the lockdown CLI is and where it pins.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    pub lockdown: PathBuf,
    /// A private pin root on bpffs (`LOCKDOWN_PIN_ROOT`), removed at the end of the run.
    pub pin_root: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Filter {
    Unfiltered,
    Iptables,
    Nftables,
    LockdownSkb,
    LockdownNative,
    BareDropSkb,
    BareDropNative,
}

/// The seed chain: `lo ACCEPT; RELATED,ESTABLISHED ACCEPT; tcp dport 22 ACCEPT; DROP`.
const IPTABLES_RULES: [&[&str]; 4] = [
    &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"],
    &[
        "-A",
        "INPUT",
        "-m",
        "conntrack",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "ACCEPT",
    ],
    &["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    &["-A", "INPUT", "-j", "DROP"],
];

/// The same chain in nftables.
const NFT_RULESET: &str = "table inet ldbench {
    chain input {
        type filter hook input priority filter; policy accept;
        iif \"lo\" accept
        ct state related,established accept
        tcp dport 22 accept
        counter drop
    }
}
";

impl Filter {
    pub(crate) const ALL: [Self; 7] = [
        Self::Unfiltered,
        Self::Iptables,
        Self::Nftables,
        Self::LockdownSkb,
        Self::LockdownNative,
        Self::BareDropSkb,
        Self::BareDropNative,
    ];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Unfiltered => "no filter",
            Self::Iptables => "seed iptables chain (conntrack)",
            Self::Nftables => "same chain in nftables",
            Self::LockdownSkb => "lockdown --mode skb",
            Self::LockdownNative => "lockdown --mode native",
            Self::BareDropSkb => "bare XDP_DROP, skb mode",
            Self::BareDropNative => "bare XDP_DROP, native mode",
        }
    }

    /// Native XDP: the veth gets NAPI, which the bench makes threaded and pins to the RX CPU.
    pub(crate) const fn native(self) -> bool {
        matches!(self, Self::LockdownNative | Self::BareDropNative)
    }

    pub(crate) const fn is_lockdown(self) -> bool {
        matches!(self, Self::LockdownSkb | Self::LockdownNative)
    }

    /// Whether the filter drops a SYN to a closed port (all but "no filter").
    pub(crate) const fn drops(self) -> bool {
        !matches!(self, Self::Unfiltered)
    }
}

/// A filter in place on a [`NetPair`]'s origin; dropping it removes the filter.
pub(crate) struct Applied<'a> {
    pub filter: Filter,
    pair: &'a NetPair,
    env: &'a Env,
    bare: Option<Bare>,
    /// The NAPI kthreads pinned to the RX CPU (native modes).
    pub napi_threads: Vec<String>,
    active: bool,
}

impl<'a> Applied<'a> {
    pub(crate) fn apply(filter: Filter, pair: &'a NetPair, env: &'a Env) -> Result<Self> {
        let mut applied = Self {
            filter,
            pair,
            env,
            bare: None,
            napi_threads: Vec::new(),
            active: true,
        };
        applied
            .setup()
            .with_context(|| format!("applying filter {}", filter.label()))?;
        Ok(applied)
    }

    fn ns(&self) -> &str {
        &self.pair.origin
    }

    fn lockdown(&self) -> std::process::Command {
        let mut c = netns::ns_command(self.ns(), &self.env.lockdown);
        // The bench's namespaces serve no SSH session: the caller's must not trip the guard.
        c.env("LOCKDOWN_PIN_ROOT", &self.env.pin_root)
            .env_remove("SSH_CONNECTION");
        c
    }

    fn setup(&mut self) -> Result<()> {
        match self.filter {
            Filter::Unfiltered => {}
            Filter::Iptables => {
                for rule in IPTABLES_RULES {
                    let mut c = netns::ns_command(self.ns(), "iptables");
                    c.arg("-w").args(rule);
                    host::run(&mut c)?;
                }
            }
            Filter::Nftables => {
                let mut c = netns::ns_command(self.ns(), "nft");
                c.args(["-f", "-"]);
                host::run_with_input(&mut c, Some(NFT_RULESET))?;
            }
            Filter::LockdownSkb | Filter::LockdownNative => {
                let mode = if self.filter.native() {
                    "native"
                } else {
                    "skb"
                };
                let mut c = self.lockdown();
                c.args(["up", "--iface", ORIGIN_IF, "--mode", mode, "--force"]);
                host::run(&mut c)?;
            }
            Filter::BareDropSkb | Filter::BareDropNative => {
                let mode = if self.filter.native() {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                self.bare = Some(Bare::attach(self.ns(), mode)?);
            }
        }
        if self.filter.native() {
            self.napi_threads = self.pair.threaded_napi()?;
        }
        Ok(())
    }

    /// Packets the filter counted as dropped (lockdown: `drop_*` counters; iptables: the DROP
    /// rule; nftables: the drop rule's counter); `None` for filters without a counter.
    pub(crate) fn dropped(&self) -> Result<Option<u64>> {
        match self.filter {
            Filter::Unfiltered | Filter::BareDropSkb | Filter::BareDropNative => Ok(None),
            Filter::Iptables => {
                let mut c = netns::ns_command(self.ns(), "iptables");
                c.args(["-w", "-n", "-v", "-x", "-L", "INPUT"]);
                let out = host::run(&mut c)?;
                out.lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() > 2 && f[2] == "DROP").then(|| f[0].parse::<u64>().ok())
                    })
                    .next_back()
                    .flatten()
                    .map(Some)
                    .context("no DROP rule counter in `iptables -L INPUT`")
            }
            Filter::Nftables => {
                let mut c = netns::ns_command(self.ns(), "nft");
                c.args(["list", "chain", "inet", "ldbench", "input"]);
                let out = host::run(&mut c)?;
                let after = out
                    .split("counter packets ")
                    .nth(1)
                    .context("no counter in the nftables chain")?;
                let n = after.split_whitespace().next().unwrap_or_default();
                Ok(Some(n.parse().context("parsing the nftables counter")?))
            }
            Filter::LockdownSkb | Filter::LockdownNative => {
                let s = self.lockdown_status()?;
                let counters = s["counters"]
                    .as_object()
                    .context("status --json has no counters")?;
                Ok(Some(
                    counters
                        .iter()
                        .filter(|(k, _)| k.starts_with("drop_"))
                        .filter_map(|(_, v)| v.as_u64())
                        .sum(),
                ))
            }
        }
    }

    /// `lockdown status --json --interval 0` for the origin's veth.
    pub(crate) fn lockdown_status(&self) -> Result<serde_json::Value> {
        if !self.filter.is_lockdown() {
            bail!("{} is not lockdown", self.filter.label());
        }
        let mut c = self.lockdown();
        c.args(["status", "--iface", ORIGIN_IF, "--json", "--interval", "0"]);
        let out = host::run(&mut c)?;
        serde_json::from_str(&out).context("parsing `lockdown status --json`")
    }

    fn teardown(&mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        match self.filter {
            Filter::Unfiltered => Ok(()),
            Filter::Iptables => {
                let mut c = netns::ns_command(self.ns(), "iptables");
                c.args(["-w", "-F", "INPUT"]);
                host::run(&mut c).map(drop)
            }
            Filter::Nftables => {
                let mut c = netns::ns_command(self.ns(), "nft");
                c.args(["delete", "table", "inet", "ldbench"]);
                host::run(&mut c).map(drop)
            }
            Filter::LockdownSkb | Filter::LockdownNative => {
                let mut c = self.lockdown();
                c.args(["down", "--iface", ORIGIN_IF]);
                host::run(&mut c).map(drop)
            }
            Filter::BareDropSkb | Filter::BareDropNative => {
                if let Some(b) = self.bare.take() {
                    b.detach();
                }
                Ok(())
            }
        }
    }

    /// Removes the filter, reporting failure (Drop only warns).
    pub(crate) fn remove(mut self) -> Result<()> {
        self.teardown()
            .with_context(|| format!("removing filter {}", self.filter.label()))
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!(
                "lockdown-bench: warning: removing {}: {e:#}",
                self.filter.label()
            );
        }
    }
}

/// The object's bare `XDP_DROP` program attached by a thread inside the origin namespace; the
/// thread holds the loaded object (and so the unpinned link) until told to detach.
struct Bare {
    stop: mpsc::Sender<()>,
    join: JoinHandle<()>,
}

impl Bare {
    fn attach(ns: &str, mode: XdpMode) -> Result<Self> {
        let ns = ns.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let join = thread::Builder::new()
            .name("bare-xdp".into())
            .spawn(move || {
                let loaded = (|| {
                    netns::enter(&ns)?;
                    let mut ebpf = EbpfLoader::new()
                        .load(EBPF_OBJECT)
                        .context("loading the lockdown object")?;
                    let prog: &mut Xdp = ebpf
                        .program_mut(PROG_BASELINE_DROP)
                        .with_context(|| format!("{PROG_BASELINE_DROP} missing from the object"))?
                        .try_into()?;
                    prog.load()
                        .with_context(|| format!("loading {PROG_BASELINE_DROP}"))?;
                    let index = lockdown_user::host::link::ifindex(ORIGIN_IF)?;
                    prog.attach(index, mode).with_context(|| {
                        format!("attaching {PROG_BASELINE_DROP} to {ORIGIN_IF}")
                    })?;
                    Ok(ebpf)
                })();
                match loaded {
                    Ok(ebpf) => {
                        let _ = ready_tx.send(Ok(()));
                        // Sender dropped or a message: either way, detach.
                        let _ = stop_rx.recv();
                        drop(ebpf);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .context("spawning the bare-XDP thread")?;
        ready_rx.recv().context("the bare-XDP thread died")??;
        Ok(Self { stop, join })
    }

    fn detach(self) {
        let _ = self.stop.send(());
        let _ = self.join.join();
    }
}
