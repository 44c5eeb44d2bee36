//! The host kernel's interfaces that lockdown reads and uses: netlink (the interfaces, the
//! conntrack table, the TC filter that holds the egress program where the kernel has no TCX:
//! [`tc`]), the ethtool ioctl and the `/proc/net` socket tables, each in the current network
//! namespace, this process's capabilities, and what the kernel offers ([`probe`]).

pub mod caps;
pub mod ctnetlink;
pub mod ethtool;
pub mod link;
pub mod netlink;
pub mod probe;
pub mod sockets;
pub mod tc;
