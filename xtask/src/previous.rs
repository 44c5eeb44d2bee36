//! The previous release's `lockdown`, built from its commit, so the integration tests can upgrade
//! from it: its maps have the layout this release must carry over (`lockdown_user::datapath::migrate`).

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{exec, target_dir, workspace_root};

/// The last commit before the flow table was split into four maps (`LD_FLOWS` → `LD_FLOWS4`, …,
/// and one more counter). Upgrading from it exercises every carry-over the loader has.
pub(crate) const COMMIT: &str = "d893746c07e71fa41a8dc6064f8c68dc6ec8ad30";

/// Checks out [`COMMIT`] in a worktree under the target directory and builds its `lockdown`
/// (with its own target directory: the binary has the same name). Returns the binary's path.
/// Fails, naming the fix, if the clone lacks the commit (a shallow clone).
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    let base = target_dir().join("previous-release");
    let src = base.join("src");
    let have = || -> anyhow::Result<bool> {
        Ok(Command::new("git")
            .current_dir(workspace_root())
            .args(["cat-file", "-e", &format!("{COMMIT}^{{commit}}")])
            .status()
            .context("running git")?
            .success())
    };
    if !have()? {
        // A shallow clone: fetch the history it left out, once.
        let shallow = Command::new("git")
            .current_dir(workspace_root())
            .args(["rev-parse", "--is-shallow-repository"])
            .output()
            .context("running git")?;
        if String::from_utf8_lossy(&shallow.stdout).trim() == "true" {
            exec(
                Command::new("git")
                    .current_dir(workspace_root())
                    .args(["fetch", "--unshallow"]),
            )?;
        }
    }
    if !have()? {
        bail!(
            "commit {COMMIT} (the previous release, for the upgrade tests) is not in this clone; \
             fetch the full history (`git fetch --unshallow`)"
        );
    }
    let head = Command::new("git")
        .current_dir(&src)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if head.as_deref() != Some(COMMIT) {
        if src.exists() {
            std::fs::remove_dir_all(&src)
                .with_context(|| format!("removing the stale {}", src.display()))?;
        }
        exec(
            Command::new("git")
                .current_dir(workspace_root())
                .args(["worktree", "prune"]),
        )?;
        exec(
            Command::new("git")
                .current_dir(workspace_root())
                .args(["worktree", "add", "--detach", "--force"])
                .arg(&src)
                .arg(COMMIT),
        )?;
    }
    println!("==> building the previous release ({COMMIT:.7}) for the upgrade tests");
    exec(
        Command::new("cargo")
            .current_dir(&src)
            .args(["build", "-p", "lockdown-user"])
            .env("CARGO_TARGET_DIR", base.join("target")),
    )?;
    let bin = base.join("target/debug/lockdown");
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}
