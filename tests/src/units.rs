//! `systemd-analyze verify` of lockdown's units. PID 1 need not be systemd: `verify` only reads
//! the files.

use std::{fs, path::Path, process::Command};

/// Verifies the unit file `unit` as `instance` (its own name, or `lockdown@eth0.service` for the
/// template), with every `from` path in it replaced by `to` when given (to point it at the binary
/// under test). Panics with systemd's words.
pub fn verify(unit: &Path, instance: &str, replace: Option<(&str, &Path)>) {
    let text =
        fs::read_to_string(unit).unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
    let text = match replace {
        Some((from, to)) => {
            assert!(
                text.contains(from),
                "{} does not run {from}",
                unit.display()
            );
            text.replace(from, &to.display().to_string())
        }
        None => text,
    };
    let dir =
        std::env::temp_dir().join(format!("lockdown-units-{}-{instance}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let name = unit.file_name().expect("a unit file name");
    fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("writing the unit: {e}"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join(instance))
        .output()
        .unwrap_or_else(|e| {
            panic!("running systemd-analyze (Debian package systemd, installed by setup.sh): {e}")
        });
    fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("lockdown")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {instance} ({}): {}\n{stderr}",
        unit.display(),
        out.status
    );
}
