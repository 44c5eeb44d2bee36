//! The host side of a run: commands and their output, CPU affinity and scheduling, threads and
//! processes in /proc, and the interrupt flag that lets Ctrl-C unwind through cleanup guards.

use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag ([`interrupted`]), so that a long run stops at its next
/// check and every guard (namespaces, pins) still cleans up.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install_signal_handlers`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `program` is an executable on `$PATH` (or, if it names a path, exists).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion: its stdout on success, an error naming it and quoting its
/// stderr otherwise.
pub fn run(cmd: &mut Command) -> Result<String> {
    run_with_input(cmd, None)
}

/// [`run`] with `input` on the command's stdin.
pub fn run_with_input(cmd: &mut Command, input: Option<&str>) -> Result<String> {
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
        .with_context(|| format!("failed to start `{shown}` (is it installed?)"))?;
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

/// Runs `program args…` (with `input` on its stdin) and returns its stdout; panics with its
/// stderr if it cannot start or fails.
pub fn must(program: &str, args: &[&str], input: Option<&str>) -> String {
    run_with_input(Command::new(program).args(args), input).unwrap_or_else(|e| panic!("{e:#}"))
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
