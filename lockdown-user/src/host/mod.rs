//! What lockdown asks of the host: what the kernel offers ([`probe`]) and the netlink TC filter
//! that holds the egress program where the kernel has no TCX ([`tc`]).

pub mod probe;
pub mod tc;
