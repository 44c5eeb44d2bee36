//! The privilege check: whether this process may load lockdown's programs and open its pins (root,
//! or CAP_BPF and CAP_NET_ADMIN). Every verb that touches the kernel runs it first.

use anyhow::{Result, bail};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Parses the `CapEff:` line of `/proc/self/status`.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Whether the capability set can load and attach lockdown's programs.
pub fn sufficient(caps: u64) -> bool {
    let has = |c: u32| caps & (1 << c) != 0;
    has(CAP_NET_ADMIN) && (has(CAP_BPF) || has(CAP_SYS_ADMIN))
}

/// Fails with a clear message unless the process runs as root or holds CAP_BPF and CAP_NET_ADMIN.
pub fn require() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match effective_caps(&status) {
        Some(caps) if sufficient(caps) => Ok(()),
        _ => bail!(
            "lockdown needs root (or CAP_BPF and CAP_NET_ADMIN) to load programs and open its pinned maps; run it with sudo"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_capeff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x1ff_ffff_ffff));
        assert!(sufficient(0x1ff_ffff_ffff));
        assert!(!sufficient(0));
        assert!(sufficient((1 << CAP_NET_ADMIN) | (1 << CAP_BPF)));
        assert!(!sufficient(1 << CAP_BPF));
        assert_eq!(effective_caps("nothing"), None);
    }
}
