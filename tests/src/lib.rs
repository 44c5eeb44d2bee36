//! Shared harness for lockdown's integration tests. Every test here needs root: they load BPF
//! programs and create network namespaces. Kernel-state tests run one at a time
//! (`--test-threads=1`, see `cargo xtask test`).

pub mod bg;
pub mod cli;
pub mod model;
pub mod netns;
pub mod packets;
pub mod testrun;
pub mod units;
