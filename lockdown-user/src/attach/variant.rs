//! Which of the two XDP ingress programs runs: both make the same decisions and differ only in the
//! multi-buffer flag (`xdp.frags`).
//!
//! - Generic (skb) XDP: always the single-buffer one. Generic XDP hands a program without the flag
//!   the whole frame, linearised, at any MTU; with the flag it takes a slower path for every packet
//!   (README, "XDP program variants").
//! - Native XDP: the multi-buffer one wherever the kernel has it (Linux 5.18). A driver runs a
//!   program without the flag only on frames that fit one page, and refuses to raise the MTU above
//!   that while one is attached; with the flag the MTU may rise later (jumbo frames included) and
//!   the filter keeps enforcing. Native mode does not pay for the flag as generic mode does
//!   (README, "XDP program variants").
//! - Native XDP on a kernel without multi-buffer XDP: the single-buffer one, and an MTU above one
//!   page is refused before anything is touched.

use anyhow::{Result, bail};
use lockdown_common::contract::maps::{PROG_INGRESS, PROG_INGRESS_LINEAR};
use serde::Serialize;

use crate::host::{
    link::{LinkInfo, XdpMode},
    probe::{Feature, Features},
};

/// The XDP ingress program variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `lockdown_ingress`, `xdp.frags`: multi-buffer frames.
    Frags,
    /// `lockdown_linear`: single-buffer frames.
    Linear,
}

/// The longest XDP name the kernel keeps (`BPF_OBJ_NAME_LEN - 1`).
const KERNEL_NAME_LEN: usize = 15;

impl Variant {
    /// The program's name in the object.
    pub const fn program(self) -> &'static str {
        match self {
            Self::Frags => PROG_INGRESS,
            Self::Linear => PROG_INGRESS_LINEAR,
        }
    }

    /// What it handles, for `status`.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Frags => "multi-buffer frames (xdp.frags)",
            Self::Linear => "single-buffer frames",
        }
    }

    /// The variant whose program the kernel knows as `name` (the first 15 bytes of the name).
    pub fn from_kernel_name(name: &str) -> Option<Self> {
        [Self::Frags, Self::Linear].into_iter().find(|v| {
            let p = v.program();
            name == &p[..p.len().min(KERNEL_NAME_LEN)]
        })
    }

    /// Features the variant needs beyond those every program needs.
    pub fn needs(self) -> &'static [Feature] {
        match self {
            Self::Frags => &[Feature::XdpFrags],
            Self::Linear => &[],
        }
    }
}

/// The largest MTU whose frames fit one page for a program without the multi-buffer flag: the page
/// less XDP's 256 bytes of headroom, the 320-byte `skb_shared_info` and the Ethernet header. Drivers
/// differ by a few bytes below it; above it every one refuses.
pub fn single_buffer_mtu() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page)
        .unwrap_or(4096)
        .saturating_sub(256 + 320 + 14)
}

/// The variant for `mode` on the interface `link`, given what the kernel offers; a refusal names
/// the problem and the way out. `release` is the kernel's, for the message.
pub fn choose(
    features: &Features,
    mode: XdpMode,
    link: &LinkInfo,
    release: &str,
) -> Result<Variant> {
    match mode {
        XdpMode::Skb => Ok(Variant::Linear),
        XdpMode::Driver if features.has(Feature::XdpFrags) => Ok(Variant::Frags),
        XdpMode::Driver => {
            let limit = single_buffer_mtu();
            if link.mtu > limit {
                bail!(
                    "{iface}'s MTU {mtu} does not fit one page ({limit} bytes), and this kernel \
                     (Linux {release}) has no multi-buffer XDP (xdp.frags, Linux 5.18), so native \
                     XDP cannot run at it. Nothing was changed. Lower the MTU (`ip link set dev \
                     {iface} mtu 1500`) or use `--mode skb` (generic XDP, slower)",
                    iface = link.name,
                    mtu = link.mtu,
                );
            }
            Ok(Variant::Linear)
        }
        XdpMode::Hardware | XdpMode::Multi => {
            bail!("lockdown does not attach in XDP mode {}", mode.name())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(mtu: u32) -> LinkInfo {
        LinkInfo {
            index: 3,
            name: "eth0".to_owned(),
            mtu,
            max_mtu: Some(9216),
            kind: None,
            driver: Some("ena".to_owned()),
            xdp: None,
            master: None,
        }
    }

    #[test]
    fn skb_mode_never_pays_for_frags() {
        for v in [(5, 15), (6, 1), (6, 18)] {
            let f = Features::as_of(v);
            for mtu in [1500, 9001] {
                assert_eq!(
                    choose(&f, XdpMode::Skb, &link(mtu), "x").expect("skb"),
                    Variant::Linear
                );
            }
        }
    }

    #[test]
    fn native_mode_takes_frags_where_the_kernel_has_them() {
        for v in [(5, 18), (6, 1), (6, 12), (6, 18)] {
            let f = Features::as_of(v);
            for mtu in [1500, 9001] {
                assert_eq!(
                    choose(&f, XdpMode::Driver, &link(mtu), "x").expect("native"),
                    Variant::Frags
                );
            }
        }
    }

    #[test]
    fn without_frags_native_mode_refuses_a_jumbo_mtu() {
        let f = Features::as_of((5, 15));
        assert_eq!(
            choose(&f, XdpMode::Driver, &link(1500), "5.15.0").expect("1500"),
            Variant::Linear
        );
        let e = choose(&f, XdpMode::Driver, &link(9001), "5.15.0")
            .expect_err("9001")
            .to_string();
        for needle in [
            "MTU 9001",
            "Linux 5.15.0",
            "Linux 5.18",
            "--mode skb",
            "mtu 1500",
        ] {
            assert!(e.contains(needle), "{needle:?} missing: {e}");
        }
    }

    #[test]
    fn kernel_names_tell_the_variants_apart() {
        assert_eq!(
            Variant::from_kernel_name("lockdown_ingres"),
            Some(Variant::Frags)
        );
        assert_eq!(
            Variant::from_kernel_name("lockdown_linear"),
            Some(Variant::Linear)
        );
        assert_eq!(Variant::from_kernel_name("xdp_dummy"), None);
    }
}
