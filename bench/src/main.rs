//! lockdown-bench: the benchmarks behind `cargo xtask bench` (issue 6).
//!
//! 1. Program cost per path through BPF_PROG_TEST_RUN, against the bare XDP_DROP / XDP_PASS
//!    programs of the same object.
//! 2. Receive CPU per packet on a veth under a spoofed SYN flood, for no filter, the seed
//!    iptables chain, the same in nftables, lockdown (skb and native) and the bare XDP_DROP.
//! 3. State under attack: flow entries a spoofed SYN flood leaves behind, and the latency of an
//!    established connection during it.
//! 4. Memory: bytes per flow entry and the kernel memlock of every map.
//! 5. State under legit load: connections accepted on an allowed port, many times the flow
//!    table's capacity, must take no flow entry and evict none of the origin's own flows.
//! 6. SYN cookies: receive CPU per flood SYN answered with a cookie against one dropped at a
//!    closed port (and the kernel's own answer beside them), and real SSH logins during a
//!    full-speed flood with cookies on and off, with and without a strict rate.
//!
//! Writes RESULTS.md, results.json and chart.svg into `--out`. Needs root. Targets are reported,
//! never asserted; setup errors fail the run. Namespaces and pins are removed on every exit path
//! that unwinds (errors, panics, Ctrl-C).

mod attack;
mod chart;
mod filters;
mod legit;
mod memory;
mod progcost;
mod raw;
mod report;
mod rxcpu;
mod stats;
mod syncookies;
mod sys;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};
use lockdown_testbed::{host, pair};

use crate::{filters::Filter, report::Results};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    Program,
    Rx,
    Attack,
    Memory,
    /// State under legit load (also accepted as `legit-load`).
    #[value(alias = "legit-load")]
    Legit,
    /// SYN cookies: receive CPU per cookie-answered SYN, logins during a flood (`syn-cookies`).
    SynCookies,
}

/// Benchmarks lockdown: program cost, receive CPU per packet, state under attack, memory, state
/// under legit load, SYN cookies.
#[derive(Debug, Parser)]
// A later option overrides an earlier one: `cargo xtask bench` passes `--out bench` before the
// arguments given after `--`, so `-- --out DIR` must win.
#[command(name = "lockdown-bench", args_override_self = true)]
struct Cli {
    /// A short smoke run: fewer repeats, rounds and packets.
    #[arg(long)]
    quick: bool,
    /// Directory for RESULTS.md, results.json and chart.svg.
    #[arg(long, default_value = "bench")]
    out: PathBuf,
    /// The lockdown CLI (default: `lockdown` next to this binary).
    #[arg(long)]
    lockdown: Option<PathBuf>,
    /// Sections to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Filters of the receive-CPU section (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    filters: Vec<Filter>,
    /// Rounds of the receive-CPU section (default: 3, or 1 with --quick).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per flood in the receive-CPU section (default: 5, or 1 with --quick).
    #[arg(long)]
    flood_secs: Option<f64>,
}

/// Removes the private pin root (and anything left in it) on every exit path.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        if self.0.exists()
            && let Err(e) = fs::remove_dir_all(&self.0)
        {
            eprintln!(
                "lockdown-bench: warning: removing {}: {e}",
                self.0.display()
            );
        }
    }
}

/// Pin roots of bench runs that no longer exist.
fn remove_stale_pin_roots() {
    let Ok(dir) = fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("ldbench-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !host::pid_alive(pid) {
            eprintln!("lockdown-bench: removing stale pin root /sys/fs/bpf/{name}");
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn preflight(cli: &Cli, lockdown: &Path, sections: &[Section]) -> Result<()> {
    if !host::is_root() {
        bail!(
            "lockdown-bench must run as root: it loads BPF programs and creates network namespaces"
        );
    }
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        bail!("no bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf, or run `cargo xtask bench`)");
    }
    let net = sections.iter().any(|s| {
        matches!(
            s,
            Section::Rx | Section::Attack | Section::Legit | Section::SynCookies
        )
    });
    if net {
        if sys::online_cpus() < 2 {
            bail!("the receive sections need at least 2 CPUs (generator on CPU0, receive on CPU1)");
        }
        for tool in ["ip", "nsenter", "unshare", "mount", "iptables", "nft"] {
            if !host::have(tool) {
                bail!(
                    "`{tool}` is not installed; the receive sections need it (scripts/setup.sh installs the packages)"
                );
            }
        }
        if !lockdown.is_file() {
            bail!(
                "lockdown CLI not found at {} (build it: cargo build --release -p lockdown-user)",
                lockdown.display()
            );
        }
    }
    if sections.contains(&Section::SynCookies) {
        for (tool, package) in [
            (lockdown_testbed::ssh::SSHD, "openssh-server"),
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
            ("timeout", "coreutils"),
            ("ss", "iproute2"),
        ] {
            if !host::have(tool) {
                bail!(
                    "`{tool}` is not installed; the SYN-cookie section needs it (Debian package {package}; scripts/setup.sh installs it)"
                );
            }
        }
    }
    if cli.out.exists() && !cli.out.is_dir() {
        bail!("--out {} is not a directory", cli.out.display());
    }
    Ok(())
}

fn tool_version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map_or_else(
            || "not installed".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn commit(out: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(out)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} (with uncommitted changes)")
    } else {
        head
    }
}

fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map_or_else(
            || "?".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn run(cli: &Cli) -> Result<()> {
    let started = Instant::now();
    let sections = if cli.only.is_empty() {
        vec![
            Section::Program,
            Section::Rx,
            Section::Attack,
            Section::Memory,
            Section::Legit,
            Section::SynCookies,
        ]
    } else {
        cli.only.clone()
    };
    let lockdown = match &cli.lockdown {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("lockdown"),
    };
    preflight(cli, &lockdown, &sections)?;
    host::install_signal_handlers();
    // Everything of the bench runs on the generator's CPU (threads inherit this), so that the
    // receive CPU does only the origin's receive work.
    host::pin(0, &[pair::GEN_CPU])?;
    pair::remove_stale();
    remove_stale_pin_roots();
    let pin_root = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/ldbench-{}",
        std::process::id()
    )));
    let env = filters::Env {
        lockdown: fs::canonicalize(&lockdown).unwrap_or(lockdown),
        pin_root: pin_root.0.clone(),
    };
    let quick = cli.quick;
    let big_table = if quick { 1 << 18 } else { 1 << 20 };

    let program_cost = if sections.contains(&Section::Program) {
        Some(progcost::run(&progcost::Options {
            repeat: if quick { 100_000 } else { 1_000_000 },
            reps: if quick { 3 } else { 7 },
            small_table: 1 << 10,
            big_table,
        })?)
    } else {
        None
    };
    // Rounds and flood length of the two receive-CPU measurements (sections 2 and 6).
    let rounds = cli.rounds.unwrap_or(if quick { 1 } else { 3 });
    let flood = Duration::from_secs_f64(cli.flood_secs.unwrap_or(if quick { 1.0 } else { 5.0 }));
    let receive_cpu = if sections.contains(&Section::Rx) {
        Some(rxcpu::run(
            &rxcpu::Options {
                rounds,
                flood,
                max_packets: 50_000_000,
                filters: if cli.filters.is_empty() {
                    Filter::ALL.to_vec()
                } else {
                    cli.filters.clone()
                },
            },
            &env,
        )?)
    } else {
        None
    };
    let attack = if sections.contains(&Section::Attack) {
        Some(attack::run(
            &attack::Options {
                packets: if quick { 200_000 } else { 1_000_000 },
                max_time: Duration::from_secs(30),
                round_trips: if quick { 50 } else { 200 },
                filters: vec![Filter::Unfiltered, Filter::Iptables, Filter::LockdownNative],
            },
            &env,
        )?)
    } else {
        None
    };
    let memory = if sections.contains(&Section::Memory) {
        Some(memory::run(big_table)?)
    } else {
        None
    };
    let legit = if sections.contains(&Section::Legit) {
        Some(legit::run(
            &legit::Options {
                outbound: 64,
                duration: Duration::from_secs(if quick { 3 } else { 10 }),
                max_connections: if quick { 150_000 } else { 500_000 },
                parallel: 4,
                iptables: true,
                quick,
            },
            &env,
        )?)
    } else {
        None
    };
    let syn_cookies = if sections.contains(&Section::SynCookies) {
        Some(syncookies::run(
            &syncookies::Options {
                rounds,
                flood,
                max_packets: 50_000_000,
                logins: if quick { 5 } else { 10 },
                login_flood: Duration::from_secs(30),
                login_flood_packets: 20_000_000,
            },
            &env,
        )?)
    } else {
        None
    };
    drop(pin_root);

    let targets = report::targets(
        program_cost.as_ref(),
        receive_cpu.as_ref(),
        attack.as_ref(),
        memory.as_ref(),
        legit.as_ref(),
        syn_cookies.as_ref(),
    );
    let results = Results {
        meta: report::Meta {
            date_utc: date_utc(),
            kernel: sys::kernel_release(),
            cpu_model: sys::cpu_model(),
            cpus: sys::online_cpus(),
            commit: commit(&cli.out),
            quick,
            iptables: tool_version("iptables"),
            nft: tool_version("nft"),
            total_secs: started.elapsed().as_secs_f64(),
        },
        program_cost,
        receive_cpu,
        attack,
        memory,
        legit,
        syn_cookies,
        targets,
    };
    fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let json = cli.out.join("results.json");
    fs::write(&json, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let md = cli.out.join("RESULTS.md");
    fs::write(&md, report::markdown(&results))
        .with_context(|| format!("writing {}", md.display()))?;
    let svg = cli.out.join("chart.svg");
    chart::write(&svg, &results)?;

    println!("\n==> targets");
    for t in &results.targets {
        println!(
            "    {:<8} {} ({}): {}",
            t.status(),
            t.name,
            t.target,
            t.measured
        );
    }
    println!(
        "\n==> wrote {}, {} and {} in {:.0} s",
        md.display(),
        json.display(),
        svg.display(),
        results.meta.total_secs
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockdown-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
