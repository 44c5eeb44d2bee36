//! The host kernel's interfaces that lockdown reads: netlink (the interfaces, the conntrack
//! table), the ethtool ioctl and the `/proc/net` socket tables, each in the current network
//! namespace, and this process's capabilities.

pub mod caps;
pub mod ctnetlink;
pub mod ethtool;
pub mod link;
pub mod netlink;
pub mod sockets;
