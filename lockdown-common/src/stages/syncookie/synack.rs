//! The SYN rewritten in place into its SYN-ACK: addresses and ports swapped, the cookie as the
//! sequence number, the options the SYN offered answered, both checksums computed, and the frame
//! cut after the TCP header (the SYN's payload and padding go). The answer's options are never
//! longer than the SYN's (each option answered takes no more room than the SYN's own), so the
//! frame only ever shrinks: no tailroom is needed, which a driver may not have.

use super::{Seg, cookie::NO_WSCALE, options::SynOptions};
use crate::{contract::flow::FAMILY_V4, packet::PacketMut, stages::parse::ETH_HLEN};

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
/// The SYN-ACK's window: unscaled in a SYN segment (RFC 7323), so at most 65 535.
const SYN_WINDOW: u16 = 65_535;
const TTL: u8 = 64;

/// What the rewrite writes besides what the SYN says, behind one pointer: a BPF subprogram takes
/// at most five arguments, and LLVM may pass a small struct's fields as arguments of their own.
/// (It holds no pointer to the segment: a subprogram may not store a pointer into its caller's
/// stack.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub opts: SynOptions,
    pub answer: Answer,
}

/// What the SYN-ACK says besides the addresses, taken from the SYN and the cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub cookie: u32,
    /// The origin's MSS (the top of the MSS table: the interface MTU's).
    pub mss: u16,
    /// The origin's window scale, sent only if the SYN offered one.
    pub rcv_wscale: u8,
    /// The origin's timestamp value, sent only if the SYN sent timestamps.
    pub tsval: u32,
    pub ecn: bool,
}

/// The SYN-ACK's options as 32-bit words, and how many: MSS; SACK-permitted with timestamps (or
/// NOP, NOP, timestamps); NOP, window scale; NOP, NOP, SACK-permitted when there are no
/// timestamps. Five words at most. Built back to front, each word put in front of the others, so
/// that no word is written at a computed index (LLVM would make that a stack access the verifier
/// must track by offset, or a `memset`).
#[inline(always)]
pub fn option_words(o: &SynOptions, a: &Answer) -> ([u32; 5], usize) {
    let (mut w0, mut w1, mut w2, mut w3, mut w4) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut n = 0;
    let mut front = |word: u32| {
        w4 = w3;
        w3 = w2;
        w2 = w1;
        w1 = w0;
        w0 = word;
        n += 1;
    };
    if o.sack && o.tsval.is_none() {
        front(0x0101_0402);
    }
    if o.wscale != NO_WSCALE {
        front(0x0103_0300 | u32::from(a.rcv_wscale));
    }
    if let Some(tsecr) = o.tsval {
        front(tsecr);
        front(a.tsval);
        front(if o.sack { 0x0402_080a } else { 0x0101_080a });
    }
    if o.mss != 0 {
        front(0x0204_0000 | u32::from(a.mss));
    }
    ([w0, w1, w2, w3, w4], n)
}

#[inline(always)]
const fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// The one's complement sum (not folded) of a word's two 16-bit halves.
#[inline(always)]
const fn halves(w: u32) -> u32 {
    (w >> 16) + (w & 0xffff)
}

/// The big-endian 32-bit word at `i` of an address.
#[inline(always)]
const fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// Writes `w` big-endian at `off`.
#[inline(always)]
fn put<P: PacketMut + ?Sized>(p: &mut P, off: usize, w: u32) -> bool {
    p.store(off, w.to_be_bytes())
}

/// Rewrites the SYN `seg` in `p` into its SYN-ACK. `false` if the frame could not be written
/// (then nothing was: every store lies inside the SYN, checked before the first one). Built and
/// written as 32-bit words: byte arrays on the stack would not fit the cookie program's 512
/// bytes beside its callers.
#[inline(never)]
pub fn rewrite<P: PacketMut + ?Sized>(p: &mut P, seg: &Seg, r: &Reply) -> bool {
    let (o, a) = (&r.opts, &r.answer);
    let v4 = seg.tuple.family == FAMILY_V4;
    let (w, n) = option_words(o, a);
    let tcp_len = 20 + 4 * n as u32;
    let frame_len = seg.l4_off + tcp_len as usize;
    // The answer never outgrows the SYN: checked, not assumed.
    if 4 * n > seg.opt_len || frame_len > p.frame_len() {
        return false;
    }
    // One load, one bounds check (three would leave the verifier paths LLVM knows are dead).
    let Some(e) = p.load::<[u8; 12]>(0) else {
        return false;
    };
    // Destination and source MAC swapped: d0..d5 s0..s5 becomes s0..s5 d0..d5.
    let (e0, e1, e2) = (
        u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
        u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
    );
    let eth = [
        (e1 << 16) | (e2 >> 16),
        (e2 << 16) | (e0 >> 16),
        (e0 << 16) | (e1 >> 16),
    ];

    let (s, d) = (&seg.tuple.src, &seg.tuple.dst);
    let flags = TCP_SYN | TCP_ACK | if a.ecn { TCP_ECE } else { 0 };
    let tcp = [
        (u32::from(seg.tuple.dport) << 16) | u32::from(seg.tuple.sport),
        a.cookie,
        seg.seq.wrapping_add(1),
        ((tcp_len / 4) << 28) | (u32::from(flags) << 16) | u32::from(SYN_WINDOW),
    ];
    // The pseudo-header (the answer's addresses are the SYN's swapped: the same sum), the header
    // and the options (unused option words are zero and add nothing).
    let mut sum = u32::from(crate::contract::flow::PROTO_TCP) + tcp_len;
    let addr_words = if v4 { 1 } else { 4 };
    let mut i = 0;
    while i < 4 {
        if i < addr_words {
            sum += halves(word(s, 4 * i)) + halves(word(d, 4 * i));
        }
        sum += halves(tcp[i]) + halves(w[i]);
        i += 1;
    }
    sum += halves(w[4]);
    let csum = u32::from(fold(sum)) << 16;

    let ip_ok = if v4 {
        let ip = [
            0x4500_0000 | (20 + tcp_len),
            0x0000_4000,
            (u32::from(TTL) << 24) | (6 << 16),
            word(d, 0),
            word(s, 0),
        ];
        let c = u32::from(fold(
            halves(ip[0]) + halves(ip[1]) + halves(ip[2]) + halves(ip[3]) + halves(ip[4]),
        ));
        put(p, ETH_HLEN, ip[0])
            && put(p, ETH_HLEN + 4, ip[1])
            && put(p, ETH_HLEN + 8, ip[2] | c)
            && put(p, ETH_HLEN + 12, ip[3])
            && put(p, ETH_HLEN + 16, ip[4])
    } else {
        put(p, ETH_HLEN, 0x6000_0000)
            && put(p, ETH_HLEN + 4, (tcp_len << 16) | (6 << 8) | u32::from(TTL))
            && put(p, ETH_HLEN + 8, word(d, 0))
            && put(p, ETH_HLEN + 12, word(d, 4))
            && put(p, ETH_HLEN + 16, word(d, 8))
            && put(p, ETH_HLEN + 20, word(d, 12))
            && put(p, ETH_HLEN + 24, word(s, 0))
            && put(p, ETH_HLEN + 28, word(s, 4))
            && put(p, ETH_HLEN + 32, word(s, 8))
            && put(p, ETH_HLEN + 36, word(s, 12))
    };
    let l4 = seg.l4_off;
    let at = l4 + 20;
    put(p, 0, eth[0])
        && put(p, 4, eth[1])
        && put(p, 8, eth[2])
        && ip_ok
        && put(p, l4, tcp[0])
        && put(p, l4 + 4, tcp[1])
        && put(p, l4 + 8, tcp[2])
        && put(p, l4 + 12, tcp[3])
        && put(p, l4 + 16, csum)
        && (n < 1 || put(p, at, w[0]))
        && (n < 2 || put(p, at + 4, w[1]))
        && (n < 3 || put(p, at + 8, w[2]))
        && (n < 4 || put(p, at + 12, w[3]))
        && (n < 5 || put(p, at + 16, w[4]))
        && (frame_len == p.frame_len() || p.truncate(frame_len))
}
