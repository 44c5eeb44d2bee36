//! Builds the eBPF programs with aya-build so that `cargo build` embeds them in `lockdown`, and
//! names the git commit for `lockdown --version`.

use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

#[path = "build/btf.rs"]
mod btf;

/// The eBPF toolchain: a nightly whose LLVM (22) matches bpf-linker 0.10.1.
/// Keep in step with `scripts/setup.sh`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

/// `git rev-parse --short=12 HEAD`, with `-dirty` when tracked files differ from it; `unknown`
/// outside a git checkout. `LOCKDOWN_GIT_COMMIT` overrides it (builds from a source tarball).
fn git_commit(dir: &Path) -> String {
    println!("cargo:rerun-if-env-changed=LOCKDOWN_GIT_COMMIT");
    if let Ok(c) = std::env::var("LOCKDOWN_GIT_COMMIT") {
        return c;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // Rebuild when HEAD moves or the index changes (a commit, a checkout, an add).
    for file in ["HEAD", "index"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            println!("cargo:rerun-if-changed={}", dir.join(path).display());
        }
    }
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(path) = git(&["rev-parse", "--git-path", &head_ref])
    {
        println!("cargo:rerun-if-changed={}", dir.join(path).display());
    }
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    println!(
        "cargo:rustc-env=LOCKDOWN_GIT_COMMIT={}",
        git_commit(Path::new(&manifest_dir))
    );
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "lockdown-ebpf")
        .ok_or_else(|| anyhow!("lockdown-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_TOOLCHAIN),
    )?;
    let object = Path::new(&std::env::var("OUT_DIR")?).join("lockdown");
    if object.exists() {
        btf::sanitize_union_names(&object)?;
    }
    Ok(())
}
