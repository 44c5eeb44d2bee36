//! The blocklist (`lockdown deny`) on a veth between two namespaces: entries drop everything from
//! a source, established connections included; timed entries stop matching in the datapath on
//! their own; bad input changes nothing; the lockout guard; entries survive `up --replace`.

use std::{io, net::SocketAddr, time::Duration};

use lockdown_common::rules::deny::DenyNet;
use lockdown_testbed::{
    bg::log_events,
    cli::wait_for,
    origin::Origin,
    pair::{Family, ORIGIN_IF, PEER_V4, PEER_V6},
    traffic::{DROP_TIMEOUT, OK_TIMEOUT, exchange, ping, tcp_connect},
};
use lockdown_user::datapath::{blocklist::Blocklist, pins::PinDir};

const SSH: u16 = 22;

/// A locked-down origin with an echo server on its SSH port.
fn world(tag: &str) -> Origin {
    let w = Origin::new(tag).origin_echo(&[SSH]);
    w.up(&[]);
    w
}

/// What the blocklist tests check through an [`Origin`].
trait DenyChecks {
    /// Whether the peer connects to the origin's SSH port over `family` (a drop times out).
    fn connects(&self, family: Family) -> bool;
    /// `deny list --json`, parsed.
    fn list(&self) -> serde_json::Value;
    /// Every entry in the pinned maps, expired ones included.
    fn raw_entries(&self) -> Vec<(DenyNet, u64)>;
}

impl DenyChecks for Origin {
    fn connects(&self, family: Family) -> bool {
        let addr = SocketAddr::new(family.origin(), SSH);
        match self.connect_from_peer(addr) {
            Ok(mut s) => {
                exchange(&mut s, b"hello")
                    .unwrap_or_else(|e| panic!("{addr}: connected, then {e}"));
                true
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => false,
            Err(e) => panic!("connecting to {addr}: {e} (a drop times out)"),
        }
    }

    fn list(&self) -> serde_json::Value {
        let out = self.ld.must(&["deny", "list", "--json"]);
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("deny list --json: {e}: {out}"))
    }

    fn raw_entries(&self) -> Vec<(DenyNet, u64)> {
        let dir = PinDir::new(&self.ld.pin_root, ORIGIN_IF);
        Blocklist::open(&dir)
            .expect("opening the pinned blocklist")
            .entries()
            .expect("reading the blocklist")
            .into_iter()
            .collect()
    }
}

#[test]
fn a_denied_source_is_cut_off_established_connections_included() {
    let w = world("deny-cut");
    let addr = SocketAddr::new(Family::V4.origin(), SSH);
    let mut open = tcp_connect(&w.pair.peer, addr, OK_TIMEOUT).expect("connecting before the ban");
    exchange(&mut open, b"before").expect("exchanging before the ban");
    let before = w.ld.counter("drop_denied");

    w.ld.must(&["deny", "add", &PEER_V4.to_string()]);
    assert!(!w.connects(Family::V4), "a denied IPv4 source connected");
    assert!(
        w.connects(Family::V6),
        "the same peer's IPv6 address is not denied"
    );
    assert!(
        !ping(&w.pair.peer, Family::V4.origin()),
        "a denied source's ping was answered"
    );
    open.set_read_timeout(Some(DROP_TIMEOUT))
        .expect("a read timeout");
    assert!(
        exchange(&mut open, b"after").is_err(),
        "the established connection of a denied source still carries data"
    );
    assert!(
        w.ld.counter("drop_denied") > before,
        "drop_denied did not count"
    );
    let list = w.list();
    assert_eq!(
        list,
        serde_json::json!([{"cidr": format!("{PEER_V4}/32"), "expires_in_secs": null}])
    );

    // IPv6 by prefix; then both removed.
    w.ld.must(&["deny", "add", "fd00:231::/64"]);
    assert!(
        !w.connects(Family::V6),
        "a source in a denied IPv6 prefix connected"
    );
    w.ld.must(&["deny", "del", &PEER_V4.to_string()]);
    w.ld.must(&["deny", "del", "fd00:231::/64"]);
    for family in [Family::V4, Family::V6] {
        let back = wait_for(Duration::from_secs(10), || w.connects(family).then_some(()));
        assert!(back.is_some(), "{family:?} still blocked after deny del");
    }
    assert_eq!(w.list(), serde_json::json!([]));
    assert!(w.raw_entries().is_empty(), "deny del left entries");
}

#[test]
fn a_timed_entry_expires_in_the_datapath() {
    let w = world("deny-for");
    let out =
        w.ld.must(&["deny", "add", &PEER_V4.to_string(), "--for", "2s"]);
    assert!(out.stdout.contains("for 2s"), "{out}");
    let list = w.list();
    let left = list[0]["expires_in_secs"]
        .as_u64()
        .unwrap_or_else(|| panic!("{list}"));
    assert!(left <= 2, "time left {left} s for a 2 s entry");
    assert!(!w.connects(Family::V4), "blocked while the entry holds");
    // No lockdown command runs from here on: the datapath alone lets the source back.
    let back = wait_for(Duration::from_secs(10), || {
        w.connects(Family::V4).then_some(())
    });
    assert!(
        back.is_some(),
        "the source was still blocked 10 s after a 2 s entry"
    );
    let raw = w.raw_entries();
    assert_eq!(
        raw.len(),
        1,
        "the expired entry is still in the map, unreaped: {raw:?}"
    );
    // The next change reaps it, and `list` never shows it.
    assert_eq!(w.list(), serde_json::json!([]));
    w.ld.must(&["deny", "add", "203.0.113.9"]);
    let raw = w.raw_entries();
    assert_eq!(raw.len(), 1, "reaped on the next change: {raw:?}");
    assert_eq!(raw[0].0.to_string(), "203.0.113.9/32");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let w = world("deny-bad");
    w.ld.must(&["deny", "add", "203.0.113.9", "--for", "1h"]);
    let before = w.raw_entries();
    for (args, needle) in [
        (vec!["deny", "add", "10.0.0.0/33"], "10.0.0.0/33"),
        (
            vec!["deny", "add", "300.1.1.1"],
            "not an IPv4 or IPv6 address",
        ),
        (
            vec!["deny", "add", "10.0.0.1", "--for", "soon"],
            "not a duration",
        ),
        (
            vec!["deny", "add", "10.0.0.1", "--for", "0s"],
            "longer than zero",
        ),
        (vec!["deny", "del", "fd00::/129"], "fd00::/129"),
        (
            vec!["deny", "add", "10.0.0.1", "--iface", "nosuch0"],
            "nosuch0 is not locked down",
        ),
    ] {
        w.ld.refuse(&args, &[needle]);
        assert_eq!(
            w.raw_entries(),
            before,
            "`{}` changed the blocklist",
            args.join(" ")
        );
    }
    assert!(w.connects(Family::V4), "the peer is not denied");

    // Nothing locked down: a clear error.
    w.ld.down();
    w.ld.refuse(&["deny", "add", "10.0.0.1"], &["nothing is locked down"]);
    w.ld.refuse(&["deny", "list"], &["nothing is locked down"]);
}

#[test]
fn the_lockout_guard_refuses_to_deny_the_admins_session() {
    let w = world("deny-guard");
    let session = format!("{PEER_V4} 40022 {} 22", Family::V4.origin());
    let env = [("SSH_CONNECTION", session)];
    let out = w.ld.run_env(&["deny", "add", "10.231.0.0/24"], &env);
    assert!(
        !out.success(),
        "denying the admin's own source should be refused: {out}"
    );
    assert!(
        out.stderr.contains("--force") && out.stderr.contains(&PEER_V4.to_string()),
        "{out}"
    );
    assert!(
        w.raw_entries().is_empty(),
        "a refused deny changed the blocklist"
    );
    let out =
        w.ld.run_env(&["deny", "add", "10.231.0.0/24", "--force"], &env);
    assert!(out.success(), "--force: {out}");
    assert!(!w.connects(Family::V4));
}

#[test]
fn entries_survive_up_replace_and_the_flags_follow_the_maps() {
    let w = world("deny-keep");
    w.ld.must(&["deny", "add", &PEER_V4.to_string(), "--for", "1h"]);
    w.ld.must(&["deny", "add", &format!("{PEER_V6}")]);
    // A new policy (another config) and a plain upgrade both keep the entries and their flags.
    w.ld.must(&["up", "--replace", "--iface", ORIGIN_IF, "--no-dhcp"]);
    assert!(!w.connects(Family::V4), "a config change lifted the bans");
    w.ld.must(&["up", "--replace", "--iface", ORIGIN_IF]);
    let list = w.list();
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(
        !w.connects(Family::V4) && !w.connects(Family::V6),
        "a policy change lifted the bans"
    );
    w.ld.must(&["deny", "flush"]);
    // Neighbour discovery from the denied source was dropped too: give it time to recover.
    for family in [Family::V4, Family::V6] {
        let back = wait_for(Duration::from_secs(10), || w.connects(family).then_some(()));
        assert!(back.is_some(), "{family:?} still blocked after deny flush");
    }
}

#[test]
fn the_config_files_deny_entries_apply_at_up() {
    let w = Origin::new("deny-cfg").origin_echo(&[SSH]);
    let path = std::env::temp_dir().join(format!("lockdown-deny-cfg-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!("[[interface]]\nname = \"{ORIGIN_IF}\"\ndeny = [\"{PEER_V4}\"]\n"),
    )
    .expect("writing the config");
    let path_str = path.to_str().expect("UTF-8 path");
    w.ld.must(&["up", "--config", path_str]);
    assert!(
        !w.connects(Family::V4),
        "the config's deny entry does not hold"
    );
    assert!(w.connects(Family::V6), "only the IPv4 address is denied");
    let list = w.list();
    assert_eq!(
        list,
        serde_json::json!([{"cidr": format!("{PEER_V4}/32"), "expires_in_secs": null}])
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn a_full_blocklist_is_a_clear_error_that_changes_nothing() {
    let w = world("deny-full");
    let dir = PinDir::new(&w.ld.pin_root, ORIGIN_IF);
    let mut list = Blocklist::open(&dir).expect("opening the pinned blocklist");
    for i in 0..lockdown_common::contract::maps::MAX_DENY {
        let [_, b, c, d] = i.to_be_bytes();
        let net = DenyNet::parse(&format!("100.{b}.{c}.{d}")).expect("an address");
        list.add(&net, lockdown_common::stages::deny::FOREVER)
            .unwrap_or_else(|e| panic!("adding entry {i}: {e:#}"));
    }
    w.ld.refuse(
        &["deny", "add", "203.0.113.9"],
        &["the blocklist of ldo0 is full", "deny del"],
    );
    let raw = w.raw_entries();
    assert_eq!(
        raw.len(),
        lockdown_common::contract::maps::MAX_DENY as usize
    );
    assert!(
        !raw.iter().any(|(n, _)| n.to_string() == "203.0.113.9/32"),
        "the refused entry is in the map"
    );
    // Prefixes have their own map, with room.
    w.ld.must(&["deny", "add", "203.0.113.0/24"]);
}

#[test]
fn lockdown_log_names_the_denied_drops() {
    let w = world("deny-log");
    w.ld.must(&["deny", "add", &PEER_V4.to_string()]);
    let events = log_events(&w.ld, 1, || assert!(!w.connects(Family::V4)));
    assert_eq!(events[0]["reason"], "drop_denied", "event: {}", events[0]);
    assert_eq!(
        events[0]["src"],
        PEER_V4.to_string(),
        "event: {}",
        events[0]
    );
}
