//! The systemd units in `packaging/`: `systemd-analyze verify` accepts them, with `ExecStart`
//! pointing at the binary under test (the units name `/usr/local/bin/lockdown`, where the README
//! installs it). PID 1 need not be systemd: `verify` only reads the files.

use std::{fs, path::Path, process::Command};

use lockdown_tests::cli::bin;

const INSTALLED: &str = "/usr/local/bin/lockdown";

/// Verifies `unit` (a file name in `packaging/`) as `instance`; panics with systemd's words.
fn verify(unit: &str, instance: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(unit);
    let text =
        fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    assert!(text.contains(INSTALLED), "{unit} does not run {INSTALLED}");
    let dir =
        std::env::temp_dir().join(format!("lockdown-units-{}-{instance}", std::process::id()));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let bin = bin();
    fs::write(
        dir.join(unit),
        text.replace(INSTALLED, &bin.display().to_string()),
    )
    .unwrap_or_else(|e| panic!("writing the unit: {e}"));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join(instance))
        .output()
        .unwrap_or_else(|e| {
            panic!("running systemd-analyze (Debian package systemd, installed by setup.sh): {e}")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("lockdown")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify {instance}: {}\n{stderr}",
        out.status
    );
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_service_unit_verifies() {
    verify("lockdown.service", "lockdown.service");
}

#[test]
fn the_template_unit_verifies_as_an_instance() {
    verify("lockdown@.service", "lockdown@eth0.service");
}

#[test]
fn the_template_runs_the_named_interface_of_the_config() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lockdown@.service");
    let text =
        fs::read_to_string(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
    let exec = text
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in {}", src.display()));
    assert!(
        exec.ends_with("run --config /etc/lockdown/lockdown.toml --iface %i"),
        "the template should run the instance's interface of the config: {exec}"
    );
}
