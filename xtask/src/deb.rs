//! `cargo xtask deb`: the Debian package, built with cargo-deb from
//! `[package.metadata.deb]` in lockdown-user/Cargo.toml.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{build_lockdown, cargo, exec, target_dir, which};

/// Builds the release binary, generates the man pages and completions from it, and packs
/// everything into `target/debian/lockdown_<version>_<arch>.deb`. Returns the package's path.
pub(crate) fn build() -> anyhow::Result<PathBuf> {
    if which("cargo-deb").is_none() {
        bail!("cargo-deb is not installed: run scripts/setup.sh (it installs cargo-deb 3.8.0)");
    }
    println!("==> building the release binary for the package");
    let bin = build_lockdown(true)?;

    // The generated assets: written by the binary itself from its clap definitions, so the man
    // pages and completions match `--help` exactly.
    let assets = target_dir().join("release/package");
    if assets.exists() {
        fs::remove_dir_all(&assets).with_context(|| format!("removing {}", assets.display()))?;
    }
    exec(
        Command::new(&bin)
            .arg("generate")
            .arg("--man")
            .arg(assets.join("man"))
            .arg("--completions")
            .arg(assets.join("completions")),
    )?;

    // Debian installs man pages compressed; -n leaves the name and time out, so builds repeat.
    let pages: Vec<PathBuf> = fs::read_dir(assets.join("man"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    exec(Command::new("gzip").arg("-9n").args(&pages))?;

    let out = target_dir().join("debian");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Only this build's package may be found afterwards.
    for entry in fs::read_dir(&out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    println!("==> cargo deb");
    exec(
        cargo()
            .args(["deb", "-p", "lockdown-user", "--no-build", "--output"])
            .arg(&out),
    )?;
    let debs: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    match &debs[..] {
        [deb] => Ok(deb.clone()),
        _ => bail!("expected one .deb in {}, found {debs:?}", out.display()),
    }
}

pub(crate) fn run() -> anyhow::Result<()> {
    let deb = build()?;
    println!("==> built {}", deb.display());
    Ok(())
}
