//! Where lockdown pins its maps and links (`/sys/fs/bpf/lockdown/<iface>/`), the lock that
//! serialises changes to them, and opening a pinned map.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::maps::{Map, MapData, MapError};
use lockdown_common::contract::maps::{ALL, BUILD, PIN_LINK_EGRESS, PIN_LINK_INGRESS, PIN_ROOT};

/// The pin directory of one locked-down interface.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub iface: String,
    pub dir: PathBuf,
}

impl PinDir {
    pub fn new(root: &Path, iface: &str) -> Self {
        Self {
            iface: iface.to_owned(),
            dir: root.join(iface),
        }
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn link_ingress(&self) -> PathBuf {
        self.dir.join(PIN_LINK_INGRESS)
    }

    pub fn link_egress(&self) -> PathBuf {
        self.dir.join(PIN_LINK_EGRESS)
    }

    /// The egress program, pinned while it is attached as a netlink TC filter (no TCX).
    pub fn prog_egress_tc(&self) -> PathBuf {
        self.dir.join(PIN_PROG_EGRESS_TC)
    }

    /// Marker (a symlink) that lockdown created the interface's clsact qdisc.
    pub fn clsact_created(&self) -> PathBuf {
        self.dir.join(PIN_CLSACT_CREATED)
    }

    /// Refuses pins of an earlier release whose map layout this one reads only after
    /// `up --replace` has upgraded them (the maps of [`ALL`] but the build record must be
    /// pinned), naming the way out.
    pub fn require_current_layout(&self) -> Result<()> {
        let missing: Vec<&str> = ALL
            .into_iter()
            .filter(|n| *n != BUILD && !self.map(n).exists())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} was locked down by an earlier release (its pins lack {}): its filter keeps \
                 enforcing; `lockdown up --replace --iface {}` loads this binary's programs and \
                 upgrades the pins",
                self.iface,
                missing.join(", "),
                self.iface
            );
        }
        Ok(())
    }

    /// Whether the interface is locked down (its ingress link is pinned).
    pub fn is_locked(&self) -> bool {
        self.link_ingress().exists()
    }

    /// Removes every pin and the directory. Missing entries are not an error.
    pub fn remove_all(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        for entry in
            fs::read_dir(&self.dir).with_context(|| format!("reading {}", self.dir.display()))?
        {
            let path = entry?.path();
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))
    }
}

/// Opens the map pinned at `path`.
pub(crate) fn open_pinned(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
}

/// Whether a map error means "no such key" (the entry vanished or never existed).
pub fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Prefix of the staging pins an upgrade makes (maps, the netlink filter's program), renamed into
/// place at the end; leftovers of an interrupted one are removed. (No dot: bpffs refuses names
/// with one, EPERM.)
pub const STAGING: &str = "staging-";

/// Pin name of the egress program attached as a netlink TC filter (see `attach::egress`).
pub const PIN_PROG_EGRESS_TC: &str = "prog_egress_tc";
/// Pin name of the marker that lockdown created the clsact qdisc (see `attach::egress`).
pub const PIN_CLSACT_CREATED: &str = "clsact_created";

/// Pin name of the SYN-cookie hand-off's TCX ingress link (see `attach::cookies`).
pub const PIN_LINK_HANDOFF: &str = "link_handoff";

/// Whether a pin in an interface's directory records an attachment (a link, the netlink filter's
/// program, the clsact marker, the SYN-cookie hand-off's link and counters, the object's own
/// tail-call table) rather than a map of [`ALL`] that an upgrade reuses or carries over.
pub fn is_attachment_pin(name: &str) -> bool {
    [
        PIN_LINK_INGRESS,
        PIN_LINK_EGRESS,
        PIN_PROG_EGRESS_TC,
        PIN_CLSACT_CREATED,
        PIN_LINK_HANDOFF,
        lockdown_common::contract::syncookie::HANDOFF_COUNTERS,
        lockdown_common::contract::syncookie::COOKIE_PROGS,
    ]
    .contains(&name)
}

/// The pin root: `/sys/fs/bpf/lockdown`, or `$LOCKDOWN_PIN_ROOT` (which must be on a bpffs).
pub fn root() -> PathBuf {
    std::env::var_os("LOCKDOWN_PIN_ROOT").map_or_else(|| PathBuf::from(PIN_ROOT), PathBuf::from)
}

/// Makes sure the pin root exists on a mounted bpffs.
pub fn ensure_root(root: &Path) -> Result<()> {
    let bpffs = root.parent().unwrap_or(root);
    if !is_bpffs(bpffs) && !is_bpffs(root) {
        bail!(
            "{} is not a mounted bpffs; mount it with `mount -t bpf bpf {}`",
            bpffs.display(),
            bpffs.display()
        );
    }
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))
}

fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `statfs` is plain old data, valid when zeroed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-buffer.
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == BPF_FS_MAGIC
}

/// An exclusive lock on the pin root, held while a verb changes pins or maps, so two CLI
/// invocations never interleave. Released on drop.
#[derive(Debug)]
pub struct Lock(#[expect(dead_code, reason = "held for its flock")] Option<fs::File>);

/// Takes the lock (waiting for any other holder). With no pin root yet, there is nothing to guard.
pub fn lock(root: &Path) -> Result<Lock> {
    use std::os::fd::AsRawFd as _;
    let Ok(file) = fs::File::open(root) else {
        return Ok(Lock(None));
    };
    // SAFETY: a valid open fd.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", root.display()));
    }
    Ok(Lock(Some(file)))
}

/// Every locked-down interface, by name.
pub fn locked(root: &Path) -> Vec<PinDir> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PinDir> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .map(|name| PinDir::new(root, &name))
        .filter(PinDir::is_locked)
        .collect();
    dirs.sort_by(|a, b| a.iface.cmp(&b.iface));
    dirs
}

/// The interfaces a reporting verb shows: the one given, or every one locked down (at least one).
pub fn select_all(root: &Path, iface: Option<&str>) -> Result<Vec<PinDir>> {
    match iface {
        Some(_) => Ok(vec![select(root, iface)?]),
        None => {
            let all = locked(root);
            if all.is_empty() {
                bail!("nothing is locked down: run `lockdown up --iface IF` first");
            }
            Ok(all)
        }
    }
}

/// The interface a verb acts on: the one given, or the only one locked down.
pub fn select(root: &Path, iface: Option<&str>) -> Result<PinDir> {
    if let Some(iface) = iface {
        let dir = PinDir::new(root, iface);
        if !dir.is_locked() {
            bail!(
                "{iface} is not locked down (no pins under {})",
                dir.dir.display()
            );
        }
        return Ok(dir);
    }
    let mut all = locked(root);
    match all.len() {
        0 => bail!("nothing is locked down: run `lockdown up --iface IF` first"),
        1 => Ok(all.remove(0)),
        _ => bail!(
            "several interfaces are locked down ({}): pass --iface",
            all.iter()
                .map(|d| d.iface.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
