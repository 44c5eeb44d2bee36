//! The cookie: a SYN-ACK's initial sequence number that lets the ACK answering it prove the
//! handshake without any stored state. 32 bits:
//!
//! | bits | field |
//! |---|---|
//! | 31..10 | MAC: 22 bits of SipHash-2-4 over the 4-tuple, the client's ISN, the time period and bits 9..0 |
//! | 9 | parity of the time period (`now >> PERIOD_SHIFT`) it was made in |
//! | 8 | parity of the key generation that signed it |
//! | 7 | ECN: the SYN asked for it (ECE and CWR) |
//! | 6 | SACK permitted |
//! | 5..2 | the client's window scale, 15 = none offered |
//! | 1..0 | index of the client's MSS in the MSS table |
//!
//! The fields ride in the sequence number, not in a timestamp, so a client without timestamps
//! keeps its window scale, SACK and ECN (the kernel's own cookies drop them without timestamps).
//! A cookie is accepted in its own period and the next (68 to 137 s), signed by the current key
//! or the one before it.

use crate::contract::{
    flow::FAMILY_V4,
    syncookie::{CookieConfig, PERIOD_SHIFT},
};

use super::siphash::siphash24;

/// "No window scale offered" in the cookie's 4-bit field.
pub const NO_WSCALE: u8 = 15;

/// What the SYN offered, as the cookie carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    /// Index into the family's MSS table.
    pub mss_idx: u8,
    /// The client's window scale (0..=14), or [`NO_WSCALE`].
    pub wscale: u8,
    pub sack: bool,
    pub ecn: bool,
}

impl Fields {
    /// Bits 7..0 of the cookie.
    #[inline(always)]
    pub const fn bits(self) -> u32 {
        (self.mss_idx as u32 & 3)
            | ((self.wscale as u32 & 15) << 2)
            | ((self.sack as u32) << 6)
            | ((self.ecn as u32) << 7)
    }

    #[inline(always)]
    pub const fn from_bits(b: u32) -> Self {
        Self {
            mss_idx: (b & 3) as u8,
            wscale: ((b >> 2) & 15) as u8,
            sack: b & (1 << 6) != 0,
            ecn: b & (1 << 7) != 0,
        }
    }
}

/// The connection a cookie is bound to, as the client sends it: `src` is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub family: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

/// The index of the largest MSS in `table` (ascending) not above the client's `mss`; 0 when the
/// client's is below them all (as the kernel's cookies do).
#[inline(always)]
pub const fn mss_index(table: &[u16; 4], mss: u16) -> u8 {
    if mss >= table[3] {
        3
    } else if mss >= table[2] {
        2
    } else if mss >= table[1] {
        1
    } else {
        0
    }
}

/// The MSS at index `idx` (taken modulo 4) of `table`. Shifts, not an index: LLVM would address a
/// stack copy of the table as `base | idx * 2`, which the verifier refuses.
#[inline(always)]
pub fn mss_at(table: &[u16; 4], idx: u8) -> u16 {
    let packed = u64::from(table[0])
        | (u64::from(table[1]) << 16)
        | (u64::from(table[2]) << 32)
        | (u64::from(table[3]) << 48);
    (packed >> (16 * u32::from(idx & 3))) as u16
}

/// The words the MAC covers: the 4-tuple, the client's ISN, the period, the cookie's low ten
/// bits and the family.
#[inline(always)]
fn mac_input(t: &Tuple, client_isn: u32, period: u32, low: u32) -> [u64; 6] {
    let w = |a: &[u8; 16], i: usize| {
        u64::from_le_bytes([
            a[i],
            a[i + 1],
            a[i + 2],
            a[i + 3],
            a[i + 4],
            a[i + 5],
            a[i + 6],
            a[i + 7],
        ])
    };
    [
        w(&t.src, 0),
        w(&t.src, 8),
        w(&t.dst, 0),
        w(&t.dst, 8),
        u64::from(t.sport) | (u64::from(t.dport) << 16) | (u64::from(period) << 32),
        u64::from(client_isn) | (u64::from(low) << 32) | (u64::from(t.family == FAMILY_V4) << 63),
    ]
}

/// The 22-bit MAC of `words` under `key`. A BPF subprogram (see [`super::syn`]) with two
/// pointer arguments: more, and LLVM may spread them over more than BPF's five argument
/// registers.
#[inline(never)]
fn mac(key: &[u64; 2], words: &[u64; 6]) -> u32 {
    (siphash24(*key, words) >> 42) as u32
}

/// The time period of `now_ns`.
#[inline(always)]
pub const fn period(now_ns: u64) -> u32 {
    (now_ns >> PERIOD_SHIFT) as u32
}

/// The cookie for a SYN from `t` with initial sequence number `client_isn`, at `now_ns`.
#[inline(always)]
pub fn make(c: &CookieConfig, t: &Tuple, client_isn: u32, f: Fields, now_ns: u64) -> u32 {
    let p = period(now_ns);
    let gen_bit = c.key_gen & 1;
    let low = f.bits() | (gen_bit << 8) | ((p & 1) << 9);
    let key = if gen_bit == 0 { &c.keys[0] } else { &c.keys[1] };
    (mac(key, &mac_input(t, client_isn, p, low)) << 10) | low
}

/// The fields of `cookie` (the ACK's acknowledgment number minus one) if it is one this origin
/// made for `t` and `client_isn` (the ACK's sequence number minus one) in this period or the one
/// before, with the current key or the previous one; `None` for anything else.
#[inline(always)]
pub fn check(
    c: &CookieConfig,
    t: &Tuple,
    client_isn: u32,
    cookie: u32,
    now_ns: u64,
) -> Option<Fields> {
    let low = cookie & 0x3ff;
    let now = period(now_ns);
    let p = if (low >> 9) & 1 == now & 1 {
        now
    } else {
        now.wrapping_sub(1)
    };
    let key = if (low >> 8) & 1 == 0 {
        &c.keys[0]
    } else {
        &c.keys[1]
    };
    // A key of zeros was never written: nothing it "signs" counts.
    if key[0] | key[1] == 0 {
        return None;
    }
    (mac(key, &mac_input(t, client_isn, p, low)) == cookie >> 10).then_some(Fields::from_bits(low))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        flow::FAMILY_V6,
        syncookie::{MODE_ON, PERIOD_SHIFT},
    };

    pub(crate) fn config() -> CookieConfig {
        CookieConfig {
            keys: [[1, 2], [3, 4]],
            mode: MODE_ON,
            ..CookieConfig::OFF
        }
    }

    fn tuple() -> Tuple {
        Tuple {
            family: FAMILY_V4,
            src: crate::stages::parse::v4_addr([198, 51, 100, 7]),
            dst: crate::stages::parse::v4_addr([192, 0, 2, 1]),
            sport: 40000,
            dport: 22,
        }
    }

    const F: Fields = Fields {
        mss_idx: 3,
        wscale: 7,
        sack: true,
        ecn: false,
    };
    const NOW: u64 = 1000 << PERIOD_SHIFT;

    #[test]
    fn a_cookie_checks_for_its_own_tuple_and_carries_its_fields() {
        let c = config();
        let k = make(&c, &tuple(), 77, F, NOW);
        assert_eq!(check(&c, &tuple(), 77, k, NOW), Some(F));
        for f in [
            Fields {
                mss_idx: 0,
                wscale: NO_WSCALE,
                sack: false,
                ecn: true,
            },
            Fields {
                mss_idx: 2,
                wscale: 14,
                sack: false,
                ecn: false,
            },
        ] {
            assert_eq!(
                check(&c, &tuple(), 5, make(&c, &tuple(), 5, f, NOW), NOW),
                Some(f)
            );
        }
    }

    #[test]
    fn any_other_tuple_isn_bit_or_time_is_refused() {
        let c = config();
        let t = tuple();
        let k = make(&c, &t, 77, F, NOW);
        assert_eq!(check(&c, &t, 78, k, NOW), None, "client ISN");
        for other in [
            Tuple { sport: 40001, ..t },
            Tuple { dport: 23, ..t },
            Tuple {
                src: crate::stages::parse::v4_addr([198, 51, 100, 8]),
                ..t
            },
            Tuple {
                family: FAMILY_V6,
                ..t
            },
        ] {
            assert_eq!(check(&c, &other, 77, k, NOW), None, "{other:?}");
        }
        for bit in 0..32 {
            assert_eq!(
                check(&c, &t, 77, k ^ (1 << bit), NOW),
                None,
                "bit {bit} flipped"
            );
        }
        // Its own period and the next; not the one after, nor one before it was made.
        let period = 1u64 << PERIOD_SHIFT;
        assert!(check(&c, &t, 77, k, NOW + period - 1).is_some());
        assert!(check(&c, &t, 77, k, NOW + 2 * period - 1).is_some());
        assert_eq!(check(&c, &t, 77, k, NOW + 2 * period), None, "expired");
        assert_eq!(check(&c, &t, 77, k, NOW - 1), None, "from the future");
    }

    #[test]
    fn the_previous_key_is_accepted_after_one_rotation_not_two() {
        let mut c = config();
        let t = tuple();
        let k = make(&c, &t, 9, F, NOW);
        c.rotate([11, 12]);
        assert_eq!(check(&c, &t, 9, k, NOW), Some(F));
        let k2 = make(&c, &t, 9, F, NOW);
        assert_ne!(k, k2);
        c.rotate([13, 14]);
        assert_eq!(
            check(&c, &t, 9, k, NOW),
            None,
            "replayed after two rotations"
        );
        assert_eq!(check(&c, &t, 9, k2, NOW), Some(F));
        c.keys = [[0, 0], [0, 0]];
        assert_eq!(
            check(&c, &t, 9, k2, NOW),
            None,
            "unwritten keys sign nothing"
        );
    }

    #[test]
    fn mss_index_picks_the_largest_entry_not_above_the_client() {
        let table = [536, 1300, 1440, 1460];
        assert_eq!(mss_index(&table, 1460), 3);
        assert_eq!(mss_index(&table, 9000), 3);
        assert_eq!(mss_index(&table, 1459), 2);
        assert_eq!(mss_index(&table, 1300), 1);
        assert_eq!(mss_index(&table, 1299), 0);
        assert_eq!(mss_index(&table, 100), 0);
        for (i, mss) in table.iter().enumerate() {
            assert_eq!(mss_at(&table, i as u8), *mss);
            assert_eq!(mss_at(&table, i as u8 + 4), *mss);
        }
    }
}
