//! A real OpenSSH server in the origin namespace and the real OpenSSH client in the peer
//! namespace: logins from fresh source addresses, connections held open (a control master) to
//! inspect with `ss` and to carry a bulk transfer, and what `ss -tie` says of a connection.
//!
//! Everything sshd reads and writes lives in one temporary directory of the fixture: its config,
//! host key, the client's key pair and the authorized keys; it logs to stderr, which the fixture
//! collects for failure messages. The only thing outside it is /run/sshd, sshd's compiled-in
//! privilege separation directory, created if missing. Dropping the [`Sshd`] stops it and kills
//! whatever is left in the origin namespace (session processes) and the peer namespace (clients,
//! control masters). Every client run is bounded by `timeout`.

use std::{
    fs,
    io::Read as _,
    net::IpAddr,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    bg::collect_lines,
    cli::poll,
    host,
    netns::{self, ns_command},
    pair::{Family, NetPair},
};

/// Debian's sshd.
pub const SSHD: &str = "/usr/sbin/sshd";
/// The port sshd listens on (IPv4 and IPv6).
pub const SSH_PORT: u16 = 22;
/// What a login runs; its output must be exactly `ok`.
pub const LOGIN_COMMAND: &str = "echo ok";
/// The client's connect timeout (`-o ConnectTimeout`): covers the SYN's retransmissions at 1 s
/// and 3 s after a loss under a flood.
pub const CONNECT_TIMEOUT_SECS: u32 = 8;
/// The bound on one whole client run (`timeout`), connect and session together.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(20);

/// Panics, naming the package, unless the OpenSSH server and client and coreutils' `timeout`
/// are installed. The tests never skip.
pub fn require_openssh() {
    for (prog, package) in [
        (SSHD, "openssh-server"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("timeout", "coreutils"),
        ("ss", "iproute2"),
    ] {
        assert!(
            host::have(prog),
            "the SSH tests need `{prog}` (Debian package {package}); `scripts/setup.sh` installs it"
        );
    }
}

/// An `sshd_config` for a test's own sshd: port 22 on every IPv4 and IPv6 address, root by key
/// only, no PAM, then the `extra` lines (each ending in a newline).
pub fn sshd_config(
    host_key: &Path,
    pid_file: &Path,
    authorized_keys: &Path,
    extra: &str,
) -> String {
    format!(
        "ListenAddress 0.0.0.0\n\
         ListenAddress ::\n\
         Port {SSH_PORT}\n\
         HostKey {}\n\
         PidFile {}\n\
         AuthorizedKeysFile {}\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         LogLevel INFO\n\
         {extra}",
        host_key.display(),
        pid_file.display(),
        authorized_keys.display(),
    )
}

/// A real sshd in the origin namespace on port 22, IPv4 and IPv6, that lets root in with the
/// fixture's client key only. See the module docs.
pub struct Sshd {
    origin: String,
    peer: String,
    dir: PathBuf,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    masters: Mutex<u32>,
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    host::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
    )
    .map(drop)
}

impl Sshd {
    /// Starts sshd (`sshd -D -e -f CONFIG`, `UsePAM no`) in `pair`'s origin namespace and waits
    /// until it listens on both families.
    pub fn start(pair: &NetPair, tag: &str) -> Result<Self> {
        require_openssh();
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(privsep)
                .with_context(|| format!("creating {}", privsep.display()))?;
        }
        let dir = std::env::temp_dir().join(format!("lockdown-sshd-{tag}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key, "lockdown-test-host")?;
        keygen(&client_key, "lockdown-test-client")?;
        let authorized = dir.join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized)
            .context("writing authorized_keys")?;
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            sshd_config(
                &host_key,
                &dir.join("sshd.pid"),
                &authorized,
                "UseDNS no\n\
                 MaxStartups 100\n\
                 MaxSessions 20\n\
                 LoginGraceTime 30\n",
            ),
        )
        .context("writing sshd_config")?;
        host::run(
            ns_command(&pair.origin, SSHD)
                .arg("-t")
                .arg("-f")
                .arg(&config),
        )
        .context("sshd -t rejects the fixture's config")?;
        let mut child = ns_command(&pair.origin, SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sshd")?;
        let (log, _reader) = collect_lines(child.stderr.take().context("sshd stderr")?);
        let sshd = Self {
            origin: pair.origin.clone(),
            peer: pair.peer.clone(),
            dir,
            child,
            log,
            masters: Mutex::new(0),
        };
        let up = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            let log = sshd.log();
            (log.contains("Server listening on 0.0.0.0 port 22")
                && log.contains("Server listening on :: port 22"))
            .then_some(())
        });
        if up.is_none() {
            bail!(
                "sshd did not listen on 0.0.0.0:22 and [::]:22 within 10 s\n{}",
                sshd.log()
            );
        }
        Ok(sshd)
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The client's private key.
    pub fn key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// `ssh` in the peer namespace under `timeout`, with the fixture's key and no user config,
    /// bound to `source`, to root at `dst`, with `extra` options before the destination.
    fn ssh(&self, source: IpAddr, dst: IpAddr, extra: &[&str]) -> Command {
        let mut cmd = ns_command(&self.peer, "timeout");
        cmd.args(["--kill-after=2", &CLIENT_LIMIT.as_secs().to_string(), "ssh"])
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.key())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                &format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
                "-b",
                &source.to_string(),
            ])
            .args(extra)
            .arg(format!("root@{dst}"));
        cmd
    }

    /// Logs in from `source` to `dst` and runs [`LOGIN_COMMAND`]: success means exit status 0
    /// and `ok` on stdout.
    pub fn login_from(&self, source: IpAddr, dst: IpAddr) -> Login {
        let start = Instant::now();
        let out = self
            .ssh(source, dst, &[])
            .arg(LOGIN_COMMAND)
            .stdin(Stdio::null())
            .output();
        let elapsed = start.elapsed();
        match out {
            Ok(out) => {
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                Login {
                    source,
                    ok: out.status.success() && stdout.trim() == "ok",
                    status: Some(out.status),
                    stdout,
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                    elapsed,
                }
            }
            Err(e) => Login {
                source,
                ok: false,
                status: None,
                stdout: String::new(),
                stderr: format!("could not run ssh: {e}"),
                elapsed,
            },
        }
    }

    /// Logs in to the origin's address of `family` from a fresh source of the pair
    /// ([`NetPair::fresh_source`]) and runs [`LOGIN_COMMAND`].
    pub fn login(&self, pair: &NetPair, family: Family) -> Result<Login> {
        let source = pair.fresh_source(family)?;
        Ok(self.login_from(source, family.origin()))
    }

    /// `n` logins at once, each from a fresh source of `family`; in the order started.
    pub fn logins(&self, pair: &NetPair, family: Family, n: usize) -> Result<Vec<Login>> {
        let sources = (0..n)
            .map(|_| pair.fresh_source(family))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.logins_from(&sources, family.origin()))
    }

    /// One login from each of `sources` to `dst`, all at once; in the order of `sources`.
    pub fn logins_from(&self, sources: &[IpAddr], dst: IpAddr) -> Vec<Login> {
        thread::scope(|s| {
            let handles: Vec<_> = sources
                .iter()
                .map(|&src| s.spawn(move || self.login_from(src, dst)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a login thread panicked"))
                .collect()
        })
    }

    /// A connection from a fresh source of `family`, held open by an ssh control master, over
    /// which [`Master::run`] and [`Master::bulk`] start sessions.
    pub fn master(&self, pair: &NetPair, family: Family) -> Result<Master<'_>> {
        let source = pair.fresh_source(family)?;
        let n = {
            let mut m = self.masters.lock().unwrap_or_else(|e| e.into_inner());
            *m += 1;
            *m
        };
        let ctl = self.dir.join(format!("cm{n}"));
        let dst = family.origin();
        let ctl_opt = format!("ControlPath={}", ctl.display());
        // The master goes to the background holding what it was given as stdout and stderr:
        // a file, not a pipe that the test would wait on forever.
        let err_path = self.dir.join(format!("cm{n}.err"));
        let err = fs::File::create(&err_path).context("creating the master's stderr file")?;
        let status = self
            .ssh(
                source,
                dst,
                &[
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    &ctl_opt,
                    "-o",
                    "ControlPersist=120",
                    "-f",
                    "-N",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .context("running the ssh control master")?;
        if !status.success() {
            bail!(
                "the ssh control master from {source} to {dst} failed ({status}): {}\n--- sshd ---\n{}",
                fs::read_to_string(&err_path).unwrap_or_default().trim(),
                self.log()
            );
        }
        let master = Master {
            sshd: self,
            source,
            dst,
            ctl,
        };
        let check = master.run("echo ok")?;
        if check.trim() != "ok" {
            bail!("a session over the control master printed {check:?}, not ok");
        }
        Ok(master)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let gone = poll(Duration::from_secs(3), Duration::from_millis(20), || {
                matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
            });
            if gone.is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        // Session processes in the origin, clients and control masters in the peer.
        for ns in [&self.origin, &self.peer] {
            netns::kill_processes(ns);
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {}: {e}", self.dir.display());
        }
    }
}

/// One login.
#[derive(Debug)]
pub struct Login {
    pub source: IpAddr,
    /// Exit status 0 and `ok` printed.
    pub ok: bool,
    /// `None` if ssh could not be run at all.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    /// From starting the client to its exit.
    pub elapsed: Duration,
}

impl std::fmt::Display for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "login from {}: {} in {:.2?} (status {:?}, stdout {:?}, stderr {:?})",
            self.source,
            if self.ok { "ok" } else { "FAILED" },
            self.elapsed,
            self.status,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// An SSH connection held open by a control master; closed (`ssh -O exit`) on drop.
pub struct Master<'a> {
    sshd: &'a Sshd,
    pub source: IpAddr,
    pub dst: IpAddr,
    ctl: PathBuf,
}

/// What a bulk transfer moved, and how fast.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Transfer {
    /// Megabits per second.
    pub fn mbit_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl Master<'_> {
    fn session(&self) -> Command {
        let ctl = format!("ControlPath={}", self.ctl.display());
        self.sshd.ssh(
            self.source,
            self.dst,
            &["-o", "ControlMaster=no", "-o", &ctl],
        )
    }

    /// Runs `command` in a session over the held connection; its stdout.
    pub fn run(&self, command: &str) -> Result<String> {
        host::run(self.session().arg(command))
            .with_context(|| format!("running {command:?} over the control master"))
    }

    /// `head -c BYTES /dev/zero` on the origin, read to the end by the peer over the held
    /// connection: the bytes that arrived and the time from start to end of stream.
    pub fn bulk(&self, bytes: u64) -> Result<Transfer> {
        let start = Instant::now();
        let mut child = self
            .session()
            .arg(format!("head -c {bytes} /dev/zero"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the bulk transfer")?;
        let mut stdout = child.stdout.take().context("piped stdout")?;
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = stdout.read(&mut buf).context("reading the transfer")?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        let elapsed = start.elapsed();
        let out = child
            .wait_with_output()
            .context("waiting for the transfer")?;
        if !out.status.success() || got != bytes {
            bail!(
                "the bulk transfer of {bytes} bytes from {} to {} got {got} bytes ({}): {}",
                self.dst,
                self.source,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Transfer {
            bytes: got,
            elapsed,
        })
    }

    /// `ss -tie` of this connection on the origin's end and on the peer's.
    pub fn tcp_info(&self) -> Result<(TcpInfo, TcpInfo)> {
        Ok((
            tcp_info(&self.sshd.origin, self.dst, self.source)?,
            tcp_info(&self.sshd.peer, self.source, self.dst)?,
        ))
    }
}

impl Drop for Master<'_> {
    fn drop(&mut self) {
        let ctl = format!("ControlPath={}", self.ctl.display());
        let _ = self
            .sshd
            .ssh(self.source, self.dst, &["-o", &ctl, "-O", "exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What `ss -tie` says of one TCP connection: the options its handshake negotiated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    /// `mss:` — the current send MSS (the negotiated MSS less the timestamp option's 12 bytes
    /// when timestamps are on).
    pub mss: u32,
    /// `advmss:` — the MSS this end advertised.
    pub advmss: Option<u32>,
    /// `wscale:SND,RCV` — absent when window scaling was not negotiated.
    pub wscale: Option<(u8, u8)>,
    /// `sack`.
    pub sack: bool,
    /// `ts`.
    pub timestamps: bool,
    /// The whole `ss` output, for messages.
    pub raw: String,
}

/// The one established TCP connection from `local` to `remote` (addresses only) as namespace
/// `ns` sees it, from `ss -tieHn`; an error unless there is exactly one.
pub fn tcp_info(ns: &str, local: IpAddr, remote: IpAddr) -> Result<TcpInfo> {
    let out = host::run(ns_command(ns, "ss").args([
        "-tieHn",
        "state",
        "established",
        "src",
        &bracket(local),
        "dst",
        &bracket(remote),
    ]))?;
    parse_ss(&out).with_context(|| format!("`ss -tie` in {ns} for {local} -> {remote}"))
}

fn bracket(a: IpAddr) -> String {
    match a {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    }
}

/// Parses `ss -tieHn` output holding exactly one connection.
pub fn parse_ss(out: &str) -> Result<TcpInfo> {
    let conns = out
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace) && !l.trim().is_empty())
        .count();
    if conns != 1 {
        bail!("expected exactly one connection, ss shows {conns}:\n{out}");
    }
    let words: Vec<&str> = out.split_whitespace().collect();
    let value = |key: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix(':'))
    };
    let mss = value("mss")
        .context("no mss: in the ss output")?
        .parse()
        .context("parsing mss:")?;
    let advmss = value("advmss").map(str::parse).transpose()?;
    let wscale = value("wscale")
        .map(|v| -> Result<(u8, u8)> {
            let (s, r) = v.split_once(',').context("wscale:SND,RCV")?;
            Ok((s.parse()?, r.parse()?))
        })
        .transpose()?;
    Ok(TcpInfo {
        mss,
        advmss,
        wscale,
        sack: words.contains(&"sack"),
        timestamps: words.contains(&"ts"),
        raw: out.trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_output_parses() {
        let out = "0      0      10.231.0.1:22 10.231.64.1:40558 ino:123 sk:1 cgroup:/ <->\n\
                   \t ts sack cubic wscale:7,7 rto:204 rtt:0.1/0.05 ato:40 mss:1448 pmtu:1500 \
                   rcvmss:536 advmss:1448 cwnd:10 bytes_sent:100\n";
        let i = parse_ss(out).expect("parses");
        assert_eq!(i.mss, 1448);
        assert_eq!(i.advmss, Some(1448));
        assert_eq!(i.wscale, Some((7, 7)));
        assert!(i.sack && i.timestamps);
        // The key must match whole: rcvmss and advmss are not mss.
        let bare = "0 0 [fd00:231::1]:22 [fd00:231:100:1::1]:1 <->\n\t cubic rto:204 \
                    rcvmss:536 advmss:1428 mss:1428\n";
        let i = parse_ss(bare).expect("parses");
        assert_eq!(
            (i.mss, i.wscale, i.sack, i.timestamps),
            (1428, None, false, false)
        );
        assert!(parse_ss("").is_err());
        assert!(parse_ss(&format!("{out}{out}")).is_err());
    }
}
