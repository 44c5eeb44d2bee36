//! lockdown's netlink TC egress filter, the egress attachment of kernels without TCX (before Linux
//! 6.6), forced on any kernel with the test hook `LOCKDOWN_FORCE_TC=netlink`: the clsact qdisc is
//! created when missing and removed on `down` only when lockdown created it and nothing else uses
//! it; another tool's qdisc and filters are left exactly as they were; the filter enforces with no
//! lockdown process; `up --replace` swaps its program with no moment without one, and moves
//! between the two attachment kinds; `status` names the kind and the XDP program variant.
//!
//! Needs root and the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test tc_netlink -- --test-threads=1
//! ```

use std::{
    collections::BTreeMap,
    ops::Deref,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::Duration,
};

use lockdown_testbed::{
    cli::{CmdOutput, Lockdown, NETLINK_FILTER},
    netns::ns_must,
    origin::Origin,
    pair::{ORIGIN_IF, origin_addr, peer_addr},
    traffic::{DROP_TIMEOUT, OK_TIMEOUT, exchange, tcp_connect},
};
use lockdown_user::{datapath::pins::PIN_CLSACT_CREATED, host::tc};

const SSH: u16 = 22;
const WEB: u16 = 8080;
const PEER_ECHO: u16 = 7000;
const FORCE: &str = "LOCKDOWN_FORCE_TC";

/// One test's [`Origin`]: an echo server on the peer, SSH and web servers on the origin; with
/// the checks of these tests (which take the place of [`Origin`]'s own of the same name).
struct World(Origin);

impl Deref for World {
    type Target = Origin;

    fn deref(&self) -> &Origin {
        &self.0
    }
}

impl World {
    fn new(tag: &str) -> Self {
        Self(
            Origin::new(tag)
                .peer_echo(&[PEER_ECHO])
                .origin_echo(&[SSH, WEB]),
        )
    }

    /// `lockdown ARGS` with the netlink filter forced; panics unless it succeeds.
    fn netlink(&self, args: &[&str]) -> CmdOutput {
        let out = self.ld.run_env(args, &[(FORCE, "netlink".to_owned())]);
        assert!(out.success(), "expected success: {out}");
        out
    }

    /// `tc ARGS` in the origin namespace.
    fn tc(&self, args: &[&str]) -> String {
        ns_must(&self.pair.origin, "tc", args)
    }

    /// The qdisc in the origin interface's ingress slot, as `tc` shows it.
    fn clsact(&self) -> bool {
        self.tc(&["qdisc", "show", "dev", ORIGIN_IF])
            .lines()
            .any(|l| l.starts_with("qdisc clsact ffff:"))
    }

    /// Every filter on both clsact hooks, as `tc` shows them.
    fn filters(&self) -> (String, String) {
        (
            self.tc(&["filter", "show", "dev", ORIGIN_IF, "ingress"]),
            self.tc(&["filter", "show", "dev", ORIGIN_IF, "egress"]),
        )
    }

    /// Another tool's filters: a u32 filter on each hook (lockdown never reads or changes them).
    fn add_foreign_filters(&self) {
        self.tc(&[
            "filter",
            "add",
            "dev",
            ORIGIN_IF,
            "egress",
            "prio",
            "7",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dst",
            "192.0.2.1/32",
            "flowid",
            "1:1",
        ]);
        self.tc(&[
            "filter",
            "add",
            "dev",
            ORIGIN_IF,
            "ingress",
            "prio",
            "3",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "src",
            "192.0.2.1/32",
            "flowid",
            "1:2",
        ]);
    }

    /// The origin opens a connection to the peer and exchanges a message.
    fn outbound(&self) -> Result<(), String> {
        let mut s = tcp_connect(&self.pair.origin, peer_addr(PEER_ECHO), OK_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        exchange(&mut s, b"out and back").map_err(|e| format!("exchange: {e}"))
    }

    fn assert_outbound_ok(&self) {
        if let Err(e) = self.outbound() {
            panic!(
                "the origin's outbound connection failed: {e}\n{}",
                self.context()
            );
        }
    }

    /// The peer connects to the origin's `port`: `true` if it connected.
    fn inbound(&self, port: u16) -> bool {
        tcp_connect(&self.pair.peer, origin_addr(port), DROP_TIMEOUT)
            .is_ok_and(|mut s| exchange(&mut s, b"in").is_ok())
    }

    fn context(&self) -> String {
        let (ingress, egress) = self.filters();
        format!(
            "qdiscs: {}\ningress filters:\n{ingress}\negress filters:\n{egress}\nstatus: {}",
            self.tc(&["qdisc", "show", "dev", ORIGIN_IF]),
            self.ld
                .run(&["status", "--iface", ORIGIN_IF, "--json", "--interval", "0"])
                .stdout
        )
    }

    /// Whether the running kernel has TCX (`lockdown probe`, without the hook).
    fn kernel_has_tcx(&self) -> bool {
        let out = self
            .ld
            .run_unset(&["probe", "--iface", ORIGIN_IF, "--json"], FORCE);
        assert!(out.success(), "{out}");
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("probe --json is not JSON ({e}): {out}"));
        v["tcx"]
            .as_bool()
            .unwrap_or_else(|| panic!("probe --json has no tcx: {v}"))
    }
}

/// On an interface with no qdisc, `up` creates the clsact qdisc and marks it as lockdown's; the
/// filter sits at lockdown's priority and handle and enforces with no lockdown process; `status`
/// names the attachment kind and the variant; `down` removes the filter and the qdisc.
#[test]
fn creates_the_clsact_qdisc_when_missing_and_removes_it_on_down() {
    let w = World::new("tcnl-create");
    assert!(!w.clsact(), "a fresh veth has no clsact qdisc");
    w.netlink(&["up", "--iface", ORIGIN_IF]);

    assert!(
        w.clsact(),
        "up did not create the clsact qdisc\n{}",
        w.context()
    );
    assert!(
        w.ld.pin_dir()
            .join(PIN_CLSACT_CREATED)
            .symlink_metadata()
            .is_ok(),
        "the marker that lockdown created the clsact qdisc is missing"
    );
    let filter = w.ld.netlink_filter().expect("lockdown's filter");
    assert_eq!(
        (
            filter.kind.as_str(),
            filter.name.as_deref(),
            filter.priority,
            filter.handle
        ),
        ("bpf", Some("lockdown_egress"), tc::PRIORITY, tc::HANDLE),
        "{filter:?}"
    );
    assert!(
        w.tc(&["filter", "show", "dev", ORIGIN_IF, "egress"])
            .contains("direct-action"),
        "the filter is not in direct-action mode\n{}",
        w.context()
    );
    assert_eq!(w.ld.egress_kind(), "netlink");

    let s = w.status();
    assert_eq!(s["egress"]["kind"], "netlink", "{s}");
    assert_eq!(s["egress"]["clsact_created"], true, "{s}");
    assert_eq!(s["egress"]["problem"], serde_json::Value::Null, "{s}");
    assert_eq!(
        s["egress"]["prog_id"],
        filter.prog_id.expect("prog id"),
        "{s}"
    );
    assert_eq!(
        s["xdp_variant"], "frags",
        "native mode runs the multi-buffer variant: {s}"
    );
    let text =
        w.ld.must(&["status", "--iface", ORIGIN_IF, "--interval", "0"])
            .stdout;
    for needle in [
        "egress     netlink tc filter",
        "clsact qdisc created by lockdown",
        "xdp        lockdown_ingress: multi-buffer",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} missing from status:\n{text}"
        );
    }

    // No lockdown process runs; the filter learns the origin's flows on its own.
    assert!(w.ld.processes().is_empty(), "up left a process behind");
    w.assert_outbound_ok();
    assert!(
        w.inbound(SSH),
        "the allowed port is closed\n{}",
        w.context()
    );
    assert!(
        !w.inbound(WEB),
        "a port that is not allowed is open\n{}",
        w.context()
    );

    w.ld.down();
    assert!(
        !w.clsact(),
        "down left the clsact qdisc lockdown created\n{}",
        w.context()
    );
    assert_eq!(w.ld.netlink_filter(), None);
    assert!(w.pair.origin_xdp().is_none(), "down left the XDP program");
    assert!(w.inbound(WEB), "after down the interface should be open");
}

/// A clsact qdisc another tool created, with that tool's filters on both hooks, is used as it is
/// and left exactly as it was by `down`; and a clsact qdisc lockdown created stays when another
/// tool has put a filter on it since.
#[test]
fn another_tools_qdisc_and_filters_are_left_as_they_were() {
    let w = World::new("tcnl-foreign");
    w.tc(&["qdisc", "add", "dev", ORIGIN_IF, "clsact"]);
    w.add_foreign_filters();
    let before = w.filters();

    w.netlink(&["up", "--iface", ORIGIN_IF, "--mode", "skb"]);
    assert!(
        w.ld.pin_dir()
            .join(PIN_CLSACT_CREATED)
            .symlink_metadata()
            .is_err(),
        "lockdown marked another tool's clsact qdisc as its own"
    );
    let s = w.status();
    assert_eq!(s["egress"]["kind"], "netlink", "{s}");
    assert_eq!(s["egress"]["clsact_created"], false, "{s}");
    assert_eq!(
        s["xdp_variant"], "linear",
        "skb mode runs the single-buffer variant: {s}"
    );
    assert!(
        w.ld.netlink_filter().is_some(),
        "no lockdown filter\n{}",
        w.context()
    );
    let (ingress, egress) = w.filters();
    assert_eq!(ingress, before.0, "up changed the ingress hook's filters");
    assert!(
        egress.contains("pref 7 u32"),
        "up removed the other egress filter:\n{egress}"
    );
    w.assert_outbound_ok();
    assert!(
        !w.inbound(WEB),
        "a port that is not allowed is open\n{}",
        w.context()
    );

    w.ld.down();
    assert!(w.clsact(), "down deleted another tool's clsact qdisc");
    assert_eq!(w.filters(), before, "down changed another tool's filters");

    // lockdown creates the qdisc; another tool adds a filter to it; `down` keeps both.
    w.tc(&["qdisc", "del", "dev", ORIGIN_IF, "clsact"]);
    w.netlink(&["up", "--iface", ORIGIN_IF]);
    assert_eq!(w.status()["egress"]["clsact_created"], true);
    w.add_foreign_filters();
    let (ingress, _) = w.filters();
    w.ld.down();
    assert!(
        w.clsact(),
        "down deleted a clsact qdisc another filter uses"
    );
    assert_eq!(
        w.filters().0,
        ingress,
        "down changed another tool's ingress filter"
    );
    assert!(
        w.filters().1.contains("pref 7 u32"),
        "down removed another tool's egress filter"
    );
    assert_eq!(w.ld.netlink_filter(), None, "down left lockdown's filter");
}

/// `up --replace` swaps the filter's program in place while the origin keeps opening connections,
/// and moves to TCX and back when the kernel has it. Every connection needs the egress program to
/// learn its SYN before the SYN-ACK arrives: a moment without one shows as a SYN-ACK the XDP
/// program drops (only the origin opens connections here, so no drop counter may move at all).
#[test]
fn replace_leaves_no_moment_without_an_egress_program() {
    let w = Arc::new(World::new("tcnl-replace"));
    w.netlink(&["up", "--iface", ORIGIN_IF]);
    let (_, first_prog) = w.ld.egress_ids();
    let drops_before = drops(&w.ld);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let traffic = {
        let (w, stop, ok, failures) = (
            Arc::clone(&w),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match w.outbound() {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().expect("failures").push(e),
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut prog = first_prog;
    for round in 0..3 {
        w.netlink(&["up", "--replace", "--iface", ORIGIN_IF]);
        let (filter, now) = w.ld.egress_ids();
        assert_eq!(
            filter, NETLINK_FILTER,
            "replace #{round} left no netlink filter"
        );
        assert_ne!(
            now, prog,
            "replace #{round} did not swap the filter's program"
        );
        prog = now;
    }
    let tcx = w.kernel_has_tcx();
    let out =
        w.ld.run_unset(&["up", "--replace", "--iface", ORIGIN_IF], FORCE);
    assert!(out.success(), "{out}");
    if tcx {
        assert_eq!(w.ld.egress_kind(), "tcx", "replace did not move to TCX");
        assert_eq!(
            w.ld.netlink_filter(),
            None,
            "the netlink filter stayed after the move"
        );
        assert!(
            !w.clsact(),
            "the clsact qdisc lockdown created stayed after the move"
        );
        w.netlink(&["up", "--replace", "--iface", ORIGIN_IF]);
    }
    assert_eq!(w.ld.egress_kind(), "netlink");
    assert!(
        w.ld.netlink_filter().is_some(),
        "no filter after moving back\n{}",
        w.context()
    );

    // Traffic keeps going for a moment after the last swap.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    traffic.join().expect("the traffic thread");
    let (ok, failures) = (
        ok.load(Ordering::SeqCst),
        failures.lock().expect("failures").clone(),
    );
    let dropped: Vec<_> = drops(&w.ld)
        .into_iter()
        .filter(|(name, n)| drops_before.get(name) != Some(n))
        .collect();
    assert!(
        dropped.is_empty(),
        "the XDP program dropped replies during the replaces (counters now {dropped:?}, before \
         {drops_before:?}): a moment without an egress program\n{}",
        w.context()
    );
    assert!(
        ok >= 20,
        "too few connections ran during the replaces ({ok}) to show anything"
    );
    // Failures without a drop are this machine's hiccups (a 3 s read timeout under load); a
    // broken path fails most connections.
    assert!(
        failures.len() * 20 <= ok,
        "{} of {} outbound connections failed: {failures:?}\n{}",
        failures.len(),
        failures.len() + ok,
        w.context()
    );
    w.ld.down();
    assert!(!w.clsact(), "down left the clsact qdisc lockdown created");
}

/// The drop counters, by name.
fn drops(ld: &Lockdown) -> BTreeMap<String, u64> {
    ld.counters()
        .into_iter()
        .filter(|(name, _)| name.starts_with("drop"))
        .collect()
}

/// A filter removed behind lockdown's back (another tool deleted the clsact qdisc) is reported by
/// `status`, and `up --replace` attaches it again.
#[test]
fn a_filter_removed_behind_lockdowns_back_is_reported_and_restored() {
    let w = World::new("tcnl-gone");
    w.netlink(&["up", "--iface", ORIGIN_IF]);
    w.tc(&["qdisc", "del", "dev", ORIGIN_IF, "clsact"]);
    let s = w.status();
    let problem = s["egress"]["problem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        problem.contains("gone") && problem.contains("up --replace"),
        "status should say the filter is gone and how to restore it: {s}"
    );
    let text =
        w.ld.must(&["status", "--iface", ORIGIN_IF, "--interval", "0"])
            .stdout;
    assert!(
        text.contains("PROBLEM"),
        "the text status hides the problem:\n{text}"
    );

    w.netlink(&["up", "--replace", "--iface", ORIGIN_IF]);
    assert!(w.clsact(), "replace did not create the clsact qdisc again");
    assert!(
        w.ld.netlink_filter().is_some(),
        "replace did not attach the filter again"
    );
    assert_eq!(w.status()["egress"]["problem"], serde_json::Value::Null);
    w.assert_outbound_ok();
}
