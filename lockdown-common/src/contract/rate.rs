//! A rate limit as the datapath reads it ([`RateSpec`], the value of [`crate::contract::maps::RATES`]).
//! Its text form (`10/min burst 5`) is [`crate::rules::rate`].

use bytemuck::{Pod, Zeroable};

/// Nanoseconds per second.
pub const SEC: u64 = 1_000_000_000;

/// A rate limit as the datapath reads it: a GCRA emission interval and tolerance, precomputed
/// so the per-packet path has no division. 16 bytes, no padding.
///
/// `interval_ns` is `T = period / count`; `tolerance_ns` is `τ = (burst - 1)·T`. A fresh stream
/// gets `burst` admissions at once, then one per `T`. The all-zero value means "no limit":
/// [`admit`](crate::stages::ratelimit::admit) admits and touches nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RateSpec {
    /// `T`: nanoseconds per token. 0: no limit.
    pub interval_ns: u64,
    /// `τ`: how far ahead of now a stream's TAT may be and still admit, `(burst - 1)·T`.
    pub tolerance_ns: u64,
}

impl RateSpec {
    /// No limit: [`admit`](crate::stages::ratelimit::admit) admits everything and touches no bucket.
    pub const UNLIMITED: Self = Self {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// Whether this is [`Self::UNLIMITED`] (or any spec with `T` = 0).
    pub const fn is_unlimited(&self) -> bool {
        self.interval_ns == 0
    }

    /// The burst: admissions a fresh stream gets at one instant (`τ / T + 1`). 0 if unlimited.
    pub const fn burst(&self) -> u64 {
        match self.tolerance_ns.checked_div(self.interval_ns) {
            Some(b) => b + 1,
            None => 0,
        }
    }
}
