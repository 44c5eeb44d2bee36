//! Safety end-to-end tests: what happens to the filter and to open connections when the loader
//! dies, is upgraded, or is pointed at a policy that would cut the operator off.
//!
//! Each test builds its own namespace pair (see `lockdown_testbed::pair`) with real sockets on both
//! sides, runs the `lockdown` binary in the origin namespace with a private pin root, and removes
//! everything when it ends, pass or fail. Needs root and the binary built first:
//!
//! ```text
//! cargo build -p lockdown-user
//! cargo test -p lockdown-tests --test safety -- --test-threads=1
//! ```
//!
//! Timeouts only make a dropped packet or a hung command fail fast; no test asserts on timing.

use std::{
    collections::BTreeSet,
    fs,
    io::{self, Read as _, Write as _},
    mem,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::{self},
    time::Duration,
};

use aya::programs::links::{FdLink, PinnedLink};
use lockdown_common::contract::maps::PIN_LINK_INGRESS;
use lockdown_testbed::{
    bg::Bg,
    cli::{Lockdown, check_refused, wait_for},
    netns::in_ns,
    origin::Origin,
    pair::{Family, NetPair, ORIGIN_IF, ORIGIN_V4, PEER_V4, any, origin_addr, peer_addr},
    traffic::{OK_TIMEOUT, exchange, tcp_connect},
};
use nix::sys::signal::Signal;

const SSH: u16 = 22;
/// An origin service that a test allows at some point.
const WEB: u16 = 8080;
/// An origin service that is never allowed: it listens, so a SYN that got through would connect.
const CLOSED: u16 = 9090;
/// The "SSH on a non-default port" of the lockout and pre-attach tests.
const ALT_SSH: u16 = 2222;
/// The peer's echo service (the "internet" server the origin talks to).
const PEER_ECHO: u16 = 7000;

// ---------------------------------------------------------------------------------------------
// The test world.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LinkIds {
    links: [u32; 2],
    programs: [u32; 2],
}

/// One entry of `flows --json`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    proto: String,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
    state: String,
    seeded: bool,
}

impl Flow {
    fn from_json(v: &serde_json::Value) -> Self {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("flow without string {k:?}: {v}"))
                .to_owned()
        };
        let port = |k: &str| {
            v[k].as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or_else(|| panic!("flow without port {k:?}: {v}"))
        };
        let addr = |k: &str| {
            s(k).parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("flow with a bad address {k:?} ({e}): {v}"))
        };
        Self {
            proto: s("proto"),
            local: addr("local"),
            local_port: port("local_port"),
            remote: addr("remote"),
            remote_port: port("remote_port"),
            state: s("state"),
            seeded: v["seeded"].as_bool().unwrap_or(false),
        }
    }

    /// The 5-tuple, without state.
    fn tuple(&self) -> (String, IpAddr, u16, IpAddr, u16) {
        (
            self.proto.clone(),
            self.local,
            self.local_port,
            self.remote,
            self.remote_port,
        )
    }
}

/// The flow tuple of a TCP socket in the origin namespace.
fn tuple_of(origin_side: &TcpStream) -> (String, IpAddr, u16, IpAddr, u16) {
    let local = origin_side
        .local_addr()
        .unwrap_or_else(|e| panic!("local address of an origin socket: {e}"));
    let remote = origin_side
        .peer_addr()
        .unwrap_or_else(|e| panic!("remote address of an origin socket: {e}"));
    (
        "tcp".to_owned(),
        local.ip().to_canonical(),
        local.port(),
        remote.ip().to_canonical(),
        remote.port(),
    )
}

/// The flow of `origin_side` in `flows`, if listed.
fn find_flow<'a>(flows: &'a [Flow], origin_side: &TcpStream) -> Option<&'a Flow> {
    let t = tuple_of(origin_side);
    flows.iter().find(|f| f.tuple() == t)
}

/// A background `lockdown` process whose stdout and stderr are collected line by line. Killed
/// (SIGKILL) and reaped on drop if still running.
/// `tcpi_total_retrans` of a TCP socket: segments it had to send again.
fn total_retrans(s: &TcpStream) -> u32 {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { mem::zeroed() };
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).expect("small struct");
    // SAFETY: `info` is valid for `len` bytes; the kernel writes at most `len`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", io::Error::last_os_error());
    info.tcpi_total_retrans
}

/// A listener in the peer; `accept` returns the peer's side of a connection the origin opened.
struct PeerListener(TcpListener);

impl PeerListener {
    fn bind(pair: &NetPair, port: u16) -> Self {
        let addr = any(port);
        let l = in_ns(&pair.peer, move || TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("binding {addr} in the peer: {e}"));
        l.set_nonblocking(true)
            .unwrap_or_else(|e| panic!("making the peer listener non-blocking: {e}"));
        Self(l)
    }

    fn accept(&self) -> TcpStream {
        let s = wait_for(OK_TIMEOUT, || self.0.accept().ok())
            .unwrap_or_else(|| panic!("the peer never accepted the origin's connection"))
            .0;
        s.set_nonblocking(false)
            .unwrap_or_else(|e| panic!("making an accepted socket blocking: {e}"));
        s.set_read_timeout(Some(OK_TIMEOUT))
            .unwrap_or_else(|e| panic!("setting a read timeout: {e}"));
        s.set_write_timeout(Some(OK_TIMEOUT))
            .unwrap_or_else(|e| panic!("setting a write timeout: {e}"));
        s
    }
}

/// Sets a flag on drop (also when unwinding), so scoped worker threads stop.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Exchanges `rounds` numbered messages on `s`, panicking with `what` on the first failure.
fn exchange_n(s: &mut TcpStream, rounds: usize, what: &str, w: &Origin) {
    for i in 0..rounds {
        exchange(s, format!("{what} #{i}").as_bytes()).unwrap_or_else(|e| {
            panic!(
                "{what}: message {i} did not come back: {e}\n{}",
                w.context()
            )
        });
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of `run`: the pins keep enforcing, and a restart adopts them.

#[derive(Clone, Copy, Debug)]
enum Restart {
    Run,
    UpReplace,
}

/// Which release locked the interface down first. An upgrade from the previous release carries
/// its pinned maps over into this release's layout (`lockdown_user::datapath::migrate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    ThisRelease,
    PreviousRelease,
}

/// What the safety tests do through an [`Origin`].
trait SafetyChecks {
    /// One counter of `status --json --interval 0`.
    fn counter(&self, name: &str) -> u64;
    /// The allowlist of `status --json --interval 0`.
    fn allow(&self) -> Vec<String>;
    /// `flows --json` (with `extra` filters), parsed.
    fn flows(&self, extra: &[&str]) -> Vec<Flow>;
    /// The kernel ids of the pinned (ingress, egress) links and of the programs in them (for a
    /// netlink egress filter, see [`Lockdown::egress_ids`]).
    fn link_ids(&self) -> LinkIds;
    /// Whether the origin interface has no XDP program and lockdown has no pins for it.
    fn assert_not_locked(&self, what: &str);
    /// Runs the CLI of `first` from now on (and this release's after [`SafetyChecks::upgraded`]).
    fn first(&mut self, first: First);
    /// Runs this release's CLI from now on.
    fn upgraded(&mut self);
    /// After an upgrade from the previous release: its single flow table's pin is gone and every
    /// map of this release is pinned.
    fn assert_upgraded_pins(&self, first: First);
}

impl SafetyChecks for Origin {
    fn counter(&self, name: &str) -> u64 {
        let s = self.status();
        s["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("status --json has no counter {name:?}: {s}"))
    }

    fn allow(&self) -> Vec<String> {
        let s = self.status();
        s["allow"]
            .as_array()
            .unwrap_or_else(|| panic!("status --json has no \"allow\" array: {s}"))
            .iter()
            .map(|v| v.as_str().unwrap_or("?").to_owned())
            .collect()
    }

    fn flows(&self, extra: &[&str]) -> Vec<Flow> {
        self.flows_json(extra).iter().map(Flow::from_json).collect()
    }

    fn link_ids(&self) -> LinkIds {
        let path = self.ld.pin_dir().join(PIN_LINK_INGRESS);
        let link = FdLink::from(
            PinnedLink::from_pin(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display())),
        );
        let info = link
            .info()
            .unwrap_or_else(|e| panic!("reading the info of {}: {e}", path.display()));
        let (ingress, ingress_prog) = (info.id(), info.program_id());
        let (egress, egress_prog) = self.ld.egress_ids();
        LinkIds {
            links: [ingress, egress],
            programs: [ingress_prog, egress_prog],
        }
    }

    fn assert_not_locked(&self, what: &str) {
        assert!(
            !self.ld.is_locked(),
            "{what}: {ORIGIN_IF} is still locked down (pins in {})",
            self.ld.pin_dir().display()
        );
        let xdp = self.pair.origin_xdp();
        assert!(
            xdp.is_none(),
            "{what}: an XDP program is attached: {xdp:?}\n{}",
            self.pair.origin_link_text()
        );
    }

    fn first(&mut self, first: First) {
        if first == First::PreviousRelease {
            self.ld.bin = lockdown_testbed::cli::previous_bin();
        }
    }

    fn upgraded(&mut self) {
        self.ld.bin = lockdown_testbed::cli::bin();
    }

    fn assert_upgraded_pins(&self, first: First) {
        let dir = self.ld.pin_dir();
        if first == First::PreviousRelease {
            assert!(
                !dir.join(lockdown_user::datapath::migrate::LEGACY_FLOWS)
                    .exists(),
                "the previous release's flow table is still pinned"
            );
        }
        for name in lockdown_common::contract::maps::ALL {
            assert!(
                dir.join(name).exists(),
                "{name} is not pinned after the upgrade"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(lockdown_user::datapath::migrate::STAGING))
            .collect();
        assert!(
            leftovers.is_empty(),
            "staging pins left behind: {leftovers:?}"
        );
    }
}

/// Flows the allowlist (tcp/22 and tcp/8080 here) does not vouch for: the ones this release keeps.
fn unvouched(flows: &[Flow]) -> Vec<&Flow> {
    flows
        .iter()
        .filter(|f| !(f.proto == "tcp" && [SSH, WEB].contains(&f.local_port)))
        .collect()
}

fn sigkill_run_then_restart(tag: &str, restart: Restart, first: First) {
    let mut w = Origin::new(tag)
        .origin_echo(&[SSH, WEB, CLOSED])
        .peer_echo(&[PEER_ECHO]);
    w.first(first);
    let mut run = Bg::spawn(&w.ld, &["run", "--iface", ORIGIN_IF]);
    run.wait_stdout("locked down", Duration::from_secs(10));
    w.ld.must(&["allow", "add", "tcp/8080", "--iface", ORIGIN_IF]);

    let mut outbound = w.assert_outbound_ok(PEER_ECHO);
    exchange_n(&mut outbound, 2, "outbound before the kill", &w);
    let mut inbound = w.assert_inbound_ok(Family::V4, SSH);
    let mut inbound_web = w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_dropped(Family::V4, CLOSED);

    let flows_before = w.flows(&[]);
    let ours = find_flow(&flows_before, &outbound)
        .unwrap_or_else(|| {
            panic!("the outbound connection is not in the flow table: {flows_before:?}")
        })
        .clone();
    assert_eq!(
        ours.state, "established",
        "the outbound flow before the kill: {ours:?}"
    );
    let ids_before = w.link_ids();

    run.signal(Signal::SIGKILL);
    let status = run.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "`lockdown run` should have died of SIGKILL: {status}\n{}",
        run.output()
    );
    drop(run);

    // The filter outlives its loader.
    assert!(w.ld.is_locked(), "the pins went with the killed `run`");
    let xdp = w.pair.origin_xdp();
    assert!(
        xdp.is_some(),
        "XDP was detached when `run` was killed\n{}",
        w.pair.origin_link_text()
    );
    assert_eq!(
        w.link_ids(),
        ids_before,
        "the links changed when `run` was killed"
    );
    w.assert_inbound_dropped(Family::V4, CLOSED);
    w.assert_inbound_ok(Family::V4, WEB);
    exchange_n(&mut outbound, 3, "outbound after the kill", &w);
    exchange_n(&mut inbound, 3, "inbound tcp/22 after the kill", &w);
    exchange_n(&mut inbound_web, 3, "inbound tcp/8080 after the kill", &w);
    assert_eq!(
        w.allow(),
        ["tcp/22", "tcp/8080"],
        "the allowlist after the kill"
    );

    let flows_mid = w.flows(&[]);
    w.upgraded();
    let _restarted = match restart {
        Restart::Run => {
            let mut again = Bg::spawn(&w.ld, &["run", "--iface", ORIGIN_IF]);
            again.wait_stdout("adopted", Duration::from_secs(10));
            Some(again)
        }
        Restart::UpReplace => {
            let out = w.ld.must(&["up", "--iface", ORIGIN_IF, "--replace"]);
            assert!(
                out.stdout.contains("replaced"),
                "up --replace should confirm: {out}"
            );
            None
        }
    };

    let ids_after = w.link_ids();
    assert_eq!(
        ids_after.links, ids_before.links,
        "the restart ({restart:?}) should adopt the pinned links, not make new ones"
    );
    for (i, (before, after)) in ids_before
        .programs
        .iter()
        .zip(&ids_after.programs)
        .enumerate()
    {
        assert_ne!(
            before, after,
            "the restart ({restart:?}) should have swapped new programs into link {i}: {ids_before:?} -> {ids_after:?}"
        );
    }
    w.assert_upgraded_pins(first);
    let flows_after = w.flows(&[]);
    let after: BTreeSet<_> = flows_after.iter().map(Flow::tuple).collect();
    let lost: Vec<&Flow> = unvouched(&flows_mid)
        .into_iter()
        .filter(|f| !after.contains(&f.tuple()))
        .collect();
    assert!(
        lost.is_empty(),
        "the restart ({restart:?}, {first:?}) lost flows: {lost:?}\nbefore: {flows_mid:?}\nafter: {flows_after:?}"
    );
    assert!(
        unvouched(&flows_after).len() >= unvouched(&flows_before).len(),
        "the flow count fell across kill and restart ({restart:?}, {first:?}): {} -> {}",
        flows_before.len(),
        flows_after.len()
    );
    let ours_after = find_flow(&flows_after, &outbound).unwrap_or_else(|| {
        panic!("the outbound flow is gone after the restart ({restart:?}): {flows_after:?}")
    });
    assert_eq!(
        ours_after.state, "established",
        "the outbound flow after the restart"
    );
    assert_eq!(
        w.allow(),
        ["tcp/22", "tcp/8080"],
        "`allow add` before the kill did not survive the restart ({restart:?})"
    );
    exchange_n(&mut outbound, 3, "outbound after the restart", &w);
    exchange_n(&mut inbound, 3, "inbound tcp/22 after the restart", &w);
    exchange_n(
        &mut inbound_web,
        3,
        "inbound tcp/8080 after the restart",
        &w,
    );
    w.assert_inbound_dropped(Family::V4, CLOSED);
    w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_ok(Family::V4, SSH);
}

#[test]
fn sigkill_run_keeps_enforcing_and_run_adopts_pins() {
    sigkill_run_then_restart("kill-run", Restart::Run, First::ThisRelease);
}

#[test]
fn sigkill_run_keeps_enforcing_and_up_replace_adopts_pins() {
    sigkill_run_then_restart("kill-rep", Restart::UpReplace, First::ThisRelease);
}

#[test]
fn run_adopts_the_previous_releases_pins_across_the_layout_change() {
    sigkill_run_then_restart("upg-run", Restart::Run, First::PreviousRelease);
}

#[test]
fn up_replace_upgrades_the_previous_releases_pins_across_the_layout_change() {
    sigkill_run_then_restart("upg-rep", Restart::UpReplace, First::PreviousRelease);
}

// ---------------------------------------------------------------------------------------------
// Atomic upgrade under traffic.

#[test]
fn an_upgrade_it_cannot_carry_over_is_refused_and_changes_nothing() {
    let w = Origin::new("upg-refuse").origin_echo(&[SSH]);
    w.up(&["--allow", "tcp/22", "--allow", "tcp/8080"]);
    // A pin this release knows nothing of, as a future or foreign release might leave.
    let dir = w.ld.pin_dir();
    let frags = aya::maps::MapData::from_pin(dir.join(lockdown_common::contract::maps::FRAGS))
        .unwrap_or_else(|e| panic!("opening the pinned fragment table: {e}"));
    frags
        .pin(dir.join("LD_UNKNOWN"))
        .unwrap_or_else(|e| panic!("pinning LD_UNKNOWN: {e}"));
    let listing = || {
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (pins_before, ids_before) = (listing(), w.link_ids());
    for args in [
        &["up", "--iface", ORIGIN_IF, "--replace"][..],
        &["up", "--iface", ORIGIN_IF, "--replace", "--allow", "tcp/22"],
    ] {
        let out = w.ld.run(args);
        check_refused(
            &out,
            &["LD_UNKNOWN", "nothing was changed", "lockdown down --iface"],
        );
        assert_eq!(listing(), pins_before, "a refused upgrade changed the pins");
        assert_eq!(
            w.link_ids(),
            ids_before,
            "a refused upgrade swapped programs"
        );
        assert_eq!(
            w.allow(),
            ["tcp/22", "tcp/8080"],
            "a refused upgrade changed the rules"
        );
    }
    w.assert_inbound_ok(Family::V4, SSH);
}

#[test]
fn up_replace_under_traffic_loses_nothing() {
    replace_under_traffic("atomic", First::ThisRelease);
}

#[test]
fn upgrade_from_the_previous_release_under_traffic_loses_nothing() {
    replace_under_traffic("atomic-upg", First::PreviousRelease);
}

/// Three `up --replace` of this release under traffic, after `up` by `first`: the first replace
/// of the previous release's pins carries its maps over.
fn replace_under_traffic(tag: &str, first: First) {
    const REPLACES: usize = 3;
    const PEER_PORT: u16 = 7100;
    const PROBERS: usize = 3;
    let mut w = Origin::new(tag).origin_echo(&[SSH, CLOSED]);
    let listener = PeerListener::bind(&w.pair, PEER_PORT);
    w.first(first);
    w.up(&[]);

    // An outbound connection: the origin opens it, then echoes what the peer sends. The peer's
    // messages reach the origin only through the flow table.
    let origin_side = w.assert_outbound_ok(PEER_PORT);
    let mut peer_side = listener.accept();
    let mut origin_echo = origin_side
        .try_clone()
        .unwrap_or_else(|e| panic!("cloning the origin socket: {e}"));
    origin_echo
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap_or_else(|e| panic!("setting a read timeout: {e}"));

    let before = w.status();
    w.upgraded();
    // This release's `status` says whether the running programs are its own: the previous
    // release's pins are another layout, which it names along with the fix.
    if first == First::PreviousRelease {
        w.ld.refuse(
            &["status", "--iface", ORIGIN_IF],
            &["earlier release", "lockdown up --replace --iface"],
        );
    } else {
        let due = w.status();
        assert_eq!(due["replace_due"], false, "before the replace: {due}");
    }
    let ids_before = w.link_ids();
    let stop = AtomicBool::new(false);
    let exchanged = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::<String>::new());
    let probes = AtomicUsize::new(0);
    let probe_timeouts = AtomicUsize::new(0);
    let leaked = Mutex::new(Vec::<String>::new());

    let mut ids = ids_before;
    thread::scope(|scope| {
        let _stop = StopOnDrop(&stop);
        // The origin's echo.
        scope.spawn(|| {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match origin_echo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if origin_echo.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        // The peer talks every couple of milliseconds.
        scope.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                match exchange(&mut peer_side, format!("tick {i}").as_bytes()) {
                    Ok(()) => {
                        exchanged.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("tick {i}: {e}"));
                        // The stream is out of step now; reconnecting would hide the loss.
                        break;
                    }
                }
                i += 1;
                thread::sleep(Duration::from_millis(2));
            }
        });
        // New inbound connections to a closed (listening, not allowed) port, from a few threads;
        // each attempt gives up well before the SYN retransmission, so it sends one SYN.
        for _ in 0..PROBERS {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    probes.fetch_add(1, Ordering::SeqCst);
                    match tcp_connect(
                        &w.pair.peer,
                        origin_addr(CLOSED),
                        Duration::from_millis(100),
                    ) {
                        Ok(s) => leaked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("connected: {s:?}")),
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            probe_timeouts.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => leaked
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!("failed otherwise (a RST got through?): {e}")),
                    }
                    thread::sleep(Duration::from_millis(2));
                }
            });
        }

        // Let traffic flow before, between and after the replaces.
        let progress = |what: &str| {
            let (e0, p0) = (
                exchanged.load(Ordering::SeqCst),
                probes.load(Ordering::SeqCst),
            );
            wait_for(Duration::from_secs(10), || {
                (exchanged.load(Ordering::SeqCst) >= e0 + 20
                    && probes.load(Ordering::SeqCst) >= p0 + 2 * PROBERS)
                    .then_some(())
            })
            .unwrap_or_else(|| {
                panic!(
                    "no traffic {what}: {} exchanges, {} probes; failures {:?}",
                    exchanged.load(Ordering::SeqCst),
                    probes.load(Ordering::SeqCst),
                    failed.lock().unwrap_or_else(|e| e.into_inner())
                )
            });
        };
        progress("before the first replace");
        for round in 0..REPLACES {
            let out = w.ld.must(&["up", "--iface", ORIGIN_IF, "--replace"]);
            assert!(
                out.stdout.contains("replaced"),
                "up --replace should confirm: {out}"
            );
            let now = w.link_ids();
            assert_eq!(
                now.links, ids_before.links,
                "replace #{round} changed the pinned links"
            );
            for i in 0..2 {
                assert_ne!(
                    now.programs[i], ids.programs[i],
                    "replace #{round} did not swap the program of link {i}: {ids:?} -> {now:?}"
                );
            }
            ids = now;
            progress(&format!("after replace #{round}"));
        }
    });

    w.assert_upgraded_pins(first);
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    let leaked = leaked.into_inner().unwrap_or_else(|e| e.into_inner());
    let (exchanged, probes, probe_timeouts) = (
        exchanged.into_inner(),
        probes.into_inner(),
        probe_timeouts.into_inner(),
    );
    eprintln!(
        "{exchanged} exchanges, {probes} probes ({probe_timeouts} dropped) across {REPLACES} replaces"
    );
    assert!(
        failed.is_empty(),
        "exchanges failed across `up --replace`: {failed:?}\n{}",
        w.context()
    );
    assert!(
        leaked.is_empty(),
        "probes to the closed port {CLOSED} got through during `up --replace`: {leaked:?}"
    );
    assert!(exchanged > 0 && probe_timeouts > 0, "no traffic ran");
    let (peer_retrans, origin_retrans) = (total_retrans(&peer_side), total_retrans(&origin_side));
    assert_eq!(
        (peer_retrans, origin_retrans),
        (0, 0),
        "segments had to be retransmitted (peer, origin) across `up --replace`: a packet was lost"
    );
    let after = w.status();
    assert_eq!(after["replace_due"], false, "after the replace: {after}");
    assert_eq!(
        after["programs_sha256"], after["binary_sha256"],
        "after the replace, the programs are this binary's"
    );
    let d = |name: &str| {
        before["counters"][name]
            .as_u64()
            .zip(after["counters"][name].as_u64())
            .map(|(b, a)| a.saturating_sub(b))
            .unwrap_or_else(|| panic!("no counter {name}: {before} / {after}"))
    };
    assert_eq!(
        d("drop_invalid"),
        0,
        "packets were dropped as invalid: {after}"
    );
    assert!(
        d("drop_new") >= u64::try_from(probe_timeouts).unwrap_or(u64::MAX),
        "every dropped probe should count in drop_new (the counters survive a replace): \
         {probe_timeouts} probes, drop_new +{}",
        d("drop_new")
    );
    let flows = w.flows(&[]);
    let f = find_flow(&flows, &origin_side)
        .unwrap_or_else(|| panic!("the connection's flow is gone after the replaces: {flows:?}"));
    assert_eq!(
        f.state, "established",
        "the connection's flow after the replaces"
    );
}

// ---------------------------------------------------------------------------------------------
// Connections opened before `up` survive the attach.

#[test]
fn outbound_connections_opened_before_up_survive() {
    const TALKER: u16 = 7001;
    let w = Origin::new("pre-out").peer_echo(&[PEER_ECHO]);
    let listener = PeerListener::bind(&w.pair, TALKER);

    let mut echo = w.assert_outbound_ok(PEER_ECHO);
    exchange_n(&mut echo, 1, "outbound before up", &w);
    // A connection on which nothing is said before `up`; after it, the remote speaks first.
    let mut quiet = w.assert_outbound_ok(TALKER);
    let mut remote = listener.accept();
    // Over IPv6 too.
    let v6 = SocketAddr::new(Family::V6.peer(), PEER_ECHO);
    let mut echo6 = tcp_connect(&w.pair.origin, v6, OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("outbound TCP to {v6}: {e}"));
    exchange_n(&mut echo6, 1, "outbound IPv6 before up", &w);
    // A connected UDP socket that has talked once; after `up` the remote speaks first.
    let peer_udp = in_ns(&w.pair.peer, || UdpSocket::bind(any(TALKER)))
        .unwrap_or_else(|e| panic!("binding UDP {TALKER} in the peer: {e}"));
    let origin_udp = in_ns(&w.pair.origin, || {
        UdpSocket::bind(SocketAddr::new(Family::V4.any(), 0))
    })
    .unwrap_or_else(|e| panic!("binding UDP in the origin: {e}"));
    for s in [&peer_udp, &origin_udp] {
        s.set_read_timeout(Some(OK_TIMEOUT))
            .unwrap_or_else(|e| panic!("UDP read timeout: {e}"));
    }
    origin_udp
        .connect(peer_addr(TALKER))
        .and_then(|()| origin_udp.send(b"hello"))
        .unwrap_or_else(|e| panic!("UDP to the peer before up: {e}"));
    let mut buf = [0u8; 64];
    let (_, origin_udp_addr) = peer_udp
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the peer got no UDP before up: {e}"));

    w.up(&[]);
    let flows = w.flows(&[]);
    for (what, s) in [("echo", &echo), ("quiet", &quiet), ("IPv6", &echo6)] {
        let f = find_flow(&flows, s).unwrap_or_else(|| {
            panic!("the {what} connection opened before up was not seeded: {flows:?}")
        });
        assert!(
            f.seeded && f.state == "established",
            "the {what} connection should be seeded as established: {f:?}"
        );
    }

    exchange_n(&mut echo, 3, "outbound opened before up", &w);

    // The remote speaks first, unsolicited: only the seeded flow lets this in.
    remote
        .write_all(b"unsolicited hello")
        .unwrap_or_else(|e| panic!("the peer could not send: {e}"));
    let mut got = [0u8; 17];
    quiet.read_exact(&mut got).unwrap_or_else(|e| {
        panic!(
            "data the remote sent first after up never arrived on a connection opened before up: {e}\n{}",
            w.context()
        )
    });
    assert_eq!(&got, b"unsolicited hello");
    quiet
        .write_all(b"and back")
        .unwrap_or_else(|e| panic!("the origin could not answer: {e}"));
    let mut back = [0u8; 8];
    remote
        .read_exact(&mut back)
        .unwrap_or_else(|e| panic!("the origin's answer never arrived: {e}"));
    assert_eq!(&back, b"and back");
    remote
        .write_all(b"again")
        .unwrap_or_else(|e| panic!("the peer could not send again: {e}"));
    let mut again = [0u8; 5];
    quiet
        .read_exact(&mut again)
        .unwrap_or_else(|e| panic!("the remote's second message never arrived: {e}"));
    assert_eq!(&again, b"again");

    exchange_n(&mut echo6, 3, "outbound IPv6 opened before up", &w);
    peer_udp
        .send_to(b"unsolicited datagram", origin_udp_addr)
        .unwrap_or_else(|e| panic!("the peer could not send UDP: {e}"));
    let n = origin_udp.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "a datagram the remote sent first after up never reached a UDP socket connected before up: {e}\n{}",
            w.context()
        )
    });
    assert_eq!(&buf[..n], b"unsolicited datagram");
}

#[test]
fn inbound_connection_on_unlisted_port_accepted_before_up_survives() {
    let w = Origin::new("pre-in").origin_echo(&[SSH, ALT_SSH]);
    // An SSH-like session on a non-default port, accepted before `up`, which only allows tcp/22.
    let mut session = w.assert_inbound_ok(Family::V4, ALT_SSH);
    // And one that said nothing before `up`.
    let mut idle = tcp_connect(&w.pair.peer, origin_addr(ALT_SSH), OK_TIMEOUT)
        .unwrap_or_else(|e| panic!("connecting to {ALT_SSH} before up: {e}"));
    wait_for(OK_TIMEOUT, || (w.servers[1].accepted() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("the origin never accepted the idle connection"));

    w.up(&[]);
    assert_eq!(w.allow(), ["tcp/22"], "the default allowlist");
    exchange_n(
        &mut session,
        3,
        "session on tcp/2222 accepted before up",
        &w,
    );
    exchange_n(
        &mut idle,
        3,
        "idle connection on tcp/2222 accepted before up",
        &w,
    );
    // The port itself is not open.
    w.assert_inbound_dropped(Family::V4, ALT_SSH);
    exchange_n(
        &mut session,
        1,
        "session on tcp/2222 after a refused new one",
        &w,
    );
}

// ---------------------------------------------------------------------------------------------
// The lockout guard.

#[test]
fn lockout_guard_protects_the_ssh_session() {
    let w = Origin::new("lockout").origin_echo(&[ALT_SSH]);
    let session = (
        "SSH_CONNECTION",
        format!("{PEER_V4} 50000 {ORIGIN_V4} {ALT_SSH}"),
    );

    let out = w.ld.run_env(
        &["up", "--iface", ORIGIN_IF],
        std::slice::from_ref(&session),
    );
    check_refused(&out, &["port 2222", "--force"]);
    w.assert_not_locked("a refused up");
    assert!(
        !w.ld.pin_dir().exists(),
        "a refused up created {}",
        w.ld.pin_dir().display()
    );
    w.assert_inbound_ok(Family::V4, ALT_SSH);

    // --force applies it (and really cuts new connections to 2222).
    let out = w.ld.run_env(
        &["up", "--iface", ORIGIN_IF, "--force"],
        std::slice::from_ref(&session),
    );
    assert!(out.success(), "up --force should apply: {out}");
    assert!(w.ld.is_locked(), "up --force did not lock down");
    assert_eq!(w.allow(), ["tcp/22"]);
    w.assert_inbound_dropped(Family::V4, ALT_SSH);
    w.ld.down();

    // Allowing the session's port satisfies the guard.
    let out = w.ld.run_env(
        &["up", "--iface", ORIGIN_IF, "--allow", "tcp/2222"],
        std::slice::from_ref(&session),
    );
    assert!(out.success(), "up --allow tcp/2222 should apply: {out}");
    assert_eq!(w.allow(), ["tcp/2222"]);
    w.assert_inbound_ok(Family::V4, ALT_SSH);

    // A replace with a policy that cuts the session is refused too, and changes nothing.
    let ids = w.link_ids();
    let out = w.ld.run_env(
        &["up", "--iface", ORIGIN_IF, "--replace", "--allow", "tcp/22"],
        std::slice::from_ref(&session),
    );
    check_refused(&out, &["port 2222"]);
    assert_eq!(
        w.allow(),
        ["tcp/2222"],
        "a refused replace changed the allowlist"
    );
    assert_eq!(w.link_ids(), ids, "a refused replace swapped programs");
    w.assert_inbound_ok(Family::V4, ALT_SSH);

    // Removing the session's port live is refused the same way, and changes nothing; --force
    // removes it.
    let out = w.ld.run_env(
        &["allow", "del", "tcp/2222"],
        std::slice::from_ref(&session),
    );
    check_refused(&out, &["port 2222", "--force"]);
    assert_eq!(
        w.allow(),
        ["tcp/2222"],
        "a refused allow del changed the allowlist"
    );
    w.assert_inbound_ok(Family::V4, ALT_SSH);
    let out = w.ld.run_env(
        &["allow", "del", "tcp/2222", "--force"],
        std::slice::from_ref(&session),
    );
    assert!(out.success(), "allow del --force should apply: {out}");
    assert!(
        w.allow().is_empty(),
        "allow del --force left {:?}",
        w.allow()
    );
}

/// The lockout guard also protects sessions it finds by itself: established connections on a
/// port where a process named sshd listens (no `$SSH_CONNECTION`). The stand-in sshd is netcat,
/// started through a symlink named `sshd` so that the kernel calls the process sshd.
#[test]
fn lockout_guard_finds_sessions_of_a_process_named_sshd() {
    const PORT: u16 = 2200;
    let w = Origin::new("sshd");
    let nc = ["/usr/bin/nc", "/bin/nc"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("this test needs netcat (package netcat-openbsd)"));
    let dir = std::env::temp_dir().join(format!("lockdown-test-sshd-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let _cleanup = TempDirGuard(dir.clone());
    let sshd = dir.join("sshd");
    std::os::unix::fs::symlink(&nc, &sshd)
        .unwrap_or_else(|e| panic!("symlinking {} to {}: {e}", sshd.display(), nc.display()));
    let mut child = lockdown_testbed::netns::ns_command(&w.pair.origin, &sshd)
        .args(["-lk", &PORT.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the sshd stand-in: {e}"));
    let _session = wait_for(Duration::from_secs(10), || {
        tcp_connect(&w.pair.peer, origin_addr(PORT), OK_TIMEOUT).ok()
    })
    .unwrap_or_else(|| panic!("the sshd stand-in never accepted a connection"));
    let comm = fs::read_to_string(format!("/proc/{}/comm", child.id()))
        .unwrap_or_else(|e| panic!("reading the stand-in's comm: {e}"));
    assert_eq!(comm.trim(), "sshd", "the stand-in should be called sshd");

    let out = w.ld.run_env(&["up", "--iface", ORIGIN_IF], &[]);
    check_refused(&out, &["port 2200"]);
    w.assert_not_locked("a refused up");
    let out = w.ld.run_env(
        &[
            "up", "--iface", ORIGIN_IF, "--allow", "tcp/22", "--allow", "tcp/2200",
        ],
        &[],
    );
    assert!(
        out.success(),
        "allowing the session's port should apply: {out}"
    );
    w.ld.down();
    let out = w.ld.run_env(&["up", "--iface", ORIGIN_IF, "--force"], &[]);
    assert!(out.success(), "--force should apply: {out}");
    let _ = child.kill();
    let _ = child.wait();
}

/// Removes a temporary directory tree on drop.
struct TempDirGuard(PathBuf);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Confirm or roll back.

/// Waits (bounded) until every lockdown process of this test (the rollback watchdog) has exited.
fn wait_watchdog_gone(w: &Origin) {
    wait_for(Duration::from_secs(15), || {
        w.ld.processes().is_empty().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the rollback watchdog is still running: {:?}",
            w.ld.processes()
        )
    });
}

#[test]
fn unconfirmed_up_is_rolled_back_to_not_locked() {
    let w = Origin::new("cf-fresh").origin_echo(&[SSH, WEB]);
    let out =
        w.ld.run_confirmable(&["up", "--iface", ORIGIN_IF, "--confirm", "2"]);
    assert!(out.success(), "up --confirm 2 should apply: {out}");
    assert!(
        out.stdout.contains("lockdown confirm"),
        "up --confirm should say how to confirm: {out}"
    );
    assert!(w.ld.is_locked(), "up --confirm did not lock down");
    assert!(
        w.ld.pending().exists(),
        "no pending file at {}",
        w.ld.pending().display()
    );
    w.assert_inbound_dropped(Family::V4, WEB);

    // The rollback unpins the ingress link first and the pin directory last: wait for all of it
    // (more pins since SYN cookies, so a loaded machine can look between the two).
    wait_for(Duration::from_secs(15), || {
        (!w.ld.is_locked() && w.pair.origin_xdp().is_none() && !w.ld.pin_dir().exists())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the unconfirmed up was not rolled back\n{}", w.context()));
    w.assert_not_locked("after the rollback");
    assert!(
        !w.ld.pin_dir().exists(),
        "the pins remain after the rollback: {} holds {:?}",
        w.ld.pin_dir().display(),
        fs::read_dir(w.ld.pin_dir()).map(|d| d
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect::<Vec<_>>())
    );
    wait_watchdog_gone(&w);
    assert!(
        !w.ld.pending().exists(),
        "the pending file remains after the rollback"
    );
    w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_ok(Family::V4, SSH);
}

#[test]
fn unconfirmed_change_restores_the_previous_policy() {
    let w = Origin::new("cf-prev").origin_echo(&[SSH, WEB]);
    w.up(&[]);
    let before = w.status();
    let ids = w.link_ids();
    let mut open = w.assert_inbound_ok(Family::V4, SSH);

    let out = w.ld.run_confirmable(&[
        "up",
        "--iface",
        ORIGIN_IF,
        "--allow",
        "tcp/8080",
        "--timeout",
        "icmp=7",
        "--confirm",
        "2",
    ]);
    assert!(
        out.success(),
        "up --allow tcp/8080 --confirm 2 should apply: {out}"
    );
    assert_eq!(w.allow(), ["tcp/8080"], "the change was not applied");
    assert_eq!(
        w.status()["timeouts"]["icmp"],
        7,
        "the timeout change was not applied"
    );
    w.assert_inbound_ok(Family::V4, WEB);

    wait_for(Duration::from_secs(15), || {
        (w.allow() == ["tcp/22"]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the unconfirmed change was not rolled back to tcp/22\n{}",
            w.context()
        )
    });
    wait_watchdog_gone(&w);
    let after = w.status();
    for key in [
        "allow",
        "timeouts",
        "monitor",
        "mode",
        "max_flows",
        "interface",
    ] {
        assert_eq!(
            after[key], before[key],
            "the rollback did not restore {key} exactly"
        );
    }
    assert_eq!(w.link_ids().links, ids.links, "the rollback re-attached");
    assert!(!w.ld.pending().exists(), "the pending file remains");
    w.assert_inbound_dropped(Family::V4, WEB);
    w.assert_inbound_ok(Family::V4, SSH);
    exchange_n(
        &mut open,
        2,
        "tcp/22 connection across change and rollback",
        &w,
    );
}

#[test]
fn confirmed_change_stays_after_the_window() {
    let w = Origin::new("cf-ok").origin_echo(&[SSH, WEB]);
    w.up(&[]);
    let out = w.ld.run_confirmable(&[
        "up",
        "--iface",
        ORIGIN_IF,
        "--allow",
        "tcp/8080",
        "--confirm",
        "3",
    ]);
    assert!(out.success(), "up --confirm 3 should apply: {out}");
    let out = w.ld.run_confirmable(&["confirm", "--iface", ORIGIN_IF]);
    assert!(out.success(), "confirm should succeed: {out}");
    assert!(
        out.stdout.contains("confirmed"),
        "confirm should say so: {out}"
    );
    assert!(!w.ld.pending().exists(), "confirm left the pending file");

    // Past the window: the watchdog has woken, found nothing to undo, and exited.
    wait_watchdog_gone(&w);
    assert!(w.ld.is_locked(), "a confirmed change was undone");
    assert_eq!(
        w.allow(),
        ["tcp/8080"],
        "a confirmed change was rolled back"
    );
    w.assert_inbound_ok(Family::V4, WEB);
    w.assert_inbound_dropped(Family::V4, SSH);

    // Confirming a fresh `up` keeps it too.
    w.ld.down();
    let out =
        w.ld.run_confirmable(&["up", "--iface", ORIGIN_IF, "--confirm", "2"]);
    assert!(out.success(), "up --confirm 2 should apply: {out}");
    let out = w.ld.run_confirmable(&["confirm"]);
    assert!(
        out.success(),
        "confirm without --iface should find {ORIGIN_IF}: {out}"
    );
    wait_watchdog_gone(&w);
    assert!(w.ld.is_locked(), "a confirmed up was rolled back");
    assert_eq!(w.allow(), ["tcp/22"]);
}

/// Two unconfirmed changes in a row: neither was confirmed, so the interface must end up as it
/// was before the first (not locked down), not in the state the first unconfirmed change made.
#[test]
fn two_unconfirmed_changes_roll_back_to_the_original_state() {
    let w = Origin::new("cf-twice").origin_echo(&[SSH, WEB]);
    let out =
        w.ld.run_confirmable(&["up", "--iface", ORIGIN_IF, "--confirm", "3"]);
    assert!(out.success(), "up --confirm 3 should apply: {out}");
    let out = w.ld.run_confirmable(&[
        "up",
        "--iface",
        ORIGIN_IF,
        "--allow",
        "tcp/8080",
        "--confirm",
        "3",
    ]);
    assert!(
        out.success(),
        "a second up --confirm over the pending one should apply: {out}"
    );
    assert_eq!(w.allow(), ["tcp/8080"]);
    wait_watchdog_gone(&w);
    assert!(
        !w.ld.is_locked(),
        "neither `up --confirm` was confirmed, yet {ORIGIN_IF} stays locked down with {:?}: the \
         second change recorded the first, unconfirmed one as the state to restore",
        w.allow()
    );
    w.assert_not_locked("after both rollbacks");
    w.assert_inbound_ok(Family::V4, WEB);
}

/// A pending change that `down` already undid must not roll back a later, unrelated `up`.
#[test]
fn rollback_after_down_leaves_a_new_up_alone() {
    let w = Origin::new("cf-down").origin_echo(&[SSH, WEB]);
    let out =
        w.ld.run_confirmable(&["up", "--iface", ORIGIN_IF, "--confirm", "2"]);
    assert!(out.success(), "up --confirm 2 should apply: {out}");
    w.ld.down();
    // A deliberate lockdown without --confirm: nothing may undo it.
    let out = w.ld.run_confirmable(&["up", "--iface", ORIGIN_IF]);
    assert!(out.success(), "up should apply: {out}");
    wait_watchdog_gone(&w);
    assert!(
        w.ld.is_locked() && w.pair.origin_xdp().is_some(),
        "the watchdog of an `up --confirm` that `down` had already undone detached a later plain \
         `up`: {ORIGIN_IF} is open again (pending file left: {})",
        w.ld.pending().exists()
    );
    w.assert_inbound_dropped(Family::V4, WEB);
}

#[test]
fn confirm_with_nothing_pending_fails_clearly() {
    let w = Origin::new("cf-none").origin_echo(&[SSH]);
    let out = w.ld.run_confirmable(&["confirm", "--iface", ORIGIN_IF]);
    check_refused(&out, &["not locked down"]);
    w.up(&[]);
    for args in [&["confirm", "--iface", ORIGIN_IF][..], &["confirm"]] {
        let out = w.ld.run_confirmable(args);
        check_refused(&out, &["no change awaits confirmation", ORIGIN_IF]);
    }
    assert!(w.ld.is_locked(), "a failed confirm unlocked the interface");
    assert_eq!(
        w.allow(),
        ["tcp/22"],
        "a failed confirm changed the allowlist"
    );
    w.assert_inbound_ok(Family::V4, SSH);
}

// ---------------------------------------------------------------------------------------------
// Monitor mode.

#[test]
fn monitor_mode_passes_and_counts_would_be_drops() {
    let w = Origin::new("monitor").origin_echo(&[SSH, WEB]);
    w.up(&["--monitor"]);
    let s = w.status();
    assert_eq!(s["monitor"], true, "status should report monitor mode: {s}");
    let before = w.counter("drop_new");
    let mut s = w.assert_inbound_ok(Family::V4, WEB);
    exchange_n(&mut s, 2, "monitor-mode connection to a closed port", &w);
    let after = wait_for(OK_TIMEOUT, || {
        let n = w.counter("drop_new");
        (n > before).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "drop_new did not count the would-be drop of the SYN to {WEB} in monitor mode\n{}",
            w.context()
        )
    });
    eprintln!("drop_new {before} -> {after}");
    w.assert_inbound_ok(Family::V4, SSH);
}

// ---------------------------------------------------------------------------------------------
// Concurrent CLI invocations.

/// Runs every argument list at once (each a separate `lockdown` process) and waits for all.
fn parallel(w: &Origin, runs: &[Vec<String>]) -> Vec<(String, std::process::Output)> {
    let children: Vec<(String, Child)> = runs
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let what = format!("lockdown {}", args.join(" "));
            let child =
                w.ld.command(&args)
                    .env_remove("SSH_CONNECTION")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("starting {what}: {e}"));
            (what, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(what, child)| {
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
            (what, out)
        })
        .collect()
}

fn describe(what: &str, out: &std::process::Output) -> String {
    format!(
        "`{what}` ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn parallel_allow_changes_are_all_applied() {
    const PORTS: [u16; 8] = [10001, 10002, 10003, 10004, 10005, 10006, 10007, 10008];
    let w = Origin::new("parallel");
    w.up(&[]);
    for round in 0..3 {
        for verb in ["add", "del"] {
            let runs: Vec<Vec<String>> = PORTS
                .iter()
                .map(|p| {
                    ["allow", verb, &format!("tcp/{p}"), "--iface", ORIGIN_IF]
                        .map(str::to_owned)
                        .to_vec()
                })
                .collect();
            for (what, out) in parallel(&w, &runs) {
                assert!(
                    out.status.success(),
                    "round {round}: parallel {}",
                    describe(&what, &out)
                );
            }
            let mut expected = vec!["tcp/22".to_owned()];
            if verb == "add" {
                expected.extend(PORTS.iter().map(|p| format!("tcp/{p}")));
            }
            let got = w.allow();
            assert_eq!(
                got, expected,
                "round {round}: after 8 parallel `allow {verb}`, changes were lost"
            );
        }
    }
}

#[test]
fn parallel_ups_lock_down_exactly_once() {
    let w = Origin::new("par-up").origin_echo(&[SSH, WEB]);
    let up: Vec<String> = ["up", "--iface", ORIGIN_IF].map(str::to_owned).to_vec();
    let outs = parallel(&w, &vec![up; 4]);
    let won: Vec<_> = outs.iter().filter(|(_, o)| o.status.success()).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one of 4 parallel `up`s should win:\n{}",
        outs.iter()
            .map(|(w, o)| describe(w, o))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (what, out) in outs.iter().filter(|(_, o)| !o.status.success()) {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already locked down"),
            "a losing parallel up should say the interface is already locked down: {}",
            describe(what, out)
        );
    }
    assert!(
        w.ld.is_locked(),
        "nothing is locked down after the parallel ups"
    );
    let ids = w.link_ids();
    let xdp = w.pair.origin_xdp();
    assert!(
        matches!(xdp, Some((1, _))),
        "XDP after the parallel ups: {xdp:?}"
    );
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);

    let replace: Vec<String> = ["up", "--iface", ORIGIN_IF, "--replace"]
        .map(str::to_owned)
        .to_vec();
    for (what, out) in parallel(&w, &vec![replace; 4]) {
        assert!(out.status.success(), "parallel {}", describe(&what, &out));
    }
    assert_eq!(
        w.link_ids().links,
        ids.links,
        "parallel replaces changed the links"
    );
    assert_eq!(w.allow(), ["tcp/22"]);
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);
}

// ---------------------------------------------------------------------------------------------
// The configuration file.

/// A file in a private temporary directory; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, name: &str, text: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("lockdown-test-cfg-{}-{tag}", std::process::id()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(name);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

const CONFIG: &str = r#"# lockdown test configuration
[timeouts]
udp_replied = 77

[[interface]]
name = "ldo0"
mode = "native"
allow = [
    "tcp/22",
    "tcp/8080",
    { spec = "tcp/9090", from = "10.99.0.0/16" },
    { spec = "tcp/9091", from = "10.231.0.0/24" },
]

[interface.timeouts]
icmp = 11
"#;

/// Whether the pin root holds nothing at all.
fn pin_root_empty(ld: &Lockdown) -> bool {
    fs::read_dir(&ld.pin_root).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn config_file_is_applied_by_up() {
    let w = Origin::new("cfg-up").origin_echo(&[SSH, WEB, 9090, 9091, 9092]);
    let file = TempFile::new("cfg-up", "lockdown.toml", CONFIG);
    w.ld.must(&["up", "--config", file.path()]);
    let s = w.status();
    assert_eq!(s["interface"], ORIGIN_IF, "status: {s}");
    assert_eq!(s["mode"], "native", "status: {s}");
    assert_eq!(
        w.allow(),
        [
            "tcp/22",
            "tcp/8080",
            "tcp/9090 from 10.99.0.0/16",
            "tcp/9091 from 10.231.0.0/24"
        ],
        "the allowlist from the file"
    );
    assert_eq!(
        s["timeouts"]["udp_replied"], 77,
        "the file-wide timeout: {s}"
    );
    assert_eq!(s["timeouts"]["icmp"], 11, "the interface's timeout: {s}");
    assert_eq!(
        s["timeouts"]["tcp_established"], 432_000,
        "an unset timeout: {s}"
    );
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_ok(Family::V4, WEB);
    // Only from 10.99.0.0/16; the peer is 10.231.0.2.
    w.assert_inbound_dropped(Family::V4, 9090);
    // From the peer's network.
    w.assert_inbound_ok(Family::V4, 9091);
    w.assert_inbound_dropped(Family::V4, 9092);
}

#[test]
fn config_file_flags_override_the_file() {
    let w = Origin::new("cfg-flags").origin_echo(&[SSH, WEB, 9092]);
    let file = TempFile::new("cfg-flags", "lockdown.toml", CONFIG);
    w.ld.must(&[
        "up",
        "--config",
        file.path(),
        "--iface",
        ORIGIN_IF,
        "--allow",
        "tcp/9092",
        "--timeout",
        "icmp=5",
        "--monitor",
    ]);
    let s = w.status();
    assert_eq!(
        w.allow(),
        ["tcp/9092"],
        "--allow should replace the file's allowlist"
    );
    assert_eq!(
        s["timeouts"]["icmp"], 5,
        "--timeout should override the file: {s}"
    );
    assert_eq!(
        s["timeouts"]["udp_replied"], 77,
        "the file's other timeouts stay: {s}"
    );
    assert_eq!(s["monitor"], true, "--monitor: {s}");
    w.ld.down();

    w.ld.must(&["up", "--config", file.path(), "--allow", "tcp/9092"]);
    assert_eq!(w.allow(), ["tcp/9092"]);
    assert_eq!(w.status()["monitor"], false);
    w.assert_inbound_ok(Family::V4, 9092);
    w.assert_inbound_dropped(Family::V4, WEB);
}

#[test]
fn check_config_accepts_a_valid_file_and_touches_nothing() {
    let w = Origin::new("cfg-check");
    let file = TempFile::new("cfg-check", "lockdown.toml", CONFIG);
    let out = w.ld.must(&["check-config", file.path()]);
    assert!(
        out.stdout.contains("OK"),
        "check-config should report OK: {out}"
    );
    assert!(pin_root_empty(&w.ld), "check-config created pins");
    w.assert_not_locked("after check-config");

    // The packaged example leaves the interface to the operator: refused as a configuration
    // error (exit 78, which the units do not retry) until it is set, then valid.
    let packaged = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lockdown.toml");
    let text = fs::read_to_string(&packaged).expect("reading packaging/lockdown.toml");
    let as_shipped = TempFile::new("cfg-check", "shipped.toml", &text);
    for args in [
        vec!["check-config", as_shipped.path()],
        vec!["run", "--config", as_shipped.path()],
    ] {
        let out = w.ld.refuse(&args, &["has no `name`", "ip -br link"]);
        assert_eq!(out.status.code(), Some(78), "`{}`: {out}", args.join(" "));
    }
    let named = TempFile::new(
        "cfg-check",
        "named.toml",
        &text.replace("\n# name = \"eth0\"\n", "\nname = \"eth0\"\n"),
    );
    let out =
        w.ld.must(&["check-config", named.path(), "--iface", "eth0"]);
    assert!(
        out.stdout.contains("OK"),
        "check-config on the packaged file with its name set: {out}"
    );
    let out = w.ld.refuse(
        &["check-config", named.path(), "--iface", "eth1"],
        &["does not configure interface \"eth1\""],
    );
    assert_eq!(out.status.code(), Some(78), "{out}");
    assert!(pin_root_empty(&w.ld), "check-config created pins");
    w.assert_not_locked("after check-config");
}

#[test]
fn invalid_config_is_refused_and_changes_nothing() {
    let w = Origin::new("cfg-bad").origin_echo(&[WEB]);
    let bad_port = TempFile::new(
        "cfg-bad",
        "port.toml",
        "[[interface]]\nname = \"ldo0\"\nallow = [\n    \"tcp/22\",\n    \"tcp/70000\",\n]\n",
    );
    let unknown = TempFile::new(
        "cfg-bad",
        "key.toml",
        "[[interface]]\nname = \"ldo0\"\nallow = [\"tcp/22\"]\nmaxflows = 5\n",
    );
    let cases: [(&TempFile, [&str; 3]); 2] = [
        (&bad_port, [":5:", "interface[0].allow[1]", "port"]),
        (&unknown, [":4:", "interface[0].maxflows", "unknown field"]),
    ];
    for (file, needles) in cases {
        let mut needles = needles.to_vec();
        needles.push(file.path());
        for args in [
            vec!["check-config", file.path()],
            vec!["up", "--config", file.path()],
            vec!["run", "--config", file.path()],
        ] {
            let out = w.ld.run(&args);
            check_refused(&out, &needles);
            w.assert_not_locked(&format!("a refused `{}`", args.join(" ")));
            assert!(
                pin_root_empty(&w.ld),
                "a refused `{}` created pins",
                args.join(" ")
            );
        }
    }

    // Refused over a running lockdown: nothing changes either.
    w.up(&["--allow", "tcp/8080"]);
    let ids = w.link_ids();
    let out = w.ld.run(&["up", "--config", bad_port.path(), "--replace"]);
    check_refused(&out, &[":5:", "interface[0].allow[1]"]);
    assert_eq!(
        w.allow(),
        ["tcp/8080"],
        "a refused config changed the allowlist"
    );
    assert_eq!(w.link_ids(), ids, "a refused config swapped programs");
    w.assert_inbound_ok(Family::V4, WEB);
}

/// The seed chain: `lo ACCEPT; RELATED,ESTABLISHED ACCEPT; tcp dport 22 ACCEPT; DROP`.
const SEED_CHAIN: &str = "# Generated by iptables-save v1.8.10 (nf_tables)
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -j DROP
COMMIT
";

#[test]
fn imported_seed_chain_behaves_like_the_default() {
    let w = Origin::new("import").origin_echo(&[SSH, WEB]);
    let rules = TempFile::new("import", "seed.rules", SEED_CHAIN);
    let out = w.ld.must(&["import-iptables", rules.path()]);
    assert!(
        out.stdout.contains("[[interface]]"),
        "import-iptables should print a config: {out}"
    );
    // The import names a placeholder interface; point it at ours.
    let mut lines: Vec<String> = Vec::new();
    let mut renamed = false;
    for line in out.stdout.lines() {
        if line.trim_start().starts_with("name =") && !renamed {
            lines.push(format!("name = \"{ORIGIN_IF}\""));
            renamed = true;
        } else {
            lines.push(line.to_owned());
        }
    }
    assert!(renamed, "the imported config has no interface name: {out}");
    let config = TempFile::new("import", "imported.toml", &(lines.join("\n") + "\n"));
    w.ld.must(&["check-config", config.path()]);
    w.ld.must(&["up", "--config", config.path()]);
    assert_eq!(w.allow(), ["tcp/22"], "the imported seed chain's allowlist");
    w.assert_inbound_ok(Family::V4, SSH);
    w.assert_inbound_dropped(Family::V4, WEB);

    let with_log = SEED_CHAIN.replace(
        "-A INPUT -j DROP",
        "-A INPUT -p tcp -m tcp --dport 8080 -j LOG --log-prefix \"web: \"\n-A INPUT -j DROP",
    );
    let bad = TempFile::new("import", "log.rules", &with_log);
    let out = w.ld.run(&["import-iptables", bad.path()]);
    check_refused(&out, &["line 9", "-j LOG"]);
    assert!(
        out.stdout.trim().is_empty(),
        "a refused import printed a config anyway: {out}"
    );
}

/// The lockout guard weighs a rule's source CIDR: a rule for the session's port that does not
/// admit the session's client (or its address family) does not count.
#[test]
fn lockout_guard_respects_source_cidrs() {
    let w = Origin::new("lock-cidr").origin_echo(&[ALT_SSH]);
    let v4 = (
        "SSH_CONNECTION",
        format!("{PEER_V4} 50000 {ORIGIN_V4} {ALT_SSH}"),
    );
    let v6 = (
        "SSH_CONNECTION",
        format!(
            "{} 50000 {} {ALT_SSH}",
            Family::V6.peer(),
            Family::V6.origin()
        ),
    );
    let config = |from: &str| {
        format!(
            "[[interface]]\nname = \"{ORIGIN_IF}\"\nallow = [{{ spec = \"tcp/2222\", from = \"{from}\" }}]\n"
        )
    };
    let cases = [
        (&v4, "10.99.0.0/16", false),
        (&v4, "10.231.0.0/24", true),
        (&v4, "::/0", false),
        (&v6, "0.0.0.0/0", false),
        (&v6, "::/0", true),
        (&v6, "fd00:231::/64", true),
    ];
    for (i, (session, from, admitted)) in cases.into_iter().enumerate() {
        let file = TempFile::new("lock-cidr", &format!("c{i}.toml"), &config(from));
        let out = w.ld.run_env(
            &["up", "--config", file.path()],
            std::slice::from_ref(session),
        );
        if admitted {
            assert!(
                out.success(),
                "from = {from} admits the session {:?}: {out}",
                session.1
            );
            w.ld.down();
        } else {
            check_refused(&out, &["port 2222"]);
            w.assert_not_locked(&format!("a refused up (from = {from})"));
        }
    }
}

#[test]
fn status_says_when_up_replace_is_due() {
    use aya::maps::{Array, Map, MapData};

    let w = Origin::new("build-due").origin_echo(&[SSH]);
    w.up(&[]);
    let s = w.status();
    assert_eq!(s["replace_due"], false, "{s}");
    let own = s["binary_sha256"]
        .as_str()
        .expect("binary_sha256")
        .to_owned();
    assert_eq!(
        s["programs_sha256"],
        own.as_str(),
        "up records its programs' hash"
    );
    assert!(
        w.ld.must(&["--version"]).stdout.contains(&own),
        "--version names the same hash"
    );

    // Programs of another build (as after a package upgrade): the record differs from the binary.
    let path = w.ld.pin_dir().join(lockdown_common::contract::maps::BUILD);
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut map: Array<MapData, [u8; 32]> = Map::from_map_data(data)
        .expect("a map")
        .try_into()
        .expect("LD_BUILD is an array");
    map.set(0, &[0xab; 32], 0).expect("writing LD_BUILD");
    let s = w.status();
    assert_eq!(s["replace_due"], true, "{s}");
    assert_eq!(s["programs_sha256"], "ab".repeat(32).as_str(), "{s}");
    let text =
        w.ld.must(&["status", "--iface", ORIGIN_IF, "--interval", "0"]);
    assert!(
        text.stdout.contains(&format!(
            "this binary's is {own}: `lockdown up --replace --iface {ORIGIN_IF}` loads it"
        )),
        "status should say a replace is due: {text}"
    );

    w.ld.must(&["up", "--replace", "--iface", ORIGIN_IF]);
    let s = w.status();
    assert_eq!(s["replace_due"], false, "after up --replace: {s}");
    assert_eq!(s["programs_sha256"], own.as_str(), "{s}");
}

#[test]
fn a_rollback_restores_the_rates_and_keeps_the_blocklist() {
    let w = Origin::new("cf-rates").origin_echo(&[SSH, WEB]);
    w.up(&[]);
    w.ld.must(&["allow", "add", "tcp/22", "--rate", "10/min", "--burst", "5"]);
    let out = w.ld.run_confirmable(&[
        "up",
        "--iface",
        ORIGIN_IF,
        "--allow",
        "tcp/22",
        "--allow",
        "tcp/8080",
        "--confirm",
        "2",
    ]);
    assert!(out.success(), "up --confirm 2 should apply: {out}");
    let rate = |w: &Origin| {
        let out = w.ld.must(&["allow", "list", "--json"]);
        let v: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0]["rate"].clone()
    };
    assert!(rate(&w).is_null(), "the new policy has no rate");
    // A ban arrives meanwhile (fail2ban does not wait for a confirmation).
    w.ld.must(&["deny", "add", &PEER_V4.to_string()]);

    wait_for(Duration::from_secs(15), || {
        (w.allow() == ["tcp/22"]).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the unconfirmed change was not rolled back\n{}",
            w.context()
        )
    });
    wait_watchdog_gone(&w);
    assert_eq!(
        rate(&w),
        "10/min burst 5",
        "the rollback did not restore the rate"
    );
    w.assert_inbound_dropped(Family::V4, SSH);
    assert!(
        w.counter("drop_denied") > 0,
        "the blocklist stopped matching after the rollback"
    );
}
