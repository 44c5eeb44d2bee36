//! Dropped-packet events for `lockdown log`, rate-limited per CPU so a flood costs a fixed budget.
//! The event carries the packet's first bytes, copied straight into the ring buffer (no stack is
//! used); userspace parses them.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use lockdown_common::{
    contract::{
        config::FLAG_LOG,
        counters::Counter,
        events::{DropEvent, EVENT_CAPTURE},
    },
    packet::Packet as _,
    tables::Tables as _,
};

use crate::{
    maps::{EVENTS, LOG_WINDOW},
    packet::Bytes,
    tables::{MapTables, Variant, count},
};

/// How an event's bytes are copied from the packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture {
    /// `bpf_xdp_load_bytes` (Linux 5.18), which reads across the buffers of a multi-buffer frame.
    Helper,
    /// Direct packet access over `data..data_end`: a single-buffer frame holds the whole packet
    /// there. Works on every kernel lockdown runs on.
    Linear,
}

/// Writes one event for a dropped packet, unless no reader runs, the rate limit is reached or
/// the ring is full. With no reader it costs one flag test: not even the clock is read.
#[inline(always)]
pub(crate) fn drop_event<V: Variant>(
    ctx: &XdpContext,
    len: u64,
    reason: Counter,
    tables: &mut MapTables<V>,
    capture: Capture,
) {
    let config = *tables.config();
    if config.flags & FLAG_LOG == 0 || config.log_per_sec == 0 {
        return;
    }
    let now = tables.now();
    let Some(window) = LOG_WINDOW.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; the program is not preempted while it runs.
    if !unsafe { (*window).admit(now, config.log_per_sec) } {
        count(Counter::LogSuppressed, 0);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        count(Counter::LogSuppressed, 0);
        return;
    };
    let ev = entry.as_mut_ptr();
    // In 1..=EVENT_CAPTURE by construction (mask, then +1), which the verifier can see; a packet
    // shorter than this makes the copy fail, and the event says captured = 0.
    let captured =
        ((len.min(EVENT_CAPTURE as u64) as u32).wrapping_sub(1) & (EVENT_CAPTURE as u32 - 1)) + 1;
    // SAFETY: `ev` points at a reserved DropEvent in the ring buffer; at most `captured`
    // (≤ EVENT_CAPTURE, ≤ packet length) bytes are copied into its `data`.
    unsafe {
        (*ev).time_ns = now;
        (*ev).ifindex = (*ctx.ctx).ingress_ifindex;
        (*ev).reason = reason as u32;
        (*ev).packet_len = len as u32;
        let copied = match capture {
            Capture::Helper => {
                bpf_xdp_load_bytes(ctx.ctx, 0, (*ev).data.as_mut_ptr().cast(), captured) == 0
            }
            Capture::Linear => copy_linear(ctx, &mut (*ev).data, captured as usize),
        };
        (*ev).captured = if copied { captured } else { 0 };
    }
    entry.submit(0);
    count(Counter::LogEvents, 0);
}

/// Copies the first `n` bytes of the packet (8 ≤ `n` ≤ [`EVENT_CAPTURE`]) into `out`, eight at a
/// time, the last eight ending at `n` (overlapping the one before); false if the packet is shorter
/// than `n` or `n` is out of range. Every load is an 8-byte load bounds-checked against
/// `data_end`, which the verifier follows at any offset (a 1-byte check compiles to
/// `ptr >= data_end`, which it does not).
#[inline(always)]
fn copy_linear(ctx: &XdpContext, out: &mut [u8; EVENT_CAPTURE], n: usize) -> bool {
    if !(8..=EVENT_CAPTURE).contains(&n) {
        return false;
    }
    let pkt = Bytes::new(ctx.data(), ctx.data_end());
    let mut at = 0;
    for _ in 0..EVENT_CAPTURE / 8 {
        // The last word ends at `n` exactly.
        let from = if at + 8 > n { n - 8 } else { at };
        let (Some(w), Some(dst)) = (pkt.load::<[u8; 8]>(from), out.get_mut(from..from + 8)) else {
            return false;
        };
        dst.copy_from_slice(&w);
        at = from + 8;
        if at >= n {
            break;
        }
    }
    true
}
