//! The host-side rule language: how the operator writes allow rules, rates and blocklist entries,
//! and how a whole [`policy::Policy`] compiles into the maps the stages read. Never in the kernel.

pub mod allow;
pub mod deny;
pub mod policy;
pub mod rate;
