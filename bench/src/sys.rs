//! What only the bench reads of the system: CPU times, interface counters and the machine's
//! description from /proc, the cycle soaker, and interruptible waits (the commands, namespaces,
//! CPU pinning and the interrupt flag itself are `lockdown_testbed::host` and `netns`).

use std::{
    collections::BTreeMap,
    fs,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use lockdown_testbed::{host, netns};

/// Fails if SIGINT/SIGTERM arrived.
pub(crate) fn check_interrupted() -> Result<()> {
    if host::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, but fails early if interrupted.
pub(crate) fn sleep(d: Duration) -> Result<()> {
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

/// CPUs online (not limited by this thread's affinity).
pub(crate) fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// One CPU's times from /proc/stat, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuTime {
    /// system + irq + softirq. Sampled by the tick: a tick counts for whatever it interrupted.
    pub kernel: u64,
    /// idle + iowait. Exact under NO_HZ (accumulated at idle exit and irq entry), shown in ticks.
    pub idle: u64,
}

/// Per-CPU times, indexed by CPU number.
pub(crate) fn cpu_times() -> Result<Vec<CpuTime>> {
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
pub(crate) struct Soaker {
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<AtomicBool>,
    join: Option<thread::JoinHandle<()>>,
}

impl Soaker {
    pub(crate) fn start(cpu: usize) -> Result<Self> {
        use std::sync::{Arc, atomic::AtomicU64};
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&count), Arc::clone(&stop));
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let join = thread::Builder::new()
            .name("soaker".into())
            .spawn(move || {
                let setup = host::pin(0, &[cpu]).and_then(|()| host::make_sched_idle());
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
    pub(crate) fn count(&self) -> u64 {
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
pub(crate) fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100).max(1)
}

/// Interface counters from /proc/net/dev.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DevStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Counters of `iface` inside namespace `ns`.
pub(crate) fn dev_stats(ns: &str, iface: &str) -> Result<DevStats> {
    let text = netns::try_in_ns(ns, || {
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

/// `kernel.osrelease`.
pub(crate) fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().into())
}

/// The model name of CPU 0, from /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
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
pub(crate) fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}
