//! The lockdown loader as a library: the `lockdown` CLI, the integration tests and the bench share
//! it.
//!
//! Its rooms, each importing only those below it:
//! - [`config`]: the configuration file and the iptables import, which produce `up`'s options;
//! - [`attach`] and [`observe`]: changing what is attached (up, replace, detach, the lockout
//!   guard, seeding, the rule-change path, confirm), and reporting on it (status, metrics);
//! - [`datapath`]: the eBPF object, its pins and typed handles on its maps;
//! - [`host`]: the host kernel's interfaces.
//!
//! The verbs (`src/cli/`, one file each) stand on top, in the binary.

pub mod attach;
pub mod config;
pub mod datapath;
pub mod host;
pub mod observe;

/// The eBPF object (XDP ingress + TC egress), built by `build.rs` with aya-build.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lockdown"));

/// The SYN-cookie hand-off (TC ingress, C: `lockdown-ebpf/handoff/handoff.bpf.c`), built by
/// `build.rs` with clang. Loaded only where the kernel has `bpf_sk_assign_tcp_reqsk`.
pub static HANDOFF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handoff.bpf.o"));

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the datapath's clock (`bpf_ktime_get_coarse_ns`, a
/// plain read of the last tick, where `bpf_ktime_get_boot_ns` costs a clocksource read per packet).
pub fn clock_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC_COARSE) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Test support shared by the unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    /// Bytes from hex, whitespace ignored.
    pub(crate) fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }
}
