//! Helpers shared by the verbs.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The workspace root (the parent of the xtask crate).
pub(crate) fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Path of the lockdown binary that `cargo build -p lockdown-user [--release]` produces.
pub(crate) fn lockdown_bin(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("lockdown")
}

/// A `cargo` command that runs in the workspace root, so rust-toolchain.toml applies.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// `cargo build -p lockdown-user [--release]`: the loader with the eBPF objects embedded.
pub(crate) fn build_lockdown(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "lockdown-user"]);
    if release {
        cmd.arg("--release");
    }
    exec(&mut cmd)?;
    let bin = lockdown_bin(release);
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// The command as a shell-like line, for printing and for error messages.
pub(crate) fn display(cmd: &Command) -> String {
    fn quote(s: &OsStr) -> String {
        let s = s.to_string_lossy();
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c))
        {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    }
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn check(cmd: &Command, status: ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed: {status}", display(cmd))
    }
}

/// Prints the command, runs it with inherited stdio, and fails naming it on a non-zero exit.
pub(crate) fn exec(cmd: &mut Command) -> anyhow::Result<()> {
    println!("$ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    check(cmd, status)
}

/// Like [`exec`] but returns the exit status instead of judging it, and kills the command if it
/// has not finished within `limit`.
pub(crate) fn status_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<ExitStatus> {
    println!("$ {}", display(cmd));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            // Best effort: the command is already late; report that, not a kill error.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{}` did not finish within {} s; killed it",
                display(cmd),
                limit.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// [`exec`] with a time limit.
pub(crate) fn exec_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<()> {
    let status = status_within(cmd, limit)?;
    check(cmd, status)
}

/// Whether this process runs with effective uid 0 (read from /proc, no libc needed).
pub(crate) fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Fails with a clear message unless running as root.
pub(crate) fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "{what} must run as root: it creates network namespaces and loads BPF programs \
             (try `sudo -E env PATH=\"$PATH\" cargo xtask ...`)"
        );
    }
    Ok(())
}

/// The first executable named `name` on `$PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Mounts bpffs at /sys/fs/bpf unless something is already mounted there.
pub(crate) fn ensure_bpffs() -> anyhow::Result<()> {
    let mounted = Command::new("mountpoint")
        .args(["-q", "/sys/fs/bpf"])
        .status()
        .context("failed to run `mountpoint` (util-linux)")?
        .success();
    if mounted {
        println!("==> bpffs at /sys/fs/bpf: already mounted");
        Ok(())
    } else {
        println!("==> mounting bpffs at /sys/fs/bpf");
        exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
    }
}
