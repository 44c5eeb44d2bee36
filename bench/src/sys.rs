//! Small system helpers: commands, network namespaces, CPU affinity, /proc readers and the
//! interrupt flag that lets Ctrl-C unwind through the cleanup guards.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag, so that the run stops at the next check and every guard
/// (namespaces, pins) still cleans up.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails if SIGINT/SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, but fails early if interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = std::time::Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = std::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// CPUs online (not limited by this thread's affinity).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `set` is a valid cpu_set_t and `c` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pins a thread (`tid`, or the calling thread for 0) to `cpus`.
pub fn pin(tid: libc::pid_t, cpus: &[usize]) -> Result<()> {
    let set = cpu_set(cpus);
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("sched_setaffinity({tid}, {cpus:?})"));
    }
    Ok(())
}

/// Makes the calling thread SCHED_IDLE: it gets every cycle nobody else wants, and yields at once
/// to anything else that wakes on its CPU.
pub fn make_sched_idle() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param for SCHED_IDLE, applied to the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setscheduler(SCHED_IDLE)");
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `/run/netns/NAME`.
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let f = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: a valid namespace fd; CLONE_NEWNET affects only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the network namespace `ns` and returns its result. Sockets
/// made there stay in that namespace and may be used from any thread afterwards.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
    })
}

/// `Command` for `program` inside the network namespace `ns`, via nsenter (which, unlike
/// `ip netns exec`, keeps the host's /sys and so the bpffs pins).
pub fn ns_command(ns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    c
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; its stdout on success, an error naming it and quoting its
/// stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// [`run`] with `input` on the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    use std::io::Write as _;
    let shown = display(cmd);
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{shown}`"))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().context("child stdin")?;
        stdin
            .write_all(text.as_bytes())
            .with_context(|| format!("writing to `{shown}`"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on `$PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Writes `value` to `/sys/<rel>` as seen from the network namespace `ns`.
///
/// /sys/class/net shows the devices of the namespace that mounted that sysfs, so a device inside
/// another namespace is only reachable through a sysfs mounted from there: nsenter into the
/// namespace, unshare a private mount namespace (so the host's /sys is untouched and the mount
/// dies with the process), and mount a fresh sysfs over /sys.
pub fn ns_sysfs_write(ns: &str, rel: &str, value: &str) -> Result<()> {
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
    let back = run(&mut cmd).with_context(|| format!("writing {value} to /sys/{rel} in {ns}"))?;
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

/// One CPU's times from /proc/stat, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTime {
    /// system + irq + softirq. Sampled by the tick: a tick counts for whatever it interrupted.
    pub kernel: u64,
    /// idle + iowait. Exact under NO_HZ (accumulated at idle exit and irq entry), shown in ticks.
    pub idle: u64,
}

/// Per-CPU times, indexed by CPU number.
pub fn cpu_times() -> Result<Vec<CpuTime>> {
    let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut out = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let Some((idx, fields)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue; // the "cpu" total line
        };
        let v: Vec<u64> = fields
            .split_whitespace()
            .map(|f| f.parse().context("parsing /proc/stat"))
            .collect::<Result<_>>()?;
        if v.len() < 7 {
            bail!("short /proc/stat line: {line}");
        }
        if out.len() <= idx {
            out.resize(idx + 1, CpuTime::default());
        }
        out[idx] = CpuTime {
            kernel: v[2] + v[5] + v[6],
            idle: v[3] + v[4],
        };
    }
    Ok(out)
}

/// A cycle soaker: a SCHED_IDLE thread on one CPU that counts units of busy work. Anything else
/// that runs on that CPU (interrupts, softirqs, kernel threads) preempts it at once, so the work
/// it loses against its idle rate is the CPU time everything else took. It also keeps the CPU out
/// of its idle state, so wake-from-idle costs (a VM exit per wake-up here) stay out of the
/// figures, as on a core that a flood keeps busy.
pub struct Soaker {
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<AtomicBool>,
    join: Option<thread::JoinHandle<()>>,
}

impl Soaker {
    pub fn start(cpu: usize) -> Result<Self> {
        use std::sync::{Arc, atomic::AtomicU64};
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&count), Arc::clone(&stop));
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let join = thread::Builder::new()
            .name("soaker".into())
            .spawn(move || {
                let setup = pin(0, &[cpu]).and_then(|()| make_sched_idle());
                let ok = setup.is_ok();
                let _ = tx.send(setup);
                if !ok {
                    return;
                }
                let mut x = 1u64;
                while !st.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                        );
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                }
            })
            .context("spawning the soaker")?;
        rx.recv().context("the soaker thread died")??;
        Ok(Self {
            count,
            stop,
            join: Some(join),
        })
    }

    /// Units of work done so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Soaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Ticks per second of /proc/stat.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

/// Interface counters from /proc/net/dev.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Counters of `iface` inside namespace `ns`.
pub fn dev_stats(ns: &str, iface: &str) -> Result<DevStats> {
    let text = in_netns(ns, || {
        fs::read_to_string("/proc/thread-self/net/dev").context("reading /proc/net/dev")
    })?;
    for line in text.lines().skip(2) {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != iface {
            continue;
        }
        let v: Vec<u64> = fields
            .split_whitespace()
            .map(|f| f.parse().context("parsing /proc/net/dev"))
            .collect::<Result<_>>()?;
        if v.len() < 12 {
            bail!("short /proc/net/dev line: {line}");
        }
        return Ok(DevStats {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        });
    }
    bail!("no interface {iface} in namespace {ns}")
}

/// A per-namespace sysctl (`/proc/sys/<rel>`) as seen from namespace `ns`.
pub fn ns_sysctl(ns: &str, rel: &str) -> Result<String> {
    let path = format!("/proc/sys/{rel}");
    in_netns(ns, || {
        fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .with_context(|| format!("reading {path}"))
    })
}

/// Writes a per-namespace sysctl (`/proc/sys/<rel>`) inside namespace `ns`.
pub fn ns_sysctl_write(ns: &str, rel: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{rel}");
    in_netns(ns, || {
        fs::write(&path, value).with_context(|| format!("writing {value} to {path} in {ns}"))
    })
}

/// Threads whose name starts with `prefix`: (tid, name).
pub fn threads_named(prefix: &str) -> Result<Vec<(libc::pid_t, String)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if comm.starts_with(prefix) {
            out.push((pid, comm.to_owned()));
        }
    }
    Ok(out)
}

/// Whether process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// `kernel.osrelease`.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().into())
}

/// The model name of CPU 0, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "?".into())
}

/// Parses `key value` lines (fdinfo and similar) into a map.
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
