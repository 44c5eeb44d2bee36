//! SYN cookies, the loader's side: what `up`, `up --replace` and `down` install and remove (the
//! cookie configuration `LD_SYNCOOKIE`, the tail-call table, the TC hand-off's link and
//! counters), the refusals and the one-line notice where cookies cannot answer, `status` and
//! `log` following the flood detector, and the C hand-off itself building a socket from a cookie
//! ACK's metadata (with a stand-in for the XDP cookie stage).
//!
//! The tests that install cookies (`--syn-cookies on`, or `auto` without the test hook) need the
//! XDP cookie program `lockdown_cookie` in the eBPF object: before it is merged they fail saying
//! so. The hand-off test needs the kfunc `bpf_sk_assign_tcp_reqsk` (Linux 6.9+) and clang.
//!
//! Needs root and the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test syncookie_setup -- --test-threads=1
//! ```

use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::Command,
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
    programs::{Xdp, XdpMode},
};
use lockdown_common::{
    contract::syncookie::{
        COOKIE_PROGS, CookieConfig, HANDOFF_COUNTERS, HandoffCounter, MODE_AUTO, MODE_ON,
        PortFlood, SYN_PORTS, SYNCOOKIE, mss_tables, window_of,
    },
    stages::parse::{TCP_ACK, TCP_SYN},
};
use lockdown_testbed::{
    bg::Bg,
    cli::{CmdOutput, check_refused},
    netns::{ns_must, try_in_ns},
    origin::Origin,
    packets::Pkt,
    pair::{ORIGIN_IF, ORIGIN_V4, PEER_V4, origin_addr},
    traffic::{Serve, TcpServer},
};
use lockdown_user::{
    attach::cookies,
    datapath::pins::{PIN_LINK_HANDOFF, PinDir},
};

const SSH: u16 = 22;
const FORCE_NO_REQSK: &str = "LOCKDOWN_FORCE_NO_REQSK";
const NOTICE: &str = "syn cookies: off — ";

/// The pinned `LD_SYNCOOKIE` entry of `o`'s interface.
fn cookie_config(o: &Origin) -> CookieConfig {
    cookies::read_config(&o.ld.pin_dir().join(SYNCOOKIE))
        .unwrap_or_else(|e| panic!("reading LD_SYNCOOKIE: {e:#}\n{}", o.context()))
}

/// Fails loudly, naming the reason, when this build cannot install cookies.
fn require_cookie_program() {
    assert!(
        cookies::object_has_cookie_prog(),
        "this build's eBPF object has no XDP cookie program (lockdown_cookie): the tests that \
         install cookies cannot run before the XDP side is merged"
    );
}

/// Every bpf_link id the kernel has.
fn link_ids() -> BTreeSet<u32> {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| l.id())
        .collect()
}

fn handoff_link_id(o: &Origin) -> u32 {
    let pin = o.ld.pin_dir().join(PIN_LINK_HANDOFF);
    let link = aya::programs::links::FdLink::from(
        aya::programs::links::PinnedLink::from_pin(&pin)
            .unwrap_or_else(|e| panic!("opening {}: {e}", pin.display())),
    );
    link.info().expect("reading the hand-off link").id()
}

fn lines_with(out: &CmdOutput, needle: &str) -> usize {
    out.stdout.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn up_on_installs_the_handoff_replace_rotates_the_key_down_removes_it() {
    require_cookie_program();
    let o = Origin::new("sc-on");
    o.pair.set_mtu(4000);
    let out =
        o.ld.up(&["--syn-cookies", "on", "--syn-cookie-threshold", "500"]);
    assert_eq!(
        lines_with(&out, NOTICE),
        0,
        "no notice where cookies answer: {out}"
    );
    let dir = o.ld.pin_dir();
    for pin in [
        PIN_LINK_HANDOFF,
        HANDOFF_COUNTERS,
        COOKIE_PROGS,
        SYNCOOKIE,
        SYN_PORTS,
    ] {
        assert!(
            dir.join(pin).exists(),
            "{pin} is not pinned\n{}",
            o.context()
        );
    }
    let first = cookie_config(&o);
    assert_eq!(first.mode, MODE_ON);
    assert_eq!((first.mss4, first.mss6), mss_tables(4000));
    assert_eq!(first.mss4[3], 3960);
    assert_ne!(first.keys[0], [0, 0], "key 0 is random");
    assert_ne!(first.keys[1], [0, 0], "key 1 is random");
    assert_eq!(first.key_gen, 0);
    assert_eq!(first.threshold, cookies::per_window(500));
    assert!((1..=14).contains(&first.rcv_wscale));
    let s = o.ld.status_json();
    let c = &s["syn_cookies"];
    assert_eq!(c["mode"], "on", "{s}");
    assert_eq!(c["answering"], true, "{s}");
    assert_eq!(c["reason"], serde_json::Value::Null, "{s}");
    assert_eq!(c["threshold_per_sec"], 500, "{s}");
    assert_eq!(c["calm_secs"], 30, "{s}");
    assert_eq!(c["engaged_ports"], serde_json::json!([SSH]), "{s}");
    assert_eq!(c["handoff"]["handoff_assigned"], 0, "{s}");
    let link = handoff_link_id(&o);

    // A replace swaps the programs into the same link and rotates the key.
    let out = o.ld.up(&["--replace"]);
    assert_eq!(lines_with(&out, NOTICE), 0, "{out}");
    let second = cookie_config(&o);
    assert_eq!(second.key_gen, 1);
    assert_eq!(
        second.keys[0], first.keys[0],
        "the previous key is still accepted"
    );
    assert_ne!(second.keys[1], first.keys[1], "the new key signs");
    assert_eq!(second.mode, MODE_ON, "a replace keeps the pinned settings");
    assert_eq!(second.threshold, first.threshold);
    assert_eq!(handoff_link_id(&o), link, "the hand-off link is kept");
    assert!(
        fs::read_dir(&dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("staging-")),
        "no staging pins left"
    );

    // A replace where cookies can no longer answer removes the hand-off.
    let out = o.ld.run_env(
        &[
            "up",
            "--replace",
            "--iface",
            ORIGIN_IF,
            "--syn-cookies",
            "auto",
        ],
        &[(FORCE_NO_REQSK, "1".to_owned())],
    );
    assert!(out.success(), "{out}");
    assert_eq!(lines_with(&out, NOTICE), 1, "{out}");
    assert!(!dir.join(PIN_LINK_HANDOFF).exists());
    assert!(!dir.join(HANDOFF_COUNTERS).exists());
    assert!(!link_ids().contains(&link), "the hand-off link is gone");
    let third = cookie_config(&o);
    assert_eq!((third.mode, third.key_gen), (MODE_AUTO, 2));
    assert_eq!(third.keys[1], second.keys[1]);

    // And back.
    o.ld.up(&["--replace", "--syn-cookies", "on"]);
    let link = handoff_link_id(&o);
    o.ld.down();
    assert!(!dir.exists(), "down leaves no pins");
    assert!(
        !link_ids().contains(&link),
        "down removes the hand-off link"
    );
    assert!(o.pair.origin_xdp().is_none(), "{}", o.context());
}

#[test]
fn without_the_kfunc_on_is_refused_and_auto_says_so_once() {
    let o = Origin::new("sc-noreqsk");
    let force = [(FORCE_NO_REQSK, "1".to_owned())];
    let out =
        o.ld.run_env(&["up", "--iface", ORIGIN_IF, "--syn-cookies", "on"], &force);
    check_refused(&out, &["bpf_sk_assign_tcp_reqsk", "nothing was changed"]);
    assert_eq!(out.status.code(), Some(78), "{out}");
    assert!(!o.ld.pin_dir().exists(), "a refused up pins nothing");
    assert!(
        o.pair.origin_xdp().is_none(),
        "a refused up attaches nothing"
    );

    let out = o.ld.run_env(&["up", "--iface", ORIGIN_IF], &force);
    let status = || {
        let out =
            o.ld.run_env(&["status", "--iface", ORIGIN_IF, "--json"], &force);
        assert!(out.success(), "{out}");
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).unwrap()
    };
    assert!(out.success(), "{out}");
    assert_eq!(lines_with(&out, NOTICE), 1, "one notice line: {out}");
    let notice = out.stdout.lines().find(|l| l.contains(NOTICE)).unwrap();
    assert!(
        notice.contains("has no bpf_sk_assign_tcp_reqsk"),
        "{notice}"
    );
    assert!(notice.contains("the kernel's own syncookies"), "{notice}");
    let dir = o.ld.pin_dir();
    assert!(!dir.join(PIN_LINK_HANDOFF).exists());
    assert!(!dir.join(HANDOFF_COUNTERS).exists());
    let c = cookie_config(&o);
    assert_eq!(
        c.mode, MODE_AUTO,
        "auto is written anyway: the datapath detects floods"
    );
    assert_ne!(c.keys[0], [0, 0]);
    let s = status();
    assert_eq!(s["syn_cookies"]["answering"], false, "{s}");
    let reason = s["syn_cookies"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("bpf_sk_assign_tcp_reqsk"), "{s}");
    o.ld.down();
}

#[test]
fn skb_mode_has_no_cookie_stage() {
    let o = Origin::new("sc-skb");
    let out = o.ld.run(&[
        "up",
        "--iface",
        ORIGIN_IF,
        "--mode",
        "skb",
        "--syn-cookies",
        "on",
    ]);
    check_refused(&out, &["lockdown_linear", "nothing was changed"]);
    assert_eq!(out.status.code(), Some(78), "{out}");
    assert!(!o.ld.pin_dir().exists());
    let out = o.ld.up(&["--mode", "skb"]);
    assert_eq!(lines_with(&out, NOTICE), 1, "{out}");
    assert!(out.stdout.contains("lockdown_linear"), "{out}");
    assert!(!o.ld.pin_dir().join(PIN_LINK_HANDOFF).exists());
    assert_eq!(cookie_config(&o).mode, MODE_AUTO);
    let out = o.ld.up(&["--replace", "--syn-cookies", "off"]);
    assert_eq!(lines_with(&out, NOTICE), 0, "off needs no notice: {out}");
    assert_eq!(cookie_config(&o).mode, 0);
    o.ld.down();
}

#[test]
fn bad_values_are_refused_and_change_nothing() {
    let o = Origin::new("sc-bad");
    for (args, needle) in [
        (
            &["--syn-cookie-threshold", "0"][..],
            "--syn-cookie-threshold must be at least 1",
        ),
        (
            &["--syn-cookie-calm", "0"][..],
            "--syn-cookie-calm must be at least 1",
        ),
    ] {
        let mut all = vec!["up", "--iface", ORIGIN_IF];
        all.extend_from_slice(args);
        let out = o.ld.refuse(&all, &[needle]);
        assert_eq!(out.status.code(), Some(78), "{out}");
        assert!(!o.ld.pin_dir().exists());
    }
    let out = o.ld.refuse(
        &["up", "--iface", ORIGIN_IF, "--syn-cookies", "sometimes"],
        &["sometimes"],
    );
    assert_eq!(out.status.code(), Some(2), "clap's usage error: {out}");
    let file = o.ld.run_dir.join("bad.toml");
    fs::write(
        &file,
        "[[interface]]\nname = \"ldo0\"\nsyn_cookies = \"on\"\nsyn_cookie_calm = 0\n",
    )
    .unwrap();
    let f = file.to_string_lossy().into_owned();
    let out = o.ld.refuse(
        &["check-config", &f],
        &["bad.toml:4: interface[0].syn_cookie_calm: must be a number from 1"],
    );
    assert_eq!(out.status.code(), Some(78), "{out}");
    o.ld.refuse(&["up", "--config", &f], &["syn_cookie_calm"]);
    assert!(!o.ld.pin_dir().exists());
    // Once locked down, a bad replace changes nothing either.
    o.ld.run_env(
        &["up", "--iface", ORIGIN_IF],
        &[(FORCE_NO_REQSK, "1".to_owned())],
    );
    let before = cookie_config(&o);
    o.ld.refuse(
        &[
            "up",
            "--replace",
            "--iface",
            ORIGIN_IF,
            "--syn-cookie-threshold",
            "0",
        ],
        &["--syn-cookie-threshold"],
    );
    assert_eq!(cookie_config(&o), before);
    o.ld.down();
}

/// Writes port `port`'s detector entry as the datapath would.
fn set_flood(o: &Origin, port: u16, flood: PortFlood) {
    let path = o.ld.pin_dir().join(SYN_PORTS);
    let mut map: Array<MapData, PortFlood> = Array::try_from(
        aya::maps::Map::from_map_data(MapData::from_pin(&path).expect("opening LD_SYN_PORTS"))
            .expect("LD_SYN_PORTS"),
    )
    .expect("LD_SYN_PORTS is an array");
    map.set(u32::from(port), &flood, 0)
        .expect("writing LD_SYN_PORTS");
}

#[test]
fn status_and_log_follow_the_flood_detector() {
    let o = Origin::new("sc-detect");
    // The hook keeps cookies from being installed, so this runs before the XDP side is merged
    // too: the detector's map is the same either way.
    let force = [(FORCE_NO_REQSK, "1".to_owned())];
    let out = o.ld.run_env(
        &[
            "up", "--iface", ORIGIN_IF, "--allow", "tcp/22", "--allow", "tcp/80",
        ],
        &force,
    );
    assert!(out.success(), "{out}");
    let mut log = Bg::spawn(&o.ld, &["log", "--iface", ORIGIN_IF]);
    std::thread::sleep(Duration::from_millis(1500));
    let window = window_of(lockdown_user::clock_ns());
    set_flood(
        &o,
        SSH,
        PortFlood {
            window,
            count: 5000,
            flood_window: window,
            _reserved: 0,
        },
    );
    log.wait_stdout("syn cookies engaged on tcp/22", Duration::from_secs(5));
    let s = o.ld.status_json();
    assert_eq!(
        s["syn_cookies"]["engaged_ports"],
        serde_json::json!([SSH]),
        "{s}"
    );
    let metrics = lockdown_user::observe::metrics::render(&o.ld.pin_root, Some(ORIGIN_IF))
        .expect("rendering the metrics");
    assert!(
        metrics.contains(&format!(
            "lockdown_syn_cookies_engaged{{interface=\"{ORIGIN_IF}\",port=\"22\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "lockdown_syn_cookie_handoff_total{{interface=\"{ORIGIN_IF}\",reason=\"handoff_assigned\",kind=\"handoff\"}} 0"
        )),
        "{metrics}"
    );
    set_flood(&o, SSH, PortFlood::default());
    log.wait_stdout("syn cookies disengaged on tcp/22", Duration::from_secs(5));
    let s = o.ld.status_json();
    assert_eq!(
        s["syn_cookies"]["engaged_ports"],
        serde_json::json!([]),
        "{s}"
    );
    assert!(
        !log.stdout_lines().iter().any(|l| l.contains("tcp/80")),
        "{}",
        log.output()
    );
    drop(log);
    o.ld.down();
}

/// The stand-in for the XDP cookie stage: drops SYNs to port 22 (the cookie stage answers them
/// itself, so the kernel never sees them) and puts a `HandoffMeta` (MSS 1000, window scale 7 both
/// ways, no timestamps) in front of every pure ACK to port 22, as for a valid cookie.
const STANDIN: &str = r#"
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct meta {
	__u32 rcv_tsval, rcv_tsecr;
	__u16 mss;
	__u8 rcv_wscale, snd_wscale, ecn_ok, wscale_ok, sack_ok, tstamp_ok, usec_ts_ok, reserved[3];
	__u32 magic;
};

SEC("xdp")
int standin(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct tcphdr *th = (void *)(ip + 1);
	struct meta *m;

	if ((void *)(th + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_TCP || ip->ihl != 5 || th->dest != bpf_htons(22))
		return XDP_PASS;
	if (th->syn)
		return XDP_DROP;
	if (!th->ack || th->rst || th->fin)
		return XDP_PASS;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct meta)))
		return XDP_PASS;
	m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return XDP_PASS;
	__builtin_memset(m, 0, sizeof(*m));
	m->mss = 1000;
	m->rcv_wscale = 7;
	m->snd_wscale = 7;
	m->wscale_ok = 1;
	m->magic = 0x6b63444c; /* "LDck" */
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"#;

/// Builds [`STANDIN`] with clang into `dir`.
fn build_standin(dir: &Path) -> Vec<u8> {
    let src = dir.join("standin.bpf.c");
    let obj = dir.join("standin.bpf.o");
    fs::write(&src, STANDIN).unwrap();
    let out = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
        ])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap_or_else(|e| panic!("running clang (scripts/setup.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "clang failed on the stand-in: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&obj).unwrap()
}

/// Sends one raw IPv4 packet (`l3`: header and all) from the namespace `ns`.
fn send_raw(ns: &str, dst: Ipv4Addr, l3: Vec<u8>) {
    try_in_ns(ns, move || {
        // SAFETY: plain socket calls with valid arguments; the fd is closed below.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as u16;
            sa.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
            let n = libc::sendto(
                fd,
                l3.as_ptr().cast(),
                l3.len(),
                0,
                (&raw const sa).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, l3.len() as isize, "sendto: {err}");
        }
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_handoff_builds_the_socket_from_the_metadata() {
    assert!(
        lockdown_user::host::probe::has_kfunc(cookies::KFUNC).unwrap(),
        "this kernel has no bpf_sk_assign_tcp_reqsk (Linux 6.9+): the hand-off cannot be tested here"
    );
    let o = Origin::new("sc-handoff");
    let _server = TcpServer::start(&o.pair.origin, origin_addr(SSH), Serve::Echo);
    let standin = build_standin(&o.ld.run_dir);
    let dir = PinDir::new(&o.ld.pin_root, ORIGIN_IF);
    fs::create_dir_all(&dir.dir).unwrap();
    // The stand-in on the origin's interface, and the hand-off at its TCX ingress.
    let ns = o.pair.origin.clone();
    let ebpf: Ebpf = try_in_ns(&ns, || {
        let ifindex = lockdown_user::host::link::ifindex(ORIGIN_IF)?;
        let mut ebpf = Ebpf::load(&standin)?;
        let prog: &mut Xdp = ebpf.program_mut("standin").expect("standin").try_into()?;
        prog.load()?;
        prog.attach(ifindex, XdpMode::Driver)?;
        cookies::attach(&dir, ifindex)?;
        Ok(ebpf)
    })
    .unwrap_or_else(|e| panic!("attaching the stand-in and the hand-off: {e:#}"));

    let sport = 40_123;
    let syn = Pkt::tcp(PEER_V4, ORIGIN_V4, sport, SSH, TCP_SYN).seq(7_000);
    send_raw(&o.pair.peer, ORIGIN_V4, syn.l3_bytes());
    // The ACK of a SYN-ACK the origin never sent: its ack number would carry the cookie.
    let ack = Pkt::tcp(PEER_V4, ORIGIN_V4, sport, SSH, TCP_ACK)
        .seq(7_001)
        .ack(0x1234_5679);
    send_raw(&o.pair.peer, ORIGIN_V4, ack.l3_bytes());

    let filter = format!("( sport = :{SSH} and dport = :{sport} )");
    let established = lockdown_testbed::cli::wait_for(Duration::from_secs(3), || {
        let ss = ns_must(
            &o.pair.origin,
            "ss",
            &["-tniH", "state", "established", &filter],
        );
        (!ss.trim().is_empty()).then_some(ss)
    })
    .unwrap_or_else(|| {
        let all = ns_must(&o.pair.origin, "ss", &["-tani"]);
        let counters = cookies::handoff_counters(&dir).ok().flatten();
        panic!(
            "no established socket from the cookie ACK\nss: {all}\nhand-off counters: {counters:?}"
        )
    });
    assert!(
        established.contains("mss:1000"),
        "the MSS of the metadata: {established}"
    );
    assert!(
        established.contains("wscale:7,7"),
        "the window scales: {established}"
    );
    assert!(
        !established.contains(" ts "),
        "no timestamps: {established}"
    );
    assert!(
        established.contains(&format!("{}:{sport}", IpAddr::V4(PEER_V4))),
        "{established}"
    );
    let counters = cookies::handoff_counters(&dir)
        .unwrap()
        .expect("LD_HANDOFF is pinned");
    assert!(
        counters.contains(&(HandoffCounter::Assigned, 1)),
        "one ACK assigned: {counters:?}"
    );

    // An ACK to a port nobody listens on: counted, the kernel resets it.
    let stray = Pkt::tcp(PEER_V4, ORIGIN_V4, sport + 1, SSH, TCP_ACK)
        .seq(1)
        .ack(1);
    drop(_server);
    send_raw(&o.pair.peer, ORIGIN_V4, stray.l3_bytes());
    let counted = lockdown_testbed::cli::wait_for(Duration::from_secs(3), || {
        let c = cookies::handoff_counters(&dir).ok().flatten()?;
        c.contains(&(HandoffCounter::NoListener, 1)).then_some(())
    });
    assert!(
        counted.is_some(),
        "no listener counted: {:?}",
        cookies::handoff_counters(&dir)
    );

    cookies::detach(&dir).unwrap();
    assert!(!dir.dir.join(PIN_LINK_HANDOFF).exists());
    let _ = fs::remove_dir(&dir.dir);
    // Dropping the object detaches the stand-in.
    drop(ebpf);
}

#[test]
fn an_unconfirmed_change_restores_the_cookie_settings() {
    let o = Origin::new("sc-confirm");
    let force = [(FORCE_NO_REQSK, "1".to_owned())];
    let out = o.ld.run_env(&["up", "--iface", ORIGIN_IF], &force);
    assert!(out.success(), "{out}");
    let before = cookie_config(&o);
    let out = o.ld.run_env(
        &[
            "up",
            "--iface",
            ORIGIN_IF,
            "--syn-cookies",
            "off",
            "--syn-cookie-threshold",
            "77",
            "--confirm",
            "2",
        ],
        &force,
    );
    assert!(out.success(), "{out}");
    let changed = cookie_config(&o);
    assert_eq!(
        (changed.mode, changed.threshold),
        (0, cookies::per_window(77))
    );
    let restored = lockdown_testbed::cli::wait_for(Duration::from_secs(15), || {
        let c = cookie_config(&o);
        (c.mode == MODE_AUTO).then_some(c)
    })
    .unwrap_or_else(|| panic!("the cookie settings were not rolled back\n{}", o.context()));
    assert_eq!(
        (restored.threshold, restored.calm),
        (before.threshold, before.calm)
    );
    assert_eq!(
        restored.keys, changed.keys,
        "a rollback keeps the current keys"
    );
    o.ld.down();
}
