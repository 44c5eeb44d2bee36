//! `lockdown`: an XDP ingress firewall that does the job of
//! `-A INPUT -i lo -j ACCEPT; --ctstate RELATED,ESTABLISHED -j ACCEPT; --dport ssh -j ACCEPT; -j DROP`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lockdown: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
