//! One end-to-end test's world: a [`NetPair`], the `lockdown` CLI on the origin's interface with
//! a private pin root and run dir, and the servers the test started; with the checks most tests
//! make through it. A test file keeps what only it needs as free functions beside its tests.

use std::{
    io,
    net::{SocketAddr, TcpStream},
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::{
    cli::Lockdown,
    pair::{Family, NetPair, ORIGIN_IF, any, peer_addr},
    traffic::{DROP_TIMEOUT, OK_TIMEOUT, Serve, TcpServer, UdpEcho, exchange, tcp_connect},
};

/// One test's world. Fields drop in declaration order after [`Origin`]'s own `Drop` (which kills
/// the lockdown processes the test left running): the servers close, then `lockdown down` runs
/// and the pin root and run dir go, then the namespaces.
pub struct Origin {
    pub servers: Vec<TcpServer>,
    pub udp: Vec<UdpEcho>,
    pub ld: Lockdown,
    pub pair: NetPair,
}

impl Origin {
    /// A fresh namespace pair and a CLI for its origin side (pin root and run dir named after
    /// `tag`). Nothing is locked down yet.
    pub fn new(tag: &str) -> Self {
        let pair = NetPair::new(tag);
        let ld = Lockdown::new(&pair.origin, ORIGIN_IF, tag);
        Self {
            servers: Vec::new(),
            udp: Vec::new(),
            ld,
            pair,
        }
    }

    /// TCP echo servers in the origin on each of `ports` (IPv4 and IPv6).
    pub fn origin_echo(mut self, ports: &[u16]) -> Self {
        for &port in ports {
            self.servers
                .push(TcpServer::start(&self.pair.origin, any(port), Serve::Echo));
        }
        self
    }

    /// TCP echo servers in the peer on each of `ports` (IPv4 and IPv6).
    pub fn peer_echo(mut self, ports: &[u16]) -> Self {
        for &port in ports {
            self.servers
                .push(TcpServer::start(&self.pair.peer, any(port), Serve::Echo));
        }
        self
    }

    /// A server in the peer on `port` that sends `size` bytes to each connection.
    pub fn peer_bytes(mut self, port: u16, size: usize) -> Self {
        self.servers.push(TcpServer::start(
            &self.pair.peer,
            any(port),
            Serve::Bytes(size),
        ));
        self
    }

    /// A UDP echo server in the origin on `port` (IPv4 and IPv6).
    pub fn origin_udp(mut self, port: u16) -> Self {
        self.udp.push(UdpEcho::start(&self.pair.origin, any(port)));
        self
    }

    /// A UDP echo server in the peer on `port` (IPv4 and IPv6).
    pub fn peer_udp(mut self, port: u16) -> Self {
        self.udp.push(UdpEcho::start(&self.pair.peer, any(port)));
        self
    }

    /// `lockdown up --iface ORIGIN_IF extra…`; panics unless it succeeds.
    pub fn up(&self, extra: &[&str]) {
        self.ld.up(extra);
    }

    /// `status --iface ORIGIN_IF --json --interval 0`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let out = self
            .ld
            .must(&["status", "--iface", ORIGIN_IF, "--json", "--interval", "0"]);
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    /// `flows --iface ORIGIN_IF --json extra…`, parsed.
    pub fn flows_json(&self, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut args = vec!["flows", "--iface", ORIGIN_IF, "--json"];
        args.extend_from_slice(extra);
        let out = self.ld.must(&args);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("`{}` is not JSON ({e}): {out}", args.join(" ")));
        v.as_array()
            .unwrap_or_else(|| panic!("`{}` is not an array: {out}", args.join(" ")))
            .clone()
    }

    /// A connection from the peer to `addr`, bounded by [`DROP_TIMEOUT`]: a dropped SYN is an
    /// error of kind `TimedOut`.
    pub fn connect_from_peer(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        tcp_connect(&self.pair.peer, addr, DROP_TIMEOUT)
    }

    /// The peer connects to the origin's `port` and exchanges a message; returns the connection.
    pub fn assert_inbound_ok(&self, family: Family, port: u16) -> TcpStream {
        let addr = SocketAddr::new(family.origin(), port);
        let mut s = tcp_connect(&self.pair.peer, addr, OK_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "inbound TCP to {addr} should connect: {e}\n{}",
                self.context()
            )
        });
        exchange(&mut s, b"hello through lockdown").unwrap_or_else(|e| {
            panic!(
                "inbound TCP to {addr} connected but data did not pass: {e}\n{}",
                self.context()
            )
        });
        s
    }

    /// The peer's connection attempt to the origin's `port` must time out: the SYN was dropped
    /// before the origin's kernel saw it (a RST would mean it got through).
    pub fn assert_inbound_dropped(&self, family: Family, port: u16) {
        let addr = SocketAddr::new(family.origin(), port);
        match self.connect_from_peer(addr) {
            Ok(_) => panic!(
                "inbound TCP to {addr} should be dropped, but it connected\n{}",
                self.context()
            ),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!(
                "inbound TCP to {addr} should time out (SYN dropped), but failed otherwise: {e}\n{}",
                self.context()
            ),
        }
    }

    /// The origin connects to the peer's IPv4 `port`; returns the connection.
    pub fn assert_outbound_ok(&self, port: u16) -> TcpStream {
        let addr = peer_addr(port);
        tcp_connect(&self.pair.origin, addr, OK_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "outbound TCP to {addr} should connect: {e}\n{}",
                self.context()
            )
        })
    }

    /// Status and link, for failure messages.
    pub fn context(&self) -> String {
        let status = if self.ld.is_locked() {
            self.ld
                .run(&["status", "--iface", ORIGIN_IF, "--json", "--interval", "0"])
                .stdout
        } else {
            "(not locked down)".to_owned()
        };
        format!(
            "status: {}\nlink: {}",
            status.trim(),
            self.pair.origin_link_text().trim()
        )
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        // Rollback watchdogs (`up --confirm`) and stray foreground runs this test started.
        for pid in self.ld.processes() {
            if let Ok(raw) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
}
