//! Everything the lockdown kernel programs and the `lockdown` loader must agree on, written once:
//! map names, key and value layouts, counter indices, and the pure decision logic that both the
//! eBPF programs and the host-side reference model run.
//!
//! The hot path is split by layer: [`parse`] → [`conntrack`] (state transitions) and
//! [`flowtable`] (where flows live) → [`policy`] → [`verdict`]; [`fastpath`] answers the
//! commonest packet shape from one flat header read, as the full path would.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod config;
pub mod conntrack;
pub mod counters;
pub mod deny;
pub mod events;
pub mod fastpath;
pub mod flow;
pub mod flowtable;
pub mod maps;
#[cfg(any(test, feature = "std"))]
pub mod model;
pub mod parse;
pub mod policy;
pub mod ratelimit;
pub mod rates;
pub mod rules;
pub mod verdict;

/// Implements `aya::Pod` for the plain-old-data types that cross the kernel/user boundary.
#[cfg(feature = "user")]
macro_rules! impl_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: `#[repr(C)]`, every field is an integer or an integer array, and the
            // layout has no implicit padding (checked by `bytemuck::Pod` derive).
            unsafe impl aya::Pod for $t {}
        )*
    };
}

#[cfg(feature = "user")]
impl_pod!(
    flow::FlowKey,
    flow::FlowKey4,
    flow::FlowValue,
    rules::AllowRule,
    rules::CidrKey,
    counters::CounterValue,
    config::Config,
    flow::FragKey,
    flow::FragValue,
    events::DropEvent,
    events::LogWindow,
    ratelimit::RateSpec,
);
