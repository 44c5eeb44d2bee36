//! lockdown's TC egress filter where the kernel has no TCX (before Linux 6.6): a `cls_bpf` filter in
//! direct-action mode on the egress hook of the interface's `clsact` qdisc, at lockdown's own
//! priority and handle ([`PRIORITY`], [`HANDLE`]). A filter is held by the qdisc, not by a process
//! or a pin, so it enforces with no lockdown process running; the fixed priority and handle are
//! how `status`, `down` and `up --replace` find it again, and a replace is one `RTM_NEWTFILTER` on
//! that priority and handle without `NLM_F_CREATE`/`NLM_F_EXCL`, which `cls_bpf` carries out by
//! swapping the program under RCU: the old program runs until the new one does.
//!
//! The filter itself is attached, replaced and deleted through aya's netlink path
//! ([`SchedClassifier::attach`] with [`TcAttach::Netlink`], [`SchedClassifier::attach_to_link`] on
//! [`SchedClassifierLink::attached`]); the qdisc and filter dumps and the qdisc's removal, which
//! aya does not offer, are `netlink-packet-route` messages. Replies are decoded one attribute at a
//! time, as [`crate::link`] does, so another tool's filter with an attribute this crate cannot
//! decode does not fail the dump.
//!
//! Whether lockdown created the `clsact` qdisc, and so may remove it, is the caller's record (see
//! `attach::egress`): this module only says what is there.

use std::{convert::Infallible, io, mem};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType,
    tc::{NlOptions, SchedClassifierLink, TcAttach, TcError, TcHandle as AyaHandle},
};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkPayload,
    NlaBuffer, NlasIterator, Parseable as _,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcFilterBpfOption, TcHandle, TcHeader, TcMessage},
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

use crate::host::netlink;

/// lockdown's filter priority on the clsact egress hook ("LD"). Lower runs first; `tc` picks
/// 49152 and down for filters added without one, so lockdown's runs before those.
pub const PRIORITY: u16 = 0x4c44;
/// lockdown's filter handle at [`PRIORITY`].
pub const HANDLE: u32 = 1;

/// The clsact qdisc's handle (`ffff:`) and its parent (`ffff:fff1`, the ingress slot it shares
/// with the `ingress` qdisc).
const CLSACT_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// The parents of the clsact qdisc's two hooks.
const HOOK_INGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_INGRESS,
};
const HOOK_EGRESS: TcHandle = TcHandle {
    major: 0xffff,
    minor: TcHandle::MIN_EGRESS,
};
/// `sizeof(struct tcmsg)`.
const TCMSG_LEN: usize = 20;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;

/// One filter on a clsact hook, as a dump shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// On the egress hook (else the ingress one).
    pub egress: bool,
    pub priority: u16,
    pub handle: u32,
    /// The classifier (`bpf`, `u32`, `flower`, …).
    pub kind: String,
    /// For `bpf`: the program's name as the loader gave it (`TCA_BPF_NAME`).
    pub name: Option<String>,
    /// For `bpf`: the program's id (`TCA_BPF_ID`).
    pub prog_id: Option<u32>,
}

impl Filter {
    /// Whether this is the filter at lockdown's egress priority and handle.
    pub fn at_lockdowns_place(&self) -> bool {
        self.egress && self.priority == PRIORITY && self.handle == HANDLE
    }
}

/// The kind of qdisc in the interface's ingress slot (`clsact` or `ingress`), if any.
pub fn ingress_slot(ifindex: u32) -> Result<Option<String>> {
    let what = "the qdisc dump (RTM_GETQDISC)";
    let mut request = TcMessage::with_index(index(ifindex)?);
    request.header.parent = TcHandle::CLSACT;
    let replies = dump(RouteNetlinkMessage::GetQueueDiscipline(request), what)?;
    for (header, attributes) in replies {
        if header.index as u32 == ifindex
            && header.parent == TcHandle::CLSACT
            && header.handle == CLSACT_HANDLE
        {
            return Ok(Some(kind(&attributes)?.unwrap_or_default()));
        }
    }
    Ok(None)
}

/// Adds a clsact qdisc (aya's `qdisc_add_clsact`: `NLM_F_CREATE | NLM_F_EXCL`). `false` if one
/// appeared since it was found missing: someone else's.
pub fn add_clsact(ifindex: u32) -> Result<bool> {
    match aya::programs::tc::qdisc_add_clsact(ifindex) {
        Ok(()) => Ok(true),
        Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(anyhow!(e)).context("adding a clsact qdisc"),
    }
}

/// Deletes the clsact qdisc, and with it every filter on it. `ENOENT`/`EINVAL` (gone, or the
/// slot holds another qdisc now) and `ENODEV` (the interface is gone) are not errors.
pub fn delete_clsact(ifindex: u32) -> Result<()> {
    let mut message = TcMessage::with_index(index(ifindex)?);
    message.header.handle = CLSACT_HANDLE;
    message.header.parent = TcHandle::CLSACT;
    match ack(
        RouteNetlinkMessage::DelQueueDiscipline(message),
        "deleting the clsact qdisc (RTM_DELQDISC)",
    )? {
        0 | libc::ENOENT | libc::EINVAL | libc::ENODEV => Ok(()),
        errno => Err(anyhow!(io::Error::from_raw_os_error(errno)))
            .context("the kernel refused to delete the clsact qdisc"),
    }
}

/// Every filter on both hooks of the interface's clsact qdisc, all chains (none without one).
pub fn filters(ifindex: u32) -> Result<Vec<Filter>> {
    let mut out = Vec::new();
    for (egress, hook) in [(false, HOOK_INGRESS), (true, HOOK_EGRESS)] {
        let mut request = TcMessage::with_index(index(ifindex)?);
        request.header.parent = hook;
        let what = "the filter dump (RTM_GETTFILTER)";
        for (header, attributes) in dump(RouteNetlinkMessage::GetTrafficFilter(request), what)? {
            // The first message of each priority describes the classifier instance, not a filter.
            if header.handle == TcHandle::UNSPEC {
                continue;
            }
            out.push(filter(egress, &header, &attributes)?);
        }
    }
    Ok(out)
}

/// The filter at lockdown's egress priority and handle, if any.
pub fn lockdowns(ifindex: u32) -> Result<Option<Filter>> {
    Ok(filters(ifindex)?
        .into_iter()
        .find(Filter::at_lockdowns_place))
}

/// Attaches the loaded `prog` at lockdown's priority and handle (`NLM_F_CREATE | NLM_F_EXCL`). The
/// filter stays when this process ends.
pub fn attach(prog: &mut SchedClassifier, ifindex: u32) -> Result<()> {
    let id = prog
        .attach(
            ifindex,
            TcAttach::Netlink {
                parent: TcAttachType::Egress.into(),
                options: NlOptions {
                    priority: PRIORITY,
                    handle: AyaHandle::from(HANDLE),
                    classid: None,
                },
            },
        )
        .map_err(|e| refused(e, "attaching the TC egress filter"))?;
    keep(prog.take_link(id)?);
    Ok(())
}

/// Swaps the loaded `prog` into lockdown's filter in one netlink request; `ENOENT` if the filter
/// is not there.
pub fn replace(prog: &mut SchedClassifier, ifindex: u32) -> Result<()> {
    let id = prog
        .attach_to_link(place(ifindex)?)
        .map_err(|e| refused(e, "replacing the program of the TC egress filter"))?;
    keep(prog.take_link(id)?);
    Ok(())
}

/// Deletes lockdown's filter. Already gone (`ENOENT`), or the interface gone (`ENODEV`): not an
/// error.
pub fn delete(ifindex: u32) -> Result<()> {
    let link = place(ifindex)?;
    match aya::programs::links::Link::detach(link) {
        Ok(()) => Ok(()),
        Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENODEV | libc::EINVAL)) => Ok(()),
        Err(e) => Err(refused(e, "deleting the TC egress filter")),
    }
}

/// lockdown's filter as an aya link (nothing is checked or changed).
fn place(ifindex: u32) -> Result<SchedClassifierLink> {
    SchedClassifierLink::attached(
        ifindex,
        TcAttachType::Egress.into(),
        PRIORITY,
        AyaHandle::from(HANDLE),
        None,
    )
    .context("naming lockdown's TC egress filter")
}

/// Leaves an attached netlink filter in place: dropping aya's link would delete it.
fn keep(link: SchedClassifierLink) {
    mem::forget(link);
}

/// The errno in an aya netlink failure.
pub fn errno(e: &ProgramError) -> Option<i32> {
    match e {
        ProgramError::NetlinkError(n) | ProgramError::TcError(TcError::NetlinkError(n)) => {
            n.raw_os_error()
        }
        _ => None,
    }
}

fn refused(e: ProgramError, what: &str) -> anyhow::Error {
    anyhow!(e).context(format!(
        "{what} (clsact egress, priority {PRIORITY:#x}, handle {HANDLE:#x})"
    ))
}

fn index(ifindex: u32) -> Result<i32> {
    i32::try_from(ifindex).with_context(|| format!("interface index {ifindex} out of range"))
}

/// The `TCA_KIND` of a message's attributes.
fn kind(attributes: &[u8]) -> Result<Option<String>> {
    for nla in NlasIterator::new(attributes) {
        let nla = nla.map_err(|e| anyhow!("malformed TC attribute: {e}"))?;
        if nla.kind() == TCA_KIND {
            return Ok(Some(c_string(nla.value())));
        }
    }
    Ok(None)
}

/// A filter from its header and attributes: the kind always, the program's name and id for `bpf`.
/// An option that does not decode is skipped.
fn filter(egress: bool, header: &TcHeader, attributes: &[u8]) -> Result<Filter> {
    let mut f = Filter {
        egress,
        priority: (header.info >> 16) as u16,
        handle: header.handle.into(),
        kind: kind(attributes)?.unwrap_or_default(),
        name: None,
        prog_id: None,
    };
    if f.kind != "bpf" {
        return Ok(f);
    }
    for nla in NlasIterator::new(attributes) {
        let nla = nla.map_err(|e| anyhow!("malformed TC attribute: {e}"))?;
        if nla.kind() != TCA_OPTIONS {
            continue;
        }
        for option in NlasIterator::new(nla.value()) {
            let option = option.map_err(|e| anyhow!("malformed TCA_OPTIONS: {e}"))?;
            match TcFilterBpfOption::parse(&NlaBuffer::new(option.into_inner())) {
                Ok(TcFilterBpfOption::ProgName(name)) => f.name = Some(name),
                Ok(TcFilterBpfOption::ProgId(id)) => f.prog_id = Some(id),
                Ok(_) => {}
                Err(e) => log::debug!("a bpf filter option does not decode: {e}"),
            }
        }
    }
    Ok(f)
}

/// A NUL-terminated string attribute.
fn c_string(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// A TC message kept as bytes: header and attributes are decoded separately.
#[derive(Debug)]
struct RawTc(Vec<u8>);

impl NetlinkDeserializable for RawTc {
    type Error = Infallible;

    fn deserialize(_header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(Self(payload.to_vec()))
    }
}

const SEQ: u32 = 1;

fn socket() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a NETLINK_ROUTE socket")?;
    socket
        .bind_auto()
        .context("binding the NETLINK_ROUTE socket")?;
    netlink::set_recv_timeout(&socket)?;
    Ok(socket)
}

/// Sends a dump request and collects every reply message: its header and attribute bytes.
fn dump(request: RouteNetlinkMessage, what: &str) -> Result<Vec<(TcHeader, Vec<u8>)>> {
    let socket = socket()?;
    netlink::send(
        &socket,
        &netlink::encode(request, NLM_F_REQUEST | NLM_F_DUMP, SEQ),
        what,
    )?;
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    let mut out = Vec::new();
    loop {
        let datagram = netlink::recv(&socket, &mut buf, what)?;
        for message in netlink::messages::<RawTc>(datagram, SEQ) {
            let (_, message) = message?;
            let message_type = message.header.message_type;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => match e.code {
                    Some(code) => {
                        return Err(anyhow!(io::Error::from_raw_os_error(
                            code.get().saturating_abs()
                        )))
                        .with_context(|| format!("the kernel refused {what}"));
                    }
                    None => bail!("unexpected netlink ACK in {what}"),
                },
                NetlinkPayload::Noop => {}
                NetlinkPayload::InnerMessage(RawTc(payload)) => {
                    let header = TcHeader::parse(&payload)
                        .map_err(|e| anyhow!("a message of {what}: {e}"))?;
                    out.push((header, payload[TCMSG_LEN.min(payload.len())..].to_vec()));
                }
                _ => bail!("unexpected netlink message type {message_type} in {what}"),
            }
        }
    }
}

/// Sends a request with `NLM_F_ACK` and returns the kernel's errno (0: done).
fn ack(request: RouteNetlinkMessage, what: &str) -> Result<i32> {
    let socket = socket()?;
    netlink::send(
        &socket,
        &netlink::encode(request, NLM_F_REQUEST | NLM_F_ACK, SEQ),
        what,
    )?;
    let mut buf = Vec::with_capacity(netlink::RECV_BUF);
    loop {
        for message in netlink::messages::<RawTc>(netlink::recv(&socket, &mut buf, what)?, SEQ) {
            let (_, message) = message?;
            let message_type = message.header.message_type;
            match message.payload {
                NetlinkPayload::Error(e) => {
                    return Ok(e.code.map_or(0, |c| c.get().saturating_abs()));
                }
                NetlinkPayload::Noop => {}
                _ => bail!("unexpected netlink message type {message_type} answering {what}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut out = (len as u16).to_ne_bytes().to_vec();
        out.extend(kind.to_ne_bytes());
        out.extend(value);
        out.resize(len.next_multiple_of(4), 0);
        out
    }

    fn header(priority: u16, handle: u32) -> TcHeader {
        TcHeader {
            index: 3,
            handle: handle.into(),
            parent: HOOK_EGRESS,
            info: u32::from(priority) << 16 | 0x0300,
            ..TcHeader::default()
        }
    }

    #[test]
    fn a_bpf_filter_gives_its_program_name_and_id() {
        let mut options = nla(7, b"lockdown_egress\0");
        options.extend(nla(11, &42u32.to_ne_bytes()));
        options.extend(nla(8, &1u32.to_ne_bytes()));
        let mut attributes = nla(TCA_KIND, b"bpf\0");
        attributes.extend(nla(TCA_OPTIONS, &options));
        let f = filter(true, &header(PRIORITY, HANDLE), &attributes).expect("filter");
        assert_eq!(
            f,
            Filter {
                egress: true,
                priority: PRIORITY,
                handle: HANDLE,
                kind: "bpf".to_owned(),
                name: Some("lockdown_egress".to_owned()),
                prog_id: Some(42),
            }
        );
        assert!(f.at_lockdowns_place());
    }

    #[test]
    fn another_filter_is_not_lockdowns() {
        let mut attributes = nla(TCA_KIND, b"u32\0");
        // u32 options lockdown does not read, not even well-formed ones.
        attributes.extend(nla(TCA_OPTIONS, &[1, 2, 3]));
        let f = filter(true, &header(1, 0x8000_0800), &attributes).expect("filter");
        assert_eq!(
            (f.kind.as_str(), f.name.as_deref(), f.prog_id),
            ("u32", None, None)
        );
        assert!(!f.at_lockdowns_place());
        let ingress =
            filter(false, &header(PRIORITY, HANDLE), &nla(TCA_KIND, b"bpf\0")).expect("filter");
        assert!(!ingress.at_lockdowns_place());
    }

    #[test]
    fn malformed_attributes_are_errors_not_panics() {
        assert!(filter(true, &header(1, 1), &[8, 0, 1, 0, b'b']).is_err());
        assert_eq!(kind(&[]).expect("empty"), None);
    }
}
