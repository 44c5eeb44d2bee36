//! `cargo xtask demo`: lockdown in a throw-away two-namespace sandbox.
//!
//! ```text
//!   ld-demo-peer                         ld-demo-origin
//!   ldd1 10.231.0.2 fd00:231::2  <--->   ldd0 10.231.0.1 fd00:231::1   (lockdown on ldd0)
//!                                        listeners: tcp/22, tcp/8080
//! ```
//!
//! Everything inside a namespace runs under `nsenter --net=/run/netns/NAME`, never
//! `ip netns exec`, which remounts /sys and so hides the bpffs pins. The [`Sandbox`] guard
//! detaches lockdown, stops the listeners and deletes both namespaces on every exit path.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Parser;

use crate::util::{
    build_lockdown, display, ensure_bpffs, exec_within, require_root, status_within,
};

const ORIGIN_NS: &str = "ld-demo-origin";
const PEER_NS: &str = "ld-demo-peer";
const ORIGIN_IF: &str = "ldd0";
const PEER_IF: &str = "ldd1";
const ORIGIN_V4: &str = "10.231.0.1";
const PEER_V4: &str = "10.231.0.2";
const ORIGIN_V6: &str = "fd00:231::1";
const PEER_V6: &str = "fd00:231::2";
const PORTS: [u16; 2] = [22, 8080];

/// Limit for `ip` and other quick set-up commands.
const QUICK: Duration = Duration::from_secs(10);
/// Limit for one lockdown command (loading and attaching the programs included).
const LOCKDOWN: Duration = Duration::from_secs(20);
/// Connect timeout of one probe, in seconds (`nc -w`). A dropped SYN costs this much.
const PROBE_WAIT_SECS: u64 = 2;
/// How long to wait for the listeners to answer before lockdown is attached.
const READY: Duration = Duration::from_secs(5);

#[derive(Parser)]
pub(crate) struct Options {
    /// Use the release build of lockdown.
    #[arg(long)]
    pub release: bool,
}

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("`cargo xtask demo`")?;
    println!("==> building lockdown");
    let bin = build_lockdown(opts.release)?;
    ensure_bpffs()?;

    let started = Instant::now();
    let mut sandbox = Sandbox::create(bin)?;
    sandbox.demo()?;
    sandbox.teardown();
    println!(
        "==> demo finished in {:.1} s: tcp/22 stayed open, tcp/8080 was dropped until allowed",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// `nsenter --net=/run/netns/NS -- program`.
fn in_ns(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns).display()))
        .arg("--")
        .arg(program);
    cmd
}

fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    exec_within(in_ns(ns, "ip").args(args), QUICK)
}

/// The namespaces, veth pair, listeners and (once attached) lockdown. Dropping it undoes all.
struct Sandbox {
    lockdown: PathBuf,
    listeners: Vec<Child>,
    /// Set just before `lockdown up`, so that a half-done attach is also taken down.
    attached: bool,
    torn_down: bool,
}

impl Sandbox {
    fn create(lockdown: PathBuf) -> anyhow::Result<Self> {
        for ns in [ORIGIN_NS, PEER_NS] {
            if netns_path(ns).exists() {
                println!("==> removing namespace {ns} left over from an earlier run");
                exec_within(Command::new("ip").args(["netns", "del", ns]), QUICK)?;
            }
        }
        // From here on, Drop cleans up whatever was made.
        let mut sandbox = Self {
            lockdown,
            listeners: Vec::new(),
            attached: false,
            torn_down: false,
        };

        println!("==> creating namespaces {ORIGIN_NS} and {PEER_NS}");
        for ns in [ORIGIN_NS, PEER_NS] {
            exec_within(Command::new("ip").args(["netns", "add", ns]), QUICK)?;
        }

        println!("==> veth pair {ORIGIN_IF} ({ORIGIN_NS}) <-> {PEER_IF} ({PEER_NS})");
        exec_within(
            Command::new("ip").args([
                "link", "add", ORIGIN_IF, "netns", ORIGIN_NS, "type", "veth", "peer", "name",
                PEER_IF, "netns", PEER_NS,
            ]),
            QUICK,
        )?;
        for (ns, dev, v4, v6) in [
            (ORIGIN_NS, ORIGIN_IF, ORIGIN_V4, ORIGIN_V6),
            (PEER_NS, PEER_IF, PEER_V4, PEER_V6),
        ] {
            ip_in(ns, &["link", "set", "lo", "up"])?;
            ip_in(ns, &["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            // nodad: usable at once, no 1-2 s duplicate address detection.
            ip_in(
                ns,
                &["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"],
            )?;
            ip_in(ns, &["link", "set", dev, "up"])?;
        }

        println!("==> listeners in {ORIGIN_NS} on tcp/22 and tcp/8080 (IPv4 and IPv6)");
        for port in PORTS {
            for addr in [ORIGIN_V4, ORIGIN_V6] {
                let mut cmd = in_ns(ORIGIN_NS, "nc");
                cmd.args(["-dlkn", addr, &port.to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                println!("$ {} &", display(&cmd));
                sandbox.listeners.push(cmd.spawn()?);
            }
        }
        Ok(sandbox)
    }

    fn demo(&mut self) -> anyhow::Result<()> {
        println!("==> before lockdown: every port answers from {PEER_NS}");
        self.wait_ready()?;

        println!("==> attaching lockdown to {ORIGIN_IF} with the default allowlist (tcp/22)");
        self.attached = true;
        self.lockdown(&["up", "--iface", ORIGIN_IF])?;

        println!("==> tcp/22 must connect; tcp/8080 must time out (its SYN is dropped)");
        for addr in [ORIGIN_V4, ORIGIN_V6] {
            expect(addr, 22, true)?;
            expect(addr, 8080, false)?;
        }

        println!("==> opening tcp/8080 live, without reattaching");
        self.lockdown(&["allow", "add", "tcp/8080", "--iface", ORIGIN_IF])?;
        for addr in [ORIGIN_V4, ORIGIN_V6] {
            expect(addr, 8080, true)?;
            expect(addr, 22, true)?;
        }

        println!("==> lockdown status");
        self.lockdown(&["status", "--iface", ORIGIN_IF])?;

        println!("==> detaching lockdown");
        self.lockdown(&["down", "--iface", ORIGIN_IF])?;
        self.attached = false;
        Ok(())
    }

    /// Runs lockdown inside the origin namespace. The sandbox serves no SSH session, so the
    /// caller's own `$SSH_CONNECTION` (whose port the demo policy may not allow) is not passed on
    /// to the lockout guard.
    fn lockdown(&self, args: &[&str]) -> anyhow::Result<()> {
        exec_within(
            in_ns(ORIGIN_NS, &self.lockdown)
                .args(args)
                .env_remove("SSH_CONNECTION"),
            LOCKDOWN,
        )
    }

    /// Waits until each listener accepts a connection from the peer (no lockdown yet).
    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY;
        for port in PORTS {
            for addr in [ORIGIN_V4, ORIGIN_V6] {
                loop {
                    if probe(addr, port, 1)? {
                        println!("    ok: {} is open", target(addr, port));
                        break;
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "{} never answered within {} s, before lockdown was even attached",
                            target(addr, port),
                            READY.as_secs()
                        );
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
        Ok(())
    }

    /// Detaches lockdown if needed, stops the listeners, deletes the namespaces. Best effort:
    /// reports problems but keeps going, so that as much as possible is removed.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        println!("==> cleaning up");
        if self.attached {
            if let Err(e) = self.lockdown(&["down", "--iface", ORIGIN_IF]) {
                eprintln!("    warning: {e:#}");
            }
            self.attached = false;
        }
        for mut child in self.listeners.drain(..) {
            // Our own children: kill by handle, then reap.
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting the origin namespace destroys the veth pair (both ends) with it.
        for ns in [ORIGIN_NS, PEER_NS] {
            if netns_path(ns).exists()
                && let Err(e) = exec_within(Command::new("ip").args(["netns", "del", ns]), QUICK)
            {
                eprintln!("    warning: {e:#}");
            }
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn target(addr: &str, port: u16) -> String {
    if addr.contains(':') {
        format!("tcp/{port} on [{addr}]")
    } else {
        format!("tcp/{port} on {addr}")
    }
}

/// Tries one TCP connect from the peer namespace; true if it was accepted.
fn probe(addr: &str, port: u16, wait_secs: u64) -> anyhow::Result<bool> {
    let mut cmd = in_ns(PEER_NS, "nc");
    cmd.args(["-zn", "-w", &wait_secs.to_string(), addr, &port.to_string()])
        .stdin(Stdio::null());
    let status = status_within(&mut cmd, Duration::from_secs(wait_secs + 3))?;
    Ok(status.success())
}

/// Probes and fails unless the outcome is the expected one.
fn expect(addr: &str, port: u16, open: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let got = probe(addr, port, PROBE_WAIT_SECS)?;
    let took = started.elapsed().as_secs_f64();
    let what = target(addr, port);
    match (got, open) {
        (true, true) => println!("    ok: {what} connected, as expected"),
        (false, false) => println!("    ok: {what} timed out after {took:.1} s, as expected"),
        (true, false) => bail!("{what} connected, but lockdown should have dropped it"),
        (false, true) => bail!("{what} did not connect within {PROBE_WAIT_SECS} s"),
    }
    Ok(())
}
