//! The seam every stage runs against: [`Tables`], the state lockdown decides with — BPF maps in the
//! kernel (lockdown-ebpf), plain collections on the host ([`crate::model::HostTables`]).

use crate::contract::{
    allow::CidrKey,
    config::Config,
    flow::{FlowKey, FlowTable, FlowValue, FragKey, FragValue},
    rate::RateSpec,
    syncookie::{CookieConfig, PortFlood},
};

/// What a segment would reach on the origin: what `bpf_skc_lookup_tcp` finds for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// Nothing: no connection and no listener.
    None,
    /// A listening socket only: the segment belongs to no connection.
    Listener,
    /// A connection (established, in its handshake, or in TIME-WAIT).
    Connection,
}

/// The state lockdown decides with: the maps in the kernel, plain collections on the host.
pub trait Tables {
    fn config(&self) -> &Config;
    /// The live or expired entry for `key` in `table` (of the key's family), to read and update
    /// in place.
    fn flow_mut(&mut self, table: FlowTable, key: &FlowKey) -> Option<&mut FlowValue>;
    /// Writes an entry; `false` if the table refused it (the kernel implementation counts that).
    fn flow_insert(&mut self, table: FlowTable, key: &FlowKey, value: &FlowValue) -> bool;
    fn flow_remove(&mut self, table: FlowTable, key: &FlowKey);
    /// One `u64` entry of the packed port table.
    fn port_entry(&self, index: u32) -> u64;
    /// Longest-prefix match in the source-CIDR trie.
    fn cidr_match(&self, key: &CidrKey) -> bool;
    fn frag_get(&self, key: &FragKey) -> Option<FragValue>;
    fn frag_insert(&mut self, key: &FragKey, value: &FragValue);
    /// One word of the blocklist's address filter ([`crate::stages::deny::filter_slot`]).
    fn deny_filter(&self, word: u32) -> u64;
    /// The expiry of the blocklist's whole-address entry for `src`, if any.
    fn deny_exact(&self, family: u8, src: &[u8; 16]) -> Option<u64>;
    /// The expiry of the longest blocklist prefix covering `key`'s address, if any.
    fn deny_net(&self, key: &CidrKey) -> Option<u64>;
    /// The rate of a rated port ([`crate::contract::allow::PORT_RATED`]).
    fn rate_spec(&self, proto: u8, port: u16) -> Option<RateSpec>;
    /// The rate-limit sketch's hash seed.
    fn sketch_seed(&self) -> u64;
    /// One bucket of the rate-limit sketch.
    fn sketch_bucket(&mut self, index: u32) -> Option<&mut u64>;
    /// Whether this program has the SYN-cookie stage (the kernel's single-buffer program does
    /// not: see `lockdown_ebpf`); `false` leaves every cookie path out of the decision.
    fn cookies(&self) -> bool;
    /// The SYN-cookie configuration, if the loader wrote one.
    fn cookie_config(&self) -> Option<&CookieConfig>;
    /// The SYN-flood detector of TCP port `port`.
    fn syn_port(&mut self, port: u16) -> Option<&mut PortFlood>;
    /// The socket an inbound TCP segment from `src`:`sport` to `dst`:`dport` would reach.
    fn socket(&mut self, family: u8, src: &[u8; 16], dst: &[u8; 16], ports: (u16, u16)) -> Socket;
    /// The time (`CLOCK_MONOTONIC_COARSE` ns), read only on the paths that need it: a connection request
    /// to a closed port is decided without it.
    fn now(&mut self) -> u64;
}
