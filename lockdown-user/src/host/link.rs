//! What a network interface is, read before lockdown attaches to it, so that the kernel's XDP
//! attach refusals (`ERANGE`: the MTU is too large for the program; `EINVAL`/`EOPNOTSUPP`: the
//! driver has no native XDP; `EBUSY`: another program is attached) can be turned into messages
//! that say exactly why.
//!
//! Everything comes from the current network namespace, over sockets opened in it: `RTM_GETLINK`
//! on a `NETLINK_ROUTE` socket (index, name, MTU, `IFLA_MAX_MTU`, `IFLA_INFO_KIND`, `IFLA_XDP`,
//! `IFLA_MASTER`) and the ethtool `ETHTOOL_GDRVINFO` ioctl on an `AF_INET` datagram socket (the
//! driver). Never sysfs: the CLI runs under `nsenter --net=…` without remounting `/sys`, so
//! `/sys/class/net` shows the namespace `/sys` was mounted in, not the one being queried. The
//! name of an attached XDP program comes from the kernel's `bpf_prog_info` (through
//! [`aya::programs::loaded_programs`]), which is global, not per namespace.
//!
//! The request and reply are built and decoded by `netlink-packet-route`; the socket is
//! `netlink-sys`. The reply's attributes are decoded one at a time
//! ([`LinkAttribute::parse_with_param`]), not as a whole [`LinkMessage`]: the crate fails a whole
//! message when any one attribute does not decode, and that has happened on real kernels for
//! attributes lockdown never reads (rust-netlink/netlink-packet-route#138: an empty
//! `IFLA_AF_SPEC`; #147: netdevsim's empty `IFLA_VFINFO_LIST`). Here an attribute this module does
//! not read is skipped if it does not decode (logged at debug); one it reads is an error, except
//! `IFLA_LINKINFO`, whose `IFLA_INFO_DATA` is the part most likely to change with the kernel
//! (bond/bridge options): if it does not decode, only its `IFLA_INFO_KIND` is taken.
//! [`parse_reply`] is a pure function over the bytes of one `recv`, unit-tested on replies
//! captured from a real kernel.
//!
//! [`XdpMode`] names the XDP attach modes: those lockdown attaches in, and those the kernel
//! reports for a program already attached.

use std::{convert::Infallible, ffi::CString, io};

use anyhow::{Context as _, Result, anyhow, bail};
use lockdown_common::contract::config::{ATTACH_NATIVE, ATTACH_SKB};
use netlink_packet_core::{
    DefaultNla, Emitable as _, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NlaBuffer, NlasIterator, Parseable as _, ParseableParametrized as _,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{
        InfoKind, LinkAttribute, LinkExtentMask, LinkHeader, LinkInfo as RtLinkInfo, LinkMessage,
        LinkXdp, XdpAttached,
    },
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::host::{
    ethtool::{self, MAX_NAME},
    netlink,
};

/// An XDP attach mode: the one `up` attaches in (`--mode`, the configuration file's `mode`), or
/// the one the kernel reports for a program attached (`IFLA_XDP_ATTACHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) XDP.
    // `XDP_ATTACHED_DRV`.
    #[value(name = "native")]
    #[serde(rename = "native")]
    Driver,
    /// Generic XDP in the kernel's receive path; works on every interface, slower.
    // `XDP_ATTACHED_SKB`: after the kernel built the socket buffer.
    Skb,
    /// `XDP_ATTACHED_HW`: offloaded to the NIC. Reported, never attached in.
    #[value(skip)]
    #[serde(skip)]
    Hardware,
    /// `XDP_ATTACHED_MULTI`: more than one mode at once. The kernel refuses native and generic
    /// together, so this is an offloaded program plus a native or a generic one. Reported, never
    /// attached in.
    #[value(skip)]
    #[serde(skip)]
    Multi,
}

impl XdpMode {
    /// The mode's name, as `--mode` and the configuration file spell the modes lockdown attaches
    /// in.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Driver => "native",
            Self::Skb => "skb",
            Self::Hardware => "hardware",
            Self::Multi => "multi",
        }
    }

    /// The mode to ask aya for; `None` for the modes lockdown never attaches in.
    pub const fn attach_flags(self) -> Option<aya::programs::XdpMode> {
        match self {
            Self::Driver => Some(aya::programs::XdpMode::Driver),
            Self::Skb => Some(aya::programs::XdpMode::Skb),
            Self::Hardware | Self::Multi => None,
        }
    }

    /// The mode as the datapath's config records it
    /// ([`lockdown_common::contract::config::Config::attach_mode`]); 0 (nothing recorded) for the modes
    /// lockdown never attaches in.
    pub const fn config_value(self) -> u32 {
        match self {
            Self::Driver => ATTACH_NATIVE,
            Self::Skb => ATTACH_SKB,
            Self::Hardware | Self::Multi => 0,
        }
    }

    /// The mode a config records, if it records one.
    pub const fn from_config(value: u32) -> Option<Self> {
        match value {
            ATTACH_NATIVE => Some(Self::Driver),
            ATTACH_SKB => Some(Self::Skb),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    pub mode: XdpMode,
    /// The program's id. For [`XdpMode::Multi`], the native or generic program's
    /// (`IFLA_XDP_DRV_PROG_ID` / `IFLA_XDP_SKB_PROG_ID`: the one an attach of lockdown's would
    /// collide with), else the offloaded one's.
    pub prog_id: u32,
    /// the program's name from the kernel (bpf prog info), if readable
    pub prog_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// The interface's name (`IFLA_IFNAME`): the primary name even when [`query`] was given an
    /// alternative name.
    pub name: String,
    pub mtu: u32,
    /// IFLA_MAX_MTU, if the kernel reports it. `None` also when it reports 0: no limit (`lo`).
    /// It is live state: a veth whose peer has a native XDP program without frags support is
    /// capped to what fits one page.
    pub max_mtu: Option<u32>,
    /// IFLA_INFO_KIND ("veth", "bond", "bridge", "dummy", …); None for a physical NIC.
    pub kind: Option<String>,
    /// The driver name from the ethtool ETHTOOL_GDRVINFO ioctl ("ena", "mlx5_core", "virtio_net",
    /// "veth", "bonding", …), None if the device has no ethtool driver info.
    pub driver: Option<String>,
    /// The XDP program attached now, if any.
    pub xdp: Option<XdpAttachment>,
    /// The bond/bridge this device is enslaved to (IFLA_MASTER, as an ifindex), if any (also a
    /// VRF or team master: whatever the kernel reports as its upper device).
    pub master: Option<u32>,
}

/// `ALTIFNAMSIZ - 1` (linux/if.h): the longest alternative name (`ip link property add … altname`).
const MAX_ALT_NAME: usize = 127;

/// The sequence number of the one request.
const SEQ: u32 = 1;

/// The interface index, or a clear error naming the interface.
pub fn ifindex(iface: &str) -> Result<u32> {
    let c = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: `c` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("unknown interface {iface:?} (not found in this network namespace)");
    }
    Ok(index)
}

/// Queries interface `name` in the current network namespace (RTM_GETLINK by name, plus the
/// ethtool ioctl on a socket of this namespace). A clear error naming the interface if it does
/// not exist.
///
/// "Current" is the calling thread's network namespace: both sockets are opened in it. `name`
/// is looked up by name (an alternative name works too); a name made of digits is a name, not an
/// index. The ethtool ioctl then addresses the device by the primary name the kernel returned: if
/// the device is renamed between the two calls, the ioctl fails (`ENODEV`, an error), unless
/// another device took the name in that instant.
pub fn query(name: &str) -> Result<LinkInfo> {
    let mut link = getlink(name)?;
    link.driver = ethtool::driver(&link.name).with_context(|| {
        format!(
            "reading the driver of network interface `{}` (ETHTOOL_GDRVINFO)",
            link.name
        )
    })?;
    if let Some(xdp) = &mut link.xdp {
        xdp.prog_name = prog_name(xdp.prog_id);
    }
    Ok(link)
}

/// `RTM_GETLINK` for `name`: everything but `driver` and the XDP program's name.
fn getlink(name: &str) -> Result<LinkInfo> {
    let request = request(name_attribute(name)?, SEQ);
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    socket
        .bind_auto()
        .context("binding the NETLINK_ROUTE socket")?;
    netlink::set_recv_timeout(&socket)?;
    let what = format!("RTM_GETLINK for `{name}`");
    netlink::send(&socket, &request, &what)?;
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    loop {
        let reply = parse_reply(netlink::recv(&socket, &mut buf, &what)?, SEQ)
            .with_context(|| format!("decoding the RTM_GETLINK reply for `{name}`"))?;
        match reply {
            None => {}
            Some(Reply::Link(link)) => return Ok(*link),
            Some(Reply::Error(errno)) if errno == libc::ENODEV => {
                bail!(
                    "no network interface named `{name}` in this network namespace{}",
                    netns_hint()
                )
            }
            Some(Reply::Error(errno)) => {
                return Err(anyhow!(io::Error::from_raw_os_error(errno)))
                    .context(format!("the kernel refused RTM_GETLINK for `{name}`"));
            }
        }
    }
}

/// " (net:[inode])": which namespace "this" is, for an error that says an interface is not in
/// it. `/proc/thread-self/ns/net` is the calling thread's own namespace, whatever `/proc` shows
/// otherwise. Empty if unreadable.
fn netns_hint() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .map(|ns| format!(" ({})", ns.display()))
        .unwrap_or_default()
}

/// The attribute that names the interface in the request: `IFLA_IFNAME` for a name that fits
/// `IFNAMSIZ`, `IFLA_ALT_IFNAME` for a longer one (only an alternative name can be longer).
fn name_attribute(name: &str) -> Result<LinkAttribute> {
    if name.is_empty() {
        bail!("an empty network interface name");
    }
    if name.contains('\0') {
        bail!("network interface name {name:?} contains a NUL byte");
    }
    if name.len() <= MAX_NAME {
        return Ok(LinkAttribute::IfName(name.to_owned()));
    }
    if name.len() > MAX_ALT_NAME {
        bail!(
            "no network interface named `{name}`: it is {} bytes long, longer than any interface \
             name ({MAX_NAME} bytes) or alternative name ({MAX_ALT_NAME} bytes) can be",
            name.len()
        );
    }
    let mut value = name.as_bytes().to_vec();
    value.push(0);
    Ok(LinkAttribute::Other(DefaultNla::new(
        libc::IFLA_ALT_IFNAME,
        value,
    )))
}

/// The request: `nlmsghdr` (`RTM_GETLINK`, `NLM_F_REQUEST`), `ifinfomsg` (all zero: no index),
/// the name attribute, and `IFLA_EXT_MASK` `RTEXT_FILTER_SKIP_STATS`, which leaves the IPv6
/// statistics out of `IFLA_AF_SPEC` (Linux 6.18 still sends `IFLA_STATS`/`IFLA_STATS64`).
fn request(name: LinkAttribute, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut link = LinkMessage::default();
    link.attributes = vec![
        name,
        LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]),
    ];
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)),
    );
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// A route netlink message kept as bytes, so that its attributes can be decoded one by one.
#[derive(Debug)]
struct RawRoute(Vec<u8>);

impl NetlinkDeserializable for RawRoute {
    type Error = Infallible;

    fn deserialize(_header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(payload.to_vec()))
    }
}

/// What answered the request.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    /// `RTM_NEWLINK`: the interface (`driver` and the XDP program's name not filled in).
    Link(Box<LinkInfo>),
    /// `NLMSG_ERROR`: the (positive) errno.
    Error(i32),
}

/// Parses one datagram of the reply to request `seq`. `None` if it held no answer (only
/// `NLMSG_NOOP`s). A malformed or unexpected message is an error; nothing here panics.
fn parse_reply(buf: &[u8], seq: u32) -> Result<Option<Reply>> {
    for message in netlink::messages::<RawRoute>(buf, seq) {
        let (_, message) = message?;
        let header = message.header;
        match message.payload {
            NetlinkPayload::Error(e) => match e.code {
                Some(code) => return Ok(Some(Reply::Error(code.get().saturating_abs()))),
                None => bail!("unexpected netlink ACK to RTM_GETLINK"),
            },
            NetlinkPayload::Noop => {}
            NetlinkPayload::InnerMessage(RawRoute(payload))
                if header.message_type == libc::RTM_NEWLINK =>
            {
                return Ok(Some(Reply::Link(Box::new(parse_link(&payload)?))));
            }
            _ => bail!(
                "unexpected netlink message type {} in the RTM_GETLINK reply",
                header.message_type
            ),
        }
    }
    Ok(None)
}

/// Decodes the payload of an `RTM_NEWLINK` (`ifinfomsg` + attributes); `driver` is `None` and the
/// XDP program's name is not filled in.
fn parse_link(payload: &[u8]) -> Result<LinkInfo> {
    let header = LinkHeader::parse(payload).map_err(|e| anyhow!("RTM_NEWLINK: {e}"))?;
    // `parse` checked that the header is there.
    let attributes = &payload[header.buffer_len()..];
    if header.index == 0 {
        bail!("RTM_NEWLINK with interface index 0");
    }
    let (mut name, mut mtu, mut max_mtu, mut kind, mut xdp, mut master) =
        (None, None, None, None, None, None);
    for nla in NlasIterator::new(attributes) {
        let nla = nla.map_err(|e| anyhow!("malformed RTM_NEWLINK attribute: {e}"))?;
        let id = nla.kind();
        let attribute = match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(a) => a,
            Err(e) if id == libc::IFLA_LINKINFO => {
                log::debug!(
                    "IFLA_LINKINFO of interface {} does not fully decode ({e}); taking only \
                     its IFLA_INFO_KIND",
                    header.index
                );
                kind = info_kind(&nla).map_err(|e| anyhow!("IFLA_LINKINFO: {e}"))?;
                continue;
            }
            Err(e) if READ.contains(&id) => {
                bail!("RTM_NEWLINK attribute {id}: {e}");
            }
            Err(e) => {
                log::debug!(
                    "ignoring RTM_NEWLINK attribute {id} of interface {}, which does not \
                     decode: {e}",
                    header.index
                );
                continue;
            }
        };
        match attribute {
            LinkAttribute::IfName(n) => name = Some(n),
            LinkAttribute::Mtu(m) => mtu = Some(m),
            // 0: no limit (`lo`).
            LinkAttribute::MaxMtu(m) => max_mtu = (m != 0).then_some(m),
            LinkAttribute::Controller(i) => master = (i != 0).then_some(i),
            LinkAttribute::LinkInfo(infos) => {
                kind = infos.iter().find_map(|i| match i {
                    RtLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Xdp(attrs) => xdp = xdp_attachment(&attrs)?,
            _ => {}
        }
    }
    Ok(LinkInfo {
        index: header.index,
        name: name.context("RTM_NEWLINK without IFLA_IFNAME")?,
        mtu: mtu.context("RTM_NEWLINK without IFLA_MTU")?,
        max_mtu,
        kind,
        driver: None,
        xdp,
        master,
    })
}

/// The attributes [`parse_link`] reads: one of these that does not decode is an error.
const READ: [u16; 6] = [
    libc::IFLA_IFNAME,
    libc::IFLA_MTU,
    libc::IFLA_MAX_MTU,
    libc::IFLA_MASTER,
    libc::IFLA_LINKINFO,
    libc::IFLA_XDP,
];

/// The `IFLA_INFO_KIND` nested in `IFLA_LINKINFO`, decoded on its own.
fn info_kind(linkinfo: &NlaBuffer<&[u8]>) -> Result<Option<String>> {
    for nla in NlasIterator::new(linkinfo.value()) {
        let nla = nla.map_err(|e| anyhow!("{e}"))?;
        if nla.kind() == libc::IFLA_INFO_KIND {
            let kind = InfoKind::parse(&nla).map_err(|e| anyhow!("IFLA_INFO_KIND: {e}"))?;
            return Ok(Some(kind.to_string()));
        }
    }
    Ok(None)
}

/// The attachment `IFLA_XDP` reports; `None` for `XDP_ATTACHED_NONE`.
fn xdp_attachment(attrs: &[LinkXdp]) -> Result<Option<XdpAttachment>> {
    let (mut attached, mut prog, mut drv, mut skb, mut hw) = (None, None, None, None, None);
    for a in attrs {
        match a {
            LinkXdp::Attached(m) => attached = Some(*m),
            LinkXdp::ProgId(id) => prog = Some(*id),
            LinkXdp::DrvProgId(id) => drv = Some(*id),
            LinkXdp::SkbProgId(id) => skb = Some(*id),
            LinkXdp::HwProgId(id) => hw = Some(*id),
            _ => {}
        }
    }
    // The kernel (`rtnl_xdp_fill`) always sends IFLA_XDP_ATTACHED; with one mode, both
    // IFLA_XDP_PROG_ID and that mode's own id; with several, only the modes' ids.
    let (mode, id) = match attached.context("IFLA_XDP without IFLA_XDP_ATTACHED")? {
        XdpAttached::None => return Ok(None),
        XdpAttached::Driver => (XdpMode::Driver, prog.or(drv)),
        XdpAttached::SocketBuffer => (XdpMode::Skb, prog.or(skb)),
        XdpAttached::Hardware => (XdpMode::Hardware, prog.or(hw)),
        XdpAttached::Multiple => (XdpMode::Multi, drv.or(skb).or(hw)),
        XdpAttached::Other(m) => {
            bail!("IFLA_XDP_ATTACHED {m}: an XDP attach mode lockdown does not know")
        }
        other => bail!("IFLA_XDP_ATTACHED {other:?}: an XDP attach mode lockdown does not know"),
    };
    match id {
        Some(prog_id) if prog_id != 0 => Ok(Some(XdpAttachment {
            mode,
            prog_id,
            prog_name: None,
        })),
        _ => bail!("IFLA_XDP reports an XDP program attached ({mode:?}) but no program id"),
    }
}

/// The name the kernel holds for program `id` (`bpf_prog_info.name`: at most 15 bytes, what the
/// loader gave it, e.g. aya's truncated function name). `None` if it has no name, or it cannot be
/// read: listing programs needs `CAP_SYS_ADMIN`, and the program may be gone by now.
pub(crate) fn prog_name(id: u32) -> Option<String> {
    for info in aya::programs::loaded_programs() {
        match info {
            Ok(info) if info.id() == id => {
                let name = info.name();
                return (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned());
            }
            // Programs come in increasing id order.
            Ok(info) if info.id() > id => break,
            Ok(_) => {}
            // Unloaded since its id was listed, or not permitted: go on; if listing itself is not
            // permitted, this is the iterator's only item.
            Err(e) => log::debug!("listing BPF programs for the name of program {id}: {e}"),
        }
    }
    log::debug!("BPF program {id} not found among the loaded programs");
    None
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Nla;
    use netlink_packet_route::link::{BondMode, InfoBond, InfoData, InfoPortKind};

    use super::*;
    use crate::testutil::hex;

    #[test]
    fn only_the_modes_lockdown_attaches_in_can_be_asked_for() {
        use clap::ValueEnum as _;
        let names: Vec<String> = XdpMode::value_variants()
            .iter()
            .filter_map(|m| m.to_possible_value())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(names, ["native", "skb"]);
        for m in XdpMode::value_variants() {
            let asked = m.to_possible_value().is_some();
            assert_eq!(m.attach_flags().is_some(), asked, "{m:?}");
            assert_eq!(XdpMode::from_config(m.config_value()), asked.then_some(*m));
            if asked {
                assert_eq!(XdpMode::from_str(m.name(), false), Ok(*m));
            }
        }
    }

    // Captured on this project's VM (Linux 6.18) from a private network namespace, as `getlink`
    // receives them (sequence number 1): the replies to the requests for
    // - `lo` (up; no kind; IFLA_MAX_MTU 0; no ethtool driver info),
    // - `vb`, one end of a veth pair, with aya's `baseline_pass` attached in generic mode
    //   (program 1511),
    // - `x1`, one end of another pair, up, with `baseline_drop` attached in native mode
    //   (program 1512),
    // - `p1`, a veth enslaved to bridge `br0` (index 4),
    // - `nope`, which does not exist: NLMSG_ERROR -ENODEV.
    const LO: &str = "
        4c04000010000000010000001346000000000403010000004900010000000000070003006c6f000008000d00
        e803000005001000000000000500110000000000050043000100000008000400000001000800320000000000
        080033000000000008001b000000000008001e000000000008003d000000000008001f000100000008002800
        ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00f8ff0700
        08003c00ffff0000080042000000000008002000010000000500210001000000080023000000000008002f00
        0000000008003000000000000600440000000000060045000000000005002700000000000a00010000000000
        000000000a0002000000000000000000cc001700000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        6400070000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000c002b0005000200000000000c0006006e6f717565756500c0011a008c000200
        8800010000000000000000000000000001000000010000000100000001000000000000000100000000000000
        0000000000000000000000000000000001000000010000000000000000000000000000000000000000000000
        000000000000000000000000000000000000000010270000e803000000000000000000000000000000000000
        0100000030010a00080001000000008014000500ffff0000c2250800a8a50000e8030000f400020000000000
        400000000000010001000000010000000100000001000000ffffffffa00f0000e8030000ffffffff803a0900
        805101000300000058020000100000000000000001000000010000000100000060ea00000000000000000000
        00000000000000000000000000000000ffffffff000000000000000010270000e80300000100000000000000
        00000000010000000000000000000000010000000000000000000000000000000000000080ee360000000000
        000000000100000000000000000000000000000000000000000000000004000000000000ffff0000ffffffff
        0100000000000000000000000000000014000700000000000000000000000000000000000500080000000000
        24000e00000000000000000000000000000000000000000000000000000000000000000004003e8004004180";
    const VETH_XDP_GENERIC: &str = "
        7404000010000000010000001346000000000100020000000210000000000000070003007662000008000d00
        e803000005001000020000000500110000000000050043000000000008000400dc0500000800320044000000
        08003300ffff000008001b000000000008001e000000000008003d000000000008001f000200000008002800
        ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00f8ff0700
        08003c00ffff0000080042000000000008002000020000000500210000000000080023000100000008002f00
        0000000008003000010000000600440000000000060045000000000005002700000000000a0001003a0396a3
        be2800000a000200ffffffffffff0000cc001700000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        6400070000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000001c002b0008000600e7050000050002000200000008000400e705000010001200
        0900010076657468000000000800050003000000090006006e6f6f7000000000c0011a008c00020088000100
        0000000000000000000000000100000001000000010000000100000000000000010000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000010270000e80300000000000000000000000000000000000001000000
        30010a00080001000000000014000500ffff0000c2250800ec430000e8030000f40002000000000040000000
        dc05000001000000010000000100000001000000ffffffffa00f0000e803000000000000803a090080510100
        0300000058020000100000000000000001000000010000000100000060ea0000000000000000000000000000
        00000000000000000000000001000000000000000000000010270000e8030000010000000000000000000000
        010000000000000000000000010000000000000000000000000000000000000080ee36000000000000000000
        0100000000000000000000000000000000000000000000000004000000000000ffff0000ffffffff01000000
        0000000000000000000000001400070000000000000000000000000000000000050008000000000024000e00
        000000000000000000000000000000000000000000000000000000000000000004003e8004004180";
    const VETH_XDP_NATIVE: &str = "
        7404000010000000010000001346000000000100080000004310010000000000070003007831000008000d00
        e803000005001000060000000500110000000000050043000000000008000400dc0500000800320044000000
        08003300ffff000008001b000000000008001e000000000008003d000000000008001f000200000008002800
        ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00f8ff0700
        08003c00ffff0000080042000000000008002000020000000500210001000000080023000200000008002f00
        0100000008003000010000000600440000000000060045000000000005002700000000000a00010032c75ce2
        dce200000a000200ffffffffffff0000cc001700010000000000000001000000000000005a00000000000000
        5a00000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        6400070001000000010000005a0000005a000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000001c002b0008000500e8050000050002000100000008000400e805000010001200
        09000100766574680000000008000500070000000c0006006e6f717565756500c0011a008c00020088000100
        0000000000000000000000000100000001000000010000000100000000000000010000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000010270000e80300000000000000000000000000000000000001000000
        30010a00080001000000008014000500ffff0000c4250800e44c0000e8030000f40002000000000040000000
        dc05000001000000010000000100000001000000ffffffffa00f0000e803000000000000803a090080510100
        0300000058020000100000000000000001000000010000000100000060ea0000000000000000000000000000
        00000000000000000000000001000000000000000000000010270000e8030000010000000000000000000000
        010000000000000000000000010000000000000000000000000000000000000080ee36000000000000000000
        0100000000000000000000000000000000000000000000000004000000000000ffff0000ffffffff01000000
        0000000000000000000000001400070000000000000000000000000000000000050008000000000024000e00
        000000000000000000000000000000000000000000000000000000000000000004003e8004004180";
    const BRIDGE_PORT: &str = "
        c805000010000000010000001346000000000100060000000210000000000000070003007031000008000d00
        e803000005001000020000000500110000000000050043000000000008000400dc0500000800320044000000
        08003300ffff000008001b000000000008001e000100000008003d000100000008001f000200000008002800
        ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00f8ff0700
        08003c00ffff00000800420000000000080020000200000008000a0004000000050021000000000008002300
        0100000008002f00000000000800300001000000060044000000000006004500000000000500270000000000
        0a000100e640c825daa600000a000200ffffffffffff0000cc00170000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000640007000000000000000000000000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        00000000000000000000000000000000000000000c002b0005000200000000006c0112000900010076657468
        000000000b000400627269646765000050010500050001000000000006000200200000000800030002000000
        050004000000000005000500000000000500060000000000050007000000000005001c000000000005000800
        01000000050009000100000005001b000100000005001e000100000005000a000000000005000c0000000000
        0c000d008000e640c825daa60c000e008000e640c825daa606000f0001800000060010000000000006001100
        0180000006001200010000000500130000000000050014000000000005001d000000000006001f0000000000
        0500200000000000050023000000000005002400000000000500210000000000050027000000000005002800
        0000000005002b00000000000c00150000000000000000000c00160000000000000000000c00170000000000
        00000000050019000100000008002500000200000800260000000000080029000000000008002a0000000000
        0800050005000000090006006e6f6f7000000000c0011a008c00020088000100000000000000000000000000
        0100000001000000010000000100000000000000010000000000000000000000000000000000000000000000
        0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
        0000000010270000e8030000000000000000000000000000000000000100000030010a000800010000000000
        14000500ffff0000c325080024640000e8030000f40002000000000040000000dc0500000100000001000000
        0100000001000000ffffffffa00f0000e803000000000000803a090080510100030000005802000010000000
        0000000001000000010000000100000060ea0000000000000000000000000000000000000000000000000000
        01000000000000000000000010270000e8030000010000000000000000000000010000000000000000000000
        010000000000000000000000000000000000000080ee36000000000000000000010000000000000000000000
        0000000000000000000000000004000000000000ffff0000ffffffff01000000000000000000000000000000
        1400070000000000000000000000000000000000050008000000000024000e00000000000000000000000000
        000000000000000000000000000000000000000004003e8004004180";
    const NO_SUCH_DEVICE: &str = "
        48000000020000000100000013460000edffffff340000001200010001000000000000000000000000000000
        0000000000000000090003006e6f70650000000008001d0008000000";

    fn link(
        index: u32,
        name: &str,
        mtu: u32,
        max_mtu: Option<u32>,
        kind: Option<&str>,
    ) -> LinkInfo {
        LinkInfo {
            index,
            name: name.to_owned(),
            mtu,
            max_mtu,
            kind: kind.map(str::to_owned),
            driver: None,
            xdp: None,
            master: None,
        }
    }

    fn xdp(mode: XdpMode, prog_id: u32) -> Option<XdpAttachment> {
        Some(XdpAttachment {
            mode,
            prog_id,
            prog_name: None,
        })
    }

    fn reply_link(fixture: &str) -> LinkInfo {
        match parse_reply(&hex(fixture), SEQ).unwrap() {
            Some(Reply::Link(link)) => *link,
            other => panic!("not a link: {other:?}"),
        }
    }

    /// One netlink message: header + `payload`, padded to 4 bytes.
    fn netlink(message_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend((16 + payload.len() as u32).to_ne_bytes());
        m.extend(message_type.to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend(payload);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    /// An `RTM_NEWLINK` payload for interface 7, emitted by netlink-packet-route.
    fn newlink(attributes: Vec<LinkAttribute>) -> Vec<u8> {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message.attributes = attributes;
        let mut buf = vec![0; message.buffer_len()];
        message.emit(&mut buf);
        buf
    }

    /// A nested attribute's value: `nlas` emitted one after the other.
    fn nested<T: Nla>(nlas: &[T]) -> Vec<u8> {
        let mut buf = vec![0; nlas.buffer_len()];
        nlas.emit(&mut buf);
        buf
    }

    fn named(mtu: u32) -> Vec<LinkAttribute> {
        vec![LinkAttribute::IfName("ld0".into()), LinkAttribute::Mtu(mtu)]
    }

    #[test]
    fn captured_fixtures_have_their_lengths() {
        for (fixture, len) in [
            (LO, 1100),
            (VETH_XDP_GENERIC, 1140),
            (VETH_XDP_NATIVE, 1140),
            (BRIDGE_PORT, 1480),
            (NO_SUCH_DEVICE, 72),
        ] {
            assert_eq!(hex(fixture).len(), len);
        }
    }

    #[test]
    fn parses_captured_loopback() {
        // IFLA_MAX_MTU 0 is "no limit": None.
        assert_eq!(reply_link(LO), link(1, "lo", 65536, None, None));
    }

    #[test]
    fn parses_captured_veth_with_generic_xdp() {
        let want = LinkInfo {
            xdp: xdp(XdpMode::Skb, 1511),
            ..link(2, "vb", 1500, Some(65535), Some("veth"))
        };
        assert_eq!(reply_link(VETH_XDP_GENERIC), want);
    }

    #[test]
    fn parses_captured_veth_with_native_xdp() {
        let want = LinkInfo {
            xdp: xdp(XdpMode::Driver, 1512),
            ..link(8, "x1", 1500, Some(65535), Some("veth"))
        };
        assert_eq!(reply_link(VETH_XDP_NATIVE), want);
    }

    #[test]
    fn parses_captured_bridge_port() {
        // IFLA_LINKINFO also carries IFLA_INFO_PORT_KIND "bridge": the kind is still the
        // device's own.
        let want = LinkInfo {
            master: Some(4),
            ..link(6, "p1", 1500, Some(65535), Some("veth"))
        };
        assert_eq!(reply_link(BRIDGE_PORT), want);
    }

    #[test]
    fn captured_enodev_is_an_error_reply() {
        assert_eq!(
            parse_reply(&hex(NO_SUCH_DEVICE), SEQ).unwrap(),
            Some(Reply::Error(libc::ENODEV))
        );
    }

    #[test]
    fn bond_its_port_and_dummy() {
        let mut attrs = named(1500);
        attrs.push(LinkAttribute::LinkInfo(vec![
            RtLinkInfo::Kind(InfoKind::Bond),
            RtLinkInfo::Data(InfoData::Bond(vec![InfoBond::Mode(BondMode::ActiveBackup)])),
        ]));
        assert_eq!(
            parse_link(&newlink(attrs)).unwrap().kind.as_deref(),
            Some("bond")
        );

        let mut attrs = named(1500);
        attrs.push(LinkAttribute::Controller(9));
        attrs.push(LinkAttribute::LinkInfo(vec![
            RtLinkInfo::Kind(InfoKind::Veth),
            RtLinkInfo::PortKind(InfoPortKind::Bond),
        ]));
        let port = parse_link(&newlink(attrs)).unwrap();
        assert_eq!((port.kind.as_deref(), port.master), (Some("veth"), Some(9)));

        let mut attrs = named(1500);
        attrs.push(LinkAttribute::LinkInfo(vec![RtLinkInfo::Kind(
            InfoKind::Dummy,
        )]));
        assert_eq!(
            parse_link(&newlink(attrs)).unwrap().kind.as_deref(),
            Some("dummy")
        );

        // A kind netlink-packet-route does not know is kept as the kernel spells it.
        let mut attrs = named(1500);
        attrs.push(LinkAttribute::LinkInfo(vec![RtLinkInfo::Kind(
            InfoKind::Other("ld_new_kind".into()),
        )]));
        assert_eq!(
            parse_link(&newlink(attrs)).unwrap().kind.as_deref(),
            Some("ld_new_kind")
        );

        // IFLA_MASTER 0 is no master.
        let mut attrs = named(1500);
        attrs.push(LinkAttribute::Controller(0));
        assert_eq!(parse_link(&newlink(attrs)).unwrap().master, None);
    }

    #[test]
    fn an_undecodable_attribute_that_is_not_read_is_skipped() {
        let mut attrs = named(1400);
        // IFLA_TXQLEN is a u32; two bytes do not decode.
        attrs.push(LinkAttribute::Other(DefaultNla::new(
            libc::IFLA_TXQLEN,
            vec![1, 0],
        )));
        attrs.push(LinkAttribute::MaxMtu(9216));
        assert_eq!(
            parse_link(&newlink(attrs)).unwrap(),
            link(7, "ld0", 1400, Some(9216), None)
        );
    }

    #[test]
    fn an_undecodable_attribute_that_is_read_is_an_error() {
        for (id, value) in [
            (libc::IFLA_MTU, vec![1, 0]),
            (libc::IFLA_MAX_MTU, vec![1, 0]),
            (libc::IFLA_MASTER, vec![1, 0, 0]),
            // IFLA_XDP_ATTACHED is a u8.
            (
                libc::IFLA_XDP,
                nested(&[DefaultNla::new(2, vec![1, 0, 0, 0])]),
            ),
        ] {
            let mut attrs = named(1500);
            attrs.push(LinkAttribute::Other(DefaultNla::new(id, value)));
            let e = parse_link(&newlink(attrs)).unwrap_err();
            assert!(
                format!("{e:#}").contains(&format!("attribute {id}")),
                "{id}: {e:#}"
            );
        }
    }

    #[test]
    fn undecodable_link_info_data_still_gives_the_kind() {
        // IFLA_BOND_MODE is a u8; four bytes do not decode, so neither does IFLA_INFO_DATA.
        let linkinfo = nested(&[
            RtLinkInfo::Kind(InfoKind::Bond),
            RtLinkInfo::Other(DefaultNla::new(
                libc::IFLA_INFO_DATA,
                nested(&[DefaultNla::new(1, vec![1, 0, 0, 0])]),
            )),
        ]);
        let mut attrs = named(1500);
        attrs.push(LinkAttribute::Other(DefaultNla::new(
            libc::IFLA_LINKINFO,
            linkinfo.clone(),
        )));
        let payload = newlink(attrs);
        assert!(
            LinkMessage::parse(&payload[..]).is_err(),
            "the whole message does not decode"
        );
        assert_eq!(parse_link(&payload).unwrap().kind.as_deref(), Some("bond"));

        // Without IFLA_INFO_KIND: no kind.
        let mut attrs = named(1500);
        attrs.push(LinkAttribute::Other(DefaultNla::new(
            libc::IFLA_LINKINFO,
            nested(&[DefaultNla::new(libc::IFLA_INFO_DATA, vec![0; 4])]),
        )));
        assert_eq!(parse_link(&newlink(attrs)).unwrap().kind, None);
    }

    #[test]
    fn a_link_without_name_mtu_or_index_is_an_error() {
        let no_mtu = newlink(vec![LinkAttribute::IfName("ld0".into())]);
        assert!(format!("{:#}", parse_link(&no_mtu).unwrap_err()).contains("IFLA_MTU"));
        let no_name = newlink(vec![LinkAttribute::Mtu(1500)]);
        assert!(format!("{:#}", parse_link(&no_name).unwrap_err()).contains("IFLA_IFNAME"));
        let mut index_0 = newlink(named(1500));
        index_0[4..8].fill(0);
        assert!(parse_link(&index_0).is_err());
        // Shorter than ifinfomsg.
        assert!(parse_link(&[0; 15]).is_err());
        // An attribute whose length runs past the message.
        let mut cut = newlink(named(1500));
        cut.truncate(cut.len() - 2);
        assert!(parse_link(&cut).is_err());
    }

    #[test]
    fn xdp_modes_and_ids() {
        use LinkXdp::*;
        let cases: [(&[LinkXdp], Option<XdpAttachment>); 8] = [
            (&[Attached(XdpAttached::None)], None),
            (
                &[SkbProgId(5), Attached(XdpAttached::SocketBuffer), ProgId(5)],
                xdp(XdpMode::Skb, 5),
            ),
            (
                &[DrvProgId(6), Attached(XdpAttached::Driver), ProgId(6)],
                xdp(XdpMode::Driver, 6),
            ),
            (
                &[HwProgId(7), Attached(XdpAttached::Hardware), ProgId(7)],
                xdp(XdpMode::Hardware, 7),
            ),
            // Without IFLA_XDP_PROG_ID: the mode's own id.
            (
                &[Attached(XdpAttached::Driver), DrvProgId(8)],
                xdp(XdpMode::Driver, 8),
            ),
            // Several modes: no IFLA_XDP_PROG_ID; the native or generic program's id.
            (
                &[DrvProgId(9), HwProgId(10), Attached(XdpAttached::Multiple)],
                xdp(XdpMode::Multi, 9),
            ),
            (
                &[SkbProgId(11), HwProgId(12), Attached(XdpAttached::Multiple)],
                xdp(XdpMode::Multi, 11),
            ),
            (
                &[HwProgId(13), Attached(XdpAttached::Multiple)],
                xdp(XdpMode::Multi, 13),
            ),
        ];
        for (attrs, want) in cases {
            assert_eq!(xdp_attachment(attrs).unwrap(), want, "{attrs:?}");
        }
        for bad in [
            &[][..],
            &[ProgId(5)],
            &[Attached(XdpAttached::Other(9)), ProgId(5)],
            &[Attached(XdpAttached::Driver)],
            &[Attached(XdpAttached::SocketBuffer), ProgId(0)],
        ] {
            assert!(xdp_attachment(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reply_framing() {
        let link = newlink(named(1500));
        // A NOOP, then the link.
        let mut two = netlink(libc::NLMSG_NOOP as u16, SEQ, &[]);
        two.extend(netlink(libc::RTM_NEWLINK, SEQ, &link));
        assert!(matches!(
            parse_reply(&two, SEQ).unwrap(),
            Some(Reply::Link(_))
        ));
        assert_eq!(
            parse_reply(&netlink(libc::NLMSG_NOOP as u16, SEQ, &[]), SEQ).unwrap(),
            None
        );
        // Another request's answer.
        assert!(parse_reply(&netlink(libc::RTM_NEWLINK, 2, &link), SEQ).is_err());
        // Another message type (RTM_NEWADDR).
        assert!(parse_reply(&netlink(libc::RTM_NEWADDR, SEQ, &link), SEQ).is_err());
        // An ACK (NLMSG_ERROR with errno 0) was not asked for.
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend(&netlink(libc::RTM_GETLINK, SEQ, &[])[..16]);
        assert!(parse_reply(&netlink(libc::NLMSG_ERROR as u16, SEQ, &ack), SEQ).is_err());
        // Cut short.
        let whole = netlink(libc::RTM_NEWLINK, SEQ, &link);
        for len in [3, 15, 20, whole.len() - 1] {
            assert!(parse_reply(&whole[..len], SEQ).is_err(), "{len}");
        }
    }

    #[test]
    fn the_request_is_an_rtm_getlink_by_name() {
        let req = request(name_attribute("eth0").unwrap(), 1);
        let mut want = Vec::new();
        want.extend(52u32.to_ne_bytes()); // nlmsg_len
        want.extend(libc::RTM_GETLINK.to_ne_bytes());
        want.extend(1u16.to_ne_bytes()); // NLM_F_REQUEST
        want.extend(1u32.to_ne_bytes()); // nlmsg_seq
        want.extend(0u32.to_ne_bytes()); // nlmsg_pid
        want.extend([0; 16]); // ifinfomsg: AF_UNSPEC, index 0
        want.extend(9u16.to_ne_bytes()); // IFLA_IFNAME "eth0\0", padded
        want.extend(libc::IFLA_IFNAME.to_ne_bytes());
        want.extend(b"eth0\0\0\0\0");
        want.extend(8u16.to_ne_bytes()); // IFLA_EXT_MASK RTEXT_FILTER_SKIP_STATS
        want.extend(libc::IFLA_EXT_MASK.to_ne_bytes());
        want.extend(8u32.to_ne_bytes());
        assert_eq!(req, want);
    }

    #[test]
    fn names() {
        assert!(name_attribute("").is_err());
        assert!(name_attribute("et\0h0").is_err());
        assert_eq!(
            name_attribute("fifteen_bytes_x").unwrap(),
            LinkAttribute::IfName("fifteen_bytes_x".into())
        );
        // Longer than IFNAMSIZ - 1: only an alternative name can be that long.
        let alt = name_attribute("sixteen_bytes_xx").unwrap();
        assert_eq!(alt.kind(), libc::IFLA_ALT_IFNAME);
        let mut value = vec![0; alt.value_len()];
        alt.emit_value(&mut value);
        assert_eq!(value, b"sixteen_bytes_xx\0");
        assert!(name_attribute(&"a".repeat(127)).is_ok());
        let e = name_attribute(&"a".repeat(128)).unwrap_err();
        assert!(format!("{e}").contains("128 bytes"), "{e}");
    }
}
