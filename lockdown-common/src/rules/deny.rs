//! The blocklist's text form: an entry as the operator writes it ([`DenyNet`], an address or a CIDR),
//! and the map keys it is stored under.

use core::{fmt, net::IpAddr};

use crate::{
    contract::{
        allow::CidrKey,
        flow::{FAMILY_V4, addr_bytes, ip_addr},
    },
    rules::allow::{RuleError, mask, parse_cidr},
};

/// One blocklist entry as the operator writes it: an address or a CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DenyNet {
    pub family: u8,
    pub prefix_len: u8,
    /// Network address (host bits zero).
    pub addr: [u8; 16],
}

impl DenyNet {
    /// Parses `ADDR` or `ADDR/LEN`, IPv4 or IPv6; host bits are cleared.
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let (family, prefix_len, addr) = parse_cidr(s)?;
        Ok(Self {
            family,
            prefix_len,
            addr,
        })
    }

    /// A whole address: kept in the exact map of its family.
    pub const fn is_host(&self) -> bool {
        self.prefix_len == if self.family == FAMILY_V4 { 32 } else { 128 }
    }

    /// The trie key of a prefix entry.
    pub const fn net_key(&self) -> CidrKey {
        CidrKey {
            prefix_len: CidrKey::HEADER_BITS + self.prefix_len as u32,
            family: self.family,
            proto: 0,
            port_be: [0; 2],
            addr: self.addr,
        }
    }

    /// The entry a trie key stands for.
    pub fn from_net_key(k: &CidrKey) -> Self {
        Self {
            family: k.family,
            prefix_len: (k.prefix_len.saturating_sub(CidrKey::HEADER_BITS)) as u8,
            addr: k.addr,
        }
    }

    /// Whether `addr` lies in this network.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (family, mut bytes) = addr_bytes(addr);
        mask(&mut bytes, self.prefix_len);
        family == self.family && bytes == self.addr
    }
}

impl fmt::Display for DenyNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            ip_addr(self.family, &self.addr),
            self.prefix_len
        )
    }
}
