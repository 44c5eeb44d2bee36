//! Background `lockdown` processes for the end-to-end tests: output collected line by line,
//! bounded waits, signals, and a kill-and-reap on drop.

use std::{
    fs,
    io::{self, BufRead as _, BufReader},
    process::{Child, ExitStatus},
    sync::{Arc, Mutex},
    thread::{self, JoinHandle},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::cli::{Lockdown, wait_for};

/// A background `lockdown` process whose output is collected line by line; killed (SIGKILL) and
/// reaped on drop if still running.
pub struct Bg {
    what: String,
    pub child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

pub fn collect_lines(
    stream: impl io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let handle = thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
    (lines, handle)
}

impl Bg {
    pub fn spawn(ld: &Lockdown, args: &[&str]) -> Self {
        let mut child = ld.spawn(args);
        let (stdout, a) = collect_lines(child.stdout.take().expect("piped stdout"));
        let (stderr, b) = collect_lines(child.stderr.take().expect("piped stderr"));
        Self {
            what: format!("lockdown {}", args.join(" ")),
            child,
            stdout,
            stderr,
            readers: vec![a, b],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pid fits i32"));
        nix::sys::signal::kill(pid, sig)
            .unwrap_or_else(|e| panic!("sending {sig} to `{}`: {e}", self.what));
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout of `{}` ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.stdout_lines().join("\n"),
            self.stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n")
        )
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until a stdout line contains `needle`; panics if the process exits first.
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) {
        let found = wait_for(timeout, || {
            if self.stdout_lines().iter().any(|l| l.contains(needle)) {
                return Some(true);
            }
            (!self.running()).then_some(false)
        });
        match found {
            Some(true) => {}
            Some(false) => {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "`{}` exited before printing {needle:?}\n{}",
                    self.what,
                    self.output()
                );
            }
            None => panic!(
                "`{}` did not print {needle:?} within {timeout:?}\n{}",
                self.what,
                self.output()
            ),
        }
    }

    /// Waits (bounded) for the process to exit, then for its output to be read to the end.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let status =
            wait_for(timeout, || self.child.try_wait().ok().flatten()).unwrap_or_else(|| {
                panic!(
                    "`{}` did not exit within {timeout:?}\n{}",
                    self.what,
                    self.output()
                )
            });
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        status
    }

    /// Whether the process holds a BPF map open (the ring buffer, for `log`).
    pub fn holds_bpf_map(&self) -> bool {
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return false;
        };
        fds.filter_map(Result::ok).any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy().contains("anon_inode:bpf-map"))
        })
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// Runs `lockdown log --count COUNT --json` on the CLI's interface, runs `trigger` once the reader
/// holds the ring buffer, and returns the events it printed, parsed. Panics (with the reader's
/// output) if it exits early, never opens the ring, fails, or prints other than `count` events.
pub fn log_events(ld: &Lockdown, count: usize, trigger: impl FnOnce()) -> Vec<serde_json::Value> {
    let n = count.to_string();
    let mut log = Bg::spawn(ld, &["log", "--iface", &ld.iface, "--count", &n, "--json"]);
    wait_for(Duration::from_secs(10), || {
        assert!(log.running(), "`log` exited early\n{}", log.output());
        log.holds_bpf_map().then_some(())
    })
    .unwrap_or_else(|| panic!("`log` never opened the ring buffer\n{}", log.output()));
    trigger();
    let status = log.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "`log --count {count}` exited with {status}\n{}",
        log.output()
    );
    let lines = log.stdout_lines();
    assert_eq!(
        lines.len(),
        count,
        "expected {count} events\n{}",
        log.output()
    );
    lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("a log line is not JSON ({err}): {line}"))
        })
        .collect()
}
