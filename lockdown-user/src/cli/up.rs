//! `lockdown up`, plain, `--replace` or `--confirm`, and the options `up` and `run` share.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lockdown_common::contract::{allow::AllowRule, config::Config, maps::DEFAULT_MAX_FLOWS};
use lockdown_user::{
    attach::{
        self, Attached, Given, UpOptions, confirm,
        cookies::{CookieMode, CookieOptions},
    },
    config::{self, file::Overrides},
    datapath::pins::{self, PinDir},
    host::link::XdpMode,
};

/// The options `up` and `run` share.
#[derive(Debug, Args)]
pub(super) struct UpArgs {
    /// The external interface to lock down (never `lo`). Optional with --config when the file names
    /// exactly one interface.
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Read the policy from a TOML file (see packaging/lockdown.toml); flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An allowed inbound port: tcp/22, udp/51820 or tcp/8000-8100. Repeatable. Default: tcp/22.
    #[arg(long = "allow", value_name = "SPEC")]
    pub allow: Vec<String>,
    /// XDP mode (default native). `native` runs in the driver; `skb` (generic XDP) works on any
    /// interface.
    #[arg(long, value_enum)]
    pub mode: Option<XdpMode>,
    /// Capacity of each family's live flow table (entries, default 65536): flows the origin opened
    /// and connections whose rule was removed; accepted connections on allowed ports take none.
    /// Each family also gets a closing table of a quarter of it (at least 256). The kernel
    /// preallocates them: about 104 bytes per IPv4 and 128 per IPv6 entry (19.6 MiB in all at the
    /// default).
    #[arg(long, value_name = "N")]
    pub max_flows: Option<u32>,
    /// Count what would be dropped, but pass everything.
    #[arg(long)]
    pub monitor: bool,
    /// Do not pass DHCPv4/DHCPv6 replies and IPv6 router advertisements.
    #[arg(long)]
    pub no_dhcp: bool,
    /// Override an idle timeout, in seconds: NAME=SECS. Repeatable. Names: tcp_syn_sent,
    /// tcp_established, tcp_closing, tcp_closed, udp_unreplied, udp_replied, icmp, fragment.
    #[arg(long = "timeout", value_name = "NAME=SECS")]
    pub timeouts: Vec<String>,
    /// Apply even if the policy would refuse new connections from the SSH session this runs in.
    #[arg(long)]
    pub force: bool,
    /// SYN cookies answered by XDP on allowed TCP ports (default auto): `auto` while a port
    /// receives more SYNs than --syn-cookie-threshold, `on` always, `off` never. Where the kernel
    /// cannot hand a cookie ACK over (no bpf_sk_assign_tcp_reqsk, or generic XDP), `auto` only
    /// detects floods and `on` is refused.
    #[arg(long, value_enum, value_name = "MODE")]
    pub syn_cookies: Option<CookieMode>,
    /// SYNs per second to one port above which `auto` engages cookies on it (default 1000, at
    /// least 1).
    #[arg(long, value_name = "N")]
    pub syn_cookie_threshold: Option<u32>,
    /// Seconds a port must stay below the threshold before `auto` disengages (default 30, at
    /// least 1).
    #[arg(long, value_name = "SECONDS")]
    pub syn_cookie_calm: Option<u32>,
}

impl UpArgs {
    /// The options: the config file's (or the defaults), then the flags over them. Everything is
    /// validated here, before anything is touched.
    pub(super) fn options(&self) -> Result<UpOptions> {
        self.try_options().map_err(config::file::invalid)
    }

    fn try_options(&self) -> Result<UpOptions> {
        let mut opts = match &self.config {
            Some(path) => config::file::load(path)?.interface(self.iface.as_deref())?,
            None => {
                let iface = self
                    .iface
                    .clone()
                    .context("--iface IF is required (or --config FILE)")?;
                UpOptions {
                    iface,
                    rules: [AllowRule::parse(config::file::DEFAULT_ALLOW, None)?].into(),
                    rates: std::collections::BTreeMap::new(),
                    deny: Vec::new(),
                    mode: XdpMode::Driver,
                    max_flows: DEFAULT_MAX_FLOWS,
                    config: Config::DEFAULT,
                    given: Given::default(),
                    force: false,
                    debug_log: false,
                    cookies: CookieOptions::default(),
                }
            }
        };
        config::file::apply(
            &mut opts,
            &Overrides {
                allow: self.allow.clone(),
                mode: self.mode,
                max_flows: self.max_flows,
                monitor: self.monitor,
                no_dhcp: self.no_dhcp,
                timeouts: self.timeouts.clone(),
                force: self.force,
                syn_cookies: self.syn_cookies,
                syn_cookie_threshold: self.syn_cookie_threshold,
                syn_cookie_calm: self.syn_cookie_calm,
            },
        )?;
        Ok(opts)
    }
}

pub(super) fn dir(opts: &UpOptions) -> PinDir {
    PinDir::new(&pins::root(), &opts.iface)
}

/// Lock an interface down and exit; the filter stays in the kernel.
///
/// Attaches the XDP ingress program and the TC egress program to IF, and pins maps and links under
/// /sys/fs/bpf/lockdown/IF/. Nothing is changed if any step fails.
///
/// Example: lockdown up --iface eth0 --allow tcp/22 --allow udp/51820
#[derive(Debug, Args)]
pub(super) struct Up {
    #[command(flatten)]
    pub args: UpArgs,
    /// Upgrade in place: swap this binary's programs into the pinned links atomically, keeping
    /// flows, counters and (unless --allow or config options are given) the allowlist and config.
    #[arg(long)]
    pub replace: bool,
    /// Apply, then restore exactly the previous state (not locked down, or the previous policy)
    /// unless `lockdown confirm` runs within SECONDS — like iptables-apply.
    #[arg(long, value_name = "SECONDS", conflicts_with = "replace")]
    pub confirm: Option<u64>,
}

impl Up {
    pub(super) fn run(self) -> Result<()> {
        let opts = self.args.options()?;
        if let Some(secs) = self.confirm {
            return apply_with_confirm(&dir(&opts), opts, secs);
        }
        if self.replace {
            notice(attach::replace(&dir(&opts), &opts)?);
            println!("lockdown: {} programs replaced; maps kept", opts.iface);
            return Ok(());
        }
        notice(attach::up(&dir(&opts), &opts)?);
        println!(
            "lockdown: {} locked down ({} XDP), allowing {}",
            opts.iface,
            opts.mode.name(),
            opts.rules
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(())
    }
}

/// Prints the one line saying SYN cookies cannot answer here (with `auto`), if there is one.
pub(super) fn notice(attached: Attached) -> aya::Ebpf {
    if let Some(line) = attached.cookie_notice {
        println!("{line}");
    }
    attached.ebpf
}

/// `up --confirm`: apply, record how to undo it, and leave a watchdog that undoes it unless
/// confirmed in time.
fn apply_with_confirm(dir: &PinDir, mut opts: UpOptions, secs: u64) -> Result<()> {
    use std::os::unix::process::CommandExt as _;

    if secs == 0 {
        anyhow::bail!("--confirm needs a window of at least 1 second");
    }
    let path = confirm::pending_path(&confirm::run_dir(), &opts.iface);
    // While an earlier change still awaits confirmation, the state to return to is the one from
    // before it: confirming neither change must undo both.
    let previous = match confirm::read_pending(&path)? {
        Some(pending) => pending.previous,
        None => confirm::snapshot(dir)?,
    };
    if dir.is_locked() {
        // A new policy over the current one: apply all of it, keeping the maps.
        opts.given.rules = true;
        opts.given.config = true;
        opts.given.cookies = true;
        notice(attach::replace(dir, &opts)?);
    } else {
        notice(attach::up(dir, &opts)?);
    }
    let token = u64::from(std::process::id()) << 32 ^ lockdown_user::clock_ns();
    let spawned =
        confirm::write_pending(&path, &confirm::Pending { token, previous }).and_then(|()| {
            let mut cmd = std::process::Command::new(std::env::current_exe()?);
            cmd.args(["watchdog", "--iface", &opts.iface])
                .args(["--after", &secs.to_string(), "--token", &token.to_string()])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // SAFETY: setsid is async-signal-safe; the watchdog outlives this process and its session.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            cmd.spawn().context("starting the rollback watchdog")?;
            Ok(())
        });
    if let Err(e) = spawned {
        attach::roll_back_if_pending(&path, dir, token)?;
        return Err(e.context("rolled back: the change could not be made confirmable"));
    }
    println!(
        "lockdown: {} applied; run `lockdown confirm --iface {}` within {secs} s or it is rolled back",
        opts.iface, opts.iface
    );
    Ok(())
}
