//! SYN cookies, the loader's part: the operator's settings, whether cookies can answer on this
//! host, what goes into `LD_SYNCOOKIE`, the XDP cookie program in the ingress program's tail-call
//! table, and the TC hand-off (the C object) at TCX ingress.
//!
//! Cookies answer only where the kernel has the kfunc `bpf_sk_assign_tcp_reqsk` (the hand-off
//! needs it), the ingress program is `lockdown_ingress` (native XDP, multi-buffer: the linear
//! variant has no cookie stage), TCX is there (the hand-off is a pinned TCX link) and the
//! object has the cookie program. Elsewhere `auto` only detects floods (the ingress program's
//! tail call finds no program and the kernel's own handshake answers, its SYNs not charged to
//! sources' rates), `on` is refused before anything changes.
//!
//! The pins this adds to an interface's directory:
//! - `LD_SYNCOOKIE`, `LD_SYN_PORTS`: maps of the object like `LD_CONFIG` (in
//!   [`lockdown_common::contract::maps::ALL`]): reused across `up --replace`, created and staged
//!   when an earlier release's pins lack them.
//! - `LD_COOKIE_PROGS`: the object's own tail-call table, never reused: the kernel empties a
//!   program array when the last user reference (fd or pin) goes, so it must be pinned for the
//!   cookie program to stay in it after the loader exits; and each ingress program must tail-call
//!   the cookie program of its own object (the one built against the same maps). `up` pins it
//!   filled; `up --replace` fills the new object's table, pins it under a staging name, swaps the
//!   ingress program, then renames it over the old pin.
//! - `link_handoff` (the hand-off's TCX ingress link) and `LD_HANDOFF` (its counters, reused
//!   across `up --replace`). `up --replace` swaps a new hand-off program into the pinned link, or
//!   attaches it, or — when cookies can no longer answer — removes it after the ingress swap.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, ProgramArray},
    programs::{SchedClassifier, TcAttachType, Xdp, links::PinnedLink},
};
use lockdown_common::contract::{
    allow::AllowRule,
    flow::PROTO_TCP,
    syncookie::{
        COOKIE_PROG, COOKIE_PROGS, COOKIE_SLOT, CookieConfig, DEFAULT_CALM_SECS, DEFAULT_THRESHOLD,
        HANDOFF_COUNTERS, HANDOFF_PROG, HandoffCounter, MODE_AUTO, MODE_OFF, MODE_ON, PortFlood,
        SYN_PORTS, SYNCOOKIE, WINDOW_SHIFT, mss_tables, window_of,
    },
};
use serde::Serialize;

use super::variant::Variant;
pub use crate::datapath::pins::PIN_LINK_HANDOFF;
pub use crate::host::probe::{FORCE_NO_REQSK, SYNCOOKIE_KFUNC as KFUNC};
use crate::{
    attach::egress::{swap_into_pinned_tcx, tcx_link},
    datapath::pins::{PinDir, STAGING, open_pinned},
    host::probe::{Feature, Kernel},
};

/// `syn_cookies` / `--syn-cookies`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CookieMode {
    /// Never: the kernel's own handshake (and its own syncookies) always.
    Off,
    /// On a port while its SYN rate is above the threshold, and for the calm period after.
    #[default]
    Auto,
    /// On every allowed TCP port, always (refused where cookies cannot answer).
    On,
}

impl CookieMode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Auto => "auto",
            Self::On => "on",
        }
    }

    /// The value in [`CookieConfig::mode`].
    pub const fn value(self) -> u32 {
        match self {
            Self::Off => MODE_OFF,
            Self::Auto => MODE_AUTO,
            Self::On => MODE_ON,
        }
    }

    pub const fn from_value(v: u32) -> Option<Self> {
        match v {
            MODE_OFF => Some(Self::Off),
            MODE_AUTO => Some(Self::Auto),
            MODE_ON => Some(Self::On),
            _ => None,
        }
    }
}

/// The operator's SYN-cookie settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    pub mode: CookieMode,
    /// SYNs per second to one port above which `auto` engages (at least 1).
    pub threshold_per_sec: u32,
    /// Seconds below the threshold before `auto` disengages (at least 1).
    pub calm_secs: u32,
}

impl Default for CookieOptions {
    fn default() -> Self {
        Self {
            mode: CookieMode::Auto,
            threshold_per_sec: DEFAULT_THRESHOLD,
            calm_secs: DEFAULT_CALM_SECS,
        }
    }
}

impl CookieOptions {
    /// Refuses values out of range, naming the setting (`what` is the flag or key, for the
    /// message).
    pub fn check(&self, threshold_name: &str, calm_name: &str) -> Result<()> {
        if self.threshold_per_sec == 0 {
            bail!("{threshold_name} must be at least 1 (SYNs per second to one port)");
        }
        if self.calm_secs == 0 {
            bail!("{calm_name} must be at least 1 (seconds)");
        }
        Ok(())
    }

    /// The settings a pinned [`CookieConfig`] holds (`None`: never written, all zeros).
    pub fn from_config(c: &CookieConfig) -> Option<Self> {
        if c.keys == [[0; 2]; 2] {
            return None;
        }
        Some(Self {
            mode: CookieMode::from_value(c.mode)?,
            threshold_per_sec: per_sec(c.threshold),
            calm_secs: calm_secs(c.calm),
        })
    }
}

/// The detector window in ns: 2^[`WINDOW_SHIFT`] (about 1.074 s).
const WINDOW_NS: u64 = 1 << WINDOW_SHIFT;

/// A threshold in SYNs per second as SYNs per detector window (2^30 ns, 1.074 s), rounded to
/// the nearest, at least 1.
pub fn per_window(per_sec: u32) -> u32 {
    let w = (u64::from(per_sec) * WINDOW_NS + 500_000_000) / 1_000_000_000;
    u32::try_from(w).unwrap_or(u32::MAX).max(1)
}

/// The inverse of [`per_window`], for `status` (exact for every value [`per_window`] gives).
pub fn per_sec(per_window: u32) -> u32 {
    let s = (u64::from(per_window) * 1_000_000_000 + WINDOW_NS / 2) / WINDOW_NS;
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// A calm period in seconds as whole detector windows, rounded up (never shorter than asked).
pub fn calm_windows(secs: u32) -> u32 {
    let w = (u64::from(secs) * 1_000_000_000).div_ceil(WINDOW_NS);
    u32::try_from(w).unwrap_or(u32::MAX).max(1)
}

/// The inverse of [`calm_windows`], for `status`: seconds, rounded down.
pub fn calm_secs(windows: u32) -> u32 {
    u32::try_from(u64::from(windows) * WINDOW_NS / 1_000_000_000).unwrap_or(u32::MAX)
}

/// The window scale the kernel's `tcp_select_initial_window` offers for a receive space of
/// `rmem_max` bytes (`tcp_rmem[2]`): `ilog2(space) - 15`, from 0 to 14.
pub fn rcv_wscale(rmem_max: u64) -> u32 {
    match rmem_max {
        0 => 0,
        n => n.ilog2().saturating_sub(15).min(14),
    }
}

/// [`rcv_wscale`] of this network namespace's `net.ipv4.tcp_rmem` (its third field). Only
/// `tcp_rmem`: `net.core.rmem_max` is not visible outside the initial namespace on some kernels
/// (6.1), and the kernel takes the larger of the two, which is `tcp_rmem[2]` by default.
pub fn host_rcv_wscale() -> Result<u32> {
    let path = "/proc/sys/net/ipv4/tcp_rmem";
    let text = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    parse_tcp_rmem(&text).with_context(|| format!("{path}: {text:?}"))
}

fn parse_tcp_rmem(text: &str) -> Result<u32> {
    let max: u64 = text
        .split_whitespace()
        .nth(2)
        .context("expected three numbers")?
        .parse()
        .context("not a number")?;
    Ok(rcv_wscale(max))
}

/// One SipHash key from the kernel's random source.
fn random_key() -> Result<[u64; 2]> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("getrandom for the SYN-cookie key");
        }
        filled += n as usize;
    }
    let (a, b) = buf.split_at(8);
    let key = [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ];
    if key == [0, 0] {
        bail!("getrandom gave an all-zero key");
    }
    Ok(key)
}

/// The `LD_SYNCOOKIE` entry for `opts` on an interface of MTU `mtu`. Keys: from `previous` when
/// it has any (rotated when `rotate`: a new key in the slot of the next generation, the current
/// one kept and still accepted), else two new ones.
pub fn config_for(
    opts: &CookieOptions,
    mtu: u32,
    wscale: u32,
    previous: Option<&CookieConfig>,
    rotate: bool,
) -> Result<CookieConfig> {
    let (mss4, mss6) = mss_tables(mtu);
    let kept = previous.filter(|p| p.has_keys());
    let (keys, key_gen) = match kept {
        Some(p) => (p.keys, p.key_gen),
        None => ([random_key()?, random_key()?], 0),
    };
    let mut c = CookieConfig {
        keys,
        mode: opts.mode.value(),
        threshold: per_window(opts.threshold_per_sec),
        calm: calm_windows(opts.calm_secs),
        key_gen,
        mss4,
        mss6,
        rcv_wscale: wscale.min(14),
        _pad: 0,
    };
    if rotate && kept.is_some() {
        c.rotate(random_key()?);
    }
    Ok(c)
}

/// Whether cookies can answer SYNs on this host, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Availability {
    pub answering: bool,
    pub reason: Option<String>,
}

impl Availability {
    const YES: Self = Self {
        answering: true,
        reason: None,
    };
}

/// Whether the cookie program is in this binary's eBPF object (it is once the XDP cookie stage
/// is merged; until then cookies are never available).
pub fn object_has_cookie_prog() -> bool {
    crate::host::probe::needs()
        .programs
        .contains_key(COOKIE_PROG)
}

/// Whether cookies can answer with the `kernel` as probed and the ingress `variant` chosen.
pub fn availability(kernel: &Kernel, variant: Variant, has_cookie_prog: bool) -> Availability {
    let release = &kernel.release;
    let why = if !kernel.features.has(Feature::SyncookieKfunc) {
        let (_, since) = Feature::SyncookieKfunc.describe();
        let forced = if kernel.forced_no_reqsk {
            format!("; hidden here by {FORCE_NO_REQSK}=1")
        } else {
            String::new()
        };
        format!(
            "this kernel ({release}) has no {KFUNC} (Linux {}.{}+{forced})",
            since.0, since.1
        )
    } else if variant != Variant::Frags {
        format!(
            "the XDP program here is {} ({}), which has no cookie stage; cookies need native \
             XDP with multi-buffer support (lockdown_ingress)",
            variant.program(),
            variant.describe()
        )
    } else if !kernel.features.has(Feature::Tcx) {
        format!(
            "the hand-off needs TCX (Linux 6.6){}",
            if kernel.forced_netlink {
                ", hidden by LOCKDOWN_FORCE_TC=netlink"
            } else {
                ""
            }
        )
    } else if !has_cookie_prog {
        format!("this build's eBPF object has no cookie program ({COOKIE_PROG})")
    } else {
        return Availability::YES;
    };
    Availability {
        answering: false,
        reason: Some(why),
    }
}

/// Why `on` cannot be had: an error in the options (exit code 78), nothing changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "syn_cookies = \"on\" cannot be honoured: {0}. Nothing was changed; use `--syn-cookies auto` \
     (detects floods; the kernel's own syncookies answer them) or `off`"
)]
pub struct Unavailable(pub String);

/// The one line `up` prints when `auto` cannot answer here.
pub fn notice(reason: &str) -> String {
    format!(
        "syn cookies: off — {reason}; the kernel's own syncookies answer SYN floods, and \
         rate-limited ports stop charging SYNs to sources while a flood lasts"
    )
}

/// Checks `opts` against what the host can do, before anything is touched: `on` where cookies
/// cannot answer is refused ([`Unavailable`]).
pub fn check(opts: &CookieOptions, avail: &Availability) -> Result<()> {
    if opts.mode == CookieMode::On && !avail.answering {
        return Err(Unavailable(avail.reason.clone().unwrap_or_default()).into());
    }
    Ok(())
}

/// Writes `config` into the `LD_SYNCOOKIE` map at `path`.
pub fn write_config(path: &Path, config: &CookieConfig) -> Result<()> {
    let mut map: Array<MapData, CookieConfig> = open_pinned(path)?
        .try_into()
        .with_context(|| format!("{SYNCOOKIE} has the wrong type"))?;
    map.set(0, config, 0)
        .with_context(|| format!("writing {SYNCOOKIE}"))
}

/// Reads the `LD_SYNCOOKIE` entry at `path`.
pub fn read_config(path: &Path) -> Result<CookieConfig> {
    let map: Array<MapData, CookieConfig> = open_pinned(path)?
        .try_into()
        .with_context(|| format!("{SYNCOOKIE} has the wrong type"))?;
    map.get(&0, 0)
        .with_context(|| format!("reading {SYNCOOKIE}"))
}

/// Loads the cookie program of `ebpf` (when `answering`) and puts it in slot [`COOKIE_SLOT`] of
/// the object's tail-call table, then pins the table at `pin` (filled or empty: see the module
/// doc). Before the ingress program that reads the table is attached or swapped in.
pub fn fill_table(ebpf: &mut Ebpf, answering: bool, pin: &Path) -> Result<()> {
    if ebpf.map(COOKIE_PROGS).is_none() {
        // An object without cookies at all: nothing to fill.
        return Ok(());
    }
    if answering {
        let prog: &mut Xdp = ebpf
            .program_mut(COOKIE_PROG)
            .with_context(|| format!("program {COOKIE_PROG} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("{COOKIE_PROG} is not an XDP program"))?;
        prog.load()
            .with_context(|| format!("loading the XDP cookie program {COOKIE_PROG}"))?;
        let fd = prog
            .fd()
            .context("the cookie program has no fd")?
            .try_clone()
            .context("duplicating the cookie program's fd")?;
        // The map stays in the object: the ingress program, loaded later, refers to its fd.
        let mut table: ProgramArray<&mut MapData> = ebpf
            .map_mut(COOKIE_PROGS)
            .context("LD_COOKIE_PROGS missing")?
            .try_into()
            .context("LD_COOKIE_PROGS is not a program array")?;
        table
            .set(COOKIE_SLOT, &fd, 0)
            .context("putting the cookie program in LD_COOKIE_PROGS")?;
    }
    let _ = fs::remove_file(pin);
    ebpf.map(COOKIE_PROGS)
        .context("LD_COOKIE_PROGS missing")?
        .pin(pin)
        .with_context(|| format!("pinning {}", pin.display()))?;
    Ok(())
}

/// The staging pin of the tail-call table during `up --replace`.
pub fn staged_table(dir: &PinDir) -> std::path::PathBuf {
    dir.dir.join(format!("{STAGING}{COOKIE_PROGS}"))
}

/// Loads the hand-off object with its counters pinned in `dir` (reused when pinned).
fn load_handoff(dir: &PinDir) -> Result<Ebpf> {
    let path = dir.map(HANDOFF_COUNTERS);
    EbpfLoader::new()
        .map_pin_path(HANDOFF_COUNTERS, path.as_path())
        .load(crate::HANDOFF_OBJECT)
        .context("loading the SYN-cookie hand-off object")
}

fn handoff_prog(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(HANDOFF_PROG)
        .with_context(|| format!("program {HANDOFF_PROG} missing from the hand-off object"))?
        .try_into()?;
    prog.load()
        .with_context(|| format!("loading the TC hand-off program {HANDOFF_PROG}"))?;
    Ok(prog)
}

/// Attaches the hand-off at TCX ingress of `ifindex` and pins its link and counters in `dir`.
/// On failure, what was pinned is found by [`detach`].
pub fn attach(dir: &PinDir, ifindex: u32) -> Result<()> {
    let mut ebpf = load_handoff(dir)?;
    let prog = handoff_prog(&mut ebpf)?;
    let link = tcx_link(
        prog,
        ifindex,
        TcAttachType::Ingress,
        &format!("the SYN-cookie hand-off to {} (TCX ingress)", dir.iface),
    )?;
    link.pin(dir.dir.join(PIN_LINK_HANDOFF))
        .context("pinning the hand-off link")?;
    Ok(())
}

/// `up --replace`, before the ingress swap: swaps a new hand-off program into the pinned link, or
/// attaches one. (Removing it, when cookies can no longer answer, is [`detach`] after the swap.)
pub fn replace(dir: &PinDir, ifindex: u32) -> Result<()> {
    let pin = dir.dir.join(PIN_LINK_HANDOFF);
    if !pin.exists() {
        return attach(dir, ifindex);
    }
    let mut ebpf = load_handoff(dir)?;
    swap_into_pinned_tcx(handoff_prog(&mut ebpf)?, &pin, "the SYN-cookie hand-off")
}

/// Removes the hand-off: its link (unpinning detaches it) and its counters' pin. Missing pins are
/// not an error.
pub fn detach(dir: &PinDir) -> Result<()> {
    let pin = dir.dir.join(PIN_LINK_HANDOFF);
    if pin.exists() {
        let link = PinnedLink::from_pin(&pin)
            .map_err(anyhow::Error::from)
            .and_then(|l| Ok(l.unpin()?))
            .with_context(|| pin.display().to_string())?;
        drop(link);
    }
    match fs::remove_file(dir.map(HANDOFF_COUNTERS)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow!(e).context(format!("removing {}", dir.map(HANDOFF_COUNTERS).display())))
        }
        _ => Ok(()),
    }
}

/// Whether the hand-off is attached (its link pinned).
pub fn handoff_attached(dir: &PinDir) -> bool {
    dir.dir.join(PIN_LINK_HANDOFF).exists()
}

/// The hand-off's counters, summed over CPUs, by [`HandoffCounter::ALL`] order. `None` when it is
/// not pinned.
pub fn handoff_counters(dir: &PinDir) -> Result<Option<Vec<(HandoffCounter, u64)>>> {
    let path = dir.map(HANDOFF_COUNTERS);
    if !path.exists() {
        return Ok(None);
    }
    let map: PerCpuArray<MapData, u64> = open_pinned(&path)?
        .try_into()
        .with_context(|| format!("{HANDOFF_COUNTERS} has the wrong type"))?;
    HandoffCounter::ALL
        .iter()
        .map(|c| {
            let v = map
                .get(&(*c as u32), 0)
                .with_context(|| format!("reading {HANDOFF_COUNTERS}"))?;
            Ok((*c, v.iter().sum()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The TCP ports the allowlist `rules` opens: the ports whose SYNs the detector counts.
pub fn allowed_tcp_ports(rules: &BTreeSet<AllowRule>) -> BTreeSet<u16> {
    rules
        .iter()
        .filter(|r| r.proto == PROTO_TCP)
        .flat_map(|r| r.port_lo..=r.port_hi)
        .collect()
}

/// Of `ports`, those where cookies answer SYNs in detector window `window` (see
/// [`PortFlood::engaged`]), from the `LD_SYN_PORTS` map at `path`.
pub fn engaged_ports(
    path: &Path,
    config: &CookieConfig,
    ports: &BTreeSet<u16>,
    window: u32,
) -> Result<Vec<u16>> {
    let map: Array<MapData, PortFlood> = open_pinned(path)?
        .try_into()
        .with_context(|| format!("{SYN_PORTS} has the wrong type"))?;
    let mut out = Vec::new();
    for port in ports {
        let flood = map
            .get(&u32::from(*port), 0)
            .with_context(|| format!("reading {SYN_PORTS}"))?;
        if flood.engaged(config, window) {
            out.push(*port);
        }
    }
    Ok(out)
}

/// The SYN-cookie part of `status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CookieStatus {
    /// `off`, `auto` or `on` (`unknown` for a value this release does not know).
    pub mode: &'static str,
    /// Whether cookies answer SYNs here: the cookie program and the hand-off are installed.
    pub answering: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    pub threshold_per_sec: u32,
    pub calm_secs: u32,
    /// Allowed TCP ports where cookies answer now.
    pub engaged_ports: Vec<u16>,
    /// The hand-off's counters by name (zeros when it is not attached).
    pub handoff: BTreeMap<&'static str, u64>,
}

/// The SYN-cookie status of the interface pinned at `dir` with allowlist `rules`. Explaining
/// why cookies do not answer probes the kernel (only then).
pub fn status(
    dir: &PinDir,
    rules: &BTreeSet<AllowRule>,
    variant: Option<Variant>,
) -> Result<CookieStatus> {
    let config = read_config(&dir.map(SYNCOOKIE))?;
    let mode = CookieMode::from_value(config.mode);
    let answering = handoff_attached(dir);
    let reason = match mode {
        _ if answering => None,
        Some(CookieMode::Off) => Some("syn_cookies is off".to_owned()),
        _ => {
            // Probed once per process: the exporter asks at every scrape.
            static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
            let kernel = match KERNEL.get() {
                Some(k) => k,
                None => {
                    let probed = Kernel::probe()?;
                    KERNEL.get_or_init(|| probed)
                }
            };
            let why = match variant {
                Some(v) => availability(kernel, v, object_has_cookie_prog()).reason,
                None => Some("the attached XDP program is not one this release knows".to_owned()),
            };
            Some(why.unwrap_or_else(|| {
                format!(
                    "the cookie program and the hand-off are not installed; `lockdown up \
                     --replace --iface {}` installs them",
                    dir.iface
                )
            }))
        }
    };
    let window = window_of(crate::clock_ns());
    let engaged_ports = engaged_ports(
        &dir.map(SYN_PORTS),
        &config,
        &allowed_tcp_ports(rules),
        window,
    )?;
    let counters = handoff_counters(dir)?;
    let handoff = HandoffCounter::ALL
        .iter()
        .map(|c| {
            let v = counters
                .as_ref()
                .and_then(|all| all.iter().find(|(k, _)| k == c))
                .map_or(0, |(_, v)| *v);
            (c.name(), v)
        })
        .collect();
    Ok(CookieStatus {
        mode: mode.map_or("unknown", CookieMode::name),
        answering,
        reason,
        threshold_per_sec: per_sec(config.threshold),
        calm_secs: calm_secs(config.calm),
        engaged_ports,
        handoff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_convert_to_windows_and_back() {
        // 1000 SYN/s over a 1.073741824 s window.
        assert_eq!(per_window(1000), 1074);
        assert_eq!(per_sec(1074), 1000);
        assert_eq!(per_window(1), 1);
        assert_eq!(per_window(u32::MAX), u32::MAX);
        for s in [1, 2, 7, 999, 1000, 12_345, 1_000_000] {
            assert_eq!(per_sec(per_window(s)), s, "{s} SYN/s");
        }
        // The calm period is never shorter than asked.
        assert_eq!(calm_windows(30), 28);
        assert!(u64::from(calm_windows(30)) * WINDOW_NS >= 30_000_000_000);
        assert_eq!(calm_windows(1), 1);
        assert_eq!(calm_secs(28), 30);
    }

    #[test]
    fn wscale_follows_tcp_select_initial_window() {
        // Linux's default tcp_rmem[2] (6 MiB): 7.
        assert_eq!(parse_tcp_rmem("4096\t131072\t6291456\n").unwrap(), 7);
        assert_eq!(rcv_wscale(65_535), 0);
        assert_eq!(rcv_wscale(65_536), 1);
        assert_eq!(rcv_wscale(4 << 20), 7);
        assert_eq!(rcv_wscale(32 << 20), 10);
        assert_eq!(rcv_wscale(u64::MAX), 14);
        assert_eq!(rcv_wscale(0), 0);
        assert!(parse_tcp_rmem("4096 131072").is_err());
        assert!(parse_tcp_rmem("a b c").is_err());
    }

    #[test]
    fn the_config_rotates_keys_keeping_the_previous_one() {
        let opts = CookieOptions::default();
        let first = config_for(&opts, 1500, 7, None, false).unwrap();
        assert_eq!(first.key_gen, 0);
        assert_ne!(first.keys[0], [0, 0]);
        assert_ne!(first.keys[1], [0, 0]);
        assert_eq!(first.mode, MODE_AUTO);
        assert_eq!(first.threshold, 1074);
        assert_eq!(first.calm, 28);
        assert_eq!(first.mss4, [536, 1300, 1440, 1460]);
        // Re-applied: the keys stay.
        let same = config_for(&opts, 9000, 7, Some(&first), false).unwrap();
        assert_eq!((same.keys, same.key_gen), (first.keys, 0));
        assert_eq!(same.mss4[3], 8960);
        // Rotated: the next generation's slot gets a new key, the current one stays.
        let next = config_for(&opts, 1500, 7, Some(&first), true).unwrap();
        assert_eq!(next.key_gen, 1);
        assert_eq!(next.keys[0], first.keys[0]);
        assert_ne!(next.keys[1], first.keys[1]);
        let after = config_for(&opts, 1500, 7, Some(&next), true).unwrap();
        assert_eq!(after.key_gen, 2);
        assert_eq!(after.keys[1], next.keys[1]);
        assert_ne!(after.keys[0], next.keys[0]);
        // Never written (zeros): fresh keys, no rotation.
        let fresh = config_for(&opts, 1500, 7, Some(&CookieConfig::OFF), true).unwrap();
        assert_eq!(fresh.key_gen, 0);
        assert_ne!(fresh.keys[0], [0, 0]);
        assert_eq!(CookieOptions::from_config(&fresh), Some(opts));
        assert_eq!(CookieOptions::from_config(&CookieConfig::OFF), None);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = CookieOptions {
            threshold_per_sec: 0,
            ..CookieOptions::default()
        };
        let e = bad.check("--syn-cookie-threshold", "--syn-cookie-calm");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("--syn-cookie-threshold")
        );
        let bad = CookieOptions {
            calm_secs: 0,
            ..CookieOptions::default()
        };
        let e = bad.check("--syn-cookie-threshold", "--syn-cookie-calm");
        assert!(e.unwrap_err().to_string().contains("--syn-cookie-calm"));
    }
}
