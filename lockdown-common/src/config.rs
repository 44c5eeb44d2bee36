//! Runtime configuration, stored in [`crate::maps::CONFIG`] and read once per packet.

use bytemuck::{Pod, Zeroable};

/// Idle timeouts in seconds, per protocol and state. Defaults follow nf_conntrack's sysctls
/// (`net.netfilter.nf_conntrack_*_timeout*`); see the README for the table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Timeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent` (120 s): the origin's SYN awaits a SYN-ACK.
    pub tcp_syn_sent: u32,
    /// `nf_conntrack_tcp_timeout_established` (432000 s = 5 days).
    pub tcp_established: u32,
    /// `nf_conntrack_tcp_timeout_fin_wait` / `time_wait` (120 s): a FIN was seen.
    pub tcp_closing: u32,
    /// `nf_conntrack_tcp_timeout_close` (10 s): a RST was seen.
    pub tcp_closed: u32,
    /// `nf_conntrack_udp_timeout` (30 s): no reply seen yet.
    pub udp_unreplied: u32,
    /// `nf_conntrack_udp_timeout_stream` (120 s): replies seen.
    pub udp_replied: u32,
    /// `nf_conntrack_icmp_timeout` / `icmpv6_timeout` (30 s).
    pub icmp: u32,
    /// Fragment verdicts live this long (s); the kernel's `ipfrag_time` is 30 s.
    pub fragment: u32,
}

impl Timeouts {
    /// nf_conntrack's defaults.
    pub const DEFAULT: Self = Self {
        tcp_syn_sent: 120,
        tcp_established: 432_000,
        tcp_closing: 120,
        tcp_closed: 10,
        udp_unreplied: 30,
        udp_replied: 120,
        icmp: 30,
        fragment: 30,
    };
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Count what would be dropped, but pass everything.
pub const FLAG_MONITOR: u32 = 1 << 0;
/// Pass DHCPv4 (udp 67 → 68) and DHCPv6 (547 → 546) replies.
pub const FLAG_PASS_DHCP: u32 = 1 << 1;
/// Pass IPv6 router advertisements (ICMPv6 134).
pub const FLAG_PASS_RA: u32 = 1 << 2;

/// The one entry of [`crate::maps::CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    pub timeouts: Timeouts,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The interface the programs are attached to (written by the loader, for `status`).
    pub ifindex: u32,
    /// `ATTACH_*`: how the XDP program is attached (written by the loader, for `status`).
    pub attach_mode: u32,
}

/// Native (driver) XDP.
pub const ATTACH_NATIVE: u32 = 1;
/// Generic (skb) XDP.
pub const ATTACH_SKB: u32 = 2;

impl Config {
    pub const DEFAULT: Self = Self {
        timeouts: Timeouts::DEFAULT,
        flags: FLAG_PASS_DHCP | FLAG_PASS_RA,
        ifindex: 0,
        attach_mode: 0,
    };

    #[inline(always)]
    pub const fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}
