//! The allowlist stage. Reads the packed port table and, for ports with source-CIDR rules,
//! the CIDR trie.

use crate::{
    contract::{
        allow::{CidrKey, PORT_ANY_V4, PORT_ANY_V6, PORT_CIDR, port_slot, slot_flags},
        flow::FAMILY_V4,
    },
    tables::Tables,
};

/// The port-table flags of (`proto`, `port`); 0 for protocols without ports.
#[inline(always)]
pub fn port_flags<T: Tables + ?Sized>(t: &T, proto: u8, port: u16) -> u8 {
    match port_slot(proto, port) {
        Some((index, shift)) => slot_flags(t.port_entry(index), shift),
        None => 0,
    }
}

/// Whether a new inbound connection from `src` to local `port` is allowed.
#[inline(always)]
pub fn allowed<T: Tables + ?Sized>(
    t: &T,
    family: u8,
    proto: u8,
    port: u16,
    src: &[u8; 16],
) -> bool {
    let flags = port_flags(t, proto, port);
    let any = if family == FAMILY_V4 {
        PORT_ANY_V4
    } else {
        PORT_ANY_V6
    };
    if flags & any != 0 {
        return true;
    }
    flags & PORT_CIDR != 0 && cidr_allowed(t, family, proto, port, src)
}

/// The source-CIDR half of [`allowed`]. Not inlined: in the kernel it is one BPF subprogram, so the
/// trie key is not on the stack of every call site.
#[inline(never)]
fn cidr_allowed<T: Tables + ?Sized>(
    t: &T,
    family: u8,
    proto: u8,
    port: u16,
    src: &[u8; 16],
) -> bool {
    t.cidr_match(&CidrKey::lookup(family, proto, port, *src))
}
