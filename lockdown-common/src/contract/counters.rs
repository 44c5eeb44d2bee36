//! Counter indices of [`crate::contract::maps::COUNTERS`]. Each ingress packet is counted exactly once, under
//! the reason for its verdict; the egress program counts under the `Egress*` indices.

use bytemuck::{Pod, Zeroable};

/// Packets and bytes for one reason, per CPU; the loader sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CounterValue {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $kind:ident; )*) => {
        /// Why a packet got its verdict. The discriminant is the index in the counters map.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $( $(#[$doc])* $variant, )*
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// Stable name used in `status --json`, metrics and logs.
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)* }
            }

            /// Whether this reason passes, drops, or is an egress statistic.
            pub const fn kind(self) -> CounterKind {
                match self { $(Self::$variant => CounterKind::$kind,)* }
            }
        }
    };
}

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterKind {
    Pass,
    Drop,
    Egress,
    Log,
    /// Flow-table health.
    Table,
    /// Answered by lockdown itself (`XDP_TX`): neither passed up nor dropped.
    Answer,
}

counters! {
    /// Not IPv4/IPv6 (ARP, LLDP, …).
    PassNonIp = "pass_non_ip", Pass;
    /// IPv6 neighbour discovery (ICMPv6 133, 135, 136, 137).
    PassNdp = "pass_ndp", Pass;
    /// IPv6 multicast listener discovery (ICMPv6 130, 131, 132, 143).
    PassMld = "pass_mld", Pass;
    /// IPv6 router advertisement (ICMPv6 134).
    PassRa = "pass_router_advert", Pass;
    /// DHCPv4 / DHCPv6 reply to the origin's client.
    PassDhcp = "pass_dhcp", Pass;
    /// Packet of a tracked flow.
    PassEstablished = "pass_established", Pass;
    /// ICMP error quoting a tracked flow.
    PassRelated = "pass_related", Pass;
    /// To a port in the allowlist.
    PassAllowed = "pass_allowed_port", Pass;
    /// Non-first fragment of a datagram whose first fragment passed.
    PassFragment = "pass_fragment", Pass;
    /// New inbound packet that no rule allows.
    DropNew = "drop_new", Drop;
    /// TCP packet that does not fit its flow's state (e.g. a forged SYN-ACK).
    DropInvalid = "drop_invalid", Drop;
    /// Truncated or malformed header (bad IHL, short TCP/UDP/ICMP header, …).
    DropMalformed = "drop_malformed", Drop;
    /// More VLAN tags or IPv6 extension headers than lockdown walks.
    DropTooDeep = "drop_too_deep", Drop;
    /// Fragment whose datagram was dropped or whose first fragment was not seen.
    DropFragment = "drop_fragment", Drop;
    /// ICMP error quoting a flow this origin does not track.
    DropUnrelatedIcmp = "drop_unrelated_icmp", Drop;
    /// An IP protocol lockdown does not track (not TCP, UDP, ICMP or ICMPv6).
    DropProtocol = "drop_unsupported_protocol", Drop;
    /// Egress packets seen by the TC program.
    EgressPackets = "egress_packets", Egress;
    /// Flow entries created by the egress program.
    EgressFlowsCreated = "egress_flows_created", Egress;
    /// Dropped-packet events written to the ring buffer.
    LogEvents = "log_events", Log;
    /// Dropped-packet events not written: over the per-CPU rate limit, or the ring was full.
    LogSuppressed = "log_suppressed", Log;
    /// Flow entries the datapath could not write (the kernel refused the insert). An LRU table
    /// that is full evicts its least recently used entry instead; see the tables' high-water marks.
    FlowInsertFailed = "flow_insert_failed", Table;
    /// The source is on the blocklist (`lockdown deny`).
    DropDenied = "drop_denied", Drop;
    /// A new connection beyond its source's rate (`allow add … --rate`).
    DropRateLimited = "drop_rate_limited", Drop;
    /// A SYN to a port under a SYN flood, answered from XDP with a SYN cookie (`XDP_TX`); nothing
    /// was stored and the kernel never saw it.
    SynCookieSent = "syn_cookie_sent", Answer;
    /// The handshake's ACK with a valid SYN cookie, within its source's rate: handed to the
    /// listener (the TC hand-off builds the connection).
    PassCookieAck = "pass_syn_cookie_ack", Pass;
    /// An ACK to a port under cookies that belongs to no connection and carries no valid cookie
    /// (forged, expired, or signed by a retired key).
    DropCookieInvalid = "drop_syn_cookie_invalid", Drop;
    /// An ACK to a port under cookies with no socket at all behind the port (nothing listens).
    DropCookieNoListener = "drop_syn_cookie_no_listener", Drop;
    /// A SYN to a port under cookies that lockdown cannot answer in place (IPv4 options, IPv6
    /// extension headers, a VLAN tag): the kernel's own handshake answers it, its rate charged
    /// at the SYN as without cookies.
    PassSynToKernel = "pass_syn_to_kernel", Pass;
}

impl Counter {
    /// Number of counters; the size of the counters map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Looks a counter up by index.
    pub fn from_index(index: u32) -> Option<Self> {
        Self::ALL.get(index as usize).copied()
    }

    pub const fn is_drop(self) -> bool {
        matches!(self.kind(), CounterKind::Drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_names_unique() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} is out of order");
            assert_eq!(Counter::from_index(i as u32), Some(*c));
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
        assert_eq!(Counter::from_index(Counter::COUNT), None);
    }
}
