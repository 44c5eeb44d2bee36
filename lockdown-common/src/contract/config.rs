//! Runtime configuration, stored in [`crate::contract::maps::CONFIG`] and read once per packet.

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

impl Timeouts {
    /// The names `--timeout NAME=SECS` and the config file use, with nf_conntrack's sysctl for each.
    pub const NAMES: [(&'static str, &'static str); 8] = [
        ("tcp_syn_sent", "nf_conntrack_tcp_timeout_syn_sent"),
        ("tcp_established", "nf_conntrack_tcp_timeout_established"),
        ("tcp_closing", "nf_conntrack_tcp_timeout_fin_wait"),
        ("tcp_closed", "nf_conntrack_tcp_timeout_close"),
        ("udp_unreplied", "nf_conntrack_udp_timeout"),
        ("udp_replied", "nf_conntrack_udp_timeout_stream"),
        ("icmp", "nf_conntrack_icmp_timeout"),
        ("fragment", "ipfrag_time"),
    ];

    /// The field called `name`, if there is one.
    pub const fn field_mut(&mut self, name: &str) -> Option<&mut u32> {
        Some(match name.as_bytes() {
            b"tcp_syn_sent" => &mut self.tcp_syn_sent,
            b"tcp_established" => &mut self.tcp_established,
            b"tcp_closing" => &mut self.tcp_closing,
            b"tcp_closed" => &mut self.tcp_closed,
            b"udp_unreplied" => &mut self.udp_unreplied,
            b"udp_replied" => &mut self.udp_replied,
            b"icmp" => &mut self.icmp,
            b"fragment" => &mut self.fragment,
            _ => return None,
        })
    }

    /// Applies `NAME=SECS`. Timeouts must be 1 s to 2^31 s.
    pub fn set(&mut self, assignment: &str) -> Result<(), TimeoutError> {
        let (name, secs) = assignment.split_once('=').ok_or(TimeoutError::Syntax)?;
        let field = self.field_mut(name.trim()).ok_or(TimeoutError::Name)?;
        let secs = secs.trim();
        match secs.parse::<u32>() {
            Ok(v @ 1..=0x7fff_ffff) if secs.bytes().all(|b| b.is_ascii_digit()) => {
                *field = v;
                Ok(())
            }
            _ => Err(TimeoutError::Value),
        }
    }
}

/// A timeout setting that could not be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutError {
    Syntax,
    Name,
    Value,
}

impl core::fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Syntax => "expected NAME=SECONDS, e.g. tcp_established=3600",
            Self::Name => {
                "unknown timeout: expected one of tcp_syn_sent, tcp_established, tcp_closing, tcp_closed, udp_unreplied, udp_replied, icmp, fragment"
            }
            Self::Value => "timeout must be a whole number of seconds from 1 to 2147483647",
        })
    }
}

impl core::error::Error for TimeoutError {}

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
/// Write dropped-packet events: set while a `lockdown log` reader runs, so that nobody pays for
/// events nobody reads.
pub const FLAG_LOG: u32 = 1 << 3;
/// The blocklist has entries: look sources up in [`crate::contract::maps::DENY4`] / [`crate::contract::maps::DENY6`]
/// (and, with [`FLAG_DENY_NETS`], [`crate::contract::maps::DENY_NETS`]). Kept by the loader.
pub const FLAG_DENY: u32 = 1 << 4;
/// The blocklist has prefix entries (shorter than a whole address).
pub const FLAG_DENY_NETS: u32 = 1 << 5;
/// The flags that describe the maps' state rather than the policy: a new policy keeps the pinned
/// values of these.
pub const STATE_FLAGS: u32 = FLAG_LOG | FLAG_DENY | FLAG_DENY_NETS;

/// The one entry of [`crate::contract::maps::CONFIG`].
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
    /// Dropped-packet events written to the ring buffer, per CPU per second; 0 turns them off.
    /// Counters count every drop regardless.
    pub log_per_sec: u32,
}

/// Default [`Config::log_per_sec`].
pub const DEFAULT_LOG_PER_SEC: u32 = 100;

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
        log_per_sec: DEFAULT_LOG_PER_SEC,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_by_name() {
        let mut t = Timeouts::DEFAULT;
        assert_eq!(t.set("tcp_established=3600"), Ok(()));
        assert_eq!(t.tcp_established, 3600);
        assert_eq!(t.set("udp_replied = 60"), Ok(()));
        assert_eq!(t.udp_replied, 60);
        assert_eq!(t.set("tcp_bogus=1"), Err(TimeoutError::Name));
        assert_eq!(t.set("icmp=0"), Err(TimeoutError::Value));
        assert_eq!(t.set("icmp=-1"), Err(TimeoutError::Value));
        assert_eq!(t.set("icmp"), Err(TimeoutError::Syntax));
        for (name, _) in Timeouts::NAMES {
            assert!(t.field_mut(name).is_some(), "{name}");
        }
    }

    #[test]
    fn no_padding() {
        assert_eq!(size_of::<Config>(), 12 * 4);
    }
}
