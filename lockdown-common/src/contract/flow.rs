//! Flow-table and fragment-table layouts.
//!
//! A flow key is oriented from the origin's side: `local` is the origin's address and port,
//! `remote` the peer's. The egress program builds it from (src, dst) and the ingress program from
//! (dst, src), so both directions of a connection find the same entry with one lookup.
//!
//! Flows live in four maps: a [`FlowTable::Live`] and a [`FlowTable::Closing`] table per address
//! family. IPv4 tables are keyed by the 16-byte [`FlowKey4`] (a hit costs less than with the
//! 40-byte [`FlowKey`], which keys the IPv6 tables). A flow's state decides its table
//! ([`FlowState::table`]): a closing or closed flow can only push out other closing flows, never a
//! live one.

use core::net::IpAddr;

use bytemuck::{Pod, Zeroable};

use crate::contract::config::Timeouts;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// An address as lockdown stores it (IPv4 in the first 4 of 16 bytes), back as an [`IpAddr`].
pub fn ip_addr(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == FAMILY_V4 {
        let [a, b, c, d, ..] = *bytes;
        IpAddr::from([a, b, c, d])
    } else {
        IpAddr::from(*bytes)
    }
}

/// An address as lockdown stores it: (family, 16 bytes with IPv4 in the first 4).
pub fn addr_bytes(addr: IpAddr) -> (u8, [u8; 16]) {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, b)
        }
        IpAddr::V6(a) => (FAMILY_V6, a.octets()),
    }
}

/// Flow key: 40 bytes, no padding. IPv4 addresses use the first 4 bytes of each address and
/// leave the rest zero. For ICMP echo, `local_port` is the echo identifier and `remote_port` 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct FlowKey {
    pub local: [u8; 16],
    pub remote: [u8; 16],
    /// Host byte order.
    pub local_port: u16,
    /// Host byte order.
    pub remote_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// The IPv4 flow key: [`FlowKey`] without the unused 24 address bytes and the family. 16 bytes,
/// no padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct FlowKey4 {
    pub local: [u8; 4],
    pub remote: [u8; 4],
    /// Host byte order.
    pub local_port: u16,
    /// Host byte order.
    pub remote_port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u16,
}

impl FlowKey {
    /// The IPv4 tables' key for this key (meaningful when `family` is [`FAMILY_V4`]).
    #[inline(always)]
    pub const fn v4(&self) -> FlowKey4 {
        let (l, r) = (&self.local, &self.remote);
        FlowKey4 {
            local: [l[0], l[1], l[2], l[3]],
            remote: [r[0], r[1], r[2], r[3]],
            local_port: self.local_port,
            remote_port: self.remote_port,
            proto: self.proto,
            _pad: 0,
            _pad2: 0,
        }
    }
}

impl FlowKey4 {
    /// The family-independent key this IPv4 key stands for.
    pub const fn widen(&self) -> FlowKey {
        let mut local = [0u8; 16];
        let mut remote = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            local[i] = self.local[i];
            remote[i] = self.remote[i];
            i += 1;
        }
        FlowKey {
            local,
            remote,
            local_port: self.local_port,
            remote_port: self.remote_port,
            proto: self.proto,
            family: FAMILY_V4,
            _pad: 0,
        }
    }
}

/// Which of a family's two flow tables an entry lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowTable {
    /// Flows that may carry traffic for a long time: SYN sent, established, UDP, ICMP echo.
    Live,
    /// TCP flows that saw a FIN or a RST; their LRU evicts only each other.
    Closing,
}

impl FlowTable {
    pub const ALL: [Self; 2] = [Self::Live, Self::Closing];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Closing => "closing",
        }
    }
}

/// State of a tracked flow.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// The origin sent a SYN; only a SYN-ACK (or RST) acknowledging it may come in.
    TcpSynSent = 1,
    TcpEstablished = 2,
    /// A FIN was seen in either direction.
    TcpClosing = 3,
    /// A RST was seen in either direction.
    TcpClosed = 4,
    /// The origin sent a datagram; no reply seen yet.
    UdpUnreplied = 5,
    /// Replies seen.
    UdpReplied = 6,
    /// The origin sent an echo request.
    IcmpEcho = 7,
}

impl FlowState {
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::TcpSynSent,
            2 => Self::TcpEstablished,
            3 => Self::TcpClosing,
            4 => Self::TcpClosed,
            5 => Self::UdpUnreplied,
            6 => Self::UdpReplied,
            7 => Self::IcmpEcho,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::TcpSynSent => "syn_sent",
            Self::TcpEstablished => "established",
            Self::TcpClosing => "closing",
            Self::TcpClosed => "closed",
            Self::UdpUnreplied => "unreplied",
            Self::UdpReplied => "replied",
            Self::IcmpEcho => "echo",
        }
    }

    /// The table a flow in this state lives in.
    #[inline(always)]
    pub const fn table(self) -> FlowTable {
        match self {
            Self::TcpClosing | Self::TcpClosed => FlowTable::Closing,
            _ => FlowTable::Live,
        }
    }

    /// Idle timeout of this state, in seconds.
    #[inline(always)]
    pub const fn timeout_secs(self, t: &Timeouts) -> u32 {
        match self {
            Self::TcpSynSent => t.tcp_syn_sent,
            Self::TcpEstablished => t.tcp_established,
            Self::TcpClosing => t.tcp_closing,
            Self::TcpClosed => t.tcp_closed,
            Self::UdpUnreplied => t.udp_unreplied,
            Self::UdpReplied => t.udp_replied,
            Self::IcmpEcho => t.icmp,
        }
    }
}

/// Flow value: 24 bytes, no padding. Times are `CLOCK_MONOTONIC_COARSE`
/// nanoseconds (`bpf_ktime_get_coarse_ns`; tick resolution, ample for idle timeouts in seconds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowValue {
    pub created_ns: u64,
    pub last_seen_ns: u64,
    /// The origin's initial sequence number (TCP SYN_SENT), to check the SYN-ACK.
    pub origin_seq: u32,
    /// [`FlowState`] as `u8`.
    pub state: u8,
    /// `FLOW_FLAG_*` bits.
    pub flags: u8,
    pub _pad: u16,
}

/// The entry was seeded by the loader from an existing socket.
pub const FLOW_FLAG_SEEDED: u8 = 1 << 0;

impl FlowValue {
    pub const fn new(state: FlowState, now: u64, origin_seq: u32) -> Self {
        Self {
            created_ns: now,
            last_seen_ns: now,
            origin_seq,
            state: state as u8,
            flags: 0,
            _pad: 0,
        }
    }

    #[inline(always)]
    pub const fn state(&self) -> Option<FlowState> {
        FlowState::from_u8(self.state)
    }

    /// The value as three words, to compare word by word.
    #[inline(always)]
    pub fn words(&self) -> [u64; 3] {
        bytemuck::cast(*self)
    }

    /// The table this entry belongs in (by its state; an invalid state counts as live).
    #[inline(always)]
    pub const fn table(&self) -> FlowTable {
        match self.state() {
            Some(s) => s.table(),
            None => FlowTable::Live,
        }
    }

    /// Whether the entry is still alive at `now`: its state is valid and it has been idle for no
    /// longer than the state's timeout. An expired entry is treated as absent.
    #[inline(always)]
    pub fn is_live(&self, now: u64, t: &Timeouts) -> bool {
        match self.state() {
            Some(state) => {
                let idle = now.saturating_sub(self.last_seen_ns);
                idle <= u64::from(state.timeout_secs(t)) * 1_000_000_000
            }
            None => false,
        }
    }
}

/// Fragment key: the datagram a fragment belongs to, as seen on the wire (src, dst, id, proto).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4: the 16-bit identification; IPv6: the 32-bit fragment identification.
    pub id: u32,
    pub proto: u8,
    pub family: u8,
    pub _pad: u16,
}

/// Fragment verdict: the first fragment passed at `first_seen_ns` under `reason`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragValue {
    pub first_seen_ns: u64,
    pub reason: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_fit_the_budget() {
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowKey4>(), 16);
        assert_eq!(size_of::<FlowValue>(), 24);
        assert!(size_of::<FlowKey>() + size_of::<FlowValue>() <= 64);
        assert_eq!(size_of::<FragKey>(), 40);
    }

    #[test]
    fn liveness_follows_state_timeouts() {
        let t = Timeouts::DEFAULT;
        let v = FlowValue::new(FlowState::TcpClosed, 0, 0);
        assert!(v.is_live(10_000_000_000, &t));
        assert!(!v.is_live(10_000_000_001, &t));
        let v = FlowValue::new(FlowState::TcpEstablished, 0, 0);
        assert!(v.is_live(432_000 * 1_000_000_000, &t));
        let mut bogus = v;
        bogus.state = 99;
        assert!(!bogus.is_live(0, &t));
    }

    #[test]
    fn addresses_round_trip() {
        for a in ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"] {
            let ip: IpAddr = a.parse().unwrap();
            let (family, bytes) = addr_bytes(ip);
            assert_eq!(ip_addr(family, &bytes), ip, "{a}");
        }
        assert_eq!(addr_bytes("10.1.2.3".parse().unwrap()).1[4..], [0; 12]);
    }

    #[test]
    fn v4_keys_round_trip() {
        let (_, local) = addr_bytes("192.0.2.1".parse().unwrap());
        let (_, remote) = addr_bytes("198.51.100.7".parse().unwrap());
        let k = FlowKey {
            local,
            remote,
            local_port: 50000,
            remote_port: 443,
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: 0,
        };
        assert_eq!(k.v4().widen(), k);
        assert_eq!(k.v4().local, [192, 0, 2, 1]);
    }

    #[test]
    fn only_closing_states_use_the_closing_table() {
        for s in (1..=7).filter_map(FlowState::from_u8) {
            let closing = matches!(s, FlowState::TcpClosing | FlowState::TcpClosed);
            assert_eq!(s.table() == FlowTable::Closing, closing, "{s:?}");
        }
    }

    #[test]
    fn states_round_trip() {
        for s in 1..=7 {
            assert_eq!(FlowState::from_u8(s).map(|s| s as u8), Some(s));
        }
        assert_eq!(FlowState::from_u8(0), None);
        assert_eq!(FlowState::from_u8(8), None);
    }
}
