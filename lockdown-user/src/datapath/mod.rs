//! The datapath as the loader sees it: loading the eBPF object, its pins, typed handles on its
//! maps (the policy, the flows, the blocklist), the build record, and upgrades across map layouts.

pub mod blocklist;
pub mod build_id;
pub mod flows;
pub mod handles;
pub mod load;
pub mod migrate;
pub mod pins;
