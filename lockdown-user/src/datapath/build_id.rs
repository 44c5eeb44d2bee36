//! Which build this is: the version, the git commit, and a SHA-256 of the embedded eBPF object.
//! `attach` records the object's hash in the pinned [`BUILD`] map whenever it loads programs, so
//! `status` can tell an operator, after a package upgrade, that the running programs are not this
//! binary's and `up --replace` is due.

use std::sync::LazyLock;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use lockdown_common::contract::maps::BUILD;
use sha2::{Digest as _, Sha256};

use crate::datapath::pins::{PinDir, open_pinned};

/// The git commit the binary was built from (`unknown` outside a git checkout; `-dirty` with
/// uncommitted changes), set by `build.rs`.
pub const COMMIT: &str = env!("LOCKDOWN_GIT_COMMIT");

/// SHA-256 of [`crate::EBPF_OBJECT`], hashed on first use.
pub fn object_sha256() -> &'static [u8; 32] {
    static HASH: LazyLock<[u8; 32]> = LazyLock::new(|| Sha256::digest(crate::EBPF_OBJECT).into());
    &HASH
}

/// Lower-case hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// What `lockdown --version` prints after the program name.
pub fn version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{} (commit {COMMIT}, eBPF object sha256 {})",
            env!("CARGO_PKG_VERSION"),
            hex(object_sha256())
        )
    });
    &VERSION
}

/// Records this binary's object hash in the [`BUILD`] map of a freshly loaded `ebpf`, once its
/// programs are attached.
pub fn record(ebpf: &mut Ebpf) -> Result<()> {
    let mut map: Array<_, [u8; 32]> = ebpf
        .map_mut(BUILD)
        .with_context(|| format!("map {BUILD} missing from the eBPF object"))?
        .try_into()?;
    map.set(0, object_sha256(), 0)
        .with_context(|| format!("writing {BUILD}"))
}

/// The object hash recorded for the programs attached under `dir`; `None` when they were attached
/// by a release that did not record one (no pin) or nothing was recorded (all zeros).
pub fn running(dir: &PinDir) -> Result<Option<[u8; 32]>> {
    let path = dir.map(BUILD);
    if !path.exists() {
        return Ok(None);
    }
    let map: Array<MapData, [u8; 32]> = open_pinned(&path)?
        .try_into()
        .with_context(|| format!("{} is not an array", path.display()))?;
    let hash = map
        .get(&0, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok((hash != [0; 32]).then_some(hash))
}
