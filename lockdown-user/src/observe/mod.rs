//! What lockdown reports about a locked-down interface: `status` and the Prometheus metrics.

pub mod metrics;
pub mod report;
