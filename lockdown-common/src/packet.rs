//! The seam every stage reads packets through: [`Packet`], bounds-checked loads from the frame —
//! `data..data_end` in the kernel (lockdown-ebpf), a byte slice on the host — and [`PacketMut`],
//! for the one stage that answers a packet in place.

use crate::contract::syncookie::HandoffMeta;

/// Read access to packet bytes, with bounds checks.
pub trait Packet {
    /// Reads a `T` at `off`, or `None` if the packet is too short.
    fn load<T: Copy>(&self, off: usize) -> Option<T>;
}

impl Packet for [u8] {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let bytes = self.get(off..off.checked_add(size_of::<T>())?)?;
        // SAFETY: `bytes` holds exactly size_of::<T>() bytes, read unaligned; every `T` used here
        // is an integer array, valid for any bit pattern.
        Some(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
    }
}

/// Write access for the stages that answer a packet in place (SYN cookies): bounds-checked stores,
/// shrinking the frame, and the metadata in front of it that travels with the packet to TC.
pub trait PacketMut: Packet {
    /// Writes `v` at `off`; `false` (nothing written) if the packet is too short.
    fn store<T: Copy>(&mut self, off: usize, v: T) -> bool;
    /// The frame's length (in the kernel, its first buffer's).
    fn frame_len(&self) -> usize;
    /// Cuts the frame to its first `len` bytes (`len` at most [`PacketMut::frame_len`]).
    fn truncate(&mut self, len: usize) -> bool;
    /// Puts `meta` in front of the frame (XDP metadata), for the TC hand-off.
    fn set_meta(&mut self, meta: &HandoffMeta) -> bool;
}

/// A frame on the host: its bytes and the metadata a stage put in front of it.
#[cfg(any(test, feature = "std"))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
    pub meta: Option<HandoffMeta>,
}

#[cfg(any(test, feature = "std"))]
impl Packet for Frame {
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        self.bytes.as_slice().load(off)
    }
}

#[cfg(any(test, feature = "std"))]
impl PacketMut for Frame {
    fn store<T: Copy>(&mut self, off: usize, v: T) -> bool {
        let Some(bytes) = off
            .checked_add(size_of::<T>())
            .and_then(|end| self.bytes.get_mut(off..end))
        else {
            return false;
        };
        // SAFETY: `bytes` holds exactly size_of::<T>() bytes, written unaligned; every `T` stored
        // is an integer array.
        unsafe { bytes.as_mut_ptr().cast::<T>().write_unaligned(v) };
        true
    }

    fn frame_len(&self) -> usize {
        self.bytes.len()
    }

    fn truncate(&mut self, len: usize) -> bool {
        if len > self.bytes.len() {
            return false;
        }
        self.bytes.truncate(len);
        true
    }

    fn set_meta(&mut self, meta: &HandoffMeta) -> bool {
        self.meta = Some(*meta);
        true
    }
}
