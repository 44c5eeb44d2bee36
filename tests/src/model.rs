//! The reference model ([`lockdown_common::model`]) as the integration tests use it: the rule set
//! they share, and a snapshot of a loaded datapath's tables.

use lockdown_common::contract::allow::{CidrKey, PORT_TABLE_ENTRIES};
pub use lockdown_common::model::HostTables;

use lockdown_testbed::testrun::Datapath;

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

/// A copy of everything the datapath decides with: config, port table, CIDR trie, flows and
/// fragments.
pub fn snapshot(dp: &Datapath) -> HostTables {
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
    let mut t = HostTables::new(config, ports, cidrs);
    t.load_flows(
        dp.flow_entries()
            .into_iter()
            .map(|e| (e.table, e.key, e.value)),
    );
    t.frags = dp.frag_entries().into_iter().collect();
    t
}
