//! Network namespaces: named ones under `/run/netns` (made and deleted here, entered by a thread
//! or by a command), and private ones that a thread unshares for itself.
//!
//! Commands run in a named namespace through `nsenter --net=/run/netns/NAME -- …`, never through
//! `ip netns exec`: the latter remounts `/sys` in its private mount namespace, which would hide
//! the bpffs pins the tests inspect. Rust socket code runs on a thread that `setns`es into the
//! namespace ([`in_ns`]); a socket stays in the namespace it was made in, so the sockets such a
//! thread returns can be used from any thread afterwards.

use std::{
    ffi::OsStr,
    fs::File,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns, unshare};

use crate::host;

/// `/run/netns/NAME`.
pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Makes namespace `ns` (`ip netns add`), deleting a leftover of the same name first.
pub fn add(ns: &str) -> Result<()> {
    if netns_path(ns).exists() {
        let _ = del(ns);
    }
    host::run(Command::new("ip").args(["netns", "add", ns])).map(drop)
}

/// Deletes namespace `ns` (`ip netns del`), with the devices and attachments in it.
pub fn del(ns: &str) -> Result<()> {
    host::run(Command::new("ip").args(["netns", "del", ns])).map(drop)
}

/// Moves the calling thread into namespace `ns`.
pub fn enter(ns: &str) -> Result<()> {
    let path = netns_path(ns);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // The network namespace is per thread: only this thread moves.
    setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {ns}"))
}

/// Runs `f` on a fresh thread inside namespace `ns` and returns its result; a panic in `f`
/// propagates, and so does one for a namespace that cannot be entered.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        let worker = thread::Builder::new()
            .name(format!("in-{ns}"))
            .spawn_scoped(s, || {
                enter(ns).unwrap_or_else(|e| panic!("{e:#}"));
                f()
            })
            .unwrap_or_else(|e| panic!("spawning a thread for {ns}: {e}"));
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`in_ns`] for fallible work: an error if the namespace cannot be entered, if `f` fails or if
/// it panics.
pub fn try_in_ns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in netns {ns} panicked"))?
    })
}

/// A `Command` that runs `program` in namespace `ns` through nsenter (which, unlike `ip netns
/// exec`, keeps the host's /sys and so the bpffs pins).
pub fn ns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `program args…` in `ns` and returns its output (panics only if it cannot be started).
pub fn ns_run(ns: &str, program: &str, args: &[&str]) -> Output {
    ns_command(ns, program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running `nsenter --net=… -- {program} {}` in {ns}: {e}",
                args.join(" ")
            )
        })
}

/// Runs `program args…` in `ns` and returns its stdout; panics with its stderr if it fails.
pub fn ns_must(ns: &str, program: &str, args: &[&str]) -> String {
    let out = ns_run(ns, program, args);
    assert!(
        out.status.success(),
        "`{program} {}` in {ns} failed ({}): {}",
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

/// Writes `value` to `/sys/<rel>` as seen from namespace `ns`.
///
/// /sys/class/net shows the devices of the namespace that mounted that sysfs, so a device inside
/// another namespace is only reachable through a sysfs mounted from there: nsenter into the
/// namespace, unshare a private mount namespace (so the host's /sys is untouched and the mount
/// dies with the process), and mount a fresh sysfs over /sys.
pub fn sysfs_write(ns: &str, rel: &str, value: &str) -> Result<()> {
    let script =
        format!("mount -t sysfs sysfs /sys && echo {value} > /sys/{rel} && cat /sys/{rel}");
    let mut cmd = ns_command(ns, "unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let back =
        host::run(&mut cmd).with_context(|| format!("writing {value} to /sys/{rel} in {ns}"))?;
    let back = back.trim();
    // rps_cpus reads back as a zero-padded hex mask; compare numerically when both are hex.
    let same = back == value
        || u64::from_str_radix(back.replace(',', "").as_str(), 16).ok()
            == u64::from_str_radix(value, 16).ok();
    if !same {
        bail!("/sys/{rel} in {ns} reads back {back:?} after writing {value:?}");
    }
    Ok(())
}

/// A per-namespace sysctl (`/proc/sys/<rel>`) as seen from namespace `ns`.
pub fn sysctl(ns: &str, rel: &str) -> Result<String> {
    let path = format!("/proc/sys/{rel}");
    try_in_ns(ns, || {
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("reading {path}"))
    })
}

/// Writes a per-namespace sysctl (`/proc/sys/<rel>`) inside namespace `ns`.
pub fn sysctl_write(ns: &str, rel: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{rel}");
    try_in_ns(ns, || {
        std::fs::write(&path, value).with_context(|| format!("writing {value} to {path} in {ns}"))
    })
}

/// Whether `path` is on a mounted bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// Panics with a clear message unless the end-to-end tests can run here: root, `ip`, `nsenter`,
/// `ping` and a bpffs at `/sys/fs/bpf`. The tests never skip silently.
pub fn require_environment() {
    assert!(
        host::is_root(),
        "the end-to-end tests need root (they create network namespaces and load BPF programs); \
         run them as root, e.g. `sudo -E cargo test -p lockdown-tests --test e2e -- --test-threads=1`"
    );
    for program in ["ip", "nsenter", "ping"] {
        assert!(
            host::have(program),
            "the end-to-end tests need `{program}` on PATH (packages iproute2, util-linux, iputils-ping)"
        );
    }
    assert!(
        is_bpffs(Path::new("/sys/fs/bpf")),
        "the end-to-end tests need a bpffs at /sys/fs/bpf; mount it with `mount -t bpf bpf /sys/fs/bpf`"
    );
}

/// The namespace of the calling thread, as `net:[inode]`.
fn thread_netns() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("reading /proc/thread-self/ns/net")
        .to_string_lossy()
        .into_owned()
}

/// Runs `f` on a thread that `unshare(CLONE_NEWNET)`s into a namespace of its own with `lo` up;
/// panics in `f` propagate. `what` names the test binary for the message when not root.
///
/// The thread checks that it moved before it runs anything: the commands it spawns inherit its
/// namespace. The namespace has no name and no mount: it lives as long as the thread and the
/// sockets opened in it, so it is gone when the test ends, however it ends; there is nothing to
/// delete.
pub fn in_private_netns<T: Send>(what: &str, f: impl FnOnce() -> T + Send) -> T {
    assert!(
        host::is_root(),
        "the {what} tests need root (they create network namespaces); run them as root: \
         `cargo test -p lockdown-user --test {what}`"
    );
    thread::scope(|s| {
        s.spawn(|| {
            let host_ns = thread_netns();
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
            let own = thread_netns();
            assert_ne!(
                own, host_ns,
                "unshare did not move the thread to a new network namespace"
            );
            // A spawned command must land in this namespace, never in the host's.
            let out = Command::new("readlink")
                .arg("/proc/self/ns/net")
                .output()
                .expect("running readlink");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                own,
                "a spawned command is not in the test's network namespace; refusing to go on"
            );
            host::must("ip", &["link", "set", "lo", "up"], None);
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// SIGKILLs every process but this one whose network namespace is `ns` (what a daemon left
/// behind, such as an sshd session or a backgrounded ssh client); returns how many.
pub fn kill_processes(ns: &str) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(ns_ino) = std::fs::metadata(netns_path(ns)).map(|m| m.ino()) else {
        return 0;
    };
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != me))
    {
        if std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ns_ino) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}
