//! Seeding: the open connections that must survive an attach, or the removal of the allow rule that
//! let them in, written into the flow tables before the rules change. A connection the (new) rules
//! vouch for needs no entry; every other one gets one.
//!
//! Two sources, as the origin sees them on the wire:
//! - the sockets of this network namespace (`/proc/net/{tcp,tcp6,udp,udp6}`): the origin's own
//!   connections, accepted or opened;
//! - the kernel's conntrack table (ctnetlink), when conntrack runs: connections that reach the
//!   NIC through NAT from another namespace, such as a container's DNAT'd published port (its
//!   socket is in the container's namespace, under the container's address and port) or a
//!   masqueraded container's outbound connection.
//!
//! Not covered: a connection through NAT when conntrack does not run in this namespace (then no
//! NAT is possible either), and a container whose traffic reaches the NIC without NAT (a macvlan
//! or routed container address): its sockets are only in its own namespace's tables.

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::{Context as _, Result};
use lockdown_common::{
    contract::{
        allow::AllowRule,
        flow::{FLOW_FLAG_SEEDED, FlowKey, FlowState, FlowValue, PROTO_TCP, PROTO_UDP, addr_bytes},
    },
    rules::allow::vouched,
};

use crate::{
    datapath::handles::Handles,
    host::{
        ctnetlink::{self, CtEntry, CtTuple, IPS_SEEN_REPLY},
        sockets,
    },
};

/// Where the seeded entries came from, for the log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seeded {
    pub sockets: usize,
    pub conntrack: usize,
    /// Whether conntrack could be read (`false`: not running in this namespace's kernel).
    pub conntrack_available: bool,
}

/// The flow entry of a connection between `local` (the origin's side, as on the wire) and
/// `remote`.
fn entry(
    proto: u8,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: FlowState,
    now: u64,
) -> Option<(FlowKey, FlowValue)> {
    if local.0.is_loopback() || remote.0.is_loopback() || remote.0.is_unspecified() {
        return None;
    }
    let ((family, l), (remote_family, r)) = (addr_bytes(local.0), addr_bytes(remote.0));
    if family != remote_family {
        return None;
    }
    let key = FlowKey {
        local: l,
        remote: r,
        local_port: local.1,
        remote_port: remote.1,
        proto,
        family,
        _pad: 0,
    };
    let mut value = FlowValue::new(state, now, 0);
    value.flags = FLOW_FLAG_SEEDED;
    Some((key, value))
}

/// The flow entry of a conntrack entry, if it is a connection worth keeping, oriented as the NIC
/// sees it: a connection to one of `local` addresses (inbound, DNAT'd or not) keeps its original
/// tuple; any other (outbound, masqueraded or not) its reply tuple, whose destination is then the
/// origin's address.
pub fn conntrack_entry(
    e: &CtEntry,
    local: &BTreeSet<IpAddr>,
    now: u64,
) -> Option<(FlowKey, FlowValue)> {
    use ctnetlink::{
        TCP_CONNTRACK_CLOSE_WAIT, TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_FIN_WAIT,
        TCP_CONNTRACK_LAST_ACK, TCP_CONNTRACK_TIME_WAIT,
    };
    let state = match (e.proto, e.tcp_state) {
        (PROTO_TCP, Some(TCP_CONNTRACK_ESTABLISHED)) => FlowState::TcpEstablished,
        (
            PROTO_TCP,
            Some(
                TCP_CONNTRACK_FIN_WAIT
                | TCP_CONNTRACK_CLOSE_WAIT
                | TCP_CONNTRACK_LAST_ACK
                | TCP_CONNTRACK_TIME_WAIT,
            ),
        ) => FlowState::TcpClosing,
        (PROTO_UDP, _) if e.status & IPS_SEEN_REPLY != 0 => FlowState::UdpReplied,
        _ => return None,
    };
    // The tuple whose destination is the origin: its destination is the local end.
    let t: &CtTuple = if local.contains(&e.orig.dst) {
        &e.orig
    } else if local.contains(&e.reply.dst) {
        &e.reply
    } else {
        // Between two other hosts (forwarded), or between containers on a bridge: it never
        // crosses this origin's NIC as its own traffic.
        return None;
    };
    entry(e.proto, (t.dst, t.dport), (t.src, t.sport), state, now)
}

/// The addresses of this network namespace's interfaces.
fn local_addresses() -> Result<BTreeSet<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs().context("listing the interfaces' addresses")?;
    Ok(addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        })
        .collect())
}

/// Writes the `entries` that `rules` do not vouch for; entries already present are left alone.
/// Returns how many were added.
pub fn insert(
    handles: &mut Handles,
    entries: impl IntoIterator<Item = (FlowKey, FlowValue)>,
    rules: &BTreeSet<AllowRule>,
) -> Result<usize> {
    const BPF_NOEXIST: u64 = 1;
    let mut added = 0;
    for (key, value) in entries.into_iter().filter(|(k, _)| !vouched(rules, k)) {
        match handles
            .flows
            .insert(value.table(), &key, &value, BPF_NOEXIST)
        {
            Ok(()) => added += 1,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).context("seeding the flow tables"),
        }
    }
    Ok(added)
}

/// Seeds the flow tables with the open connections that `rules` will not vouch for, from both
/// sources, so they survive the change of rules — an attach, or the removal of the allow rule
/// that let them in: a connection the allowlist vouches for has no entry, so it would otherwise
/// be cut. Call it before the rules change.
pub fn seed(handles: &mut Handles, rules: &BTreeSet<AllowRule>) -> Result<()> {
    let n = seed_at(handles, rules, crate::clock_ns())?;
    log::info!(
        "seeded {} flows from sockets and {} from conntrack{}",
        n.sockets,
        n.conntrack,
        if n.conntrack_available {
            ""
        } else {
            " (conntrack not available)"
        }
    );
    Ok(())
}

/// [`seed`] at time `now`: how many entries came from each source.
fn seed_at(handles: &mut Handles, rules: &BTreeSet<AllowRule>, now: u64) -> Result<Seeded> {
    let from_sockets: Vec<_> = sockets::all()?
        .iter()
        .filter_map(|s| {
            let state = sockets::seed_state(s)?;
            entry(
                s.proto,
                (s.local, s.local_port),
                (s.remote, s.remote_port),
                state,
                now,
            )
        })
        .collect();
    let mut out = Seeded {
        sockets: insert(handles, from_sockets, rules)?,
        ..Seeded::default()
    };
    if let Some(entries) = ctnetlink::dump().context("reading the conntrack table")? {
        let local = local_addresses()?;
        let from_conntrack: Vec<_> = entries
            .iter()
            .filter_map(|e| conntrack_entry(e, &local, now))
            .collect();
        out.conntrack = insert(handles, from_conntrack, rules)?;
        out.conntrack_available = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> CtTuple {
        CtTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
        }
    }

    fn local() -> BTreeSet<IpAddr> {
        ["192.0.2.1", "172.17.0.1", "127.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    #[test]
    fn a_published_port_is_seeded_as_the_nic_sees_it() {
        // A client connects to the origin's 8080, DNAT'd to a container's 80.
        let e = CtEntry {
            proto: PROTO_TCP,
            orig: tuple("198.51.100.7", 40000, "192.0.2.1", 8080),
            reply: tuple("172.17.0.2", 80, "198.51.100.7", 40000),
            tcp_state: Some(ctnetlink::TCP_CONNTRACK_ESTABLISHED),
            status: IPS_SEEN_REPLY,
        };
        let (k, v) = conntrack_entry(&e, &local(), 5).expect("seeded");
        assert_eq!(&k.local[..4], &[192, 0, 2, 1]);
        assert_eq!((k.local_port, k.remote_port), (8080, 40000));
        assert_eq!(&k.remote[..4], &[198, 51, 100, 7]);
        assert_eq!(v.state(), Some(FlowState::TcpEstablished));
        assert_eq!(v.flags, FLOW_FLAG_SEEDED);
    }

    #[test]
    fn a_masqueraded_connection_is_seeded_from_its_reply_tuple() {
        let e = CtEntry {
            proto: PROTO_UDP,
            orig: tuple("172.17.0.2", 5353, "203.0.113.9", 53),
            reply: tuple("203.0.113.9", 53, "192.0.2.1", 61000),
            tcp_state: None,
            status: IPS_SEEN_REPLY,
        };
        let (k, v) = conntrack_entry(&e, &local(), 5).expect("seeded");
        assert_eq!(&k.local[..4], &[192, 0, 2, 1]);
        assert_eq!((k.local_port, k.remote_port), (61000, 53));
        assert_eq!(v.state(), Some(FlowState::UdpReplied));
    }

    #[test]
    fn half_open_forwarded_and_loopback_entries_are_not_seeded() {
        let mut e = CtEntry {
            proto: PROTO_TCP,
            orig: tuple("198.51.100.7", 40000, "192.0.2.1", 22),
            reply: tuple("192.0.2.1", 22, "198.51.100.7", 40000),
            tcp_state: Some(ctnetlink::TCP_CONNTRACK_SYN_SENT),
            status: 0,
        };
        assert!(conntrack_entry(&e, &local(), 5).is_none(), "half open");
        e.tcp_state = Some(ctnetlink::TCP_CONNTRACK_FIN_WAIT);
        assert_eq!(
            conntrack_entry(&e, &local(), 5).map(|(_, v)| v.table()),
            Some(lockdown_common::contract::flow::FlowTable::Closing)
        );
        e.orig = tuple("10.9.0.1", 1, "10.9.0.2", 2);
        e.reply = tuple("10.9.0.2", 2, "10.9.0.1", 1);
        assert!(conntrack_entry(&e, &local(), 5).is_none(), "forwarded");
        e.orig = tuple("127.0.0.1", 1, "127.0.0.1", 2);
        e.reply = tuple("127.0.0.1", 2, "127.0.0.1", 1);
        assert!(conntrack_entry(&e, &local(), 5).is_none(), "loopback");
        let unreplied = CtEntry {
            proto: PROTO_UDP,
            tcp_state: None,
            status: 0,
            ..e
        };
        assert!(conntrack_entry(&unreplied, &local(), 5).is_none());
    }
}
