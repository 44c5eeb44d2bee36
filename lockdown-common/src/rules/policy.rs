//! A whole policy — the allow rules and the rates of rated ports — and its one compilation into
//! what the datapath reads: the port table, the source-CIDR trie entries and the per-port rates.
//! The loader writes the result to the maps; the reference model decides with it.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    contract::{
        allow::{AllowRule, CidrKey},
        rate::RateSpec,
    },
    rules::{
        allow::{self, CompileError, PortSpec},
        rate::{self, RateCompileError},
    },
};

/// The operator's policy: allow rules, and the rates of the ports they open that are rated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub rules: BTreeSet<AllowRule>,
    pub rates: BTreeMap<PortSpec, RateSpec>,
}

/// A policy as the maps hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// The packed port table ([`crate::contract::maps::PORTS`]), rated ports marked.
    pub ports: Vec<u64>,
    /// The source-CIDR trie's entries ([`crate::contract::maps::CIDRS`]).
    pub cidrs: BTreeSet<CidrKey>,
    /// The per-port rates ([`crate::contract::maps::RATES`]): `rate_key` → rate.
    pub rates: BTreeMap<u32, RateSpec>,
}

/// Why a policy does not compile; the message names the problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    Rules(CompileError),
    Rates(RateCompileError),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rules(e) => e.fmt(f),
            Self::Rates(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for PolicyError {}

impl From<CompileError> for PolicyError {
    fn from(e: CompileError) -> Self {
        Self::Rules(e)
    }
}

impl From<RateCompileError> for PolicyError {
    fn from(e: RateCompileError) -> Self {
        Self::Rates(e)
    }
}

impl Policy {
    pub const fn new(rules: BTreeSet<AllowRule>, rates: BTreeMap<PortSpec, RateSpec>) -> Self {
        Self { rules, rates }
    }

    /// The maps' contents for this policy, or what makes it impossible. Nothing is written.
    pub fn compile(&self) -> Result<Compiled, PolicyError> {
        let (mut ports, cidrs) = allow::compile(&self.rules)?;
        let rates = rate::compile(&self.rules, &self.rates, &mut ports)?;
        Ok(Compiled {
            ports,
            cidrs,
            rates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{
        allow::{PORT_RATED, port_slot, slot_flags},
        flow::PROTO_TCP,
    };

    #[test]
    fn rules_and_rates_compile_together_or_not_at_all() {
        let rules: BTreeSet<_> = [AllowRule::parse("tcp/22", None).unwrap()].into();
        let mut rates = BTreeMap::new();
        rates.insert(
            PortSpec::parse("tcp/22").unwrap(),
            RateSpec::parse_rate("10/min", 5).unwrap(),
        );
        let c = Policy::new(rules.clone(), rates).compile().unwrap();
        let (i, shift) = port_slot(PROTO_TCP, 22).unwrap();
        assert_ne!(slot_flags(c.ports[i as usize], shift) & PORT_RATED, 0);
        assert_eq!(c.rates.len(), 1);
        let mut bad = BTreeMap::new();
        bad.insert(
            PortSpec::parse("tcp/23").unwrap(),
            RateSpec::parse_rate("1/s", 1).unwrap(),
        );
        let e = Policy::new(rules, bad).compile().unwrap_err();
        assert!(
            matches!(e, PolicyError::Rates(RateCompileError::NotAllowed(_))),
            "{e}"
        );
    }
}
