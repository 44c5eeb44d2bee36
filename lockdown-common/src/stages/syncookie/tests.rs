//! The cookie stage end to end on the host, through the model: a SYN becomes a valid SYN-ACK, its
//! cookie's ACK reaches the listener with the SYN's options, and everything else is refused.

use std::collections::{BTreeMap, BTreeSet};

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use crate::{
    contract::rate::RateSpec,
    contract::{
        allow::AllowRule,
        config::{Config, FLAG_MONITOR},
        counters::Counter,
        flow::{FAMILY_V4, FAMILY_V6},
        syncookie::{CookieConfig, META_MAGIC, MODE_AUTO, MODE_ON, PERIOD_SHIFT, WINDOW_SHIFT},
    },
    model::HostTables,
    packet::Frame,
    rules::allow::PortSpec,
    stages::parse::{TCP_ACK, TCP_SYN, v4_addr},
    verdict::Action,
};

const CLIENT4: [u8; 4] = [198, 51, 100, 7];
const ORIGIN4: [u8; 4] = [192, 0, 2, 1];
const CLIENT6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const ORIGIN6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const NOW: u64 = 5000 << PERIOD_SHIFT;
/// Linux's SYN options: MSS 1460, SACK-permitted, timestamps (TSval 0x01020304), NOP, wscale 7.
const LINUX: [u8; 20] = [
    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
];

fn config(mode: u32) -> CookieConfig {
    CookieConfig {
        keys: [[11, 12], [13, 14]],
        mode,
        threshold: 3,
        calm: 2,
        ..CookieConfig::OFF
    }
}

fn tables(mode: u32) -> HostTables {
    let rules: BTreeSet<AllowRule> = [
        AllowRule::parse("tcp/22", None),
        AllowRule::parse("tcp/8080", Some("198.51.100.0/24")),
    ]
    .into_iter()
    .collect::<Result<_, _>>()
    .expect("rules");
    let mut t = HostTables::from_rules(Config::DEFAULT, &rules).expect("compile");
    t.cookie = Some(config(mode));
    t.listeners.insert(22);
    t.listeners.insert(8080);
    t
}

/// A TCP segment from the client to the origin's port `dport`.
fn seg(
    v6: bool,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    options: &[u8],
    payload: &[u8],
) -> Frame {
    let b = PacketBuilder::ethernet2([2; 6], [4; 6]);
    let b = if v6 {
        b.ipv6(CLIENT6, ORIGIN6, 64)
    } else {
        b.ipv4(CLIENT4, ORIGIN4, 64)
    };
    let mut b = b.tcp(40000, dport, seq, 64240);
    if flags & TCP_SYN != 0 {
        b = b.syn();
    }
    if flags & TCP_ACK != 0 {
        b = b.ack(ack);
    }
    if flags & 0x40 != 0 {
        b = b.ece().cwr();
    }
    if !options.is_empty() {
        b = b.options_raw(options).expect("options");
    }
    let mut bytes = Vec::new();
    b.write(&mut bytes, payload).expect("frame");
    Frame { bytes, meta: None }
}

/// The SYN-ACK in `f`, checked: addresses and ports swapped, both checksums right, nothing after
/// the TCP header. Returns (seq, ack, flags byte, options).
fn synack(f: &Frame, v6: bool) -> (u32, u32, u8, Vec<u8>) {
    assert_eq!(
        &f.bytes[0..6],
        &[2; 6],
        "destination MAC is the SYN's source"
    );
    assert_eq!(&f.bytes[6..12], &[4; 6]);
    let p = SlicedPacket::from_ethernet(&f.bytes).expect("the answer parses");
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("no TCP in the answer");
    };
    assert_eq!((tcp.source_port(), tcp.destination_port()), (22, 40000));
    let header = tcp.to_header();
    let csum = match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            assert!(!v6);
            let h = ip.header().to_header();
            assert_eq!((h.source, h.destination), (ORIGIN4, CLIENT4));
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            assert_eq!(
                usize::from(h.total_len),
                f.bytes.len() - 14,
                "frame cut after TCP"
            );
            header.calc_checksum_ipv4(&h, &[]).expect("checksum")
        }
        Some(NetSlice::Ipv6(ip)) => {
            assert!(v6);
            let h = ip.header().to_header();
            assert_eq!((h.source, h.destination), (ORIGIN6, CLIENT6));
            assert_eq!(
                usize::from(h.payload_length),
                f.bytes.len() - 54,
                "frame cut after TCP"
            );
            header.calc_checksum_ipv6(&h, &[]).expect("checksum")
        }
        _ => panic!("no IP in the answer"),
    };
    assert_eq!(header.checksum, csum, "TCP checksum");
    assert!(tcp.payload().is_empty());
    (
        tcp.sequence_number(),
        tcp.acknowledgment_number(),
        f.bytes[if v6 { 54 } else { 34 } + 13],
        tcp.options().to_vec(),
    )
}

#[test]
fn a_linux_syn_is_answered_and_its_ack_handed_over_with_its_options() {
    for v6 in [false, true] {
        let mut t = tables(MODE_ON);
        let mut syn = seg(v6, 22, TCP_SYN, 1000, 0, &LINUX, b"");
        let d = t.ingress_frame(&mut syn, NOW);
        assert_eq!(
            (d.reason, d.action()),
            (Counter::SynCookieSent, Action::Transmit)
        );
        let (cookie, ack, flags, opts) = synack(&syn, v6);
        assert_eq!(ack, 1001);
        assert_eq!(flags, 0x12, "SYN|ACK");
        let mss: u16 = if v6 { 1440 } else { 1460 };
        let [m0, m1] = mss.to_be_bytes();
        assert_eq!(
            &opts[..8],
            &[2, 4, m0, m1, 4, 2, 8, 10],
            "MSS, SACK-permitted, timestamps"
        );
        assert_eq!(&opts[12..16], &[1, 2, 3, 4], "TSecr echoes the SYN's TSval");
        assert_eq!(&opts[16..20], &[1, 3, 3, 7], "the origin's window scale");
        assert!(t.flows.is_empty() && t.closing.is_empty(), "nothing stored");

        // The ACK: seq = ISN + 1, ack = cookie + 1, timestamps echoing ours.
        let tsval_ours = &opts[8..12];
        let mut ts = vec![1, 1, 8, 10, 0, 0, 0, 9];
        ts.extend_from_slice(tsval_ours);
        let mut a = seg(v6, 22, TCP_ACK, 1001, cookie.wrapping_add(1), &ts, b"");
        let d = t.ingress_frame(&mut a, NOW + 1_000_000);
        assert_eq!(
            (d.reason, d.action()),
            (Counter::PassCookieAck, Action::Pass)
        );
        let m = a.meta.expect("hand-off metadata");
        assert_eq!(m.magic, META_MAGIC);
        let at = m.attrs;
        assert_eq!(at.mss, mss, "the SYN's MSS (1460) as the table has it");
        assert_eq!((at.wscale_ok, at.snd_wscale, at.rcv_wscale), (1, 7, 7));
        assert_eq!((at.sack_ok, at.ecn_ok, at.tstamp_ok), (1, 0, 1));
        assert_eq!(at.rcv_tsval, 9);
        assert_eq!(at.rcv_tsecr.to_be_bytes(), tsval_ours);

        // The same ACK from another source port, or with another ISN, is refused.
        let mut forged = seg(v6, 22, TCP_ACK, 1002, cookie.wrapping_add(1), &[], b"");
        assert_eq!(
            t.ingress_frame(&mut forged, NOW).reason,
            Counter::DropCookieInvalid
        );
        assert!(forged.meta.is_none());
        // Once the connection exists, its segments pass as any allowed port's.
        let key = (
            if v6 { FAMILY_V6 } else { FAMILY_V4 },
            if v6 { CLIENT6 } else { v4_addr(CLIENT4) },
            if v6 { ORIGIN6 } else { v4_addr(ORIGIN4) },
            40000,
            22,
        );
        t.connections.insert(key);
        let mut data = seg(v6, 22, TCP_ACK, 1002, 77, &[], b"data");
        assert_eq!(t.ingress_frame(&mut data, NOW).reason, Counter::PassAllowed);
        assert!(t.flows.is_empty() && t.closing.is_empty(), "nothing stored");
    }
}

#[test]
fn without_timestamps_the_cookie_keeps_window_scale_sack_and_ecn() {
    let mut t = tables(MODE_ON);
    // Windows: MSS 1400, NOP, wscale 8, NOP, NOP, SACK-permitted; ECN asked for (ECE + CWR).
    let opts = [2, 4, 0x05, 0x78, 1, 3, 3, 8, 1, 1, 4, 2];
    let mut syn = seg(false, 22, TCP_SYN | 0x40, 5, 0, &opts, b"");
    let len = syn.bytes.len();
    assert_eq!(
        t.ingress_frame(&mut syn, NOW).reason,
        Counter::SynCookieSent
    );
    let (cookie, _, flags, o) = synack(&syn, false);
    assert_eq!(syn.bytes.len(), len, "same size as the SYN: nothing grows");
    assert_eq!(flags, 0x52, "SYN|ACK|ECE");
    assert_eq!(o, [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2]);
    let mut a = seg(false, 22, TCP_ACK, 6, cookie.wrapping_add(1), &[], b"");
    assert_eq!(t.ingress_frame(&mut a, NOW).reason, Counter::PassCookieAck);
    let at = a.meta.expect("metadata").attrs;
    assert_eq!(at.mss, 1300, "1400 rounds down to the table's 1300");
    assert_eq!(
        (at.snd_wscale, at.sack_ok, at.ecn_ok, at.tstamp_ok),
        (8, 1, 1, 0)
    );
}

#[test]
fn payload_and_padding_are_cut_and_an_option_less_syn_gets_an_option_less_answer() {
    let mut t = tables(MODE_ON);
    let mut syn = seg(false, 22, TCP_SYN, 5, 0, &[], b"fast open data");
    syn.bytes.extend_from_slice(&[0; 6]);
    assert_eq!(
        t.ingress_frame(&mut syn, NOW).reason,
        Counter::SynCookieSent
    );
    let (_, _, _, o) = synack(&syn, false);
    assert!(o.is_empty());
    assert_eq!(syn.bytes.len(), 54);
}

#[test]
fn expired_and_retired_cookies_are_refused() {
    let mut t = tables(MODE_ON);
    let mut syn = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    t.ingress_frame(&mut syn, NOW);
    let (cookie, ..) = synack(&syn, false);
    let ack = |t: &mut HostTables, now| {
        let mut a = seg(false, 22, TCP_ACK, 6, cookie.wrapping_add(1), &[], b"");
        t.ingress_frame(&mut a, now).reason
    };
    let period = 1u64 << PERIOD_SHIFT;
    assert_eq!(ack(&mut t, NOW + period), Counter::PassCookieAck);
    assert_eq!(
        ack(&mut t, NOW + 2 * period),
        Counter::DropCookieInvalid,
        "expired"
    );
    t.cookie.as_mut().expect("config").rotate([21, 22]);
    assert_eq!(
        ack(&mut t, NOW),
        Counter::PassCookieAck,
        "the previous key still signs"
    );
    t.cookie.as_mut().expect("config").rotate([31, 32]);
    assert_eq!(
        ack(&mut t, NOW),
        Counter::DropCookieInvalid,
        "replayed after rotation"
    );
}

#[test]
fn an_ack_to_a_port_nothing_listens_on_is_dropped() {
    let mut t = tables(MODE_ON);
    t.listeners.clear();
    let mut a = seg(false, 22, TCP_ACK, 6, 12345, &[], b"");
    assert_eq!(
        t.ingress_frame(&mut a, NOW).reason,
        Counter::DropCookieNoListener
    );
}

#[test]
fn the_rate_is_charged_at_the_cookie_ack_not_at_the_syn() {
    let mut t = tables(MODE_ON);
    let rules: BTreeSet<AllowRule> = [AllowRule::parse("tcp/22", None)]
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("rule");
    let rate = RateSpec::parse_rate("2/min", 2).expect("rate");
    let rates: BTreeMap<PortSpec, RateSpec> = [(PortSpec::parse("tcp/22").expect("port"), rate)]
        .into_iter()
        .collect();
    t.set_rates(&rules, &rates, 7).expect("rates");
    // Many SYNs from the client (spoofed or not): every one answered, none charged.
    let mut cookie = 0;
    for _ in 0..20 {
        let mut syn = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
        assert_eq!(
            t.ingress_frame(&mut syn, NOW).reason,
            Counter::SynCookieSent
        );
        cookie = synack(&syn, false).0;
    }
    // Its valid ACKs spend the burst of 2, then the third is over the rate.
    for want in [
        Counter::PassCookieAck,
        Counter::PassCookieAck,
        Counter::DropRateLimited,
    ] {
        let mut a = seg(false, 22, TCP_ACK, 6, cookie.wrapping_add(1), &[], b"");
        assert_eq!(t.ingress_frame(&mut a, NOW).reason, want);
    }
}

#[test]
fn auto_engages_over_the_threshold_and_disengages_after_the_calm() {
    let mut t = tables(MODE_AUTO);
    let w = |n: u64| n << WINDOW_SHIFT;
    let base = NOW;
    let syn = |t: &mut HostTables, now| {
        let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
        t.ingress_frame(&mut s, now).reason
    };
    // Threshold 3 per window: three SYNs go to the kernel's handshake, the fourth is answered.
    for _ in 0..3 {
        assert_eq!(syn(&mut t, base), Counter::PassAllowed);
    }
    assert_eq!(syn(&mut t, base), Counter::SynCookieSent);
    // Calm 2 windows: still answered one and two windows after the last flood window, not three.
    assert_eq!(syn(&mut t, base + w(1)), Counter::SynCookieSent);
    assert_eq!(syn(&mut t, base + w(2)), Counter::SynCookieSent);
    assert_eq!(syn(&mut t, base + w(3)), Counter::PassAllowed);
    // A port under no flood is left alone.
    let mut other = seg(false, 8080, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(
        t.ingress_frame(&mut other, base).reason,
        Counter::PassAllowed
    );
}

#[test]
fn off_monitor_and_closed_ports_keep_the_verdict_without_cookies() {
    let mut off = tables(crate::contract::syncookie::MODE_OFF);
    let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(off.ingress_frame(&mut s, NOW).reason, Counter::PassAllowed);
    let mut none = tables(MODE_ON);
    none.cookie = None;
    let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(none.ingress_frame(&mut s, NOW).reason, Counter::PassAllowed);
    let mut linear = tables(MODE_ON);
    linear.cookies = false;
    let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(
        linear.ingress_frame(&mut s, NOW).reason,
        Counter::PassAllowed
    );
    let mut monitor = tables(MODE_ON);
    monitor.config.flags |= FLAG_MONITOR;
    let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(
        monitor.ingress_frame(&mut s, NOW).reason,
        Counter::PassAllowed
    );
    let mut on = tables(MODE_ON);
    let mut s = seg(false, 9999, TCP_SYN, 5, 0, &LINUX, b"");
    assert_eq!(on.ingress_frame(&mut s, NOW).reason, Counter::DropNew);
    let mut s = seg(false, 9999, TCP_ACK, 5, 9, &[], b"");
    assert_eq!(on.ingress_frame(&mut s, NOW).reason, Counter::DropNew);
}

#[test]
fn a_syn_of_another_shape_goes_to_the_kernel_charged_at_the_syn() {
    let mut t = tables(MODE_ON);
    // IPv4 with an option (IHL 6): not the plain shape.
    let mut big = seg(false, 22, TCP_SYN, 5, 0, &LINUX, &[7; 1500]);
    assert_eq!(
        t.ingress_frame(&mut big, NOW).reason,
        Counter::PassSynToKernel,
        "too long"
    );
    let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
    s.bytes.splice(34..34, [1, 1, 1, 0]);
    s.bytes[14] = 0x46;
    let total = u16::from_be_bytes([s.bytes[16], s.bytes[17]]) + 4;
    s.bytes[16..18].copy_from_slice(&total.to_be_bytes());
    let before = s.clone();
    let d = t.ingress_frame(&mut s, NOW);
    assert_eq!(
        (d.reason, d.action()),
        (Counter::PassSynToKernel, Action::Pass)
    );
    assert_eq!(s, before, "left as it came");
}

#[test]
fn without_a_cookie_program_syns_go_to_the_kernel_uncharged_while_the_flood_lasts() {
    // A kernel without the hand-off kfunc: the loader leaves the tail-call slot empty and writes
    // mode auto, so the detector still runs. Under a flood, a rated port's SYNs go to the
    // kernel's handshake (and its own syncookies) without spending their source's rate: the
    // rate limit fails open instead of locking everyone out.
    let mut t = tables(MODE_AUTO);
    t.cookie_stage = false;
    let rules: BTreeSet<AllowRule> = [AllowRule::parse("tcp/22", None)]
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("rule");
    let rate = RateSpec::parse_rate("2/min", 2).expect("rate");
    let rates: BTreeMap<PortSpec, RateSpec> = [(PortSpec::parse("tcp/22").expect("port"), rate)]
        .into_iter()
        .collect();
    t.set_rates(&rules, &rates, 7).expect("rates");
    let syn = |t: &mut HostTables| {
        let mut s = seg(false, 22, TCP_SYN, 5, 0, &LINUX, b"");
        let d = t.ingress_frame(&mut s, NOW);
        assert_eq!(d.action(), if d.pass { Action::Pass } else { Action::Drop });
        d.reason
    };
    // Below the threshold (3): charged as ever, the burst of 2 then refused.
    assert_eq!(syn(&mut t), Counter::PassAllowed);
    assert_eq!(syn(&mut t), Counter::PassAllowed);
    assert_eq!(syn(&mut t), Counter::DropRateLimited);
    // Over it: the kernel's handshake, uncharged, for every source.
    for _ in 0..10 {
        assert_eq!(syn(&mut t), Counter::PassSynToKernel);
    }
    let mut a = seg(false, 22, TCP_ACK, 6, 12345, &[], b"");
    assert_eq!(t.ingress_frame(&mut a, NOW).reason, Counter::PassAllowed);
}
