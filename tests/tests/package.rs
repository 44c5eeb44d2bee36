//! The Debian package that `cargo xtask deb` builds (`$LOCKDOWN_DEB`, set by `cargo xtask test`):
//! what it holds, and one whole life on this machine — install, lock a veth down with the
//! packaged binary and conffile, remove, purge.
//!
//! The life test installs the package system-wide and uses the default pin root
//! (/sys/fs/bpf/lockdown), so it refuses to run where either is already in use.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use lockdown_testbed::{
    cli::bin,
    netns::ns_command,
    pair::{NetPair, ORIGIN_IF, any, origin_addr, peer_addr},
    traffic::{DROP_TIMEOUT, OK_TIMEOUT, Serve, TcpServer, tcp_connect, tcp_fetch},
};
use lockdown_tests::units;

const PACKAGE: &str = "lockdown";
const SBIN: &str = "/usr/sbin/lockdown";
const CONFFILE: &str = "/etc/lockdown/lockdown.toml";
const UNIT_DIR: &str = "/lib/systemd/system";
const PIN_ROOT: &str = "/sys/fs/bpf/lockdown";
const MAN_DIR: &str = "/usr/share/man/man8";
const BASH_COMPLETION: &str = "/usr/share/bash-completion/completions/lockdown";
const ZSH_COMPLETION: &str = "/usr/share/zsh/vendor-completions/_lockdown";
const FISH_COMPLETION: &str = "/usr/share/fish/vendor_completions.d/lockdown.fish";
const FAIL2BAN_ACTION: &str = "/etc/fail2ban/action.d/lockdown.conf";
const SSH: u16 = 22;
const WEB: u16 = 8080;
const DOWNLOAD: u16 = 9000;

/// The package under test. Panics with the fix when it is not set.
fn deb() -> PathBuf {
    let path = std::env::var_os("LOCKDOWN_DEB").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "$LOCKDOWN_DEB is not set: run the tests through `cargo xtask test`, which builds the \
             package with `cargo xtask deb`"
        )
    });
    assert!(
        path.is_file(),
        "$LOCKDOWN_DEB is not a file: {}",
        path.display()
    );
    path
}

fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("running `{prog} {}`: {e}", args.join(" ")))
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// Runs and returns stdout; panics with the output if it fails.
fn must(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "`{prog} {}` failed: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The verbs with a man page of their own, as `--help` lists them, recursively: `up`,
/// `allow-add`, …
fn verbs(bin: &Path, path: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = path.to_vec();
    args.push("--help");
    let help = must(bin.to_str().expect("UTF-8 path"), &args);
    let mut out = Vec::new();
    let Some(start) = help.find("Commands:") else {
        return out;
    };
    for line in help[start..].lines().skip(1) {
        if line.trim().is_empty() {
            break;
        }
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if name == "help" || !line.starts_with("  ") || line.starts_with("   ") {
            continue;
        }
        let mut sub = path.to_vec();
        sub.push(name);
        out.push(sub.join("-"));
        out.extend(verbs(bin, &sub));
    }
    out
}

/// Every path the package installs (files and directories), as `dpkg-deb --contents` lists them.
fn contents(deb: &Path) -> BTreeSet<String> {
    must(
        "dpkg-deb",
        &["--contents", deb.to_str().expect("UTF-8 path")],
    )
    .lines()
    .filter_map(|l| l.split_whitespace().nth(5))
    .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_owned())
    .filter(|p| !p.is_empty())
    .collect()
}

/// The man page of `verb` ("" for lockdown(8) itself) among `files`, compressed or not.
fn man_page(files: &BTreeSet<String>, verb: &str) -> Option<String> {
    let stem = if verb.is_empty() {
        format!("{MAN_DIR}/lockdown.8")
    } else {
        format!("{MAN_DIR}/lockdown-{verb}.8")
    };
    [stem.clone(), format!("{stem}.gz")]
        .into_iter()
        .find(|p| files.contains(p))
}

#[test]
fn the_package_holds_every_file() {
    let deb = deb();
    let name = deb
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("lockdown_{version}_")) && name.ends_with(".deb"),
        "the package should be named lockdown_<version>_<arch>.deb: {name}"
    );
    let files = contents(&deb);
    for path in [
        SBIN,
        "/lib/systemd/system/lockdown.service",
        "/lib/systemd/system/lockdown@.service",
        CONFFILE,
        BASH_COMPLETION,
        ZSH_COMPLETION,
        FISH_COMPLETION,
        FAIL2BAN_ACTION,
        "/usr/share/doc/lockdown/examples/lockdown-sshd.conf.example",
    ] {
        assert!(files.contains(path), "the package lacks {path}: {files:#?}");
    }
    let verbs = verbs(&bin(), &[]);
    for must_have in [
        "up",
        "down",
        "run",
        "status",
        "allow-add",
        "flows-flush",
        "deny-add",
    ] {
        assert!(
            verbs.iter().any(|v| v == must_have),
            "`lockdown --help` should list {must_have}: {verbs:?}"
        );
    }
    for verb in std::iter::once("").chain(verbs.iter().map(String::as_str)) {
        assert!(
            man_page(&files, verb).is_some(),
            "the package lacks the man page of `lockdown {verb}`: {files:#?}"
        );
    }
    let deb = deb.to_str().expect("UTF-8 path");
    let conffiles = must("dpkg-deb", &["--info", deb, "conffiles"]);
    let conffiles: BTreeSet<&str> = conffiles.lines().map(str::trim).collect();
    assert_eq!(
        conffiles,
        BTreeSet::from([CONFFILE, FAIL2BAN_ACTION]),
        "the conffiles"
    );
    let info = must("dpkg-deb", &["--info", deb]);
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.contains(script),
            "no {script} in the control archive: {info}"
        );
    }
    let fields = must(
        "dpkg-deb",
        &["--field", deb, "Package", "Version", "Depends"],
    );
    assert!(fields.contains("Package: lockdown"), "{fields}");
    assert!(fields.contains(&format!("Version: {version}")), "{fields}");
    assert!(
        fields.contains("libc6"),
        "Depends should name libc6: {fields}"
    );
}

/// Purges the package when the life test ends, pass or fail.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if dpkg_state().is_some() {
            let out = run("dpkg", &["--purge", PACKAGE]);
            if !out.status.success() {
                eprintln!("cleanup: dpkg --purge {PACKAGE}: {}", text(&out));
            }
        }
    }
}

/// dpkg's abbreviated state of the package (`ii` installed, `rc` removed with its conffiles
/// left), or `None` when dpkg does not know it.
fn dpkg_state() -> Option<String> {
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Abbrev}", PACKAGE]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty() && !s.starts_with("un") && !s.starts_with("pn"))
}

/// The packaged binary in the origin's namespace, with the default pin root.
fn packaged(ns: &str, args: &[&str]) -> Output {
    ns_command(ns, SBIN)
        .args(args)
        .env_remove("LOCKDOWN_PIN_ROOT")
        .env_remove("SSH_CONNECTION")
        .output()
        .unwrap_or_else(|e| panic!("running {SBIN} {}: {e}", args.join(" ")))
}

fn assert_enforcing(pair: &NetPair, when: &str) {
    tcp_connect(&pair.peer, origin_addr(SSH), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("{when}: tcp/{SSH} should connect: {e}"));
    assert!(
        tcp_connect(&pair.peer, origin_addr(WEB), DROP_TIMEOUT).is_err(),
        "{when}: tcp/{WEB} should be dropped"
    );
    let got = tcp_fetch(&pair.origin, peer_addr(DOWNLOAD), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("{when}: the origin's own download should work: {e}"));
    assert_eq!(got.len(), 4096, "{when}: the origin's download");
}

#[test]
fn install_lock_down_remove_purge() {
    let deb = deb();
    assert!(
        dpkg_state().is_none(),
        "the {PACKAGE} package is already known to dpkg on this machine; the package test \
         installs and purges it, so remove it first (`dpkg --purge {PACKAGE}`)"
    );
    let pins_in_use = fs::read_dir(PIN_ROOT)
        .map(|d| d.count() > 0)
        .unwrap_or(false);
    assert!(
        !pins_in_use,
        "{PIN_ROOT} holds pins: a real lockdown runs here, and the package test would purge it"
    );
    let pair = NetPair::new("pkg");
    let _servers = [SSH, WEB].map(|p| TcpServer::start(&pair.origin, any(p), Serve::Echo));
    let _download = TcpServer::start(&pair.peer, any(DOWNLOAD), Serve::Bytes(4096));
    let files = contents(&deb);

    // Install: nothing is locked down by it.
    let guard = Installed;
    must("dpkg", &["--install", deb.to_str().expect("UTF-8 path")]);
    assert_eq!(dpkg_state().as_deref(), Some("ii"), "dpkg --install");
    assert!(
        !Path::new(PIN_ROOT).join(ORIGIN_IF).exists(),
        "installing locked something down"
    );
    assert!(pair.origin_xdp().is_none(), "installing attached XDP");
    tcp_connect(&pair.peer, origin_addr(WEB), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("before any lockdown, tcp/{WEB} should connect: {e}"));

    // The build it says it is.
    let version = must(SBIN, &["--version"]);
    let pkg_version = env!("CARGO_PKG_VERSION");
    let (head, hash) = version
        .trim()
        .strip_prefix(&format!("lockdown {pkg_version} (commit "))
        .and_then(|v| v.strip_suffix(')'))
        .and_then(|v| v.split_once(", eBPF object sha256 "))
        .unwrap_or_else(|| panic!("unexpected --version: {version}"));
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running git");
    let commit = String::from_utf8_lossy(&git.stdout).trim().to_owned();
    assert!(
        git.status.success() && head.trim_end_matches("-dirty") == commit,
        "--version names commit {head}, the checkout is at {commit}"
    );
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "--version's object hash: {hash}"
    );

    // Man pages, units, completions where each tool looks.
    let page = must("man", &["-w", "lockdown-up"]);
    assert!(
        page.trim().starts_with(&format!("{MAN_DIR}/lockdown-up.8")),
        "man -w lockdown-up: {page}"
    );
    must("man", &["-w", "8", "lockdown"]);
    units::verify(
        &Path::new(UNIT_DIR).join("lockdown.service"),
        "lockdown.service",
        None,
    );
    units::verify(
        &Path::new(UNIT_DIR).join("lockdown@.service"),
        &format!("lockdown@{ORIGIN_IF}.service"),
        None,
    );
    let pid1 = fs::read_to_string("/proc/1/comm").unwrap_or_default();
    if pid1.trim() != "systemd" {
        eprintln!(
            "PID 1 is {:?}, not systemd: the units are verified with systemd-analyze, and the \
             interface is locked down with the documented equivalent, `lockdown up --config`",
            pid1.trim()
        );
    }
    let complete = must(
        "bash",
        &[
            "-c",
            &format!("source {BASH_COMPLETION}; complete -p lockdown"),
        ],
    );
    assert!(
        complete.contains("complete") && complete.trim_end().ends_with(" lockdown"),
        "bash completion for lockdown: {complete}"
    );
    for f in [ZSH_COMPLETION, FISH_COMPLETION] {
        let t = fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {f}: {e}"));
        assert!(
            t.contains("lockdown") && t.contains("allow"),
            "{f} completes nothing: {t}"
        );
    }

    // The shipped conffile names no interface: refused (exit 78), nothing changes.
    let out = packaged(&pair.origin, &["up", "--config", CONFFILE]);
    assert_eq!(
        out.status.code(),
        Some(78),
        "up with the shipped conffile: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no `name`"),
        "{}",
        text(&out)
    );
    assert!(pair.origin_xdp().is_none(), "a refused up attached XDP");

    // The operator sets the interface (as config management would) and locks it down.
    let shipped = fs::read_to_string(CONFFILE).expect("reading the conffile");
    let edited = shipped.replace(
        "\n# name = \"eth0\"\n",
        &format!("\nname = \"{ORIGIN_IF}\"\n"),
    );
    assert_ne!(edited, shipped, "the conffile's name line moved");
    fs::write(CONFFILE, edited).expect("editing the conffile");
    let out = packaged(&pair.origin, &["up", "--config", CONFFILE]);
    assert!(
        out.status.success(),
        "up --config {CONFFILE}: {}",
        text(&out)
    );
    assert!(pair.origin_xdp().is_some(), "up attached no XDP program");
    assert_enforcing(&pair, "locked down by the packaged binary");
    let status = packaged(&pair.origin, &["status", "--json", "--interval", "0"]);
    assert!(status.status.success(), "status: {}", text(&status));
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json is JSON");
    assert_eq!(
        status["programs_sha256"], hash,
        "status names the running programs' hash"
    );
    assert_eq!(status["replace_due"], false, "{status}");

    // Remove: the binary, units, man pages and completions go; the conffile stays; the pins of
    // a hand-run `up` stay (there is no unit to stop) and say so.
    let out = run("dpkg", &["--remove", PACKAGE]);
    assert!(out.status.success(), "dpkg --remove: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("{ORIGIN_IF} stays locked down")),
        "prerm should say the interface stays locked down: {}",
        text(&out)
    );
    let left: Vec<_> = files
        .iter()
        .filter(|f| ![CONFFILE, FAIL2BAN_ACTION].contains(&f.as_str()) && Path::new(f).is_file())
        .collect();
    assert!(left.is_empty(), "still there after dpkg --remove: {left:?}");
    assert_eq!(dpkg_state().as_deref(), Some("rc"), "dpkg --remove");
    for f in [CONFFILE, FAIL2BAN_ACTION] {
        assert!(
            Path::new(f).exists(),
            "dpkg --remove removed the conffile {f}"
        );
    }
    assert_enforcing(&pair, "after dpkg --remove");

    // Purge: no file, no pin, no filter.
    let out = run("dpkg", &["--purge", PACKAGE]);
    assert!(out.status.success(), "dpkg --purge: {}", text(&out));
    drop(guard);
    assert_eq!(
        dpkg_state(),
        None,
        "dpkg --purge should make dpkg forget {PACKAGE}"
    );
    // The package's own paths; the directories it shares with the system (/usr/sbin, …) stay.
    let left: Vec<_> = files
        .iter()
        .filter(|f| f.contains("lockdown") && Path::new(f).exists())
        .collect();
    assert!(left.is_empty(), "still there after dpkg --purge: {left:?}");
    assert!(
        !Path::new("/etc/lockdown").exists(),
        "/etc/lockdown is still there after purge"
    );
    assert!(
        !Path::new(PIN_ROOT).exists(),
        "{PIN_ROOT} is still there after purge"
    );
    assert!(
        pair.origin_xdp().is_none(),
        "the XDP program is still attached after purge"
    );
    tcp_connect(&pair.peer, origin_addr(WEB), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("after purge, tcp/{WEB} should connect again: {e}"));
}
