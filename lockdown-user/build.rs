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
    build_handoff(root_dir.as_std_path())
}

/// The SYN-cookie hand-off (`lockdown-ebpf/handoff/handoff.bpf.c`): C, because its kfunc call
/// needs BTF for an extern function that the Rust toolchain cannot emit. Built with clang into
/// `OUT_DIR/handoff.bpf.o` and embedded as `HANDOFF_OBJECT`. `AYA_BUILD_SKIP=1` (which skips the
/// Rust object too) writes an empty file instead.
fn build_handoff(ebpf_dir: &Path) -> anyhow::Result<()> {
    let source = ebpf_dir.join("handoff/handoff.bpf.c");
    let out = Path::new(&std::env::var("OUT_DIR")?).join("handoff.bpf.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=CLANG");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v == "true") {
        std::fs::write(&out, b"")?;
        return Ok(());
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let arch_include = format!(
        "/usr/include/{}-linux-gnu",
        std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned())
    );
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{arch_include}"))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output();
    match output {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow!(
            "building the SYN-cookie hand-off ({}) needs clang, which was not found ({clang:?}): \
             install clang, libbpf-dev and linux-libc-dev (scripts/setup.sh does), or set CLANG",
            source.display()
        )),
        Err(e) => Err(anyhow!("running {clang:?}: {e}")),
        Ok(o) if !o.status.success() => Err(anyhow!(
            "clang failed to build {} ({}); are libbpf-dev and linux-libc-dev installed \
             (scripts/setup.sh)?\n{}",
            source.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )),
        Ok(_) => Ok(()),
    }
}
