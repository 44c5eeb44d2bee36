//! `hping3 -S -p PORT --flood --rand-source` from the peer namespace: a SYN flood by another
//! tool than the project's own generator ([`crate::flood`]), from random sources over the whole
//! IPv4 space, sent through the peer's IP stack (raw socket) instead of AF_PACKET.
//!
//! hping3 has no bound of its own in flood mode (`-c` does not stop `--flood`), so a watchdog
//! thread in the peer namespace reads the peer veth's transmit counter every few milliseconds and
//! interrupts hping3 (SIGINT, then SIGKILL) when it has sent `max_packets`, after `max_time`, on
//! [`Hping::stop`], on drop, or on [`host::interrupted`]. The packet count is the veth's: it
//! overshoots the bound by what hping3 sends between two reads.

use std::{
    net::Ipv4Addr,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    bg::collect_lines,
    flood::Stats,
    host, netns,
    pair::{NetPair, PEER_IF, dev_packets},
};

/// How often the watchdog reads the veth's counter.
const TICK: Duration = Duration::from_millis(5);
/// How long hping3 gets to exit after SIGINT before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// What to flood.
#[derive(Clone, Copy, Debug)]
pub struct HpingSpec {
    pub dst: Ipv4Addr,
    pub dst_port: u16,
    pub max_packets: u64,
    pub max_time: Duration,
}

/// A running hping3 flood; dropping it stops hping3 and waits for it.
pub struct Hping {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    join: Option<JoinHandle<Result<Stats>>>,
}

impl Hping {
    /// Starts hping3 in `pair`'s peer namespace and its watchdog; returns once the veth has
    /// carried hping3's first packets (or fails with hping3's output if it exits or sends
    /// nothing within 5 s).
    pub fn start(pair: &NetPair, spec: HpingSpec) -> Result<Self> {
        if !host::have("hping3") {
            bail!("hping3 is not installed (Debian package hping3; scripts/setup.sh installs it)");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let (thread_stop, thread_sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let ns = pair.peer.clone();
        let join = thread::Builder::new()
            .name("hping3-watchdog".into())
            .spawn(move || {
                let setup = (|| {
                    netns::enter(&ns)?;
                    let base = dev_packets(PEER_IF)?.0;
                    let child = netns::ns_command(&ns, "hping3")
                        .args(["-q", "-S", "-p", &spec.dst_port.to_string()])
                        .args(["--flood", "--rand-source", "-I", PEER_IF])
                        .arg(spec.dst.to_string())
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .context("starting hping3")?;
                    Ok((base, child))
                })();
                match setup {
                    Ok((base, child)) => {
                        watch(child, base, &spec, &thread_stop, &thread_sent, ready_tx)
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        let _ = ready_tx.send(Err(e));
                        bail!("hping3 setup failed: {msg}")
                    }
                }
            })
            .context("spawning the hping3 watchdog")?;
        let h = Self {
            stop,
            sent,
            join: Some(join),
        };
        ready_rx
            .recv()
            .context("the hping3 watchdog died before hping3 sent anything")??;
        Ok(h)
    }

    /// Packets the peer's veth carried since hping3 started.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops hping3 now and returns what it sent.
    pub fn stop(self) -> Result<Stats> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits for hping3 to reach a bound.
    pub fn wait(mut self) -> Result<Stats> {
        let join = self.join.take().context("hping3 already joined")?;
        join.join()
            .map_err(|_| anyhow!("the hping3 watchdog panicked"))?
    }
}

impl Drop for Hping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The watchdog: bounds hping3, then interrupts and reaps it.
fn watch(
    mut child: Child,
    base: u64,
    spec: &HpingSpec,
    stop: &AtomicBool,
    sent: &AtomicU64,
    ready: std::sync::mpsc::Sender<Result<()>>,
) -> Result<Stats> {
    let (out, a) = collect_lines(child.stdout.take().context("hping3 stdout")?);
    let (err, b) = collect_lines(child.stderr.take().context("hping3 stderr")?);
    let output = || {
        let lines = |v: &Arc<std::sync::Mutex<Vec<String>>>| {
            v.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
        };
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            lines(&out),
            lines(&err)
        )
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).context("hping3's pid")?);
    let start = Instant::now();
    let mut ready = Some(ready);
    let mut first: Option<Instant> = None;
    let mut early_exit = None;
    loop {
        let n = dev_packets(PEER_IF)?.0.saturating_sub(base);
        sent.store(n, Ordering::Relaxed);
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
            if let Some(r) = ready.take() {
                let _ = r.send(Ok(()));
            }
        }
        if let Some(status) = child.try_wait()? {
            early_exit = Some(status);
            break;
        }
        if ready.is_some() && start.elapsed() > Duration::from_secs(5) {
            break;
        }
        if n >= spec.max_packets
            || start.elapsed() >= spec.max_time
            || stop.load(Ordering::Relaxed)
            || host::interrupted()
        {
            break;
        }
        thread::sleep(TICK);
    }
    let end = Instant::now();
    if early_exit.is_none() {
        let _ = kill(pid, Signal::SIGINT);
        let t = Instant::now();
        while child.try_wait()?.is_none() {
            if t.elapsed() > GRACE {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = (a.join(), b.join());
    let total = dev_packets(PEER_IF)?.0.saturating_sub(base);
    sent.store(total, Ordering::Relaxed);
    if let Some(r) = ready.take() {
        let msg = format!(
            "hping3 sent nothing within 5 s (exit: {early_exit:?})\n{}",
            output()
        );
        let _ = r.send(Err(anyhow!("{msg}")));
        bail!("{msg}");
    }
    if let Some(status) = early_exit {
        bail!(
            "hping3 exited by itself ({status}) before its bounds\n{}",
            output()
        );
    }
    Ok(Stats {
        sent: total,
        busy: 0,
        elapsed: end.duration_since(first.unwrap_or(start)),
    })
}
