//! The reference model: the shared decision logic ([`crate::verdict`]) over plain collections
//! instead of BPF maps — packet bytes and the tables in; verdict, reason and table updates out.
//! The integration tests run it against the loaded programs on 100 000+ packets and require zero
//! disagreements; the unit tests below exercise every path on the host.
//!
//! The LPM trie is emulated as a set of [`CidrKey`]s: a lookup matches iff some stored key of the
//! same family, protocol and port has a prefix no longer than the lookup's and its first
//! `prefix_len - 32` address bits equal the lookup address's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    contract::{
        allow::{AllowRule, CidrKey},
        config::{Config, FLAG_DENY, FLAG_DENY_NETS},
        counters::Counter,
        flow::{FlowKey, FlowTable, FlowValue, FragKey, FragValue},
        maps::SKETCH_ENTRIES,
        rate::RateSpec,
        syncookie::{CookieConfig, PortFlood},
    },
    packet::Frame,
    rules::{
        allow::{CompileError, PortSpec},
        deny::DenyNet,
        policy::{Policy, PolicyError},
    },
    tables::{Socket, Tables},
    verdict::{self, Decision},
};

/// A TCP 4-tuple as an inbound segment carries it: family, source, destination, source port,
/// destination port.
pub type SocketKey = (u8, [u8; 16], [u8; 16], u16, u16);
/// The model's tables. `touched_*` log every key the last packet looked up or wrote. Each flow
/// table stands for both families' maps of that kind (the kernel splits them by family only to key
/// IPv4 flows with 16 bytes).
#[derive(Clone, Debug)]
pub struct HostTables {
    pub config: Config,
    /// The live flow tables.
    pub flows: HashMap<FlowKey, FlowValue>,
    /// The closing flow tables.
    pub closing: HashMap<FlowKey, FlowValue>,
    pub ports: Vec<u64>,
    pub cidrs: BTreeSet<CidrKey>,
    pub frags: HashMap<FragKey, FragValue>,
    /// The blocklist: each entry with its expiry.
    pub deny: BTreeMap<DenyNet, u64>,
    /// The rated ports: [`crate::contract::allow::rate_key`] → rate.
    pub rates: BTreeMap<u32, RateSpec>,
    /// The rate-limit sketch: empty until [`HostTables::set_rates`] (8 MiB), as a missing bucket
    /// admits.
    pub sketch: Vec<u64>,
    pub sketch_seed: u64,
    pub touched_flows: Vec<(FlowTable, FlowKey)>,
    pub touched_frags: Vec<FragKey>,
    /// The time the next decision runs at (`CLOCK_MONOTONIC_COARSE` ns).
    pub now: u64,
    /// Whether the program modelled has the SYN-cookie stage (`lockdown_ingress` has,
    /// `lockdown_linear` not).
    pub cookies: bool,
    /// The SYN-cookie configuration (`None`: never written, as a zeroed map entry: off).
    pub cookie: Option<CookieConfig>,
    /// The per-port SYN-flood detectors.
    pub syn_ports: HashMap<u16, PortFlood>,
    /// The origin's sockets as `bpf_skc_lookup_tcp` finds them: connections by 4-tuple...
    pub connections: BTreeSet<SocketKey>,
    /// ...and listening TCP ports (any address, both families).
    pub listeners: BTreeSet<u16>,
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
    pub fn from_rules(config: Config, rules: &BTreeSet<AllowRule>) -> Result<Self, CompileError> {
        let (ports, cidrs) = crate::rules::allow::compile(rules)?;
        Ok(Self::new(config, ports, cidrs))
    }

    /// Tables with the given port table and CIDR entries, and empty flow and fragment tables.
    pub fn new(config: Config, ports: Vec<u64>, cidrs: BTreeSet<CidrKey>) -> Self {
        Self {
            config,
            flows: HashMap::new(),
            closing: HashMap::new(),
            ports,
            cidrs,
            frags: HashMap::new(),
            deny: BTreeMap::new(),
            rates: BTreeMap::new(),
            sketch: Vec::new(),
            sketch_seed: 0,
            touched_flows: Vec::new(),
            touched_frags: Vec::new(),
            now: 0,
            cookies: true,
            cookie: None,
            syn_ports: HashMap::new(),
            connections: BTreeSet::new(),
            listeners: BTreeSet::new(),
        }
    }

    /// The flow table of kind `table`.
    pub fn table(&self, table: FlowTable) -> &HashMap<FlowKey, FlowValue> {
        match table {
            FlowTable::Live => &self.flows,
            FlowTable::Closing => &self.closing,
        }
    }

    fn table_mut(&mut self, table: FlowTable) -> &mut HashMap<FlowKey, FlowValue> {
        match table {
            FlowTable::Live => &mut self.flows,
            FlowTable::Closing => &mut self.closing,
        }
    }

    /// Replaces both flow tables with `entries`.
    pub fn load_flows(
        &mut self,
        entries: impl IntoIterator<Item = (FlowTable, FlowKey, FlowValue)>,
    ) {
        self.flows.clear();
        self.closing.clear();
        for (table, key, value) in entries {
            self.table_mut(table).insert(key, value);
        }
    }

    /// Every entry of both flow tables, with its table.
    pub fn flow_entries(&self) -> impl Iterator<Item = (FlowTable, FlowKey, FlowValue)> + '_ {
        FlowTable::ALL
            .into_iter()
            .flat_map(move |t| self.table(t).iter().map(move |(k, v)| (t, *k, *v)))
    }

    /// Adds (or replaces) a blocklist entry and sets the flags the loader would.
    pub fn deny_add(&mut self, net: DenyNet, expires_ns: u64) {
        self.config.flags |= FLAG_DENY;
        if !net.is_host() {
            self.config.flags |= FLAG_DENY_NETS;
        }
        self.deny.insert(net, expires_ns);
    }

    /// Sets the rates of `rates` over the rules' port table (as the loader does) and allocates
    /// the sketch.
    pub fn set_rates(
        &mut self,
        rules: &BTreeSet<AllowRule>,
        rates: &BTreeMap<PortSpec, RateSpec>,
        seed: u64,
    ) -> Result<(), PolicyError> {
        let compiled = Policy::new(rules.clone(), rates.clone()).compile()?;
        self.rates = compiled.rates;
        self.ports = compiled.ports;
        if self.sketch.is_empty() {
            self.sketch = vec![0; SKETCH_ENTRIES as usize];
        }
        self.sketch_seed = seed;
        Ok(())
    }

    /// Decides an inbound frame, as the XDP program does.
    pub fn ingress(&mut self, frame: &[u8], now: u64) -> Decision {
        self.touched_flows.clear();
        self.touched_frags.clear();
        self.now = now;
        verdict::ingress(frame, self)
    }

    /// Decides an inbound frame as the XDP programs do together: the ingress program, then the
    /// cookie program on what it hands over, which may rewrite the frame (a SYN-ACK to transmit)
    /// or put the hand-off metadata in front of it.
    pub fn ingress_frame(&mut self, frame: &mut Frame, now: u64) -> Decision {
        self.touched_flows.clear();
        self.touched_frags.clear();
        self.now = now;
        verdict::ingress_answer(frame, self)
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

    fn flow_mut(&mut self, table: FlowTable, key: &FlowKey) -> Option<&mut FlowValue> {
        self.touched_flows.push((table, *key));
        self.table_mut(table).get_mut(key)
    }

    fn flow_insert(&mut self, table: FlowTable, key: &FlowKey, value: &FlowValue) -> bool {
        self.touched_flows.push((table, *key));
        self.table_mut(table).insert(*key, *value);
        true
    }

    fn flow_remove(&mut self, table: FlowTable, key: &FlowKey) {
        self.touched_flows.push((table, *key));
        self.table_mut(table).remove(key);
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

    fn deny_exact(&self, family: u8, src: &[u8; 16]) -> Option<u64> {
        let host = DenyNet {
            family,
            prefix_len: if family == crate::contract::flow::FAMILY_V4 {
                32
            } else {
                128
            },
            addr: *src,
        };
        self.deny.get(&host).copied()
    }

    fn deny_filter(&self, word: u32) -> u64 {
        self.deny
            .keys()
            .filter(|n| n.is_host())
            .map(|n| crate::stages::deny::filter_slot(n.family, &n.addr))
            .filter(|(w, _)| *w == word)
            .fold(0, |acc, (_, m)| acc | m)
    }

    fn deny_net(&self, key: &CidrKey) -> Option<u64> {
        let addr = crate::contract::flow::ip_addr(key.family, &key.addr);
        self.deny
            .iter()
            .filter(|(n, _)| !n.is_host() && n.contains(addr))
            .max_by_key(|(n, _)| n.prefix_len)
            .map(|(_, e)| *e)
    }

    fn rate_spec(&self, proto: u8, port: u16) -> Option<RateSpec> {
        self.rates
            .get(&crate::contract::allow::rate_key(proto, port))
            .copied()
    }

    fn sketch_seed(&self) -> u64 {
        self.sketch_seed
    }

    fn sketch_bucket(&mut self, index: u32) -> Option<&mut u64> {
        self.sketch.get_mut(index as usize)
    }

    fn cookies(&self) -> bool {
        self.cookies
    }

    fn cookie_config(&self) -> Option<&CookieConfig> {
        self.cookie.as_ref()
    }

    fn syn_port(&mut self, port: u16) -> Option<&mut PortFlood> {
        Some(self.syn_ports.entry(port).or_default())
    }

    fn socket(
        &mut self,
        family: u8,
        src: &[u8; 16],
        dst: &[u8; 16],
        (sport, dport): (u16, u16),
    ) -> Socket {
        if self
            .connections
            .contains(&(family, *src, *dst, sport, dport))
        {
            Socket::Connection
        } else if self.listeners.contains(&dport) {
            Socket::Listener
        } else {
            Socket::None
        }
    }

    fn now(&mut self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::PacketBuilder;

    use super::*;
    use crate::{
        contract::{
            config::FLAG_MONITOR,
            flow::{FAMILY_V4, FAMILY_V6, FlowState, PROTO_TCP},
        },
        stages::parse::{TCP_ACK, TCP_RST, TCP_SYN},
    };

    fn rules(specs: &[&str]) -> BTreeSet<AllowRule> {
        specs
            .iter()
            .map(|s| match s.split_once(" from ") {
                Some((spec, from)) => AllowRule::parse(spec, Some(from)),
                None => AllowRule::parse(s, None),
            })
            .collect::<Result<_, _>>()
            .expect("test rules parse")
    }

    const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const NOW: u64 = 1_000_000_000_000;

    /// A TCP segment between `src` and `dst` with `flags`, `seq` and `ack`.
    fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, seq: u32, ack: u32) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 64240);
        if flags & TCP_SYN != 0 {
            b = b.syn();
        }
        if flags & TCP_ACK != 0 {
            b = b.ack(ack);
        }
        if flags & TCP_RST != 0 {
            b = b.rst();
        }
        if flags & crate::stages::parse::TCP_FIN != 0 {
            b = b.fin();
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).expect("building a TCP frame");
        out
    }

    fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .udp(src.1, dst.1);
        let mut out = Vec::new();
        b.write(&mut out, b"query").expect("building a UDP frame");
        out
    }

    fn model(specs: &[&str]) -> HostTables {
        HostTables::from_rules(Config::DEFAULT, &rules(specs)).expect("rules compile")
    }

    #[test]
    fn new_connections_follow_the_allowlist() {
        let mut t = model(&["tcp/22"]);
        let syn = |port| tcp((REMOTE, 40000), (LOCAL, port), TCP_SYN, 1, 0);
        assert_eq!(t.ingress(&syn(22), NOW).reason, Counter::PassAllowed);
        let d = t.ingress(&syn(8080), NOW);
        assert_eq!((d.reason, d.pass), (Counter::DropNew, false));
        assert!(t.flows.is_empty(), "inbound packets never create state");
        t.config.flags |= FLAG_MONITOR;
        let d = t.ingress(&syn(8080), NOW);
        assert_eq!(
            (d.reason, d.pass),
            (Counter::DropNew, true),
            "monitor passes, still counts"
        );
    }

    #[test]
    fn an_outbound_connection_lets_only_its_own_handshake_in() {
        let mut t = model(&["tcp/22"]);
        let out = (LOCAL, 50000);
        let peer = (REMOTE, 443);
        assert_eq!(
            t.egress(&tcp(out, peer, TCP_SYN, 1000, 0), NOW),
            Some(Counter::EgressFlowsCreated)
        );
        let forged = tcp(peer, out, TCP_SYN | TCP_ACK, 7, 999);
        assert_eq!(t.ingress(&forged, NOW).reason, Counter::DropInvalid);
        let synack = tcp(peer, out, TCP_SYN | TCP_ACK, 7, 1001);
        assert_eq!(t.ingress(&synack, NOW).reason, Counter::PassEstablished);
        let data = tcp(peer, out, TCP_ACK, 8, 1001);
        assert_eq!(t.ingress(&data, NOW + 1).reason, Counter::PassEstablished);
        let (_, key) = t.touched_flows[0];
        assert_eq!(t.flows[&key].state(), Some(FlowState::TcpEstablished));
        let rst = tcp(peer, out, TCP_RST | TCP_ACK, 9, 1001);
        assert_eq!(t.ingress(&rst, NOW + 2).reason, Counter::PassEstablished);
        assert!(
            !t.flows.contains_key(&key),
            "a reset flow leaves the live table"
        );
        assert_eq!(t.closing[&key].state(), Some(FlowState::TcpClosed));
        // 10 s after the RST the entry is gone for good.
        let late = NOW + 2 + 11_000_000_000;
        assert_eq!(t.ingress(&data, late).reason, Counter::DropNew);
    }

    #[test]
    fn replies_to_spoofed_syns_create_nothing() {
        let mut t = model(&["tcp/22"]);
        let synack = tcp((LOCAL, 22), (REMOTE, 40000), TCP_SYN | TCP_ACK, 5, 2);
        assert_eq!(t.egress(&synack, NOW), None);
        let rst = tcp((LOCAL, 22), (REMOTE, 40000), TCP_RST | TCP_ACK, 0, 2);
        assert_eq!(t.egress(&rst, NOW), None);
        assert!(t.flows.is_empty());
    }

    #[test]
    fn the_allowlist_vouches_for_accepted_connections_without_state() {
        let mut t = model(&["tcp/8080", "tcp/22 from 10.0.0.0/8"]);
        let client = (REMOTE, 40000);
        let ack = tcp((LOCAL, 8080), client, TCP_ACK, 6, 2);
        assert_eq!(t.egress(&ack, NOW), None);
        assert!(
            t.touched_flows.is_empty(),
            "no flow lookup for a vouched packet"
        );
        let data = tcp(client, (LOCAL, 8080), TCP_ACK, 2, 7);
        assert_eq!(t.ingress(&data, NOW).reason, Counter::PassAllowed);
        assert!(t.touched_flows.is_empty());
        // A source the rule does not vouch for: the origin's segment is tracked, as for a
        // connection accepted before its rule was narrowed.
        let outside = tcp((LOCAL, 22), client, TCP_ACK, 6, 2);
        assert_eq!(t.egress(&outside, NOW), Some(Counter::EgressFlowsCreated));
        let inside = tcp(
            (LOCAL, 22),
            (Ipv4Addr::new(10, 1, 2, 3), 40000),
            TCP_ACK,
            6,
            2,
        );
        assert_eq!(t.egress(&inside, NOW), None);
        assert_eq!(t.flows.len(), 1);
        // Without the rule, only state lets the connection's packets in.
        t = model(&["tcp/22"]);
        assert_eq!(t.ingress(&data, NOW).reason, Counter::DropNew);
    }

    #[test]
    fn closing_flows_move_to_their_own_table_and_never_evict_live_ones() {
        let mut t = model(&["tcp/22"]);
        let out = (LOCAL, 50000);
        let peer = (REMOTE, 443);
        t.egress(&tcp(out, peer, TCP_SYN, 1000, 0), NOW);
        let synack = tcp(peer, out, TCP_SYN | TCP_ACK, 7, 1001);
        assert_eq!(t.ingress(&synack, NOW).reason, Counter::PassEstablished);
        assert_eq!(t.flows.len(), 1);
        let fin = tcp(out, peer, TCP_ACK | crate::stages::parse::TCP_FIN, 1001, 8);
        assert_eq!(t.egress(&fin, NOW + 1), None);
        assert!(
            t.flows.is_empty(),
            "a FIN moves the flow out of the live table"
        );
        let (&key, v) = t.closing.iter().next().expect("the closing entry");
        assert_eq!(v.state(), Some(FlowState::TcpClosing));
        assert_eq!(v.created_ns, NOW, "the move keeps the entry's history");
        let last_ack = tcp(peer, out, TCP_ACK, 8, 1002);
        assert_eq!(
            t.ingress(&last_ack, NOW + 2).reason,
            Counter::PassEstablished
        );
        assert_eq!(t.closing[&key].last_seen_ns, NOW + 2);
        // Reusing the 4-tuple for a new connection brings it back to the live table.
        t.egress(&tcp(out, peer, TCP_SYN, 5000, 0), NOW + 3);
        assert!(t.closing.is_empty());
        assert_eq!(t.flows[&key].state(), Some(FlowState::TcpSynSent));
        assert_eq!(t.flows[&key].origin_seq, 5000);
    }

    #[test]
    fn a_packet_in_the_same_clock_tick_writes_nothing() {
        let mut t = model(&["tcp/22"]);
        let out = (LOCAL, 50000);
        let peer = (REMOTE, 443);
        t.egress(&tcp(out, peer, TCP_ACK, 1000, 5), NOW);
        let (&key, &before) = t.flows.iter().next().expect("the entry");
        let data = tcp(peer, out, TCP_ACK, 5, 1000);
        assert_eq!(t.ingress(&data, NOW).reason, Counter::PassEstablished);
        assert_eq!(t.flows[&key], before);
        assert_eq!(
            t.ingress(&data, NOW + 4_000_000).reason,
            Counter::PassEstablished
        );
        assert_eq!(t.flows[&key].last_seen_ns, NOW + 4_000_000);
    }

    #[test]
    fn udp_replies_pass_and_service_ports_learn_nothing() {
        let mut t = model(&["udp/53"]);
        let query = udp((LOCAL, 40000), (REMOTE, 53));
        let reply = udp((REMOTE, 53), (LOCAL, 40000));
        assert_eq!(t.ingress(&reply, NOW).reason, Counter::DropNew);
        assert_eq!(t.egress(&query, NOW), Some(Counter::EgressFlowsCreated));
        assert_eq!(t.ingress(&reply, NOW).reason, Counter::PassEstablished);
        // The origin answering on its allowed port 53 creates no state.
        assert_eq!(t.egress(&udp((LOCAL, 53), (REMOTE, 999)), NOW), None);
        assert_eq!(t.flows.len(), 1);
        // A port opened to some sources only: the origin's own datagram to another destination
        // is an outbound flow like any other.
        let mut t = model(&["udp/51820 from 10.0.0.0/8"]);
        let out = udp((LOCAL, 51820), (REMOTE, 51820));
        assert_eq!(t.egress(&out, NOW), Some(Counter::EgressFlowsCreated));
        let back = udp((REMOTE, 51820), (LOCAL, 51820));
        assert_eq!(t.ingress(&back, NOW).reason, Counter::PassEstablished);
    }

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
        let t = model(&[
            "tcp/22 from 10.0.0.0/8",
            "tcp/23 from 2001:db8::/32",
            "tcp/24 from 0.0.0.0/0",
        ]);
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
