//! [`RateSpec`]: a rate limit as the datapath reads it, and its text form (`10/min burst 5`).

use core::{fmt, str::FromStr};

use bytemuck::{Pod, Zeroable};

use super::{DEFAULT_BURST, SEC};

/// A rate limit as the datapath reads it: a GCRA emission interval and tolerance, precomputed
/// so the per-packet path has no division. 16 bytes, no padding.
///
/// `interval_ns` is `T = period / count`; `tolerance_ns` is `τ = (burst - 1)·T`. A fresh stream
/// gets `burst` admissions at once, then one per `T`. The all-zero value means "no limit":
/// [`admit`](super::admit) admits and touches nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RateSpec {
    /// `T`: nanoseconds per token. 0: no limit.
    pub interval_ns: u64,
    /// `τ`: how far ahead of now a stream's TAT may be and still admit, `(burst - 1)·T`.
    pub tolerance_ns: u64,
}
/// A rate that could not be parsed or built; the message names the problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateError {
    /// Not of the form `COUNT/UNIT`.
    Syntax,
    /// The count is not a whole number.
    Count,
    /// The count is 0.
    ZeroCount,
    /// Unknown time unit.
    Unit,
    /// The burst is not a whole number.
    Burst,
    /// The burst is 0.
    ZeroBurst,
    /// More than one connection per nanosecond.
    TooFast,
    /// A number, the period or the burst window does not fit in 64 bits of nanoseconds.
    TooLarge,
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Syntax => "expected a rate COUNT/UNIT, e.g. 10/min or 5/s, optionally followed by burst N",
            Self::Count => "rate count must be a whole number, e.g. the 10 in 10/min",
            Self::ZeroCount => "rate count must be at least 1",
            Self::Unit => "unknown time unit: expected s, min, h or d (or sec, m, hour, day, ms, ns), optionally with a multiplier, e.g. 10/5min",
            Self::Burst => "burst must be a whole number, e.g. burst 5",
            Self::ZeroBurst => "burst must be at least 1",
            Self::TooFast => "rate too high: at most one connection per nanosecond",
            Self::TooLarge => "rate out of range: a number, the period or the burst is too large",
        })
    }
}

impl core::error::Error for RateError {}

/// The units [`RateSpec`]'s `Display` prefers, largest first: `(name, ns)`.
const DISPLAY_UNITS: [(&str, u64); 4] = [
    ("d", 86_400 * SEC),
    ("h", 3_600 * SEC),
    ("min", 60 * SEC),
    ("s", SEC),
];

/// Nanoseconds in a time unit, by any of its accepted names.
fn unit_ns(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" | "nsec" => 1,
        "ms" | "msec" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * SEC,
        "h" | "hr" | "hour" | "hours" => 3_600 * SEC,
        "d" | "day" | "days" => 86_400 * SEC,
        _ => return None,
    })
}

/// A whole decimal number (digits only, no sign). `Err(None)`: not a number; `Err(Some(()))`:
/// too large for `u64`.
fn parse_u64(s: &str) -> Result<u64, Option<()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(None);
    }
    u64::from_str(s).map_err(|_| Some(()))
}

impl RateSpec {
    /// No limit: [`admit`](super::admit) admits everything and touches no bucket.
    pub const UNLIMITED: Self = Self {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// `count` connections per `period_ns`, at most `burst` at once. `T = period_ns / count`
    /// (rounded down, so a rate never ends up stricter than asked), `τ = (burst - 1)·T`.
    pub const fn new(count: u64, period_ns: u64, burst: u64) -> Result<Self, RateError> {
        if count == 0 {
            return Err(RateError::ZeroCount);
        }
        if burst == 0 {
            return Err(RateError::ZeroBurst);
        }
        let interval_ns = period_ns / count;
        if interval_ns == 0 {
            return Err(RateError::TooFast);
        }
        let Some(tolerance_ns) = (burst - 1).checked_mul(interval_ns) else {
            return Err(RateError::TooLarge);
        };
        // Keep `tat` (at most now + τ + T) far from u64::MAX: τ + T ≤ 2^62 ns (146 years).
        match tolerance_ns.checked_add(interval_ns) {
            Some(ahead) if ahead <= 1 << 62 => {}
            _ => return Err(RateError::TooLarge),
        }
        Ok(Self {
            interval_ns,
            tolerance_ns,
        })
    }

    /// Parses a rate `COUNT/[N]UNIT` (`10/min`, `5/s`, `100/h`, `3/10s`) with the given burst.
    /// For a CLI that takes the rate and the burst as separate options.
    pub fn parse_rate(rate: &str, burst: u64) -> Result<Self, RateError> {
        let (count, period_ns) = parse_count_period(rate)?;
        Self::new(count, period_ns, burst)
    }

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

    /// `(count, multiplier, unit)` that parse back to `T` (`T > 0`): `count/unit` with the
    /// smallest unit that `T` divides, else with the smallest unit whose rounded-down
    /// `unit / count` is `T`; else `1/(multiplier)unit` with the largest unit dividing `T`.
    fn display_parts(&self) -> (u64, u64, &'static str) {
        let t = self.interval_ns;
        for &(name, ns) in DISPLAY_UNITS.iter().rev() {
            if ns.is_multiple_of(t) {
                return (ns / t, 1, name);
            }
        }
        for &(name, ns) in DISPLAY_UNITS.iter().rev() {
            let count = ns / t;
            if count >= 1 && ns / count == t {
                return (count, 1, name);
            }
        }
        for (name, ns) in [
            ("d", 86_400 * SEC),
            ("h", 3_600 * SEC),
            ("min", 60 * SEC),
            ("s", SEC),
            ("ms", 1_000_000),
        ] {
            if t.is_multiple_of(ns) {
                return (1, t / ns, name);
            }
        }
        (1, t, "ns")
    }
}

/// Splits `COUNT/[N]UNIT` into (count, period in ns).
fn parse_count_period(s: &str) -> Result<(u64, u64), RateError> {
    let (count, period) = s.trim().split_once('/').ok_or(RateError::Syntax)?;
    if count.is_empty() || period.is_empty() {
        return Err(RateError::Syntax);
    }
    let count = match parse_u64(count) {
        Ok(0) => return Err(RateError::ZeroCount),
        Ok(c) => c,
        Err(None) => return Err(RateError::Count),
        Err(Some(())) => return Err(RateError::TooLarge),
    };
    let digits = period.bytes().take_while(u8::is_ascii_digit).count();
    let (mult, unit) = period.split_at(digits);
    let mult = match mult {
        "" => 1,
        m => match parse_u64(m) {
            Ok(0) => return Err(RateError::Unit),
            Ok(m) => m,
            Err(_) => return Err(RateError::TooLarge),
        },
    };
    let unit = unit_ns(unit).ok_or(RateError::Unit)?;
    let period_ns = mult.checked_mul(unit).ok_or(RateError::TooLarge)?;
    Ok((count, period_ns))
}

/// `COUNT/[N]UNIT` with [`DEFAULT_BURST`], or `COUNT/[N]UNIT burst B`.
impl FromStr for RateSpec {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split_ascii_whitespace();
        let rate = words.next().ok_or(RateError::Syntax)?;
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => DEFAULT_BURST,
            (Some("burst"), Some(b), None) => match parse_u64(b) {
                Ok(b) => b,
                Err(None) => return Err(RateError::Burst),
                Err(Some(())) => return Err(RateError::TooLarge),
            },
            (Some("burst"), None, _) => return Err(RateError::Burst),
            _ => return Err(RateError::Syntax),
        };
        Self::parse_rate(rate, burst)
    }
}

/// `10/min burst 5`; parses back to the same spec. A rate that is not a whole count per
/// second, minute, hour or day shows as one per a multiple of a unit (`1/7s`). The zero spec
/// shows as `unlimited` (which does not parse: a rule without a rate has no spec).
impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unlimited() {
            return f.write_str("unlimited");
        }
        let (count, mult, unit) = self.display_parts();
        if mult == 1 {
            write!(f, "{count}/{unit}")?;
        } else {
            write!(f, "{count}/{mult}{unit}")?;
        }
        write!(f, " burst {}", self.burst())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sim::splitmix64;
    use super::*;

    #[test]
    fn parses_rates() {
        let ok = |s: &str| s.parse::<RateSpec>().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            ok("10/min"),
            RateSpec {
                interval_ns: 6 * SEC,
                tolerance_ns: 4 * 6 * SEC
            }
        );
        assert_eq!(ok("5/s").interval_ns, SEC / 5);
        assert_eq!(ok("5/sec"), ok("5/s"));
        assert_eq!(ok("100/h").interval_ns, 36 * SEC);
        assert_eq!(ok("100/hour"), ok("100/h"));
        assert_eq!(ok("10/m"), ok("10/min"));
        assert_eq!(ok("2/d"), ok("1/12h"));
        assert_eq!(ok("3/10s").interval_ns, 3_333_333_333);
        assert_eq!(ok("10/min burst 1").tolerance_ns, 0);
        assert_eq!(ok("  10/min   burst   20 ").burst(), 20);
        assert_eq!(ok("10/min").burst(), DEFAULT_BURST);
        assert_eq!(ok("1/ns").interval_ns, 1);
    }

    #[test]
    fn rejects_bad_rates_naming_the_problem() {
        let err = |s: &str| s.parse::<RateSpec>().unwrap_err();
        let cases: &[(&str, RateError, &str)] = &[
            ("0/min", RateError::ZeroCount, "at least 1"),
            ("10/fortnight", RateError::Unit, "unknown time unit"),
            ("x/min", RateError::Count, "whole number"),
            ("-1/min", RateError::Count, "whole number"),
            ("10", RateError::Syntax, "COUNT/UNIT"),
            ("", RateError::Syntax, "COUNT/UNIT"),
            ("/min", RateError::Syntax, "COUNT/UNIT"),
            ("10/", RateError::Syntax, "COUNT/UNIT"),
            ("10/0min", RateError::Unit, "unknown time unit"),
            (
                "10/min burst 0",
                RateError::ZeroBurst,
                "burst must be at least 1",
            ),
            (
                "10/min burst",
                RateError::Burst,
                "burst must be a whole number",
            ),
            (
                "10/min burst x",
                RateError::Burst,
                "burst must be a whole number",
            ),
            ("10/min 5", RateError::Syntax, "COUNT/UNIT"),
            ("10/min burst 5 6", RateError::Syntax, "COUNT/UNIT"),
            ("2/ns", RateError::TooFast, "one connection per nanosecond"),
            ("99999999999999999999/min", RateError::TooLarge, "too large"),
            ("1/999999999999d", RateError::TooLarge, "too large"),
            ("1/d burst 99999999", RateError::TooLarge, "too large"),
            (
                "1/s burst 99999999999999999999",
                RateError::TooLarge,
                "too large",
            ),
        ];
        for &(s, want, msg) in cases {
            let got = err(s);
            assert_eq!(got, want, "{s:?}");
            assert!(got.to_string().contains(msg), "{s:?}: {got}");
        }
        assert_eq!(RateSpec::new(0, SEC, 5), Err(RateError::ZeroCount));
        assert_eq!(RateSpec::new(1, SEC, 0), Err(RateError::ZeroBurst));
        assert_eq!(RateSpec::new(u64::MAX, SEC, 1), Err(RateError::TooFast));
        assert_eq!(RateSpec::new(1, u64::MAX, 2), Err(RateError::TooLarge));
        assert_eq!(RateSpec::new(1, (1 << 62) + 1, 1), Err(RateError::TooLarge));
        assert!(RateSpec::new(1, 1 << 62, 1).is_ok());
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10/min burst 5",
            "5/s burst 5",
            "100/h burst 1",
            "1/d burst 3",
            "3/s burst 2",
            "90/min burst 10",
            "1/7s burst 4",
            "1/1234ms burst 1",
            "40/min burst 1",
            "142857142/s burst 1",
        ] {
            let spec: RateSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(spec.to_string().parse::<RateSpec>(), Ok(spec));
        }
        // Other spellings show canonically.
        for (s, shown) in [
            ("10/m", "10/min burst 5"),
            ("60/min", "1/s burst 5"),
            ("2/d", "2/d burst 5"),
            ("1/12h burst 2", "2/d burst 2"),
            ("6/hour", "6/h burst 5"),
            ("3/10s", "18/min burst 5"),
            ("1/1500ms", "40/min burst 5"),
            ("1/7ns", "142857142/s burst 5"),
        ] {
            let spec: RateSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), shown, "{s}");
            assert_eq!(shown.parse::<RateSpec>(), Ok(spec), "{s}");
        }
        // Any spec `new` builds round-trips.
        let mut rng = 7;
        for _ in 0..10_000 {
            let count = splitmix64(&mut rng) % 1_000 + 1;
            let period = splitmix64(&mut rng) % (1_000 * SEC) + count;
            let burst = splitmix64(&mut rng) % 100 + 1;
            let spec = RateSpec::new(count, period, burst).unwrap();
            assert_eq!(spec.to_string().parse::<RateSpec>(), Ok(spec), "{spec}");
        }
    }
}
