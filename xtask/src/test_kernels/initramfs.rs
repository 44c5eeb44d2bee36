//! The guest's initramfs: a gzipped newc cpio archive (what the kernel unpacks into its rootfs)
//! built from host files, each binary with the shared libraries `ldd` names for it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::exec;

/// Where a file's bytes come from.
#[derive(Clone)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// Files by their path in the guest (relative, no leading `/`).
#[derive(Clone, Default)]
pub(super) struct Initramfs {
    files: BTreeMap<String, (Source, u32)>,
}

impl Initramfs {
    /// Adds an executable at `guest` with the libraries it links, at the paths `ldd` prints.
    pub(super) fn binary(&mut self, host: &Path, guest: &str) -> anyhow::Result<()> {
        if !host.is_file() {
            bail!("{} does not exist", host.display());
        }
        self.host_file(host, guest, 0o755);
        for lib in libraries(host)? {
            let guest = lib.to_string_lossy().into_owned();
            self.host_file(&lib, &guest, 0o755);
        }
        Ok(())
    }

    pub(super) fn host_file(&mut self, host: &Path, guest: &str, mode: u32) {
        self.files.insert(
            guest.trim_start_matches('/').to_owned(),
            (Source::Host(host.to_path_buf()), mode),
        );
    }

    pub(super) fn bytes(&mut self, guest: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        self.files.insert(
            guest.trim_start_matches('/').to_owned(),
            (Source::Bytes(bytes.into()), mode),
        );
    }

    /// Writes the archive to `out` (gzip-compressed).
    pub(super) fn write(&self, out: &Path) -> anyhow::Result<()> {
        let mut cpio = Cpio::default();
        // Mount points, and every file's parent directories, parents first.
        let mut dirs: BTreeSet<String> = ["dev", "proc", "sys", "run", "tmp"]
            .map(String::from)
            .into();
        for path in self.files.keys() {
            let mut p = Path::new(path);
            while let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(parent.to_string_lossy().into_owned());
                p = parent;
            }
        }
        for d in &dirs {
            cpio.entry(d, 0o040_755, 0, &[]);
        }
        // The kernel opens /dev/console for /init's standard streams before anything is mounted.
        cpio.entry("dev/console", 0o020_600, makedev(5, 1), &[]);
        for (path, (source, mode)) in &self.files {
            let data = match source {
                Source::Host(p) => {
                    fs::read(p).with_context(|| format!("reading {}", p.display()))?
                }
                Source::Bytes(b) => b.clone(),
            };
            cpio.entry(path, 0o100_000 | mode, 0, &data);
        }
        let raw = out.with_extension("");
        fs::write(&raw, cpio.finish()).with_context(|| format!("writing {}", raw.display()))?;
        exec(Command::new("gzip").args(["-1", "-f", "-n"]).arg(&raw))?;
        let gz = PathBuf::from(format!("{}.gz", raw.display()));
        if gz != out {
            fs::rename(&gz, out)?;
        }
        Ok(())
    }
}

/// The shared libraries `ldd` resolves for `binary` (none for a static one).
fn libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), out.status);
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        let path = line
            .split_once("=>")
            .map_or(line, |(_, p)| p)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("ldd {}: {}", binary.display(), line.trim());
        }
    }
    Ok(libs)
}

const fn makedev(major: u32, minor: u32) -> u64 {
    ((major as u64) << 32) | minor as u64
}

/// A newc ("070701") cpio archive in memory.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    inode: u32,
}

impl Cpio {
    /// One entry; `rdev` is `makedev(major, minor)` for a device node, else 0.
    fn entry(&mut self, name: &str, mode: u32, rdev: u64, data: &[u8]) {
        self.inode += 1;
        let name_size = name.len() + 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(data.len()).expect("an initramfs file under 4 GiB"),
            0, // devmajor
            0, // devminor
            (rdev >> 32) as u32,
            rdev as u32,
            u32::try_from(name_size).expect("a short name"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 0, &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let mut c = Cpio::default();
        c.entry("init", 0o100_755, 0, b"#!/bin/sh\n");
        c.entry("dev/console", 0o020_600, makedev(5, 1), &[]);
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // The header is 110 bytes; "init\0" pads to 116, then the 10-byte file pads to 128.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
        // dev/console: rdevmajor 5, rdevminor 1 (fields 10 and 11).
        let console = &out[128..];
        assert_eq!(&console[6 + 9 * 8..6 + 11 * 8], b"0000000500000001");
        assert!(
            out.windows(10).any(|w| w == b"TRAILER!!!"),
            "the trailer is missing"
        );
    }
}
