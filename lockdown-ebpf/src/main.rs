//! lockdown's kernel programs. The entry points are thin: they wrap the context and call the shared
//! decision logic in `lockdown_common::verdict`.
#![no_std]
#![no_main]

mod log;
mod maps;
mod packet;
mod tables;

use aya_ebpf::{
    bindings::{TC_ACT_UNSPEC, xdp_action},
    helpers::generated::bpf_xdp_get_buff_len,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use lockdown_common::{
    contract::{counters::Counter, syncookie::COOKIE_SLOT},
    fastpath,
    verdict::{self, Action},
};

use crate::{
    maps::COOKIE_PROGS,
    packet::{Bytes, XdpFrame},
    tables::{MapTables, Plain, Stage, Triage, Variant, count},
};

/// XDP ingress for multi-buffer frames (`xdp.frags`): native XDP attaches at any MTU the driver
/// allows, jumbo frames included, and stays attached when the MTU rises. Only the first buffer is
/// read: it holds every header lockdown parses (a driver puts at least the first page there; the
/// parser reads at most 512 bytes of headers, and a packet whose headers were not all in the first
/// buffer is dropped as malformed, never passed on a guess). Bytes are counted for the whole frame,
/// all buffers. Needs Linux 5.18; the loader attaches it in native mode only (see
/// `lockdown_user::attach::variant`).
#[xdp(frags)]
pub(crate) fn lockdown_ingress(ctx: XdpContext) -> u32 {
    // SAFETY: a plain helper call on this program's own context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    ingress(&ctx, len, log::Capture::Helper, Triage)
}

/// XDP ingress for single-buffer frames: the same decisions as [`lockdown_ingress`], without the
/// multi-buffer flag, whose price in generic (skb) XDP is a slower receive path for every packet
/// (README, "XDP program variants"); generic XDP hands this program the whole frame, linearised.
/// It is also the native program on a kernel without multi-buffer XDP (before 5.18), where the
/// driver refuses an MTU above about one page. Uses no helper newer than Linux 5.11.
#[xdp]
pub(crate) fn lockdown_linear(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    ingress(&ctx, len, log::Capture::Linear, Plain)
}

/// The SYN-cookie stage (`lockdown_common::stages::syncookie`): the multi-buffer ingress program
/// tail-calls it for a SYN to answer or an ACK to check under a SYN flood, so the verifier checks
/// it as a program of its own. It answers a SYN in place (`XDP_TX`) and puts a valid cookie ACK's
/// options in front of it for the TC hand-off. The loader fills the tail-call slot only on a kernel
/// with the hand-off kfunc (Linux 6.12+ here; see `lockdown_user::host::probe`).
#[xdp(frags)]
pub(crate) fn lockdown_cookie(ctx: XdpContext) -> u32 {
    // SAFETY: a plain helper call on this program's own context.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    let mut frame = XdpFrame::new(&ctx, len);
    let mut tables = MapTables::new(Stage(ctx.ctx));
    let d = verdict::cookie(&mut frame, &mut tables);
    count(d.reason, len);
    if d.reason.is_drop() {
        cookie_drop_event(&ctx, len, d.reason);
    }
    match d.action() {
        Action::Transmit => xdp_action::XDP_TX,
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

/// The cookie program's drop event, in a frame of its own: inlined, its buffers would add to the
/// stage's call chain, which must fit 512 bytes. The bytes are copied from the first buffer (the
/// cookie stage drops only plain TCP segments, whose headers are all there), so that this shared
/// subprogram needs no helper the single-buffer program may not have.
#[inline(never)]
fn cookie_drop_event(ctx: &XdpContext, len: u64, reason: Counter) {
    let mut tables = MapTables::new(Triage);
    log::drop_event(ctx, len, reason, &mut tables, log::Capture::Linear);
}

/// Pass or drop one inbound packet of `len` bytes, and count why: the body of both XDP variants.
/// With the cookie triage (the multi-buffer program), a packet for the SYN-cookie stage goes on to
/// [`lockdown_cookie`] by tail call.
#[inline(always)]
fn ingress<V: Variant>(ctx: &XdpContext, len: u64, capture: log::Capture, variant: V) -> u32 {
    let pkt = Bytes::new(ctx.data(), ctx.data_end());
    let mut tables = MapTables::new(variant);
    let mut d = verdict::ingress(&pkt, &mut tables);
    if V::COOKIES && verdict::to_cookie_stage(d.reason) {
        // SAFETY: a tail call on this program's own context; on success it does not return.
        unsafe { COOKIE_PROGS.tail_call(ctx, COOKIE_SLOT) };
        // No cookie program in the slot (a kernel without the hand-off kfunc).
        d = verdict::without_cookie_stage(d);
    }
    count(d.reason, len);
    if d.reason == Counter::DropInvalid {
        // Off unless the loader enables debug logging (`run --debug-log`).
        debug!(
            ctx,
            "ingress: segment does not fit its flow's state ({} bytes)", len
        );
    }
    if d.reason.is_drop() {
        log::drop_event(ctx, len, d.reason, &mut tables, capture);
    }
    if d.pass {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// TC egress: learn flows from outbound packets. Never drops; returns "next" (TC_ACT_UNSPEC /
/// TCX_NEXT) so other programs on the hook still run.
#[classifier]
pub(crate) fn lockdown_egress(ctx: TcContext) -> i32 {
    let mut tables = MapTables::new(Plain);
    count(Counter::EgressPackets, u64::from(ctx.len()));
    // The serving origin's heavy direction, decided on the linear head as it is: no pull.
    if fastpath::egress_vouched4(&Bytes::new(ctx.data(), ctx.data_end()), &tables) {
        return TC_ACT_UNSPEC;
    }
    // Headers may sit in paged data; make the first bytes linear. Failure only means less to parse.
    let want = ctx.len().min(256);
    let _ = ctx.skb.pull_data(want);
    let pkt = Bytes::new(ctx.data(), ctx.data_end());
    if let Some(c) = verdict::egress(&pkt, &mut tables) {
        count(c, 0);
        // Off unless the loader enables debug logging (`run --debug-log`).
        debug!(&ctx, "egress: flow created ({} bytes)", ctx.len());
    }
    TC_ACT_UNSPEC
}

/// Benchmark baseline: the cheapest possible drop. Never attached; `cargo xtask bench` compares
/// every lockdown path against it, measured in the same run.
#[xdp]
pub(crate) fn baseline_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Benchmark baseline: the cheapest possible pass. Never attached.
#[xdp]
pub(crate) fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark diagnostic: one lookup in an LRU hash with a 16-byte key (the IPv4 live flow table)
/// and nothing else — the key is the frame's first 16 bytes, so nothing is parsed — to show what a
/// hit costs on its own: the floor of any 5-tuple table. Never attached.
#[xdp]
pub(crate) fn baseline_lookup(ctx: XdpContext) -> u32 {
    use lockdown_common::{contract::flow::FlowKey4, packet::Packet as _};
    let pkt = Bytes::new(ctx.data(), ctx.data_end());
    let Some(mut key) = pkt.load::<FlowKey4>(0) else {
        return xdp_action::XDP_DROP;
    };
    // As every real key: no stray bytes in the padding.
    key._pad = 0;
    key._pad2 = 0;
    if maps::FLOWS4.get_ptr(&key).is_some() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
