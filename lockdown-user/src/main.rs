//! `lockdown`: an XDP ingress firewall that does the job of
//! `-A INPUT -i lo -j ACCEPT; --ctstate RELATED,ESTABLISHED -j ACCEPT; --dport ssh -j ACCEPT; -j DROP`.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // aya 0.16 warns on every load whose object BTF the kernel rejects. The build makes the BTF
    // loadable (bpf-linker leaves Rust names on unions, which lockdown-user/build/btf.rs rewrites),
    // but a kernel older than the BTF kinds the object uses would still refuse it; the programs load
    // and run without BTF, so the warning stays quiet. RUST_LOG=aya=warn shows it again.
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
