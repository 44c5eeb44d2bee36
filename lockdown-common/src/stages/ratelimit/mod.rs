//! Per-source rate limits on new connections, in constant memory.
//!
//! # What it is
//!
//! A rule may limit how fast one source opens connections to it (`tcp/22` at `10/min burst 5`).
//! The limit is a token bucket per *source stream*: an IPv4 /32 or an IPv6 /64 (the block one
//! IPv6 host controls), together with the protocol and the destination port, so each allowed
//! port is a separate stream. Only connection requests (TCP SYNs to a rated port) consult it;
//! established flows never do.
//!
//! # Why constant memory
//!
//! No inbound packet may create per-source state: sources are free to spoof, and a table keyed by
//! source would let a flood from millions of made-up addresses fill it and push out everyone
//! else's entries. So the buckets live in a fixed-size *count-min sketch*: one flat array of
//! [`SKETCH_ENTRIES`] `u64`s (a BPF array map in the kernel, a `Vec<u64>` on the host), [`ROWS`]
//! rows of [`WIDTH`] buckets each, 8 MiB in all. A source maps to one bucket per row through a
//! keyed hash; a flood from any number of sources costs the same memory and cannot evict
//! anyone, it can only share buckets with them.
//!
//! Each bucket is one GCRA word, a *theoretical arrival time* (TAT, `CLOCK_MONOTONIC_COARSE`
//! nanoseconds; 0 = never used). With the emission interval `T` and the tolerance `τ` of a
//! [`RateSpec`], a stream whose TAT is `tat` admits a connection at `now` iff
//! `tat <= now + τ`, and an admission sets `tat = max(tat, now) + T`. With `τ = (burst - 1)·T`
//! a fresh stream gets exactly `burst` admissions at one instant, then one per `T`, and is full
//! again `burst·T` after it stopped (an exact token bucket of `burst` tokens refilled one per
//! `T`).
//!
//! A stream's TAT is estimated as the *least* of its [`ROWS`] buckets (any row can only
//! overestimate: other streams sharing a bucket only push it forward). On admission each row is
//! updated *conservatively*: `tat_i = max(tat_i, max(min, now) + T)`, so a row that is already
//! ahead (because a heavier stream shares it) is not pushed further. A refused SYN charges
//! nothing, so a source that keeps knocking does not extend its own or anyone's penalty.
//!
//! # False positives under a spoofed flood
//!
//! A flood of `N` distinct spoofed sources each sending `k` SYNs within a short window (no
//! refill) drops `F = N·k` SYNs into each row at random, so one bucket receives
//! `X ~ Poisson(λ)` of them, `λ = F / WIDTH`. An admitted SYN raises each of its buckets by at
//! most `T` above `max(tat, now)` and a refused one by nothing, so a bucket holds at most `X·T`
//! of future time. A legitimate stream under its rate is refused only if *every* one of its
//! rows was pushed more than `τ = (burst - 1)·T` ahead, which needs `X ≥ burst` in each row:
//!
//! ```text
//! P(refused) ≤ P(Poisson(F / WIDTH) ≥ burst) ^ ROWS
//! ```
//!
//! (rows hash independently under the secret seed). Conservative update makes the real figure
//! much lower: a flood SYN charges only the rows at its minimum, and once a flood SYN's own
//! minimum is drained it is refused and charges nothing. (Without it, charging every row from
//! its own TAT, the simulated figure sits right at the bound.) The simulation
//! ([`false_positive_rate`], with `std`) measures the real figure; README "Per-source rate limit"
//! lists it against the bound for floods of 0.2 to 4 million sources.
//!
//! # Saturation: the limit of constant memory
//!
//! The whole sketch refills `ROWS·WIDTH` tokens per `T`, and an admitted SYN spends between one
//! token (only its minimum row is charged) and `ROWS` (all its rows were level). So a
//! *sustained* spoofed flood of the order of `ROWS·WIDTH / T` SYNs per second keeps the buckets
//! drained: while it lasts, new connections to rated ports are refused for *everyone*, the
//! legitimate included: for `10/min` (`T` = 6 s) that is about 175 000 SYN/s, well within
//! reach of one attacker (figures: README "Per-source rate limit"); a looser rate raises the
//! threshold in proportion.
//! This is the price of no per-source state, and it degrades to "rated ports refuse new
//! connections", never to "anyone's state was evicted": established flows are never affected
//! (they never consult the sketch), unrated ports are never affected, and every bucket is fresh
//! again `burst·T` after the flood stops (no bucket is ever more than `τ + T` ahead of the
//! clock). A rule that must stay reachable under such a flood should be restricted by source
//! (`--from`) instead.
//!
//! # Concurrency
//!
//! In the kernel the sketch is one array map shared by all CPUs, read and written without
//! atomics. Every write is `max(seen_i, max(min_seen, now) + T)` computed from values read
//! earlier, so a race can only (a) decide on an older view, or (b) lose a charge (another CPU
//! overwrites this CPU's value with one computed from an older read). Both err towards
//! admitting: a burst racing on several CPUs can get a few SYNs more than `burst` (at most one
//! per racing CPU). What holds exactly, with or without races, is what the analysis above
//! uses: the value read for the row itself is part of the minimum, so any write is at most `T`
//! above `max(some earlier value of that bucket, now)`, and a bucket is never more than `n·T`
//! ahead of the clock, `n` being the admitted SYNs that hashed into it. The stricter claim
//! "a race never causes a refusal" does *not* hold: a SYN over-admitted by a race is charged to
//! the buckets it shares, exactly like one more admitted flood SYN, and can take a token that a
//! serial run would have left to a neighbour. That is covered by the bound.
//!
//! # Hash
//!
//! A stream folds into two words (the /32 or /64 as a big-endian `u64`, and family, protocol,
//! port) that are mixed with the secret seed by murmur3's `fmix64` finaliser, the seed entering
//! additively so that carries depend on it; the row indices are the high bits of a further mix
//! per row. This is not a cryptographic PRF (SipHash would be, at many times the cost per SYN);
//! the secret seed, chosen at random by the loader, makes aimed collisions impractical only as
//! far as the mixer's output is unpredictable without it: an attacker cannot compute offline
//! which sources share a victim's buckets. An adaptive attacker who measures refusals could in
//! principle search for sharing sources; to matter that search must cover all [`ROWS`] of a
//! victim's buckets.

#[cfg(any(test, feature = "std"))]
pub(crate) mod sim;

#[cfg(any(test, feature = "std"))]
pub use sim::{FalsePositives, false_positive_bound, false_positive_rate, false_positive_rate_in};

use crate::{
    contract::{
        flow::{FAMILY_V4, PROTO_TCP},
        maps::{ROWS, WIDTH_BITS},
        rate::RateSpec,
    },
    tables::Tables,
};

/// The sketch array, however it is stored: a BPF array map in the kernel, a slice on the host.
pub trait Buckets {
    /// The bucket at `index` (`0..SKETCH_ENTRIES`), or `None` if there is none.
    fn bucket(&mut self, index: u32) -> Option<&mut u64>;
}

impl Buckets for [u64] {
    #[inline(always)]
    fn bucket(&mut self, index: u32) -> Option<&mut u64> {
        self.get_mut(index as usize)
    }
}

/// The host's sketch: `vec![0; SKETCH_ENTRIES as usize]`.
#[cfg(any(test, feature = "std"))]
impl Buckets for Vec<u64> {
    #[inline(always)]
    fn bucket(&mut self, index: u32) -> Option<&mut u64> {
        self.get_mut(index as usize)
    }
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// murmur3's 64-bit finaliser: a bijection with full avalanche.
#[inline(always)]
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The keyed 64-bit hash of a source stream. IPv4: the /32 in the first 4 bytes of `src`;
/// otherwise the /64 in the first 8. Within one (family, proto, port) it is a bijection of the
/// address word: two streams of one port never share the whole 64-bit hash (they share a row's
/// bucket with probability `1 / WIDTH` per row, independently).
#[inline(always)]
fn stream_hash(seed: u64, family: u8, proto: u8, port: u16, src: &[u8; 16]) -> u64 {
    let hi = u64::from_be_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let addr = if family == FAMILY_V4 {
        hi & 0xffff_ffff_0000_0000
    } else {
        hi
    };
    let tag = (u64::from(family) << 24) | (u64::from(proto) << 16) | u64::from(port);
    let h = fmix64(addr.wrapping_add(seed));
    fmix64((h ^ tag).wrapping_add(seed.rotate_left(32) ^ GOLDEN))
}

/// The bucket of a stream (by [`stream_hash`]) in row `row` of a `2^WB`-wide sketch.
#[inline(always)]
const fn row_index<const WB: u32>(h: u64, row: u32) -> u32 {
    let x = fmix64(h.wrapping_add((row as u64 + 1).wrapping_mul(GOLDEN)));
    (row << WB) | (x >> (64 - WB)) as u32
}

/// Decides a connection request (a TCP SYN to a rated port) from `src` at `now_ns`
/// (`CLOCK_MONOTONIC_COARSE`, e.g. `bpf_ktime_get_coarse_ns`), and charges it if admitted.
///
/// `seed` is the loader's secret; `family` is [`crate::contract::flow::FAMILY_V4`] or
/// [`crate::contract::flow::FAMILY_V6`]; `src` is the source address as the crate stores it (IPv4 in the
/// first 4 bytes). A refused SYN charges nothing.
///
/// A missing bucket reads as never used and is not written, so the decision fails *open*: it
/// can only happen if the map is smaller than [`SKETCH_ENTRIES`] (a loader bug), and the
/// verifier makes us handle it; failing closed would turn that bug into refusing every new
/// connection to a rated port, which the rule's allow does not deserve.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "flat scalars keep the eBPF call cheap"
)]
pub fn admit<B: Buckets + ?Sized>(
    b: &mut B,
    seed: u64,
    spec: &RateSpec,
    family: u8,
    proto: u8,
    port: u16,
    src: &[u8; 16],
    now_ns: u64,
) -> bool {
    admit_in::<B, ROWS, WIDTH_BITS>(b, seed, spec, family, proto, port, src, now_ns)
}

/// The rate-limit layer the verdict calls for a new TCP connection to a rated port: whether it
/// is beyond its source's rate. The port's spec and the seed come from the tables; a port without
/// a spec is not limited. One subprogram in the kernel (five arguments at most).
#[inline(never)]
pub fn over_rate<T: Tables + ?Sized>(t: &mut T, family: u8, port: u16, src: &[u8; 16]) -> bool {
    let Some(spec) = t.rate_spec(PROTO_TCP, port) else {
        return false;
    };
    let seed = t.sketch_seed();
    let now = t.now();
    !admit(
        &mut TableBuckets(t),
        seed,
        &spec,
        family,
        PROTO_TCP,
        port,
        src,
        now,
    )
}

/// The sketch of a [`Tables`].
struct TableBuckets<'a, T: ?Sized>(&'a mut T);

impl<T: Tables + ?Sized> Buckets for TableBuckets<'_, T> {
    #[inline(always)]
    fn bucket(&mut self, index: u32) -> Option<&mut u64> {
        self.0.sketch_bucket(index)
    }
}

/// [`admit`] on a sketch of `R` rows of `2^WB` buckets (for sizing studies; the datapath uses
/// [`admit`]).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "flat scalars keep the eBPF call cheap"
)]
pub fn admit_in<B: Buckets + ?Sized, const R: u32, const WB: u32>(
    b: &mut B,
    seed: u64,
    spec: &RateSpec,
    family: u8,
    proto: u8,
    port: u16,
    src: &[u8; 16],
    now_ns: u64,
) -> bool {
    const {
        assert!(R >= 1 && R <= 16 && WB >= 1 && WB <= 28);
        assert!((R as u64) << WB <= u32::MAX as u64);
    }
    let t = spec.interval_ns;
    if t == 0 {
        return true;
    }
    let h = stream_hash(seed, family, proto, port, src);
    let mut min = u64::MAX;
    for row in 0..R {
        let v = match b.bucket(row_index::<WB>(h, row)) {
            Some(v) => *v,
            None => 0,
        };
        if v < min {
            min = v;
        }
    }
    if min > now_ns.saturating_add(spec.tolerance_ns) {
        return false;
    }
    let base = if min > now_ns { min } else { now_ns };
    let next = base.saturating_add(t);
    for row in 0..R {
        if let Some(v) = b.bucket(row_index::<WB>(h, row))
            && *v < next
        {
            *v = next;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use bytemuck::Zeroable;

    use super::sim::splitmix64;
    use super::*;
    use crate::contract::{
        flow::{FAMILY_V6, PROTO_TCP, PROTO_UDP},
        maps::{SKETCH_ENTRIES, WIDTH},
        rate::SEC,
    };

    const SEED: u64 = 0x0123_4567_89ab_cdef;

    fn sketch() -> Vec<u64> {
        vec![0u64; SKETCH_ENTRIES as usize]
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..4].copy_from_slice(&a);
        s
    }

    fn syn(b: &mut [u64], spec: &RateSpec, src: &[u8; 16], now: u64) -> bool {
        admit(b, SEED, spec, FAMILY_V4, PROTO_TCP, 22, src, now)
    }

    fn ten_per_min() -> RateSpec {
        "10/min burst 5".parse().unwrap()
    }

    fn indices(src: &[u8; 16]) -> [u32; ROWS as usize] {
        let h = stream_hash(SEED, FAMILY_V4, PROTO_TCP, 22, src);
        core::array::from_fn(|r| row_index::<WIDTH_BITS>(h, r as u32))
    }

    #[test]
    fn burst_then_one_per_interval_then_full_again() {
        let spec = ten_per_min();
        let t = spec.interval_ns;
        assert_eq!(t, 6 * SEC);
        assert_eq!(spec.burst(), 5);
        let mut b = sketch();
        let src = v4([192, 0, 2, 1]);
        let t0 = 5_000 * SEC;
        for i in 0..5 {
            assert!(syn(&mut b, &spec, &src, t0), "burst SYN {i} refused");
        }
        assert!(!syn(&mut b, &spec, &src, t0), "SYN past the burst admitted");
        // Refused SYNs charge nothing: knocking again does not delay the refill.
        for _ in 0..100 {
            assert!(!syn(&mut b, &spec, &src, t0 + t - 1));
        }
        assert!(syn(&mut b, &spec, &src, t0 + t), "no token after T");
        assert!(!syn(&mut b, &spec, &src, t0 + t));
        // Exhausted at t0 + T with TAT = t0 + 6T: full again burst·T later, not before.
        let full = t0 + t + 5 * t;
        let mut early = b.clone();
        let admitted = (0..10)
            .filter(|_| syn(&mut early, &spec, &src, full - 1))
            .count();
        assert_eq!(
            admitted, 4,
            "a nanosecond early, one token is still missing"
        );
        for i in 0..5 {
            assert!(
                syn(&mut b, &spec, &src, full),
                "refilled burst SYN {i} refused"
            );
        }
        assert!(!syn(&mut b, &spec, &src, full));
        // Idle longer than burst·T does not bank more than burst.
        let later = full + 100 * t;
        for _ in 0..5 {
            assert!(syn(&mut b, &spec, &src, later));
        }
        assert!(!syn(&mut b, &spec, &src, later));
    }

    #[test]
    fn burst_of_one_is_one_per_interval() {
        let spec = RateSpec::parse_rate("1/s", 1).unwrap();
        assert_eq!(spec.tolerance_ns, 0);
        let mut b = sketch();
        let src = v4([192, 0, 2, 1]);
        assert!(syn(&mut b, &spec, &src, 10 * SEC));
        assert!(!syn(&mut b, &spec, &src, 11 * SEC - 1));
        assert!(syn(&mut b, &spec, &src, 11 * SEC));
        assert!(!syn(&mut b, &spec, &src, 11 * SEC));
    }

    #[test]
    fn a_fresh_sketch_admits_at_time_zero() {
        // TAT 0 means "never used"; it must not look like a stream due at 0 + T.
        let spec = ten_per_min();
        let mut b = sketch();
        for _ in 0..5 {
            assert!(syn(&mut b, &spec, &v4([10, 0, 0, 1]), 0));
        }
        assert!(!syn(&mut b, &spec, &v4([10, 0, 0, 1]), 0));
    }

    #[test]
    fn other_sources_are_unaffected_by_an_exhausted_one() {
        let spec = ten_per_min();
        let mut b = sketch();
        let heavy = v4([198, 51, 100, 7]);
        let now = 777 * SEC;
        for _ in 0..1_000 {
            syn(&mut b, &spec, &heavy, now);
        }
        assert!(!syn(&mut b, &spec, &heavy, now));
        let mut rng = 42;
        let mut refused = 0;
        for _ in 0..20_000 {
            let a = splitmix64(&mut rng) as u32;
            let src = v4(a.to_be_bytes());
            if src == heavy {
                continue;
            }
            if !syn(&mut b, &spec, &src, now) {
                refused += 1;
            }
        }
        // Refused only if all 4 rows collide with the heavy source: (1/2^18)^4.
        assert_eq!(refused, 0);
        // And a second source gets its full burst.
        let other = v4([198, 51, 100, 8]);
        for _ in 0..5 {
            assert!(syn(&mut b, &spec, &other, now));
        }
        assert!(!syn(&mut b, &spec, &other, now));
    }

    #[test]
    fn conservative_update_spares_a_light_source_sharing_one_row() {
        let spec = ten_per_min();
        let light = v4([203, 0, 113, 9]);
        let li = indices(&light);
        // Find a heavy source sharing the light one's row-0 bucket and no other.
        let heavy = (0u32..)
            .map(|a| v4(a.to_be_bytes()))
            .find(|s| {
                let hi = indices(s);
                *s != light && hi[0] == li[0] && (1..ROWS as usize).all(|r| hi[r] != li[r])
            })
            .unwrap();
        let now = 1_234 * SEC;
        let mut b = sketch();
        for _ in 0..5 {
            assert!(syn(&mut b, &spec, &heavy, now));
        }
        assert!(!syn(&mut b, &spec, &heavy, now));
        let shared = b[li[0] as usize];
        assert_eq!(shared, now + 5 * spec.interval_ns);
        // The light source still gets its whole burst from its clean rows...
        for i in 0..5 {
            assert!(syn(&mut b, &spec, &light, now), "light SYN {i} refused");
        }
        assert!(!syn(&mut b, &spec, &light, now));
        // ...without pushing the shared row (already ahead) any further: the light source's
        // TAT reached the shared row's value, not beyond.
        assert_eq!(b[li[0] as usize], shared);
        for &i in &li[1..] {
            assert_eq!(b[i as usize], now + 5 * spec.interval_ns);
        }
        // And the heavy source stays exhausted; the light one did not spend its tokens.
        assert!(!syn(&mut b, &spec, &heavy, now + spec.interval_ns - 1));
        assert!(syn(&mut b, &spec, &heavy, now + spec.interval_ns));
    }

    #[test]
    fn streams_are_per_prefix_proto_and_port() {
        let spec = ten_per_min();
        let now = 99 * SEC;
        let mut b = sketch();
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1]);
        a[15] = 1;
        for _ in 0..5 {
            assert!(admit(
                &mut b[..],
                SEED,
                &spec,
                FAMILY_V6,
                PROTO_TCP,
                22,
                &a,
                now
            ));
        }
        // Another address in the same /64 is the same stream.
        let mut same64 = a;
        same64[8..].copy_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]);
        assert!(!admit(
            &mut b[..],
            SEED,
            &spec,
            FAMILY_V6,
            PROTO_TCP,
            22,
            &same64,
            now
        ));
        // The neighbouring /64, another port or another protocol is another stream.
        let mut next64 = a;
        next64[7] = 2;
        assert!(admit(
            &mut b[..],
            SEED,
            &spec,
            FAMILY_V6,
            PROTO_TCP,
            22,
            &next64,
            now
        ));
        assert!(admit(
            &mut b[..],
            SEED,
            &spec,
            FAMILY_V6,
            PROTO_TCP,
            2222,
            &a,
            now
        ));
        assert!(admit(
            &mut b[..],
            SEED,
            &spec,
            FAMILY_V6,
            PROTO_UDP,
            22,
            &a,
            now
        ));
        // IPv4: only the first 4 bytes count.
        let v = v4([192, 0, 2, 55]);
        for _ in 0..5 {
            assert!(syn(&mut b, &spec, &v, now));
        }
        let mut junk = v;
        junk[4..].fill(0xaa);
        assert!(!syn(&mut b, &spec, &junk, now));
        assert!(syn(&mut b, &spec, &v4([192, 0, 2, 56]), now));
        // Another seed puts the exhausted stream in fresh buckets.
        assert!(admit(
            &mut b[..],
            SEED ^ 1,
            &spec,
            FAMILY_V4,
            PROTO_TCP,
            22,
            &v,
            now
        ));
    }

    struct NoMap;

    impl Buckets for NoMap {
        fn bucket(&mut self, _: u32) -> Option<&mut u64> {
            None
        }
    }

    #[test]
    fn a_missing_bucket_fails_open() {
        let spec = ten_per_min();
        for _ in 0..100 {
            assert!(admit(
                &mut NoMap,
                SEED,
                &spec,
                FAMILY_V4,
                PROTO_TCP,
                22,
                &v4([1, 2, 3, 4]),
                5
            ));
        }
        // A map too short for the sketch (one row): the other rows read as never used, so
        // every stream is admitted without limit, and nothing is written past the end.
        let mut short = vec![0u64; WIDTH as usize];
        let src = v4([1, 2, 3, 4]);
        for _ in 0..100 {
            assert!(syn(&mut short, &spec, &src, 5));
        }
        assert_eq!(short.len(), WIDTH as usize);
    }

    #[test]
    fn unlimited_admits_and_touches_nothing() {
        let mut b = sketch();
        for _ in 0..1_000 {
            assert!(syn(&mut b, &RateSpec::UNLIMITED, &v4([1, 1, 1, 1]), 5));
        }
        assert!(b.iter().all(|&v| v == 0));
        assert!(RateSpec::zeroed().is_unlimited());
        assert_eq!(RateSpec::UNLIMITED.to_string(), "unlimited");
    }

    #[test]
    fn hash_spreads_sources_evenly() {
        // Sequential IPv4 sources must fill each row's buckets like random throws: the
        // number of empty buckets after n throws into w is about w·e^(-n/w).
        let n = WIDTH;
        let mut hit = vec![false; SKETCH_ENTRIES as usize];
        for a in 0..n {
            for i in indices(&v4((0x0a00_0000 + a).to_be_bytes())) {
                hit[i as usize] = true;
            }
        }
        let expected = f64::from(WIDTH) * (-1f64).exp();
        for r in 0..ROWS as usize {
            let row = &hit[r * WIDTH as usize..(r + 1) * WIDTH as usize];
            let empty = row.iter().filter(|&&h| !h).count() as f64;
            // σ ≈ sqrt(w·e^-1·(1 - 2/e)) ≈ 160 for w = 2^18.
            assert!(
                (empty - expected).abs() < 1_000.0,
                "row {r}: {empty} empty, {expected} expected"
            );
        }
    }
}
