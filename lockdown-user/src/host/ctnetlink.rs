//! The kernel's conntrack table of the current network namespace, read over ctnetlink
//! (`NETLINK_NETFILTER`, subsystem `NFNL_SUBSYS_CTNETLINK`, `IPCTNL_MSG_CT_GET` with
//! `NLM_F_DUMP`).
//!
//! `/proc/net/tcp` only lists this namespace's own sockets; a connection that the host forwards
//! (a container's published port: DNAT from the host's address to a container in another network
//! namespace) has no socket here, but it has a conntrack entry. Its original tuple is what the
//! client sent, as the host's ingress sees it (destination: the host's address and the published
//! port); its reply tuple is what comes back after NAT (source: the container's address and port).
//!
//! The messages are built and decoded by `netlink-packet-netfilter` (bounds-checked; it masks
//! `NLA_F_NESTED`); the socket is `netlink-sys`. This module only walks the multipart reply and
//! turns each entry's attributes into a [`CtEntry`]: `parse_datagram` is a pure function over the
//! bytes of one `recv`, so it is unit-tested on buffers captured from a real dump.
//!
//! "Conntrack absent" ([`dump`] returns `Ok(None)`). Measured on Linux 6.18, whose ctnetlink is
//! built in, with stand-ins that take the same kernel paths (tests/ctnetlink.rs): an nfnetlink
//! subsystem id this kernel does not register, and a netlink protocol number nobody registers.
//! - `socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)` fails with `EPROTONOSUPPORT` when the kernel
//!   has no nfnetlink (`CONFIG_NETFILTER_NETLINK` off, or `nfnetlink.ko` not loadable);
//! - the dump request is answered by `NLMSG_ERROR` `EINVAL` when nfnetlink is there but no
//!   ctnetlink subsystem is registered (`nf_conntrack_netlink.ko` not loaded and not loadable):
//!   `nfnetlink_rcv_msg` returns `-EINVAL` for an unregistered subsystem (after trying
//!   `request_module("nfnetlink-subsys-1")`, so a loadable module is loaded, not reported absent).
//!   The request is fixed and well formed, so `EINVAL` has no other cause here.
//!
//! A namespace where conntrack is available but nothing needs it (no NAT, no `ct` rule, no
//! `-m conntrack`/`-m state`) tracks nothing: the dump is `Ok(Some(vec![]))`, not `None`.
//! Anything else is an error: `EPERM` (the caller lacks `CAP_NET_ADMIN` over the namespace), a
//! malformed reply, a time-out.

use std::{io, net::IpAddr};

use crate::host::netlink;
use anyhow::{Context as _, Result, anyhow, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Tuple,
    },
};
use netlink_sys::{Socket, protocols::NETLINK_NETFILTER};

/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;

// `enum tcp_conntrack` of linux/netfilter/nf_conntrack_tcp.h (uapi): the numbers ctnetlink reports
// in `CTA_PROTOINFO_TCP_STATE`.
pub const TCP_CONNTRACK_NONE: u8 = 0;
pub const TCP_CONNTRACK_SYN_SENT: u8 = 1;
pub const TCP_CONNTRACK_SYN_RECV: u8 = 2;
pub const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
pub const TCP_CONNTRACK_FIN_WAIT: u8 = 4;
pub const TCP_CONNTRACK_CLOSE_WAIT: u8 = 5;
pub const TCP_CONNTRACK_LAST_ACK: u8 = 6;
pub const TCP_CONNTRACK_TIME_WAIT: u8 = 7;
pub const TCP_CONNTRACK_CLOSE: u8 = 8;
/// `TCP_CONNTRACK_LISTEN` in the enum (obsolete), reused as `TCP_CONNTRACK_SYN_SENT2`: a
/// simultaneous open.
pub const TCP_CONNTRACK_SYN_SENT2: u8 = 9;

// `enum ip_conntrack_status` of linux/netfilter/nf_conntrack_common.h: the bits of `CTA_STATUS`.
/// An expected connection (a helper's related flow).
pub const IPS_EXPECTED: u32 = 1 << 0;
/// Packets have been seen in both directions.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
/// The entry will not be evicted early (TCP: the handshake completed; UDP: a stream).
pub const IPS_ASSURED: u32 = 1 << 2;
/// The entry is in the main table (a dump only shows confirmed entries).
pub const IPS_CONFIRMED: u32 = 1 << 3;
/// Source NAT applies: the reply tuple's destination differs from the original's source.
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// Destination NAT applies: the reply tuple's source differs from the original's destination.
pub const IPS_DST_NAT: u32 = 1 << 5;
/// The entry is being destroyed.
pub const IPS_DYING: u32 = 1 << 9;

/// `NFNL_SUBSYS_CTNETLINK` of linux/netfilter/nfnetlink.h.
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
/// `IPCTNL_MSG_CT_GET` of linux/netfilter/nfnetlink_conntrack.h.
const IPCTNL_MSG_CT_GET: u8 = 1;

/// One direction of a conntrack entry, as the packets of that direction carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

/// One conntrack entry, both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// [`PROTO_TCP`] or [`PROTO_UDP`]; entries of other protocols are skipped.
    pub proto: u8,
    /// The original direction, as the initiator sent it (before NAT).
    pub orig: CtTuple,
    /// The reply direction, as the responder sends it (after NAT: for DNAT its source is the
    /// real backend).
    pub reply: CtTuple,
    /// `CTA_PROTOINFO_TCP_STATE` (`TCP_CONNTRACK_*`); TCP only.
    pub tcp_state: Option<u8>,
    /// `CTA_STATUS`: `IPS_*` bits.
    pub status: u32,
}

/// Dumps the conntrack table of the current network namespace (IPv4 and IPv6; TCP and UDP).
///
/// `Ok(None)` when the kernel has no conntrack netlink interface (`socket` fails with
/// `EPROTONOSUPPORT`, or the dump is refused with `EINVAL`: see the module docs); `Err` on any
/// other failure, e.g. `EPERM` without `CAP_NET_ADMIN`.
pub fn dump() -> Result<Option<Vec<CtEntry>>> {
    dump_from(NETLINK_NETFILTER, NFNL_SUBSYS_CTNETLINK)
}

/// [`dump`] over netlink protocol `protocol` and nfnetlink subsystem `subsys`. Only for tests: on a
/// kernel with ctnetlink built in, an unregistered subsystem or protocol number is how to prove
/// what "absent" reads as.
#[doc(hidden)]
pub fn dump_from(protocol: isize, subsys: u8) -> Result<Option<Vec<CtEntry>>> {
    let mut socket = match Socket::new(protocol) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => {
            log::debug!("conntrack dump: no netlink protocol {protocol} in this kernel ({e})");
            return Ok(None);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening a netlink socket (protocol {protocol})"));
        }
    };
    socket.bind_auto().context("binding the ctnetlink socket")?;
    netlink::set_recv_timeout(&socket)?;

    let mut entries = Vec::new();
    let mut interrupted = false;
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    for (seq, family) in [
        (1, NetfilterProtoFamily::IPv4),
        (2, NetfilterProtoFamily::IPv6),
    ] {
        let what = format!("the conntrack dump request ({family:?})");
        netlink::send(&socket, &request(subsys, family, seq), &what)?;
        loop {
            let datagram = parse_datagram(netlink::recv(&socket, &mut buf, &what)?, seq)
                .with_context(|| format!("decoding the conntrack dump ({family:?})"))?;
            let first_reply = seq == 1 && entries.is_empty();
            entries.extend(datagram.entries);
            interrupted |= datagram.interrupted;
            match datagram.end {
                None => {}
                Some(End::Done) => break,
                // The answer to the very first request: nothing is there to answer it.
                Some(End::Error(errno)) if errno == libc::EINVAL && first_reply => {
                    log::debug!(
                        "conntrack dump: nfnetlink subsystem {subsys} refused with EINVAL: no ctnetlink"
                    );
                    return Ok(None);
                }
                Some(End::Error(errno)) => {
                    let e = io::Error::from_raw_os_error(errno);
                    let hint = if errno == libc::EPERM {
                        " (reading conntrack needs CAP_NET_ADMIN in this network namespace)"
                    } else {
                        ""
                    };
                    return Err(anyhow!(e)).context(format!(
                        "the kernel refused the conntrack dump ({family:?}){hint}"
                    ));
                }
            }
        }
    }
    if interrupted {
        log::warn!("the conntrack table changed during the dump: it may miss or repeat entries");
    }
    Ok(Some(entries))
}

/// The dump request: `nlmsghdr` (type `subsys << 8 | IPCTNL_MSG_CT_GET`, `NLM_F_REQUEST |
/// NLM_F_DUMP`) + `nfgenmsg { family, NFNETLINK_V0, res_id 0 }`, no attributes.
fn request(subsys: u8, family: NetfilterProtoFamily, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    // `Other` carries any subsystem id; for ctnetlink it serializes exactly as
    // `ConntrackMessage::Get(vec![])` does.
    let inner = NetfilterMessageInner::Other {
        subsys: subsys.into(),
        message_type: IPCTNL_MSG_CT_GET,
        attributes: Vec::new(),
    };
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            inner,
        )),
    );
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// How a dump ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `NLMSG_DONE` with status 0.
    Done,
    /// `NLMSG_ERROR`, or `NLMSG_DONE` with a negative status: the (positive) errno.
    Error(i32),
}

/// What one datagram of a dump reply held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Datagram {
    /// Its TCP and UDP entries, in order.
    entries: Vec<CtEntry>,
    /// `Some` when it ended the dump.
    end: Option<End>,
    /// A message carried `NLM_F_DUMP_INTR`: the table changed while the kernel walked it.
    interrupted: bool,
}

/// Parses one datagram of the reply to the dump request `seq`: its netlink messages, each
/// bounds-checked. A malformed or unexpected message is an error; nothing here panics.
fn parse_datagram(buf: &[u8], seq: u32) -> Result<Datagram> {
    let mut out = Datagram::default();
    for message in netlink::messages::<NetfilterMessage>(buf, seq) {
        let (off, message) = message?;
        let header = message.header;
        out.interrupted |= header.flags & NLM_F_DUMP_INTR != 0;
        match message.payload {
            NetlinkPayload::Done(done) => {
                out.end = Some(match done.code {
                    0.. => End::Done,
                    code => End::Error(code.saturating_abs()),
                });
                return Ok(out);
            }
            NetlinkPayload::Error(e) => match e.code {
                Some(code) => {
                    out.end = Some(End::Error(code.get().saturating_abs()));
                    return Ok(out);
                }
                None => bail!("unexpected netlink ACK in a conntrack dump"),
            },
            NetlinkPayload::Noop => {}
            NetlinkPayload::Overrun(_) => bail!("netlink overrun in a conntrack dump"),
            NetlinkPayload::InnerMessage(message) => {
                if let Some(entry) = entry(&message)
                    .with_context(|| format!("conntrack entry at byte {off} of {}", buf.len()))?
                {
                    out.entries.push(entry);
                }
            }
            other => bail!("unexpected netlink message type {}", other.message_type()),
        }
    }
    Ok(out)
}

/// The entry one ctnetlink message describes; `None` for protocols other than TCP and UDP.
fn entry(message: &NetfilterMessage) -> Result<Option<CtEntry>> {
    let attributes = match &message.inner {
        NetfilterMessageInner::Conntrack(
            ConntrackMessage::New(attributes) | ConntrackMessage::Get(attributes),
        ) => attributes,
        _ => bail!(
            "unexpected netfilter message (subsystem {:?}) in a conntrack dump",
            message.subsys()
        ),
    };
    let (mut orig, mut reply, mut status, mut tcp_state) = (None, None, None, None);
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(t) => {
                orig = Some(RawTuple::parse(t));
            }
            ConntrackAttribute::CtaTupleReply(t) => {
                reply = Some(RawTuple::parse(t));
            }
            ConntrackAttribute::CtaStatus(s) => status = Some(s.bits()),
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(tcp) = info {
                        for t in tcp {
                            if let ProtoInfoTCP::State(s) = t {
                                tcp_state = Some(*s);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let orig = orig.context("no CTA_TUPLE_ORIG")?;
    let proto = orig.proto.context("no CTA_PROTO_NUM in CTA_TUPLE_ORIG")?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(None);
    }
    let reply = reply.context("no CTA_TUPLE_REPLY")?;
    if reply.proto != Some(proto) {
        bail!(
            "CTA_TUPLE_REPLY has protocol {:?}, CTA_TUPLE_ORIG {proto}",
            reply.proto
        );
    }
    Ok(Some(CtEntry {
        proto,
        orig: orig.complete().context("CTA_TUPLE_ORIG")?,
        reply: reply.complete().context("CTA_TUPLE_REPLY")?,
        tcp_state: if proto == PROTO_TCP { tcp_state } else { None },
        status: status.context("no CTA_STATUS")?,
    }))
}

/// The parts of a `CTA_TUPLE_*` found so far.
#[derive(Default)]
struct RawTuple {
    proto: Option<u8>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl RawTuple {
    fn parse(tuple: &[Tuple]) -> Self {
        let mut raw = Self::default();
        for part in tuple {
            match part {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => raw.src = Some(*a),
                            IPTuple::DestinationAddress(a) => raw.dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for p in protos {
                        match p {
                            ProtoTuple::Protocol(p) => raw.proto = Some((*p).into()),
                            ProtoTuple::SourcePort(port) => raw.sport = Some(*port),
                            ProtoTuple::DestinationPort(port) => raw.dport = Some(*port),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        raw
    }

    fn complete(&self) -> Result<CtTuple> {
        let tuple = CtTuple {
            src: self
                .src
                .context("no source address (CTA_IP_V4_SRC / CTA_IP_V6_SRC)")?,
            dst: self
                .dst
                .context("no destination address (CTA_IP_V4_DST / CTA_IP_V6_DST)")?,
            sport: self.sport.context("no CTA_PROTO_SRC_PORT")?,
            dport: self.dport.context("no CTA_PROTO_DST_PORT")?,
        };
        if tuple.src.is_ipv4() != tuple.dst.is_ipv4() {
            bail!(
                "source {} and destination {} of different families",
                tuple.src,
                tuple.dst
            );
        }
        Ok(tuple)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::testutil::hex;

    // Captured on this project's VM (Linux 6.18) from a private network namespace with
    // `table inet t { chain out { type nat hook output priority -100; ip daddr 127.0.0.1 tcp
    // dport 5002 dnat ip to 127.0.0.1:5001; } chain track { type filter hook output priority 0;
    // ct state new,established accept; } }`: the first datagram of the AF_INET dump (UDP
    // 127.0.0.1:55299 -> :6001 answered; TCP 127.0.0.1:40524 -> :5002 DNAT'd to :5001,
    // established; an ICMP echo), then its NLMSG_DONE; and the same for AF_INET6 (TCP
    // [::1]:37580 -> :7001 established, UDP [::1]:41532 -> :8001 answered). Sequence numbers 1
    // and 2, as `dump` sends them.
    const V4_ENTRIES: &str = "
        a4000000000122000100000034370000020000003400018014000180080001007f000001080002007f000001
        1c000280050001001100000006000200d803000006000300177100003400028014000180080001007f000001
        080002007f0000011c0002800500010011000000060002001771000006000300d8030000080003000000018a
        080008000000000008000c00b11a59c608000b0000000001080007000000001dd40000000001220001000000
        34370000020000003400018014000180080001007f000001080002007f0000011c0002800500010006000000
        060002009e4c000006000300138a00003400028014000180080001007f000001080002007f0000011c000280
        05000100060000000600020013890000060003009e4c000008000300000001ae080008000000000008000c00
        5f92161108000b0000000001080007000006977f300004802c0001800500010003000000050002000a000000
        050003000a00000006000400230000000600050023000000b400000000012200010000003437000002000000
        3c00018014000180080001007f000001080002007f0000012400028005000100010000000600040037600000
        050005000800000005000600000000003c00028014000180080001007f000001080002007f00000124000280
        0500010001000000060004003760000005000500000000000500060000000000080003000000018a08000800
        0000000008000c00946b164908000b0000000001080007000000001d";
    const V4_DONE: &str = "1400000003000200010000003437000000000000";
    const V6_ENTRIES: &str = "
        040100000001220002000000343700000a0000004c0001802c00018014000300000000000000000000000000
        0000000114000400000000000000000000000000000000011c00028005000100060000000600020092cc0000
        060003001b5900004c0002802c00018014000300000000000000000000000000000000011400040000000000
        0000000000000000000000011c0002800500010006000000060002001b5900000600030092cc000008000300
        0000018e080008000000000008000c006a93d7fd08000b0000000001080007000006977f300004802c000180
        0500010003000000050002000a000000050003000a00000006000400230000000600050023000000d4000000
        0001220002000000343700000a0000004c0001802c0001801400030000000000000000000000000000000001
        14000400000000000000000000000000000000011c000280050001001100000006000200a23c000006000300
        1f4100004c0002802c0001801400030000000000000000000000000000000001140004000000000000000000
        00000000000000011c0002800500010011000000060002001f41000006000300a23c0000080003000000018a
        080008000000000008000c0082634a1d08000b0000000001080007000000001d";
    const V6_DONE: &str = "1400000003000200020000003437000000000000";

    fn lo4() -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn lo6() -> IpAddr {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    }

    fn tuple(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> CtTuple {
        CtTuple {
            src,
            dst,
            sport,
            dport,
        }
    }

    #[test]
    fn captured_fixtures_have_their_lengths() {
        assert_eq!(hex(V4_ENTRIES).len(), 556);
        assert_eq!(hex(V6_ENTRIES).len(), 472);
        assert_eq!(hex(V4_DONE).len(), 20);
    }

    #[test]
    fn parses_a_captured_ipv4_dump() {
        let d = parse_datagram(&hex(V4_ENTRIES), 1).unwrap();
        assert_eq!(d.end, None);
        assert_eq!(
            d.entries,
            vec![
                CtEntry {
                    proto: PROTO_UDP,
                    orig: tuple(lo4(), 55299, lo4(), 6001),
                    reply: tuple(lo4(), 6001, lo4(), 55299),
                    tcp_state: None,
                    status: 0x18a,
                },
                // The DNAT: the client sent to :5002, the backend answers from :5001.
                CtEntry {
                    proto: PROTO_TCP,
                    orig: tuple(lo4(), 40524, lo4(), 5002),
                    reply: tuple(lo4(), 5001, lo4(), 40524),
                    tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
                    status: 0x1ae,
                },
                // The ICMP echo is skipped.
            ]
        );
        let tcp = d.entries[1];
        assert_ne!(tcp.status & IPS_SEEN_REPLY, 0);
        assert_ne!(tcp.status & IPS_ASSURED, 0);
        assert_ne!(tcp.status & IPS_DST_NAT, 0);
        assert_eq!(tcp.status & IPS_SRC_NAT, 0);

        let done = parse_datagram(&hex(V4_DONE), 1).unwrap();
        assert_eq!(
            done,
            Datagram {
                entries: vec![],
                end: Some(End::Done),
                interrupted: false,
            }
        );
    }

    #[test]
    fn nlm_f_dump_intr_is_reported() {
        let buf = Msg::new(3, 0x2 | NLM_F_DUMP_INTR, 1)
            .raw(&0i32.to_ne_bytes())
            .done();
        let d = parse_datagram(&buf, 1).unwrap();
        assert!(d.interrupted);
        assert_eq!(d.end, Some(End::Done));
    }

    #[test]
    fn parses_a_captured_ipv6_dump() {
        let d = parse_datagram(&hex(V6_ENTRIES), 2).unwrap();
        assert_eq!(
            d.entries,
            vec![
                CtEntry {
                    proto: PROTO_TCP,
                    orig: tuple(lo6(), 37580, lo6(), 7001),
                    reply: tuple(lo6(), 7001, lo6(), 37580),
                    tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
                    status: 0x18e,
                },
                CtEntry {
                    proto: PROTO_UDP,
                    orig: tuple(lo6(), 41532, lo6(), 8001),
                    reply: tuple(lo6(), 8001, lo6(), 41532),
                    tcp_state: None,
                    status: 0x18a,
                },
            ]
        );
        assert_eq!(
            parse_datagram(&hex(V6_DONE), 2).unwrap().end,
            Some(End::Done)
        );
    }

    #[test]
    fn entries_then_done_in_one_datagram() {
        let mut buf = hex(V4_ENTRIES);
        buf.extend(hex(V4_DONE));
        let d = parse_datagram(&buf, 1).unwrap();
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.end, Some(End::Done));
    }

    #[test]
    fn a_reply_to_another_request_is_an_error() {
        let e = parse_datagram(&hex(V4_DONE), 7).unwrap_err();
        assert!(
            format!("{e:#}").contains("answers request 1, not 7"),
            "{e:#}"
        );
    }

    /// Every prefix and every single-byte change of the captured datagrams parses or fails
    /// cleanly: no panic, and a datagram cut inside a message is an error.
    #[test]
    fn truncated_or_corrupted_datagrams_never_panic() {
        for (fixture, seq) in [(V4_ENTRIES, 1), (V6_ENTRIES, 2), (V4_DONE, 1)] {
            let buf = hex(fixture);
            // Where whole messages end: only there may a prefix parse.
            let mut bounds = vec![0];
            while let Some(&b) = bounds.last().filter(|&&b| b < buf.len()) {
                let len = u32::from_ne_bytes(buf[b..b + 4].try_into().unwrap()) as usize;
                bounds.push(b + len.next_multiple_of(4));
            }
            for cut in 0..buf.len() {
                let r = parse_datagram(&buf[..cut], seq);
                assert_eq!(
                    r.is_ok(),
                    bounds.contains(&cut),
                    "prefix of {cut} bytes: {r:?}"
                );
            }
            for i in 0..buf.len() {
                for v in [0x00, 0xff, buf[i] ^ 0x80, buf[i].wrapping_add(1)] {
                    let mut bad = buf.clone();
                    bad[i] = v;
                    let _ = parse_datagram(&bad, seq);
                }
            }
        }
    }

    /// Netlink/nfnetlink bytes built by hand, as the kernel lays them out.
    struct Msg(Vec<u8>);

    impl Msg {
        fn new(kind: u16, flags: u16, seq: u32) -> Self {
            let mut b = Vec::new();
            b.extend(0u32.to_ne_bytes()); // length, set by `done`
            b.extend(kind.to_ne_bytes());
            b.extend(flags.to_ne_bytes());
            b.extend(seq.to_ne_bytes());
            b.extend(4242u32.to_ne_bytes());
            Self(b)
        }

        fn ct(family: u8) -> Self {
            let mut m = Self::new(u16::from(NFNL_SUBSYS_CTNETLINK) << 8, 0x2, 1);
            m.0.extend([family, 0, 0, 0]);
            m
        }

        fn raw(mut self, bytes: &[u8]) -> Self {
            self.0.extend(bytes);
            self
        }

        fn done(mut self) -> Vec<u8> {
            let len = self.0.len() as u32;
            self.0[..4].copy_from_slice(&len.to_ne_bytes());
            self.0
        }
    }

    /// One attribute, padded; `nested` sets `NLA_F_NESTED` (the kernel does, old kernels did not).
    fn nla(kind: u16, nested: bool, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(((4 + value.len()) as u16).to_ne_bytes());
        b.extend((kind | if nested { 0x8000 } else { 0 }).to_ne_bytes());
        b.extend(value);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn tuple_attr(kind: u16, nested: bool, proto: u8, t: CtTuple) -> Vec<u8> {
        let (src_kind, dst_kind, src, dst) = match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (1, 2, s.octets().to_vec(), d.octets().to_vec()),
            (IpAddr::V6(s), IpAddr::V6(d)) => (3, 4, s.octets().to_vec(), d.octets().to_vec()),
            _ => unreachable!(),
        };
        let ip = [nla(src_kind, false, &src), nla(dst_kind, false, &dst)].concat();
        let ports = [
            nla(1, false, &[proto]),
            nla(2, false, &t.sport.to_be_bytes()),
            nla(3, false, &t.dport.to_be_bytes()),
        ]
        .concat();
        nla(
            kind,
            nested,
            &[nla(1, nested, &ip), nla(2, nested, &ports)].concat(),
        )
    }

    #[test]
    fn parses_hand_built_entries_with_and_without_nla_f_nested() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        let orig = tuple(a, 40000, b, 8080);
        let reply = tuple("fd00::5".parse().unwrap(), 80, a, 40000);
        for nested in [true, false] {
            let protoinfo = nla(
                4,
                nested,
                &nla(1, nested, &nla(1, false, &[TCP_CONNTRACK_TIME_WAIT])),
            );
            let buf = Msg::ct(10)
                .raw(&tuple_attr(1, nested, PROTO_TCP, orig))
                .raw(&tuple_attr(2, nested, PROTO_TCP, reply))
                .raw(&nla(
                    3,
                    false,
                    &(IPS_SEEN_REPLY | IPS_DST_NAT).to_be_bytes(),
                ))
                .raw(&protoinfo)
                .raw(&nla(99, false, &[1, 2, 3])) // an attribute from a newer kernel
                .done();
            let d = parse_datagram(&buf, 1).unwrap();
            assert_eq!(
                d.entries,
                vec![CtEntry {
                    proto: PROTO_TCP,
                    orig,
                    reply,
                    tcp_state: Some(TCP_CONNTRACK_TIME_WAIT),
                    status: IPS_SEEN_REPLY | IPS_DST_NAT,
                }],
                "nested flag {nested}"
            );
        }
    }

    #[test]
    fn missing_parts_are_errors() {
        let t = tuple(lo4(), 1, lo4(), 2);
        let status = nla(3, false, &0u32.to_be_bytes());
        let cases: [(&str, Vec<u8>); 4] = [
            (
                "no CTA_TUPLE_ORIG",
                [tuple_attr(2, true, PROTO_UDP, t), status.clone()].concat(),
            ),
            (
                "no CTA_TUPLE_REPLY",
                [tuple_attr(1, true, PROTO_UDP, t), status.clone()].concat(),
            ),
            (
                "no CTA_STATUS",
                [
                    tuple_attr(1, true, PROTO_UDP, t),
                    tuple_attr(2, true, PROTO_UDP, t),
                ]
                .concat(),
            ),
            (
                "protocol Some(6), CTA_TUPLE_ORIG 17",
                [
                    tuple_attr(1, true, PROTO_UDP, t),
                    tuple_attr(2, true, PROTO_TCP, t),
                    status,
                ]
                .concat(),
            ),
        ];
        for (want, attrs) in cases {
            let e = parse_datagram(&Msg::ct(2).raw(&attrs).done(), 1).unwrap_err();
            assert!(format!("{e:#}").contains(want), "want {want:?}, got {e:#}");
        }
        // A tuple without ports.
        let ip = [
            nla(1, false, &[127, 0, 0, 1]),
            nla(2, false, &[127, 0, 0, 1]),
        ]
        .concat();
        let portless = nla(
            1,
            true,
            &[nla(1, true, &ip), nla(2, true, &nla(1, false, &[17]))].concat(),
        );
        let buf = Msg::ct(2)
            .raw(&portless)
            .raw(&tuple_attr(2, true, PROTO_UDP, t))
            .raw(&nla(3, false, &0u32.to_be_bytes()))
            .done();
        let e = parse_datagram(&buf, 1).unwrap_err();
        assert!(format!("{e:#}").contains("no CTA_PROTO_SRC_PORT"), "{e:#}");
        // A 3-byte IPv4 address.
        let bad_ip = nla(1, true, &nla(1, true, &nla(1, false, &[127, 0, 0])));
        assert!(parse_datagram(&Msg::ct(2).raw(&bad_ip).done(), 1).is_err());
    }

    #[test]
    fn other_protocols_are_skipped() {
        let t = tuple(lo4(), 0, lo4(), 0);
        let buf = Msg::ct(2)
            .raw(&tuple_attr(1, true, 132, t)) // SCTP
            .raw(&tuple_attr(2, true, 132, t))
            .raw(&nla(3, false, &0u32.to_be_bytes()))
            .done();
        assert_eq!(parse_datagram(&buf, 1).unwrap(), Datagram::default());
    }

    #[test]
    fn kernel_errors_end_the_dump_with_their_errno() {
        // NLMSG_ERROR: errno, then the offending request's header.
        let mut err = (-libc::EINVAL).to_ne_bytes().to_vec();
        err.extend(&request(NFNL_SUBSYS_CTNETLINK, NetfilterProtoFamily::IPv4, 1)[..16]);
        let buf = Msg::new(2, 0, 1).raw(&err).done();
        assert_eq!(
            parse_datagram(&buf, 1).unwrap().end,
            Some(End::Error(libc::EINVAL))
        );
        // NLMSG_DONE with a negative status: the dump failed midway.
        let buf = Msg::new(3, 2, 1).raw(&(-libc::ENOMEM).to_ne_bytes()).done();
        assert_eq!(
            parse_datagram(&buf, 1).unwrap().end,
            Some(End::Error(libc::ENOMEM))
        );
        // An ACK is not how a dump ends.
        let buf = Msg::new(2, 0, 1)
            .raw(&0i32.to_ne_bytes())
            .raw(&err[4..])
            .done();
        assert!(parse_datagram(&buf, 1).is_err());
        // An NLMSG_ERROR too short for its errno.
        let buf = Msg::new(2, 0, 1).raw(&[0xea, 0xff]).done();
        assert!(parse_datagram(&buf, 1).is_err());
    }

    #[test]
    fn a_message_of_another_subsystem_is_an_error() {
        let mut m = Msg::new(4 << 8, 2, 1); // NFNL_SUBSYS_ULOG
        m.0.extend([2, 0, 0, 0]);
        assert!(parse_datagram(&m.done(), 1).is_err());
    }

    #[test]
    fn short_headers_are_errors() {
        assert!(parse_datagram(&[0x14, 0, 0], 1).is_err());
        // A length field below the 16-byte header.
        let mut buf = hex(V4_DONE);
        buf[0] = 8;
        assert!(parse_datagram(&buf, 1).is_err());
        // A length field past the datagram.
        buf[0] = 0x40;
        assert!(parse_datagram(&buf, 1).is_err());
        // A ctnetlink message without its nfgenmsg.
        let buf = Msg::new(u16::from(NFNL_SUBSYS_CTNETLINK) << 8, 2, 1).done();
        assert!(parse_datagram(&buf, 1).is_err());
    }

    #[test]
    fn the_request_is_a_ctnetlink_get_dump() {
        let req = request(NFNL_SUBSYS_CTNETLINK, NetfilterProtoFamily::IPv6, 2);
        let mut want = Vec::new();
        want.extend(20u32.to_ne_bytes()); // nlmsg_len
        want.extend(0x0101u16.to_ne_bytes()); // NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
        want.extend(0x0301u16.to_ne_bytes()); // NLM_F_REQUEST | NLM_F_DUMP
        want.extend(2u32.to_ne_bytes()); // nlmsg_seq
        want.extend(0u32.to_ne_bytes()); // nlmsg_pid
        want.extend([10, 0, 0, 0]); // nfgenmsg: AF_INET6, NFNETLINK_V0, res_id 0
        assert_eq!(req, want);
    }

    #[test]
    fn tcp_states_match_the_uapi_enum() {
        assert_eq!(
            [
                TCP_CONNTRACK_NONE,
                TCP_CONNTRACK_SYN_SENT,
                TCP_CONNTRACK_SYN_RECV,
                TCP_CONNTRACK_ESTABLISHED,
                TCP_CONNTRACK_FIN_WAIT,
                TCP_CONNTRACK_CLOSE_WAIT,
                TCP_CONNTRACK_LAST_ACK,
                TCP_CONNTRACK_TIME_WAIT,
                TCP_CONNTRACK_CLOSE,
                TCP_CONNTRACK_SYN_SENT2,
            ],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        );
        assert_eq!((IPS_SEEN_REPLY, IPS_ASSURED, IPS_DST_NAT), (2, 4, 32));
    }
}
