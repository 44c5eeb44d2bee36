//! `link::query` against the real kernel. Needs root.
//!
//! Each test runs in a thread that `unshare(CLONE_NEWNET)`s into a network namespace of its own,
//! and checks that it did before it runs anything: the `ip` commands it spawns inherit the
//! thread's namespace. Every device is made in that namespace; nothing touches the host's. The
//! namespace has no name and no mount: it and its devices are gone when the thread ends, however
//! the test ends. The XDP programs come from lockdown's own eBPF object (the `baseline_*`
//! programs), loaded with aya; they are detached when the test drops them.
//!
//! Bonds and dummy devices are not tested: this machine's kernel is built without them
//! (`CONFIG_BONDING`, `CONFIG_DUMMY`), and a test that cannot run is not in the suite. Their
//! `kind`/`driver` come from the same netlink and ethtool fields as the veth's and bridge's.

use std::process::{Command, Stdio};

use aya::{
    Ebpf,
    programs::{Xdp, XdpMode as AyaXdpMode},
};
use lockdown_testbed::netns;
use lockdown_user::host::link::{self, LinkInfo, XdpAttachment, XdpMode};
use nix::net::if_::if_nametoindex;

/// Runs `f` in a new network namespace with `lo` up; panics in `f` propagate.
fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    netns::in_private_netns("link", f)
}

/// Runs `ip ARGS`: `Err(stderr)` if it fails.
fn try_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running `ip`: {e} (is iproute2 installed?)"));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("`ip {}` failed: {e}", args.join(" "));
    }
}

fn veth_pair(a: &str, b: &str) {
    ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
}

/// The index `name` has in this namespace, by `SIOCGIFINDEX` (not netlink).
fn index(name: &str) -> u32 {
    if_nametoindex(name).unwrap_or_else(|e| panic!("if_nametoindex({name}): {e}"))
}

fn query(name: &str) -> LinkInfo {
    link::query(name).unwrap_or_else(|e| panic!("query({name}): {e:#}"))
}

#[test]
fn veth_with_a_jumbo_mtu() {
    in_private_netns(|| {
        veth_pair("ld_va", "ld_vb");
        ip(&["link", "set", "ld_va", "mtu", "9000"]);
        let a = query("ld_va");
        assert_eq!(
            a,
            LinkInfo {
                index: index("ld_va"),
                name: "ld_va".into(),
                mtu: 9000,
                // veth_setup: ETH_MAX_MTU.
                max_mtu: Some(65535),
                kind: Some("veth".into()),
                driver: Some("veth".into()),
                xdp: None,
                master: None,
            }
        );
        let b = query("ld_vb");
        assert_eq!((b.index, b.mtu), (index("ld_vb"), 1500));
        assert_ne!(a.index, b.index);
    });
}

#[test]
fn bridge_and_its_ports() {
    in_private_netns(|| {
        ip(&["link", "add", "ld_br0", "type", "bridge"]);
        veth_pair("ld_p0", "ld_p0p");
        veth_pair("ld_p1", "ld_p1p");
        ip(&["link", "set", "ld_p0", "master", "ld_br0"]);
        ip(&["link", "set", "ld_p1", "master", "ld_br0"]);
        let br = query("ld_br0");
        assert_eq!(br.index, index("ld_br0"));
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        assert_eq!(br.driver.as_deref(), Some("bridge"));
        assert_eq!(br.master, None);
        for port in ["ld_p0", "ld_p1"] {
            let p = query(port);
            assert_eq!(p.master, Some(br.index), "{p:?}");
            assert_eq!(p.kind.as_deref(), Some("veth"), "{p:?}");
        }
        assert_eq!(query("ld_p0p").master, None);
    });
}

/// Loads program `name` of lockdown's eBPF object and attaches it to `iface` in `mode`: (the
/// object, which keeps it attached until dropped; the program's id).
fn attach_xdp(name: &str, iface: &str, mode: AyaXdpMode) -> (Ebpf, u32) {
    let mut ebpf = Ebpf::load(lockdown_user::EBPF_OBJECT).expect("loading the eBPF object");
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("no program {name}"))
        .try_into()
        .expect("an XDP program");
    prog.load().expect("loading the program");
    let iface = std::ffi::CString::new(iface).unwrap();
    prog.attach(iface.as_c_str(), mode)
        .unwrap_or_else(|e| panic!("attaching {name} to {iface:?} ({mode:?}): {e}"));
    let id = prog.info().expect("program info").id();
    (ebpf, id)
}

#[test]
fn xdp_programs_in_generic_and_native_mode() {
    in_private_netns(|| {
        veth_pair("ld_g0", "ld_g1");
        veth_pair("ld_n0", "ld_n1");
        // Native XDP on a veth needs it up.
        for dev in ["ld_n0", "ld_n1"] {
            ip(&["link", "set", dev, "up"]);
        }
        let (generic, generic_id) = attach_xdp("baseline_pass", "ld_g0", AyaXdpMode::Skb);
        let (native, native_id) = attach_xdp("baseline_drop", "ld_n0", AyaXdpMode::Driver);
        assert_ne!(generic_id, native_id);

        assert_eq!(
            query("ld_g0").xdp,
            Some(XdpAttachment {
                mode: XdpMode::Skb,
                prog_id: generic_id,
                prog_name: Some("baseline_pass".into()),
            })
        );
        assert_eq!(
            query("ld_n0").xdp,
            Some(XdpAttachment {
                mode: XdpMode::Driver,
                prog_id: native_id,
                prog_name: Some("baseline_drop".into()),
            })
        );
        // The peers have none.
        assert_eq!(query("ld_g1").xdp, None);
        assert_eq!(query("ld_n1").xdp, None);

        // Detached when the links go.
        drop(generic);
        drop(native);
        assert_eq!(query("ld_g0").xdp, None);
        assert_eq!(query("ld_n0").xdp, None);
    });
}

/// `lo` has no link kind, no ethtool driver info (`EOPNOTSUPP`) and no MTU limit
/// (IFLA_MAX_MTU 0).
#[test]
fn loopback() {
    in_private_netns(|| {
        assert_eq!(
            query("lo"),
            LinkInfo {
                index: 1,
                name: "lo".into(),
                mtu: 65536,
                max_mtu: None,
                kind: None,
                driver: None,
                xdp: None,
                master: None,
            }
        );
    });
}

#[test]
fn an_alternative_name_finds_the_interface() {
    in_private_netns(|| {
        veth_pair("ld_alt", "ld_altp");
        let alt = "ld_a_long_alternative_name";
        ip(&["link", "property", "add", "dev", "ld_alt", "altname", alt]);
        let by_alt = query(alt);
        assert_eq!(by_alt.name, "ld_alt");
        assert_eq!(by_alt.driver.as_deref(), Some("veth"));
        assert_eq!(by_alt, query("ld_alt"));
    });
}

#[test]
fn a_missing_interface_is_an_error_naming_it() {
    in_private_netns(|| {
        for name in ["ld_missing0", "ld_a_long_name_nobody_has", "12345"] {
            let e = link::query(name).expect_err(name);
            let text = format!("{e:#}");
            assert!(
                text.contains(&format!("no network interface named `{name}`"))
                    && text.contains("this network namespace"),
                "{text}"
            );
        }
        // Names no interface can have.
        for name in ["", "nul\0byte", &"x".repeat(128)] {
            assert!(link::query(name).is_err(), "{name:?}");
        }
        // A device that was here and is gone.
        veth_pair("ld_gone", "ld_gonep");
        query("ld_gone");
        ip(&["link", "del", "ld_gone"]);
        let e = link::query("ld_gone").expect_err("a deleted device");
        assert!(format!("{e:#}").contains("`ld_gone`"), "{e:#}");
    });
}
