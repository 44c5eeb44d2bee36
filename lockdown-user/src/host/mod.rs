//! The host kernel's interfaces lockdown reads, each in the current network namespace: netlink
//! (links, conntrack), the ethtool ioctl, the `/proc/net` socket tables and the process's
//! capabilities.

pub mod caps;
pub mod ctnetlink;
pub mod ethtool;
pub mod link;
pub mod netlink;
pub mod sockets;
