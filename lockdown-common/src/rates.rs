//! Which allowed ports limit new connections per source, and at what rate: the operator's
//! `allow add tcp/22 --rate 10/min --burst 5`, compiled into the port table's [`PORT_RATED`] bits
//! and the per-port entries of [`crate::maps::RATES`] that [`crate::ratelimit`] reads.
//!
//! A rate belongs to a port: every rule that admits connections to a rated port is limited by
//! it, whatever source CIDR the rule names. Rates apply to TCP connection requests only.

use core::fmt;

use crate::rules::{AllowRule, RuleError, parse_spec, proto_name};
#[cfg(any(test, feature = "std"))]
use crate::{flow::PROTO_TCP, ratelimit::RateSpec, rules::port_slot};

/// Port-table flag: new TCP connections to this port are limited per source.
pub const PORT_RATED: u8 = 1 << 3;

/// The key of [`crate::maps::RATES`] for one port.
#[inline(always)]
pub const fn rate_key(proto: u8, port: u16) -> u32 {
    (proto as u32) << 16 | port as u32
}

/// A protocol and port range, as in a rule's spec (`tcp/22`, `tcp/8000-8100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSpec {
    pub proto: u8,
    pub lo: u16,
    pub hi: u16,
}

impl PortSpec {
    pub fn parse(spec: &str) -> Result<Self, RuleError> {
        let (proto, lo, hi) = parse_spec(spec)?;
        Ok(Self { proto, lo, hi })
    }

    /// The ports of a rule.
    pub const fn of(rule: &AllowRule) -> Self {
        Self {
            proto: rule.proto,
            lo: rule.port_lo,
            hi: rule.port_hi,
        }
    }

    pub const fn contains(&self, proto: u8, port: u16) -> bool {
        self.proto == proto && self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortSpec {
    /// `tcp/22`, `udp/8000-8100`: a rule's spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", proto_name(self.proto), self.lo)?;
        if self.hi != self.lo {
            write!(f, "-{}", self.hi)?;
        }
        Ok(())
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
        use crate::maps::MAX_RATED_PORTS;
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
    use crate::maps::MAX_RATED_PORTS;
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
    extern crate std;
    use std::{
        collections::{BTreeMap, BTreeSet},
        string::ToString as _,
        vec,
    };

    use super::*;
    use crate::rules::{PORT_TABLE_ENTRIES, slot_flags};

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
