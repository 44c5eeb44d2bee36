//! Packets for BPF_PROG_TEST_RUN and raw sockets: the verdict tests, the differential test and
//! the bench's program-cost runs build every frame they send with [`Pkt`].
//!
//! One builder, [`Pkt`], describes an Ethernet frame: VLAN tags, an IPv4 or IPv6 header (family
//! chosen by the addresses), IPv4 options or IPv6 extension headers, fragmentation, and a TCP,
//! UDP, ICMP/ICMPv6 or other L4 header. [`Pkt::bytes`] serialises it with etherparse's
//! [`PacketBuilder`] (Ethernet II, up to two VLAN tags, IP, L4, checksums) and splices in by hand
//! what etherparse cannot express: a third VLAN tag, IPv6 extension chains of any length and order,
//! and a bad IHL. Truncations are plain `Vec::truncate` on the result; [`Pkt::l3_off`] and
//! [`Pkt::l4_off`] say where to cut.
//!
//! ```
//! use std::net::Ipv4Addr;
//! use lockdown_testbed::packets::{Pkt, TCP_ACK, TCP_SYN};
//! let (local, remote, router) = (
//!     Ipv4Addr::new(192, 0, 2, 1),
//!     Ipv4Addr::new(198, 51, 100, 7),
//!     Ipv4Addr::new(203, 0, 113, 1),
//! );
//! let syn = Pkt::tcp(remote, local, 40000, 22, TCP_SYN).seq(1000).vlan(7).bytes();
//! assert_eq!(&syn[12..14], &[0x81, 0x00], "802.1Q tag");
//! let inner = Pkt::tcp(local, remote, 40000, 443, TCP_ACK);
//! let err = Pkt::frag_needed(router, local, 1400, &inner).bytes();
//! assert!(err.len() > 14 + 20 + 8 + inner.quote().len() - 1);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, DoubleVlanHeader, EtherType, IpFragOffset, IpHeaders,
    IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, PacketBuilderStep, SingleVlanHeader, TcpHeader, VlanHeader, VlanId, VlanPcp,
};
pub use lockdown_common::stages::parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

pub const TCP_PSH: u8 = 0x08;
pub const TCP_URG: u8 = 0x20;
pub const TCP_SYN_ACK: u8 = TCP_SYN | TCP_ACK;

pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_8021Q: u16 = 0x8100;
pub const ETHERTYPE_8021AD: u16 = 0x88a8;
pub const ETHERTYPE_LLDP: u16 = 0x88cc;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ICMPV6: u8 = 58;

pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_AH: u8 = 51;
pub const EXT_DEST_OPTS: u8 = 60;

/// The L4 part of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        /// `TCP_*` bits (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR).
        flags: u8,
        seq: u32,
        ack: u32,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (IPv4) or ICMPv6 (IPv6), by the packet's family. `rest` is bytes 4..8 of the header
    /// (echo id and sequence, the MTU of a frag-needed / packet-too-big, or zero).
    Icmp {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Any IP protocol number; `header` is written verbatim before the payload.
    Raw {
        proto: u8,
        header: Vec<u8>,
    },
}

impl L4 {
    /// The IP protocol number of this L4 header in a packet of the given family.
    pub fn proto(&self, v6: bool) -> u8 {
        match self {
            Self::Tcp { .. } => PROTO_TCP,
            Self::Udp { .. } => PROTO_UDP,
            Self::Icmp { .. } if v6 => PROTO_ICMPV6,
            Self::Icmp { .. } => PROTO_ICMP,
            Self::Raw { proto, .. } => *proto,
        }
    }

    /// Serialised length of the header (without payload).
    pub fn header_len(&self) -> usize {
        match self {
            Self::Tcp { .. } => 20,
            Self::Udp { .. } | Self::Icmp { .. } => 8,
            Self::Raw { header, .. } => header.len(),
        }
    }
}

/// One IPv6 extension header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options: `(units + 1) * 8` bytes of PadN.
    HopByHop { units: u8 },
    /// Routing header (type 4, segments left 0): `(units + 1) * 8` bytes.
    Routing { units: u8 },
    /// Destination options: `(units + 1) * 8` bytes of PadN.
    DestOpts { units: u8 },
    /// Authentication header: `(units + 2) * 4` bytes.
    Ah { units: u8 },
    /// Fragment header; `offset` in 8-byte units.
    Fragment { offset: u16, more: bool, id: u32 },
}

impl Ext {
    pub const HOP_BY_HOP: Self = Self::HopByHop { units: 0 };
    pub const ROUTING: Self = Self::Routing { units: 0 };
    pub const DEST_OPTS: Self = Self::DestOpts { units: 0 };
    pub const AH: Self = Self::Ah { units: 2 };

    /// The "next header" number that announces this header.
    pub const fn kind(&self) -> u8 {
        match self {
            Self::HopByHop { .. } => EXT_HOP_BY_HOP,
            Self::Routing { .. } => EXT_ROUTING,
            Self::DestOpts { .. } => EXT_DEST_OPTS,
            Self::Ah { .. } => EXT_AH,
            Self::Fragment { .. } => EXT_FRAGMENT,
        }
    }

    pub fn len(&self) -> usize {
        match *self {
            Self::HopByHop { units } | Self::Routing { units } | Self::DestOpts { units } => {
                (usize::from(units) + 1) * 8
            }
            Self::Ah { units } => (usize::from(units) + 2) * 4,
            Self::Fragment { .. } => 8,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header's bytes, announcing `next` as the header after it.
    pub fn encode(&self, next: u8) -> Vec<u8> {
        let len = self.len();
        let mut b = vec![0u8; len];
        b[0] = next;
        match *self {
            Self::HopByHop { units } | Self::DestOpts { units } => {
                b[1] = units;
                // One PadN option covering the rest of the header.
                b[2] = 1;
                b[3] = (len - 4) as u8;
            }
            Self::Routing { units } => {
                b[1] = units;
                b[2] = 4; // segment routing header
                b[3] = 0; // segments left
            }
            Self::Ah { units } => {
                b[1] = units;
                b[4..8].copy_from_slice(&0x1000u32.to_be_bytes()); // SPI
                b[8..12].copy_from_slice(&1u32.to_be_bytes()); // sequence
            }
            Self::Fragment { offset, more, id } => {
                let field = (offset << 3) | u16::from(more);
                b[2..4].copy_from_slice(&field.to_be_bytes());
                b[4..8].copy_from_slice(&id.to_be_bytes());
            }
        }
        b
    }

    /// A chain of `n` options headers, cycling hop-by-hop, destination options and routing.
    pub fn chain(n: usize) -> Vec<Self> {
        (0..n)
            .map(|i| match i % 3 {
                0 => Self::HOP_BY_HOP,
                1 => Self::DEST_OPTS,
                _ => Self::ROUTING,
            })
            .collect()
    }
}

/// Fragmentation of the datagram (IPv4 flags/offset, or an IPv6 fragment header appended to
/// the extension chain).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fragment {
    #[default]
    Whole,
    /// Offset 0, more fragments: carries the L4 header.
    First { id: u32 },
    /// Offset > 0 (8-byte units): carries only data, no L4 header.
    Later { id: u32, offset: u16, more: bool },
}

/// An Ethernet frame carrying an IP packet, to be serialised by [`Pkt::bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkt {
    /// VLAN ids, outermost first. One tag is 802.1Q; with two, the outer is 802.1ad; a third or
    /// further tag is 802.1Q again.
    pub vlans: Vec<u16>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub ttl: u8,
    /// IPv4 options (padded to a multiple of 4 bytes, at most 40).
    pub ipv4_options: Vec<u8>,
    /// IPv6 extension headers, in order, before any fragment header from [`Pkt::frag`].
    pub ipv6_ext: Vec<Ext>,
    pub frag: Fragment,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// Overwrites the IPv4 IHL nibble after serialisation.
    pub ihl: Option<u8>,
    /// TCP options, raw (a multiple of 4 bytes, at most 40).
    pub tcp_options: Vec<u8>,
}

/// The options of a Linux SYN: MSS 1460, SACK-permitted, timestamps (TSval 0x01020304), NOP,
/// window scale 7.
pub const LINUX_SYN_OPTIONS: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
];

/// The ACK a client sends for the SYN-ACK `synack` (a frame as an origin sent it, untagged IPv4
/// or IPv6): addresses and ports turned round, seq = its ack, ack = its seq + 1 (`ack_delta` added,
/// to forge), and if the SYN-ACK carried timestamps, NOP, NOP, timestamps echoing them.
pub fn ack_for(synack: &[u8], ack_delta: u32) -> Vec<u8> {
    let sliced = etherparse::SlicedPacket::from_ethernet(synack).expect("a SYN-ACK frame");
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("no TCP in {}", hex(synack));
    };
    let (src, dst): (IpAddr, IpAddr) = match sliced.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => (
            ip.header().destination_addr().into(),
            ip.header().source_addr().into(),
        ),
        Some(etherparse::NetSlice::Ipv6(ip)) => (
            ip.header().destination_addr().into(),
            ip.header().source_addr().into(),
        ),
        _ => panic!("no IP in {}", hex(synack)),
    };
    let tsval = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::Timestamp(v, _)) => Some(v),
        _ => None,
    });
    let mut p = Pkt::tcp(src, dst, tcp.destination_port(), tcp.source_port(), TCP_ACK)
        .seq(tcp.acknowledgment_number())
        .ack(
            tcp.sequence_number()
                .wrapping_add(1)
                .wrapping_add(ack_delta),
        );
    if let Some(v) = tsval {
        let mut o = vec![1, 1, 8, 10, 0, 0, 0, 9];
        o.extend_from_slice(&v.to_be_bytes());
        p = p.tcp_options(&o);
    }
    p.bytes()
}

/// "Experimental" protocol number: written by etherparse, replaced by the real one.
const PLACEHOLDER_PROTO: u8 = 253;

/// The internet checksum (RFC 1071) of `data` (its checksum field zero): IPv4 headers, ICMPv4.
pub fn ipv4_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4-mapped bytes of an address as lockdown stores it: IPv4 in the first 4 bytes, zero-padded.
pub fn addr16(a: IpAddr) -> [u8; 16] {
    lockdown_common::contract::flow::addr_bytes(a).1
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (whitespace ignored), as printed by [`hex`].
pub fn from_hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    digits
        .chunks(2)
        .map(|c| {
            let s = std::str::from_utf8(c).expect("hex is ASCII");
            u8::from_str_radix(s, 16).unwrap_or_else(|_| panic!("bad hex byte {s:?}"))
        })
        .collect()
}

impl Pkt {
    fn new(src: IpAddr, dst: IpAddr, l4: L4) -> Self {
        assert_eq!(
            src.is_ipv4(),
            dst.is_ipv4(),
            "source {src} and destination {dst} are of different families"
        );
        Self {
            vlans: Vec::new(),
            src,
            dst,
            ttl: 64,
            ipv4_options: Vec::new(),
            ipv6_ext: Vec::new(),
            frag: Fragment::Whole,
            l4,
            payload: Vec::new(),
            ihl: None,
            tcp_options: Vec::new(),
        }
    }

    /// Sets the TCP options (raw bytes, a multiple of 4, at most 40).
    pub fn tcp_options(mut self, bytes: &[u8]) -> Self {
        self.tcp_options = bytes.to_vec();
        self
    }

    /// A TCP segment with `TCP_*` `flags`, seq 1000 and ack 0.
    pub fn tcp(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        sport: u16,
        dport: u16,
        flags: u8,
    ) -> Self {
        Self::new(
            src.into(),
            dst.into(),
            L4::Tcp {
                sport,
                dport,
                flags,
                seq: 1000,
                ack: 0,
            },
        )
    }

    pub fn udp(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, sport: u16, dport: u16) -> Self {
        Self::new(src.into(), dst.into(), L4::Udp { sport, dport })
    }

    /// A DHCP reply from `server` to `client`: udp 67 → 68 (IPv4) or 547 → 546 (IPv6).
    pub fn dhcp_reply(server: impl Into<IpAddr>, client: impl Into<IpAddr>) -> Self {
        let server = server.into();
        let (sport, dport) = if server.is_ipv4() {
            (67, 68)
        } else {
            (547, 546)
        };
        Self::udp(server, client, sport, dport).payload(&[2, 1, 6, 0])
    }

    /// An ICMP (IPv4) or ICMPv6 (IPv6) message of any type.
    pub fn icmp(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        ty: u8,
        code: u8,
        rest: [u8; 4],
    ) -> Self {
        Self::new(src.into(), dst.into(), L4::Icmp { ty, code, rest })
    }

    fn echo(src: IpAddr, dst: IpAddr, v4_type: u8, v6_type: u8, id: u16, seq: u16) -> Self {
        let ty = if src.is_ipv4() { v4_type } else { v6_type };
        let [a, b] = id.to_be_bytes();
        let [c, d] = seq.to_be_bytes();
        Self::icmp(src, dst, ty, 0, [a, b, c, d]).payload(b"lockdown")
    }

    /// ICMP echo request (type 8) or ICMPv6 echo request (128).
    pub fn echo_request(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, id: u16, seq: u16) -> Self {
        Self::echo(src.into(), dst.into(), 8, 128, id, seq)
    }

    /// ICMP echo reply (type 0) or ICMPv6 echo reply (129).
    pub fn echo_reply(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, id: u16, seq: u16) -> Self {
        Self::echo(src.into(), dst.into(), 0, 129, id, seq)
    }

    /// IPv6 neighbour discovery: 133 router solicitation, 134 router advertisement, 135 neighbour
    /// solicitation, 136 neighbour advertisement, 137 redirect. The body is a target address.
    pub fn ndp(src: Ipv6Addr, dst: Ipv6Addr, ty: u8) -> Self {
        Self::icmp(src, dst, ty, 0, [0; 4]).payload(&dst.octets())
    }

    /// An ICMP error quoting `inner` (its IP header and first 8 bytes of L4).
    pub fn icmp_error(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        ty: u8,
        code: u8,
        rest: [u8; 4],
        inner: &Self,
    ) -> Self {
        let src = src.into();
        assert_eq!(
            src.is_ipv4(),
            inner.src.is_ipv4(),
            "an ICMP error quotes a packet of its own family"
        );
        Self::icmp(src, dst, ty, code, rest).payload(&inner.quote())
    }

    /// "Fragmentation needed" (ICMP 3/4) or "packet too big" (ICMPv6 2/0) with `mtu`.
    pub fn frag_needed(
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        mtu: u16,
        inner: &Self,
    ) -> Self {
        let src = src.into();
        if src.is_ipv4() {
            let [a, b] = mtu.to_be_bytes();
            Self::icmp_error(src, dst, 3, 4, [0, 0, a, b], inner)
        } else {
            Self::icmp_error(src, dst, 2, 0, u32::from(mtu).to_be_bytes(), inner)
        }
    }

    /// "Time exceeded in transit": ICMP 11/0 or ICMPv6 3/0.
    pub fn time_exceeded(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, inner: &Self) -> Self {
        let src = src.into();
        let ty = if src.is_ipv4() { 11 } else { 3 };
        Self::icmp_error(src, dst, ty, 0, [0; 4], inner)
    }

    /// "Port unreachable": ICMP 3/3 or ICMPv6 1/4.
    pub fn port_unreachable(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, inner: &Self) -> Self {
        let src = src.into();
        let (ty, code) = if src.is_ipv4() { (3, 3) } else { (1, 4) };
        Self::icmp_error(src, dst, ty, code, [0; 4], inner)
    }

    /// A packet of any IP protocol, with `header` as its (opaque) L4 header.
    pub fn proto(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8, header: &[u8]) -> Self {
        Self::new(
            src.into(),
            dst.into(),
            L4::Raw {
                proto,
                header: header.to_vec(),
            },
        )
    }

    // Modifiers.

    pub fn seq(mut self, n: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp { seq, .. } => *seq = n,
            other => panic!("seq() on a non-TCP packet: {other:?}"),
        }
        self
    }

    /// Sets the acknowledgment number (the ACK flag is part of the flags).
    pub fn ack(mut self, n: u32) -> Self {
        match &mut self.l4 {
            L4::Tcp { ack, .. } => *ack = n,
            other => panic!("ack() on a non-TCP packet: {other:?}"),
        }
        self
    }

    pub fn payload(mut self, bytes: &[u8]) -> Self {
        self.payload = bytes.to_vec();
        self
    }

    /// Adds a VLAN tag inside those already present.
    pub fn vlan(mut self, vid: u16) -> Self {
        self.vlans.push(vid);
        self
    }

    pub fn vlans(mut self, vids: &[u16]) -> Self {
        self.vlans = vids.to_vec();
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// IPv4 options (IHL > 5). `bytes` is padded with end-of-options to a multiple of 4.
    pub fn ipv4_options(mut self, bytes: &[u8]) -> Self {
        assert!(self.is_v4(), "IPv4 options on an IPv6 packet");
        let mut b = bytes.to_vec();
        while !b.len().is_multiple_of(4) {
            b.push(0);
        }
        assert!(b.len() <= 40, "at most 40 bytes of IPv4 options");
        self.ipv4_options = b;
        self
    }

    /// Appends one IPv6 extension header.
    pub fn ext(mut self, ext: Ext) -> Self {
        assert!(!self.is_v4(), "IPv6 extension header on an IPv4 packet");
        self.ipv6_ext.push(ext);
        self
    }

    /// Appends a chain of `n` options headers (see [`Ext::chain`]).
    pub fn ext_chain(mut self, n: usize) -> Self {
        assert!(!self.is_v4(), "IPv6 extension headers on an IPv4 packet");
        self.ipv6_ext.extend(Ext::chain(n));
        self
    }

    /// The first fragment (offset 0, more fragments) of datagram `id`.
    pub fn first_fragment(mut self, id: u32) -> Self {
        self.frag = Fragment::First { id };
        self
    }

    /// A later fragment (offset `offset` × 8 bytes) of datagram `id`, the last one. It carries
    /// the payload only: no L4 header.
    pub fn later_fragment(mut self, id: u32, offset: u16) -> Self {
        assert!(offset > 0, "a later fragment has a non-zero offset");
        self.frag = Fragment::Later {
            id,
            offset,
            more: false,
        };
        if self.payload.is_empty() {
            self.payload = vec![0xab; 16];
        }
        self
    }

    /// Overwrites the IHL field (IPv4) after serialisation.
    pub fn ihl(mut self, ihl: u8) -> Self {
        assert!(self.is_v4(), "IHL on an IPv6 packet");
        self.ihl = Some(ihl);
        self
    }

    // Serialisation.

    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// The IPv6 extension headers as serialised, the fragment header from [`Pkt::frag`] last.
    fn ipv6_chain(&self) -> Vec<Ext> {
        let mut exts = self.ipv6_ext.clone();
        match self.frag {
            Fragment::Whole => {}
            Fragment::First { id } => exts.push(Ext::Fragment {
                offset: 0,
                more: true,
                id,
            }),
            Fragment::Later { id, offset, more } => exts.push(Ext::Fragment { offset, more, id }),
        }
        exts
    }

    /// Offset of the IP header in the frame.
    pub fn l3_off(&self) -> usize {
        14 + 4 * self.vlans.len()
    }

    /// Length of the IP header including options or extension headers.
    pub fn l3_len(&self) -> usize {
        if self.is_v4() {
            20 + self.ipv4_options.len()
        } else {
            40 + self.ipv6_chain().iter().map(Ext::len).sum::<usize>()
        }
    }

    /// Offset of the L4 header (or of a later fragment's data) in the frame.
    pub fn l4_off(&self) -> usize {
        self.l3_off() + self.l3_len()
    }

    /// The IP headers for etherparse; IPv6 extensions are spliced in afterwards.
    fn ip_headers(&self) -> IpHeaders {
        let proto = IpNumber(self.l4.proto(!self.is_v4()));
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = Ipv4Header::new(0, self.ttl, proto, s.octets(), d.octets())
                    .expect("an empty payload fits");
                h.identification = 0x1234;
                h.dont_fragment = self.frag == Fragment::Whole;
                match self.frag {
                    Fragment::Whole => {}
                    Fragment::First { id } => {
                        h.identification = id as u16;
                        h.more_fragments = true;
                    }
                    Fragment::Later { id, offset, more } => {
                        h.identification = id as u16;
                        h.more_fragments = more;
                        h.fragment_offset =
                            IpFragOffset::try_new(offset).expect("fragment offset fits in 13 bits");
                    }
                }
                h.options = Ipv4Options::try_from(&self.ipv4_options[..])
                    .expect("IPv4 options are a multiple of 4 bytes, at most 40");
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: self.ttl,
                    source: s.octets(),
                    destination: d.octets(),
                },
                Ipv6Extensions::default(),
            ),
            _ => unreachable!("families checked in Pkt::new"),
        }
    }

    /// Writes the L4 header and payload through etherparse.
    /// `l3` is where the IP header starts in `out`.
    fn write_l4(&self, step: PacketBuilderStep<IpHeaders>, out: &mut Vec<u8>, l3: usize) {
        let v6 = !self.is_v4();
        // etherparse takes a protocol number that names an IPv6 extension header (or IPv4's AH)
        // as a request to write that header; such numbers are written as a placeholder and
        // patched in afterwards.
        let proto = self.l4.proto(v6);
        let result = if matches!(self.frag, Fragment::Later { .. }) {
            // Data only: the L4 header was in the first fragment.
            step.write(out, IpNumber(PLACEHOLDER_PROTO), &self.payload)
        } else {
            match &self.l4 {
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                } => {
                    let mut h = TcpHeader::new(*sport, *dport, *seq, 64_240);
                    h.acknowledgment_number = *ack;
                    h.fin = flags & 0x01 != 0;
                    h.syn = flags & 0x02 != 0;
                    h.rst = flags & 0x04 != 0;
                    h.psh = flags & 0x08 != 0;
                    h.ack = flags & 0x10 != 0;
                    h.urg = flags & 0x20 != 0;
                    h.ece = flags & 0x40 != 0;
                    h.cwr = flags & 0x80 != 0;
                    h.set_options_raw(&self.tcp_options)
                        .expect("TCP options: a multiple of 4 bytes, at most 40");
                    step.tcp_header(h).write(out, &self.payload)
                }
                L4::Udp { sport, dport } => step.udp(*sport, *dport).write(out, &self.payload),
                L4::Icmp { ty, code, rest } if v6 => {
                    step.icmpv6_raw(*ty, *code, *rest).write(out, &self.payload)
                }
                L4::Icmp { ty, code, rest } => {
                    step.icmpv4_raw(*ty, *code, *rest).write(out, &self.payload)
                }
                L4::Raw { header, .. } => {
                    let mut body = header.clone();
                    body.extend_from_slice(&self.payload);
                    step.write(out, IpNumber(PLACEHOLDER_PROTO), &body)
                }
            }
        };
        result.unwrap_or_else(|e| panic!("etherparse cannot build {self:?}: {e}"));
        if v6 {
            out[l3 + 6] = proto;
        } else {
            out[l3 + 9] = proto;
            let ihl = usize::from(out[l3] & 0x0f) * 4;
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let sum = ipv4_checksum(&out[l3..l3 + ihl]);
            out[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// Splices the IPv6 extension chain in after the fixed header at `l3` in `out`.
    fn splice_ipv6_chain(&self, out: &mut Vec<u8>, l3: usize) {
        let chain = self.ipv6_chain();
        if chain.is_empty() {
            return;
        }
        let upper = out[l3 + 6];
        let mut bytes = Vec::new();
        for (i, e) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(upper, Ext::kind);
            bytes.extend(e.encode(next));
        }
        out[l3 + 6] = chain[0].kind();
        let plen = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) as usize + bytes.len();
        let plen = u16::try_from(plen).expect("IPv6 payload fits in 16 bits");
        out[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        // The upper-layer checksum covers neither the extension headers nor their length.
        out.splice(l3 + 40..l3 + 40, bytes);
    }

    /// The IP packet (no Ethernet header).
    pub fn l3_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_l4(PacketBuilder::ip(self.ip_headers()), &mut out, 0);
        if !self.is_v4() {
            self.splice_ipv6_chain(&mut out, 0);
        }
        if let Some(ihl) = self.ihl {
            out[0] = (out[0] & 0xf0) | (ihl & 0x0f);
        }
        out
    }

    /// What an ICMP error quotes of this packet: its IP header(s) and the first 8 bytes of L4.
    pub fn quote(&self) -> Vec<u8> {
        let mut b = self.l3_bytes();
        b.truncate(self.l3_len() + 8);
        b
    }

    /// The whole Ethernet frame.
    pub fn bytes(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_SRC, MAC_DST);
        let tag = |vid: u16| VlanId::try_new(vid).expect("VLAN id fits in 12 bits");
        let single = |vid: u16| SingleVlanHeader {
            pcp: VlanPcp::ZERO,
            drop_eligible_indicator: false,
            vlan_id: tag(vid),
            ether_type: EtherType(0), // set by etherparse
        };
        // etherparse writes at most two tags: the innermost two. Further outer tags are
        // spliced in front afterwards.
        let extra = self.vlans.len().saturating_sub(2);
        let inner = &self.vlans[extra..];
        let step = match *inner {
            [] => eth.ip(self.ip_headers()),
            [v] => eth
                .vlan(VlanHeader::Single(single(v)))
                .ip(self.ip_headers()),
            [outer, inner] => eth
                .vlan(VlanHeader::Double(DoubleVlanHeader {
                    outer: single(outer),
                    inner: single(inner),
                }))
                .ip(self.ip_headers()),
            _ => unreachable!(),
        };
        let mut out = Vec::new();
        self.write_l4(step, &mut out, 14 + 4 * inner.len());
        let mut extra_tags = Vec::new();
        for &vid in &self.vlans[..extra] {
            extra_tags.extend(ETHERTYPE_8021Q.to_be_bytes());
            extra_tags.extend(tag(vid).value().to_be_bytes());
        }
        out.splice(12..12, extra_tags);
        let l3 = self.l3_off();
        if !self.is_v4() {
            self.splice_ipv6_chain(&mut out, l3);
        }
        if let Some(ihl) = self.ihl {
            out[l3] = (out[l3] & 0xf0) | (ihl & 0x0f);
        }
        out
    }
}

/// An Ethernet frame of any ethertype (after `vlans`), e.g. LLDP.
pub fn raw_frame(vlans: &[u16], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(MAC_DST);
    out.extend(MAC_SRC);
    for (i, &vid) in vlans.iter().enumerate() {
        let tpid = if i == 0 && vlans.len() == 2 {
            ETHERTYPE_8021AD
        } else {
            ETHERTYPE_8021Q
        };
        out.extend(tpid.to_be_bytes());
        out.extend(vid.to_be_bytes());
    }
    out.extend(ethertype.to_be_bytes());
    out.extend(body);
    out
}

/// An ARP request "who has `target`, tell `sender`", through etherparse.
pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_SRC,
        &sender.octets(),
        &[0; 6],
        &target.octets(),
    )
    .expect("valid ARP addresses");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_SRC, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .expect("ARP serialises");
    out
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const A6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const B6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    #[test]
    fn tcp_round_trips_through_etherparse() {
        let b = Pkt::tcp(A, B, 1234, 22, TCP_SYN | TCP_ACK)
            .seq(7)
            .ack(9)
            .vlans(&[5, 6])
            .bytes();
        assert_eq!(&b[12..14], &ETHERTYPE_8021AD.to_be_bytes());
        assert_eq!(&b[16..18], &ETHERTYPE_8021Q.to_be_bytes());
        let s = SlicedPacket::from_ethernet(&b).expect("parses");
        let Some(TransportSlice::Tcp(t)) = s.transport else {
            panic!("no TCP")
        };
        assert_eq!((t.source_port(), t.destination_port()), (1234, 22));
        assert!(t.syn() && t.ack());
        assert_eq!((t.sequence_number(), t.acknowledgment_number()), (7, 9));
    }

    #[test]
    fn offsets_match_the_bytes() {
        let p = Pkt::udp(A6, B6, 1, 2)
            .ext_chain(3)
            .first_fragment(77)
            .vlans(&[1, 2, 3]);
        let b = p.bytes();
        assert_eq!(p.l3_off(), 26);
        assert_eq!(p.l4_off(), 26 + 40 + 24 + 8);
        assert_eq!(b[p.l3_off()] >> 4, 6);
        assert_eq!(&b[12..14], &ETHERTYPE_8021Q.to_be_bytes());
        assert_eq!(&b[16..18], &ETHERTYPE_8021AD.to_be_bytes());
        assert_eq!(b.len(), p.l4_off() + 8);
        let s = SlicedPacket::from_ethernet(&b[..]).expect("parses");
        let Some(NetSlice::Ipv6(ip)) = s.net else {
            panic!("no IPv6")
        };
        assert_eq!(ip.extensions().slice().len(), 32);
        let p4 = Pkt::tcp(A, B, 1, 2, TCP_SYN).ipv4_options(&[1, 1, 1]);
        let b4 = p4.bytes();
        assert_eq!(b4[14], 0x46);
        assert_eq!(p4.l4_off(), 14 + 24);
        assert_eq!(
            u16::from_be_bytes([b4[p4.l4_off() + 2], b4[p4.l4_off() + 3]]),
            2
        );
    }

    #[test]
    fn icmp_errors_quote_the_inner_header() {
        let inner = Pkt::tcp(A, B, 40000, 443, TCP_ACK);
        let b = Pkt::frag_needed(B, A, 1400, &inner).bytes();
        assert_eq!(b.len(), 14 + 20 + 8 + 20 + 8);
        assert_eq!(&b[14 + 20..14 + 24], &[3, 4, b[36], b[37]]);
        assert_eq!(&b[14 + 20 + 6..14 + 28], &1400u16.to_be_bytes());
        assert_eq!(&b[14 + 28 + 12..14 + 28 + 16], &A.octets());
        let inner6 = Pkt::udp(A6, B6, 5353, 53).ext_chain(1);
        let b6 = Pkt::frag_needed(B6, A6, 1280, &inner6).bytes();
        assert_eq!(b6.len(), 14 + 40 + 8 + 40 + 8 + 8);
        assert_eq!(b6[54], 2);
    }

    #[test]
    fn later_fragments_carry_no_l4_header() {
        let p = Pkt::tcp(A, B, 1, 2, TCP_SYN)
            .later_fragment(9, 3)
            .payload(&[1, 2, 3]);
        let b = p.bytes();
        assert_eq!(b.len(), 14 + 20 + 3);
        assert_eq!(u16::from_be_bytes([b[20], b[21]]), 3);
        assert_eq!(b[23], PROTO_TCP);
        let p6 = Pkt::tcp(A6, B6, 1, 2, TCP_SYN)
            .later_fragment(9, 3)
            .payload(&[1, 2, 3]);
        let b6 = p6.bytes();
        assert_eq!(b6.len(), 14 + 40 + 8 + 3);
        assert_eq!((b6[20], b6[54]), (EXT_FRAGMENT, PROTO_TCP));
    }

    #[test]
    fn any_protocol_number() {
        for proto in [0u8, 43, 44, 51, 60, 47, 255] {
            let b = Pkt::proto(A, B, proto, &[1, 2, 3, 4]).bytes();
            assert_eq!(b[23], proto);
            let s = SlicedPacket::from_ethernet(&b);
            assert!(
                proto == 51 || s.is_ok_and(|s| matches!(s.net, Some(NetSlice::Ipv4(_)))),
                "IPv4 header checksum for {proto}"
            );
            let h = Ipv4Header::from_slice(&b[14..]).expect("IPv4").0;
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            let b6 = Pkt::proto(A6, B6, proto, &[1, 2, 3, 4])
                .vlans(&[1, 2, 3])
                .bytes();
            assert_eq!(b6[14 + 12 + 6], proto);
        }
    }

    #[test]
    fn arp_and_hex() {
        let b = arp_request(A, B);
        assert_eq!(&b[12..14], &ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(from_hex(&hex(&b)), b);
    }
}
