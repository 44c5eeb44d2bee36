//! The seam every stage reads packets through: [`Packet`], bounds-checked loads from the frame —
//! `data..data_end` in the kernel (lockdown-ebpf), a byte slice on the host.

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
