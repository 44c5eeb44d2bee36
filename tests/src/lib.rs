//! What only lockdown's integration tests share (the harness itself is `lockdown-testbed`). Every
//! test here needs root: they load BPF programs and create network namespaces. Kernel-state tests
//! run one at a time (`--test-threads=1`, see `cargo xtask test`).

pub mod model;
pub mod units;
