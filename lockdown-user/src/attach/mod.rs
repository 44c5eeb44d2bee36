//! Attaching, replacing and detaching: load the object with its maps pinned, write the policy,
//! attach the TC egress program and then the XDP program, and pin both links. A failure at any step
//! removes everything this attempt created, so `up` either locks the interface down or changes
//! nothing. `up --replace` swaps this binary's programs into the pinned links, and the confirm
//! rollback returns to the state saved before a change. Which XDP program and which egress
//! attachment kind are used is decided first ([`plan`]).

pub mod change;
pub mod confirm;
pub mod cookies;
pub mod egress;
pub mod guard;
pub mod plan;
pub mod refusal;
pub mod seed;
pub mod variant;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{
        ProgramError, SchedClassifier, Xdp,
        links::{FdLink, PinnedLink},
    },
};
use lockdown_common::{
    contract::{
        allow::AllowRule,
        config::{Config, STATE_FLAGS},
        maps::{ALL, CONFIG, PROG_EGRESS},
        rate::RateSpec,
        syncookie::{COOKIE_PROGS, CookieConfig, SYNCOOKIE},
    },
    rules::{allow::PortSpec, deny::DenyNet},
};

use crate::{
    attach::change::{Rates, RuleChange},
    datapath::{
        blocklist, build_id,
        handles::{Handles, compile_policy},
        load::loader,
        migrate,
        pins::{PinDir, ensure_root, lock, open_pinned},
    },
    host::link::{self, LinkInfo, XdpMode},
};

/// Everything `up` needs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub iface: String,
    pub rules: BTreeSet<AllowRule>,
    /// Per-source rates of new connections to some of the allowed ports (set with the rules).
    pub rates: BTreeMap<PortSpec, RateSpec>,
    /// Blocklist entries to add (until removed) when attaching or replacing.
    pub deny: Vec<DenyNet>,
    pub mode: XdpMode,
    pub max_flows: u32,
    pub config: Config,
    /// Whether the operator set the allowlist, the config and the table size, or they are
    /// defaults. `--replace` keeps what is pinned unless it was set.
    pub given: Given,
    /// Apply even if the lockout guard objects.
    pub force: bool,
    /// Enable the programs' aya-log debug messages (read them with [`aya_log::EbpfLogger`]).
    pub debug_log: bool,
    /// SYN cookies (see [`cookies`]).
    pub cookies: cookies::CookieOptions,
}

/// What `up` and `up --replace` leave: the loaded object (its programs stay attached through
/// the pinned links when it is dropped, so a foreground `run` can read its debug log), and the
/// one line to print when SYN cookies were asked for (`auto`) but cannot answer here.
pub struct Attached {
    pub ebpf: Ebpf,
    pub cookie_notice: Option<String>,
}

/// Which parts of [`UpOptions`] the operator set explicitly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Given {
    pub rules: bool,
    pub config: bool,
    pub max_flows: bool,
    /// The SYN-cookie settings (a replace keeps the pinned ones unless given).
    pub cookies: bool,
}

impl UpOptions {
    /// The change of rules these options make, checked: the policy compiles and the lockout guard
    /// (see [`guard`]) lets it and the blocklist entries through, unless forced.
    fn rule_change(&self) -> Result<RuleChange<'_>> {
        compile_policy(&self.rules, &self.rates)?;
        RuleChange::guarded(&self.rules, Rates::Set(&self.rates), &self.deny, self.force)
    }
}

/// Checks everything that can be checked before touching the kernel; returns what the interface
/// is and the checked change of rules.
pub fn preflight<'a>(dir: &PinDir, opts: &'a UpOptions) -> Result<(LinkInfo, RuleChange<'a>)> {
    let index = link::ifindex(&opts.iface)?;
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
    let change = opts.rule_change()?;
    // What the interface is, so a refusal can be explained; another XDP program is refused here.
    let info = link::query(&opts.iface)?;
    if let Some(why) = refusal::occupied(&info) {
        bail!(why);
    }
    Ok((info, change))
}

/// What `up` or `up --replace` does about SYN cookies, decided before anything is touched.
struct CookiePlan {
    config: CookieConfig,
    /// Install the cookie program and the hand-off (cookies can answer and are not off).
    install: bool,
    notice: Option<String>,
}

impl CookiePlan {
    /// Refuses `on` where cookies cannot answer (nothing touched yet); `previous` is the pinned
    /// entry of a replace (its keys are rotated).
    fn new(
        opts: &cookies::CookieOptions,
        plan: &plan::Plan,
        mtu: u32,
        previous: Option<&CookieConfig>,
    ) -> Result<Self> {
        let avail = cookies::availability(
            &plan.kernel,
            plan.variant,
            cookies::object_has_cookie_prog(),
        );
        cookies::check(opts, &avail)?;
        let wscale = cookies::host_rcv_wscale()?;
        let config = cookies::config_for(opts, mtu, wscale, previous, previous.is_some())?;
        let notice = match (&avail.reason, opts.mode) {
            (Some(reason), cookies::CookieMode::Auto) => Some(cookies::notice(reason)),
            _ => None,
        };
        Ok(Self {
            config,
            install: avail.answering && opts.mode != cookies::CookieMode::Off,
            notice,
        })
    }
}

/// Locks an interface down: attaches both programs (and, where SYN cookies answer, the cookie
/// program and the TC hand-off) and pins maps and links under `dir`.
pub fn up(dir: &PinDir, opts: &UpOptions) -> Result<Attached> {
    let root = dir.dir.parent().context("pin directory has no parent")?;
    preflight(dir, opts)?;
    ensure_root(root)?;
    let _lock = lock(root)?;
    // Checked again under the lock: another `up` may have won the race.
    let (info, change) = preflight(dir, opts)?;
    let plan = plan::Plan::new(opts.mode, &info)?;
    opts.cookies
        .check("--syn-cookie-threshold", "--syn-cookie-calm")?;
    let cookie_plan = CookiePlan::new(&opts.cookies, &plan, info.mtu, None)?;
    // Leftovers of an attempt that died before pinning its links hold no filter; clear them.
    dir.remove_all()?;
    fs::create_dir_all(&dir.dir).with_context(|| format!("creating {}", dir.dir.display()))?;
    match attach(dir, opts, &info, &change, &plan, &cookie_plan) {
        Ok(ebpf) => {
            confirm::clear_pending(&opts.iface)?;
            Ok(Attached {
                ebpf,
                cookie_notice: cookie_plan.notice,
            })
        }
        Err(e) => {
            // Dropping the unpinned links on the error path already detached them; remove the
            // pins.
            let _ = detach_locked(dir);
            Err(e)
        }
    }
}

fn attach(
    dir: &PinDir,
    opts: &UpOptions,
    info: &LinkInfo,
    change: &RuleChange,
    plan: &plan::Plan,
    cookie_plan: &CookiePlan,
) -> Result<Ebpf> {
    let index = info.index;
    let paths: Vec<_> = ALL.iter().map(|name| (*name, dir.map(name))).collect();
    let mut ebpf = loader(&paths, opts.max_flows, opts.debug_log)
        .load(crate::EBPF_OBJECT)
        .context("loading the eBPF object")?;

    // The policy is in place before any packet sees the programs.
    let mut handles = Handles::open(dir)?;
    let mut config = opts.config;
    config.ifindex = index;
    config.attach_mode = opts.mode.config_value();
    handles.write_config(&config)?;
    change.apply(&mut handles)?;
    handles.ensure_sketch_seed()?;
    blocklist::add_all(dir, &opts.deny)?;
    cookies::write_config(&dir.map(SYNCOOKIE), &cookie_plan.config)?;

    // Egress first, so flows are learned before ingress starts dropping.
    let tc: &mut SchedClassifier = ebpf
        .program_mut(PROG_EGRESS)
        .context("egress program missing")?
        .try_into()?;
    tc.load().context("loading the TC egress program")?;
    egress::attach(dir, tc, index, plan.egress)?;

    // The hand-off and the cookie program before the ingress program can tail-call into it.
    if cookie_plan.install {
        cookies::attach(dir, index)?;
    }
    cookies::fill_table(&mut ebpf, cookie_plan.install, &dir.map(COOKIE_PROGS))?;

    let xdp: &mut Xdp = ebpf
        .program_mut(plan.variant.program())
        .context("ingress program missing")?
        .try_into()?;
    xdp.load().context("loading the XDP program")?;
    let flags = opts
        .mode
        .attach_flags()
        .with_context(|| format!("lockdown does not attach in XDP mode {}", opts.mode.name()))?;
    let id = xdp
        .attach(index, flags)
        .map_err(|e| xdp_attach_error(e, opts, info))?;
    let link: FdLink = xdp
        .take_link(id)?
        .try_into()
        .context("XDP link is not a bpf_link")?;
    link.pin(dir.link_ingress())
        .context("pinning the ingress link")?;
    build_id::record(&mut ebpf)?;
    Ok(ebpf)
}

/// Atomic upgrade: swaps the programs of this binary into the pinned links (`bpf_link_update`),
/// keeping every map: flows, counters, and — unless given — the allowlist and config. There is no
/// moment without a filter: the old program runs until the kernel swaps in the new one.
pub fn replace(dir: &PinDir, opts: &UpOptions) -> Result<Attached> {
    let root = dir.dir.parent().context("pin directory has no parent")?;
    let _lock = lock(root)?;
    if !dir.is_locked() {
        bail!(
            "{} is not locked down, so there is nothing to replace; run `lockdown up --iface {}`",
            opts.iface,
            opts.iface
        );
    }
    let pinned_max = migrate::pinned_max_flows(dir)?;
    if opts.given.max_flows && opts.max_flows != pinned_max {
        bail!(
            "--max-flows {} differs from the pinned flow table's {pinned_max}; a replace keeps the table (run `lockdown down` and `up` to resize)",
            opts.max_flows
        );
    }
    let change = if opts.given.rules {
        Some(opts.rule_change()?)
    } else {
        None
    };
    let (choice, info) = replace_plan(dir, opts)?;
    // SYN cookies: the pinned settings unless given; `on` refused here where cookies cannot
    // answer. Absent in an earlier release's pins: the options' (defaults unless given).
    let pinned_cookies = pinned_cookie_config(dir);
    let cookie_opts = match pinned_cookies
        .as_ref()
        .and_then(cookies::CookieOptions::from_config)
    {
        Some(pinned) if !opts.given.cookies => pinned,
        _ => opts.cookies,
    };
    cookie_opts.check("--syn-cookie-threshold", "--syn-cookie-calm")?;
    let cookie_plan = CookiePlan::new(&cookie_opts, &choice, info.mtu, pinned_cookies.as_ref())?;
    let handoff_before = cookies::handoff_attached(dir);
    // Pins of an earlier release with another layout are carried over (see `migrate`), or
    // refused here, before anything changes.
    let (mut ebpf, plan) = migrate::load(dir, pinned_max, opts.debug_log)?;
    if plan.is_migration() {
        log::info!(
            "upgrading the pinned maps of {}: new {:?}, re-laid-out {:?}, carried over and unpinned {:?}",
            opts.iface,
            plan.fresh,
            plan.relayout,
            plan.legacy
        );
    }
    migrate::stage(&ebpf, dir, &plan)?;
    let mut swapped = false;
    let result = replace_staged(
        dir,
        opts,
        change.as_ref(),
        &plan,
        (&choice, &cookie_plan),
        &mut ebpf,
        &mut swapped,
    );
    if result.is_err() && !swapped {
        // Back to what the old programs ran with: the cookie settings, no new hand-off, no
        // staged table.
        if let Some(previous) = &pinned_cookies
            && let Err(e) = cookies::write_config(&dir.map(SYNCOOKIE), previous)
        {
            log::warn!("{}: restoring {SYNCOOKIE}: {e:#}", opts.iface);
        }
        if !handoff_before && let Err(e) = cookies::detach(dir) {
            log::warn!("{}: removing the new hand-off: {e:#}", opts.iface);
        }
        let _ = fs::remove_file(cookies::staged_table(dir));
    }
    match result {
        Ok(()) => {
            migrate::commit(dir, &plan)?;
            finish_cookies(dir, &cookie_plan)?;
        }
        // Once a program runs on the new maps, their pins must be in place whatever failed.
        Err(e) if swapped => {
            let done = migrate::commit(dir, &plan).and_then(|()| finish_cookies(dir, &cookie_plan));
            return Err(match done {
                Ok(()) => e,
                Err(c) => e.context(format!(
                    "putting the new maps' pins in place also failed: {c:#}"
                )),
            });
        }
        Err(e) => {
            migrate::abandon(dir, &plan);
            return Err(e);
        }
    }
    blocklist::add_all(dir, &opts.deny)?;
    // The programs are this binary's now, whatever the record said before.
    if let Err(e) = build_id::record(&mut ebpf) {
        log::warn!("{}: recording the programs' build: {e:#}", opts.iface);
    }
    confirm::clear_pending(&opts.iface)?;
    Ok(Attached {
        ebpf,
        cookie_notice: cookie_plan.notice,
    })
}

/// After the ingress swap of a replace: the new object's tail-call table takes its pin (the old
/// table, which only the old ingress program read, goes with its pin), and the hand-off goes when
/// cookies no longer answer.
fn finish_cookies(dir: &PinDir, cookie_plan: &CookiePlan) -> Result<()> {
    let staged = cookies::staged_table(dir);
    if staged.exists() {
        fs::rename(&staged, dir.map(COOKIE_PROGS))
            .with_context(|| format!("pinning the new {COOKIE_PROGS}"))?;
    }
    if !cookie_plan.install {
        cookies::detach(dir).context("removing the SYN-cookie hand-off")?;
    }
    Ok(())
}

/// The pinned `LD_SYNCOOKIE` entry, if there is one (an earlier release has none).
fn pinned_cookie_config(dir: &PinDir) -> Option<CookieConfig> {
    let path = dir.map(SYNCOOKIE);
    if !path.exists() {
        return None;
    }
    match cookies::read_config(&path) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("{}: {e:#}; SYN-cookie keys start afresh", dir.iface);
            None
        }
    }
}

/// [`replace`] once the object is loaded and its new maps staged: policy (`change`, when the
/// rules were given), seeding and the carried over data, then the swap. `swapped` says whether a
/// program already runs on the new maps. `(choice, cookie_plan)`: what is attached, and how.
fn replace_staged(
    dir: &PinDir,
    opts: &UpOptions,
    change: Option<&RuleChange>,
    plan: &migrate::Plan,
    (choice, cookie_plan): (&plan::Plan, &CookiePlan),
    ebpf: &mut Ebpf,
    swapped: &mut bool,
) -> Result<()> {
    let mut handles = Handles::open_paths(|name| plan.path(dir, name))?;
    let ifindex = handles.read_config()?.ifindex;
    if opts.given.config {
        let old = handles.read_config()?;
        handles.write_config(&Config {
            ifindex: old.ifindex,
            attach_mode: old.attach_mode,
            flags: opts.config.flags & !STATE_FLAGS | old.flags & STATE_FLAGS,
            ..opts.config
        })?;
    }
    let pinned;
    let rules = match change {
        Some(change) => change.rules(),
        None => {
            pinned = handles.rules()?;
            &pinned
        }
    };
    let carried = migrate::carry_over(dir, plan, &mut handles, rules)?;
    // Connections the old rules let in must survive the new ones: seed first.
    match change {
        Some(change) => change.apply(&mut handles)?,
        None => seed::seed(&mut handles, rules)?,
    }
    handles.ensure_sketch_seed()?;
    cookies::write_config(&plan.path(dir, SYNCOOKIE), &cookie_plan.config)?;
    // The hand-off and the new object's cookie program before its ingress program runs.
    if cookie_plan.install {
        cookies::replace(dir, ifindex)?;
    }
    cookies::fill_table(ebpf, cookie_plan.install, &cookies::staged_table(dir))?;

    // Ingress first: during an upgrade to new maps, the new ingress program must see whatever the
    // new egress program learns; what the old egress program learns meanwhile is merged below.
    let xdp: &mut Xdp = ebpf
        .program_mut(choice.variant.program())
        .context("ingress program missing")?
        .try_into()?;
    xdp.load().context("loading the ingress program")?;
    let link =
        FdLink::from(PinnedLink::from_pin(dir.link_ingress()).context("opening the ingress link")?);
    let id = xdp
        .attach_to_link(
            link.try_into()
                .context("the ingress link has the wrong type")?,
        )
        .context("swapping the ingress program")?;
    *swapped = true;
    // The pin keeps the link; this process's handle can go.
    drop(xdp.take_link(id)?);
    let tc: &mut SchedClassifier = ebpf
        .program_mut(PROG_EGRESS)
        .context("egress program missing")?
        .try_into()?;
    tc.load().context("loading the egress program")?;
    egress::replace(dir, tc, ifindex, choice.egress, swapped)?;
    migrate::carry_over_again(dir, plan, &mut handles, rules, &carried)
}

/// [`plan::Plan`] for a replace: the mode the pinned config records (a replace keeps it), on the
/// interface as it is now (also returned).
fn replace_plan(dir: &PinDir, opts: &UpOptions) -> Result<(plan::Plan, LinkInfo)> {
    let mode = pinned_config(dir)
        .ok()
        .and_then(|c| XdpMode::from_config(c.attach_mode))
        .unwrap_or(opts.mode);
    let info = link::query(&opts.iface)?;
    Ok((plan::Plan::new(mode, &info)?, info))
}

/// The pinned config of an attachment.
fn pinned_config(dir: &PinDir) -> Result<Config> {
    let map: aya::maps::Array<aya::maps::MapData, Config> =
        open_pinned(&dir.map(CONFIG))?.try_into()?;
    Ok(map.get(&0, 0)?)
}

/// The kernel's refusal, explained from what the interface is (see [`refusal`]).
fn xdp_attach_error(e: ProgramError, opts: &UpOptions, link: &LinkInfo) -> anyhow::Error {
    match &e {
        ProgramError::SyscallError(s) => match s.io_error.raw_os_error() {
            Some(errno) => anyhow!(e).context(refusal::explain(errno, opts.mode, link)),
            None => anyhow!(e).context(format!("attaching the XDP program to {}", opts.iface)),
        },
        _ => anyhow!(e).context(format!("attaching the XDP program to {}", opts.iface)),
    }
}

/// Detaches both programs (the egress one of either kind, see [`egress`]) and removes every pin.
/// Each step runs even if an earlier one failed.
pub fn detach(dir: &PinDir) -> Result<()> {
    let _lock = match dir.dir.parent() {
        Some(root) => Some(lock(root)?),
        None => None,
    };
    detach_locked(dir)?;
    confirm::clear_pending(&dir.iface)
}

/// [`detach`], for a caller that holds the pin-root lock.
fn detach_locked(dir: &PinDir) -> Result<()> {
    let mut errors = Vec::new();
    let link = dir.link_ingress();
    if link.exists() {
        // Unpinning drops the last reference: the kernel detaches the program.
        match PinnedLink::from_pin(&link)
            .map_err(anyhow::Error::from)
            .and_then(|l| Ok(l.unpin()?))
        {
            Ok(fd_link) => drop(fd_link),
            Err(e) => errors.push(format!("{}: {e:#}", link.display())),
        }
    }
    if let Err(e) = egress::detach(dir) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = cookies::detach(dir) {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = dir.remove_all() {
        errors.push(format!("{e:#}"));
    }
    match errors.is_empty() {
        true => Ok(()),
        false => bail!("detaching {}: {}", dir.iface, errors.join("; ")),
    }
}

/// The confirm watchdog's work once the window has passed: restore the previous state if the
/// change with `token` is still pending (see [`confirm`]). Returns whether it rolled back.
pub fn roll_back_if_pending(path: &Path, dir: &PinDir, token: u64) -> Result<bool> {
    let Some(pending) = confirm::read_pending(path)? else {
        return Ok(false);
    };
    if pending.token != token {
        return Ok(false);
    }
    match pending.previous {
        None => detach(dir)?,
        Some(prev) => {
            let previous = prev.parse()?;
            let root = dir.dir.parent().context("pin directory has no parent")?;
            let _lock = lock(root)?;
            let mut h = Handles::open(dir)?;
            RuleChange::restoring(&previous.rules, Rates::Set(&previous.rates)).apply(&mut h)?;
            // The flags that describe the maps (blocklist, log reader) stay as they are now.
            let now = h.read_config()?;
            h.write_config(&Config {
                flags: previous.config.flags & !STATE_FLAGS | now.flags & STATE_FLAGS,
                ..previous.config
            })?;
            // The SYN-cookie settings (mode, threshold, calm); the keys stay. The programs stay
            // as the change left them: a mode that needs the hand-off where the change removed it
            // falls back to the kernel's handshake until `up --replace` installs it again.
            if let Some([mode, threshold, calm]) = prev.cookies {
                let path = dir.map(SYNCOOKIE);
                let now = cookies::read_config(&path)?;
                cookies::write_config(
                    &path,
                    &CookieConfig {
                        mode,
                        threshold,
                        calm,
                        ..now
                    },
                )?;
            }
        }
    }
    fs::remove_file(path).ok();
    Ok(true)
}
