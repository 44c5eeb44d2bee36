//! `lockdown run`: lock an interface down in the foreground until a signal.

use anyhow::{Context as _, Result};
use clap::Args;
use lockdown_user::attach;

use super::up::UpArgs;

/// Lock an interface down in the foreground; detach on SIGINT or SIGTERM.
///
/// Same options as `up`. Maps and links are pinned as with `up`, so if this process dies (even by
/// SIGKILL) the filter keeps enforcing until `lockdown down`; a new `run` adopts the pins, keeping
/// the flow table and the allowlist.
///
/// Example: lockdown run --iface eth0 --allow tcp/22
#[derive(Debug, Args)]
pub(super) struct Run {
    #[command(flatten)]
    args: UpArgs,
    /// Also serve Prometheus metrics on ADDR (as `lockdown exporter` does).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Print the kernel programs' debug messages (aya-log) to stderr; set RUST_LOG=debug.
    #[arg(long)]
    debug_log: bool,
}

impl Run {
    pub(super) fn run(self) -> Result<()> {
        let mut opts = self.args.options()?;
        opts.debug_log = self.debug_log;
        let dir = super::up::dir(&opts);
        let mut ebpf = if dir.is_locked() {
            // A previous `up` or `run` left pins: adopt them (flows and allowlist survive).
            let ebpf = super::up::notice(attach::replace(&dir, &opts)?);
            println!(
                "lockdown: {} adopted from pins; Ctrl-C to release",
                opts.iface
            );
            ebpf
        } else {
            let ebpf = super::up::notice(attach::up(&dir, &opts)?);
            println!("lockdown: {} locked down; Ctrl-C to release", opts.iface);
            ebpf
        };
        if self.debug_log {
            let mut logger =
                aya_log::EbpfLogger::init(&mut ebpf).context("reading the kernel debug log")?;
            std::thread::spawn(move || {
                use std::os::fd::AsRawFd as _;
                loop {
                    let mut pfd = libc::pollfd {
                        fd: logger.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1000) };
                    logger.flush();
                }
            });
        }
        if let Some(listen) = self.metrics.clone() {
            let iface = opts.iface.clone();
            std::thread::spawn(move || {
                if let Err(e) = lockdown_user::observe::metrics::serve(
                    &listen,
                    &lockdown_user::datapath::pins::root(),
                    Some(&iface),
                ) {
                    log::error!("metrics server: {e:#}");
                }
            });
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        })
        .context("waiting for a signal")?;
        attach::detach(&dir)?;
        println!("lockdown: {} released", opts.iface);
        Ok(())
    }
}
