//! The host reference model: lockdown's shared decision logic ([`lockdown_common::verdict`]) over
//! plain collections instead of BPF maps.
//!
//! The LPM trie is emulated as a set of [`CidrKey`]s: a lookup matches iff some stored key of the
//! same family, protocol and port has a prefix no longer than the lookup's and its first
//! `prefix_len - 32` address bits equal the lookup address's.

use std::collections::{BTreeSet, HashMap};

use lockdown_common::{
    config::Config,
    counters::Counter,
    flow::{FlowKey, FlowValue, FragKey, FragValue},
    rules::{AllowRule, CidrKey, PORT_TABLE_ENTRIES},
    verdict::{self, Decision, Tables},
};
use lockdown_user::handles::compile;

use crate::testrun::Datapath;

/// The allowlist of the differential test (`tests/model_vs_bpf.rs`), and of the regressions it
/// finds (`tests/verdict.rs`): open ports, ranges, and source CIDRs of every length, both families.
pub const DIFF_RULES: &[&str] = &[
    "tcp/22",
    "udp/53",
    "tcp/443 from 0.0.0.0/0",
    "tcp/8080 from 198.51.100.0/24",
    "tcp/8080 from 2001:db8:f00::/48",
    "tcp/8000-8010 from 10.0.0.0/8",
    "udp/5000 from 203.0.113.0/28",
    "udp/5000 from fe80::/10",
    "udp/40000-40001",
    "tcp/1-5 from 2001:db8::/32",
    "tcp/80 from 192.0.2.10/32",
    "udp/123 from 2001:db8::2/128",
];

/// The model's tables. `touched_*` log every key the last packet looked up or wrote.
#[derive(Clone, Debug)]
pub struct HostTables {
    pub config: Config,
    pub flows: HashMap<FlowKey, FlowValue>,
    pub ports: Vec<u64>,
    pub cidrs: BTreeSet<CidrKey>,
    pub frags: HashMap<FragKey, FragValue>,
    pub touched_flows: Vec<FlowKey>,
    pub touched_frags: Vec<FragKey>,
    /// The time the next decision runs at (`CLOCK_MONOTONIC_COARSE` ns).
    pub now: u64,
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8; 16], b: &[u8; 16], bits: u32) -> bool {
    let bits = bits.min(128) as usize;
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl HostTables {
    /// Tables for `rules` under `config`, with empty flow and fragment tables.
    pub fn from_rules(config: Config, rules: &BTreeSet<AllowRule>) -> Self {
        let (ports, cidrs) =
            compile(rules).unwrap_or_else(|e| panic!("compiling {rules:?}: {e:#}"));
        Self {
            config,
            flows: HashMap::new(),
            ports,
            cidrs,
            frags: HashMap::new(),
            touched_flows: Vec::new(),
            touched_frags: Vec::new(),
            now: 0,
        }
    }

    /// A copy of everything the datapath decides with: config, port table, CIDR trie, flows and
    /// fragments.
    pub fn snapshot(dp: &Datapath) -> Self {
        let h = &dp.handles;
        let config = h
            .read_config()
            .unwrap_or_else(|e| panic!("reading the config: {e:#}"));
        let ports = (0..PORT_TABLE_ENTRIES)
            .map(|i| {
                h.ports
                    .get(&i, 0)
                    .unwrap_or_else(|e| panic!("reading port entry {i}: {e}"))
            })
            .collect();
        let cidrs = h
            .cidrs
            .keys()
            .map(|k| {
                let k = k.unwrap_or_else(|e| panic!("listing the CIDR trie: {e}"));
                let d = k.data();
                let mut addr = [0u8; 16];
                addr.copy_from_slice(&d[4..]);
                CidrKey {
                    prefix_len: k.prefix_len(),
                    family: d[0],
                    proto: d[1],
                    port_be: [d[2], d[3]],
                    addr,
                }
            })
            .collect();
        Self {
            config,
            flows: dp.flows().into_iter().collect(),
            ports,
            cidrs,
            frags: dp.frag_entries().into_iter().collect(),
            touched_flows: Vec::new(),
            touched_frags: Vec::new(),
            now: 0,
        }
    }

    /// Decides an inbound frame, as the XDP program does.
    pub fn ingress(&mut self, frame: &[u8], now: u64) -> Decision {
        self.touched_flows.clear();
        self.touched_frags.clear();
        self.now = now;
        verdict::ingress(frame, self)
    }

    /// Learns from an outbound frame, as the TC program does.
    pub fn egress(&mut self, frame: &[u8], now: u64) -> Option<Counter> {
        self.touched_flows.clear();
        self.touched_frags.clear();
        self.now = now;
        verdict::egress(frame, self)
    }
}

impl Tables for HostTables {
    fn config(&self) -> &Config {
        &self.config
    }

    fn flow_mut(&mut self, key: &FlowKey) -> Option<&mut FlowValue> {
        self.touched_flows.push(*key);
        self.flows.get_mut(key)
    }

    fn flow_insert(&mut self, key: &FlowKey, value: &FlowValue) {
        self.touched_flows.push(*key);
        self.flows.insert(*key, *value);
    }

    fn port_entry(&self, index: u32) -> u64 {
        self.ports.get(index as usize).copied().unwrap_or(0)
    }

    fn cidr_match(&self, key: &CidrKey) -> bool {
        self.cidrs.iter().any(|k| {
            k.family == key.family
                && k.proto == key.proto
                && k.port_be == key.port_be
                && k.prefix_len >= CidrKey::HEADER_BITS
                && k.prefix_len <= key.prefix_len
                && prefix_eq(&k.addr, &key.addr, k.prefix_len - CidrKey::HEADER_BITS)
        })
    }

    fn frag_get(&self, key: &FragKey) -> Option<FragValue> {
        self.frags.get(key).copied()
    }

    fn frag_insert(&mut self, key: &FragKey, value: &FragValue) {
        self.touched_frags.push(*key);
        self.frags.insert(*key, *value);
    }

    fn now(&mut self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use lockdown_common::flow::{FAMILY_V4, FAMILY_V6, PROTO_TCP};

    use super::*;
    use crate::testrun::rules;

    #[test]
    fn prefixes() {
        let a = [0xff; 16];
        let mut b = [0xff; 16];
        b[1] = 0xfe;
        assert!(prefix_eq(&a, &b, 15));
        assert!(!prefix_eq(&a, &b, 16));
        assert!(prefix_eq(&a, &b, 0));
    }

    #[test]
    fn cidr_emulation() {
        let t = HostTables::from_rules(
            Config::DEFAULT,
            &rules(&[
                "tcp/22 from 10.0.0.0/8",
                "tcp/23 from 2001:db8::/32",
                "tcp/24 from 0.0.0.0/0",
            ]),
        );
        let v4 = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a);
            b
        };
        assert!(t.cidr_match(&CidrKey::lookup(
            FAMILY_V4,
            PROTO_TCP,
            22,
            v4([10, 9, 8, 7])
        )));
        assert!(!t.cidr_match(&CidrKey::lookup(
            FAMILY_V4,
            PROTO_TCP,
            22,
            v4([11, 9, 8, 7])
        )));
        assert!(!t.cidr_match(&CidrKey::lookup(
            FAMILY_V4,
            PROTO_TCP,
            23,
            v4([10, 9, 8, 7])
        )));
        assert!(t.cidr_match(&CidrKey::lookup(FAMILY_V4, PROTO_TCP, 24, v4([1, 2, 3, 4]))));
        assert!(!t.cidr_match(&CidrKey::lookup(FAMILY_V6, PROTO_TCP, 24, [0; 16])));
        let mut six = [0u8; 16];
        six[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        assert!(t.cidr_match(&CidrKey::lookup(FAMILY_V6, PROTO_TCP, 23, six)));
        six[3] = 0xb9;
        assert!(!t.cidr_match(&CidrKey::lookup(FAMILY_V6, PROTO_TCP, 23, six)));
    }
}
