//! What `up` and `up --replace` load and how they attach it, decided from one probe of the kernel
//! before anything is touched: the egress attachment kind ([`egress::choose`]), the XDP program
//! variant ([`variant::choose`]), and a refusal naming each kernel feature that is missing with
//! the Linux version that brings it.

use anyhow::Result;
use lockdown_common::maps::PROG_EGRESS;

use super::{Mode, egress, variant::Variant};
use crate::{host::probe::Kernel, link::LinkInfo};

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
    pub fn new(mode: Mode, link: &LinkInfo) -> Result<Self> {
        let kernel = Kernel::probe()?;
        let egress = egress::choose(&kernel.features);
        let variant = super::variant::choose(&kernel.features, mode, link, &kernel.release)?;
        kernel.require(&[variant.program(), PROG_EGRESS], variant.needs())?;
        egress::check(egress, &link.name, link.index)?;
        log::info!(
            "{}; {}: egress via {}, XDP program {} ({})",
            kernel.summary(),
            link.name,
            egress.name(),
            variant.program(),
            variant.describe()
        );
        Ok(Self {
            kernel,
            egress,
            variant,
        })
    }
}
