//! The conntrack stage: flow keys, and the state transitions as pure functions (the map
//! reads and writes happen in [`crate::verdict`]), so every transition is unit-tested on the host.

pub mod table;

use crate::{
    contract::flow::{FlowKey, FlowState},
    stages::parse::{Ip, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// The key of an egress packet: the origin is the source.
#[inline(always)]
pub const fn egress_key(ip: &Ip, l4: &L4) -> FlowKey {
    FlowKey {
        local: ip.src,
        remote: ip.dst,
        local_port: l4.sport,
        remote_port: l4.dport,
        proto: ip.proto,
        family: ip.family,
        _pad: 0,
    }
}

/// The key of an ingress packet: the origin is the destination.
#[inline(always)]
pub const fn ingress_key(ip: &Ip, l4: &L4) -> FlowKey {
    FlowKey {
        local: ip.dst,
        remote: ip.src,
        local_port: l4.dport,
        remote_port: l4.sport,
        proto: ip.proto,
        family: ip.family,
        _pad: 0,
    }
}

/// The key of an ICMP echo flow: the identifier stands in for the local port.
#[inline(always)]
pub const fn echo_key(local: [u8; 16], remote: [u8; 16], id: u16, ip: &Ip) -> FlowKey {
    FlowKey {
        local,
        remote,
        local_port: id,
        remote_port: 0,
        proto: ip.proto,
        family: ip.family,
        _pad: 0,
    }
}

#[inline(always)]
const fn is_syn_only(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
}

/// Whether an inbound TCP segment asks to open a connection (SYN without ACK or RST).
#[inline(always)]
pub const fn tcp_is_new(flags: u8) -> bool {
    is_syn_only(flags)
}

/// An inbound segment on a tracked flow: the new state, or `None` if the segment does not fit
/// (a SYN-ACK or RST that does not acknowledge the origin's SYN, or data before the handshake).
#[inline(always)]
pub const fn tcp_ingress(
    state: FlowState,
    flags: u8,
    ack: u32,
    origin_seq: u32,
) -> Option<FlowState> {
    let acks_syn = flags & TCP_ACK != 0 && ack == origin_seq.wrapping_add(1);
    match state {
        FlowState::TcpSynSent => {
            if flags & TCP_RST != 0 {
                if acks_syn {
                    Some(FlowState::TcpClosed)
                } else {
                    None
                }
            } else if flags & TCP_SYN != 0 && acks_syn {
                Some(FlowState::TcpEstablished)
            } else {
                None
            }
        }
        FlowState::TcpEstablished => Some(if flags & TCP_RST != 0 {
            FlowState::TcpClosed
        } else if flags & TCP_FIN != 0 {
            FlowState::TcpClosing
        } else {
            FlowState::TcpEstablished
        }),
        FlowState::TcpClosing => Some(if flags & TCP_RST != 0 {
            FlowState::TcpClosed
        } else {
            FlowState::TcpClosing
        }),
        FlowState::TcpClosed => Some(FlowState::TcpClosed),
        _ => None,
    }
}

/// An outbound segment: the flow's new state, or `None` to leave the table alone.
///
/// With no live entry, only two kinds of segment create one: the origin's SYN (an outbound
/// connection) and the origin's first ACK-bearing, non-SYN, non-RST segment (a connection past its
/// handshake that the allowlist no longer vouches for, e.g. accepted just before its rule was
/// removed) — closing if it carries a FIN. A SYN-ACK or a RST never creates state. (Segments from a
/// port the allowlist opens never get here: see [`crate::verdict::egress`].)
#[inline(always)]
pub const fn tcp_egress(state: Option<FlowState>, flags: u8) -> Option<FlowState> {
    let rst = flags & TCP_RST != 0;
    match state {
        None => {
            if is_syn_only(flags) {
                Some(FlowState::TcpSynSent)
            } else if rst || flags & TCP_SYN != 0 || flags & TCP_ACK == 0 {
                None
            } else if flags & TCP_FIN != 0 {
                Some(FlowState::TcpClosing)
            } else {
                Some(FlowState::TcpEstablished)
            }
        }
        Some(FlowState::TcpSynSent) => Some(if rst {
            FlowState::TcpClosed
        } else {
            FlowState::TcpSynSent
        }),
        Some(FlowState::TcpEstablished) => Some(if rst {
            FlowState::TcpClosed
        } else if flags & TCP_FIN != 0 {
            FlowState::TcpClosing
        } else {
            FlowState::TcpEstablished
        }),
        Some(FlowState::TcpClosing) | Some(FlowState::TcpClosed) => Some(if is_syn_only(flags) {
            // The 4-tuple is being reused for a new connection.
            FlowState::TcpSynSent
        } else if rst {
            FlowState::TcpClosed
        } else {
            match state {
                Some(s) => s,
                None => FlowState::TcpClosed,
            }
        }),
        Some(_) => None,
    }
}

/// An inbound datagram on a tracked UDP flow: a reply promotes it to the longer timeout.
#[inline(always)]
pub const fn udp_ingress(state: FlowState) -> FlowState {
    match state {
        FlowState::UdpUnreplied | FlowState::UdpReplied => FlowState::UdpReplied,
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::flow::FlowState::*;

    const SA: u8 = TCP_SYN | TCP_ACK;

    #[test]
    fn syn_ack_must_acknowledge_the_origins_syn() {
        assert_eq!(
            tcp_ingress(TcpSynSent, SA, 1001, 1000),
            Some(TcpEstablished)
        );
        assert_eq!(tcp_ingress(TcpSynSent, SA, 1000, 1000), None);
        assert_eq!(
            tcp_ingress(TcpSynSent, SA, 0, u32::MAX),
            Some(TcpEstablished)
        );
        assert_eq!(tcp_ingress(TcpSynSent, TCP_ACK, 1001, 1000), None);
        assert_eq!(
            tcp_ingress(TcpSynSent, TCP_RST | TCP_ACK, 1001, 1000),
            Some(TcpClosed)
        );
        assert_eq!(tcp_ingress(TcpSynSent, TCP_RST, 0, 1000), None);
        assert_eq!(tcp_ingress(TcpSynSent, TCP_SYN, 0, 1000), None);
    }

    #[test]
    fn fin_and_rst_shorten_the_entry() {
        assert_eq!(
            tcp_ingress(TcpEstablished, TCP_ACK, 0, 0),
            Some(TcpEstablished)
        );
        assert_eq!(
            tcp_ingress(TcpEstablished, TCP_FIN | TCP_ACK, 0, 0),
            Some(TcpClosing)
        );
        assert_eq!(tcp_ingress(TcpEstablished, TCP_RST, 0, 0), Some(TcpClosed));
        assert_eq!(tcp_ingress(TcpClosing, TCP_ACK, 0, 0), Some(TcpClosing));
        assert_eq!(tcp_ingress(TcpClosing, TCP_RST, 0, 0), Some(TcpClosed));
        assert_eq!(
            tcp_egress(Some(TcpEstablished), TCP_FIN | TCP_ACK),
            Some(TcpClosing)
        );
        assert_eq!(tcp_egress(Some(TcpEstablished), TCP_RST), Some(TcpClosed));
        assert_eq!(tcp_ingress(UdpReplied, TCP_ACK, 0, 0), None);
    }

    #[test]
    fn only_the_origins_syn_or_post_handshake_segment_creates_state() {
        assert_eq!(tcp_egress(None, TCP_SYN), Some(TcpSynSent));
        assert_eq!(tcp_egress(None, SA), None, "SYN-ACK to a spoofed SYN");
        assert_eq!(tcp_egress(None, TCP_RST), None, "RST to a spoofed ACK");
        assert_eq!(tcp_egress(None, TCP_RST | TCP_ACK), None);
        assert_eq!(tcp_egress(None, TCP_FIN), None);
        assert_eq!(tcp_egress(None, TCP_ACK), Some(TcpEstablished));
        assert_eq!(
            tcp_egress(None, TCP_ACK | TCP_FIN),
            Some(TcpClosing),
            "a closing connection takes no live slot"
        );
        assert_eq!(tcp_egress(Some(TcpClosed), TCP_SYN), Some(TcpSynSent));
        assert_eq!(tcp_egress(Some(TcpClosed), TCP_ACK), Some(TcpClosed));
        assert_eq!(tcp_egress(Some(TcpSynSent), TCP_RST), Some(TcpClosed));
        assert_eq!(tcp_egress(Some(UdpReplied), TCP_SYN), None);
    }

    #[test]
    fn new_means_syn_without_ack_or_rst() {
        assert!(tcp_is_new(TCP_SYN));
        assert!(tcp_is_new(TCP_SYN | TCP_FIN));
        assert!(!tcp_is_new(SA));
        assert!(!tcp_is_new(TCP_SYN | TCP_RST));
        assert!(!tcp_is_new(TCP_ACK));
    }

    #[test]
    fn udp_reply_promotes() {
        assert_eq!(udp_ingress(UdpUnreplied), UdpReplied);
        assert_eq!(udp_ingress(UdpReplied), UdpReplied);
    }
}
