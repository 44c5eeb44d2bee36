//! Attaching and detaching: load the object with its maps pinned, write the policy, attach the TC
//! egress program and then the XDP program, and pin both links. A failure at any step removes
//! everything this attempt created, so `up` either locks the interface down or changes nothing.

use std::{collections::BTreeSet, ffi::CString, fs};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    EbpfLoader,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
use lockdown_common::{
    config::{ATTACH_NATIVE, ATTACH_SKB, Config},
    maps::{ALL, FLOWS, PROG_EGRESS, PROG_INGRESS},
    rules::AllowRule,
};

use crate::{
    handles::{Handles, compile},
    pins::{PinDir, ensure_root, lock},
};

/// XDP attach mode.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Native (driver) XDP.
    Native,
    /// Generic XDP in the kernel's receive path; works on every interface, slower.
    Skb,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }

    const fn xdp(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Skb => XdpMode::Skb,
        }
    }
}

/// Everything `up` needs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub iface: String,
    pub rules: BTreeSet<AllowRule>,
    pub mode: Mode,
    pub max_flows: u32,
    pub config: Config,
}

/// The interface index, or a clear error naming the interface.
pub fn ifindex(iface: &str) -> Result<u32> {
    let c = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: `c` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("unknown interface {iface:?} (not found in this network namespace)");
    }
    Ok(index)
}

/// Checks everything that can be checked before touching the kernel.
pub fn preflight(dir: &PinDir, opts: &UpOptions) -> Result<u32> {
    let index = ifindex(&opts.iface)?;
    // The loopback device is always ifindex 1 in its namespace.
    if opts.iface == "lo" || index == 1 {
        bail!(
            "refusing to attach to the loopback interface {:?}: loopback traffic is never filtered (the seed chain's `-i lo -j ACCEPT`)",
            opts.iface
        );
    }
    if dir.is_locked() {
        bail!(
            "{} is already locked down; run `lockdown down --iface {}` first",
            opts.iface,
            opts.iface
        );
    }
    if opts.max_flows == 0 {
        bail!("--max-flows must be at least 1");
    }
    compile(&opts.rules)?;
    Ok(index)
}

/// Locks an interface down: attaches both programs and pins maps and links under `dir`.
pub fn up(dir: &PinDir, opts: &UpOptions) -> Result<()> {
    let root = dir.dir.parent().context("pin directory has no parent")?;
    preflight(dir, opts)?;
    ensure_root(root)?;
    let _lock = lock(root)?;
    // Checked again under the lock: another `up` may have won the race.
    let index = preflight(dir, opts)?;
    // Leftovers of an attempt that died before pinning its links hold no filter; clear them.
    dir.remove_all()?;
    fs::create_dir_all(&dir.dir).with_context(|| format!("creating {}", dir.dir.display()))?;
    let result = attach(dir, opts, index);
    if result.is_err() {
        // Dropping the unpinned links on the error path already detached them; remove the pins.
        let _ = detach_locked(dir);
    }
    result
}

fn attach(dir: &PinDir, opts: &UpOptions, index: u32) -> Result<()> {
    let paths: Vec<_> = ALL.iter().map(|name| (*name, dir.map(name))).collect();
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(FLOWS, opts.max_flows);
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(crate::EBPF_OBJECT)
        .context("loading the eBPF object")?;

    // The policy is in place before any packet sees the programs.
    let mut handles = Handles::open(dir)?;
    let mut config = opts.config;
    config.ifindex = index;
    config.attach_mode = match opts.mode {
        Mode::Native => ATTACH_NATIVE,
        Mode::Skb => ATTACH_SKB,
    };
    handles.write_config(&config)?;
    handles.set_rules(&opts.rules)?;

    // Egress first, so flows are learned before ingress starts dropping.
    let tc: &mut SchedClassifier = ebpf
        .program_mut(PROG_EGRESS)
        .context("egress program missing")?
        .try_into()?;
    tc.load().context("loading the TC egress program")?;
    let id = tc
        .attach(index, TcAttachType::Egress)
        .with_context(|| format!("attaching the TC egress program to {}", opts.iface))?;
    let link: FdLink = tc
        .take_link(id)?
        .try_into()
        .context("TC link is not a bpf_link")?;
    link.pin(dir.link_egress())
        .context("pinning the egress link")?;

    let xdp: &mut Xdp = ebpf
        .program_mut(PROG_INGRESS)
        .context("ingress program missing")?
        .try_into()?;
    xdp.load().context("loading the XDP program")?;
    let id = xdp
        .attach(index, opts.mode.xdp())
        .map_err(|e| xdp_attach_error(e, opts))?;
    let link: FdLink = xdp
        .take_link(id)?
        .try_into()
        .context("XDP link is not a bpf_link")?;
    link.pin(dir.link_ingress())
        .context("pinning the ingress link")?;

    Ok(())
}

fn xdp_attach_error(e: ProgramError, opts: &UpOptions) -> anyhow::Error {
    let errno = match &e {
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    };
    let iface = &opts.iface;
    match (opts.mode, errno) {
        (Mode::Native, Some(libc::EOPNOTSUPP | libc::EINVAL)) => anyhow!(e).context(format!(
            "native XDP is not supported on {iface}; retry with `--mode skb` (generic XDP)"
        )),
        (_, Some(libc::EBUSY | libc::EEXIST)) => anyhow!(e).context(format!(
            "{iface} already has another XDP program attached; detach it first"
        )),
        _ => anyhow!(e).context(format!("attaching the XDP program to {iface}")),
    }
}

/// Detaches both programs and removes every pin. Each step runs even if an earlier one failed.
pub fn detach(dir: &PinDir) -> Result<()> {
    let _lock = match dir.dir.parent() {
        Some(root) => Some(lock(root)?),
        None => None,
    };
    detach_locked(dir)
}

/// [`detach`], for a caller that holds the pin-root lock.
fn detach_locked(dir: &PinDir) -> Result<()> {
    let mut errors = Vec::new();
    for link in [dir.link_ingress(), dir.link_egress()] {
        if !link.exists() {
            continue;
        }
        // Unpinning drops the last reference: the kernel detaches the program.
        match PinnedLink::from_pin(&link)
            .map_err(anyhow::Error::from)
            .and_then(|l| Ok(l.unpin()?))
        {
            Ok(fd_link) => drop(fd_link),
            Err(e) => errors.push(format!("{}: {e:#}", link.display())),
        }
    }
    if let Err(e) = dir.remove_all() {
        errors.push(format!("{e:#}"));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => bail!("detaching {}: {}", dir.iface, errors.join("; ")),
    }
}
