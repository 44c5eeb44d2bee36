//! Debian's kernel packages for the matrix: the image package a meta-package points at, fetched
//! with `apt-get download` and unpacked once into a cache (the kernel and the modules the guest
//! loads, decompressed), so that a second run downloads nothing.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{display, exec};

/// Modules the scenario needs that Debian builds as modules: veth for the pair, `sch_ingress`
/// for the clsact qdisc and `cls_bpf` for a netlink TC attachment. Their dependencies come along.
const MODULES: [&str; 3] = ["veth", "sch_ingress", "cls_bpf"];

/// A kernel ready to boot.
pub(super) struct Kernel {
    /// The image package and its version, e.g. `linux-image-6.1.0-57-amd64 6.1.192-3`.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// Plain `.ko` files in load order (dependencies first).
    pub modules: Vec<PathBuf>,
}

/// The kernel of meta-package `meta` (e.g. `linux-image-amd64`), from the cache under `cache`
/// or downloaded and unpacked into it.
pub(super) fn kernel(cache: &Path, meta: &str) -> anyhow::Result<Kernel> {
    let (package, version) = image_package(meta)?;
    let family = cache.join(meta);
    let dir = family.join(format!("{package}_{version}"));
    let ready = dir.join("ready");
    if ready.is_file() {
        println!(
            "==> {meta}: {package} {version}, cached in {}",
            dir.display()
        );
    } else {
        println!("==> {meta}: downloading {package} {version}");
        // Older versions of the same meta-package are of no further use.
        if family.is_dir() {
            fs::remove_dir_all(&family)
                .with_context(|| format!("removing the old cache {}", family.display()))?;
        }
        unpack(&family, &package, &version, &dir)?;
        fs::write(&ready, "")?;
    }
    let order = fs::read_to_string(dir.join("modules/order"))?;
    Ok(Kernel {
        package: format!("{package} {version}"),
        vmlinuz: dir.join("vmlinuz"),
        modules: order.lines().map(|m| dir.join("modules").join(m)).collect(),
    })
}

/// Output of a command that must succeed.
fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// The image package and version the candidate of `meta` depends on: `Depends:
/// linux-image-6.1.0-57-amd64 (= 6.1.192-3)`. A meta-package holds no kernel.
fn image_package(meta: &str) -> anyhow::Result<(String, String)> {
    let show = output(Command::new("apt-cache").args(["show", "--no-all-versions", meta]))
        .with_context(|| format!("looking up {meta} (has `apt-get update` run?)"))?;
    let depends = show
        .lines()
        .find_map(|l| l.strip_prefix("Depends:"))
        .with_context(|| format!("{meta} has no Depends field"))?;
    for dep in depends.split([',', '|']) {
        let dep = dep.trim();
        let name = dep.split_whitespace().next().unwrap_or_default();
        if !name.starts_with("linux-image-") {
            continue;
        }
        let Some(version) = dep
            .split_once("(=")
            .and_then(|(_, v)| v.strip_suffix(')'))
            .map(str::trim)
        else {
            bail!("{meta} depends on {name} without an exact version: {dep}");
        };
        return Ok((name.to_owned(), version.to_owned()));
    }
    bail!("{meta} depends on no linux-image package: {depends}")
}

/// Downloads `package=version` into `family`, unpacks it there, and keeps in `dir` the kernel,
/// the needed modules (decompressed) and their load order in `modules/order`.
fn unpack(family: &Path, package: &str, version: &str, dir: &Path) -> anyhow::Result<()> {
    let work = family.join("download");
    fs::create_dir_all(&work)?;
    exec(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&work),
    )?;
    let deb = fs::read_dir(&work)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", work.display()))?;
    let root = work.join("root");
    exec(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;

    let vmlinuz = fs::read_dir(root.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} holds no boot/vmlinuz-*"))?;
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
        .with_context(|| format!("{package} holds no lib/modules"))?;
    let release = fs::read_dir(&modules_root)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .with_context(|| format!("{package} holds no lib/modules/<release>"))?;

    let available = index(&release.join("kernel"))?;
    let builtin: BTreeSet<String> = fs::read_to_string(release.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(module_name)
        .collect();
    let mut order = Vec::new();
    let mut loaded = BTreeMap::new();
    for m in MODULES {
        resolve(m, &available, &builtin, &mut loaded, &mut order)?;
    }

    let staging = family.join("staging");
    fs::create_dir_all(staging.join("modules"))?;
    fs::copy(&vmlinuz, staging.join("vmlinuz"))?;
    let mut names = String::new();
    for name in &order {
        let file = format!("{name}.ko");
        fs::write(staging.join("modules").join(&file), &loaded[name])?;
        names.push_str(&file);
        names.push('\n');
    }
    fs::write(staging.join("modules/order"), names)?;
    fs::rename(&staging, dir)?;
    fs::remove_dir_all(&work)?;
    println!(
        "    kernel {}, modules {}",
        vmlinuz.display(),
        order.join(" ")
    );
    Ok(())
}

/// `veth.ko.xz` → `veth`; `nf-conntrack.ko` → `nf_conntrack` (modinfo's spelling).
fn module_name(file: &str) -> String {
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// Every module file under `dir`, by module name.
fn index(dir: &Path) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned())
                && name.contains(".ko")
            {
                found.insert(module_name(&name), path);
            }
        }
    }
    Ok(found)
}

/// Adds `name` after its dependencies to `order`, reading each module once into `loaded`.
fn resolve(
    name: &str,
    available: &BTreeMap<String, PathBuf>,
    builtin: &BTreeSet<String>,
    loaded: &mut BTreeMap<String, Vec<u8>>,
    order: &mut Vec<String>,
) -> anyhow::Result<()> {
    if loaded.contains_key(name) || builtin.contains(name) {
        return Ok(());
    }
    let path = available
        .get(name)
        .with_context(|| format!("module {name} is neither in the package nor built in"))?;
    let bytes = read_module(path)?;
    let deps = depends(&bytes);
    loaded.insert(name.to_owned(), bytes);
    for dep in deps {
        resolve(&dep, available, builtin, loaded, order)?;
    }
    order.push(name.to_owned());
    Ok(())
}

/// A module's bytes, decompressed (Debian's 6.12 packages ship `.ko.xz`; an initramfs has no
/// modprobe, and busybox's insmod wants the plain object).
fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return fs::read(path).with_context(|| format!("reading {name}"));
    }
    if name.ends_with(".ko.xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running xz (xz-utils)")?;
        if !out.status.success() {
            bail!("xz -dc {name} failed: {}", out.status);
        }
        return Ok(out.stdout);
    }
    bail!("{name}: unknown module compression")
}

/// The `depends=` entry of a module's `.modinfo` section: NUL-separated `key=value` strings.
fn depends(module: &[u8]) -> Vec<String> {
    module
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(module_name)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_reads_the_modinfo_entry() {
        let modinfo = b"\0license=GPL\0depends=nf_conntrack,nf-defrag-ipv4\0vermagic=6.1\0";
        assert_eq!(depends(modinfo), ["nf_conntrack", "nf_defrag_ipv4"]);
        assert!(depends(b"\0license=GPL\0depends=\0").is_empty());
        assert!(depends(b"\0license=GPL\0").is_empty());
    }

    #[test]
    fn module_names_drop_the_suffix_and_dashes() {
        assert_eq!(module_name("veth.ko"), "veth");
        assert_eq!(module_name("sch_ingress.ko.xz"), "sch_ingress");
        assert_eq!(module_name("nf-conntrack.ko"), "nf_conntrack");
    }
}
