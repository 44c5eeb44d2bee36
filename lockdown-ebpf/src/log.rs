//! Dropped-packet events for `lockdown log`, rate-limited per CPU so a flood costs a fixed budget.
//! The event carries the packet's first bytes (copied by `bpf_xdp_load_bytes` straight into the
//! ring buffer, so no stack is used); userspace parses them.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use lockdown_common::{
    contract::{
        config::FLAG_LOG,
        counters::Counter,
        events::{DropEvent, EVENT_CAPTURE},
    },
    tables::Tables as _,
};

use crate::{
    maps::{EVENTS, LOG_WINDOW},
    tables::{MapTables, count},
};

/// Writes one event for a dropped packet, unless no reader runs, the rate limit is reached or
/// the ring is full. With no reader it costs one flag test: not even the clock is read.
#[inline(always)]
pub fn drop_event(ctx: &XdpContext, len: u64, reason: Counter, tables: &mut MapTables) {
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
    // SAFETY: `ev` points at a reserved DropEvent in the ring buffer; the helper copies at most
    // `captured` (≤ EVENT_CAPTURE, ≤ packet length) bytes into its `data`.
    unsafe {
        (*ev).time_ns = now;
        (*ev).ifindex = (*ctx.ctx).ingress_ifindex;
        (*ev).reason = reason as u32;
        (*ev).packet_len = len as u32;
        let copied = bpf_xdp_load_bytes(ctx.ctx, 0, (*ev).data.as_mut_ptr().cast(), captured) == 0;
        (*ev).captured = if copied { captured } else { 0 };
    }
    entry.submit(0);
    count(Counter::LogEvents, 0);
}
