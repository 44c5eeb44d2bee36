//! Builds the eBPF programs with aya-build so that `cargo build` embeds them in `lockdown`.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The eBPF toolchain: a nightly whose LLVM (22) matches bpf-linker 0.10.1.
/// Keep in step with `scripts/setup.sh`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
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
    )
}
