//! Two namespaces joined by a veth pair: the *origin* (where lockdown or another filter is
//! attached) and the *peer* (which plays the internet, and runs the flood generator). Dropping a
//! [`NetPair`] deletes both namespaces, which removes the veth, the XDP and TC attachments, the
//! iptables and nftables rules and every per-namespace sysctl with them.
//!
//! The tests take the [`Link::DUAL_STACK`] link; the bench takes [`Link::QUIET`] (no IPv6, static
//! neighbours: nothing but the measured traffic on the wire) and steers receive processing to
//! [`RX_CPU`] ([`NetPair::steer_receive`], [`NetPair::threaded_napi`]).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{FromRawFd as _, OwnedFd},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

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
/// The IPv6 twin of [`FLOOD_NET`] (fd00:231:8000::/33), routed by the origin via the peer.
pub const FLOOD_NET6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0x8000, 0, 0, 0, 0, 0);
/// Prefix length of [`FLOOD_NET6`].
pub const FLOOD_PREFIX6: u8 = 33;

/// Fresh login sources ([`NetPair::fresh_source`]) of IPv4 come from this network
/// (10.231.64.0/18), one address each, routed by the origin via the peer.
pub const LOGIN_NET: Ipv4Addr = Ipv4Addr::new(10, 231, 64, 0);
/// Prefix length of [`LOGIN_NET`].
pub const LOGIN_PREFIX: u8 = 18;
/// Fresh IPv6 login sources come from this network (fd00:231:100::/48), each in a /64 of its
/// own (rate limits bucket IPv6 sources per /64), routed by the origin via the peer.
pub const LOGIN_NET6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0x100, 0, 0, 0, 0, 0);
/// Prefix length of [`LOGIN_NET6`].
pub const LOGIN_PREFIX6: u8 = 48;

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
    /// Login sources handed out so far, per family ([`NetPair::fresh_source`]).
    sources: [AtomicU32; 2],
    /// The peer's XDP_PASS link ([`NetPair::peer_xdp_pass`]), held as long as the pair.
    peer_xdp: Mutex<Option<OwnedFd>>,
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
            sources: [AtomicU32::new(0), AtomicU32::new(0)],
            peer_xdp: Mutex::new(None),
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
        let logins = format!("{LOGIN_NET}/{LOGIN_PREFIX}");
        try_ip(o, &["route", "add", &logins, "via", &PEER_V4.to_string()])?;
        if link.ipv6 {
            for net in [
                format!("{FLOOD_NET6}/{FLOOD_PREFIX6}"),
                format!("{LOGIN_NET6}/{LOGIN_PREFIX6}"),
            ] {
                try_ip(
                    o,
                    &["-6", "route", "add", &net, "via", &PEER_V6.to_string()],
                )?;
            }
        }
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

    /// A source address no connection has used yet, added to the peer's end of the veth: IPv4
    /// from [`LOGIN_NET`] (a /32), IPv6 from [`LOGIN_NET6`], each in a /64 of its own. The
    /// origin routes both networks via the peer. Bind a client to it (`ssh -b`, `nc -s`).
    pub fn fresh_source(&self, family: Family) -> Result<IpAddr> {
        let (i, cap) = match family {
            Family::V4 => (0, (1u32 << (32 - LOGIN_PREFIX)) - 2),
            Family::V6 => (1, 1 << 16),
        };
        let n = self.sources[i].fetch_add(1, Ordering::Relaxed) + 1;
        if n >= cap {
            bail!("the pair has handed out all {cap} {family:?} login sources");
        }
        let (addr, cidr) = match family {
            Family::V4 => {
                let a = Ipv4Addr::from(u32::from(LOGIN_NET) + n);
                (IpAddr::V4(a), format!("{a}/32"))
            }
            Family::V6 => {
                // fd00:231:100:N::1/64
                let a = Ipv6Addr::from(u128::from(LOGIN_NET6) | (u128::from(n) << 64) | 1);
                (IpAddr::V6(a), format!("{a}/64"))
            }
        };
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", PEER_IF];
        if family == Family::V6 {
            args.push("nodad");
        }
        try_ip(&self.peer, &args)
            .with_context(|| format!("adding login source {addr} to {PEER_IF}"))?;
        Ok(addr)
    }

    /// Attaches a native XDP program that passes everything to the peer's end of the veth, held
    /// as long as the pair. On this kernel (6.18) a veth delivers the frames the origin's XDP
    /// program sends back (`XDP_TX`: lockdown's SYN-cookie SYN-ACKs) only when its peer has an
    /// XDP program of its own; GRO alone is not enough. The program is two instructions
    /// (`r0 = XDP_PASS; exit`) loaded with bpf(2) and attached with a bpf_link, so it needs no
    /// object file. Attaching twice is an error.
    pub fn peer_xdp_pass(&self) -> Result<()> {
        let mut held = self.peer_xdp.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            bail!("the peer already has its XDP_PASS program");
        }
        let link = netns::try_in_ns(&self.peer, || {
            let index = nix::net::if_::if_nametoindex(PEER_IF)
                .with_context(|| format!("no {PEER_IF} in the peer namespace"))?;
            xdp_pass_link(index)
        })?;
        *held = Some(link);
        Ok(())
    }

    /// The peer's veth counters: (transmitted packets, received packets), from
    /// `/proc/net/dev` as the peer namespace sees it.
    pub fn peer_packets(&self) -> Result<(u64, u64)> {
        netns::try_in_ns(&self.peer, || dev_packets(PEER_IF))
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

    /// Threaded NAPI on the peer's veth, its kthreads pinned to [`GEN_CPU`]: the frames the
    /// origin's XDP program sends back (`XDP_TX`) are then received on the generator's CPU, not
    /// charged to [`RX_CPU`]. Call after [`NetPair::peer_xdp_pass`] (the peer's veth has NAPI
    /// only with a program attached). Returns the kthreads' names.
    pub fn peer_threaded_napi(&self) -> Result<Vec<String>> {
        netns::sysfs_write(&self.peer, &format!("class/net/{PEER_IF}/threaded"), "1")?;
        let prefix = format!("napi/{PEER_IF}-");
        let threads = host::threads_named(&prefix)?;
        if threads.is_empty() {
            bail!("no NAPI kthread named {prefix}* after enabling threaded NAPI on {PEER_IF}");
        }
        for (tid, name) in &threads {
            host::pin(*tid, &[GEN_CPU])
                .with_context(|| format!("pinning {name} to CPU{GEN_CPU}"))?;
        }
        Ok(threads.into_iter().map(|(_, n)| n).collect())
    }
}

/// (transmitted, received) packets of `dev` in the calling thread's namespace.
pub fn dev_packets(dev: &str) -> Result<(u64, u64)> {
    // thread-self: /proc/net follows the thread group leader's namespace, not this thread's.
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")
        .context("reading /proc/thread-self/net/dev")?;
    parse_dev_packets(&text, dev)
}

fn parse_dev_packets(text: &str, dev: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(dev)?.strip_prefix(':'))
        .with_context(|| format!("no {dev} in /proc/net/dev"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing /proc/net/dev line of {dev}: {line}"))?;
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
    match (f.get(1), f.get(9)) {
        (Some(&rx), Some(&tx)) => Ok((tx, rx)),
        _ => bail!("short /proc/net/dev line for {dev}: {line}"),
    }
}

/// bpf(2) with an attribute buffer; returns the new descriptor.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16], what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a 128-byte, 8-aligned bpf_attr that the kernel reads (and, for a
    // program load, writes the log fields of; none are set) for the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("bpf({what})"));
    }
    let fd = i32::try_from(fd).context("bpf(2) returned a descriptor beyond i32")?;
    // SAFETY: a fresh descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `r0 = XDP_PASS; exit` and attaches it natively to `ifindex` (a bpf_link: detached
/// when the returned descriptor closes).
fn xdp_pass_link(ifindex: u32) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_XDP: u64 = 6;
    const BPF_XDP: u64 = 37;
    const XDP_FLAGS_DRV_MODE: u64 = 1 << 2;
    const XDP_PASS: u64 = 2;
    // mov64 r0, XDP_PASS (0xb7, imm in the high word); exit (0x95).
    let insns: [u64; 2] = [0xb7 | (XDP_PASS << 32), 0x95];
    let license = c"GPL";
    let mut attr = [0u64; 16];
    // prog_type (u32 @0) | insn_cnt (u32 @4); insns @8; license @16.
    attr[0] = BPF_PROG_TYPE_XDP | (2 << 32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // prog_name (16 bytes @48).
    let name = *b"ld_peer_pass\0\0\0\0";
    attr[6] = u64::from_ne_bytes(name[..8].try_into().context("name")?);
    attr[7] = u64::from_ne_bytes(name[8..].try_into().context("name")?);
    // prog_ifindex (u32 @64) | expected_attach_type (u32 @68).
    attr[8] = BPF_XDP << 32;
    let prog = bpf(
        BPF_PROG_LOAD,
        &mut attr,
        "BPF_PROG_LOAD of the peer's XDP_PASS",
    )?;
    let mut attr = [0u64; 16];
    // prog_fd (u32 @0) | target_ifindex (u32 @4); attach_type (u32 @8) | flags (u32 @12).
    attr[0] = u64::from(prog.as_raw_fd() as u32) | (u64::from(ifindex) << 32);
    attr[1] = BPF_XDP | (XDP_FLAGS_DRV_MODE << 32);
    bpf(
        BPF_LINK_CREATE,
        &mut attr,
        "BPF_LINK_CREATE of the peer's XDP_PASS",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_lines_parse() {
        let text = "Inter-|   Receive                                                |  Transmit\n  face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n     lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n   ldp0: 1000      12    0    0    0     0          0         0    74000    1000    0    0    0     0       0          0\n";
        assert_eq!(parse_dev_packets(text, "ldp0").expect("parses"), (1000, 12));
        assert!(parse_dev_packets(text, "ldp").is_err());
    }
}
