//! `lockdown`: an XDP ingress firewall that does the job of
//! `-A INPUT -i lo -j ACCEPT; --ctstate RELATED,ESTABLISHED -j ACCEPT; --dport ssh -j ACCEPT; -j DROP`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // aya 0.16 warns on every load that the kernel rejects the object's BTF: aya-log-ebpf's
    // AYA_LOG_LEVEL global carries a union named `MaybeUninit<u8>` (aya-rs/aya#1490). The programs
    // load and run without BTF; RUST_LOG=aya=warn shows the message again.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,aya::bpf=error"),
    )
    .init();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockdown: error: {e:#}");
            if lockdown_user::config::file::is_invalid(&e) {
                ExitCode::from(lockdown_user::config::file::EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
