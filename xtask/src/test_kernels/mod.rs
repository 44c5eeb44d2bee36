//! `cargo xtask test-kernels`: lockdown's scenario on Debian's 6.1 and 6.12 kernels, booted in
//! QEMU from an initramfs, and on the running kernel, natively; a table kernel × check.
//!
//! ```text
//!   apt-get download linux-image-… ──> target/kernels/<meta>/<package>_<version>/ (cached)
//!   initramfs: /init (guest/init.sh), /scenario.sh, busybox, lockdown, ip, tc, nc, bpftool,
//!              the model_vs_bpf test, their libraries, the modules
//!   qemu-system-x86_64 -accel tcg -nic none -serial stdio  ──>  LDK-RESULT lines
//!   host: busybox sh guest/scenario.sh in two namespaces      ──>  LDK-RESULT lines
//! ```
//!
//! The scenario (xtask/guest/scenario.sh) is the same file on every kernel; it prints one
//! `LDK-RESULT` line per check. Each kernel's console goes to target/kernels/<label>.log.

mod debian;
mod initramfs;
mod report;

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{self, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use self::{debian::Kernel, initramfs::Initramfs, report::Run};
use crate::util::{
    build_lockdown, cargo, display, ensure_bpffs, exec, require_root, target_dir, which,
    workspace_root,
};

/// The kernels of the matrix.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Which {
    /// Debian 12's own kernel (`linux-image-amd64`), the series Amazon Linux 2023 runs.
    #[value(name = "6.1")]
    Debian61,
    /// Debian 12's 6.12 kernel package (`linux-image-6.12-amd64`).
    #[value(name = "6.12")]
    Debian612,
    /// The running kernel, natively in network namespaces.
    Host,
}

impl Which {
    const ALL: [Self; 3] = [Self::Debian61, Self::Debian612, Self::Host];

    const fn label(self) -> &'static str {
        match self {
            Self::Debian61 => "6.1",
            Self::Debian612 => "6.12",
            Self::Host => "host",
        }
    }

    /// The Debian meta-package whose dependency is the kernel image.
    const fn meta(self) -> Option<&'static str> {
        match self {
            Self::Debian61 => Some("linux-image-amd64"),
            Self::Debian612 => Some("linux-image-6.12-amd64"),
            Self::Host => None,
        }
    }
}

#[derive(Parser)]
pub(crate) struct Options {
    /// Run only these kernels (repeatable; default: all three).
    #[arg(long = "kernel", value_enum)]
    pub kernels: Vec<Which>,
    /// Boot the guests with KVM instead of TCG. Under nested virtualisation a KVM guest can stall
    /// during boot, hence TCG by default.
    #[arg(long)]
    pub kvm: bool,
    /// Test runs of the model-vs-program pass on each kernel after its truncation sweep
    /// (`LOCKDOWN_MODEL_CASES`). Under TCG each epoch of 1000 costs tens of seconds.
    #[arg(long, default_value_t = 2_000)]
    pub model_cases: u32,
    /// Seed of the model-vs-program pass (`LOCKDOWN_MODEL_SEED`). The test fails unless its
    /// generator reaches every verdict reason; this seed does so within the default number of
    /// test runs (the test's own default seed needs tens of thousands, too slow under TCG).
    #[arg(long, default_value_t = 28)]
    pub model_seed: u64,
    /// Time limit for each kernel, boot included, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

/// Guest memory, MiB: the initramfs is unpacked into RAM.
const GUEST_MEMORY_MIB: u32 = 1024;

pub(crate) fn run(opts: &Options) -> anyhow::Result<()> {
    require_root("`cargo xtask test-kernels`")?;
    let kernels = if opts.kernels.is_empty() {
        Which::ALL.to_vec()
    } else {
        Which::ALL
            .into_iter()
            .filter(|k| opts.kernels.contains(k))
            .collect()
    };
    let cache = target_dir().join("kernels");
    fs::create_dir_all(&cache)?;

    println!("==> building lockdown (release) and the model_vs_bpf test");
    let lockdown = build_lockdown(true)?;
    let model_vs_bpf = model_vs_bpf_test()?;
    let busybox = which("busybox")
        .context("busybox not found (Debian package busybox-static; scripts/setup.sh)")?;

    // Everything is fetched and built first; then the kernels run side by side.
    let mut guests = Vec::new();
    let mut common = None;
    for k in &kernels {
        if let Some(meta) = k.meta() {
            let kernel = debian::kernel(&cache, meta)?;
            if common.is_none() {
                common = Some(guest_files(
                    &lockdown,
                    &model_vs_bpf,
                    &busybox,
                    &cache,
                    opts,
                )?);
            }
            let files = common.as_ref().expect("built just above");
            let initrd = initrd(k.label(), &kernel, files, &cache)?;
            guests.push((k.label(), kernel, initrd));
        }
    }
    let started = Instant::now();
    let runs = thread::scope(|s| {
        let mut jobs = Vec::new();
        for (label, kernel, initrd) in &guests {
            jobs.push(s.spawn(|| boot(label, kernel, initrd, &cache, opts)));
        }
        if kernels.contains(&Which::Host) {
            jobs.push(s.spawn(|| host(&lockdown, &model_vs_bpf, &busybox, &cache, opts)));
        }
        jobs.into_iter()
            .map(|j| j.join().expect("a kernel's thread panicked"))
            .collect::<anyhow::Result<Vec<Run>>>()
    })?;
    println!(
        "\n==> {} kernels in {:.0} s",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    if !report::print(&runs) {
        bail!(
            "the kernel matrix has red cells (logs: {})",
            cache.display()
        );
    }
    println!("\n==> the kernel matrix is green");
    Ok(())
}

/// Builds the `model_vs_bpf` integration test and returns its executable.
fn model_vs_bpf_test() -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "lockdown-tests",
        "--test",
        "model_vs_bpf",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ])
    .stdout(Stdio::piped());
    println!("$ {}", display(&cmd));
    let out = cmd.output().context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("`{}` failed: {}", display(&cmd), out.status);
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "model_vs_bpf"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo reported no executable for the model_vs_bpf test")
}

/// What every guest's initramfs holds besides the kernel's modules.
fn guest_files(
    lockdown: &Path,
    model_vs_bpf: &Path,
    busybox: &Path,
    cache: &Path,
    opts: &Options,
) -> anyhow::Result<Initramfs> {
    let guest_dir = workspace_root().join("xtask/guest");
    let mut files = Initramfs::default();
    files.binary(busybox, "bin/busybox")?;
    files.binary(lockdown, "usr/sbin/lockdown")?;
    // The debug build's symbols are nine tenths of it, and the guest unpacks every byte.
    let stripped = cache.join("model_vs_bpf");
    exec(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(model_vs_bpf),
    )?;
    files.binary(&stripped, "usr/libexec/model_vs_bpf")?;
    for (name, guest) in [
        ("ip", "usr/sbin/ip"),
        ("tc", "usr/sbin/tc"),
        ("nc.openbsd", "usr/bin/nc.openbsd"),
    ] {
        let host = which(name).with_context(|| format!("{name} not found on PATH"))?;
        files.binary(&host, guest)?;
    }
    // Optional: only names the programs and gives their translated length.
    if let Some(bpftool) = which("bpftool") {
        files.binary(&bpftool, "usr/sbin/bpftool")?;
    }
    files.host_file(&guest_dir.join("init.sh"), "init", 0o755);
    files.host_file(&guest_dir.join("scenario.sh"), "scenario.sh", 0o755);
    files.bytes(
        "etc/ldk-model",
        format!("{} {}\n", opts.model_cases, opts.model_seed),
        0o644,
    );
    Ok(files)
}

/// Writes the initramfs for `kernel`: the common files and its modules.
fn initrd(
    label: &str,
    kernel: &Kernel,
    common: &Initramfs,
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    let mut files = common.clone();
    let mut order = String::new();
    for m in &kernel.modules {
        let name = m.file_name().expect("a module file").to_string_lossy();
        files.host_file(m, &format!("modules/{name}"), 0o644);
        order.push_str(&name);
        order.push('\n');
    }
    files.bytes("modules/order", order, 0o644);
    let initrd = cache.join(format!("{label}.initrd.gz"));
    files.write(&initrd)?;
    Ok(initrd)
}

/// Boots `kernel` with `initrd` and collects the scenario's results.
fn boot(
    label: &str,
    kernel: &Kernel,
    initrd: &Path,
    cache: &Path,
    opts: &Options,
) -> anyhow::Result<Run> {
    println!("==> {label}: booting {} in QEMU", kernel.package);
    let mut cmd = Command::new("qemu-system-x86_64");
    if opts.kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.args(["-m", &GUEST_MEMORY_MIB.to_string(), "-smp", "1"])
        .args(["-nic", "none", "-no-reboot", "-display", "none"])
        .args(["-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"]);
    let mut run = watch(label, cmd, cache, opts)?;
    if !run.finished && run.problem.is_none() {
        run.problem = Some("the guest stopped before the scenario ended (see its log)".into());
    }
    Ok(run)
}

/// Runs the scenario natively on the running kernel, in namespaces of its own.
fn host(
    lockdown: &Path,
    model_vs_bpf: &Path,
    busybox: &Path,
    cache: &Path,
    opts: &Options,
) -> anyhow::Result<Run> {
    ensure_bpffs()?;
    let tag = format!("ldk{}", process::id());
    let sandbox = HostSandbox {
        tag: tag.clone(),
        pin_root: PathBuf::from(format!("/sys/fs/bpf/{tag}")),
        run_dir: PathBuf::from(format!("/run/{tag}")),
    };
    println!("==> host: the scenario on the running kernel, namespaces {tag}-o/-p");
    let mut cmd = Command::new(busybox);
    cmd.arg("sh")
        .arg(workspace_root().join("xtask/guest/scenario.sh"))
        .env("LOCKDOWN", lockdown)
        .env("LOCKDOWN_PIN_ROOT", &sandbox.pin_root)
        .env("LOCKDOWN_RUN_DIR", &sandbox.run_dir)
        .env("MODEL_VS_BPF", model_vs_bpf)
        .env("MODEL_CASES", opts.model_cases.to_string())
        .env("MODEL_SEED", opts.model_seed.to_string())
        .env("LDK_TAG", &tag);
    let mut run = watch("host", cmd, cache, opts)?;
    drop(sandbox);
    if !run.finished && run.problem.is_none() {
        run.problem = Some("the scenario did not run to its end (see its log)".into());
    }
    Ok(run)
}

/// Removes what a host scenario killed on its time limit may have left.
struct HostSandbox {
    tag: String,
    pin_root: PathBuf,
    run_dir: PathBuf,
}

impl Drop for HostSandbox {
    fn drop(&mut self) {
        for side in ["o", "p"] {
            let ns = format!("{}-{side}", self.tag);
            if Path::new("/run/netns").join(&ns).exists() {
                eprintln!("    removing namespace {ns} left by the host scenario");
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        for dir in [&self.pin_root, &self.run_dir] {
            if dir.exists() {
                eprintln!("    removing {} left by the host scenario", dir.display());
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
}

/// Runs `cmd` with its output (stdout and stderr) shown as `[label] …`, kept in
/// `<cache>/<label>.log` and parsed into a [`Run`]; stops it at the time limit.
fn watch(label: &str, mut cmd: Command, cache: &Path, opts: &Options) -> anyhow::Result<Run> {
    let log_path = cache.join(format!("{label}.log"));
    let mut log = fs::File::create(&log_path)?;
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    println!("$ {}", display(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{}`", display(&cmd)))?;
    // The command holds the pipe's write end: drop it, or the output never ends.
    drop(cmd);

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\n', '\r'])
                .to_owned();
            if tx.send(line).is_err() {
                break;
            }
            buf.clear();
        }
    });

    let mut run = Run::new(label);
    let deadline = started + Duration::from_secs(opts.timeout);
    let mut exit_line = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                println!("[{label}] {line}");
                exit_line |= line.starts_with("LDK-EXIT ");
                run.line(&line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                stop(&mut child);
                run.problem = Some(format!(
                    "stopped at the time limit of {} s (--timeout)",
                    opts.timeout
                ));
                break;
            }
        }
    }
    let status = child.wait()?;
    run.elapsed = started.elapsed();
    // The scenario's last line; a guest then powers off.
    run.finished = run.problem.is_none() && exit_line;
    println!(
        "==> {label}: done in {:.0} s ({status}); log {}",
        run.elapsed.as_secs_f64(),
        log_path.display()
    );
    Ok(run)
}

/// SIGTERM first (the host scenario then cleans up after the command in progress), SIGKILL
/// after a grace period.
fn stop(child: &mut process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let grace = Instant::now() + Duration::from_secs(30);
    while Instant::now() < grace {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
}
