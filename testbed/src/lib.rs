//! The one harness lockdown's integration tests (`tests/`), benchmarks (`bench/`) and root tests
//! (`lockdown-user/tests/`) share. Everything here needs root: it creates network namespaces and
//! loads BPF programs.
//!
//! From the ground up: [`host`] (commands, CPUs, the interrupt flag) · [`netns`] (entering and
//! running in namespaces, private ones too) · [`pair`] (two namespaces joined by a veth, with the
//! bench's CPU steering as an option) · [`traffic`] (servers and clients inside them) · [`flood`]
//! (the spoofed flood: SYNs or forged ACKs, IPv4 or IPv6) and [`hping`] (hping3's, bounded) ·
//! [`ssh`] (a real sshd in the origin, logins from fresh sources, `ss -tie`) · [`packets`]
//! (frames for test runs) · [`cli`] and [`bg`] (the
//! `lockdown` binary with a test's own pin root) · [`origin`] (one test's world) · `testrun`
//! (BPF_PROG_TEST_RUN on lockdown's programs, with the `datapath` feature, which also gives [`cli`]
//! its view of the egress attachment).

pub mod bg;
pub mod cli;
pub mod flood;
pub mod host;
pub mod hping;
pub mod netns;
pub mod origin;
pub mod packets;
pub mod pair;
pub mod ssh;
#[cfg(feature = "datapath")]
pub mod testrun;
pub mod traffic;
