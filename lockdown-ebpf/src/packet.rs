//! `Packet` over `data..data_end`, with the bounds check the verifier needs on every access.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_meta, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lockdown_common::{
    contract::syncookie::HandoffMeta,
    packet::{Packet, PacketMut},
};

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

/// The frame of an XDP program that may answer it in place (the cookie program): reads and writes
/// through `data..data_end`, re-read after every helper that moves them.
/// A frame of several buffers is never rewritten: [`PacketMut::frame_len`] says 0 for it, and
/// the rewrite, which checks the length before its first store, leaves it alone. (A SYN never
/// spans buffers; reading the whole length here, in code every XDP program shares, would make
/// the single-buffer program need `bpf_xdp_get_buff_len`, Linux 5.18.)
pub(crate) struct XdpFrame<'a> {
    ctx: &'a XdpContext,
    bytes: Bytes,
    /// Whether the frame has more buffers than the first.
    frags: bool,
}

impl<'a> XdpFrame<'a> {
    /// The frame of `ctx`, `len` bytes in all buffers.
    #[inline(always)]
    pub(crate) fn new(ctx: &'a XdpContext, len: u64) -> Self {
        let bytes = Bytes::new(ctx.data(), ctx.data_end());
        Self {
            ctx,
            frags: len != (bytes.end - bytes.start) as u64,
            bytes,
        }
    }
}

impl Packet for XdpFrame<'_> {
    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        self.bytes.load(off)
    }
}

impl PacketMut for XdpFrame<'_> {
    #[inline(always)]
    fn store<T: Copy>(&mut self, off: usize, v: T) -> bool {
        let ptr = self.bytes.start + off;
        if ptr + size_of::<T>() > self.bytes.end {
            return false;
        }
        // SAFETY: bounds checked against data_end just above; XDP packet memory is writable.
        unsafe { (ptr as *mut T).write_unaligned(v) };
        true
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        if self.frags {
            0
        } else {
            self.bytes.end - self.bytes.start
        }
    }

    #[inline(always)]
    fn truncate(&mut self, len: usize) -> bool {
        let delta = len as i64 - self.frame_len() as i64;
        // SAFETY: a plain helper call on this program's own context; the packet pointers it
        // invalidates are re-read just below.
        let ok = unsafe { bpf_xdp_adjust_tail(self.ctx.ctx, delta as i32) } == 0;
        self.bytes = Bytes::new(self.ctx.data(), self.ctx.data_end());
        ok
    }

    #[inline(always)]
    fn set_meta(&mut self, meta: &HandoffMeta) -> bool {
        let size = size_of::<HandoffMeta>();
        // SAFETY: a plain helper call on this program's own context; every pointer is re-read
        // after it.
        if unsafe { bpf_xdp_adjust_meta(self.ctx.ctx, -(size as i32)) } != 0 {
            return false;
        }
        // SAFETY: `ctx` is valid for the program run.
        let (meta_start, data) = unsafe {
            let md = &*self.ctx.ctx;
            (md.data_meta as usize, md.data as usize)
        };
        self.bytes = Bytes::new(self.ctx.data(), self.ctx.data_end());
        if meta_start + size > data {
            return false;
        }
        // SAFETY: `meta_start..meta_start + size` is the metadata area the helper just made,
        // checked against `data` (the verifier's bound for metadata) just above.
        unsafe { (meta_start as *mut HandoffMeta).write_unaligned(*meta) };
        true
    }
}
