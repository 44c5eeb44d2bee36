//! The one path by which the allowlist of live maps changes — the lockout guard, then seeding, then
//! the rules — taken by `up`, `up --replace`, `allow del` and the confirm rollback.
//!
//! The guard comes first, before anything is written. Seeding comes before the rules: the open
//! connections that the new rules will not vouch for get their flow entries, so they survive the
//! change, as with iptables' conntrack. Then the rules and rates are written, all or nothing.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use lockdown_common::{
    contract::{allow::AllowRule, rate::RateSpec},
    rules::{allow::PortSpec, deny::DenyNet},
};

use crate::{
    attach::{guard, seed},
    datapath::handles::Handles,
};

/// What a rule change does with the per-port rates.
#[derive(Clone, Copy, Debug)]
pub enum Rates<'a> {
    /// Keep the rates of the ports the new rules still allow entirely (`allow del`).
    Kept,
    /// Replace every rate with these.
    Set(&'a BTreeMap<PortSpec, RateSpec>),
}

/// A new allowlist that has passed the lockout guard (or been let past it): the only way to write
/// rules to live maps.
#[derive(Clone, Copy, Debug)]
pub struct RuleChange<'a> {
    rules: &'a BTreeSet<AllowRule>,
    rates: Rates<'a>,
}

impl<'a> RuleChange<'a> {
    /// Checks `rules`, and the blocklist entries `deny` that come with them, against the lockout
    /// guard, unless `force`.
    pub fn guarded(
        rules: &'a BTreeSet<AllowRule>,
        rates: Rates<'a>,
        deny: &[DenyNet],
        force: bool,
    ) -> Result<Self> {
        if !force {
            guard::check(rules, deny)?;
        }
        Ok(Self { rules, rates })
    }

    /// Returns to an allowlist that was in force before (the confirm rollback): the guard does not
    /// stand in the way of undoing a change.
    pub const fn restoring(rules: &'a BTreeSet<AllowRule>, rates: Rates<'a>) -> Self {
        Self { rules, rates }
    }

    /// The new allowlist.
    pub const fn rules(&self) -> &'a BTreeSet<AllowRule> {
        self.rules
    }

    /// Seeds the open connections that the new rules will not vouch for, then writes the rules and
    /// rates.
    pub fn apply(&self, handles: &mut Handles) -> Result<()> {
        seed::seed(handles, self.rules)?;
        match self.rates {
            Rates::Kept => handles.set_rules(self.rules),
            Rates::Set(rates) => handles.set_policy(self.rules, rates),
        }
    }
}
