//! The systemd units in `packaging/`: `systemd-analyze verify` accepts them, with `ExecStart`
//! pointing at the binary under test (the units name `/usr/sbin/lockdown`, where the package
//! installs it). PID 1 need not be systemd: `verify` only reads the files.

use std::{fs, path::Path};

use lockdown_testbed::cli::bin;
use lockdown_tests::units;

/// Where the package installs the binary, which the units name.
const INSTALLED: &str = "/usr/sbin/lockdown";

fn verify(unit: &str, instance: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(unit);
    units::verify(&src, instance, Some((INSTALLED, &bin())));
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
