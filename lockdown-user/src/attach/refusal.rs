//! Why the kernel would refuse, or did refuse, to attach the XDP program, and what to do about it:
//! the interface is queried first ([`crate::host::link`]), so the message names the cause — another XDP
//! program (with its id), a driver without native XDP, an MTU the driver cannot run XDP at — and
//! the fix. Every message is decided from plain data, so each is unit-tested.

use crate::host::link::{LinkInfo, XdpMode};

/// The driver as a person would name it: its name, or the link kind for a virtual device.
fn driver(link: &LinkInfo) -> String {
    match (&link.driver, &link.kind) {
        (Some(d), _) => format!("driver {d}"),
        (None, Some(k)) => format!("a {k} device"),
        (None, None) => "its driver".to_owned(),
    }
}

/// The mode as a message names it.
const fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "generic (skb)",
        XdpMode::Hardware => "offloaded",
        XdpMode::Multi => "several modes",
    }
}

/// Before anything is touched: an interface that already runs an XDP program is refused, naming
/// it. lockdown never replaces a program it did not attach (the interface's own pins are checked
/// before this).
pub fn occupied(link: &LinkInfo) -> Option<String> {
    let x = link.xdp.as_ref()?;
    let name = x
        .prog_name
        .as_deref()
        .map_or_else(String::new, |n| format!(" {n:?}"));
    Some(format!(
        "{iface} already has an XDP program attached: id {id}{name}, {mode}. lockdown does not \
         replace a program it did not attach; detach it first (`ip link set dev {iface} xdp off`, \
         or `xdpgeneric off` for a generic one, or through the tool that attached it)",
        iface = link.name,
        id = x.prog_id,
        mode = mode_name(x.mode),
    ))
}

/// After the kernel refused the attach in `mode` with `errno`: the cause and the fix.
pub fn explain(errno: i32, mode: XdpMode, link: &LinkInfo) -> String {
    let iface = &link.name;
    match (mode, errno) {
        (XdpMode::Driver, libc::ERANGE) => format!(
            "{iface}'s MTU {mtu} is above what {drv} allows for native XDP (the driver cannot run \
             XDP on frames that do not fit one buffer). Lower the MTU (`ip link set dev {iface} \
             mtu 1500`) or use `--mode skb` (generic XDP, slower)",
            mtu = link.mtu,
            drv = driver(link),
        ),
        (XdpMode::Driver, libc::EOPNOTSUPP | libc::EINVAL) => format!(
            "native XDP is not supported on {iface} ({drv}{bond}); retry with `--mode skb` \
             (generic XDP, slower)",
            drv = driver(link),
            bond = if link.kind.as_deref() == Some("bond") {
                ": a bond runs native XDP only in round-robin, active-backup, 802.3ad or XOR mode \
                 and when every slave's driver does"
            } else {
                ""
            },
        ),
        (_, libc::EBUSY | libc::EEXIST) => occupied(link).unwrap_or_else(|| {
            format!(
                "{iface} already has an XDP program attached (it went before lockdown could name \
                 it); detach it first (`ip link set dev {iface} xdp off`)"
            )
        }),
        (_, e) => format!(
            "attaching the XDP program to {iface} ({drv}, MTU {mtu}) failed: {err}",
            drv = driver(link),
            mtu = link.mtu,
            err = std::io::Error::from_raw_os_error(e),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::link::XdpAttachment;

    fn link(driver: Option<&str>, kind: Option<&str>, mtu: u32) -> LinkInfo {
        LinkInfo {
            index: 3,
            name: "eth0".to_owned(),
            mtu,
            max_mtu: Some(9216),
            kind: kind.map(str::to_owned),
            driver: driver.map(str::to_owned),
            xdp: None,
            master: None,
        }
    }

    #[test]
    fn an_mtu_the_driver_cannot_run_xdp_at() {
        let m = explain(
            libc::ERANGE,
            XdpMode::Driver,
            &link(Some("ena"), None, 9001),
        );
        for needle in [
            "MTU 9001",
            "driver ena",
            "ip link set dev eth0 mtu 1500",
            "--mode skb",
        ] {
            assert!(m.contains(needle), "{needle:?} missing: {m}");
        }
    }

    #[test]
    fn no_native_xdp_in_the_driver() {
        let m = explain(
            libc::EOPNOTSUPP,
            XdpMode::Driver,
            &link(None, Some("dummy"), 1500),
        );
        assert!(
            m.contains("a dummy device") && m.contains("--mode skb"),
            "{m}"
        );
        let m = explain(
            libc::EINVAL,
            XdpMode::Driver,
            &link(Some("bonding"), Some("bond"), 1500),
        );
        assert!(
            m.contains("driver bonding") && m.contains("every slave"),
            "{m}"
        );
    }

    #[test]
    fn another_program_is_named_with_its_id() {
        let mut l = link(Some("veth"), Some("veth"), 1500);
        assert_eq!(occupied(&l), None);
        l.xdp = Some(XdpAttachment {
            mode: XdpMode::Skb,
            prog_id: 42,
            prog_name: Some("xdp_dummy".to_owned()),
        });
        let m = occupied(&l).expect("occupied");
        for needle in ["id 42", "\"xdp_dummy\"", "generic (skb)", "xdpgeneric off"] {
            assert!(m.contains(needle), "{needle:?} missing: {m}");
        }
        assert_eq!(explain(libc::EBUSY, XdpMode::Driver, &l), m);
    }

    #[test]
    fn anything_else_keeps_the_kernels_words() {
        let m = explain(
            libc::EPERM,
            XdpMode::Skb,
            &link(Some("virtio_net"), None, 1500),
        );
        assert!(
            m.contains("virtio_net") && m.contains("not permitted"),
            "{m}"
        );
    }
}
