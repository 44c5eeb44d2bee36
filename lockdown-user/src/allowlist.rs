//! What an allowlist admits, for the host side's own questions: whether a client may open a new
//! connection (the lockout guard), and whether a flow needs no entry because the rules let it in
//! (seeding, and carrying flows over in an upgrade). Pure functions of the rules.

use std::{collections::BTreeSet, net::IpAddr};

use lockdown_common::contract::{
    allow::AllowRule,
    flow::{FlowKey, ip_addr},
};

/// Whether `rules` let `client` send a new `proto` packet to `port`.
pub fn admits(rules: &BTreeSet<AllowRule>, proto: u8, client: IpAddr, port: u16) -> bool {
    rules.iter().any(|r| {
        r.proto == proto
            && (r.port_lo..=r.port_hi).contains(&port)
            && match r.source() {
                None => true,
                Some((net, len)) => in_cidr(client, net, len),
            }
    })
}

/// Whether `rules` vouch for the connection of flow `key`: a new connection from its remote end to
/// its local port would be allowed, so its packets pass without an entry.
pub fn vouched(rules: &BTreeSet<AllowRule>, key: &FlowKey) -> bool {
    admits(
        rules,
        key.proto,
        ip_addr(key.family, &key.remote),
        key.local_port,
    )
}

fn in_cidr(addr: IpAddr, net: IpAddr, len: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use lockdown_common::contract::flow::{PROTO_TCP, addr_bytes};

    use super::*;

    fn rules(list: &[(&str, Option<&str>)]) -> BTreeSet<AllowRule> {
        list.iter()
            .map(|(spec, from)| AllowRule::parse(spec, *from).unwrap())
            .collect()
    }

    #[test]
    fn the_allowlist_vouches_by_port_protocol_and_source() {
        let ((family, local), (_, remote)) = (
            addr_bytes("10.231.0.1".parse().unwrap()),
            addr_bytes("10.231.0.2".parse().unwrap()),
        );
        let k = FlowKey {
            local,
            remote,
            local_port: 22,
            remote_port: 50000,
            proto: PROTO_TCP,
            family,
            _pad: 0,
        };
        assert!(vouched(&rules(&[("tcp/22", None)]), &k));
        assert!(vouched(&rules(&[("tcp/20-30", Some("10.231.0.0/24"))]), &k));
        assert!(!vouched(&rules(&[("tcp/22", Some("10.1.0.0/16"))]), &k));
        assert!(!vouched(&rules(&[("udp/22", None)]), &k));
        assert!(!vouched(&rules(&[("tcp/8080", None)]), &k));
    }

    #[test]
    fn a_client_is_admitted_by_protocol_port_and_source() {
        let client = "10.0.0.9".parse().unwrap();
        assert!(admits(&rules(&[("tcp/22", None)]), PROTO_TCP, client, 22));
        assert!(admits(
            &rules(&[("tcp/2000-3000", Some("10.0.0.0/24"))]),
            PROTO_TCP,
            client,
            2222
        ));
        assert!(!admits(
            &rules(&[("tcp/2222", Some("10.0.1.0/24"))]),
            PROTO_TCP,
            client,
            2222
        ));
        assert!(!admits(
            &rules(&[("tcp/22", None)]),
            PROTO_TCP,
            "fd00::1".parse().unwrap(),
            23
        ));
    }
}
