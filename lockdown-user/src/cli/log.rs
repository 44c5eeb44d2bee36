//! `lockdown log`: stream the dropped-packet events.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{Map, MapData, RingBuf};
use clap::Args;
use lockdown_common::contract::syncookie::{SYN_PORTS, SYNCOOKIE, window_of};
use lockdown_common::{
    contract::{
        config::FLAG_LOG,
        counters::Counter,
        events::DropEvent,
        flow::{PROTO_TCP, PROTO_UDP, ip_addr},
        maps::EVENTS,
    },
    stages::parse::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use lockdown_user::{
    attach::cookies,
    datapath::{
        handles::Handles,
        pins::{self, PinDir},
    },
};
use serde::Serialize;

/// Stream dropped-packet events, like a focused tcpdump of what lockdown drops.
///
/// Events come from a ring buffer the XDP program writes while a `log` reader runs (it turns
/// events on at start and off at exit), rate-limited per CPU (default 100/s per CPU) so a flood
/// costs a fixed budget; the drop counters still count every packet, and `log_suppressed` counts
/// the events the limit held back.
///
/// Also prints a line when SYN cookies engage on an allowed TCP port (`syn cookies engaged on
/// tcp/PORT`) and when they disengage (`syn cookies disengaged on tcp/PORT`), checked once a
/// second; ports engaged when the reader starts are printed as engaged then.
///
/// Example: lockdown log --count 10 --json
#[derive(Debug, Args)]
pub(super) struct Log {
    /// The interface; optional when exactly one is locked down.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Exit after N events.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct EventJson {
    time: String,
    interface: String,
    reason: &'static str,
    proto: &'static str,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    icmp_type: Option<u8>,
    tcp_flags: Option<String>,
    packet_len: u32,
}

fn flags(f: u8) -> String {
    [
        (TCP_SYN, 'S'),
        (TCP_ACK, '.'),
        (TCP_FIN, 'F'),
        (TCP_RST, 'R'),
    ]
    .iter()
    .filter(|(bit, _)| f & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

fn ifname(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return index.to_string();
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn describe(ev: &DropEvent, boot_now: u64, wall_now: SystemTime) -> EventJson {
    let age = Duration::from_nanos(boot_now.saturating_sub(ev.time_ns));
    let time = humantime::format_rfc3339_millis(wall_now - age).to_string();
    let mut out = EventJson {
        time,
        interface: ifname(ev.ifindex),
        reason: Counter::from_index(ev.reason).map_or("?", Counter::name),
        proto: "non-ip",
        src: None,
        dst: None,
        sport: None,
        dport: None,
        icmp_type: None,
        tcp_flags: None,
        packet_len: ev.packet_len,
    };
    if let Some((ip, l4)) = parse::headers(ev.bytes()) {
        out.src = Some(ip_addr(ip.family, &ip.src));
        out.dst = Some(ip_addr(ip.family, &ip.dst));
        out.proto = match ip.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            1 => "icmp",
            58 => "icmpv6",
            _ => "other",
        };
        if let Some(l4) = l4 {
            match ip.proto {
                PROTO_TCP | PROTO_UDP => {
                    out.sport = Some(l4.sport);
                    out.dport = Some(l4.dport);
                    if ip.proto == PROTO_TCP {
                        out.tcp_flags = Some(flags(l4.tcp_flags));
                    }
                }
                1 | 58 => out.icmp_type = Some(l4.icmp_type),
                _ => {}
            }
        }
    }
    out
}

/// Set by SIGINT/SIGTERM: stop reading and turn events off again.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Turns events on for as long as it lives (unless they were on already).
struct EventsOn {
    root: PathBuf,
    dir: PinDir,
    turned_on: bool,
}

impl EventsOn {
    fn new(root: PathBuf, dir: PinDir) -> Result<Self> {
        let _lock = pins::lock(&root)?;
        let mut handles = Handles::open(&dir)?;
        let mut config = handles.read_config()?;
        let turned_on = config.flags & FLAG_LOG == 0;
        if turned_on {
            config.flags |= FLAG_LOG;
            handles.write_config(&config)?;
        }
        Ok(Self {
            root,
            dir,
            turned_on,
        })
    }
}

impl Drop for EventsOn {
    fn drop(&mut self) {
        if !self.turned_on {
            return;
        }
        let off = || -> Result<()> {
            let _lock = pins::lock(&self.root)?;
            let mut handles = Handles::open(&self.dir)?;
            let mut config = handles.read_config()?;
            config.flags &= !FLAG_LOG;
            handles.write_config(&config)
        };
        if let Err(e) = off() {
            log::warn!("turning dropped-packet events off again: {e:#}");
        }
    }
}

/// Which allowed TCP ports have SYN cookies engaged, polled once a second from `LD_SYN_PORTS`.
#[derive(Default)]
struct CookieWatch {
    engaged: BTreeSet<u16>,
    last: Option<std::time::Instant>,
}

impl CookieWatch {
    fn poll(&mut self, dir: &PinDir, json: bool) -> Result<()> {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        let config = cookies::read_config(&dir.map(SYNCOOKIE))?;
        let rules = Handles::open(dir)?.rules()?;
        let window = window_of(lockdown_user::clock_ns());
        let now: BTreeSet<u16> = cookies::engaged_ports(
            &dir.map(SYN_PORTS),
            &config,
            &cookies::allowed_tcp_ports(&rules),
            window,
        )?
        .into_iter()
        .collect();
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let events = now
            .difference(&self.engaged)
            .map(|p| ("engaged", *p))
            .chain(self.engaged.difference(&now).map(|p| ("disengaged", *p)));
        for (what, port) in events {
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "time": time,
                        "interface": dir.iface,
                        "event": format!("syn_cookies_{what}"),
                        "proto": "tcp",
                        "port": port,
                    })
                );
            } else {
                println!("{time} {} syn cookies {what} on tcp/{port}", dir.iface);
            }
        }
        self.engaged = now;
        Ok(())
    }
}

impl Log {
    pub(super) fn run(self) -> Result<()> {
        let root = pins::root();
        let dir = pins::select(&root, self.iface.as_deref())?;
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        // On before the ring is opened, so a reader that holds the ring sees every event.
        let _on = EventsOn::new(root, dir.clone())?;
        let path = dir.map(EVENTS);
        let data =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut ring = RingBuf::try_from(Map::from_map_data(data)?)?;
        let mut seen = 0u64;
        let mut cookies = CookieWatch::default();
        while self.count.is_none_or(|n| seen < n) && !STOP.load(Ordering::SeqCst) {
            cookies.poll(&dir, self.json)?;
            let mut pfd = libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 250) };
            while let Some(item) = ring.next() {
                let Some(bytes) = item.get(..size_of::<DropEvent>()) else {
                    continue;
                };
                let ev: DropEvent = bytemuck::pod_read_unaligned(bytes);
                let e = describe(&ev, lockdown_user::clock_ns(), SystemTime::now());
                if self.json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let ep = |a: Option<IpAddr>, p: Option<u16>| match (a, p) {
                        (Some(a), Some(p)) => SocketAddr::new(a, p).to_string(),
                        (Some(a), None) => a.to_string(),
                        _ => "-".to_owned(),
                    };
                    println!(
                        "{} {} {:<26} {:<6} {} -> {}{}{}",
                        e.time,
                        e.interface,
                        e.reason,
                        e.proto,
                        ep(e.src, e.sport),
                        ep(e.dst, e.dport),
                        e.tcp_flags
                            .as_ref()
                            .map_or(String::new(), |f| format!(" [{f}]")),
                        e.icmp_type.map_or(String::new(), |t| format!(" type {t}")),
                    );
                }
                seen += 1;
                if self.count.is_some_and(|n| seen >= n) {
                    break;
                }
            }
        }
        Ok(())
    }
}
