//! Frames for the program-cost runs (BPF_PROG_TEST_RUN only: these addresses never reach a
//! network). Built with etherparse, so every header and checksum is valid unless a case cuts it.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{Icmpv4Type, PacketBuilder, VlanId, icmpv4::DestUnreachableHeader};

/// The origin (where lockdown would be attached), as the programs see it.
pub const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The remote peer (documentation range).
pub const REMOTE4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// A router on the path that sends ICMP errors.
pub const ROUTER4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const LOCAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

const MAC_LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_REMOTE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// A TCP segment as the L2 frame of one direction.
#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    pub inbound: bool,
    pub v6: bool,
    pub local_port: u16,
    pub remote_port: u16,
    pub flags: u8,
    pub vlan: Option<u16>,
}

impl Tcp {
    /// An inbound segment from `REMOTE:remote_port` to `LOCAL:local_port`.
    pub const fn inbound(remote_port: u16, local_port: u16, flags: u8) -> Self {
        Self {
            inbound: true,
            v6: false,
            local_port,
            remote_port,
            flags,
            vlan: None,
        }
    }

    /// An outbound segment from `LOCAL:local_port` to `REMOTE:remote_port`.
    pub const fn outbound(local_port: u16, remote_port: u16, flags: u8) -> Self {
        Self {
            inbound: false,
            ..Self::inbound(remote_port, local_port, flags)
        }
    }

    pub const fn v6(self) -> Self {
        Self { v6: true, ..self }
    }

    pub const fn vlan(self, vid: u16) -> Self {
        Self {
            vlan: Some(vid),
            ..self
        }
    }

    /// The frame's bytes.
    pub fn frame(&self) -> Vec<u8> {
        let (smac, dmac) = if self.inbound {
            (MAC_REMOTE, MAC_LOCAL)
        } else {
            (MAC_LOCAL, MAC_REMOTE)
        };
        let (sport, dport) = if self.inbound {
            (self.remote_port, self.local_port)
        } else {
            (self.local_port, self.remote_port)
        };
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let ip = match (self.vlan, self.v6) {
            (Some(vid), v6) => {
                let tagged = eth.single_vlan(VlanId::try_new(vid).expect("VLAN id below 4096"));
                if v6 {
                    let (s, d) = self.v6_addrs();
                    tagged.ipv6(s, d, 64)
                } else {
                    let (s, d) = self.v4_addrs();
                    tagged.ipv4(s, d, 64)
                }
            }
            (None, true) => {
                let (s, d) = self.v6_addrs();
                eth.ipv6(s, d, 64)
            }
            (None, false) => {
                let (s, d) = self.v4_addrs();
                eth.ipv4(s, d, 64)
            }
        };
        let mut tcp = ip.tcp(sport, dport, 1_000, 64_240);
        if self.flags & TCP_SYN != 0 {
            tcp = tcp.syn();
        }
        if self.flags & TCP_ACK != 0 {
            tcp = tcp.ack(5_001);
        }
        let mut out = Vec::with_capacity(tcp.size(0));
        tcp.write(&mut out, &[]).expect("serialising a TCP frame");
        out
    }

    fn v4_addrs(&self) -> ([u8; 4], [u8; 4]) {
        if self.inbound {
            (REMOTE4.octets(), LOCAL4.octets())
        } else {
            (LOCAL4.octets(), REMOTE4.octets())
        }
    }

    fn v6_addrs(&self) -> ([u8; 16], [u8; 16]) {
        if self.inbound {
            (REMOTE6.octets(), LOCAL6.octets())
        } else {
            (LOCAL6.octets(), REMOTE6.octets())
        }
    }
}

/// An inbound UDP datagram from `REMOTE:remote_port` to `LOCAL:local_port` with 32 bytes of data.
pub fn udp_inbound(remote_port: u16, local_port: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_REMOTE, MAC_LOCAL)
        .ipv4(REMOTE4.octets(), LOCAL4.octets(), 64)
        .udp(remote_port, local_port);
    let payload = [0x5a; 32];
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload)
        .expect("serialising a UDP frame");
    out
}

/// An ICMP "fragmentation needed" from `ROUTER4` to `LOCAL4` quoting `inner` (an outbound IPv4
/// frame: its IP header and the first 8 bytes of its L4 header, as RFC 792 asks).
pub fn frag_needed(inner_frame: &[u8], mtu: u16) -> Vec<u8> {
    let ip = &inner_frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let quote = &ip[..(ihl + 8).min(ip.len())];
    let b = PacketBuilder::ethernet2(MAC_REMOTE, MAC_LOCAL)
        .ipv4(ROUTER4.octets(), LOCAL4.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ));
    let mut out = Vec::with_capacity(b.size(quote.len()));
    b.write(&mut out, quote).expect("serialising an ICMP error");
    out
}

/// `frame` cut `keep` bytes into its L4 header (Ethernet + 20-byte IPv4 header + `keep`).
pub fn truncated_l4(frame: &[u8], keep: usize) -> Vec<u8> {
    frame[..14 + 20 + keep].to_vec()
}
