//! The allowlist's maps as the datapath reads them: the packed port table ([`crate::contract::maps::PORTS`]),
//! the source-CIDR trie key ([`CidrKey`]) and the operator's rule as stored ([`AllowRule`]). The text
//! form of a rule is [`crate::rules::allow`].

use bytemuck::{Pod, Zeroable};

use crate::contract::flow::{FAMILY_V4, PROTO_TCP, PROTO_UDP};

/// Port-table flag: any IPv4 source may connect.
pub const PORT_ANY_V4: u8 = 1 << 0;
/// Port-table flag: any IPv6 source may connect.
pub const PORT_ANY_V6: u8 = 1 << 1;
/// Port-table flag: some source CIDRs may connect; look up [`crate::contract::maps::CIDRS`].
pub const PORT_CIDR: u8 = 1 << 2;
/// Port-table flag: new TCP connections to this port are limited per source.
pub const PORT_RATED: u8 = 1 << 3;

/// The key of [`crate::contract::maps::RATES`] for one port.
#[inline(always)]
pub const fn rate_key(proto: u8, port: u16) -> u32 {
    (proto as u32) << 16 | port as u32
}

/// Ports per `u64` entry of the port table (4 bits each).
pub const PORTS_PER_ENTRY: u32 = 16;
/// Entries of the port table: TCP then UDP, 65536 ports each.
pub const PORT_TABLE_ENTRIES: u32 = 2 * 65_536 / PORTS_PER_ENTRY;

/// Where the 4-bit flags of (`proto`, `port`) live in the port table: (index, bit shift).
/// Returns `None` for protocols without ports.
#[inline(always)]
pub const fn port_slot(proto: u8, port: u16) -> Option<(u32, u32)> {
    let base: u32 = match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 65_536,
        _ => return None,
    };
    let n = base + port as u32;
    Some((n / PORTS_PER_ENTRY, (n % PORTS_PER_ENTRY) * 4))
}

/// Extracts the flags of a slot from a port-table entry.
#[inline(always)]
pub const fn slot_flags(entry: u64, shift: u32) -> u8 {
    ((entry >> shift) & 0xf) as u8
}

/// Key of the source-CIDR trie. The first 32 bits (family, proto, port) always match exactly;
/// the address matches `prefix_len - 32` bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct CidrKey {
    pub prefix_len: u32,
    pub family: u8,
    pub proto: u8,
    /// Network byte order, so the bytes read like the wire.
    pub port_be: [u8; 2],
    pub addr: [u8; 16],
}

impl CidrKey {
    /// Bits of the key before the address.
    pub const HEADER_BITS: u32 = 32;

    /// The trie key's data, without the prefix length (which the map's key type carries).
    #[inline(always)]
    pub const fn data(&self) -> [u8; 20] {
        let mut d = [0u8; 20];
        d[0] = self.family;
        d[1] = self.proto;
        d[2] = self.port_be[0];
        d[3] = self.port_be[1];
        let mut i = 0;
        while i < 16 {
            d[4 + i] = self.addr[i];
            i += 1;
        }
        d
    }

    /// The lookup key for a packet: full-length prefix.
    #[inline(always)]
    pub const fn lookup(family: u8, proto: u8, port: u16, addr: [u8; 16]) -> Self {
        let bits = if family == FAMILY_V4 { 32 } else { 128 };
        Self {
            prefix_len: Self::HEADER_BITS + bits,
            family,
            proto,
            port_be: port.to_be_bytes(),
            addr,
        }
    }
}

/// One rule as the operator wrote it: `proto/port[-port]`, optionally `--from CIDR`.
/// 24 bytes, no padding. With `family == 0` the rule applies to every IPv4 and IPv6 source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct AllowRule {
    pub proto: u8,
    /// 0 (any source), [`FAMILY_V4`] or [`crate::contract::flow::FAMILY_V6`].
    pub family: u8,
    pub prefix_len: u8,
    pub _pad: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    /// Network address (host bits zero).
    pub addr: [u8; 16],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_pack_sixteen_ports_per_entry() {
        assert_eq!(port_slot(PROTO_TCP, 0), Some((0, 0)));
        assert_eq!(port_slot(PROTO_TCP, 22), Some((1, 24)));
        assert_eq!(port_slot(PROTO_UDP, 0), Some((4096, 0)));
        assert_eq!(
            port_slot(PROTO_UDP, 65535),
            Some((PORT_TABLE_ENTRIES - 1, 60))
        );
        assert_eq!(port_slot(1, 0), None);
        assert_eq!(slot_flags(0xf0, 4), 0xf);
    }
}
