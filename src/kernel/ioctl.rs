//! The carpreq ioctls (`SIOCSVH`/`SIOCGVH`): CARP parameters on FreeBSD 13.x, where the
//! generic netlink family "carp" does not exist yet. Also the small ioctl plumbing (a datagram
//! socket, an interface name buffer, the `_IOC` encoding) that `ifaddr` shares.
//!
//! What lives here: [`CarpIoctl`], which issues the ioctls on an AF_INET socket. The 40-byte
//! `struct carpreq` and the pure conversions between it and carpd's types ([`set_carpreq`],
//! [`decode_carpreq`]) are in [`super::carpreq`], which builds on every platform so their
//! tests run on Linux too; they are re-exported here.
//!
//! What it must not do:
//! - GET with vhid 0 ("list all"): broken on 14+ (it copies out kernel stack); we ask one vhid
//!   at a time, see [`CarpIoctl::list`];
//! - pretend to support unicast peers: this ioctl has no peer fields, so a SET that asks for
//!   one is refused ([`super::unicast_unsupported`]) instead of silently going multicast;
//! - show key bytes: [`CarpReq`] has no `Debug` and zeroizes its key on drop.
//!
//! The kernel semantics (advskew always written, advbase 0 keeps, empty key keeps, state
//! only forced out of BACKUP/MASTER) are those of [`SetRequest`]; nothing is merged here.

use std::ffi::c_int;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use libc::{c_char, c_ulong};

use crate::carp::{IFNAMSIZ, Vhid};

use super::{KernelError, KernelGroup, SetRequest};

// ---- ioctl plumbing shared with ifaddr.rs -------------------------------------------------

/// `IOC_OUT` from sys/ioccom.h: the kernel copies the argument out.
const IOC_OUT: u32 = 0x4000_0000;
/// `IOC_IN`: the kernel copies the argument in.
const IOC_IN: u32 = 0x8000_0000;
/// `IOCPARM_MASK`: the argument length field is 13 bits.
const IOCPARM_MASK: u32 = 0x1fff;

/// `_IOC(inout, group, num, len)` from sys/ioccom.h.
const fn ioc(inout: u32, group: u8, num: u8, len: usize) -> c_ulong {
    (inout | ((len as u32 & IOCPARM_MASK) << 16) | ((group as u32) << 8) | num as u32) as c_ulong
}

/// `_IOW(group, num, T)`: the kernel reads a `T` of `len` bytes.
pub(crate) const fn iow(group: u8, num: u8, len: usize) -> c_ulong {
    ioc(IOC_IN, group, num, len)
}

/// `_IOWR(group, num, T)`: the kernel reads and writes back a `T` of `len` bytes.
pub(crate) const fn iowr(group: u8, num: u8, len: usize) -> c_ulong {
    ioc(IOC_IN | IOC_OUT, group, num, len)
}

/// `struct ifreq` is 32 bytes on every FreeBSD architecture (16-byte name, 16-byte union);
/// every `_IOW('i', n, struct ifreq)` number below depends on it.
const _: () = assert!(size_of::<libc::ifreq>() == 32);
const _: () = assert!(offset_of!(libc::ifreq, ifr_ifru) == IFNAMSIZ);

/// An interface name as the kernel wants it: NUL-padded to `IFNAMSIZ`.
///
/// Fails (EINVAL, naming the interface) when the name cannot be one: empty, too long, or
/// with a NUL byte. Whether it exists is the kernel's answer (ENXIO).
pub(crate) fn ifname_buf(op: &str, ifname: &str) -> Result<[c_char; IFNAMSIZ], KernelError> {
    if ifname.is_empty() || ifname.len() >= IFNAMSIZ || ifname.bytes().any(|b| b == 0) {
        return Err(KernelError::errno(op, libc::EINVAL).detail(format!(
            "'{}' cannot be an interface name: FreeBSD names are 1..{} bytes without NUL",
            ifname.escape_default(),
            IFNAMSIZ - 1
        )));
    }
    let mut buf = [0 as c_char; IFNAMSIZ];
    for (dst, src) in buf.iter_mut().zip(ifname.bytes()) {
        *dst = src as c_char;
    }
    Ok(buf)
}

/// A close-on-exec datagram socket of `family`, the handle interface ioctls are issued on.
pub(crate) fn dgram_socket(family: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The errno of the last failed system call.
pub(crate) fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Issues `ioctl(fd, request, arg)` and returns the errno on failure.
///
/// # Safety
///
/// `request` must be an ioctl whose argument is a pointer to a `T` (its `_IOC` length equal
/// to `size_of::<T>()`), and every pointer inside `*arg` must be valid for what the kernel
/// does with it during the call.
pub(crate) unsafe fn ioctl_with<T>(fd: &OwnedFd, request: c_ulong, arg: &mut T) -> Result<(), i32> {
    // SAFETY: forwarded to the caller (see above); `arg` is a live, exclusive reference, so
    // the kernel may read and write `size_of::<T>()` bytes behind it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

// ---- struct carpreq ------------------------------------------------------------------------

/// `SIOCSVH = _IOWR('i', 245, struct ifreq)`: set (and create) a vhid.
pub const SIOCSVH: c_ulong = 0xc020_69f5;
/// `SIOCGVH = _IOWR('i', 246, struct ifreq)`: read one vhid (or, broken on 14+, all).
pub const SIOCGVH: c_ulong = 0xc020_69f6;

const _: () = assert!(SIOCSVH == iowr(b'i', 245, size_of::<libc::ifreq>()));
const _: () = assert!(SIOCGVH == iowr(b'i', 246, size_of::<libc::ifreq>()));

pub use super::carpreq::{CarpReq, decode_carpreq, key_view, set_carpreq};

/// Whether this process would get keys back from the kernel (PRIV_NETINET_CARP is granted to
/// the superuser).
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The carpreq ioctls on one AF_INET datagram socket (shared by all calls: ioctls on one
/// socket from several threads are fine).
pub struct CarpIoctl {
    sock: OwnedFd,
}

impl CarpIoctl {
    pub fn open() -> Result<CarpIoctl, KernelError> {
        let sock = dgram_socket(libc::AF_INET).map_err(|e| {
            KernelError::errno(
                "open an AF_INET socket for the carpreq ioctls",
                e.raw_os_error().unwrap_or(libc::EIO),
            )
            .detail(format!("socket(AF_INET, SOCK_DGRAM): {e}"))
        })?;
        Ok(CarpIoctl { sock })
    }

    /// `ioctl(SIOCxVH)` with `ifr_name = ifname` and the ifreq data pointer at `carpr`.
    fn call(
        &self,
        op: &str,
        request: c_ulong,
        ifname: &str,
        carpr: &mut CarpReq,
    ) -> Result<(), KernelError> {
        let mut ifr = libc::ifreq {
            ifr_name: ifname_buf(op, ifname)?,
            // Start from the widest member, all zero, then point the data pointer at carpr.
            ifr_ifru: libc::__c_anonymous_ifr_ifru {
                ifru_buffer: libc::ifreq_buffer {
                    length: 0,
                    buffer: std::ptr::null_mut(),
                },
            },
        };
        ifr.ifr_ifru.ifru_data = (carpr as *mut CarpReq).cast::<c_char>();
        // SAFETY: SIOCSVH/SIOCGVH take a `struct ifreq` (32 bytes, asserted above) whose data
        // pointer the kernel follows for one `struct carpreq` (40 bytes, asserted above,
        // carpr_count = 1 so it copies out exactly one); `carpr` outlives the call.
        unsafe { ioctl_with(&self.sock, request, &mut ifr) }
            .map_err(|errno| KernelError::errno(op, errno))
    }

    /// One vhid; `None` when the interface has no such vhid (ENOENT, also what an interface
    /// without any CARP answers).
    pub fn get(&self, ifname: &str, vhid: Vhid) -> Result<Option<KernelGroup>, KernelError> {
        let op = format!("GET carp {vhid}@{ifname} (SIOCGVH)");
        let mut carpr = CarpReq::get(vhid);
        match self.call(&op, SIOCGVH, ifname, &mut carpr) {
            Ok(()) => decode_carpreq(ifname, vhid, &carpr, is_root())
                .map(Some)
                .map_err(|detail| KernelError::new(op, detail)),
            Err(e) if e.is_errno(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every vhid of `ifname`, sorted.
    ///
    /// Asks vhid 1, 2, ... 255 one at a time (ENOENT = absent) rather than trusting the
    /// addresses of the interface: a vhid exists from its SET until its last address is
    /// removed, and one that has no address yet (just created, or its attach failed) sits in
    /// INIT but is real, keeps its parameters and key, and must be seen so that it is neither
    /// created twice nor reported missing. Looping is the only complete answer the ioctl
    /// gives without vhid 0 ("list all", broken on 14+); 255 small ioctls cost well under a
    /// millisecond.
    pub fn list(&self, ifname: &str) -> Result<Vec<KernelGroup>, KernelError> {
        let mut out = Vec::new();
        for vhid in (1..=crate::carp::MAX_VHID).filter_map(Vhid::new) {
            if let Some(g) = self.get(ifname, vhid)? {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// A raw SET (see [`SetRequest`]); refuses unicast peers.
    pub fn set(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError> {
        let op = format!("SET carp {}@{ifname} (SIOCSVH)", req.vhid);
        let mut carpr = set_carpreq(&op, req)?;
        self.call(&op, SIOCSVH, ifname, &mut carpr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_sys_sockio() {
        assert_eq!(iowr(b'i', 245, 32), 0xc020_69f5);
        assert_eq!(iow(b'i', 25, 32), 0x8020_6919);
    }

    #[test]
    fn ifname_buf_pads_and_refuses() {
        let b = ifname_buf("op", "vmx1").unwrap();
        assert_eq!(
            b[..5],
            [
                b'v' as c_char,
                b'm' as c_char,
                b'x' as c_char,
                b'1' as c_char,
                0
            ]
        );
        assert!(ifname_buf("op", "").is_err());
        assert!(ifname_buf("op", "a234567890123456").is_err());
        assert!(ifname_buf("op", "a\0b").is_err());
        assert!(ifname_buf("op", "a23456789012345").is_ok());
    }
}
