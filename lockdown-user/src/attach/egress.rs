//! The TC egress attachment, of either kind, and how the pins record it:
//!
//! - **TCX** (Linux 6.6+, preferred): a `bpf_link` pinned as `link_egress`; replaced with
//!   `bpf_link_update`, detached by unpinning.
//! - **netlink** (no TCX): lockdown's `cls_bpf` filter on the clsact egress hook ([`tc`]), at its
//!   own priority and handle. The program is pinned as `prog_egress_tc`, which is what says the
//!   filter is lockdown's to replace and remove. When lockdown had to create the clsact qdisc, a
//!   marker (`clsact_created`, a symlink on bpffs) says so; `down` deletes the qdisc only
//!   then, and only when no other filter is on it. A qdisc another tool created is never deleted.
//!
//! `up --replace` moves between the kinds when the probe picks another one than the pins record
//! (after `LOCKDOWN_FORCE_TC` changed): the new attachment is made and pinned first, then the old
//! one removed, so the interface is never without an egress program; for that moment both run
//! (a packet is learnt twice, which changes nothing, and counted twice in `egress_packets`).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    maps::{Array, MapData},
    programs::{
        LinkOrder, SchedClassifier, TcAttach, TcAttachType,
        links::{FdLink, PinnedLink},
    },
};
use lockdown_common::contract::{
    config::Config,
    maps::{CONFIG, PROG_EGRESS},
};
use serde::Serialize;

use crate::{
    datapath::pins::{PinDir, STAGING, open_pinned},
    host::{
        probe::{Feature, Features},
        tc,
    },
};

/// How the egress program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tcx,
    Netlink,
}

impl Kind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        }
    }
}

/// TCX where the kernel has it, else the netlink filter.
pub fn choose(features: &Features) -> Kind {
    if features.has(Feature::Tcx) {
        Kind::Tcx
    } else {
        Kind::Netlink
    }
}

fn staging(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{STAGING}{name}"))
}

/// Whether the marker says lockdown created the clsact qdisc (the symlink itself: its target is
/// text, not a file, so `Path::exists` would say no).
fn created_clsact(dir: &PinDir) -> bool {
    fs::symlink_metadata(dir.clsact_created()).is_ok()
}

/// The kind the pins record, if any egress attachment is pinned.
pub fn pinned(dir: &PinDir) -> Option<Kind> {
    if dir.link_egress().exists() {
        Some(Kind::Tcx)
    } else if dir.prog_egress_tc().exists() {
        Some(Kind::Netlink)
    } else {
        None
    }
}

/// Before anything is touched: the netlink kind needs the ingress slot free or a clsact qdisc in
/// it (the `ingress` qdisc takes the same slot and has no egress hook).
pub fn check(kind: Kind, iface: &str, ifindex: u32) -> Result<()> {
    if kind == Kind::Tcx {
        return Ok(());
    }
    match tc::ingress_slot(ifindex)? {
        None => Ok(()),
        Some(k) if k == "clsact" => Ok(()),
        Some(other) => bail!(
            "{iface} has an `{other}` qdisc, and without TCX (Linux 6.6) lockdown's egress program \
             needs a clsact qdisc in its place (clsact also has the ingress hook). Nothing was \
             changed. If nothing needs that qdisc, remove it (`tc qdisc del dev {iface} {other}`)"
        ),
    }
}

/// Attaches the loaded egress program `prog` to `ifindex` as `kind`, and pins what records it.
/// On failure, what was made is in the pins, for [`detach`].
pub fn attach(dir: &PinDir, prog: &mut SchedClassifier, ifindex: u32, kind: Kind) -> Result<()> {
    match kind {
        Kind::Tcx => {
            let link = attach_tcx(prog, ifindex, &dir.iface)?;
            link.pin(dir.link_egress())
                .context("pinning the egress link")?;
            Ok(())
        }
        Kind::Netlink => {
            ensure_clsact(dir, ifindex)?;
            // The pin first: whatever is attached is then found by `detach`.
            prog.pin(dir.prog_egress_tc())
                .context("pinning the egress program")?;
            attach_netlink(prog, ifindex, &dir.iface)
        }
    }
}

fn attach_tcx(prog: &mut SchedClassifier, ifindex: u32, iface: &str) -> Result<FdLink> {
    tcx_link(
        prog,
        ifindex,
        TcAttachType::Egress,
        &format!("the TC egress program to {iface} (TCX)"),
    )
}

/// Attaches `prog` at TCX `hook` of interface `ifindex` (`what`: the program and where, for the
/// error) and returns its link, to pin. The egress program's and the SYN-cookie hand-off's.
pub(crate) fn tcx_link(
    prog: &mut SchedClassifier,
    ifindex: u32,
    hook: TcAttachType,
    what: &str,
) -> Result<FdLink> {
    let id = prog
        .attach(
            ifindex,
            TcAttach::Tcx {
                attach_type: hook,
                order: LinkOrder::default(),
            },
        )
        .with_context(|| format!("attaching {what}"))?;
    prog.take_link(id)?
        .try_into()
        .with_context(|| format!("the link of {what} is not a bpf_link"))
}

/// Swaps `prog` into the TCX link pinned at `pin` (`what`: the program, for the error): the old
/// program runs until the new one does.
pub(crate) fn swap_into_pinned_tcx(
    prog: &mut SchedClassifier,
    pin: &Path,
    what: &str,
) -> Result<()> {
    let link = FdLink::from(
        PinnedLink::from_pin(pin).with_context(|| format!("opening the link of {what}"))?,
    );
    let id = prog
        .attach_to_link(
            link.try_into()
                .with_context(|| format!("the link of {what} has the wrong type"))?,
        )
        .with_context(|| format!("swapping {what}"))?;
    // The pin keeps the link; this process's handle can go.
    drop(prog.take_link(id)?);
    Ok(())
}

/// The netlink filter: attached anew, or — when a filter of lockdown's program already sits at
/// its place with no pins to say so (an earlier attempt died before pinning) — replaced. Someone
/// else's filter there is refused.
fn attach_netlink(prog: &mut SchedClassifier, ifindex: u32, iface: &str) -> Result<()> {
    match tc::lockdowns(ifindex)? {
        None => tc::attach(prog, ifindex),
        Some(f) if f.name.as_deref() == Some(PROG_EGRESS) => {
            log::info!(
                "{iface}: taking over lockdown's TC egress filter left by an earlier attempt"
            );
            tc::replace(prog, ifindex)
        }
        Some(f) => bail!(
            "{iface}'s clsact egress hook has a filter at lockdown's priority {:#x} and handle \
             {:#x} that is not lockdown's ({} {}); remove it or free that place",
            tc::PRIORITY,
            tc::HANDLE,
            f.kind,
            f.name.as_deref().unwrap_or("(unnamed)")
        ),
    }
}

/// Adds the clsact qdisc if the interface has none, and marks it as lockdown's.
fn ensure_clsact(dir: &PinDir, ifindex: u32) -> Result<()> {
    if tc::ingress_slot(ifindex)?.is_some() {
        // `check` refused any other qdisc; a clsact qdisc is someone's already.
        return Ok(());
    }
    // A marker already there is from when lockdown created the qdisc that has since gone.
    if tc::add_clsact(ifindex)? && !created_clsact(dir) {
        std::os::unix::fs::symlink(
            format!("clsact qdisc of interface {ifindex} created by lockdown"),
            dir.clsact_created(),
        )
        .context("recording that lockdown created the clsact qdisc")?;
    }
    Ok(())
}

/// Swaps the loaded `prog` in for the attached egress program, as `kind`. `swapped` turns true as
/// soon as the new program runs.
pub fn replace(
    dir: &PinDir,
    prog: &mut SchedClassifier,
    ifindex: u32,
    kind: Kind,
    swapped: &mut bool,
) -> Result<()> {
    let before = pinned(dir);
    match (before, kind) {
        (Some(Kind::Tcx), Kind::Tcx) => {
            swap_into_pinned_tcx(prog, &dir.link_egress(), "the egress program")?;
            *swapped = true;
            Ok(())
        }
        (Some(Kind::Netlink), Kind::Netlink) => {
            let staged = staging(&dir.prog_egress_tc());
            let _ = fs::remove_file(&staged);
            prog.pin(&staged)
                .context("pinning the new egress program")?;
            let done = (|| {
                ensure_clsact(dir, ifindex)?;
                match tc::lockdowns(ifindex)? {
                    Some(_) => tc::replace(prog, ifindex),
                    None => {
                        log::warn!(
                            "{}: lockdown's TC egress filter was gone (its clsact qdisc deleted?); attaching it again",
                            dir.iface
                        );
                        attach_netlink(prog, ifindex, &dir.iface)
                    }
                }
            })();
            if let Err(e) = done {
                let _ = fs::remove_file(&staged);
                return Err(e.context("swapping the egress program"));
            }
            *swapped = true;
            fs::rename(&staged, dir.prog_egress_tc()).context("pinning the new egress program")
        }
        (before, kind) => {
            // Another kind (or nothing pinned): the new attachment first, then the old one goes.
            match kind {
                Kind::Tcx => {
                    let link = attach_tcx(prog, ifindex, &dir.iface)?;
                    *swapped = true;
                    link.pin(dir.link_egress())
                        .context("pinning the egress link")?;
                }
                Kind::Netlink => {
                    attach(dir, prog, ifindex, kind)?;
                    *swapped = true;
                }
            }
            match before {
                Some(Kind::Tcx) if kind == Kind::Netlink => detach_tcx(dir),
                Some(Kind::Netlink) if kind == Kind::Tcx => detach_netlink(dir, Some(ifindex)),
                _ => Ok(()),
            }
            .context("removing the egress attachment of the other kind")?;
            log::info!(
                "{}: egress attachment moved from {} to {}",
                dir.iface,
                before.map_or("nothing", Kind::name),
                kind.name()
            );
            Ok(())
        }
    }
}

/// Removes the pinned egress attachment of either kind (each step runs even if another failed).
pub fn detach(dir: &PinDir) -> Result<()> {
    let mut errors = Vec::new();
    if let Err(e) = detach_tcx(dir) {
        errors.push(format!("{e:#}"));
    }
    if (dir.prog_egress_tc().exists() || created_clsact(dir))
        && let Err(e) = detach_netlink(dir, ifindex(dir))
    {
        errors.push(format!("{e:#}"));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(anyhow!(errors.join("; "))),
    }
}

fn detach_tcx(dir: &PinDir) -> Result<()> {
    let link = dir.link_egress();
    if !link.exists() {
        return Ok(());
    }
    // Unpinning drops the last reference: the kernel detaches the program.
    let fd_link = PinnedLink::from_pin(&link)
        .map_err(anyhow::Error::from)
        .and_then(|l| Ok(l.unpin()?))
        .with_context(|| link.display().to_string())?;
    drop(fd_link);
    Ok(())
}

/// Deletes lockdown's netlink filter — only if it still runs lockdown's program — then the clsact
/// qdisc if lockdown created it and no other filter is on it, then the pins. With no interface
/// (`ifindex` `None`: it is gone, and the filter with it) only the pins go.
fn detach_netlink(dir: &PinDir, ifindex: Option<u32>) -> Result<()> {
    if let Some(ifindex) = ifindex {
        let filters = tc::filters(ifindex)?;
        if let Some(f) = filters.iter().find(|f| f.at_lockdowns_place()) {
            if f.name.as_deref() == Some(PROG_EGRESS) {
                tc::delete(ifindex)?;
            } else {
                log::warn!(
                    "{}: the filter at lockdown's place is not lockdown's ({} {}); left alone",
                    dir.iface,
                    f.kind,
                    f.name.as_deref().unwrap_or("(unnamed)")
                );
            }
        }
        if created_clsact(dir) {
            let others: Vec<_> = filters.iter().filter(|f| !f.at_lockdowns_place()).collect();
            if others.is_empty() {
                tc::delete_clsact(ifindex)?;
            } else {
                log::info!(
                    "{}: keeping the clsact qdisc lockdown created: {} other filter(s) use it",
                    dir.iface,
                    others.len()
                );
            }
        }
    }
    for pin in [dir.prog_egress_tc(), dir.clsact_created()] {
        match fs::remove_file(&pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", pin.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The interface the attachment is on: the index in the pinned config, else the one the name has
/// now. `None` if neither is there (the interface is gone).
fn ifindex(dir: &PinDir) -> Option<u32> {
    let pinned = || -> Result<u32> {
        let map: Array<MapData, Config> = open_pinned(&dir.map(CONFIG))?.try_into()?;
        Ok(map.get(&0, 0)?.ifindex)
    };
    match pinned() {
        Ok(i) if i != 0 && exists(i) => Some(i),
        _ => by_name(&dir.iface),
    }
}

/// The index interface `name` has in this namespace, if it exists.
fn by_name(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Whether interface index `i` exists in this namespace.
fn exists(i: u32) -> bool {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has IF_NAMESIZE bytes, as if_indextoname needs.
    !unsafe { libc::if_indextoname(i, name.as_mut_ptr()) }.is_null()
}

/// What `status` says of the egress attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct State {
    pub kind: Option<Kind>,
    /// The program id the kernel runs at the hook (the link's, or the filter's).
    pub prog_id: Option<u32>,
    /// For a netlink filter: whether lockdown created the clsact qdisc.
    pub clsact_created: bool,
    /// Something is wrong: the filter is gone, or not lockdown's program.
    pub problem: Option<String>,
}

/// The pinned egress attachment as the kernel has it now.
pub fn state(dir: &PinDir) -> Result<State> {
    let kind = pinned(dir);
    let mut state = State {
        kind,
        prog_id: None,
        clsact_created: created_clsact(dir),
        problem: None,
    };
    match kind {
        None => state.problem = Some("no egress program is pinned".to_owned()),
        Some(Kind::Tcx) => {
            let link = FdLink::from(
                PinnedLink::from_pin(dir.link_egress()).context("opening the egress link")?,
            );
            state.prog_id = Some(link.info().context("reading the egress link")?.program_id());
        }
        Some(Kind::Netlink) => match ifindex(dir) {
            None => state.problem = Some("the interface is gone".to_owned()),
            Some(i) => match tc::lockdowns(i)? {
                Some(f) if f.name.as_deref() == Some(PROG_EGRESS) => state.prog_id = f.prog_id,
                Some(f) => {
                    state.problem = Some(format!(
                        "the filter at lockdown's place runs {:?}, not lockdown's program",
                        f.name.unwrap_or_default()
                    ));
                }
                None => {
                    state.problem = Some(format!(
                        "lockdown's TC egress filter is gone (was the clsact qdisc deleted?): \
                         replies to connections this host opens are dropped; `lockdown up \
                         --replace --iface {}` attaches it again",
                        dir.iface
                    ));
                }
            },
        },
    }
    Ok(state)
}
