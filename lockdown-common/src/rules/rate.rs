//! Rate limits' text form (`10/min burst 5`, parsed into a [`RateSpec`]) and their compilation:
//! which allowed ports limit new connections per source, and at what rate (the operator's
//! `allow add tcp/22 --rate 10/min --burst 5`), into the port table's [`PORT_RATED`] bits and the
//! per-port entries of [`crate::contract::maps::RATES`].
//!
//! A rate belongs to a port: every rule that admits connections to a rated port is limited by
//! it, whatever source CIDR the rule names. Rates apply to TCP connection requests only.

use core::{fmt, str::FromStr};

#[cfg(any(test, feature = "std"))]
use crate::contract::{allow::port_slot, flow::PROTO_TCP};
use crate::{
    contract::{
        allow::{AllowRule, PORT_RATED, rate_key},
        rate::{RateSpec, SEC},
    },
    rules::allow::PortSpec,
};

/// The burst of a rate written without one.
pub const DEFAULT_BURST: u64 = 5;

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

/// A set of rates the maps cannot hold, or that means nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateCompileError {
    /// Rates limit TCP connection requests; UDP has none.
    NotTcp(PortSpec),
    /// No allow rule admits connections to these ports.
    NotAllowed(PortSpec),
    /// Two rates for one port.
    Conflict(PortSpec, PortSpec),
    /// More rated ports than the map holds.
    TooManyPorts(u32),
}

impl fmt::Display for RateCompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::contract::maps::MAX_RATED_PORTS;
        match self {
            Self::NotTcp(s) => write!(
                f,
                "{s}: rates limit TCP connection requests; UDP datagrams have no connection to limit"
            ),
            Self::NotAllowed(s) => write!(
                f,
                "{s}: no allow rule admits these ports, so there is nothing to limit"
            ),
            Self::Conflict(a, b) => write!(
                f,
                "{a} and {b} give one port two rates; a port has one rate"
            ),
            Self::TooManyPorts(n) => write!(
                f,
                "rates cover {n} ports (at most {MAX_RATED_PORTS}); limit fewer ports"
            ),
        }
    }
}

impl core::error::Error for RateCompileError {}

/// Checks `rates` against `rules`, marks [`PORT_RATED`] in the port table `ports` and returns
/// the per-port entries: `(rate_key, spec)`, in key order.
#[cfg(any(test, feature = "std"))]
pub fn compile(
    rules: &std::collections::BTreeSet<AllowRule>,
    rates: &std::collections::BTreeMap<PortSpec, RateSpec>,
    ports: &mut [u64],
) -> Result<std::collections::BTreeMap<u32, RateSpec>, RateCompileError> {
    use crate::contract::maps::MAX_RATED_PORTS;
    let mut out = std::collections::BTreeMap::new();
    let mut owner: std::collections::BTreeMap<u32, PortSpec> = std::collections::BTreeMap::new();
    for (spec, rate) in rates {
        if spec.proto != PROTO_TCP {
            return Err(RateCompileError::NotTcp(*spec));
        }
        for port in spec.lo..=spec.hi {
            if !rules
                .iter()
                .any(|r| PortSpec::of(r).contains(spec.proto, port))
            {
                return Err(RateCompileError::NotAllowed(*spec));
            }
            let key = rate_key(spec.proto, port);
            if let Some(other) = owner.insert(key, *spec) {
                return Err(RateCompileError::Conflict(other, *spec));
            }
            out.insert(key, *rate);
            if out.len() > MAX_RATED_PORTS as usize {
                let n = rates.keys().map(|s| u32::from(s.hi - s.lo) + 1).sum();
                return Err(RateCompileError::TooManyPorts(n));
            }
        }
    }
    for key in out.keys() {
        let (proto, port) = ((key >> 16) as u8, *key as u16);
        if let Some((index, shift)) = port_slot(proto, port)
            && let Some(entry) = ports.get_mut(index as usize)
        {
            *entry |= u64::from(PORT_RATED) << shift;
        }
    }
    Ok(out)
}

/// The rates the per-port entries stand for, ports with one rate merged into ranges.
#[cfg(any(test, feature = "std"))]
pub fn ranges(
    entries: &std::collections::BTreeMap<u32, RateSpec>,
) -> std::collections::BTreeMap<PortSpec, RateSpec> {
    let mut out: Vec<(PortSpec, RateSpec)> = Vec::new();
    for (key, rate) in entries {
        let (proto, port) = ((key >> 16) as u8, *key as u16);
        match out.last_mut() {
            Some((s, r))
                if s.proto == proto && u32::from(s.hi) + 1 == u32::from(port) && r == rate =>
            {
                s.hi = port;
            }
            _ => out.push((
                PortSpec {
                    proto,
                    lo: port,
                    hi: port,
                },
                *rate,
            )),
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::ratelimit::sim::splitmix64;

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

#[cfg(test)]
mod compile_tests {
    extern crate std;
    use std::{
        collections::{BTreeMap, BTreeSet},
        string::ToString as _,
        vec,
    };

    use super::*;
    use crate::contract::allow::{PORT_TABLE_ENTRIES, slot_flags};

    fn rules(specs: &[&str]) -> BTreeSet<AllowRule> {
        specs
            .iter()
            .map(|s| AllowRule::parse(s, None).unwrap())
            .collect()
    }

    fn rates(specs: &[(&str, &str)]) -> BTreeMap<PortSpec, RateSpec> {
        specs
            .iter()
            .map(|(p, r)| {
                (
                    PortSpec::parse(p).unwrap(),
                    RateSpec::parse_rate(r, 5).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn rated_ports_are_marked_and_read_back_as_ranges() {
        let mut ports = vec![0u64; PORT_TABLE_ENTRIES as usize];
        let r = rates(&[("tcp/22", "10/min"), ("tcp/8000-8002", "1/s")]);
        let entries = compile(&rules(&["tcp/22", "tcp/8000-8100"]), &r, &mut ports).unwrap();
        assert_eq!(entries.len(), 4);
        for (port, rated) in [
            (22u16, true),
            (23, false),
            (8000, true),
            (8002, true),
            (8003, false),
        ] {
            let (i, shift) = port_slot(PROTO_TCP, port).unwrap();
            assert_eq!(
                slot_flags(ports[i as usize], shift) & PORT_RATED != 0,
                rated,
                "port {port}"
            );
        }
        assert_eq!(ranges(&entries), r);
    }

    #[test]
    fn rates_that_mean_nothing_or_conflict_are_refused() {
        let mut ports = vec![0u64; PORT_TABLE_ENTRIES as usize];
        let all = rules(&["tcp/22", "udp/53", "tcp/8000-8100"]);
        let e = compile(&all, &rates(&[("udp/53", "1/s")]), &mut ports).unwrap_err();
        assert_eq!(
            e,
            RateCompileError::NotTcp(PortSpec::parse("udp/53").unwrap())
        );
        let e = compile(&all, &rates(&[("tcp/23", "1/s")]), &mut ports).unwrap_err();
        assert!(e.to_string().contains("tcp/23: no allow rule"), "{e}");
        let e = compile(
            &all,
            &rates(&[("tcp/8000-8010", "1/s"), ("tcp/8005", "2/s")]),
            &mut ports,
        )
        .unwrap_err();
        assert!(e.to_string().contains("a port has one rate"), "{e}");
        let wide = rules(&["tcp/1-65535"]);
        let e = compile(&wide, &rates(&[("tcp/1-9000", "1/s")]), &mut ports).unwrap_err();
        assert!(matches!(e, RateCompileError::TooManyPorts(9000)), "{e}");
    }
}
