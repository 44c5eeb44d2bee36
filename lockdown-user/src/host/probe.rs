//! What the running kernel offers lockdown, found out by asking it: tiny programs are loaded and
//! links tried against an interface index that cannot exist, and every helper and map type lockdown's
//! programs use is loaded once on its own (aya's probes). Never a kernel-version table: the
//! versions below only say, in a refusal, which release brings what is missing (and let the unit
//! tests reason about kernels this machine does not run).
//!
//! [`Kernel::probe`] runs once per `up`, `run` or `up --replace`, before anything is touched;
//! [`Kernel::require`] then turns whatever the chosen programs need and the kernel lacks into one
//! message naming each feature and the Linux version that brings it.
//!
//! Test hook (not in `--help`): `LOCKDOWN_FORCE_TC=netlink` makes the probe report no TCX, so the
//! egress program is attached as a netlink TC filter on a kernel that has TCX; the integration
//! tests run that way too. Any other value is refused. `LOCKDOWN_FORCE_NO_REQSK=1` likewise hides
//! the kfunc `bpf_sk_assign_tcp_reqsk`, so SYN cookies cannot answer.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CStr,
    fmt, io, mem,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    sync::LazyLock,
};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_bpf_global_data_supported, is_helper_supported, is_map_supported},
};
use aya_obj::{
    Object,
    btf::{Btf, BtfKind},
    generated::{
        BPF_ALU64, BPF_CALL, BPF_EXIT, BPF_F_XDP_HAS_FRAGS, BPF_JMP, BPF_K, BPF_MOV,
        XDP_FLAGS_DRV_MODE, bpf_attach_type, bpf_attr, bpf_cmd, bpf_func_id, bpf_insn,
        bpf_map_type, bpf_prog_type,
    },
};
use serde::Serialize;

/// A Linux release, `(major, minor)`.
pub type Since = (u8, u8);

/// The program types lockdown attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgKind {
    Xdp,
    /// `BPF_PROG_TYPE_SCHED_CLS`: the TC egress program.
    Tc,
}

impl ProgKind {
    const fn aya(self) -> ProgramType {
        match self {
            Self::Xdp => ProgramType::Xdp,
            Self::Tc => ProgramType::SchedClassifier,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::Xdp => "XDP",
            Self::Tc => "TC",
        }
    }
}

/// The BPF helpers lockdown's programs call, with the release that brought each. A helper the
/// object calls that is missing here fails a unit test, so a new one cannot slip in unprobed.
const HELPERS: &[(bpf_func_id, &str, Since)] = &[
    (
        bpf_func_id::BPF_FUNC_map_lookup_elem,
        "bpf_map_lookup_elem",
        (3, 19),
    ),
    (
        bpf_func_id::BPF_FUNC_map_update_elem,
        "bpf_map_update_elem",
        (3, 19),
    ),
    (
        bpf_func_id::BPF_FUNC_map_delete_elem,
        "bpf_map_delete_elem",
        (3, 19),
    ),
    (
        bpf_func_id::BPF_FUNC_skb_pull_data,
        "bpf_skb_pull_data",
        (4, 9),
    ),
    (
        bpf_func_id::BPF_FUNC_ringbuf_output,
        "bpf_ringbuf_output",
        (5, 8),
    ),
    (
        bpf_func_id::BPF_FUNC_ringbuf_reserve,
        "bpf_ringbuf_reserve",
        (5, 8),
    ),
    (
        bpf_func_id::BPF_FUNC_ringbuf_submit,
        "bpf_ringbuf_submit",
        (5, 8),
    ),
    (
        bpf_func_id::BPF_FUNC_ringbuf_discard,
        "bpf_ringbuf_discard",
        (5, 8),
    ),
    (
        bpf_func_id::BPF_FUNC_ktime_get_coarse_ns,
        "bpf_ktime_get_coarse_ns",
        (5, 11),
    ),
    (
        bpf_func_id::BPF_FUNC_xdp_get_buff_len,
        "bpf_xdp_get_buff_len",
        (5, 18),
    ),
    (
        bpf_func_id::BPF_FUNC_xdp_load_bytes,
        "bpf_xdp_load_bytes",
        (5, 18),
    ),
    (bpf_func_id::BPF_FUNC_tail_call, "bpf_tail_call", (4, 2)),
    (
        bpf_func_id::BPF_FUNC_xdp_adjust_meta,
        "bpf_xdp_adjust_meta",
        (4, 15),
    ),
    (
        bpf_func_id::BPF_FUNC_xdp_adjust_tail,
        "bpf_xdp_adjust_tail",
        (4, 18),
    ),
    (bpf_func_id::BPF_FUNC_sk_release, "bpf_sk_release", (4, 20)),
    (
        bpf_func_id::BPF_FUNC_skc_lookup_tcp,
        "bpf_skc_lookup_tcp",
        (5, 2),
    ),
];

/// Helpers only XDP programs may call. A subprogram shared by the XDP and TC programs (the
/// cookie stage's, which no TC program reaches) does not make the TC program need them.
const XDP_ONLY: &[bpf_func_id] = &[
    bpf_func_id::BPF_FUNC_xdp_adjust_meta,
    bpf_func_id::BPF_FUNC_xdp_adjust_tail,
    bpf_func_id::BPF_FUNC_xdp_get_buff_len,
    bpf_func_id::BPF_FUNC_xdp_load_bytes,
];

/// The map types of lockdown's object, with the release that brought each (same rule as
/// [`HELPERS`]).
const MAP_TYPES: &[(bpf_map_type, MapType, &str, Since)] = &[
    (
        bpf_map_type::BPF_MAP_TYPE_HASH,
        MapType::Hash,
        "hash map",
        (3, 19),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_ARRAY,
        MapType::Array,
        "array map",
        (3, 19),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_PROG_ARRAY,
        MapType::ProgramArray,
        "program array map",
        (4, 2),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY,
        MapType::PerCpuArray,
        "per-CPU array map",
        (4, 6),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_LRU_HASH,
        MapType::LruHash,
        "LRU hash map",
        (4, 10),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_LPM_TRIE,
        MapType::LpmTrie,
        "LPM trie map",
        (4, 11),
    ),
    (
        bpf_map_type::BPF_MAP_TYPE_RINGBUF,
        MapType::RingBuf,
        "ring buffer map",
        (5, 8),
    ),
];

/// A kernel feature lockdown probes for on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// TCX: `bpf_link`-based TC hooks, so the egress program is a pinnable link.
    Tcx,
    /// `bpf_link` for XDP, so the ingress program is a pinnable link.
    XdpLink,
    /// Multi-buffer XDP programs (`BPF_F_XDP_HAS_FRAGS`).
    XdpFrags,
    /// Global data (`.rodata`/`.bss` maps), which the object uses.
    GlobalData,
    /// The kfunc `bpf_sk_assign_tcp_reqsk` (SYN cookies issued from BPF): the TC hand-off of a
    /// cookie ACK to its listener (`attach::cookies`). Without it cookies cannot answer.
    SyncookieKfunc,
}

impl Feature {
    /// What it is, for a message, and the release that brought it.
    pub const fn describe(self) -> (&'static str, Since) {
        match self {
            Self::Tcx => ("TCX (bpf_link-based TC hooks)", (6, 6)),
            Self::XdpLink => ("bpf_link for XDP programs", (5, 9)),
            Self::XdpFrags => ("multi-buffer XDP programs (xdp.frags)", (5, 18)),
            Self::GlobalData => ("BPF global data", (5, 2)),
            Self::SyncookieKfunc => ("the kfunc bpf_sk_assign_tcp_reqsk", (6, 9)),
        }
    }
}

/// What the running kernel offers, as probed (or, in unit tests, as a release would offer it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub features: BTreeSet<Feature>,
    /// The helpers (by id) each program type may call here, of those lockdown's programs use.
    pub helpers: BTreeSet<(ProgKind, u32)>,
    /// The map types (by id) the kernel creates, of those lockdown's object has.
    pub maps: BTreeSet<u32>,
}

impl Features {
    pub fn has(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }

    /// What a kernel of release `v` offers, by the versions of the tables above: how the unit
    /// tests reason about kernels this machine does not run. Never used to decide on a real one.
    pub fn as_of(v: Since) -> Self {
        let needs = needs();
        Self {
            features: [
                Feature::Tcx,
                Feature::XdpLink,
                Feature::XdpFrags,
                Feature::GlobalData,
                Feature::SyncookieKfunc,
            ]
            .into_iter()
            .filter(|f| f.describe().1 <= v)
            .collect(),
            helpers: needs
                .programs
                .values()
                .flat_map(|(kind, ids)| ids.iter().map(move |id| (*kind, *id)))
                .filter(|(_, id)| helper(*id).is_some_and(|(_, _, since)| since <= v))
                .collect(),
            maps: needs
                .maps
                .iter()
                .copied()
                .filter(|t| map_type(*t).is_some_and(|(_, _, _, since)| since <= v))
                .collect(),
        }
    }
}

/// One thing a program needs that the kernel lacks.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lack {
    pub what: String,
    pub since: Since,
}

impl fmt::Display for Lack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (Linux {}.{})", self.what, self.since.0, self.since.1)
    }
}

/// What the programs of the embedded object need: the helpers each calls, and the map types.
#[derive(Debug, Default)]
pub struct Needs {
    /// Program name → its type and the helper ids it may call (its own code and every shared
    /// subprogram: a superset of what it reaches).
    pub programs: BTreeMap<String, (ProgKind, BTreeSet<u32>)>,
    pub maps: BTreeSet<u32>,
}

/// [`Needs`] of [`crate::EBPF_OBJECT`], read once.
pub fn needs() -> &'static Needs {
    static NEEDS: LazyLock<Needs> = LazyLock::new(|| {
        scan(crate::EBPF_OBJECT).expect("the embedded eBPF object does not parse")
    });
    &NEEDS
}

/// Reads the helper calls (`call` with `src_reg` 0) of every program in `object` and its map
/// types. Calls in shared subprograms count for every program.
pub fn scan(object: &[u8]) -> Result<Needs> {
    let obj = Object::parse(object).context("parsing the eBPF object")?;
    let program_sections: BTreeSet<usize> =
        obj.programs.values().map(|p| p.section_index).collect();
    let calls = |insns: &[bpf_insn]| -> BTreeSet<u32> {
        insns
            .iter()
            .filter(|i| u32::from(i.code) == BPF_JMP | BPF_CALL && i.src_reg() == 0)
            .map(|i| i.imm as u32)
            .collect()
    };
    let shared: BTreeSet<u32> = obj
        .functions
        .iter()
        .filter(|((section, _), _)| !program_sections.contains(section))
        .flat_map(|(_, f)| calls(&f.instructions))
        .collect();
    let mut programs = BTreeMap::new();
    for (name, prog) in &obj.programs {
        let kind = match prog.section {
            aya_obj::ProgramSection::Xdp { .. } => ProgKind::Xdp,
            aya_obj::ProgramSection::SchedClassifier => ProgKind::Tc,
            _ => continue,
        };
        let own = obj
            .functions
            .get(&prog.function_key())
            .map(|f| calls(&f.instructions))
            .unwrap_or_default();
        let shared: BTreeSet<u32> = shared
            .iter()
            .copied()
            .filter(|id| kind == ProgKind::Xdp || !XDP_ONLY.iter().any(|h| *h as u32 == *id))
            .collect();
        programs.insert(name.clone(), (kind, &own | &shared));
    }
    let maps = obj.maps.values().map(aya_obj::Map::map_type).collect();
    Ok(Needs { programs, maps })
}

fn helper(id: u32) -> Option<(bpf_func_id, &'static str, Since)> {
    HELPERS.iter().copied().find(|(h, _, _)| *h as u32 == id)
}

fn map_type(id: u32) -> Option<(bpf_map_type, MapType, &'static str, Since)> {
    MAP_TYPES.iter().copied().find(|(t, ..)| *t as u32 == id)
}

/// What lockdown needs of the kernel that `features` lacks, for loading `programs` (names in the
/// object) and for the `extra` features the chosen attachment needs. Sorted, no repeats.
pub fn lacking(features: &Features, programs: &[&str], extra: &[Feature]) -> Result<Vec<Lack>> {
    let needs = needs();
    let mut out = BTreeSet::new();
    for f in [Feature::XdpLink, Feature::GlobalData]
        .iter()
        .chain(extra)
        .filter(|f| !features.has(**f))
    {
        let (what, since) = f.describe();
        out.insert(Lack {
            what: what.to_owned(),
            since,
        });
    }
    for name in programs {
        let (kind, ids) = needs
            .programs
            .get(*name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?;
        for id in ids
            .iter()
            .filter(|id| !features.helpers.contains(&(*kind, **id)))
        {
            let (_, helper_name, since) = helper(*id)
                .with_context(|| format!("program {name} calls BPF helper #{id}, unknown here"))?;
            out.insert(Lack {
                what: format!("the BPF helper {helper_name} in {} programs", kind.name()),
                since,
            });
        }
    }
    for t in needs.maps.iter().filter(|t| !features.maps.contains(t)) {
        let (_, _, what, since) = map_type(*t)
            .with_context(|| format!("the eBPF object has map type #{t}, unknown here"))?;
        out.insert(Lack {
            what: format!("the {what} type"),
            since,
        });
    }
    Ok(out.into_iter().collect())
}

/// The running kernel: its release and what it offers.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// `uname -r`.
    pub release: String,
    pub features: Features,
    /// `LOCKDOWN_FORCE_TC=netlink` hid TCX.
    pub forced_netlink: bool,
    /// `LOCKDOWN_FORCE_NO_REQSK=1` hid the kfunc `bpf_sk_assign_tcp_reqsk`.
    pub forced_no_reqsk: bool,
}

impl Kernel {
    /// Probes the running kernel (a few milliseconds: every probe is one tiny program).
    pub fn probe() -> Result<Self> {
        let forced_netlink = forced_netlink()?;
        let forced_no_reqsk = forced_no_reqsk()?;
        let mut features = BTreeSet::new();
        let needs = needs();
        let xdp = load_trivial(
            bpf_prog_type::BPF_PROG_TYPE_XDP,
            bpf_attach_type::BPF_XDP,
            0,
        )
        .context("probing the kernel: loading a trivial XDP program")?;
        let tc = load_trivial(
            bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS,
            bpf_attach_type::BPF_CGROUP_INET_INGRESS,
            0,
        )
        .context("probing the kernel: loading a trivial TC program")?;
        if !forced_netlink && probe_tcx(tc.as_fd())? {
            features.insert(Feature::Tcx);
        }
        if probe_xdp_link(xdp.as_fd())? {
            features.insert(Feature::XdpLink);
        }
        if probe_xdp_frags()? {
            features.insert(Feature::XdpFrags);
        }
        if is_bpf_global_data_supported().context("probing the kernel for BPF global data")? {
            features.insert(Feature::GlobalData);
        }
        if !forced_no_reqsk && has_kfunc(SYNCOOKIE_KFUNC)? {
            features.insert(Feature::SyncookieKfunc);
        }
        let mut helpers = BTreeSet::new();
        let wanted: BTreeSet<(ProgKind, u32)> = needs
            .programs
            .values()
            .flat_map(|(kind, ids)| ids.iter().map(move |id| (*kind, *id)))
            .collect();
        for (kind, id) in wanted {
            let Some((h, name, _)) = helper(id) else {
                // `lacking` names it; nothing to probe.
                continue;
            };
            if helper_supported(kind, h)
                .with_context(|| format!("probing the kernel for the BPF helper {name}"))?
            {
                helpers.insert((kind, id));
            }
        }
        let mut maps = BTreeSet::new();
        for t in &needs.maps {
            let Some((_, aya_type, what, _)) = map_type(*t) else {
                continue;
            };
            if is_map_supported(aya_type)
                .with_context(|| format!("probing the kernel for the {what} type"))?
            {
                maps.insert(*t);
            }
        }
        Ok(Self {
            release: release(),
            features: Features {
                features,
                helpers,
                maps,
            },
            forced_netlink,
            forced_no_reqsk,
        })
    }

    /// Fails, naming each missing feature and the release that brings it, unless the kernel
    /// offers what loading `programs` and the `extra` features need. Nothing has been touched
    /// when it fails.
    pub fn require(&self, programs: &[&str], extra: &[Feature]) -> Result<()> {
        let lacking = lacking(&self.features, programs, extra)?;
        let Some(newest) = lacking.iter().map(|l| l.since).max() else {
            return Ok(());
        };
        bail!(
            "this kernel (Linux {}) lacks what lockdown needs: {}. Nothing was changed; lockdown \
             needs Linux {}.{} or later for this",
            self.release,
            lacking
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            newest.0,
            newest.1
        )
    }

    /// One line for logs and `lockdown probe`.
    pub fn summary(&self) -> String {
        let f = &self.features;
        let yes = |feature| if f.has(feature) { "yes" } else { "no" };
        format!(
            "Linux {}: TCX {}{}, XDP bpf_link {}, multi-buffer XDP {}",
            self.release,
            yes(Feature::Tcx),
            if self.forced_netlink {
                " (hidden by LOCKDOWN_FORCE_TC=netlink)"
            } else {
                ""
            },
            yes(Feature::XdpLink),
            yes(Feature::XdpFrags),
        )
    }
}

/// Whether the kernel's BTF has the kfunc `name` (a `BTF_KIND_FUNC` in `/sys/kernel/btf/vmlinux`).
/// `false` without kernel BTF. Reads the whole vmlinux BTF, so only on demand.
pub fn has_kfunc(name: &str) -> Result<bool> {
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            log::debug!("no kernel BTF to look up {name} in: {e}");
            return Ok(false);
        }
    };
    Ok(btf.id_by_type_name_kind(name, BtfKind::Func).is_ok())
}

/// The kfunc the SYN-cookie hand-off calls.
pub const SYNCOOKIE_KFUNC: &str = "bpf_sk_assign_tcp_reqsk";

/// The test hook (not in `--help`): `LOCKDOWN_FORCE_NO_REQSK=1` makes the probe report no
/// [`SYNCOOKIE_KFUNC`], so a host that has it behaves as an older kernel.
pub const FORCE_NO_REQSK: &str = "LOCKDOWN_FORCE_NO_REQSK";

/// Whether `LOCKDOWN_FORCE_NO_REQSK=1` hides the kfunc (`0` or empty: no; anything else is
/// refused).
pub fn forced_no_reqsk() -> Result<bool> {
    match std::env::var(FORCE_NO_REQSK).ok().as_deref() {
        None | Some("" | "0") => Ok(false),
        Some("1") => Ok(true),
        Some(other) => bail!("{FORCE_NO_REQSK}={other:?}: the only value is `1`"),
    }
}

/// The test hook: `LOCKDOWN_FORCE_TC=netlink` hides TCX.
fn forced_netlink() -> Result<bool> {
    parse_force(std::env::var("LOCKDOWN_FORCE_TC").ok().as_deref())
}

/// The hook's value: unset or empty forces nothing, `netlink` hides TCX, anything else is an error.
fn parse_force(value: Option<&str>) -> Result<bool> {
    match value {
        None | Some("") => Ok(false),
        Some("netlink") => Ok(true),
        Some(other) => bail!("LOCKDOWN_FORCE_TC={other:?}: the only value is `netlink`"),
    }
}

fn release() -> String {
    // SAFETY: a zeroed utsname is a valid out-buffer.
    let mut u: libc::utsname = unsafe { mem::zeroed() };
    // SAFETY: `u` is valid for writes; uname fills NUL-terminated strings.
    if unsafe { libc::uname(&mut u) } != 0 {
        return "(unknown release)".to_owned();
    }
    // SAFETY: NUL-terminated by uname.
    unsafe { CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// aya's helper probe; a helper of a program type the kernel refuses outright counts as missing.
fn helper_supported(kind: ProgKind, helper: BpfHelper) -> Result<bool> {
    Ok(is_helper_supported(kind.aya(), helper)?)
}

/// `bpf(cmd, attr)`; a returned fd is owned by the caller.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid bpf_attr of the size passed; fields the kernel does not know are
    // zero, as it checks.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

fn insn(code: u32, imm: i32) -> bpf_insn {
    // SAFETY: an all-zero instruction is valid plain data.
    let mut insn: bpf_insn = unsafe { mem::zeroed() };
    insn.code = code as u8;
    insn.imm = imm;
    insn
}

/// Loads `r0 = 0; exit` as a program of `prog_type`.
fn load_trivial(
    prog_type: bpf_prog_type,
    expected_attach_type: bpf_attach_type,
    prog_flags: u32,
) -> io::Result<OwnedFd> {
    let insns = [
        insn(BPF_ALU64 | BPF_MOV | BPF_K, 0),
        insn(BPF_JMP | BPF_EXIT, 0),
    ];
    let license = c"GPL";
    // SAFETY: all-zero is the valid "unset" bpf_attr.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing the BPF_PROG_LOAD member of a zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = prog_type as u32;
    load.insn_cnt = insns.len() as u32;
    load.insns = insns.as_ptr() as u64;
    load.license = license.as_ptr() as u64;
    load.expected_attach_type = expected_attach_type as u32;
    load.prog_flags = prog_flags;
    sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
}

/// `BPF_LINK_CREATE` of `prog` at `ifindex`.
fn link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: bpf_attach_type,
    flags: u32,
) -> io::Result<OwnedFd> {
    // SAFETY: all-zero is the valid "unset" bpf_attr.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing the BPF_LINK_CREATE member of a zeroed union.
    let link = unsafe { &mut attr.link_create };
    link.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    link.__bindgen_anon_2.target_ifindex = ifindex;
    link.attach_type = attach_type as u32;
    link.flags = flags;
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
}

/// TCX: a TCX egress link to interface index `u32::MAX` (which cannot exist) fails with `ENODEV`
/// where the kernel knows the attach type, and `EINVAL` where it does not (as cilium/ebpf probes).
fn probe_tcx(tc: BorrowedFd<'_>) -> Result<bool> {
    match link_create(tc, u32::MAX, bpf_attach_type::BPF_TCX_EGRESS, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e).context("probing the kernel for TCX (BPF_LINK_CREATE)"),
        Ok(_) => bail!(
            "probing the kernel for TCX: a link to interface index {} was created",
            u32::MAX
        ),
    }
}

/// XDP links: a native-mode XDP link on the loopback device (index 1 in every namespace, and no
/// native XDP) fails with `EOPNOTSUPP` where the kernel has XDP links (`EEXIST` or `EBUSY` if a
/// generic program is attached there), and `EINVAL` where it has none. Nothing is attached.
fn probe_xdp_link(xdp: BorrowedFd<'_>) -> Result<bool> {
    match link_create(xdp, 1, bpf_attach_type::BPF_XDP, XDP_FLAGS_DRV_MODE) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EEXIST | libc::EBUSY)
            ) =>
        {
            Ok(true)
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e).context("probing the kernel for XDP links (BPF_LINK_CREATE)"),
        // Dropping the link detaches it at once.
        Ok(_) => Ok(true),
    }
}

/// Multi-buffer XDP: the kernel refuses `BPF_F_XDP_HAS_FRAGS` with `EINVAL` where it does not
/// know the flag.
fn probe_xdp_frags() -> Result<bool> {
    match load_trivial(
        bpf_prog_type::BPF_PROG_TYPE_XDP,
        bpf_attach_type::BPF_XDP,
        BPF_F_XDP_HAS_FRAGS,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
        Err(e) => Err(e).context("probing the kernel for multi-buffer XDP (BPF_PROG_LOAD)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockdown_common::contract::{
        maps::{PROG_EGRESS, PROG_INGRESS, PROG_INGRESS_LINEAR},
        syncookie::COOKIE_PROG,
    };

    #[test]
    fn every_helper_and_map_type_of_the_object_is_known() {
        let needs = needs();
        for name in [PROG_INGRESS, PROG_INGRESS_LINEAR, PROG_EGRESS, COOKIE_PROG] {
            let (_, ids) = &needs.programs[name];
            for id in ids {
                assert!(
                    helper(*id).is_some(),
                    "{name} calls helper #{id}: add it to HELPERS"
                );
            }
        }
        for t in &needs.maps {
            assert!(map_type(*t).is_some(), "map type #{t}: add it to MAP_TYPES");
        }
    }

    #[test]
    fn the_linear_variant_needs_nothing_newer_than_5_11() {
        let needs = needs();
        let (_, linear) = &needs.programs[PROG_INGRESS_LINEAR];
        let (_, frags) = &needs.programs[PROG_INGRESS];
        let get_buff_len = bpf_func_id::BPF_FUNC_xdp_get_buff_len as u32;
        assert!(frags.contains(&get_buff_len));
        assert!(!linear.contains(&get_buff_len));
        assert!(!linear.contains(&(bpf_func_id::BPF_FUNC_xdp_load_bytes as u32)));
        for v in [(5, 11), (5, 15)] {
            let lacks = lacking(
                &Features::as_of(v),
                &[PROG_INGRESS_LINEAR, PROG_EGRESS],
                &[],
            )
            .expect("lacking");
            assert_eq!(lacks, [], "on {v:?}");
        }
    }

    #[test]
    fn a_refusal_names_each_feature_and_its_release() {
        let lacks = lacking(
            &Features::as_of((5, 10)),
            &[PROG_INGRESS_LINEAR, PROG_EGRESS],
            &[],
        )
        .expect("lacking");
        let text: Vec<String> = lacks.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "the BPF helper bpf_ktime_get_coarse_ns in TC programs (Linux 5.11)",
                "the BPF helper bpf_ktime_get_coarse_ns in XDP programs (Linux 5.11)",
            ]
        );
        let old = lacking(
            &Features::as_of((5, 4)),
            &[PROG_INGRESS_LINEAR],
            &[Feature::XdpFrags],
        )
        .expect("lacking");
        for needle in [
            "bpf_link for XDP programs (Linux 5.9)",
            "ring buffer map type (Linux 5.8)",
            "multi-buffer XDP programs (xdp.frags) (Linux 5.18)",
        ] {
            assert!(
                old.iter().any(|l| l.to_string().contains(needle)),
                "{needle:?} missing from {old:?}"
            );
        }
    }

    #[test]
    fn the_hook_takes_only_netlink() {
        assert!(!parse_force(None).expect("unset"));
        assert!(!parse_force(Some("")).expect("empty"));
        assert!(parse_force(Some("netlink")).expect("netlink"));
        let e = parse_force(Some("tcx")).expect_err("tcx").to_string();
        assert!(
            e.contains("LOCKDOWN_FORCE_TC") && e.contains("netlink"),
            "{e}"
        );
    }
}
