//! The spoofed flood: a generator thread in the peer namespace that sends batches of Ethernet
//! frames with `sendmmsg` on an AF_PACKET socket bound to [`PEER_IF`]. Each segment comes from a
//! random source ([`Sources`]: [`FLOOD_NET`]/[`FLOOD_PREFIX`] or its IPv6 twin, which the origin
//! routes via the peer, or anywhere in the address space) and a random port, to one port of the
//! origin, over IPv4 or IPv6 ([`Spec::dst`]). It sends SYNs or forged ACKs ([`Kind`]) shaped as
//! [`Shape`] says (Linux's own SYN with MSS, SACK-permitted, timestamps and window scale; the MSS
//! alone; no options). It is bounded in packets and in time, stops on [`host::interrupted`], and
//! only ever sends on the pair's own veth.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    host, netns,
    pair::{
        FLOOD_NET, FLOOD_NET6, FLOOD_PREFIX, FLOOD_PREFIX6, NetPair, ORIGIN_MAC, ORIGIN_V4,
        PEER_IF, PEER_MAC,
    },
};

/// Frames per `sendmmsg` call, at most.
const BATCH: usize = 64;
/// The largest frame: Ethernet + IPv6 + TCP with 20 bytes of options.
const MAX_FRAME: usize = 14 + 40 + 40;
/// Ethernet header length.
const ETH: usize = 14;

/// What each frame of a flood is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A connection request (SYN) with a random sequence number.
    Syn,
    /// A forged handshake ACK: random sequence and acknowledgment numbers (what a SYN-cookie
    /// validator must refuse).
    Ack,
}

/// The TCP options of each frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A SYN with an MSS option only (24-byte TCP header; 58-byte IPv4 frames): what the flood
    /// always sent, and what the bench's committed figures were measured with.
    Mss,
    /// What Linux sends: a SYN with MSS, SACK-permitted, timestamps and window scale (40-byte
    /// TCP header: 74-byte IPv4 and 94-byte IPv6 frames); an ACK with timestamps (32 bytes).
    Linux,
    /// No options (20-byte TCP header: 54-byte IPv4, 74-byte IPv6 frames).
    Bare,
}

/// Where the spoofed sources come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sources {
    /// [`FLOOD_NET`]/[`FLOOD_PREFIX`] (IPv4) or [`FLOOD_NET6`]/[`FLOOD_PREFIX6`] (IPv6), which the
    /// origin routes via the peer: its kernel's answers really leave through the veth.
    FloodNet,
    /// The whole address space: any IPv4 unicast address outside 0/8, 127/8, 10.231/16 (the
    /// test networks) and 224/3; any IPv6 global unicast address (2000::/3). Every source a
    /// stranger, each IPv6 one in its own /64: what drains a per-source sketch if SYNs are
    /// charged. The origin has no route back to them.
    Anywhere,
    /// Every frame from this one address (of the destination's family), from random ports: a
    /// spoofer who knows a real client's address and sends in its name.
    Only(IpAddr),
}

/// A pause after every `every` frames, so that a test's flood does not overflow the veth's
/// receive queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    pub every: usize,
    pub pause: Duration,
}

impl Pace {
    /// What the tests flood at: 50 frames a millisecond at most.
    pub const LIGHT: Self = Self {
        every: 50,
        pause: Duration::from_millis(1),
    };
}

/// What to send, and how.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The origin's address (IPv4 or IPv6: the family of every frame).
    pub dst: IpAddr,
    pub dst_port: u16,
    pub kind: Kind,
    pub shape: Shape,
    pub sources: Sources,
    pub max_packets: u64,
    pub max_time: Duration,
    /// Pin the generator to this CPU.
    pub cpu: Option<usize>,
    /// Run as SCHED_IDLE, so that anything else on its CPU (a latency probe) preempts it.
    pub sched_idle: bool,
    /// `None`: as fast as the socket takes them.
    pub pace: Option<Pace>,
}

impl Spec {
    /// At most `max_packets` SYNs ([`Shape::Mss`], from [`Sources::FloodNet`]) to the origin's
    /// IPv4 `dst_port` within `max_time`, unpinned, unpaced.
    pub const fn new(dst_port: u16, max_packets: u64, max_time: Duration) -> Self {
        Self {
            dst: IpAddr::V4(ORIGIN_V4),
            dst_port,
            kind: Kind::Syn,
            shape: Shape::Mss,
            sources: Sources::FloodNet,
            max_packets,
            max_time,
            cpu: None,
            sched_idle: false,
            pace: None,
        }
    }
}

/// What a flood sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Frames the socket accepted.
    pub sent: u64,
    /// `sendmmsg` calls refused with ENOBUFS/EAGAIN (retried).
    pub busy: u64,
    /// From the first send to the last.
    pub elapsed: Duration,
}

impl Stats {
    /// Frames per second over the flood's time.
    pub fn pps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.sent as f64 / secs
        } else {
            0.0
        }
    }
}

/// A running flood; dropping it stops the generator and waits for it.
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    join: Option<JoinHandle<Result<Stats>>>,
}

impl Flood {
    /// Starts the generator thread in `pair`'s peer namespace and returns once its socket is
    /// ready and sending.
    pub fn start(pair: &NetPair, spec: Spec) -> Result<Self> {
        spec.check()?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread_sent = Arc::clone(&sent);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let thread_stop = Arc::clone(&stop);
        let ns = pair.peer.clone();
        let join = thread::Builder::new()
            .name("flood".into())
            .spawn(move || {
                let setup = (|| {
                    netns::enter(&ns)?;
                    if let Some(cpu) = spec.cpu {
                        host::pin(0, &[cpu])?;
                    }
                    if spec.sched_idle {
                        host::make_sched_idle()?;
                    }
                    Socket::open(PEER_IF)
                })();
                match setup {
                    Ok(sock) => {
                        let _ = ready_tx.send(Ok(()));
                        generate(&sock, &spec, &thread_stop, &thread_sent)
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        let _ = ready_tx.send(Err(e));
                        bail!("flood generator setup failed: {msg}")
                    }
                }
            })
            .context("spawning the flood generator")?;
        let flood = Self {
            stop,
            sent,
            join: Some(join),
        };
        ready_rx
            .recv()
            .context("the flood generator died before starting")??;
        Ok(flood)
    }

    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the generator now (before its bounds) and returns what it sent.
    pub fn stop(self) -> Result<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits for the generator to reach its bound.
    pub fn wait(mut self) -> Result<Stats> {
        let join = self.join.take().context("flood already joined")?;
        join.join()
            .map_err(|_| anyhow!("the flood generator panicked"))?
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Sends up to `count` SYNs from the peer to `dst:dport`, lightly paced ([`Pace::LIGHT`]) and
/// bounded by `time_limit`; panics if the generator cannot start or fails.
pub fn syn_flood(
    pair: &NetPair,
    dst: Ipv4Addr,
    dport: u16,
    count: u64,
    time_limit: Duration,
) -> Stats {
    assert!(
        count <= 100_000,
        "syn_flood is bounded: {count} packets is too many"
    );
    let spec = Spec {
        dst: IpAddr::V4(dst),
        pace: Some(Pace::LIGHT),
        ..Spec::new(dport, count, time_limit)
    };
    Flood::start(pair, spec)
        .and_then(Flood::wait)
        .unwrap_or_else(|e| panic!("flooding {dst}:{dport} from {}: {e:#}", pair.peer))
}

struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn open(iface: &str) -> Result<Self> {
        // Protocol 0: the socket sends only, it never receives (no packet tap on the peer).
        // SAFETY: plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET, SOCK_RAW)");
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .with_context(|| format!("no interface {iface} in the generator's namespace"))?;
        let one: libc::c_int = 1;
        // Bypass the qdisc layer, as every figure in the bench's results was measured with; a
        // veth has no queue anyway. A kernel that refuses it would change what is measured, so
        // say so.
        // SAFETY: valid option pointer and length.
        let rc = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS)");
        }
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                raw,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
        }
        Ok(Self { fd })
    }
}

/// xorshift64*: fast, and good enough to spread sources and ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

impl Spec {
    /// Refuses what the generator cannot build.
    fn check(&self) -> Result<()> {
        if self.kind == Kind::Ack && self.shape == Shape::Mss {
            bail!("a flood of ACKs carries no MSS option: use Shape::Linux or Shape::Bare");
        }
        if let Sources::Only(a) = self.sources
            && a.is_ipv6() != self.dst.is_ipv6()
        {
            bail!(
                "source {a} and destination {} are of different families",
                self.dst
            );
        }
        Ok(())
    }

    /// The TCP options of every frame, and where the timestamp value sits in them.
    fn options(&self) -> (&'static [u8], Option<usize>) {
        let v6 = self.dst.is_ipv6();
        match (self.kind, self.shape) {
            (_, Shape::Bare) => (&[], None),
            // Linux: MSS, SACK-permitted, timestamps, NOP, window scale 7.
            (Kind::Syn, Shape::Linux) if v6 => (
                &[
                    2, 4, 0x05, 0xa0, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7,
                ],
                Some(8),
            ),
            (Kind::Syn, Shape::Linux) => (
                &[
                    2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7,
                ],
                Some(8),
            ),
            (Kind::Syn, Shape::Mss) if v6 => (&[2, 4, 0x05, 0xa0], None),
            (Kind::Syn, Shape::Mss) => (&[2, 4, 0x05, 0xb4], None),
            // NOP, NOP, timestamps (the echoed value is random too).
            (Kind::Ack, _) => (&[1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0], Some(4)),
        }
    }
}

/// One frame's layout.
#[derive(Clone, Copy, Debug)]
struct Layout {
    v6: bool,
    /// Offset of the TCP header.
    l4: usize,
    /// TCP header length (with options).
    tcp_len: usize,
    /// Whole frame.
    len: usize,
    /// Offset of the timestamp value in the frame, if the frame carries timestamps.
    tsval: Option<usize>,
    kind: Kind,
    sources: Sources,
}

/// The constant part of every frame, and its layout.
fn template(spec: &Spec) -> ([u8; MAX_FRAME], Layout) {
    let (opts, ts) = spec.options();
    let v6 = spec.dst.is_ipv6();
    let l4 = ETH + if v6 { 40 } else { 20 };
    let tcp_len = 20 + opts.len();
    let layout = Layout {
        v6,
        l4,
        tcp_len,
        len: l4 + tcp_len,
        tsval: ts.map(|o| l4 + 20 + o),
        kind: spec.kind,
        sources: spec.sources,
    };
    let mut f = [0u8; MAX_FRAME];
    f[0..6].copy_from_slice(&ORIGIN_MAC);
    f[6..12].copy_from_slice(&PEER_MAC);
    match spec.dst {
        IpAddr::V4(dst) => {
            f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut f[ETH..ETH + 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[6] = 0x40; // DF
            ip[8] = 64;
            ip[9] = 6;
            ip[16..20].copy_from_slice(&dst.octets());
        }
        IpAddr::V6(dst) => {
            f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let ip = &mut f[ETH..ETH + 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[24..40].copy_from_slice(&dst.octets());
        }
    }
    let tcp = &mut f[l4..l4 + tcp_len];
    tcp[2..4].copy_from_slice(&spec.dst_port.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    match spec.kind {
        Kind::Syn => {
            tcp[13] = 0x02;
            tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
        }
        Kind::Ack => {
            tcp[13] = 0x10;
            tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
        }
    }
    tcp[20..].copy_from_slice(opts);
    (f, layout)
}

/// A source address of [`FLOOD_NET`]/[`FLOOD_PREFIX`], neither its network nor its broadcast
/// address.
fn source(r: u64) -> Ipv4Addr {
    let span = 1u64 << (32 - FLOOD_PREFIX);
    let host = 1 + (r % (span - 2)) as u32;
    Ipv4Addr::from(u32::from(FLOOD_NET) | host)
}

/// Any IPv4 unicast address outside 0/8, 127/8, 10.231/16 and 224/3.
fn anywhere4(rng: &mut Rng) -> Ipv4Addr {
    loop {
        let a = Ipv4Addr::from((rng.next() >> 32) as u32);
        let [o0, o1, ..] = a.octets();
        if o0 != 0 && o0 != 127 && o0 < 224 && !(o0 == 10 && o1 == 231) {
            return a;
        }
    }
}

/// An address of `net`/`prefix` with random host bits.
fn random_in6(net: Ipv6Addr, prefix: u8, rng: &mut Rng) -> Ipv6Addr {
    let r = (u128::from(rng.next()) << 64) | u128::from(rng.next());
    let mask = u128::MAX >> prefix;
    Ipv6Addr::from((u128::from(net) & !mask) | (r & mask))
}

/// Randomises source address, ports, IP id (or flow label), sequence (and acknowledgment)
/// numbers and timestamps, and fixes the checksums.
fn randomise(f: &mut [u8; MAX_FRAME], l: &Layout, rng: &mut Rng) {
    let r = rng.next();
    let sport = ((r >> 16) as u16) | 1024;
    let r2 = rng.next();
    let l4 = l.l4;
    if l.v6 {
        // Flow label: 20 random bits.
        let label = (r >> 40) as u32 & 0xf_ffff;
        f[ETH..ETH + 4].copy_from_slice(&(0x6000_0000 | label).to_be_bytes());
        let src = match l.sources {
            Sources::FloodNet => random_in6(FLOOD_NET6, FLOOD_PREFIX6, rng),
            Sources::Anywhere => random_in6(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3, rng),
            Sources::Only(IpAddr::V6(a)) => a,
            Sources::Only(IpAddr::V4(a)) => a.to_ipv6_mapped(),
        };
        f[ETH + 8..ETH + 24].copy_from_slice(&src.octets());
    } else {
        let id = (r >> 32) as u16;
        f[ETH + 4..ETH + 6].copy_from_slice(&id.to_be_bytes());
        let src = match l.sources {
            Sources::FloodNet => source(r2 >> 32),
            Sources::Anywhere => anywhere4(rng),
            Sources::Only(IpAddr::V4(a)) => a,
            Sources::Only(IpAddr::V6(a)) => a.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        f[ETH + 12..ETH + 16].copy_from_slice(&src.octets());
        f[ETH + 10..ETH + 12].copy_from_slice(&[0, 0]);
        let csum = fold(sum16(&f[ETH..ETH + 20]));
        f[ETH + 10..ETH + 12].copy_from_slice(&csum.to_be_bytes());
    }
    f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
    f[l4 + 4..l4 + 8].copy_from_slice(&(r2 as u32).to_be_bytes());
    if l.kind == Kind::Ack {
        let r3 = rng.next();
        f[l4 + 8..l4 + 12].copy_from_slice(&(r3 as u32).to_be_bytes());
        if let Some(ts) = l.tsval {
            f[ts + 4..ts + 8].copy_from_slice(&((r3 >> 32) as u32).to_be_bytes());
        }
    }
    if let Some(ts) = l.tsval {
        f[ts..ts + 4].copy_from_slice(&(r as u32).to_be_bytes());
    }
    f[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
    // Pseudo header: source, destination, protocol, TCP length.
    let addrs = if l.v6 {
        &f[ETH + 8..ETH + 40]
    } else {
        &f[ETH + 12..ETH + 20]
    };
    let pseudo = sum16(addrs) + 6 + l.tcp_len as u32;
    let csum = fold(pseudo + sum16(&f[l4..l4 + l.tcp_len]));
    f[l4 + 16..l4 + 18].copy_from_slice(&csum.to_be_bytes());
}

fn generate(sock: &Socket, spec: &Spec, stop: &AtomicBool, sent: &AtomicU64) -> Result<Stats> {
    let batch = spec.pace.map_or(BATCH, |p| p.every.clamp(1, BATCH));
    let (tmpl, layout) = template(spec);
    let mut frames = vec![tmpl; batch];
    let mut iov: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: layout.len,
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero means no address, no control data.
    let mut msgs: Vec<libc::mmsghdr> = (0..batch).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    let mut rng = Rng(seed | 1);
    let mut stats = Stats::default();
    let start = Instant::now();
    while stats.sent < spec.max_packets
        && start.elapsed() < spec.max_time
        && !stop.load(Ordering::Relaxed)
        && !host::interrupted()
    {
        let n = (spec.max_packets - stats.sent).min(batch as u64) as usize;
        for f in &mut frames[..n] {
            randomise(f, &layout, &mut rng);
        }
        // SAFETY: `msgs[..n]` point at live iovecs over live frame buffers.
        let rc = unsafe { libc::sendmmsg(sock.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    stats.busy += 1;
                    match spec.pace {
                        Some(p) => thread::sleep(p.pause),
                        None => thread::yield_now(),
                    }
                    continue;
                }
                _ => return Err(e).context("sendmmsg on the AF_PACKET socket"),
            }
        }
        stats.sent += rc as u64;
        sent.store(stats.sent, Ordering::Relaxed);
        if let Some(p) = spec.pace {
            thread::sleep(p.pause);
        }
    }
    stats.elapsed = start.elapsed();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pair::ORIGIN_V6;

    fn spec(dst: IpAddr, kind: Kind, shape: Shape, sources: Sources) -> Spec {
        Spec {
            dst,
            kind,
            shape,
            sources,
            ..Spec::new(22, 1, Duration::from_secs(1))
        }
    }

    /// Every combination the generator builds parses, with valid checksums, the right flags,
    /// options and frame length, and sources where they should be.
    #[test]
    fn frames_parse_with_valid_checksums() {
        let mut rng = Rng(7);
        for dst in [IpAddr::V4(ORIGIN_V4), IpAddr::V6(ORIGIN_V6)] {
            for kind in [Kind::Syn, Kind::Ack] {
                for shape in [Shape::Mss, Shape::Linux, Shape::Bare] {
                    let only = match dst {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 231, 64, 7)),
                        IpAddr::V6(_) => "fd00:231:100:7::1".parse().expect("address"),
                    };
                    for sources in [Sources::FloodNet, Sources::Anywhere, Sources::Only(only)] {
                        let s = spec(dst, kind, shape, sources);
                        if s.check().is_err() {
                            assert!(kind == Kind::Ack && shape == Shape::Mss);
                            continue;
                        }
                        check_frames(&s, &mut rng);
                    }
                }
            }
        }
    }

    fn check_frames(s: &Spec, rng: &mut Rng) {
        let (mut f, l) = template(s);
        let expect_len = match (s.dst.is_ipv6(), s.kind, s.shape) {
            (false, Kind::Syn, Shape::Linux) => 74,
            (true, Kind::Syn, Shape::Linux) => 94,
            (false, Kind::Syn, Shape::Mss) => 58,
            (true, Kind::Syn, Shape::Mss) => 78,
            (false, _, Shape::Bare) => 54,
            (true, _, Shape::Bare) => 74,
            (false, Kind::Ack, _) => 66,
            (true, Kind::Ack, _) => 86,
        };
        assert_eq!(l.len, expect_len, "{s:?}");
        for _ in 0..200 {
            randomise(&mut f, &l, rng);
            let frame = &f[..l.len];
            let p = etherparse::SlicedPacket::from_ethernet(frame).expect("parses");
            let Some(etherparse::TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("not TCP: {s:?}")
            };
            let (src, csum) = match &p.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert_eq!(
                        fold(sum16(&frame[ETH..ETH + 20])),
                        0,
                        "IPv4 header checksum"
                    );
                    let h = ip.header();
                    let c = tcp
                        .to_header()
                        .calc_checksum_ipv4_raw(h.source(), h.destination(), tcp.payload())
                        .expect("checksum");
                    (IpAddr::V4(h.source_addr()), c)
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    let h = ip.header();
                    let c = tcp
                        .to_header()
                        .calc_checksum_ipv6_raw(h.source(), h.destination(), tcp.payload())
                        .expect("checksum");
                    (IpAddr::V6(h.source_addr()), c)
                }
                other => panic!("not IP: {other:?}"),
            };
            assert_eq!(tcp.checksum(), csum, "TCP checksum of {s:?}");
            assert_eq!(tcp.destination_port(), 22);
            assert!(tcp.source_port() >= 1024);
            match s.kind {
                Kind::Syn => assert!(tcp.syn() && !tcp.ack()),
                Kind::Ack => assert!(tcp.ack() && !tcp.syn() && !tcp.rst() && !tcp.fin()),
            }
            let opts = tcp.options();
            if s.shape == Shape::Linux && s.kind == Kind::Syn {
                // MSS, SACK-permitted, timestamps, NOP, window scale, as Linux orders them.
                assert_eq!(
                    (opts[0], opts[4], opts[6], opts[16], opts[17]),
                    (2, 4, 8, 1, 3)
                );
            }
            if s.shape == Shape::Bare {
                assert!(opts.is_empty());
            }
            match (src, s.sources) {
                (IpAddr::V4(a), Sources::FloodNet) => {
                    let mask = u32::MAX << (32 - FLOOD_PREFIX);
                    let net = u32::from(FLOOD_NET);
                    let a = u32::from(a);
                    assert_eq!(a & mask, net, "source {a:#x} outside the flood network");
                    assert!(a != net && a != net | !mask, "network or broadcast source");
                }
                (IpAddr::V4(a), Sources::Anywhere) => {
                    let o = a.octets();
                    assert!(o[0] != 0 && o[0] != 127 && o[0] < 224, "{a}");
                    assert!(!(o[0] == 10 && o[1] == 231), "{a}");
                }
                (IpAddr::V6(a), Sources::FloodNet) => {
                    let mask = u128::MAX << (128 - FLOOD_PREFIX6);
                    assert_eq!(u128::from(a) & mask, u128::from(FLOOD_NET6), "{a}");
                }
                (IpAddr::V6(a), Sources::Anywhere) => {
                    assert_eq!(a.segments()[0] >> 13, 1, "{a} outside 2000::/3");
                }
                (a, Sources::Only(only)) => assert_eq!(a, only),
            }
        }
    }

    #[test]
    fn sources_anywhere_spread_over_the_space() {
        let mut rng = Rng(11);
        let firsts: std::collections::BTreeSet<u8> =
            (0..5000).map(|_| anywhere4(&mut rng).octets()[0]).collect();
        assert!(firsts.len() > 200, "only {} first octets", firsts.len());
        let nets: std::collections::BTreeSet<u64> = (0..5000)
            .map(|_| {
                (u128::from(random_in6(
                    Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0),
                    3,
                    &mut rng,
                )) >> 64) as u64
            })
            .collect();
        assert_eq!(nets.len(), 5000, "IPv6 sources share a /64");
    }

    #[test]
    fn impossible_specs_are_refused() {
        let s = spec(
            IpAddr::V4(ORIGIN_V4),
            Kind::Ack,
            Shape::Mss,
            Sources::FloodNet,
        );
        assert!(s.check().is_err());
        let v6 = Sources::Only(IpAddr::V6(ORIGIN_V6));
        assert!(
            spec(IpAddr::V4(ORIGIN_V4), Kind::Syn, Shape::Linux, v6)
                .check()
                .is_err()
        );
    }
}
