//! Running the `lockdown` binary from the end-to-end tests.
//!
//! [`Lockdown`] runs the CLI inside a test's origin namespace (`nsenter --net=… -- lockdown …`) with
//! `LOCKDOWN_PIN_ROOT` pointing at a pin root of the test's own
//! (`/sys/fs/bpf/lockdown-test-<pid>-<tag>`), so the tests never touch a real deployment's pins
//! under `/sys/fs/bpf/lockdown`; [`Lockdown::run_confirmable`] also points `LOCKDOWN_RUN_DIR` at a
//! run dir of its own. Dropping it runs `lockdown down` if the interface is still locked down and
//! removes the pin root and the run dir.

use std::{
    collections::BTreeMap,
    fmt, fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use lockdown_common::contract::maps::{PIN_LINK_EGRESS, PIN_LINK_INGRESS};
#[cfg(feature = "datapath")]
use lockdown_user::{datapath::pins::PIN_PROG_EGRESS_TC, host::tc};

use crate::netns::{self, netns_path};

/// What [`Lockdown::egress_ids`] gives as the "link id" of a netlink egress filter.
#[cfg(feature = "datapath")]
pub const NETLINK_FILTER: u32 = u32::MAX;

/// The ids of the pinned link at `path` and of its program.
fn link_ids(path: &Path) -> (u32, u32) {
    let link =
        PinnedLink::from_pin(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let info = FdLink::from(link)
        .info()
        .unwrap_or_else(|e| panic!("reading the info of {}: {e}", path.display()));
    (info.id(), info.program_id())
}

/// The `lockdown` binary: `$LOCKDOWN_BIN`, or `<workspace>/target/debug/lockdown`. Panics with a
/// clear message if it does not exist.
pub fn bin() -> PathBuf {
    let path = std::env::var_os("LOCKDOWN_BIN").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/lockdown"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "the lockdown binary is missing at {}: build it with `cargo build -p lockdown-user` \
         (or point $LOCKDOWN_BIN at it)",
        path.display()
    );
    path.canonicalize()
        .unwrap_or_else(|e| panic!("resolving {}: {e}", path.display()))
}

/// The previous release's `lockdown` (`$LOCKDOWN_PREVIOUS_BIN`, which `cargo xtask test` builds
/// from its commit), for the upgrade tests. Panics with the fix if it is missing.
pub fn previous_bin() -> PathBuf {
    let path = std::env::var_os("LOCKDOWN_PREVIOUS_BIN").map(PathBuf::from);
    match path {
        Some(p) if p.is_file() => p
            .canonicalize()
            .unwrap_or_else(|e| panic!("resolving {}: {e}", p.display())),
        Some(p) => panic!("$LOCKDOWN_PREVIOUS_BIN is not a file: {}", p.display()),
        None => panic!(
            "$LOCKDOWN_PREVIOUS_BIN is not set: run the tests through `cargo xtask test`, which \
             builds the previous release for the upgrade tests"
        ),
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// The CLI of one test: a namespace, an interface, a private pin root and a private run dir.
#[derive(Debug)]
pub struct Lockdown {
    pub ns: String,
    pub iface: String,
    pub pin_root: PathBuf,
    /// For `LOCKDOWN_RUN_DIR` (pending `--confirm` changes), set by [`Lockdown::run_confirmable`].
    pub run_dir: PathBuf,
    pub bin: PathBuf,
}

impl Lockdown {
    /// The CLI in namespace `ns`, acting on `iface`, with pin root
    /// `/sys/fs/bpf/lockdown-test-<pid>-<tag>` and run dir `$TMPDIR/lockdown-test-run-<pid>-<tag>`
    /// (both created empty here).
    pub fn new(ns: &str, iface: &str, tag: &str) -> Self {
        netns::require_environment();
        let bin = bin();
        assert!(
            netns_path(ns).exists(),
            "network namespace {ns} does not exist"
        );
        let pin_root = PathBuf::from(format!(
            "/sys/fs/bpf/lockdown-test-{}-{tag}",
            std::process::id()
        ));
        if pin_root.exists() {
            remove_tree(&pin_root);
        }
        fs::create_dir(&pin_root)
            .unwrap_or_else(|e| panic!("creating the pin root {}: {e}", pin_root.display()));
        let run_dir =
            std::env::temp_dir().join(format!("lockdown-test-run-{}-{tag}", std::process::id()));
        if run_dir.exists() {
            let _ = fs::remove_dir_all(&run_dir);
        }
        fs::create_dir_all(&run_dir)
            .unwrap_or_else(|e| panic!("creating the run dir {}: {e}", run_dir.display()));
        Self {
            ns: ns.to_owned(),
            iface: iface.to_owned(),
            pin_root,
            run_dir,
            bin,
        }
    }

    /// The pending `--confirm` change of the interface in the run dir.
    pub fn pending(&self) -> PathBuf {
        self.run_dir.join(format!("{}.pending", self.iface))
    }

    /// The pin directory of the interface.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.iface)
    }

    /// Whether the interface's ingress link is pinned (lockdown's own notion of "locked down").
    pub fn is_locked(&self) -> bool {
        self.pin_dir().join(PIN_LINK_INGRESS).exists()
    }

    /// `nsenter --net=/run/netns/NS -- <bin> args…` with `LOCKDOWN_PIN_ROOT` and
    /// `LOCKDOWN_RUN_DIR` set: every verb of one test sees the same private pin root and run dir,
    /// as every verb on a server sees `/sys/fs/bpf/lockdown` and `/run/lockdown`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = netns::ns_command(&self.ns, &self.bin);
        // The tester's own SSH session must not trigger the lockout guard in the test's
        // namespace; the tests that exercise the guard set it themselves.
        cmd.args(args)
            .env("LOCKDOWN_PIN_ROOT", &self.pin_root)
            .env("LOCKDOWN_RUN_DIR", &self.run_dir)
            .env_remove("SSH_CONNECTION");
        cmd
    }

    fn describe(&self, prefix: &str, args: &[&str]) -> String {
        format!(
            "LOCKDOWN_PIN_ROOT={} nsenter --net={} -- {prefix}{} {}",
            self.pin_root.display(),
            netns_path(&self.ns).display(),
            self.bin.display(),
            args.join(" ")
        )
    }

    fn output(cmd: &mut Command, description: String) -> CmdOutput {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {description}: {e}"));
        CmdOutput {
            cmd: description,
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the binary with `args` and returns what it did.
    pub fn run(&self, args: &[&str]) -> CmdOutput {
        self.run_env(args, &[])
    }

    /// Runs the binary with `args` and extra environment variables (e.g. `SSH_CONNECTION` for the
    /// lockout guard's tests).
    pub fn run_env(&self, args: &[&str], env: &[(&str, String)]) -> CmdOutput {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let prefix: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
        Self::output(&mut cmd, format!("{prefix}{}", self.describe("", args)))
    }

    /// [`Lockdown::run`] with `LOCKDOWN_RUN_DIR` set to the test's run dir.
    pub fn run_confirmable(&self, args: &[&str]) -> CmdOutput {
        let run_dir = ("LOCKDOWN_RUN_DIR", self.run_dir.display().to_string());
        self.run_env(args, &[run_dir])
    }

    /// Runs the binary without `var` in its environment (whatever the tests were started with).
    pub fn run_unset(&self, args: &[&str], var: &str) -> CmdOutput {
        let mut cmd = self.command(args);
        cmd.env_remove(var);
        Self::output(
            &mut cmd,
            format!("env -u {var} {}", self.describe("", args)),
        )
    }

    /// Runs the binary and panics unless it succeeds.
    pub fn must(&self, args: &[&str]) -> CmdOutput {
        let out = self.run(args);
        assert!(out.success(), "expected success: {out}");
        out
    }

    /// Runs the binary and panics unless it fails with a non-zero exit and a message on stderr
    /// that contains every one of `needles` (case-insensitively).
    pub fn refuse(&self, args: &[&str], needles: &[&str]) -> CmdOutput {
        let out = self.run(args);
        check_refused(&out, needles);
        out
    }

    /// Runs the binary as user nobody with no capabilities (through `setpriv`).
    pub fn run_unprivileged(&self, args: &[&str]) -> CmdOutput {
        let mut cmd = netns::ns_command(&self.ns, "setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ])
        .arg(&self.bin)
        .args(args)
        .env("LOCKDOWN_PIN_ROOT", &self.pin_root);
        Self::output(
            &mut cmd,
            self.describe(
                "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- ",
                args,
            ),
        )
    }

    /// Starts the binary with `args` in the background (stdout and stderr piped). nsenter execs
    /// the binary, so the child's pid is lockdown's.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.describe("", args)))
    }

    /// `lockdown up --iface IF extra…`; panics unless it succeeds.
    pub fn up(&self, extra: &[&str]) -> CmdOutput {
        let mut args = vec!["up", "--iface", &self.iface];
        args.extend_from_slice(extra);
        self.must(&args)
    }

    /// `lockdown down --iface IF`; panics unless it succeeds.
    pub fn down(&self) -> CmdOutput {
        self.must(&["down", "--iface", &self.iface])
    }

    /// `lockdown status --iface IF --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.must(&["status", "--iface", &self.iface, "--json"]);
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {out}"))
    }

    /// Live entries in every flow table (live and closing) from `status --json`.
    pub fn flows(&self) -> u64 {
        let s = self.status_json();
        let get = |name: &str| {
            s[name]
                .as_u64()
                .unwrap_or_else(|| panic!("status --json has no integer {name:?}: {s}"))
        };
        get("flows") + get("closing_flows")
    }

    /// Every packet counter from `status --json`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let s = self.status_json();
        let obj = s["counters"]
            .as_object()
            .unwrap_or_else(|| panic!("status --json has no \"counters\" object: {s}"));
        obj.iter()
            .map(|(k, v)| {
                let n = v
                    .as_u64()
                    .unwrap_or_else(|| panic!("counter {k} is not an integer: {s}"));
                (k.clone(), n)
            })
            .collect()
    }

    /// One packet counter from `status --json`; panics if it does not exist.
    pub fn counter(&self, name: &str) -> u64 {
        let counters = self.counters();
        *counters
            .get(name)
            .unwrap_or_else(|| panic!("status --json has no counter {name:?}: {counters:?}"))
    }

    /// The allowlist from `status --json`.
    pub fn allow(&self) -> Vec<String> {
        let s = self.status_json();
        s["allow"]
            .as_array()
            .unwrap_or_else(|| panic!("status --json has no \"allow\" array: {s}"))
            .iter()
            .map(|v| {
                v.as_str()
                    .unwrap_or_else(|| panic!("non-string allow entry: {s}"))
                    .to_owned()
            })
            .collect()
    }

    /// The kernel ids of the pinned ingress and egress links (for checking that `down` really
    /// released them): both with a TCX egress link, the ingress one with a netlink egress filter,
    /// which is no link. The file descriptors opened to read them are closed before returning.
    pub fn pinned_link_ids(&self) -> Vec<u32> {
        [PIN_LINK_INGRESS, PIN_LINK_EGRESS]
            .iter()
            .filter(|name| **name == PIN_LINK_INGRESS || self.pin_dir().join(name).exists())
            .map(|name| link_ids(&self.pin_dir().join(name)).0)
            .collect()
    }

    /// How the egress program is attached, by the pins: `tcx` (a pinned link) or `netlink` (the
    /// filter's program pinned); panics if neither is pinned.
    #[cfg(feature = "datapath")]
    pub fn egress_kind(&self) -> &'static str {
        if self.pin_dir().join(PIN_LINK_EGRESS).exists() {
            "tcx"
        } else if self.pin_dir().join(PIN_PROG_EGRESS_TC).exists() {
            "netlink"
        } else {
            panic!(
                "no egress attachment is pinned in {}",
                self.pin_dir().display()
            )
        }
    }

    /// The egress attachment as the kernel has it: the TCX link's id and its program's id, or —
    /// for lockdown's netlink filter, which has no id and always sits at the same priority and
    /// handle — [`NETLINK_FILTER`] and the id of the program the filter runs.
    #[cfg(feature = "datapath")]
    pub fn egress_ids(&self) -> (u32, u32) {
        match self.egress_kind() {
            "tcx" => link_ids(&self.pin_dir().join(PIN_LINK_EGRESS)),
            _ => {
                let filter = self.netlink_filter().unwrap_or_else(|| {
                    panic!("lockdown's TC egress filter is not on {}", self.iface)
                });
                let prog = filter.prog_id.unwrap_or_else(|| {
                    panic!("the TC egress filter has no program id: {filter:?}")
                });
                (NETLINK_FILTER, prog)
            }
        }
    }

    /// lockdown's netlink TC egress filter on the interface, if there is one.
    #[cfg(feature = "datapath")]
    pub fn netlink_filter(&self) -> Option<tc::Filter> {
        let iface = self.iface.clone();
        netns::in_ns(&self.ns, move || {
            let index = lockdown_user::host::link::ifindex(&iface).expect("the test interface");
            tc::lockdowns(index).expect("dumping the clsact filters")
        })
    }

    /// Processes running this test's binary that belong to this test: started with this test's
    /// pin root in their environment, or running in this test's namespace (so a lockdown running
    /// elsewhere on the machine does not count).
    pub fn processes(&self) -> Vec<u32> {
        let needle = format!("LOCKDOWN_PIN_ROOT={}", self.pin_root.display());
        let ns_path = netns_path(&self.ns);
        let ns_ino = fs::metadata(&ns_path)
            .unwrap_or_else(|e| panic!("stat {}: {e}", ns_path.display()))
            .ino();
        let entries = fs::read_dir("/proc").unwrap_or_else(|e| panic!("reading /proc: {e}"));
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == self.bin)
            })
            .filter(|pid| {
                let in_ns =
                    fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns_ino);
                let ours = fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()));
                in_ns || ours
            })
            .collect()
    }
}

impl Drop for Lockdown {
    fn drop(&mut self) {
        if self.pin_dir().exists() {
            let out = self.run(&["down", "--iface", &self.iface]);
            if !out.success() {
                eprintln!("warning: cleanup `lockdown down` failed: {out}");
            }
        }
        if self.pin_root.exists() {
            remove_tree(&self.pin_root);
        }
        if let Err(e) = fs::remove_dir_all(&self.run_dir) {
            eprintln!("warning: removing {}: {e}", self.run_dir.display());
        }
    }
}

/// Panics unless `out` is a refusal: non-zero exit and every needle on stderr (case-insensitive).
pub fn check_refused(out: &CmdOutput, needles: &[&str]) {
    assert!(!out.success(), "expected a non-zero exit: {out}");
    let stderr = out.stderr.to_lowercase();
    assert!(
        !stderr.trim().is_empty(),
        "expected a message on stderr: {out}"
    );
    for needle in needles {
        assert!(
            stderr.contains(&needle.to_lowercase()),
            "expected stderr to mention {needle:?}: {out}"
        );
    }
}

/// Removes a directory tree of pins (bpffs has no `remove_dir_all` surprises, but be explicit:
/// unlink files, then directories). Unpinning a link whose only reference is its pin detaches it.
pub fn remove_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.filter_map(Result::ok) {
            let p = entry.path();
            if p.is_dir() {
                remove_tree(&p);
            } else if let Err(e) = fs::remove_file(&p) {
                eprintln!("warning: removing {}: {e}", p.display());
            }
        }
    }
    if let Err(e) = fs::remove_dir(path) {
        eprintln!("warning: removing {}: {e}", path.display());
    }
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes. Only for failing fast: no
/// test asserts on how long anything took.
pub fn wait_for<T>(timeout: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll(timeout, Duration::from_millis(20), f)
}

/// [`wait_for`], polling every `every` (for checks that cost more, such as a daemon's status).
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
