//! The SYN-cookie stage: while a SYN flood is on an allowed TCP port, SYNs are answered here, in
//! place, with a SYN-ACK carrying a cookie ([`cookie`]), so the flood costs about what a drop
//! costs and stores nothing; the handshake's ACK is checked here and a valid one goes to the
//! listener with its options as XDP metadata (the TC hand-off gives it to
//! `bpf_sk_assign_tcp_reqsk`). A rated port's per-source rate is charged at that ACK, so a
//! spoofed SYN can never spend a real source's rate.
//!
//! Two steps, as the kernel runs them:
//! - [`triage`], inside the verdict, for a TCP segment the allowlist lets through: counts SYNs
//!   in the port's flood detector and says whether the segment is the cookie stage's
//!   ([`Counter::SynCookieSent`]: a SYN to answer; [`Counter::PassCookieAck`]: an ACK to check);
//! - [`stage`], on such a segment: the answer or the check. In the kernel it is a program of its
//!   own (`lockdown_cookie`) that the ingress program tail-calls, so the verifier checks it apart
//!   from the rest of the decision.
//!
//! Only the plain shape is answered in place ([`plain`]: untagged Ethernet, IPv4 without options
//! or IPv6 without extension headers, not a fragment). Any other SYN goes to the kernel's own
//! handshake, charged to its source's rate at the SYN as without cookies
//! ([`Counter::PassSynToKernel`]).

pub mod cookie;
pub mod options;
pub mod siphash;
pub mod synack;

use core::mem::MaybeUninit;

use self::{
    cookie::{Fields, NO_WSCALE, Tuple},
    options::MAX_OPTIONS,
    synack::Answer,
};
use crate::{
    contract::{
        allow::PORT_RATED,
        config::FLAG_MONITOR,
        counters::Counter,
        flow::{FAMILY_V4, FAMILY_V6, PROTO_TCP},
        syncookie::{HandoffMeta, META_MAGIC, MODE_OFF, ReqAttrs, window_of},
    },
    packet::{Packet, PacketMut},
    stages::{
        conntrack::tcp_is_new,
        parse::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, v4_addr},
        policy::port_flags,
        ratelimit,
    },
    tables::{Socket, Tables},
};

const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
/// The longest SYN frame answered in place (a full-size Ethernet frame with two VLAN tags).
pub const MAX_ANSWERED_FRAME: usize = 1522;

/// The MSS a SYN without the option stands for (RFC 9293).
const DEFAULT_MSS: u16 = 536;

/// A TCP segment of the plain shape: where it is and what the cookie needs of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    /// From the sender (the client) to the origin.
    pub tuple: Tuple,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Where the TCP header starts: 34 (IPv4) or 54 (IPv6).
    pub l4_off: usize,
    /// Bytes of TCP options (0 to 40, a multiple of 4).
    pub opt_len: usize,
}

/// The L4 offset of the plain shape for `family`.
#[inline(always)]
pub const fn plain_l4_off(family: u8) -> usize {
    if family == FAMILY_V4 { 34 } else { 54 }
}

/// The segment, in `out`, if `p` is TCP in the plain shape with its whole header present.
#[inline(always)]
pub fn plain<'a, P: Packet + ?Sized>(p: &P, out: &'a mut MaybeUninit<Seg>) -> Option<&'a Seg> {
    if plain_into(p, out) {
        // SAFETY: `plain_into` wrote the whole `Seg` when it returned `true`.
        Some(unsafe { out.assume_init_ref() })
    } else {
        None
    }
}

/// [`plain`]'s work: a BPF subprogram in the cookie program (its header copies stay out of the
/// stages' call chain) that writes its answer into the caller's frame (a returned `Option<Seg>`
/// would be copied there twice, and a subprogram cannot return a pointer into its caller's
/// stack).
#[inline(never)]
fn plain_into<P: Packet + ?Sized>(p: &P, out: &mut MaybeUninit<Seg>) -> bool {
    plain_seg(p).map(|seg| out.write(seg)).is_some()
}

#[inline(always)]
fn plain_seg<P: Packet + ?Sized>(p: &P) -> Option<Seg> {
    let eth: [u8; 14] = p.load(0)?;
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let (family, src, dst, l4_off) = if ethertype == ETH_P_IP {
        let ip: [u8; 20] = p.load(ETH_HLEN)?;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if ip[0] != 0x45 || ip[9] != PROTO_TCP || frag & 0x3fff != 0 {
            return None;
        }
        (
            FAMILY_V4,
            v4_addr([ip[12], ip[13], ip[14], ip[15]]),
            v4_addr([ip[16], ip[17], ip[18], ip[19]]),
            34,
        )
    } else if ethertype == ETH_P_IPV6 {
        let ip: [u8; 40] = p.load(ETH_HLEN)?;
        if ip[0] >> 4 != 6 || ip[6] != PROTO_TCP {
            return None;
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&ip[8..24]);
        dst.copy_from_slice(&ip[24..40]);
        (FAMILY_V6, src, dst, 54)
    } else {
        return None;
    };
    let tcp: [u8; 20] = p.load(l4_off)?;
    let doff = usize::from(tcp[12] >> 4);
    if doff < 5 {
        return None;
    }
    Some(Seg {
        tuple: Tuple {
            family,
            src,
            dst,
            sport: u16::from_be_bytes([tcp[0], tcp[1]]),
            dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        },
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
        flags: tcp[13],
        l4_off,
        opt_len: (doff - 5) * 4,
    })
}

/// The segment's option bytes, zeros after them; `None` if they are not all in the frame. Read as
/// five 64-bit words, each whole, half or zero by the option length (a zeroed byte array would be
/// a `memset`, and a copy of a variable length a loop).
#[inline(always)]
pub fn options<P: Packet + ?Sized>(p: &P, seg: &Seg) -> Option<[u8; MAX_OPTIONS]> {
    let at = seg.l4_off + 20;
    let len = seg.opt_len;
    if len > MAX_OPTIONS {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        Some(if 8 * i + 8 <= len {
            u64::from_le_bytes(p.load::<[u8; 8]>(at + 8 * i)?)
        } else if 8 * i + 4 == len {
            u64::from(u32::from_le_bytes(p.load::<[u8; 4]>(at + 8 * i)?))
        } else {
            0
        })
    };
    let words = [word(0)?, word(1)?, word(2)?, word(3)?, word(4)?];
    let mut o = [[0u8; 8]; 5];
    let mut i = 0;
    while i < 5 {
        o[i] = words[i].to_le_bytes();
        i += 1;
    }
    // SAFETY: five arrays of eight bytes are forty bytes, with no padding either way.
    Some(unsafe { core::mem::transmute::<[[u8; 8]; 5], [u8; MAX_OPTIONS]>(o) })
}

/// A segment with ACK set and none of SYN, FIN, RST: the handshake's last step has this shape.
#[inline(always)]
pub const fn is_ack_only(flags: u8) -> bool {
    flags & (TCP_SYN | TCP_FIN | TCP_RST) == 0 && flags & TCP_ACK != 0
}

/// Inside the verdict, for a TCP segment to `dport` that the allowlist lets through (`plain`:
/// whether it has the plain shape): counts a SYN in the port's flood detector, and says whether
/// the cookie stage takes the segment — [`Counter::SynCookieSent`] for a SYN to answer,
/// [`Counter::PassCookieAck`] for an ACK to check — or, for a SYN it cannot answer in place,
/// [`Counter::PassSynToKernel`] (the verdict then charges the rate as without cookies). `None`:
/// the verdict as without cookies (cookies off or not engaged, monitor mode, or another segment).
#[inline(always)]
pub fn triage<T: Tables + ?Sized>(
    t: &mut T,
    dport: u16,
    flags: u8,
    plain: bool,
) -> Option<Counter> {
    if !t.cookies() || t.config().flags & FLAG_MONITOR != 0 {
        return None;
    }
    let d = t.cookie_config()?.detector();
    if d.mode == MODE_OFF {
        return None;
    }
    let syn = tcp_is_new(flags);
    if !syn && !(plain && is_ack_only(flags)) {
        return None;
    }
    let window = window_of(t.now());
    let port = t.syn_port(dport)?;
    if syn {
        port.count_syn(d, window).then_some(if plain {
            Counter::SynCookieSent
        } else {
            Counter::PassSynToKernel
        })
    } else {
        port.engaged_by(d, window).then_some(Counter::PassCookieAck)
    }
}

/// The cookie stage on a segment [`triage`] gave it: the outcome, counted under its reason.
/// [`Counter::SynCookieSent`]: `p` is now the SYN-ACK, to transmit; drops are drops; anything
/// else passes.
#[inline(always)]
pub fn stage<P: PacketMut + ?Sized, T: Tables + ?Sized>(p: &mut P, t: &mut T) -> Counter {
    let mut slot = MaybeUninit::uninit();
    let Some(seg) = plain(p, &mut slot) else {
        return Counter::PassAllowed;
    };
    if tcp_is_new(seg.flags) {
        // The answer is worked out and written by two subprograms, one after the other: nested,
        // their frames would not fit the 512-byte stack.
        let Some(reply) = syn(p, t, seg) else {
            return Counter::PassSynToKernel;
        };
        if !synack::rewrite(p, seg, &reply) {
            return Counter::PassSynToKernel;
        }
        Counter::SynCookieSent
    } else if is_ack_only(seg.flags) {
        ack(p, t, seg)
    } else {
        Counter::PassAllowed
    }
}

// The SYN and ACK steps, the rewrite and the MAC are BPF subprograms in the cookie program, each
// with a frame of its own: inlined into one, their buffers exceed the 512-byte stack.

/// A SYN to a port under cookies: the SYN-ACK that answers it (`None`: it cannot be answered in
/// place).
#[inline(never)]
fn syn<P: PacketMut + ?Sized, T: Tables + ?Sized>(
    p: &P,
    t: &mut T,
    seg: &Seg,
) -> Option<synack::Reply> {
    // A frame longer than an Ethernet frame (a SYN with a large Fast Open payload; on a
    // multi-buffer driver, one spread over buffers, whose length the kernel reports as 0 here)
    // goes to the kernel's handshake.
    let len = p.frame_len();
    if len == 0 || len > MAX_ANSWERED_FRAME {
        return None;
    }
    let now = t.now();
    let c = t.cookie_config()?;
    let o = options(p, seg)?;
    let so = options::syn(&o);
    let table = if seg.tuple.family == FAMILY_V4 {
        c.mss4
    } else {
        c.mss6
    };
    let f = Fields {
        mss_idx: cookie::mss_index(&table, if so.mss == 0 { DEFAULT_MSS } else { so.mss }),
        wscale: so.wscale,
        sack: so.sack,
        ecn: seg.flags & (TCP_ECE | TCP_CWR) == TCP_ECE | TCP_CWR,
    };
    let k = cookie::make(c, &seg.tuple, seg.seq, f, now);
    Some(synack::Reply {
        opts: so,
        answer: Answer {
            cookie: k,
            mss: table[3],
            rcv_wscale: c.rcv_wscale as u8,
            // Any value serves: after the hand-off the kernel's timestamps go on from the one the
            // ACK echoes. The cookie reveals no clock and is the same for a retransmitted SYN.
            tsval: k,
            ecn: f.ecn,
        },
    })
}

/// An ACK to a port under cookies: a connection's own segment passes; the handshake's ACK with a
/// valid cookie goes to the listener with its options, charged to its source's rate; anything
/// else is dropped.
#[inline(never)]
fn ack<P: PacketMut + ?Sized, T: Tables + ?Sized>(p: &mut P, t: &mut T, seg: &Seg) -> Counter {
    let tu = &seg.tuple;
    match t.socket(tu.family, &tu.src, &tu.dst, (tu.sport, tu.dport)) {
        Socket::Connection => return Counter::PassAllowed,
        Socket::None => return Counter::DropCookieNoListener,
        Socket::Listener => {}
    }
    let now = t.now();
    let Some(c) = t.cookie_config() else {
        return Counter::PassAllowed;
    };
    let client_isn = seg.seq.wrapping_sub(1);
    let Some(f) = cookie::check(c, tu, client_isn, seg.ack.wrapping_sub(1), now) else {
        return Counter::DropCookieInvalid;
    };
    let table = if tu.family == FAMILY_V4 {
        c.mss4
    } else {
        c.mss6
    };
    let rcv_wscale = c.rcv_wscale as u8;
    if port_flags(t, PROTO_TCP, tu.dport) & PORT_RATED != 0
        && ratelimit::over_rate(t, tu.family, tu.dport, &tu.src)
    {
        return Counter::DropRateLimited;
    }
    let ts = options(p, seg).and_then(|o| options::timestamps(&o));
    let wscale_ok = f.wscale != NO_WSCALE;
    let meta = HandoffMeta {
        attrs: ReqAttrs {
            rcv_tsval: ts.map_or(0, |t| t.0),
            rcv_tsecr: ts.map_or(0, |t| t.1),
            mss: cookie::mss_at(&table, f.mss_idx),
            rcv_wscale: if wscale_ok { rcv_wscale } else { 0 },
            snd_wscale: if wscale_ok { f.wscale } else { 0 },
            ecn_ok: u8::from(f.ecn),
            wscale_ok: u8::from(wscale_ok),
            sack_ok: u8::from(f.sack),
            tstamp_ok: u8::from(ts.is_some()),
            usec_ts_ok: 0,
            reserved: [0; 3],
        },
        magic: META_MAGIC,
    };
    if p.set_meta(&meta) {
        Counter::PassCookieAck
    } else {
        // No metadata on this driver: the kernel's handshake refuses the ACK with a reset.
        Counter::PassAllowed
    }
}

#[cfg(test)]
mod tests;
