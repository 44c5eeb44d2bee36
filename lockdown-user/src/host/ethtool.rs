//! The ethtool ioctl lockdown needs: the driver name of an interface (`ETHTOOL_GDRVINFO` through
//! `SIOCETHTOOL`), on a socket of the current network namespace.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, bail};

/// `IFNAMSIZ - 1`: the longest primary interface name.
pub(crate) const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// `ETHTOOL_GDRVINFO` of linux/ethtool.h.
const ETHTOOL_GDRVINFO: u32 = 0x3;

/// `struct ethtool_drvinfo` of linux/ethtool.h (uapi).
#[repr(C)]
#[derive(Default)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const _: () = assert!(size_of::<EthtoolDrvinfo>() == 196);

/// The driver name `ETHTOOL_GDRVINFO` reports for `name`, on a socket of the current network
/// namespace. The kernel answers for every device that has ethtool `get_drvinfo`, a parent
/// device with a driver, or a link kind (it then reports the kind); for any other
/// (`lo`, for one) it refuses with `EOPNOTSUPP`, which is `None`. Any other failure (the device
/// vanished: `ENODEV`) is an error.
pub fn driver(name: &str) -> Result<Option<String>> {
    let ifr_name = ifr_name(name)?;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("opening an AF_INET socket for ethtool");
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        ..EthtoolDrvinfo::default()
    };
    // SAFETY: `ifreq` is plain data (byte arrays, integers, a raw pointer in a union): all zeroes
    // is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ifr.ifr_name = ifr_name;
    ifr.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: SIOCETHTOOL takes a `struct ifreq` whose `ifr_data` points to the command's
    // structure; for ETHTOOL_GDRVINFO the kernel reads `cmd` and writes back
    // `sizeof(struct ethtool_drvinfo)` bytes. `ifr` and `info` are valid, correctly sized and
    // outlive the call.
    let rc = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            libc::SIOCETHTOOL as libc::Ioctl,
            &raw mut ifr,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return Ok(None);
        }
        return Err(e.into());
    }
    Ok(c_string(&info.driver))
}

/// `name` as `ifreq.ifr_name`: at most `IFNAMSIZ - 1` bytes, NUL-terminated.
fn ifr_name(name: &str) -> Result<[libc::c_char; libc::IFNAMSIZ]> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        bail!("{name:?} is not a valid primary network interface name");
    }
    let mut out = [0; libc::IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

/// A fixed-size C string field: the bytes before the first NUL (all of them if none); `None` if
/// empty.
fn c_string(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    (end > 0).then(|| String::from_utf8_lossy(&field[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert_eq!(
            ifr_name("lo").unwrap()[..3],
            [b'l', b'o', 0].map(|b| b as libc::c_char)
        );
        assert!(ifr_name("sixteen_bytes_xx").is_err());
        assert!(ifr_name("").is_err());
    }

    #[test]
    fn c_strings() {
        assert_eq!(c_string(b"veth\0\0\0\0"), Some("veth".into()));
        assert_eq!(c_string(b"veth\0junk"), Some("veth".into()));
        assert_eq!(c_string(b"full"), Some("full".into()));
        assert_eq!(c_string(&[0; 32]), None);
    }

    #[test]
    fn ethtool_drvinfo_matches_the_uapi_layout() {
        assert_eq!(std::mem::offset_of!(EthtoolDrvinfo, driver), 4);
        assert_eq!(std::mem::offset_of!(EthtoolDrvinfo, bus_info), 100);
        assert_eq!(std::mem::offset_of!(EthtoolDrvinfo, n_priv_flags), 176);
        assert_eq!(std::mem::offset_of!(EthtoolDrvinfo, regdump_len), 192);
    }
}
