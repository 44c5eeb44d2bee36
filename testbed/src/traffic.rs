//! Traffic inside a [`NetPair`](crate::pair::NetPair)'s namespaces: TCP and UDP echo servers
//! served by threads, bounded clients, and ping.
//!
//! Every helper is bounded: connects, reads and pings time out quickly, so a dropped packet makes
//! a check fail fast instead of hanging.

use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{
    netns::{in_ns, ns_run},
    pair::Family,
};

/// Connect timeout for a connection that is expected to be dropped: a dropped SYN fails this fast.
pub const DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound for an operation that is expected to succeed (connect, a reply, a read).
pub const OK_TIMEOUT: Duration = Duration::from_secs(3);

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
