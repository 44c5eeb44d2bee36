//! What lockdown's two netlink readers ([`crate::host::ctnetlink`] and [`crate::host::link`])
//! share: the socket's receive timeout, sending a request, receiving one reply datagram, and
//! walking its messages.

use std::{io, os::fd::AsRawFd as _, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
};
use netlink_sys::Socket;

/// How long one `recv` may wait for the kernel. It answers these requests at once; this only
/// keeps a wedged socket from hanging the caller.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// The receive buffer. The kernel fills a dump's datagrams up to the reader's buffer size, at
/// most 32 KiB (`netlink_dump`), and one interface's `RTM_NEWLINK` is 1-2 KiB; a datagram larger
/// than this buffer is an error, not silently cut.
pub const RECV_BUF: usize = 64 * 1024;

/// Sets `SO_RCVTIMEO` to [`RECV_TIMEOUT`].
pub fn set_recv_timeout(socket: &Socket) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(RECV_TIMEOUT.subsec_micros()),
    };
    // SAFETY: the fd is the open socket; `tv` is a valid `timeval` of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("setting SO_RCVTIMEO on a netlink socket");
    }
    Ok(())
}

/// One request: `payload` under a header with `flags` and sequence number `seq`.
pub fn encode<T: NetlinkSerializable>(payload: T, flags: u16, seq: u32) -> Vec<u8>
where
    NetlinkPayload<T>: From<T>,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// Sends `request` (`what` names it in errors), whole.
pub fn send(socket: &Socket, request: &[u8], what: &str) -> Result<()> {
    let sent = socket
        .send(request, 0)
        .with_context(|| format!("sending {what}"))?;
    if sent != request.len() {
        bail!("sending {what}: sent {sent} of {} bytes", request.len());
    }
    Ok(())
}

/// Receives one datagram of the reply to `what` into `buf` (capacity [`RECV_BUF`]): retried when
/// interrupted, an error after [`RECV_TIMEOUT`] or if the datagram did not fit.
pub fn recv<'a>(socket: &Socket, buf: &'a mut Vec<u8>, what: &str) -> Result<&'a [u8]> {
    loop {
        buf.clear();
        let n = match socket.recv(buf, libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bail!("the kernel sent no reply to {what} within {RECV_TIMEOUT:?}")
            }
            Err(e) => return Err(e).with_context(|| format!("receiving the reply to {what}")),
        };
        if n > buf.len() {
            bail!(
                "a datagram of the reply to {what} ({n} bytes) did not fit the {} byte buffer",
                buf.capacity()
            );
        }
        return Ok(&buf[..n]);
    }
}

/// The messages of one datagram answering request `seq`, with the byte offset of each: every one
/// deserialised (bounds-checked) and checked to answer `seq`. The first malformed or foreign
/// message is an error, and ends the walk; nothing here panics.
pub fn messages<T: NetlinkDeserializable>(
    buf: &[u8],
    seq: u32,
) -> impl Iterator<Item = Result<(usize, NetlinkMessage<T>)>> + '_ {
    let mut off = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || off >= buf.len() {
            return None;
        }
        let at = off;
        let next = NetlinkMessage::<T>::deserialize(&buf[at..])
            .map_err(|e| {
                anyhow!(
                    "malformed netlink message at byte {at} of {}: {e}",
                    buf.len()
                )
            })
            .and_then(|message| {
                let header = message.header;
                if header.sequence_number != seq {
                    bail!(
                        "netlink message at byte {at} answers request {}, not {seq}",
                        header.sequence_number
                    );
                }
                // `deserialize` checked 16 <= length <= the bytes left; messages are 4-byte
                // aligned.
                off += (header.length as usize).next_multiple_of(4);
                Ok((at, message))
            });
        failed = next.is_err();
        Some(next)
    })
}
