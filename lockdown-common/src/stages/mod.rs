//! The datapath's stages, one module each, in the order a packet meets them. Each runs against
//! the seams ([`crate::packet::Packet`], [`crate::tables::Tables`]) and may use the stages before
//! it; [`crate::verdict`] composes them.
//!
//! 1. [`parse`]: Ethernet, VLAN, IPv4/IPv6 (extension headers), L4 — bounds-checked cursors.
//! 2. [`deny`]: the blocklist, right after the IP header.
//! 3. [`frag`]: later fragments follow their first fragment's verdict.
//! 4. [`policy`]: the allowlist (port table, source-CIDR trie).
//! 5. [`ratelimit`]: per-source rate of new connections to rated ports.
//! 6. [`conntrack`]: flow state transitions and where flows live.
//! 7. [`related`]: ICMP errors about a tracked flow.
//! 8. [`syncookie`]: under a SYN flood, SYNs to an allowed port answered with a cookie, and the
//!    handshake's ACK checked and handed to the listener.

pub mod conntrack;
pub mod deny;
pub mod frag;
pub mod parse;
pub mod policy;
pub mod ratelimit;
pub mod related;
pub mod syncookie;
