//! The policy as the operator writes it: the configuration file and the translation of an
//! iptables ruleset into one.

pub mod file;
pub mod import;
