//! Two throw-away network namespaces joined by a veth pair: the *origin* (where the filter runs)
//! and the *peer* (which plays the internet and runs the flood generator). Dropping a [`NetPair`]
//! deletes both namespaces, which removes the veth, the XDP and TC attachments, the iptables and
//! nftables rules and every per-namespace sysctl with them.

use std::{net::Ipv4Addr, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::sys;

/// The origin's end of the veth.
pub const ORIGIN_IF: &str = "ldbo0";
/// The peer's end of the veth.
pub const PEER_IF: &str = "ldbp0";
pub const ORIGIN_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0xc9, 0x00, 0x01];
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0xc9, 0x00, 0x02];
/// The link between the two namespaces (10.201.0.0/24, only ever inside them).
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
/// Spoofed flood sources are drawn from 10.202.0.0/16. The origin routes it via the peer, so its
/// replies (RSTs, SYN-ACKs) really leave through the veth and lockdown's egress program; the peer
/// does not forward and drops them.
pub const SPOOF_NET: [u8; 2] = [10, 202];
/// The CPU that runs the generator (and everything else of the bench).
pub const GEN_CPU: usize = 0;
/// The CPU that receive processing is steered to.
pub const RX_CPU: usize = 1;

/// Prefix of every namespace the bench creates: `ldb-<tag>-<o|p>-<pid>`.
const NS_PREFIX: &str = "ldb-";

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ip(args: &[&str]) -> Result<()> {
    sys::run(Command::new("ip").args(args)).map(drop)
}

pub struct NetPair {
    pub origin: String,
    pub peer: String,
}

impl NetPair {
    /// Creates the namespaces, the veth, addresses, routes and static neighbours.
    pub fn new(tag: &str) -> Result<Self> {
        let pid = std::process::id();
        let pair = Self {
            origin: format!("{NS_PREFIX}{tag}-o-{pid}"),
            peer: format!("{NS_PREFIX}{tag}-p-{pid}"),
        };
        // From here on, Drop deletes whatever was made.
        pair.setup()
            .with_context(|| format!("setting up namespaces {} and {}", pair.origin, pair.peer))?;
        Ok(pair)
    }

    fn setup(&self) -> Result<()> {
        let (o, p) = (self.origin.as_str(), self.peer.as_str());
        ip(&["netns", "add", o])?;
        ip(&["netns", "add", p])?;
        for ns in [o, p] {
            // No IPv6: keeps router solicitations and DAD out of the measurements.
            sys::ns_sysctl_write(ns, "net/ipv6/conf/all/disable_ipv6", "1")?;
            sys::ns_sysctl_write(ns, "net/ipv6/conf/default/disable_ipv6", "1")?;
        }
        ip(&[
            "link",
            "add",
            ORIGIN_IF,
            "address",
            &mac(ORIGIN_MAC),
            "netns",
            o,
            "type",
            "veth",
            "peer",
            "name",
            PEER_IF,
            "address",
            &mac(PEER_MAC),
            "netns",
            p,
        ])?;
        let o_addr = format!("{ORIGIN_V4}/24");
        let p_addr = format!("{PEER_V4}/24");
        let spoof = format!("{}.{}.0.0/16", SPOOF_NET[0], SPOOF_NET[1]);
        ip(&["-n", o, "link", "set", "lo", "up"])?;
        ip(&["-n", p, "link", "set", "lo", "up"])?;
        ip(&["-n", o, "addr", "add", &o_addr, "dev", ORIGIN_IF])?;
        ip(&["-n", p, "addr", "add", &p_addr, "dev", PEER_IF])?;
        ip(&["-n", o, "link", "set", ORIGIN_IF, "up"])?;
        ip(&["-n", p, "link", "set", PEER_IF, "up"])?;
        ip(&["-n", o, "route", "add", &spoof, "via", &PEER_V4.to_string()])?;
        ip(&[
            "-n",
            o,
            "neigh",
            "replace",
            &PEER_V4.to_string(),
            "lladdr",
            &mac(PEER_MAC),
            "dev",
            ORIGIN_IF,
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            p,
            "neigh",
            "replace",
            &ORIGIN_V4.to_string(),
            "lladdr",
            &mac(ORIGIN_MAC),
            "dev",
            PEER_IF,
            "nud",
            "permanent",
        ])?;
        Ok(())
    }

    /// Steers receive processing: RPS sends what arrives on the origin's veth to [`RX_CPU`], and
    /// what arrives on the peer's (the origin's replies) to [`GEN_CPU`], so that [`RX_CPU`] does
    /// only the origin's work.
    pub fn steer_receive(&self) -> Result<()> {
        sys::ns_sysfs_write(
            &self.origin,
            &format!("class/net/{ORIGIN_IF}/queues/rx-0/rps_cpus"),
            &format!("{:x}", 1u64 << RX_CPU),
        )?;
        sys::ns_sysfs_write(
            &self.peer,
            &format!("class/net/{PEER_IF}/queues/rx-0/rps_cpus"),
            &format!("{:x}", 1u64 << GEN_CPU),
        )
    }

    /// Threaded NAPI on the origin's veth, its kthreads pinned to [`RX_CPU`]. Call after native
    /// XDP is attached (a veth has NAPI only then). Returns the kthreads' names.
    pub fn threaded_napi(&self) -> Result<Vec<String>> {
        sys::ns_sysfs_write(
            &self.origin,
            &format!("class/net/{ORIGIN_IF}/threaded"),
            "1",
        )?;
        let prefix = format!("napi/{ORIGIN_IF}-");
        let threads = sys::threads_named(&prefix)?;
        if threads.is_empty() {
            bail!("no NAPI kthread named {prefix}* after enabling threaded NAPI on {ORIGIN_IF}");
        }
        for (tid, name) in &threads {
            sys::pin(*tid, &[RX_CPU]).with_context(|| format!("pinning {name} to CPU{RX_CPU}"))?;
        }
        Ok(threads.into_iter().map(|(_, n)| n).collect())
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.peer, &self.origin] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lockdown-bench: warning: deleting namespace {ns}: {e:#}");
            }
        }
    }
}

/// Deletes namespaces left behind by bench runs that no longer exist (killed with SIGKILL).
pub fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !sys::pid_alive(pid) {
            eprintln!("lockdown-bench: removing stale namespace {name}");
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("lockdown-bench: warning: {e:#}");
            }
        }
    }
}
