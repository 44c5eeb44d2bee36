//! Developer tasks for lockdown, run as `cargo xtask <verb>` (an alias in `.cargo/config.toml`).
//!
//! One module per verb; `util` holds the small helpers they share.

mod bench;
mod build;
mod ci;
mod deb;
mod demo;
mod lint;
mod previous;
mod run;
mod setup;
mod test;
mod test_kernels;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for lockdown"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine needs (runs scripts/setup.sh).
    ///
    /// Debian packages for the tests and the demo, the Rust toolchains 1.98.0 and
    /// nightly-2026-07-01, bpf-linker 0.10.1, and bpffs at /sys/fs/bpf. Idempotent: installs
    /// only what is missing. On a machine without Rust 1.98.0, run scripts/setup.sh directly.
    Setup,
    /// Build the lockdown binary.
    ///
    /// Runs `cargo build -p lockdown-user`; its build script compiles the eBPF programs with the
    /// nightly toolchain and embeds them in target/{debug,release}/lockdown.
    Build(build::Options),
    /// Build lockdown, then run it as root with the arguments after `--`.
    ///
    /// Example: `cargo xtask run -- up --iface eth0`. When not root, re-runs it through
    /// `sudo -E` if sudo exists, and fails otherwise.
    Run(run::Options),
    /// Run the full test suite (needs root).
    ///
    /// Mounts bpffs if needed, builds lockdown, the previous release (from its commit, for the
    /// upgrade tests: `LOCKDOWN_PREVIOUS_BIN`) and the Debian package (`cargo xtask deb`, for the
    /// package tests, which install and purge it: `LOCKDOWN_DEB`), runs the host unit tests
    /// (`cargo test --workspace --exclude lockdown-ebpf --exclude lockdown-tests`), then the
    /// kernel-state integration tests one at a time
    /// (`cargo test -p lockdown-tests -- --test-threads=1`). Arguments after `--` go to the
    /// integration test harness, e.g. a test name filter.
    Test(test::Options),
    /// Build the Debian package: target/debian/lockdown_<version>_<arch>.deb.
    ///
    /// Builds the release binary, writes its man pages and bash/zsh/fish completions with the
    /// hidden `lockdown generate` (from the same clap definitions as --help), then runs cargo-deb
    /// (installed by scripts/setup.sh) with lockdown-user's [package.metadata.deb]: /usr/sbin/
    /// lockdown, both systemd units, /etc/lockdown/lockdown.toml as a conffile, the man pages, the
    /// completions and the maintainer scripts of packaging/debian/.
    Deb,
    /// Check formatting and run clippy with warnings denied.
    ///
    /// Runs `cargo fmt --all -- --check` and
    /// `cargo clippy --workspace --exclude lockdown-ebpf --all-targets -- -D warnings`.
    Lint,
    /// Show lockdown at work in a throw-away two-namespace sandbox (needs root).
    ///
    /// Creates namespaces ld-demo-origin and ld-demo-peer joined by a veth pair (ldd0 <-> ldd1),
    /// listens on tcp/22 and tcp/8080 in the origin, attaches lockdown to ldd0, shows from the
    /// peer that tcp/22 connects and tcp/8080 times out, opens tcp/8080 live with
    /// `lockdown allow add`, prints `lockdown status`, detaches, and deletes the namespaces
    /// (also on failure).
    Demo(demo::Options),
    /// Run lockdown's scenario on Debian's 6.1 and 6.12 kernels and on the running one (needs
    /// root; about 5 minutes, the kernels side by side).
    ///
    /// Downloads the kernel packages with `apt-get download` (cached under target/kernels/),
    /// boots each in QEMU (TCG; `--kvm` to use KVM) from an initramfs holding busybox, the
    /// release binary, iproute2, netcat and the model_vs_bpf test, and runs the same scenario
    /// (xtask/guest/scenario.sh) there and natively on the running kernel, on a veth pair
    /// between two network namespaces: `up`
    /// native and skb, live `allow`, an outbound flow, ICMP RELATED, `deny` with expiry, a rate
    /// limit, a SIGKILLed `run`, `up --replace` under traffic, `down`, and the model-vs-program
    /// pass. Prints a table kernel × check and the programs' instruction counts per kernel;
    /// fails if any cell is red.
    TestKernels(test_kernels::Options),
    /// What CI runs after scripts/setup.sh: `lint`, `test`, then `test-kernels`.
    Ci,
    /// Run the benchmarks (needs root; about 5 minutes, `--quick` about 30 s).
    ///
    /// Builds lockdown and lockdown-bench in release mode, then measures program cost per path
    /// (BPF_PROG_TEST_RUN against the bare XDP_DROP/XDP_PASS programs), receive CPU per packet
    /// on a veth under a spoofed SYN flood (no filter, the seed iptables chain, nftables,
    /// lockdown skb/native, bare XDP_DROP), flow entries and echo latency under a flood, and
    /// memory per flow. Writes bench/RESULTS.md, bench/results.json and bench/chart.svg and
    /// prints each target as MET / NOT MET. Arguments after `--` go to lockdown-bench.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let Cli { task } = Cli::parse();
    let result = match task {
        Task::Setup => setup::run(),
        Task::Build(opts) => build::run(&opts),
        Task::Run(opts) => run::run(opts),
        Task::Test(opts) => test::run(&opts),
        Task::Deb => deb::run(),
        Task::Lint => lint::run(),
        Task::Demo(opts) => demo::run(&opts),
        Task::Ci => ci::run(),
        Task::Bench(opts) => bench::run(&opts),
        Task::TestKernels(opts) => test_kernels::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line, without anyhow's backtrace.
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
