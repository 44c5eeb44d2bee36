//! Network-namespace harness for the end-to-end tests.
//!
//! [`NetPair::new`] builds two fresh namespaces joined by a veth pair: the *origin* (where lockdown
//! is attached) and the *peer* (which plays the internet). Dropping the pair deletes both
//! namespaces, which removes the veth and any XDP attachment with it.
//!
//! Commands run in a namespace through `nsenter --net=/run/netns/NAME -- …`, never through
//! `ip netns exec`: the latter remounts `/sys` in its private mount namespace, which would hide
//! the bpffs pins the tests inspect. Rust socket code runs on a fresh thread that `setns`es into
//! the namespace ([`in_ns`]); a socket stays in the namespace it was created in, so the sockets
//! such a thread returns can be used from any thread afterwards.
//!
//! Every helper is bounded: connects, reads and pings time out quickly, so a dropped packet makes
//! a check fail fast instead of hanging.

use std::{
    fs::File,
    io::{self, Read as _, Write as _},
    mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use nix::sched::{CloneFlags, setns};
use rand::Rng as _;

/// The origin's side of the veth (inside the origin namespace).
pub const ORIGIN_IF: &str = "ldo0";
/// The peer's side of the veth (inside the peer namespace).
pub const PEER_IF: &str = "ldp0";

/// The origin's IPv4 address on the test link (10.231.0.0/24; only ever inside the namespaces).
pub const ORIGIN_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// The peer's IPv4 address on the test link.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Prefix length of the test link.
pub const LINK_PREFIX_V4: u8 = 24;
/// The origin's IPv6 ULA address on the test link (fd00:231::/64).
pub const ORIGIN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, 1);
/// The peer's IPv6 ULA address on the test link.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, 2);
/// Prefix length of the IPv6 test link.
pub const LINK_PREFIX_V6: u8 = 64;
/// Spoofed sources of [`syn_flood`] are drawn from this network (10.231.128.0/17). The origin
/// routes it via the peer, so its SYN-ACKs to the spoofed sources really leave through the veth
/// (and through lockdown's egress program) instead of failing on a missing route.
pub const FLOOD_NET: Ipv4Addr = Ipv4Addr::new(10, 231, 128, 0);
/// Prefix length of [`FLOOD_NET`].
pub const FLOOD_PREFIX: u8 = 17;

/// Connect timeout for a connection that is expected to be dropped: a dropped SYN fails this fast.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound for an operation that is expected to succeed (connect, a reply, a read).
pub const OK_TIMEOUT: Duration = Duration::from_secs(3);

/// The address family of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The origin's address on the test link.
    pub const fn origin(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(ORIGIN_V4),
            Self::V6 => IpAddr::V6(ORIGIN_V6),
        }
    }

    /// The peer's address on the test link.
    pub const fn peer(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(PEER_V4),
            Self::V6 => IpAddr::V6(PEER_V6),
        }
    }

    /// The unspecified address of this family.
    pub const fn any(self) -> IpAddr {
        match self {
            Self::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Self::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// `[::]:port`: a dual-stack socket address (serves IPv4 and IPv6).
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::new(Family::V6.any(), port)
}

/// The origin's IPv4 address on the test link, with `port`.
pub fn origin_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ORIGIN_V4), port)
}

/// The peer's IPv4 address on the test link, with `port`.
pub fn peer_addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(PEER_V4), port)
}

/// `/run/netns/NAME`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Whether `prog` is an executable on `$PATH` (or an existing path).
fn have_program(prog: &str) -> bool {
    if prog.contains('/') {
        return Path::new(prog).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// Panics with a clear message unless the end-to-end tests can run here: root, `ip`, `nsenter`,
/// `ping` and a bpffs at `/sys/fs/bpf`. The tests never skip silently.
pub fn require_environment() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the end-to-end tests need root (they create network namespaces and load BPF programs); \
         run them as root, e.g. `sudo -E cargo test -p lockdown-tests --test e2e -- --test-threads=1`"
    );
    for prog in ["ip", "nsenter", "ping"] {
        assert!(
            have_program(prog),
            "the end-to-end tests need `{prog}` on PATH (packages iproute2, util-linux, iputils-ping)"
        );
    }
    assert!(
        is_bpffs(Path::new("/sys/fs/bpf")),
        "the end-to-end tests need a bpffs at /sys/fs/bpf; mount it with `mount -t bpf bpf /sys/fs/bpf`"
    );
}

/// Whether `path` is on a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// A `Command` that runs `prog args…` in network namespace `ns` through nsenter.
pub fn ns_command(ns: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(prog);
    cmd
}

/// Runs `prog args…` in `ns` and returns its output (panics only if it cannot be started).
pub fn ns_run(ns: &str, prog: &str, args: &[&str]) -> Output {
    ns_command(ns, prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running `nsenter --net=… -- {prog} {}` in {ns}: {e}",
                args.join(" ")
            )
        })
}

/// Runs `prog args…` in `ns` and returns its stdout; panics with its stderr if it fails.
pub fn ns_must(ns: &str, prog: &str, args: &[&str]) -> String {
    let out = ns_run(ns, prog, args);
    assert!(
        out.status.success(),
        "`{prog} {}` in {ns} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip args…` in `ns`; panics with ip's stderr if it fails.
pub fn ip(ns: &str, args: &[&str]) -> String {
    ns_must(ns, "ip", args)
}

/// Runs `f` on a fresh thread inside network namespace `ns` and returns its result. A panic in
/// `f` propagates to the caller.
pub fn in_ns<T, F>(ns: &str, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    match spawn_in_ns(ns, f).join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Spawns a thread that enters network namespace `ns` and then runs `f`.
pub fn spawn_in_ns<T, F>(ns: &str, f: F) -> JoinHandle<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = netns_path(ns);
    let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let name = ns.to_owned();
    thread::Builder::new()
        .name(format!("in-{ns}"))
        .spawn(move || {
            // The network namespace is per thread: only this thread moves.
            setns(&file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns into {name}: {e}"));
            drop(file);
            f()
        })
        .unwrap_or_else(|e| panic!("spawning a thread for {ns}: {e}"))
}

/// Two namespaces joined by a veth pair; see the module docs.
#[derive(Debug)]
pub struct NetPair {
    /// Where lockdown is attached (interface [`ORIGIN_IF`]).
    pub origin: String,
    /// Plays the internet (interface [`PEER_IF`]).
    pub peer: String,
}

impl NetPair {
    /// Creates `ld-<tag>-<pid>-o` and `ld-<tag>-<pid>-p`, the veth pair, addresses and routes.
    /// Panics (after cleaning up) if any step fails.
    pub fn new(tag: &str) -> Self {
        require_environment();
        let pid = std::process::id();
        let pair = Self {
            origin: format!("ld-{tag}-{pid}-o"),
            peer: format!("ld-{tag}-{pid}-p"),
        };
        for ns in [&pair.origin, &pair.peer] {
            // A leftover of an earlier run with the same pid and tag.
            if netns_path(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
            let out = Command::new("ip")
                .args(["netns", "add", ns])
                .output()
                .unwrap_or_else(|e| panic!("running `ip netns add {ns}`: {e}"));
            assert!(
                out.status.success(),
                "`ip netns add {ns}` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // From here on, a panic drops `pair`, which deletes both namespaces.
        let (o, p) = (pair.origin.as_str(), pair.peer.as_str());
        ip(
            o,
            &[
                "link", "add", ORIGIN_IF, "type", "veth", "peer", "name", PEER_IF, "netns", p,
            ],
        );
        for (ns, dev, v4, v6) in [
            (o, ORIGIN_IF, ORIGIN_V4, ORIGIN_V6),
            (p, PEER_IF, PEER_V4, PEER_V6),
        ] {
            ip(ns, &["link", "set", "lo", "up"]);
            ip(
                ns,
                &["addr", "add", &format!("{v4}/{LINK_PREFIX_V4}"), "dev", dev],
            );
            ip(
                ns,
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{v6}/{LINK_PREFIX_V6}"),
                    "dev",
                    dev,
                    "nodad",
                ],
            );
            ip(ns, &["link", "set", dev, "up"]);
        }
        ip(
            o,
            &[
                "route",
                "add",
                &format!("{FLOOD_NET}/{FLOOD_PREFIX}"),
                "via",
                &PEER_V4.to_string(),
            ],
        );
        pair
    }

    /// Sets the MTU of both ends of the veth.
    pub fn set_mtu(&self, mtu: u32) {
        let mtu = mtu.to_string();
        ip(
            &self.origin,
            &["link", "set", "dev", ORIGIN_IF, "mtu", &mtu],
        );
        ip(&self.peer, &["link", "set", "dev", PEER_IF, "mtu", &mtu]);
    }

    /// The MAC address of `iface` in `ns`.
    pub fn mac(ns: &str, iface: &str) -> [u8; 6] {
        let json = ip(ns, &["-j", "link", "show", "dev", iface]);
        let v: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("parsing `ip -j link show {iface}`: {e}: {json}"));
        let addr = v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {iface} in {ns}: {json}"));
        let bytes: Vec<u8> = addr
            .split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("bad MAC {addr}: {e}")))
            .collect();
        bytes
            .try_into()
            .unwrap_or_else(|_| panic!("bad MAC {addr}"))
    }

    pub fn origin_mac(&self) -> [u8; 6] {
        Self::mac(&self.origin, ORIGIN_IF)
    }

    pub fn peer_mac(&self) -> [u8; 6] {
        Self::mac(&self.peer, PEER_IF)
    }

    /// The XDP attachment of the origin's interface as `ip -j -d link show` reports it: `None`
    /// when no XDP program is attached, otherwise the mode (1 = driver/native, 2 = generic/skb,
    /// 3 = offload) and the program name.
    pub fn origin_xdp(&self) -> Option<(u64, String)> {
        let json = ip(
            &self.origin,
            &["-j", "-d", "link", "show", "dev", ORIGIN_IF],
        );
        let v: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("parsing `ip -j -d link show`: {e}: {json}"));
        let xdp = v[0].get("xdp")?;
        let mode = xdp["mode"].as_u64().unwrap_or(0);
        let name = xdp["prog"]["name"].as_str().unwrap_or("").to_owned();
        Some((mode, name))
    }

    /// `ip -d link show dev ORIGIN_IF`, for messages.
    pub fn origin_link_text(&self) -> String {
        ip(&self.origin, &["-d", "link", "show", "dev", ORIGIN_IF])
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.origin, &self.peer] {
            match Command::new("ip").args(["netns", "del", ns]).output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "warning: `ip netns del {ns}` failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => eprintln!("warning: running `ip netns del {ns}`: {e}"),
            }
        }
    }
}

/// What a [`TcpServer`] does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Serve {
    /// Echo everything back until the client closes.
    Echo,
    /// Send this many bytes of [`pattern`], then close.
    Bytes(usize),
}

/// The byte at offset `i` of what [`Serve::Bytes`] sends.
pub const fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

/// A TCP server bound inside a namespace, served by threads; stopped and joined on drop.
#[derive(Debug)]
pub struct TcpServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `addr` inside `ns`. Bind `[::]:PORT` to serve IPv4 and IPv6 at once.
    pub fn start(ns: &str, addr: SocketAddr, serve: Serve) -> Self {
        let listener = in_ns(ns, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("binding a TCP server on {addr} in {ns}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("making the listener on {addr} non-blocking: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = thread::Builder::new()
            .name(format!("tcp-server-{addr}"))
            .spawn(move || accept_loop(&listener, serve, &stop2, &accepted2))
            .unwrap_or_else(|e| panic!("spawning the server thread for {addr}: {e}"));
        Self {
            addr,
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, serve: Serve, stop: &AtomicBool, accepted: &AtomicUsize) {
    let mut handlers = Vec::new();
    let stop_all = Arc::new(AtomicBool::new(false));
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let stop = Arc::clone(&stop_all);
                handlers.push(thread::spawn(move || handle(stream, serve, &stop)));
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                eprintln!("warning: accept failed: {e}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    stop_all.store(true, Ordering::SeqCst);
    for h in handlers {
        let _ = h.join();
    }
}

fn handle(mut stream: TcpStream, serve: Serve, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(OK_TIMEOUT));
    match serve {
        Serve::Echo => {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        Serve::Bytes(n) => {
            let data: Vec<u8> = (0..n).map(pattern).collect();
            for chunk in data.chunks(64 * 1024) {
                if stop.load(Ordering::SeqCst) || stream.write_all(chunk).is_err() {
                    return;
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            // Wait (bounded) for the client's close so our close does not reset unread data.
            let mut buf = [0u8; 512];
            let deadline = Instant::now() + OK_TIMEOUT;
            while Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }
    }
}

/// Connects from inside `ns` to `addr` within `timeout`. The returned stream (which stays in
/// `ns`) has read and write timeouts of [`OK_TIMEOUT`].
pub fn tcp_connect(ns: &str, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = in_ns(ns, move || TcpStream::connect_timeout(&addr, timeout))?;
    stream.set_read_timeout(Some(OK_TIMEOUT))?;
    stream.set_write_timeout(Some(OK_TIMEOUT))?;
    Ok(stream)
}

/// Sends `msg` on a connection to a [`Serve::Echo`] server and checks that it comes back.
pub fn exchange(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    stream.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other(format!(
            "echo mismatch: sent {:?}, got {:?}",
            String::from_utf8_lossy(msg),
            String::from_utf8_lossy(&back)
        )));
    }
    Ok(())
}

/// Connects from `ns` to a [`Serve::Bytes`] server and reads until it closes (each read bounded by
/// [`OK_TIMEOUT`]).
pub fn tcp_fetch(ns: &str, addr: SocketAddr, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = tcp_connect(ns, addr, timeout)?;
    let mut data = Vec::new();
    stream.read_to_end(&mut data)?;
    Ok(data)
}

/// A UDP echo server bound inside a namespace; stopped and joined on drop.
#[derive(Debug)]
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Listens on `addr` inside `ns`; `[::]:PORT` serves IPv4 and IPv6.
    pub fn start(ns: &str, addr: SocketAddr) -> Self {
        let socket = in_ns(ns, move || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("binding a UDP echo server on {addr} in {ns}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap_or_else(|e| panic!("setting a read timeout on {addr}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let (stop2, received2) = (Arc::clone(&stop), Arc::clone(&received));
        let thread = thread::Builder::new()
            .name(format!("udp-echo-{addr}"))
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop2.load(Ordering::SeqCst) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        received2.fetch_add(1, Ordering::SeqCst);
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
            .unwrap_or_else(|e| panic!("spawning the UDP echo thread for {addr}: {e}"));
        Self {
            addr,
            stop,
            received,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` from `ns` to `addr` and waits up to `timeout` for the echoed reply.
pub fn udp_query(
    ns: &str,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> io::Result<Vec<u8>> {
    let local = SocketAddr::new(
        if addr.is_ipv4() {
            Family::V4.any()
        } else {
            Family::V6.any()
        },
        0,
    );
    let socket = in_ns(ns, move || UdpSocket::bind(local))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(addr)?;
    socket.send(payload)?;
    let mut buf = vec![0u8; 2048];
    let n = socket.recv(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// One echo request from `ns` to `addr` with the `ping` binary (`-c1 -W1`): whether a reply came.
pub fn ping(ns: &str, addr: IpAddr) -> bool {
    ping_sized(ns, addr, 56, 1)
}

/// `count` pings of `size` payload bytes (fragmentation not allowed) from `ns` to `addr`, each
/// waiting at most a second: whether every one was answered.
pub fn ping_sized(ns: &str, addr: IpAddr, size: usize, count: u32) -> bool {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let (size, count) = (size.to_string(), format!("-c{count}"));
    ns_run(
        ns,
        "ping",
        &[
            family,
            "-n",
            "-q",
            "-M",
            "do",
            "-s",
            &size,
            &count,
            "-W1",
            "-i0.2",
            &addr.to_string(),
        ],
    )
    .status
    .success()
}

/// What [`syn_flood`] sent.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    pub sent: usize,
    pub elapsed: Duration,
}

/// Sends up to `count` raw TCP SYNs from the peer namespace to `dst:dport`, each from a random
/// source in [`FLOOD_NET`]/[`FLOOD_PREFIX`] and a random port, through an AF_PACKET socket on
/// [`PEER_IF`] addressed to the origin veth's MAC. Bounded by `count` and `time_limit`; lightly
/// paced so the veth's receive ring does not overflow. Only ever sends between the pair's own
/// namespaces.
pub fn syn_flood(
    pair: &NetPair,
    dst: Ipv4Addr,
    dport: u16,
    count: usize,
    time_limit: Duration,
) -> FloodReport {
    assert!(
        count <= 100_000,
        "syn_flood is bounded: {count} packets is too many"
    );
    let dst_mac = pair.origin_mac();
    let src_mac = pair.peer_mac();
    let ns = pair.peer.clone();
    in_ns(&ns, move || {
        let ifindex = nix::net::if_::if_nametoindex(PEER_IF)
            .unwrap_or_else(|e| panic!("{PEER_IF} not found in the peer namespace: {e}"));
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(raw >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: `raw` is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&dst_mac);

        let mut rng = rand::rng();
        let base = u32::from(FLOOD_NET);
        let span = 1u32 << (32 - FLOOD_PREFIX);
        let start = Instant::now();
        let mut sent = 0;
        let mut frame = Vec::with_capacity(128);
        while sent < count && start.elapsed() < time_limit {
            let src = Ipv4Addr::from(base + rng.random_range(1..span - 1));
            let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src.octets(), dst.octets(), 64)
                .tcp(rng.random_range(1024..=65535), dport, rng.random(), 64240)
                .syn();
            frame.clear();
            builder
                .write(&mut frame, &[])
                .unwrap_or_else(|e| panic!("building a SYN frame: {e}"));
            // SAFETY: `frame` and `sll` are valid for the given lengths for the whole call.
            let rc = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const sll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                        thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    _ => panic!("sending a SYN frame on {PEER_IF}: {e}"),
                }
            }
            sent += 1;
            if sent % 50 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
        FloodReport {
            sent,
            elapsed: start.elapsed(),
        }
    })
}
