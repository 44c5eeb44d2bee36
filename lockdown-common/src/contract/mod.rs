//! The ground floor: everything the eBPF object and the loader must agree on byte for byte — map
//! names, pin names and sizes ([`maps`]), and every `#[repr(C)]` type that crosses the kernel/user
//! boundary. Nothing here imports from any other floor.

pub mod allow;
pub mod config;
pub mod counters;
pub mod events;
pub mod flow;
pub mod maps;
pub mod rate;
pub mod syncookie;
