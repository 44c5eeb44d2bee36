//! Two namespaces joined by a veth pair: the *origin* (where lockdown or another filter is
//! attached) and the *peer* (which plays the internet, and runs the flood generator). Dropping a
//! [`NetPair`] deletes both namespaces, which removes the veth, the XDP and TC attachments, the
//! iptables and nftables rules and every per-namespace sysctl with them.
//!
//! The tests take the [`Link::DUAL_STACK`] link; the bench takes [`Link::QUIET`] (no IPv6, static
//! neighbours: nothing but the measured traffic on the wire) and steers receive processing to
//! [`RX_CPU`] ([`NetPair::steer_receive`], [`NetPair::threaded_napi`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::{Context as _, Result, bail};

use crate::{
    host,
    netns::{self, ip, require_environment},
};

/// The origin's side of the veth (inside the origin namespace).
pub const ORIGIN_IF: &str = "ldo0";
/// The peer's side of the veth (inside the peer namespace).
pub const PEER_IF: &str = "ldp0";
/// The MAC address of [`ORIGIN_IF`] (locally administered).
pub const ORIGIN_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0xe7, 0x00, 0x01];
/// The MAC address of [`PEER_IF`].
pub const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x0a, 0xe7, 0x00, 0x02];

/// The origin's IPv4 address on the test link (10.231.0.0/24; only ever inside the namespaces).
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// The peer's IPv4 address on the test link.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Prefix length of the test link.
pub const LINK_PREFIX_V4: u8 = 24;
/// The origin's IPv6 ULA address on the test link (fd00:231::/64).
pub const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, 1);
/// The peer's IPv6 ULA address on the test link.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, 2);
/// Prefix length of the IPv6 test link.
pub const LINK_PREFIX_V6: u8 = 64;
/// Spoofed flood sources are drawn from this network (10.231.128.0/17). The origin routes it via
/// the peer, so its replies to the spoofed sources (SYN-ACKs, RSTs) really leave through the veth
/// (and through lockdown's egress program) instead of failing on a missing route; the peer does
/// not forward and drops them.
pub const FLOOD_NET: Ipv4Addr = Ipv4Addr::new(10, 231, 128, 0);
/// Prefix length of [`FLOOD_NET`].
pub const FLOOD_PREFIX: u8 = 17;

/// The CPU that runs the flood generator (and everything else of the bench).
pub const GEN_CPU: usize = 0;
/// The CPU that [`NetPair::steer_receive`] steers the origin's receive processing to.
pub const RX_CPU: usize = 1;

/// Prefix of every namespace a pair makes: `ld-<tag>-<o|p>-<pid>`.
const NS_PREFIX: &str = "ld-";

/// The address family of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The origin's address on the test link.
    pub const fn origin(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(ORIGIN_V4),
            Self::V6 => IpAddr::V6(ORIGIN_V6),
        }
    }

    /// The peer's address on the test link.
    pub const fn peer(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(PEER_V4),
            Self::V6 => IpAddr::V6(PEER_V6),
        }
    }

    /// The unspecified address of this family.
    pub const fn any(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Self::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// `[::]:port`: a dual-stack socket address (serves IPv4 and IPv6).
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::new(Family::V6.any(), port)
}

/// The origin's IPv4 address on the test link, with `port`.
pub fn origin_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ORIGIN_V4), port)
}

/// The peer's IPv4 address on the test link, with `port`.
pub fn peer_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(PEER_V4), port)
}

/// What the link between the two namespaces carries besides the traffic a run makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// IPv6 addresses on both ends; without it, IPv6 is disabled in both namespaces (no router
    /// solicitations, no DAD).
    pub ipv6: bool,
    /// Permanent neighbour entries for the other end, so that no ARP crosses the link.
    pub static_neighbours: bool,
}

impl Link {
    /// Both families, neighbours resolved as usual: what the end-to-end tests check against.
    pub const DUAL_STACK: Self = Self {
        ipv6: true,
        static_neighbours: false,
    };
    /// IPv4 only, static neighbours: nothing on the wire but what a measurement sends.
    pub const QUIET: Self = Self {
        ipv6: false,
        static_neighbours: true,
    };
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn try_ip(ns: &str, args: &[&str]) -> Result<()> {
    host::run(netns::ns_command(ns, "ip").args(args)).map(drop)
}

/// Two namespaces joined by a veth pair; see the module docs.
#[derive(Debug)]
pub struct NetPair {
    /// Where the filter is attached (interface [`ORIGIN_IF`]).
    pub origin: String,
    /// Plays the internet (interface [`PEER_IF`]).
    pub peer: String,
}

impl NetPair {
    /// A [`Link::DUAL_STACK`] pair for a test: panics (after cleaning up) if the environment is
    /// missing something or any step fails.
    pub fn new(tag: &str) -> Self {
        require_environment();
        Self::create(tag, Link::DUAL_STACK).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Makes `ld-<tag>-o-<pid>` and `ld-<tag>-p-<pid>`, the veth, addresses and routes (and
    /// what `link` asks for).
    pub fn create(tag: &str, link: Link) -> Result<Self> {
        let pid = std::process::id();
        let pair = Self {
            origin: format!("{NS_PREFIX}{tag}-o-{pid}"),
            peer: format!("{NS_PREFIX}{tag}-p-{pid}"),
        };
        // From here on, Drop deletes whatever was made.
        pair.setup(link)
            .with_context(|| format!("setting up namespaces {} and {}", pair.origin, pair.peer))?;
        Ok(pair)
    }

    fn setup(&self, link: Link) -> Result<()> {
        let (o, p) = (self.origin.as_str(), self.peer.as_str());
        netns::add(o)?;
        netns::add(p)?;
        if !link.ipv6 {
            for ns in [o, p] {
                netns::sysctl_write(ns, "net/ipv6/conf/all/disable_ipv6", "1")?;
                netns::sysctl_write(ns, "net/ipv6/conf/default/disable_ipv6", "1")?;
            }
        }
        try_ip(
            o,
            &[
                "link",
                "add",
                ORIGIN_IF,
                "address",
                &mac_text(ORIGIN_MAC),
                "type",
                "veth",
                "peer",
                "name",
                PEER_IF,
                "address",
                &mac_text(PEER_MAC),
                "netns",
                p,
            ],
        )?;
        for (ns, dev, v4, v6) in [
            (o, ORIGIN_IF, ORIGIN_V4, ORIGIN_V6),
            (p, PEER_IF, PEER_V4, PEER_V6),
        ] {
            try_ip(ns, &["link", "set", "lo", "up"])?;
            try_ip(
                ns,
                &["addr", "add", &format!("{v4}/{LINK_PREFIX_V4}"), "dev", dev],
            )?;
            if link.ipv6 {
                let v6 = format!("{v6}/{LINK_PREFIX_V6}");
                try_ip(ns, &["-6", "addr", "add", &v6, "dev", dev, "nodad"])?;
            }
            try_ip(ns, &["link", "set", dev, "up"])?;
        }
        let flood = format!("{FLOOD_NET}/{FLOOD_PREFIX}");
        try_ip(o, &["route", "add", &flood, "via", &PEER_V4.to_string()])?;
        if link.static_neighbours {
            for (ns, addr, mac, dev) in [
                (o, PEER_V4, PEER_MAC, ORIGIN_IF),
                (p, ORIGIN_V4, ORIGIN_MAC, PEER_IF),
            ] {
                let (addr, mac) = (addr.to_string(), mac_text(mac));
                try_ip(
                    ns,
                    &[
                        "neigh",
                        "replace",
                        &addr,
                        "lladdr",
                        &mac,
                        "dev",
                        dev,
                        "nud",
                        "permanent",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Sets the MTU of both ends of the veth.
    pub fn set_mtu(&self, mtu: u32) {
        let mtu = mtu.to_string();
        ip(
            &self.origin,
            &["link", "set", "dev", ORIGIN_IF, "mtu", &mtu],
        );
        ip(&self.peer, &["link", "set", "dev", PEER_IF, "mtu", &mtu]);
    }

    /// The XDP attachment of the origin's interface as `ip -j -d link show` reports it: `None`
    /// when no XDP program is attached, otherwise the mode (1 = driver/native, 2 = generic/skb,
    /// 3 = offload) and the program name.
    pub fn origin_xdp(&self) -> Option<(u64, String)> {
        let json = ip(
            &self.origin,
            &["-j", "-d", "link", "show", "dev", ORIGIN_IF],
        );
        let v: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("parsing `ip -j -d link show`: {e}: {json}"));
        let xdp = v[0].get("xdp")?;
        let mode = xdp["mode"].as_u64().unwrap_or(0);
        let name = xdp["prog"]["name"].as_str().unwrap_or("").to_owned();
        Some((mode, name))
    }

    /// `ip -d link show dev ORIGIN_IF`, for messages.
    pub fn origin_link_text(&self) -> String {
        ip(&self.origin, &["-d", "link", "show", "dev", ORIGIN_IF])
    }

    /// Steers receive processing: RPS sends what arrives on the origin's veth to [`RX_CPU`], and
    /// what arrives on the peer's (the origin's replies) to [`GEN_CPU`], so that [`RX_CPU`] does
    /// only the origin's work.
    pub fn steer_receive(&self) -> Result<()> {
        netns::sysfs_write(
            &self.origin,
            &format!("class/net/{ORIGIN_IF}/queues/rx-0/rps_cpus"),
            &format!("{:x}", 1u64 << RX_CPU),
        )?;
        netns::sysfs_write(
            &self.peer,
            &format!("class/net/{PEER_IF}/queues/rx-0/rps_cpus"),
            &format!("{:x}", 1u64 << GEN_CPU),
        )
    }

    /// Threaded NAPI on the origin's veth, its kthreads pinned to [`RX_CPU`]. Call after native
    /// XDP is attached (a veth has NAPI only then). Returns the kthreads' names.
    pub fn threaded_napi(&self) -> Result<Vec<String>> {
        netns::sysfs_write(
            &self.origin,
            &format!("class/net/{ORIGIN_IF}/threaded"),
            "1",
        )?;
        let prefix = format!("napi/{ORIGIN_IF}-");
        let threads = host::threads_named(&prefix)?;
        if threads.is_empty() {
            bail!("no NAPI kthread named {prefix}* after enabling threaded NAPI on {ORIGIN_IF}");
        }
        for (tid, name) in &threads {
            host::pin(*tid, &[RX_CPU]).with_context(|| format!("pinning {name} to CPU{RX_CPU}"))?;
        }
        Ok(threads.into_iter().map(|(_, n)| n).collect())
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.origin, &self.peer] {
            if let Err(e) = netns::del(ns) {
                eprintln!("warning: deleting namespace {ns}: {e:#}");
            }
        }
    }
}

/// Deletes the namespaces of pairs whose process no longer exists (killed with SIGKILL).
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
        if !host::pid_alive(pid) {
            eprintln!("removing stale namespace {name}");
            if let Err(e) = netns::del(&name) {
                eprintln!("warning: {e:#}");
            }
        }
    }
}
