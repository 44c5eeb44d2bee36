//! What `up` and `up --replace` load and how they attach it, decided from one probe of the kernel
//! before anything is touched: the egress attachment kind ([`egress::choose`]), the XDP program
//! variant ([`variant::choose`]), and a refusal naming each kernel feature that is missing with
//! the Linux version that brings it.

use anyhow::Result;
use lockdown_common::contract::maps::PROG_EGRESS;

use super::{egress, variant::Variant};
use crate::host::{
    link::{LinkInfo, XdpMode},
    probe::Kernel,
};

/// The decisions for one interface.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kernel: Kernel,
    pub egress: egress::Kind,
    pub variant: Variant,
}

impl Plan {
    /// Probes the kernel and decides for `mode` on `link`; fails, having touched nothing, when the
    /// kernel or the interface cannot run what would be chosen.
    pub fn new(mode: XdpMode, link: &LinkInfo) -> Result<Self> {
        let plan = Self::decide(Kernel::probe()?, mode, link)?;
        egress::check(plan.egress, &link.name, link.index)?;
        log::info!(
            "{}; {}: egress via {}, XDP program {} ({})",
            plan.kernel.summary(),
            link.name,
            plan.egress.name(),
            plan.variant.program(),
            plan.variant.describe()
        );
        Ok(plan)
    }

    /// The decisions for `kernel` as probed (or as the unit tests describe a release).
    pub fn decide(kernel: Kernel, mode: XdpMode, link: &LinkInfo) -> Result<Self> {
        let egress = egress::choose(&kernel.features);
        let variant = super::variant::choose(&kernel.features, mode, link, &kernel.release)?;
        kernel.require(&[variant.program(), PROG_EGRESS], variant.needs())?;
        Ok(Self {
            kernel,
            egress,
            variant,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::{Features, Since};

    fn kernel(v: Since) -> Kernel {
        Kernel {
            release: format!("{}.{}", v.0, v.1),
            features: Features::as_of(v),
            forced_netlink: false,
            forced_no_reqsk: false,
        }
    }

    fn link(mtu: u32) -> LinkInfo {
        LinkInfo {
            index: 2,
            name: "eth0".to_owned(),
            mtu,
            max_mtu: None,
            kind: None,
            driver: Some("ena".to_owned()),
            xdp: None,
            master: None,
        }
    }

    /// One line per case: what `up` does there.
    fn outcome(v: Since, mode: XdpMode, mtu: u32) -> String {
        match Plan::decide(kernel(v), mode, &link(mtu)) {
            Ok(p) => format!("{} + {}", p.egress.name(), p.variant.program()),
            Err(e) => {
                let e = e.to_string();
                if e.contains("MTU") {
                    "refused: MTU".to_owned()
                } else {
                    format!("refused: {}", &e[e.find("needs: ").map_or(0, |i| i + 7)..])
                }
            }
        }
    }

    /// The decisions on the distribution kernels that matter, reasoned from the release each
    /// feature came with (the running kernel is probed instead).
    #[test]
    fn decisions_per_distribution_kernel() {
        let table = [
            // Debian 11, Amazon Linux 2 (5.10): no bpf_ktime_get_coarse_ns.
            (
                (5, 10),
                XdpMode::Driver,
                1500,
                "refused: the BPF helper bpf_ktime_get_coarse_ns",
            ),
            (
                (5, 10),
                XdpMode::Skb,
                1500,
                "refused: the BPF helper bpf_ktime_get_coarse_ns",
            ),
            // Ubuntu 22.04 (5.15): no TCX, no multi-buffer XDP.
            ((5, 15), XdpMode::Driver, 1500, "netlink + lockdown_linear"),
            ((5, 15), XdpMode::Driver, 9001, "refused: MTU"),
            ((5, 15), XdpMode::Skb, 9001, "netlink + lockdown_linear"),
            // Debian 12, Amazon Linux 2023 (6.1): no TCX.
            ((6, 1), XdpMode::Driver, 9001, "netlink + lockdown_ingress"),
            ((6, 1), XdpMode::Skb, 1500, "netlink + lockdown_linear"),
            // 6.6 and later: TCX.
            ((6, 6), XdpMode::Driver, 1500, "tcx + lockdown_ingress"),
            ((6, 12), XdpMode::Skb, 9001, "tcx + lockdown_linear"),
        ];
        for (v, mode, mtu, want) in table {
            let got = outcome(v, mode, mtu);
            assert!(
                got.starts_with(want),
                "Linux {v:?}, {} mode, MTU {mtu}: {got:?}, want {want:?}",
                mode.name()
            );
        }
    }
}
