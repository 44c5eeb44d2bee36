//! The pinned blocklist of one interface (see `lockdown_common::deny`): add, remove, list and
//! reap entries, and keep the config flags that tell the datapath which maps to look in.
//! Callers hold the pin root's lock, as for every other change to the maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{
    Array, HashMap, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use lockdown_common::{
    contract::{
        config::{Config, FLAG_DENY, FLAG_DENY_NETS},
        flow::FAMILY_V4,
        maps::{CONFIG, DENY_FILTER, DENY_NETS, DENY4, DENY6, MAX_DENY},
    },
    rules::deny::DenyNet,
    stages::deny::{FOREVER, filter_slot, in_force, key4},
};

use crate::datapath::pins::{PinDir, is_not_found, open_pinned};

/// The blocklist maps of one attachment.
pub struct Blocklist {
    iface: String,
    v4: HashMap<MapData, u32, u64>,
    v6: HashMap<MapData, [u8; 16], u64>,
    nets: LpmTrie<MapData, [u8; 20], u64>,
    filter: Array<MapData, u64>,
    config: Array<MapData, Config>,
}

/// Adds `nets` to the blocklist of `dir` until removed (the config file's `deny`).
pub fn add_all(dir: &PinDir, nets: &[DenyNet]) -> Result<()> {
    if nets.is_empty() {
        return Ok(());
    }
    let mut list = Blocklist::open(dir)?;
    for net in nets {
        list.add(net, FOREVER)?;
    }
    Ok(())
}

/// When an entry expiring at `expires` (ns, [`FOREVER`] for none) runs out, seen at `now`.
pub fn time_left(expires: u64, now: u64) -> Option<Duration> {
    (expires != FOREVER).then(|| Duration::from_nanos(expires.saturating_sub(now)))
}

impl Blocklist {
    pub fn open(dir: &PinDir) -> Result<Self> {
        dir.require_current_layout()?;
        Self::from_maps(&dir.iface, |name| open_pinned(&dir.map(name)))
    }

    /// The blocklist in maps that are already open, each fetched by name with `get` (an object
    /// loaded without pins, as the test-run harness has one); `iface` names it in messages.
    pub fn from_maps(iface: &str, mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            iface: iface.to_owned(),
            v4: get(DENY4)?.try_into()?,
            v6: get(DENY6)?.try_into()?,
            nets: get(DENY_NETS)?.try_into()?,
            filter: get(DENY_FILTER)?.try_into()?,
            config: get(CONFIG)?.try_into()?,
        })
    }

    /// Every entry with its expiry, expired ones included.
    pub fn entries(&self) -> Result<BTreeMap<DenyNet, u64>> {
        let mut out = BTreeMap::new();
        let read = |e: MapError| anyhow::Error::from(e).context("reading the blocklist");
        for kv in self.v4.iter() {
            match kv {
                Ok((k, v)) => {
                    let mut addr = [0; 16];
                    addr[..4].copy_from_slice(&k.to_ne_bytes());
                    out.insert(host(FAMILY_V4, addr), v);
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(read(e)),
            }
        }
        for kv in self.v6.iter() {
            match kv {
                Ok((k, v)) => {
                    out.insert(host(lockdown_common::contract::flow::FAMILY_V6, k), v);
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(read(e)),
            }
        }
        for kv in self.nets.iter() {
            match kv {
                Ok((k, v)) => {
                    let mut data = [0u8; 24];
                    data[..4].copy_from_slice(&k.prefix_len().to_ne_bytes());
                    data[4..].copy_from_slice(&k.data());
                    let key: lockdown_common::contract::allow::CidrKey =
                        bytemuck::pod_read_unaligned(&data);
                    out.insert(DenyNet::from_net_key(&key), v);
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(read(e)),
            }
        }
        Ok(out)
    }

    /// Adds `net` (or replaces its expiry). A full map is an error that names the limit, and
    /// changes nothing.
    pub fn add(&mut self, net: &DenyNet, expires: u64) -> Result<()> {
        let full = |e: MapError| {
            let limit = matches!(&e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG));
            if limit {
                anyhow::anyhow!(
                    "the blocklist of {} is full ({MAX_DENY} entries of this kind): remove some with `lockdown deny del`",
                    self.iface
                )
            } else {
                anyhow::Error::from(e).context(format!("adding {net} to the blocklist"))
            }
        };
        let r = if net.family == FAMILY_V4 && net.is_host() {
            self.v4.insert(&key4(&net.addr), &expires, 0)
        } else if net.is_host() {
            self.v6.insert(&net.addr, &expires, 0)
        } else {
            let k = net.net_key();
            self.nets
                .insert(&Key::new(k.prefix_len, k.data()), &expires, 0)
        };
        r.map_err(full)?;
        // The filter bit and the flags go on after the entry is in place.
        if net.is_host() {
            let (word, mask) = filter_slot(net.family, &net.addr);
            let old = self
                .filter
                .get(&word, 0)
                .context("reading the blocklist filter")?;
            if old & mask == 0 {
                self.filter
                    .set(word, &(old | mask), 0)
                    .context("writing the blocklist filter")?;
            }
        }
        self.set_flags(|flags| flags | FLAG_DENY | if net.is_host() { 0 } else { FLAG_DENY_NETS })
    }

    /// Removes `net`; whether it was there.
    pub fn remove(&mut self, net: &DenyNet) -> Result<bool> {
        self.remove_all(std::slice::from_ref(net)).map(|n| n == 1)
    }

    /// Removes the entries that expired before `now`; how many.
    pub fn reap(&mut self, now: u64) -> Result<usize> {
        let expired: Vec<DenyNet> = self
            .entries()?
            .into_iter()
            .filter(|(_, e)| !in_force(*e, now))
            .map(|(n, _)| n)
            .collect();
        self.remove_all(&expired)
    }

    /// Removes `nets` (those that are there; how many were), then rewrites the filter words they
    /// touched from the addresses left and turns flags off for maps left empty.
    pub fn remove_all(&mut self, nets: &[DenyNet]) -> Result<usize> {
        let mut removed = 0;
        let mut words = BTreeSet::new();
        for net in nets {
            let r = if net.family == FAMILY_V4 && net.is_host() {
                self.v4.remove(&key4(&net.addr))
            } else if net.is_host() {
                self.v6.remove(&net.addr)
            } else {
                let k = net.net_key();
                self.nets.remove(&Key::new(k.prefix_len, k.data()))
            };
            match r {
                Ok(()) => removed += 1,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {net} from the blocklist"));
                }
            }
            if net.is_host() {
                words.insert(filter_slot(net.family, &net.addr).0);
            }
        }
        if removed == 0 {
            return Ok(0);
        }
        // The touched words again from the addresses left: their bits never go off.
        if !words.is_empty() {
            let mut bits: BTreeMap<u32, u64> = words.iter().map(|w| (*w, 0)).collect();
            for n in self.entries()?.keys().filter(|n| n.is_host()) {
                let (w, m) = filter_slot(n.family, &n.addr);
                if let Some(b) = bits.get_mut(&w) {
                    *b |= m;
                }
            }
            for (w, b) in bits {
                self.filter
                    .set(w, &b, 0)
                    .context("writing the blocklist filter")?;
            }
        }
        // The flags go off once the last entry of their maps is gone.
        let (hosts, nets) = (
            self.v4.keys().next().is_some() || self.v6.keys().next().is_some(),
            self.nets.keys().next().is_some(),
        );
        self.set_flags(|flags| {
            let flags = if nets { flags } else { flags & !FLAG_DENY_NETS };
            if hosts || nets {
                flags
            } else {
                flags & !FLAG_DENY
            }
        })?;
        Ok(removed)
    }

    /// Rewrites the config's flags with `f` (a write only if they change). [`FLAG_DENY`] and
    /// [`FLAG_DENY_NETS`] go on after an insert and off after the last removal, so the datapath
    /// never skips an entry in force.
    fn set_flags(&mut self, f: impl FnOnce(u32) -> u32) -> Result<()> {
        let mut config = self.config.get(&0, 0).context("reading the config map")?;
        let new = f(config.flags);
        if new != config.flags {
            config.flags = new;
            self.config
                .set(0, &config, 0)
                .context("writing the config map")?;
        }
        Ok(())
    }
}

fn host(family: u8, addr: [u8; 16]) -> DenyNet {
    DenyNet {
        family,
        prefix_len: if family == FAMILY_V4 { 32 } else { 128 },
        addr,
    }
}
