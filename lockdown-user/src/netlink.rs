//! What lockdown's two netlink readers ([`crate::ctnetlink`] and [`crate::link`]) share: walking
//! the messages of one reply datagram.

use anyhow::{Result, anyhow, bail};
use netlink_packet_core::{NetlinkDeserializable, NetlinkMessage};

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
