//! fail2ban drives lockdown's blocklist: a real OpenSSH server and a real fail2ban-server (the
//! Debian packages) run in the origin namespace of a test's namespace pair, fail2ban with
//! `packaging/fail2ban/action.d/lockdown.conf` as its action, and the peer fails to log in until
//! fail2ban bans it through `lockdown deny`.
//!
//! Needs what the end-to-end tests need, plus the packages openssh-server, openssh-client and
//! fail2ban (`scripts/setup.sh` installs them without starting their daemons on the host), and
//! the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test fail2ban -- --test-threads=1
//! ```
//!
//! Everything the daemons read and write lives in one temporary directory of the test: sshd's
//! config, host key and authorized keys, the log it writes (on stderr, which the test turns into
//! syslog-style lines for fail2ban to read), and fail2ban's whole configuration, socket, pid file
//! and log; its database is in memory. The only thing outside it is /run/sshd, sshd's compiled-in
//! privilege separation directory, which the test creates if it is missing. Both daemons, and
//! anything left running in the test's namespaces, are killed when the test ends, pass or fail.
//! Waits are bounded polls that fail with the logs; no test asserts on timing.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use lockdown_testbed::{
    cli::poll,
    netns::{ip, netns_path, ns_command},
    origin::Origin,
    pair::{LINK_PREFIX_V4, ORIGIN_IF, ORIGIN_V4, ORIGIN_V6, PEER_IF, PEER_V4, PEER_V6},
    ssh::sshd_config,
    traffic::{DROP_TIMEOUT, OK_TIMEOUT, tcp_connect},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// The action under test, as the package ships it.
const ACTION: &str = include_str!("../../packaging/fail2ban/action.d/lockdown.conf");

const SSH: u16 = 22;
const SSHD: &str = "/usr/sbin/sshd";
/// The jail's bantime in seconds: short, so that the test can wait for a ban to end.
const BANTIME: u64 = 8;
/// The jail's maxretry: the number of failed logins that bans a source.
const MAXRETRY: usize = 6;
/// A second source on the peer's side, which fail2ban never bans.
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 3);
/// An address fail2ban bans for good (bantime -1).
const PERMANENT_V4: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 99);
/// An entry added by hand, which fail2ban's shutdown must leave alone.
const MANUAL_NET: &str = "192.0.2.0/24";
/// The fail2ban filter files the jail needs, copied from the installed package.
const FILTERS: [&str; 2] = ["sshd.conf", "common.conf"];
/// Bound for a daemon to come up, or for fail2ban to act on what it read.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Tools and processes.

/// The first directory of `$PATH` holding `prog` (or `prog` itself if it is a path).
fn find_program(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Path::new(prog).is_file().then(|| PathBuf::from(prog));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(prog))
        .find(|p| p.is_file())
}

/// Panics, naming the package, unless every program and file this test uses is installed. The
/// test never skips.
fn require_tools() {
    for (prog, package) in [
        (SSHD, "openssh-server"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("fail2ban-server", "fail2ban"),
        ("fail2ban-client", "fail2ban"),
        ("timeout", "coreutils"),
    ] {
        assert!(
            find_program(prog).is_some(),
            "the fail2ban test needs `{prog}` (Debian package {package}); `scripts/setup.sh` \
             installs it"
        );
    }
    for filter in FILTERS {
        let path = Path::new("/etc/fail2ban/filter.d").join(filter);
        assert!(
            path.is_file(),
            "the fail2ban test needs {} (Debian package fail2ban); `scripts/setup.sh` installs it",
            path.display()
        );
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
}

/// A daemon of the test: stopped with SIGTERM (SIGKILL after `grace`) and reaped on drop.
struct Daemon {
    what: &'static str,
    child: Child,
    grace: Duration,
}

impl Daemon {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the daemon to exit on its own; whether it did.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        poll(timeout, Duration::from_millis(50), || {
            (!self.running()).then_some(())
        })
        .is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = kill(pid_of(&self.child), Signal::SIGTERM);
            if !self.wait_exit(self.grace) {
                eprintln!("warning: {} ignored SIGTERM; killing it", self.what);
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// SIGKILLs every process (but this one) whose network namespace is `ns`: what a daemon left
/// behind, such as an sshd session process.
fn kill_namespace_processes(ns: &str) {
    let Ok(ns_ino) = fs::metadata(netns_path(ns)).map(|m| m.ino()) else {
        return;
    };
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
    {
        if fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns_ino) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            eprintln!("killing process {pid} ({}) left in {ns}", comm.trim());
            if let Ok(raw) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
}

/// The last `n` lines of a file, for failure messages.
fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Copies sshd's log lines from its stderr into `log` as a syslog daemon would write them
/// (`HOST sshd[PID]: MESSAGE`), which is the shape fail2ban's sshd filter expects. The thread
/// ends when every sshd process has closed the pipe.
fn pump_sshd_log(stderr: ChildStderr, log: &Path, pid: u32) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
    thread::Builder::new()
        .name("sshd-log".to_owned())
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = line.trim_end_matches('\r');
                if file
                    .write_all(format!("origin sshd[{pid}]: {line}\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
        })
        .unwrap_or_else(|e| panic!("spawning the sshd log thread: {e}"));
}

/// The test's temporary directory; removed on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lockdown-test-{tag}-{}", std::process::id()));
        if path.exists() {
            let _ = fs::remove_dir_all(&path);
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("warning: removing {}: {e}", self.0.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The test world.

/// One entry of `lockdown deny list --json`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    cidr: String,
    expires_in_secs: Option<u64>,
}

/// sshd and fail2ban-server in an [`Origin`], with their files. `Drop` stops fail2ban (which
/// unbans what it banned), then sshd, then kills anything left in the namespaces, then removes
/// the temporary directory; the origin (`lockdown down`, the pin root, the namespaces) goes after.
struct Jail<'a> {
    fail2ban: Option<Daemon>,
    sshd: Option<Daemon>,
    dir: TestDir,
    o: &'a Origin,
}

impl Drop for Jail<'_> {
    fn drop(&mut self) {
        drop(self.fail2ban.take());
        drop(self.sshd.take());
        for ns in [&self.o.pair.origin, &self.o.pair.peer] {
            kill_namespace_processes(ns);
        }
    }
}

impl<'a> Jail<'a> {
    fn new(o: &'a Origin, tag: &str) -> Self {
        Self {
            fail2ban: None,
            sshd: None,
            dir: TestDir::new(tag),
            o,
        }
    }

    fn auth_log(&self) -> PathBuf {
        self.dir.path("auth.log")
    }

    fn fail2ban_log(&self) -> PathBuf {
        self.dir.path("fail2ban.log")
    }

    fn fail2ban_dir(&self) -> PathBuf {
        self.dir.path("fail2ban")
    }

    fn fail2ban_socket(&self) -> PathBuf {
        self.dir.path("f2b.sock")
    }

    fn client_key(&self) -> PathBuf {
        self.dir.path("client_key")
    }

    /// sshd's log, fail2ban's log and lockdown's blocklist, for failure messages.
    fn context(&self) -> String {
        let list = self
            .o
            .ld
            .run(&["deny", "list", "--iface", ORIGIN_IF, "--json"]);
        format!(
            "--- sshd log (tail) ---\n{}\n--- fail2ban log (tail) ---\n{}\n--- fail2ban output ---\n{}\n--- deny list ---\n{}",
            tail(&self.auth_log(), 30),
            tail(&self.fail2ban_log(), 40),
            tail(&self.dir.path("fail2ban.out"), 20),
            list
        )
    }

    fn keygen(&self, name: &str) -> PathBuf {
        let path = self.dir.path(name);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running ssh-keygen: {e}"));
        assert!(
            out.status.success(),
            "ssh-keygen for {name} failed: {}",
            output_text(&out)
        );
        path
    }

    /// A real sshd in the origin namespace on port 22 (IPv4 and IPv6) that accepts only the
    /// test's client key, for root. Its log lines go to `auth.log` for fail2ban.
    fn start_sshd(&mut self) {
        // sshd refuses to start without its privilege separation directory, which systemd
        // normally creates for ssh.service.
        let privsep = Path::new("/run/sshd");
        if !privsep.is_dir() {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(privsep)
                .unwrap_or_else(|e| panic!("creating {}: {e}", privsep.display()));
        }
        let host_key = self.keygen("host_key");
        let client_key = self.keygen("client_key");
        let public = fs::read_to_string(client_key.with_extension("pub"))
            .unwrap_or_else(|e| panic!("reading the client's public key: {e}"));
        let authorized_keys = self.dir.write("authorized_keys", &public);
        let config = self.dir.write(
            "sshd_config",
            &sshd_config(
                &host_key,
                &self.dir.path("sshd.pid"),
                &authorized_keys,
                "LoginGraceTime 20\n",
            ),
        );
        let check = ns_command(&self.o.pair.origin, SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running `sshd -t`: {e}"));
        assert!(
            check.status.success(),
            "`sshd -t -f {}` rejects the test's config: {}",
            config.display(),
            output_text(&check)
        );
        let mut child = ns_command(&self.o.pair.origin, SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting sshd: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        pump_sshd_log(stderr, &self.auth_log(), child.id());
        let mut daemon = Daemon {
            what: "sshd",
            child,
            grace: Duration::from_secs(3),
        };
        let log = self.auth_log();
        let up = poll(DAEMON_TIMEOUT, Duration::from_millis(50), || {
            let text = fs::read_to_string(&log).unwrap_or_default();
            (text.contains("Server listening on 0.0.0.0 port 22")
                && text.contains("Server listening on :: port 22"))
            .then_some(())
        });
        let running = daemon.running();
        self.sshd = Some(daemon);
        assert!(
            up.is_some() && running,
            "sshd did not come up (running: {running})\n{}",
            self.context()
        );
    }

    /// fail2ban-server in the origin namespace (where its actions run), reading only the test's
    /// configuration: the packaged sshd filter, lockdown's action, and a jail on `auth.log`.
    fn start_fail2ban(&mut self) {
        let conf = self.fail2ban_dir();
        for filter in FILTERS {
            let from = Path::new("/etc/fail2ban/filter.d").join(filter);
            let to = conf.join("filter.d").join(filter);
            fs::create_dir_all(to.parent().expect("a parent"))
                .unwrap_or_else(|e| panic!("creating {}: {e}", conf.display()));
            fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
        }
        self.dir.write("fail2ban/action.d/lockdown.conf", ACTION);
        let socket = self.fail2ban_socket();
        let pidfile = self.dir.path("f2b.pid");
        self.dir.write(
            "fail2ban/fail2ban.conf",
            &format!(
                "[Definition]\n\
                 loglevel = INFO\n\
                 logtarget = {log}\n\
                 syslogsocket = auto\n\
                 socket = {socket}\n\
                 pidfile = {pidfile}\n\
                 allowipv6 = auto\n\
                 dbfile = :memory:\n\
                 dbpurgeage = 1d\n",
                log = self.fail2ban_log().display(),
                socket = socket.display(),
                pidfile = pidfile.display(),
            ),
        );
        self.dir.write(
            "fail2ban/jail.conf",
            "# Only the test's jail (jail.local); nothing of the host's configuration.\n[DEFAULT]\n",
        );
        // sshd writes no timestamps on stderr, so the filter takes the time a line is read
        // ({NONE}); the log lines carry the `HOST sshd[PID]:` prefix that the filter expects.
        self.dir.write(
            "fail2ban/jail.local",
            &format!(
                "[sshd]\n\
                 enabled = true\n\
                 filter = sshd\n\
                 backend = polling\n\
                 datepattern = {{NONE}}\n\
                 logpath = {log}\n\
                 maxretry = {MAXRETRY}\n\
                 findtime = 60\n\
                 bantime = {BANTIME}\n\
                 action = lockdown[lockdown=\"{bin}\", iface={ORIGIN_IF}]\n",
                log = self.auth_log().display(),
                bin = self.o.ld.bin.display(),
            ),
        );
        let out = File::create(self.dir.path("fail2ban.out"))
            .unwrap_or_else(|e| panic!("creating fail2ban's output file: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("duplicating fail2ban's output file: {e}"));
        // The server's environment reaches every action command: the test's pin root must, and
        // the tester's own SSH session must not (lockdown's lockout guard reads it).
        let child = ns_command(&self.o.pair.origin, "fail2ban-server")
            .args(["-f", "-x", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-p")
            .arg(&pidfile)
            .arg("--logtarget")
            .arg(self.fail2ban_log())
            .env("LOCKDOWN_PIN_ROOT", &self.o.ld.pin_root)
            .env_remove("SSH_CONNECTION")
            .env_remove("SSH_CLIENT")
            .env_remove("SSH_TTY")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting fail2ban-server: {e}"));
        let mut daemon = Daemon {
            what: "fail2ban-server",
            child,
            grace: Duration::from_secs(10),
        };
        let up = poll(DAEMON_TIMEOUT, Duration::from_millis(200), || {
            if !daemon.running() {
                return Some(false);
            }
            let ping = self.f2b_run(&["ping"]);
            let status = ping
                .status
                .success()
                .then(|| self.f2b_run(&["status", "sshd"]));
            status.is_some_and(|s| s.status.success()).then_some(true)
        });
        self.fail2ban = Some(daemon);
        assert!(
            up == Some(true),
            "fail2ban-server did not come up with the sshd jail\n{}",
            self.context()
        );
    }

    /// `fail2ban-client -s SOCKET args…` (bounded by `timeout`).
    fn f2b_run(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("20")
            .arg("fail2ban-client")
            .arg("-s")
            .arg(self.fail2ban_socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running fail2ban-client: {e}"))
    }

    /// `fail2ban-client args…`; panics unless it succeeds. Returns its stdout.
    fn f2b(&self, args: &[&str]) -> String {
        let out = self.f2b_run(args);
        assert!(
            out.status.success(),
            "`fail2ban-client {}` failed: {}\n{}",
            args.join(" "),
            output_text(&out),
            self.context()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `ssh USER@10.231.0.1 'echo $SSH_CONNECTION'` from the peer, from `source` if given, with
    /// the test's client key only (bounded by `timeout`).
    fn ssh(&self, source: Option<Ipv4Addr>, user: &str) -> Output {
        let mut cmd = ns_command(&self.o.pair.peer, "timeout");
        cmd.args(["20", "ssh", "-F", "/dev/null"]);
        for opt in [
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "ConnectTimeout=3",
            "ConnectionAttempts=1",
            "IdentitiesOnly=yes",
            "LogLevel=ERROR",
        ] {
            cmd.args(["-o", opt]);
        }
        cmd.arg("-i").arg(self.client_key());
        if let Some(source) = source {
            cmd.args(["-b", &source.to_string()]);
        }
        cmd.arg(format!("{user}@{ORIGIN_V4}"))
            .arg("echo $SSH_CONNECTION")
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running ssh: {e}"))
    }

    /// `lockdown deny list --json`, parsed.
    fn deny_list(&self) -> Vec<Entry> {
        let out = self
            .o
            .ld
            .must(&["deny", "list", "--iface", ORIGIN_IF, "--json"]);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("deny list --json is not JSON ({e}): {out}"));
        v.as_array()
            .unwrap_or_else(|| panic!("deny list --json is not an array: {out}"))
            .iter()
            .map(|e| Entry {
                cidr: e["cidr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("an entry without a string \"cidr\": {out}"))
                    .to_owned(),
                expires_in_secs: match &e["expires_in_secs"] {
                    serde_json::Value::Null => None,
                    n => Some(n.as_u64().unwrap_or_else(|| {
                        panic!("\"expires_in_secs\" is neither null nor a count: {out}")
                    })),
                },
            })
            .collect()
    }

    fn entry(&self, cidr: &str) -> Option<Entry> {
        self.deny_list().into_iter().find(|e| e.cidr == cidr)
    }

    /// Waits (bounded) until the blocklist holds `cidr`, and returns its entry.
    fn wait_listed(&self, cidr: &str, why: &str) -> Entry {
        poll(DAEMON_TIMEOUT, Duration::from_millis(200), || {
            self.entry(cidr)
        })
        .unwrap_or_else(|| {
            panic!(
                "{why}: {cidr} never appeared in `lockdown deny list`\n{}",
                self.context()
            )
        })
    }

    /// Waits (bounded by `timeout`) until the blocklist no longer holds `cidr`.
    fn wait_unlisted(&self, cidr: &str, timeout: Duration, why: &str) {
        poll(timeout, Duration::from_millis(200), || {
            self.entry(cidr).is_none().then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{why}: {cidr} is still in `lockdown deny list`\n{}",
                self.context()
            )
        });
    }

    /// A TCP connection from the peer to the origin's sshd at `addr` must time out: its SYN was
    /// dropped before the origin's kernel saw it.
    fn assert_dropped(&self, addr: SocketAddr, why: &str) {
        match tcp_connect(&self.o.pair.peer, addr, DROP_TIMEOUT) {
            Ok(_) => panic!(
                "{why}: a connection to {addr} got through\n{}",
                self.context()
            ),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => panic!(
                "{why}: a connection to {addr} should time out (SYN dropped), but: {e}\n{}",
                self.context()
            ),
        }
    }

    /// Waits (bounded by `timeout`) until a TCP connection from the peer to `addr` succeeds.
    fn wait_connects(&self, addr: SocketAddr, timeout: Duration, why: &str) {
        poll(timeout, Duration::from_millis(100), || {
            tcp_connect(&self.o.pair.peer, addr, DROP_TIMEOUT).ok()
        })
        .unwrap_or_else(|| {
            panic!(
                "{why}: no connection to {addr} got through\n{}",
                self.context()
            )
        });
    }
}

/// Reads one line (up to `\n`) from `stream`, byte by byte so that nothing after it is consumed.
fn read_line(stream: &mut impl io::Read) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        stream.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        line.push(byte[0]);
    }
    Err(io::Error::other("no end of line in 256 bytes"))
}

fn v4(ip: Ipv4Addr) -> String {
    format!("{ip}/32")
}

// ---------------------------------------------------------------------------------------------
// The test.

/// Six failed logins get the peer banned through `lockdown deny`: its packets are dropped at
/// XDP, its open connection included, while another source still logs in. An unban, a ban that
/// ends by itself, an IPv6 ban and a permanent ban go through the action too, and fail2ban's
/// shutdown removes what it banned but not an entry added by hand.
#[test]
fn fail2ban_bans_through_the_blocklist() {
    let start = Instant::now();
    require_tools();
    let o = Origin::new("f2b");
    let mut w = Jail::new(&o, "f2b");
    // The second source: the peer's primary address stays 10.231.0.2, which plain connections
    // (and the failed logins) come from.
    ip(
        &o.pair.peer,
        &[
            "addr",
            "add",
            &format!("{OTHER_V4}/{LINK_PREFIX_V4}"),
            "dev",
            PEER_IF,
        ],
    );
    w.start_sshd();
    o.ld.up(&[]);
    w.start_fail2ban();
    let ssh_v4 = SocketAddr::new(IpAddr::V4(ORIGIN_V4), SSH);
    let ssh_v6 = SocketAddr::new(IpAddr::V6(ORIGIN_V6), SSH);
    let peer = v4(PEER_V4);

    // Before any ban: the peer reaches sshd, and holds a connection open that it has seen the
    // server's banner on, as a brute-forcer would. lockdown's lockout guard counts it as an SSH
    // session from the peer and refuses to deny the peer without --force, which the action
    // passes for this reason.
    let mut held = tcp_connect(&o.pair.peer, ssh_v4, OK_TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "the peer cannot reach sshd at {ssh_v4}: {e}\n{}",
            w.context()
        )
    });
    // sshd sends its version line and then waits for the client's.
    let banner = read_line(&mut held).unwrap_or_else(|e| {
        panic!(
            "no banner from sshd on the held connection: {e}\n{}",
            w.context()
        )
    });
    assert!(banner.starts_with("SSH-2.0-"), "sshd's banner: {banner:?}");
    assert!(w.deny_list().is_empty(), "the blocklist starts empty");
    let denied_before = o.ld.counter("drop_denied");

    // Six failed logins as a user that does not exist.
    for attempt in 1..=MAXRETRY {
        let out = w.ssh(None, "nosuchuser");
        assert!(
            !out.status.success(),
            "login attempt {attempt} as nosuchuser succeeded: {}",
            output_text(&out)
        );
        if attempt < MAXRETRY {
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
                "login attempt {attempt} should be refused by sshd: {}\n{}",
                output_text(&out),
                w.context()
            );
        }
    }
    let entry = w.wait_listed(&peer, "after six failed logins");
    let expires = entry
        .expires_in_secs
        .unwrap_or_else(|| panic!("fail2ban's ban should expire: {entry:?}"));
    assert!(
        (1..=BANTIME).contains(&expires),
        "the ban should expire within the jail's bantime ({BANTIME}s): {entry:?}"
    );
    let banned = w.f2b(&["status", "sshd"]);
    assert!(
        banned.contains(&PEER_V4.to_string()),
        "fail2ban should list the peer as banned: {banned}"
    );

    // The banned source gets nothing through, new connections or the held one.
    w.assert_dropped(ssh_v4, "while the peer is banned");
    held.write_all(b"SSH-2.0-lockdown-test\r\n")
        .unwrap_or_else(|e| panic!("writing on the held connection: {e}"));
    let mut reply = [0u8; 1];
    match held.read(&mut reply) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        other => panic!(
            "the held connection should be cut off by the ban (sshd never sees the client's \
             version, so it never answers), but the read gave {other:?}\n{}",
            w.context()
        ),
    }
    drop(held);
    let denied_after = o.ld.counter("drop_denied");
    assert!(
        denied_after > denied_before,
        "drop_denied should count the banned source's packets: {denied_before} -> {denied_after}"
    );

    // Another source still logs in, with a key.
    let out = w.ssh(Some(OTHER_V4), "root");
    assert!(
        out.status.success(),
        "root should log in with the key from {OTHER_V4} while {PEER_V4} is banned: {}\n{}",
        output_text(&out),
        w.context()
    );
    let session = String::from_utf8_lossy(&out.stdout);
    assert!(
        session.starts_with(&format!("{OTHER_V4} ")),
        "the session should come from {OTHER_V4}: $SSH_CONNECTION is {session:?}"
    );

    // fail2ban's unban lets the peer back in.
    w.f2b(&["set", "sshd", "unbanip", &PEER_V4.to_string()]);
    w.wait_unlisted(&peer, DAEMON_TIMEOUT, "after unbanip");
    w.wait_connects(ssh_v4, DAEMON_TIMEOUT, "after unbanip");

    // An IPv6 ban is one address of the other family.
    w.f2b(&["set", "sshd", "banip", &PEER_V6.to_string()]);
    let entry = w.wait_listed(
        &format!("{PEER_V6}/128"),
        "after banip of the peer's IPv6 address",
    );
    assert!(
        entry.expires_in_secs.is_some(),
        "the IPv6 ban should expire: {entry:?}"
    );
    w.assert_dropped(ssh_v6, "while the peer's IPv6 address is banned");
    w.wait_connects(ssh_v4, OK_TIMEOUT, "IPv4 while only IPv6 is banned");
    w.f2b(&["set", "sshd", "unbanip", &PEER_V6.to_string()]);
    w.wait_unlisted(
        &format!("{PEER_V6}/128"),
        DAEMON_TIMEOUT,
        "after unbanip of IPv6",
    );
    w.wait_connects(ssh_v6, DAEMON_TIMEOUT, "after unbanip of IPv6");

    // A ban that ends by itself: whether fail2ban unbans first or the datapath stops matching the
    // expired entry, the peer gets back in shortly after the bantime.
    w.f2b(&["set", "sshd", "banip", &PEER_V4.to_string()]);
    w.wait_listed(&peer, "after banip");
    w.assert_dropped(ssh_v4, "while the peer is banned again");
    let limit = Duration::from_secs(BANTIME) + DAEMON_TIMEOUT;
    w.wait_connects(ssh_v4, limit, "after the bantime");
    w.wait_unlisted(&peer, DAEMON_TIMEOUT, "after the bantime");

    // A permanent ban (bantime -1) is an entry without expiry. It is still in force when
    // fail2ban stops below (a ban that fail2ban made with the jail's bantime follows a later
    // change of it, so the bantime stays -1 from here on).
    w.f2b(&["set", "sshd", "bantime", "-1"]);
    w.f2b(&["set", "sshd", "banip", &PERMANENT_V4.to_string()]);
    let entry = w.wait_listed(&v4(PERMANENT_V4), "after a permanent banip");
    assert_eq!(
        entry.expires_in_secs, None,
        "fail2ban's permanent ban should not expire: {entry:?}"
    );

    // fail2ban's shutdown removes its own bans, not an entry added by hand.
    o.ld.must(&["deny", "add", MANUAL_NET, "--iface", ORIGIN_IF]);
    let banned = w.f2b(&["status", "sshd"]);
    assert!(
        banned.contains(&PERMANENT_V4.to_string()) && w.entry(&v4(PERMANENT_V4)).is_some(),
        "the permanent ban should still be in force before fail2ban stops: {banned}\n{}",
        w.context()
    );
    let stopped = w.f2b(&["stop"]);
    let exited = w
        .fail2ban
        .as_mut()
        .expect("fail2ban is running")
        .wait_exit(DAEMON_TIMEOUT);
    assert!(
        exited,
        "fail2ban-server should exit after `stop` ({stopped})\n{}",
        w.context()
    );
    let list = w.deny_list();
    assert_eq!(
        list,
        vec![Entry {
            cidr: MANUAL_NET.to_owned(),
            expires_in_secs: None
        }],
        "after fail2ban's shutdown only the hand-made entry should be left\n{}",
        w.context()
    );

    // No action command failed along the way (fail2ban logs a failed command as an error).
    let log = fs::read_to_string(w.fail2ban_log())
        .unwrap_or_else(|e| panic!("reading fail2ban's log: {e}"));
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "fail2ban logged errors:\n{}\n{}",
        errors.join("\n"),
        w.context()
    );
    drop(w);
    eprintln!("fail2ban test took {:.1?}", start.elapsed());
}
