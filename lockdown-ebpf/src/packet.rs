//! `Packet` over `data..data_end`, with the bounds check the verifier needs on every access.

use lockdown_common::packet::Packet;

pub(crate) struct Bytes {
    start: usize,
    end: usize,
}

impl Bytes {
    #[inline(always)]
    pub(crate) const fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }
}

impl Packet for Bytes {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let ptr = self.start + off;
        if ptr + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: bounds checked against data_end just above.
        Some(unsafe { (ptr as *const T).read_unaligned() })
    }
}
