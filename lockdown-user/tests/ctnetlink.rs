//! `ctnetlink::dump` against the real kernel. Needs root.
//!
//! Each test runs in a thread that `unshare(CLONE_NEWNET)`s into a network namespace of its own,
//! and checks that it did before it runs anything: the commands it spawns (`ip`, `nft`) inherit
//! the thread's namespace. Nothing touches the host's namespace, and all traffic is on its
//! loopback. The namespace has no name and no mount: it lives as long as the thread and the
//! sockets opened in it, so it is gone when the test ends, however it ends; there is nothing to
//! delete (the same holds for the nft rules made in it).

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
};

use lockdown_user::host::ctnetlink::{
    self, CtEntry, IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, NFNL_SUBSYS_CTNETLINK, PROTO_TCP,
    PROTO_UDP, TCP_CONNTRACK_ESTABLISHED,
};

use lockdown_testbed::{host, netns};

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Conntrack only tracks a namespace once some hook needs it: a `ct` expression does.
const TRACK: &str = "
table inet ld_ct_test {
    chain out {
        type filter hook output priority 0; policy accept;
        ct state new,established accept
    }
}";

/// Runs `f` in a new network namespace with `lo` up and `ruleset` (nft syntax, may be empty)
/// loaded; panics in `f` propagate.
fn in_private_netns<T: Send>(ruleset: &'static str, f: impl FnOnce() -> T + Send) -> T {
    netns::in_private_netns("ctnetlink", move || {
        if !ruleset.is_empty() {
            host::must("nft", &["-f", "-"], Some(ruleset));
        }
        f()
    })
}

/// A TCP connection from `ip` to `ip:connect_port`, accepted on `listener`, with a byte each way:
/// (client, server side, client's port).
fn tcp_pair(ip: IpAddr, listener: &TcpListener, connect_port: u16) -> (TcpStream, TcpStream, u16) {
    let mut client = TcpStream::connect(SocketAddr::new(ip, connect_port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let mut b = [0u8; 1];
    client.write_all(b"q").unwrap();
    server.read_exact(&mut b).unwrap();
    server.write_all(b"r").unwrap();
    client.read_exact(&mut b).unwrap();
    let port = client.local_addr().unwrap().port();
    (client, server, port)
}

/// A UDP request and its answer from `ip` to `ip:port`: (client, server, client's port).
fn udp_exchange(ip: IpAddr, port: u16) -> (UdpSocket, UdpSocket, u16) {
    let server = UdpSocket::bind(SocketAddr::new(ip, port)).unwrap();
    let client = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
    client.send_to(b"q", (ip, port)).unwrap();
    let mut b = [0u8; 8];
    let (_, from) = server.recv_from(&mut b).unwrap();
    server.send_to(b"r", from).unwrap();
    client.recv_from(&mut b).unwrap();
    let client_port = client.local_addr().unwrap().port();
    (client, server, client_port)
}

/// The one entry of `proto` whose original tuple is `ip:sport -> ip:dport`.
fn find(entries: &[CtEntry], proto: u8, ip: IpAddr, sport: u16, dport: u16) -> CtEntry {
    let found: Vec<_> = entries
        .iter()
        .filter(|e| {
            e.proto == proto
                && e.orig.src == ip
                && e.orig.dst == ip
                && e.orig.sport == sport
                && e.orig.dport == dport
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one proto {proto} entry {ip}:{sport} -> {ip}:{dport}; the dump: {entries:#?}"
    );
    *found[0]
}

#[test]
fn dumps_tcp_and_udp_on_ipv4_and_ipv6() {
    in_private_netns(TRACK, || {
        let mut keep = Vec::new();
        let mut want = Vec::new();
        for (ip, port) in [(LO4, 5001), (LO6, 5002)] {
            let listener = TcpListener::bind(SocketAddr::new(ip, port)).unwrap();
            let (c, s, client_port) = tcp_pair(ip, &listener, port);
            keep.push((c, s, listener));
            want.push((PROTO_TCP, ip, client_port, port));
        }
        let mut keep_udp = Vec::new();
        for (ip, port) in [(LO4, 6001), (LO6, 6002)] {
            let (c, s, client_port) = udp_exchange(ip, port);
            keep_udp.push((c, s));
            want.push((PROTO_UDP, ip, client_port, port));
        }

        let entries = ctnetlink::dump()
            .expect("dump")
            .expect("conntrack is built into this kernel");
        for (proto, ip, sport, dport) in want {
            let e = find(&entries, proto, ip, sport, dport);
            assert_eq!(
                (e.reply.src, e.reply.dst, e.reply.sport, e.reply.dport),
                (ip, ip, dport, sport),
                "the reply tuple mirrors the original without NAT: {e:?}"
            );
            assert_ne!(e.status & IPS_SEEN_REPLY, 0, "IPS_SEEN_REPLY: {e:?}");
            if proto == PROTO_TCP {
                assert_eq!(e.tcp_state, Some(TCP_CONNTRACK_ESTABLISHED), "{e:?}");
                assert_ne!(e.status & IPS_ASSURED, 0, "IPS_ASSURED: {e:?}");
            } else {
                assert_eq!(e.tcp_state, None, "{e:?}");
            }
            assert_eq!(e.status & IPS_DST_NAT, 0, "{e:?}");
        }
        drop((keep, keep_udp));
    });
}

#[test]
fn dnat_keeps_the_published_port_in_the_original_tuple() {
    // Clients connect to port 8080 (the "published" port); nft sends them to 9090 (the
    // "container"). Locally generated packets take the nat output hook.
    const DNAT: &str = "
    table inet ld_ct_test {
        chain out {
            type nat hook output priority -100; policy accept;
            ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 127.0.0.1:9090
            ip6 daddr ::1 tcp dport 8080 dnat ip6 to [::1]:9090
        }
    }";
    in_private_netns(DNAT, || {
        let mut keep = Vec::new();
        let mut want = Vec::new();
        for ip in [LO4, LO6] {
            let listener = TcpListener::bind(SocketAddr::new(ip, 9090)).unwrap();
            let (c, s, client_port) = tcp_pair(ip, &listener, 8080);
            assert_eq!(
                c.peer_addr().unwrap().port(),
                8080,
                "the client sees the published port"
            );
            keep.push((c, s, listener));
            want.push((ip, client_port));
        }
        let entries = ctnetlink::dump().expect("dump").expect("conntrack");
        for (ip, client_port) in want {
            let e = find(&entries, PROTO_TCP, ip, client_port, 8080);
            assert_eq!(e.reply.src, ip, "{e:?}");
            assert_eq!(
                e.reply.sport, 9090,
                "the reply comes from the backend port: {e:?}"
            );
            assert_eq!((e.reply.dst, e.reply.dport), (ip, client_port), "{e:?}");
            assert_ne!(e.status & IPS_DST_NAT, 0, "IPS_DST_NAT: {e:?}");
            assert_ne!(e.status & IPS_SEEN_REPLY, 0, "IPS_SEEN_REPLY: {e:?}");
            assert_eq!(e.tcp_state, Some(TCP_CONNTRACK_ESTABLISHED), "{e:?}");
        }
        drop(keep);
    });
}

/// Without any hook that needs conntrack, a namespace tracks nothing: the dump is empty, not
/// "conntrack absent".
#[test]
fn an_untracked_namespace_dumps_empty() {
    in_private_netns("", || {
        let listener = TcpListener::bind((LO4, 5001)).unwrap();
        let _pair = tcp_pair(LO4, &listener, 5001);
        assert_eq!(ctnetlink::dump().expect("dump"), Some(vec![]));
    });
}

/// This kernel has ctnetlink built in, so "absent" is proved on its look-alikes: the same request
/// to a subsystem this kernel does not register (`NFNL_SUBSYS_HOOK`, 12: this kernel is built
/// without `CONFIG_NETFILTER_NETLINK_HOOK`; 200: past `NFNL_SUBSYS_COUNT`) takes the same
/// `nfnetlink_rcv_msg` path as a missing ctnetlink (`EINVAL`); a netlink protocol number nobody
/// registers fails `socket` as a kernel without nfnetlink does (`EPROTONOSUPPORT`). Both read as
/// `Ok(None)`.
#[test]
fn missing_ctnetlink_reads_as_absent() {
    in_private_netns(TRACK, || {
        const NETLINK_NETFILTER: isize = 12;
        const UNREGISTERED_NETLINK_PROTOCOL: isize = 30;
        assert!(
            ctnetlink::dump_from(NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK)
                .unwrap()
                .is_some()
        );
        for subsys in [12, 200] {
            assert_eq!(
                ctnetlink::dump_from(NETLINK_NETFILTER, subsys).unwrap(),
                None,
                "subsystem {subsys}"
            );
        }
        assert_eq!(
            ctnetlink::dump_from(UNREGISTERED_NETLINK_PROTOCOL, NFNL_SUBSYS_CTNETLINK).unwrap(),
            None
        );
    });
}

/// Without `CAP_NET_ADMIN` the kernel refuses the dump with `EPERM`: an error that says so, not
/// "absent". Only this test's thread drops the capability (capabilities are per thread), and the
/// thread ends with the test.
#[test]
fn without_cap_net_admin_the_dump_is_an_error() {
    in_private_netns(TRACK, || {
        drop_cap_net_admin();
        let e = ctnetlink::dump().expect_err("a dump without CAP_NET_ADMIN");
        let text = format!("{e:#}");
        assert!(
            text.contains("CAP_NET_ADMIN") && text.contains("Operation not permitted"),
            "{text}"
        );
    });
}

/// Drops `CAP_NET_ADMIN` from the calling thread's effective set (capset(2), version 3).
fn drop_cap_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs, as capget(2) specifies; pid 0
    // is the calling thread.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()),
            0,
            "capget: {}",
            std::io::Error::last_os_error()
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(
            libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()),
            0,
            "capset: {}",
            std::io::Error::last_os_error()
        );
    }
}
