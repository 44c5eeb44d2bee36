//! Everything the lockdown kernel programs and the `lockdown` loader must agree on, written once,
//! and the pure decision logic both the eBPF programs and the host-side reference model run.
//!
//! Floors, from the ground up (a module imports only from its own floor or below):
//! - [`contract`]: map names, pin names, sizes and every `#[repr(C)]` type crossing the kernel/user
//!   boundary;
//! - the seams the stages run against: [`packet::Packet`] (packet bytes) and [`tables::Tables`]
//!   (the maps);
//! - [`stages`]: one module per stage, in the order a packet meets them;
//! - [`fastpath`]: the commonest packet shape decided from one flat header read;
//! - [`verdict`]: the stages composed into the ingress decision and the egress learning step;
//! - beside the datapath, host only: [`rules`] (the operator's rule language and its compilation)
//!   and [`model`] (the same [`verdict`] over host tables).
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod contract;
pub mod fastpath;
#[cfg(any(test, feature = "std"))]
pub mod model;
pub mod packet;
#[cfg(any(test, feature = "std"))]
pub mod rules;
pub mod stages;
pub mod tables;
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
    contract::flow::FlowKey,
    contract::flow::FlowKey4,
    contract::flow::FlowValue,
    contract::allow::AllowRule,
    contract::allow::CidrKey,
    contract::counters::CounterValue,
    contract::config::Config,
    contract::flow::FragKey,
    contract::flow::FragValue,
    contract::events::DropEvent,
    contract::events::LogWindow,
    contract::rate::RateSpec,
    contract::syncookie::CookieConfig,
    contract::syncookie::PortFlood,
    contract::syncookie::HandoffMeta,
);
