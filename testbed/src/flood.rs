//! The spoofed SYN flood: a generator thread in the peer namespace that sends batches of Ethernet
//! frames with `sendmmsg` on an AF_PACKET socket bound to [`PEER_IF`]. Each SYN comes from a
//! random address of [`FLOOD_NET`]/[`FLOOD_PREFIX`] and a random port, to one port of the origin.
//! It is bounded in packets and in time, stops on [`host::interrupted`], and only ever sends on
//! the pair's own veth.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::{
    host, netns,
    pair::{FLOOD_NET, FLOOD_PREFIX, NetPair, ORIGIN_MAC, ORIGIN_V4, PEER_IF, PEER_MAC},
};

/// Frames per `sendmmsg` call, at most.
const BATCH: usize = 64;
/// Ethernet + IPv4 + TCP with an MSS option.
const FRAME_LEN: usize = 14 + 20 + 24;

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
    pub dst: Ipv4Addr,
    pub dst_port: u16,
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
    /// At most `max_packets` SYNs to the origin's `dst_port` within `max_time`, unpinned,
    /// unpaced.
    pub const fn new(dst_port: u16, max_packets: u64, max_time: Duration) -> Self {
        Self {
            dst: ORIGIN_V4,
            dst_port,
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

/// A running flood; dropping it stops the generator and waits for it.
pub struct Flood {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<Result<Stats>>>,
}

impl Flood {
    /// Starts the generator thread in `pair`'s peer namespace and returns once its socket is
    /// ready and sending.
    pub fn start(pair: &NetPair, spec: Spec) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
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
                        generate(&sock, &spec, &thread_stop)
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
        dst,
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

/// The constant part of every frame.
fn template(dst: Ipv4Addr, dst_port: u16) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&ORIGIN_MAC);
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&44u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[16..20].copy_from_slice(&dst.octets());
    let tcp = &mut f[34..58];
    tcp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    tcp[12] = 6 << 4; // 24-byte header
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    f
}

/// A source address of [`FLOOD_NET`]/[`FLOOD_PREFIX`], neither its network nor its broadcast
/// address.
fn source(r: u64) -> Ipv4Addr {
    let span = 1u64 << (32 - FLOOD_PREFIX);
    let host = 1 + (r % (span - 2)) as u32;
    Ipv4Addr::from(u32::from(FLOOD_NET) | host)
}

/// Randomises source address, ports, IP id and sequence, and fixes both checksums.
fn randomise(f: &mut [u8; FRAME_LEN], rng: &mut Rng) {
    let r = rng.next();
    let sport = ((r >> 16) as u16) | 1024;
    let id = (r >> 32) as u16;
    let r2 = rng.next();
    let seq = r2 as u32;
    f[14 + 4..14 + 6].copy_from_slice(&id.to_be_bytes());
    f[14 + 12..14 + 16].copy_from_slice(&source(r2 >> 32).octets());
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let csum = fold(sum16(&f[14..34]));
    f[14 + 10..14 + 12].copy_from_slice(&csum.to_be_bytes());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[34 + 16..34 + 18].copy_from_slice(&[0, 0]);
    // Pseudo header: source, destination, protocol, TCP length.
    let pseudo = sum16(&f[26..34]) + 6 + 24;
    let csum = fold(pseudo + sum16(&f[34..58]));
    f[34 + 16..34 + 18].copy_from_slice(&csum.to_be_bytes());
}

fn generate(sock: &Socket, spec: &Spec, stop: &AtomicBool) -> Result<Stats> {
    let batch = spec.pace.map_or(BATCH, |p| p.every.clamp(1, BATCH));
    let tmpl = template(spec.dst, spec.dst_port);
    let mut frames = vec![tmpl; batch];
    let mut iov: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: FRAME_LEN,
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
            randomise(f, &mut rng);
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

    #[test]
    fn frames_parse_with_valid_checksums() {
        let mut f = template(ORIGIN_V4, 22);
        let mut rng = Rng(7);
        let net = u32::from(FLOOD_NET);
        let mask = u32::MAX << (32 - FLOOD_PREFIX);
        for _ in 0..100 {
            randomise(&mut f, &mut rng);
            let p = etherparse::SlicedPacket::from_ethernet(&f).expect("parses");
            let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            let src = u32::from(Ipv4Addr::from(ip.header().source()));
            assert_eq!(src & mask, net, "source {src:#x} outside the flood network");
            assert!(
                src != net && src != net | !mask,
                "network or broadcast source"
            );
            assert_eq!(fold(sum16(&f[14..34])), 0, "IPv4 header checksum");
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else {
                panic!("not TCP")
            };
            assert!(tcp.syn() && !tcp.ack());
            assert_eq!(tcp.destination_port(), 22);
            let expect = tcp
                .to_header()
                .calc_checksum_ipv4_raw(ip.header().source(), ip.header().destination(), &[])
                .expect("checksum");
            assert_eq!(tcp.checksum(), expect);
        }
    }
}
