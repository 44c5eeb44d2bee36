//! The origin's existing sockets, read from `/proc/net/{tcp,tcp6,udp,udp6}` of the current network
//! namespace: seeded into the flow tables before the rules change, so open connections survive
//! it; and the SSH sessions this host serves, which the lockout guard must not cut.

use std::{collections::BTreeSet, fs, net::IpAddr};

use anyhow::{Context as _, Result};
use lockdown_common::contract::flow::{FlowState, PROTO_TCP, PROTO_UDP};

/// One socket from `/proc/net/*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Socket {
    pub proto: u8,
    pub local: IpAddr,
    pub local_port: u16,
    pub remote: IpAddr,
    pub remote_port: u16,
    /// The kernel's TCP state number (`01` established, `0A` listen, …; UDP uses `01` for
    /// connected sockets).
    pub state: u8,
    pub inode: u64,
}

/// Parses an address as `/proc/net` prints it: 32-bit words in host byte order, in hex.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = std::net::Ipv6Addr::from(b);
            Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
        }
        _ => None,
    }
}

fn parse_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    Some((parse_addr(addr)?, u16::from_str_radix(port, 16).ok()?))
}

/// Parses the text of one `/proc/net/{tcp,tcp6,udp,udp6}` file.
pub fn parse_proc_net(text: &str, proto: u8) -> Vec<Socket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, local_port) = parse_endpoint(f.get(1)?)?;
            let (remote, remote_port) = parse_endpoint(f.get(2)?)?;
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            let inode = f.get(9)?.parse().ok()?;
            Some(Socket {
                proto,
                local,
                local_port,
                remote,
                remote_port,
                state,
                inode,
            })
        })
        .collect()
}

/// Every TCP and UDP socket in this network namespace.
pub fn all() -> Result<Vec<Socket>> {
    let mut out = Vec::new();
    for (file, proto) in [
        ("tcp", PROTO_TCP),
        ("tcp6", PROTO_TCP),
        ("udp", PROTO_UDP),
        ("udp6", PROTO_UDP),
    ] {
        let path = format!("/proc/net/{file}");
        match fs::read_to_string(&path) {
            Ok(text) => out.extend(parse_proc_net(&text, proto)),
            // No IPv6 in this kernel or namespace: nothing to seed from it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        }
    }
    Ok(out)
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0a;

/// The flow state to seed for a socket, if it is a connection worth keeping: established or
/// closing TCP, connected UDP. (Loopback, and whether the allowlist vouches for it, are
/// [`crate::attach::seed`]'s questions.)
pub const fn seed_state(s: &Socket) -> Option<FlowState> {
    Some(match (s.proto, s.state) {
        (PROTO_TCP, TCP_ESTABLISHED) => FlowState::TcpEstablished,
        // FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING.
        (PROTO_TCP, 0x04 | 0x05 | 0x08 | 0x09 | 0x0b) => FlowState::TcpClosing,
        (PROTO_UDP, TCP_ESTABLISHED) => FlowState::UdpReplied,
        _ => return None,
    })
}

/// An SSH session this host serves: (client address, local port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SshSession {
    pub client: IpAddr,
    pub port: u16,
}

/// Parses `$SSH_CONNECTION` ("client_ip client_port server_ip server_port").
pub fn ssh_connection(var: &str) -> Option<SshSession> {
    let f: Vec<&str> = var.split_whitespace().collect();
    Some(SshSession {
        client: f.first()?.parse().ok()?,
        port: f.get(3)?.parse().ok()?,
    })
}

/// Socket inodes held open by processes called `sshd` (or `sshd-session`).
fn sshd_inodes() -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return inodes;
    };
    for p in procs.filter_map(|e| e.ok()) {
        let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with("sshd") {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if let Ok(target) = fs::read_link(fd.path())
                && let Some(n) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                && let Ok(n) = n.parse()
            {
                inodes.insert(n);
            }
        }
    }
    inodes
}

/// The SSH sessions to protect: `$SSH_CONNECTION`, plus established TCP sockets on a port where
/// an sshd process listens.
pub fn ssh_sessions(sockets: &[Socket]) -> Vec<SshSession> {
    let mut out: BTreeSet<SshSession> = std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|v| ssh_connection(&v))
        .into_iter()
        .collect();
    let inodes = sshd_inodes();
    let ports: BTreeSet<u16> = sockets
        .iter()
        .filter(|s| s.proto == PROTO_TCP && s.state == TCP_LISTEN && inodes.contains(&s.inode))
        .map(|s| s.local_port)
        .collect();
    out.extend(
        sockets
            .iter()
            .filter(|s| {
                s.proto == PROTO_TCP
                    && s.state == TCP_ESTABLISHED
                    && ports.contains(&s.local_port)
                    && !s.remote.is_loopback()
            })
            .map(|s| SshSession {
                client: s.remote,
                port: s.local_port,
            }),
    );
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {

    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100E70A:0016 0200E70A:C350 01 00000000:00000000 02:000A7B2C 00000000     0        0 1002 4 0000000000000000 20 4 29 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000FDFD000000000000000001000000:0016 0000FDFD000000000000000002000000:D431 01 00000000:00000000 02:00000A1D 00000000     0        0 2001 1 0000000000000000 20 4 30 10 -1
   1: 0000000000000000FFFF00000100E70A:1F90 0000000000000000FFFF00000200E70A:8000 01 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_proc_net() {
        let s = parse_proc_net(TCP, PROTO_TCP);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].local, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((s[0].local_port, s[0].state, s[0].inode), (53, 0x0a, 1001));
        assert_eq!(s[1].local, "10.231.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s[1].remote, "10.231.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((s[1].local_port, s[1].remote_port), (22, 50000));
        let s6 = parse_proc_net(TCP6, PROTO_TCP);
        assert_eq!(s6[0].local, "fdfd::1".parse::<IpAddr>().unwrap());
        assert_eq!(s6[0].remote, "fdfd::2".parse::<IpAddr>().unwrap());
        assert_eq!(
            s6[1].local,
            "10.231.0.1".parse::<IpAddr>().unwrap(),
            "v4-mapped"
        );
    }

    #[test]
    fn seeds_only_real_connections() {
        let s = parse_proc_net(TCP, PROTO_TCP);
        assert_eq!(seed_state(&s[0]), None, "listener");
        assert_eq!(seed_state(&s[1]), Some(FlowState::TcpEstablished));
    }
}
