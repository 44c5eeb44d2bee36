//! The parse stage: header parsing. Small cursor parsers in the style of xdp-tools' `parsing_helpers.h`:
//! each checks its own bounds and returns where the next header starts. Every loop has a fixed
//! bound. A parser never guesses: anything it cannot read is an error naming the drop reason.
//!
//! The parsers are generic over [`Packet`], so the same code runs in the eBPF programs (over
//! `data..data_end`) and on the host (over a byte slice) in the reference model.

use core::mem::MaybeUninit;

use crate::{
    contract::{
        counters::Counter,
        flow::{FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP},
    },
    packet::Packet,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags walked (802.1Q / 802.1ad); a third tag is [`Counter::DropTooDeep`].
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked; a longer chain is [`Counter::DropTooDeep`].
pub const MAX_IPV6_EXT: usize = 6;
/// Furthest offset at which lockdown reads a header; beyond it the packet is
/// [`Counter::DropTooDeep`]. This also gives the verifier a bound on every packet offset.
pub const MAX_HDR_OFF: usize = 512;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

const IPV6_NEXT_HOP_BY_HOP: u8 = 0;
const IPV6_NEXT_ROUTING: u8 = 43;
const IPV6_NEXT_FRAGMENT: u8 = 44;
const IPV6_NEXT_AH: u8 = 51;
const IPV6_NEXT_DEST_OPTS: u8 = 60;

#[inline(always)]
fn u8_at<P: Packet + ?Sized>(p: &P, off: usize) -> Result<u8, Counter> {
    p.load::<u8>(off).ok_or(Counter::DropMalformed)
}

#[inline(always)]
fn be16_at<P: Packet + ?Sized>(p: &P, off: usize) -> Result<u16, Counter> {
    p.load::<[u8; 2]>(off)
        .map(u16::from_be_bytes)
        .ok_or(Counter::DropMalformed)
}

/// Reads a whole header block at `off` with one bounds check. One check per header keeps every
/// field access on the pointer the verifier has just range-checked.
#[inline(always)]
fn block<const N: usize, P: Packet + ?Sized>(p: &P, off: usize) -> Result<[u8; N], Counter> {
    p.load::<[u8; N]>(off).ok_or(Counter::DropMalformed)
}

#[inline(always)]
const fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
const fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Whether a datagram is whole or which fragment this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    #[default]
    Whole,
    /// Offset 0 with more fragments: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

/// An IPv4 or IPv6 header, reduced to what lockdown decides on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ip {
    pub family: u8,
    /// The L4 protocol, after any IPv6 extension headers.
    pub proto: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Where the L4 header starts.
    pub l4_off: usize,
    pub frag: Frag,
    /// Fragment identification (IPv4 16-bit, IPv6 32-bit); 0 when whole.
    pub frag_id: u32,
    /// The protocol that names the datagram in the fragment table: IPv4's protocol, or the IPv6
    /// Fragment header's Next Header, which every fragment of a datagram carries alike (the L4
    /// protocol may sit behind further extension headers that only the first fragment has).
    pub frag_proto: u8,
}

/// The L4 fields lockdown decides on. Ports are host byte order; for ICMP, `sport` holds the
/// echo identifier.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub seq: u32,
    pub ack: u32,
}

/// Ethernet plus up to [`MAX_VLAN_TAGS`] VLAN tags: returns (ethertype, L3 offset).
#[inline(always)]
pub fn ethernet<P: Packet + ?Sized>(p: &P) -> Result<(u16, usize), Counter> {
    let mut off = ETH_HLEN;
    let mut proto = be16_at(p, 12)?;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            return Ok((proto, off));
        }
        proto = be16_at(p, off + 2)?;
        off += 4;
    }
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        return Err(Counter::DropTooDeep);
    }
    Ok((proto, off))
}

/// An IPv4 address as lockdown stores it: the first 4 of 16 bytes. Built from words: a zeroed
/// byte array would be a `memset` call (a byte loop) in BPF.
#[inline(always)]
pub fn v4_addr(a: [u8; 4]) -> [u8; 16] {
    bytemuck::cast([u32::from_ne_bytes(a), 0u32, 0, 0])
}

/// IPv4 at `off` into `ip`, honouring IHL (options are skipped, not interpreted).
#[inline(always)]
fn ipv4<P: Packet + ?Sized>(p: &P, off: usize, out: &mut MaybeUninit<Ip>) -> Result<(), Counter> {
    if off > MAX_HDR_OFF {
        return Err(Counter::DropTooDeep);
    }
    // One block for the whole fixed header: a second bounds check for the addresses would look
    // redundant to LLVM (IHL ≥ 20) and be dropped, which the verifier rejects.
    let h: [u8; 20] = block(p, off)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < 20 || usize::from(be16(&h, 2)) < ihl {
        return Err(Counter::DropMalformed);
    }
    let id = be16(&h, 4);
    let frag_field = be16(&h, 6);
    let proto = h[9];
    // The whole header, options included, must be present.
    u8_at(p, off + ihl - 1)?;
    let frag = if frag_field & 0x1fff != 0 {
        Frag::Later
    } else if frag_field & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::Whole
    };
    out.write(Ip {
        family: FAMILY_V4,
        proto,
        l4_off: off + ihl,
        frag,
        frag_id: if frag == Frag::Whole {
            0
        } else {
            u32::from(id)
        },
        frag_proto: proto,
        src: v4_addr([h[12], h[13], h[14], h[15]]),
        dst: v4_addr([h[16], h[17], h[18], h[19]]),
    });
    Ok(())
}

/// IPv6 at `off` into `ip`, walking at most [`MAX_IPV6_EXT`] extension headers.
#[inline(always)]
fn ipv6<P: Packet + ?Sized>(p: &P, off: usize, out: &mut MaybeUninit<Ip>) -> Result<(), Counter> {
    if off > MAX_HDR_OFF {
        return Err(Counter::DropTooDeep);
    }
    let h: [u8; 8] = block(p, off)?;
    if h[0] >> 4 != 6 {
        return Err(Counter::DropMalformed);
    }
    let mut next = h[6];
    // Written whole once, then refined in place.
    let ip = out.write(Ip {
        family: FAMILY_V6,
        proto: next,
        src: block(p, off + 8)?,
        dst: block(p, off + 24)?,
        l4_off: off + 40,
        frag: Frag::Whole,
        frag_id: 0,
        frag_proto: 0,
    });
    let mut cur = off + 40;
    for _ in 0..MAX_IPV6_EXT {
        if cur > MAX_HDR_OFF {
            return Err(Counter::DropTooDeep);
        }
        if !matches!(
            next,
            IPV6_NEXT_HOP_BY_HOP
                | IPV6_NEXT_ROUTING
                | IPV6_NEXT_DEST_OPTS
                | IPV6_NEXT_AH
                | IPV6_NEXT_FRAGMENT
        ) {
            ip.proto = next;
            ip.l4_off = cur;
            return Ok(());
        }
        // Every extension header is at least 8 bytes.
        let e: [u8; 8] = block(p, cur)?;
        let len = match next {
            IPV6_NEXT_AH => (usize::from(e[1]) + 2) * 4,
            IPV6_NEXT_FRAGMENT => {
                let field = be16(&e, 2);
                let id = be32(&e, 4);
                // An atomic fragment (offset 0, no more fragments) is a whole datagram.
                if field & 0xfff8 != 0 {
                    ip.frag = Frag::Later;
                    ip.frag_id = id;
                    ip.frag_proto = e[0];
                } else if field & 1 != 0 {
                    ip.frag = Frag::First;
                    ip.frag_id = id;
                    ip.frag_proto = e[0];
                }
                8
            }
            _ => (usize::from(e[1]) + 1) * 8,
        };
        next = e[0];
        // The whole extension header must be present.
        u8_at(p, cur + len - 1)?;
        cur += len;
        if ip.frag == Frag::Later {
            // No further headers are guaranteed in a non-first fragment.
            ip.proto = next;
            ip.l4_off = cur;
            return Ok(());
        }
    }
    match next {
        IPV6_NEXT_HOP_BY_HOP | IPV6_NEXT_ROUTING | IPV6_NEXT_DEST_OPTS | IPV6_NEXT_AH
        | IPV6_NEXT_FRAGMENT => Err(Counter::DropTooDeep),
        _ => {
            ip.proto = next;
            ip.l4_off = cur;
            Ok(())
        }
    }
}

/// IPv4 or IPv6 at `off`, by ethertype, parsed into `slot`; `Ok(None)` for any other ethertype.
/// The caller's slot is used in place: not zeroed first (zeroing is a `memset` call, a byte loop,
/// in BPF) and not copied out (48 bytes).
#[inline(always)]
pub fn ip<'a, P: Packet + ?Sized>(
    p: &P,
    ethertype: u16,
    off: usize,
    slot: &'a mut MaybeUninit<Ip>,
) -> Result<Option<&'a Ip>, Counter> {
    if ip_into(p, ethertype, off, slot)? {
        // SAFETY: `ip_into` returned `Ok(true)`, so it wrote the whole of `slot`.
        Ok(Some(unsafe { slot.assume_init_ref() }))
    } else {
        Ok(None)
    }
}

/// [`ip`] into `out`: `Ok(true)` when it parsed an IP header and wrote all of `out`. Not
/// inlined: in the kernel it is one BPF subprogram, shared by the entry points and the parse of
/// the header an ICMP error quotes, which keeps every call chain within the 512-byte stack.
#[inline(never)]
pub fn ip_into<P: Packet + ?Sized>(
    p: &P,
    ethertype: u16,
    off: usize,
    out: &mut MaybeUninit<Ip>,
) -> Result<bool, Counter> {
    match ethertype {
        ETH_P_IP => ipv4(p, off, out)?,
        ETH_P_IPV6 => ipv6(p, off, out)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// The L4 header of TCP, UDP, ICMP and ICMPv6. Other protocols give a zeroed [`L4`].
#[inline(always)]
pub fn l4<P: Packet + ?Sized>(p: &P, ip: &Ip) -> Result<L4, Counter> {
    let off = ip.l4_off;
    if off > MAX_HDR_OFF {
        return Err(Counter::DropTooDeep);
    }
    let mut l4 = L4::default();
    match ip.proto {
        PROTO_TCP => {
            let h: [u8; 20] = block(p, off)?;
            // The data offset must cover at least the fixed header.
            if h[12] >> 4 < 5 {
                return Err(Counter::DropMalformed);
            }
            l4.sport = be16(&h, 0);
            l4.dport = be16(&h, 2);
            l4.seq = be32(&h, 4);
            l4.ack = be32(&h, 8);
            l4.tcp_flags = h[13];
        }
        PROTO_UDP => {
            let h: [u8; 8] = block(p, off)?;
            l4.sport = be16(&h, 0);
            l4.dport = be16(&h, 2);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let h: [u8; 8] = block(p, off)?;
            l4.icmp_type = h[0];
            l4.icmp_code = h[1];
            l4.sport = be16(&h, 4);
        }
        _ => {}
    }
    Ok(l4)
}

/// The ports (or echo id) of a header quoted inside an ICMP error: only the first 8 bytes of the
/// original L4 header are guaranteed to be quoted.
#[inline(always)]
pub fn quoted_l4<P: Packet + ?Sized>(p: &P, ip: &Ip) -> Result<L4, Counter> {
    let off = ip.l4_off;
    if off > MAX_HDR_OFF {
        return Err(Counter::DropTooDeep);
    }
    let h: [u8; 8] = block(p, off)?;
    let mut l4 = L4::default();
    match ip.proto {
        PROTO_TCP | PROTO_UDP => {
            l4.sport = be16(&h, 0);
            l4.dport = be16(&h, 2);
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            l4.icmp_type = h[0];
            l4.icmp_code = h[1];
            l4.sport = be16(&h, 4);
        }
        _ => {}
    }
    Ok(l4)
}

/// The IP header and, if it parsed, the L4 header of a captured packet's first bytes (a
/// [`crate::contract::events::DropEvent`]'s), parsed as the datapath parses them.
pub fn headers(bytes: &[u8]) -> Option<(Ip, Option<L4>)> {
    let (ethertype, off) = ethernet(bytes).ok()?;
    let mut slot = MaybeUninit::uninit();
    let ip = ip(bytes, ethertype, off, &mut slot).ok()??;
    let l4 = match ip.frag {
        Frag::Later => None,
        _ => l4(bytes, ip).ok(),
    };
    Some((*ip, l4))
}
