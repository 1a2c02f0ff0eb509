//! The carpreq ioctls (`SIOCSVH`/`SIOCGVH`): CARP parameters on FreeBSD 13.x, where the
//! generic netlink family "carp" does not exist yet. Also the small ioctl plumbing (a datagram
//! socket, an interface name buffer, the `_IOC` encoding) that `ifaddr` shares.
//!
//! What lives here: the 40-byte `struct carpreq` with its layout pinned by compile-time
//! assertions, the pure conversions between it and carpd's types ([`set_carpreq`],
//! [`decode_carpreq`]), and [`CarpIoctl`], which issues the ioctls on an AF_INET socket.
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
use zeroize::Zeroize;

use crate::carp::{CarpKey, CarpState, IFNAMSIZ, KEY_LEN, KeyView, Vhid};

use super::{KernelError, KernelGroup, SetRequest, unicast_unsupported};

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

/// `struct carpreq` (netinet/ip_carp.h), the userland view: 40 bytes, all `int` but the key.
///
/// No `Debug`, no `Clone`: it can hold a key, which is zeroized on drop.
#[repr(C)]
pub struct CarpReq {
    /// In: capacity of the array (>= 1). Out: number of entries returned.
    pub carpr_count: c_int,
    /// 1..=255; 0 would mean "all" on GET, which carpd never sends.
    pub carpr_vhid: c_int,
    /// 0 INIT, 1 BACKUP, 2 MASTER.
    pub carpr_state: c_int,
    pub carpr_advskew: c_int,
    pub carpr_advbase: c_int,
    /// Raw password bytes, NUL-padded; all zero on GET for a caller without
    /// PRIV_NETINET_CARP, and an all-zero (first byte NUL) key on SET keeps the current one.
    pub carpr_key: [u8; KEY_LEN],
}

const _: () = assert!(size_of::<CarpReq>() == 40);
const _: () = assert!(offset_of!(CarpReq, carpr_count) == 0);
const _: () = assert!(offset_of!(CarpReq, carpr_vhid) == 4);
const _: () = assert!(offset_of!(CarpReq, carpr_state) == 8);
const _: () = assert!(offset_of!(CarpReq, carpr_advskew) == 12);
const _: () = assert!(offset_of!(CarpReq, carpr_advbase) == 16);
const _: () = assert!(offset_of!(CarpReq, carpr_key) == 20);

impl CarpReq {
    /// A GET request for exactly one vhid.
    pub fn get(vhid: Vhid) -> CarpReq {
        CarpReq {
            carpr_count: 1,
            carpr_vhid: vhid.get() as c_int,
            carpr_state: 0,
            carpr_advskew: 0,
            carpr_advbase: 0,
            carpr_key: [0; KEY_LEN],
        }
    }
}

impl Drop for CarpReq {
    fn drop(&mut self) {
        self.carpr_key.zeroize();
    }
}

/// The `carpr_state` to send for `state`. The kernel acts on it only when the vhid is not in
/// INIT and the value differs from the current state, and then only for BACKUP (force backup)
/// and MASTER (force takeover); INIT (0) is therefore "no change", which is what `None`
/// needs.
fn state_to_carpr(state: Option<CarpState>) -> c_int {
    match state {
        None | Some(CarpState::Init) => 0,
        Some(s) => s.to_kernel() as c_int,
    }
}

/// Builds the `SIOCSVH` argument for `req` (raw SET semantics, see [`SetRequest`]).
///
/// Refuses what the ioctl cannot express instead of doing something else:
/// - a unicast `peer`/`peer6` (only `None`, the unspecified address or the multicast group
///   are accepted, and all three mean multicast here);
/// - advbase/advskew that do not fit a C int;
/// - a non-empty key whose first byte is NUL, which the kernel would read as "keep".
pub fn set_carpreq(op: &str, req: &SetRequest) -> Result<CarpReq, KernelError> {
    let unicast4 = req
        .peer
        .is_some_and(|p| p != crate::carp::MULTICAST_V4 && !p.is_unspecified());
    let unicast6 = req
        .peer6
        .is_some_and(|p| p != crate::carp::MULTICAST_V6 && !p.is_unspecified());
    if unicast4 || unicast6 {
        return Err(unicast_unsupported(op.to_string()));
    }
    let int = |what: &str, v: u32| {
        c_int::try_from(v).map_err(|_| {
            KernelError::errno(op, libc::EINVAL).detail(format!("{what} {v} does not fit a C int"))
        })
    };
    let mut out = CarpReq::get(req.vhid);
    out.carpr_state = state_to_carpr(req.state);
    out.carpr_advskew = int("advskew", req.advskew)?;
    out.carpr_advbase = int("advbase", req.advbase)?;
    if let Some(key) = req.key.as_ref().filter(|k| !k.is_empty()) {
        let bytes = key.expose();
        if bytes[0] == 0 {
            return Err(KernelError::new(
                op,
                "the CARP key starts with a NUL byte: the kernel would read it as empty and keep the old key",
            )
            .hint("use a password that does not start with a NUL byte"));
        }
        // CarpKey guarantees at most KEY_LEN bytes; the rest stays NUL-padded.
        out.carpr_key[..bytes.len()].copy_from_slice(bytes);
    }
    Ok(out)
}

/// What the key bytes of a GET mean. The kernel copies the key only to a caller with
/// PRIV_NETINET_CARP (root) and zeroes it for anyone else, so without root an all-zero key
/// says nothing. Trailing NULs are padding: the kernel keys HMAC with all 20 bytes, so "ab"
/// and "ab\0" are the same key.
pub fn key_view(raw: &[u8; KEY_LEN], root: bool) -> KeyView {
    if !root {
        return KeyView::Hidden;
    }
    let len = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if len == 0 {
        return KeyView::Unset;
    }
    match CarpKey::new(raw[..len].to_vec()) {
        Ok(k) => KeyView::Known(k),
        // Unreachable (len <= KEY_LEN); a key that cannot be represented is not shown.
        Err(_) => KeyView::Hidden,
    }
}

/// Turns the answer of a `SIOCGVH` for `asked` into a [`KernelGroup`] without addresses
/// (those come from `ifaddr`). The 13.x kernel has no unicast peers: both are multicast.
pub fn decode_carpreq(
    ifname: &str,
    asked: Vhid,
    r: &CarpReq,
    root: bool,
) -> Result<KernelGroup, String> {
    if r.carpr_count != 1 {
        return Err(format!(
            "SIOCGVH for vhid {asked} returned {} entries, expected 1",
            r.carpr_count
        ));
    }
    let vhid = u32::try_from(r.carpr_vhid)
        .ok()
        .and_then(Vhid::new)
        .filter(|v| *v == asked)
        .ok_or_else(|| format!("SIOCGVH for vhid {asked} answered vhid {}", r.carpr_vhid))?;
    let state = u32::try_from(r.carpr_state)
        .ok()
        .and_then(CarpState::from_kernel)
        .ok_or_else(|| format!("vhid {asked}: unknown CARP state {}", r.carpr_state))?;
    let advbase = u32::try_from(r.carpr_advbase)
        .map_err(|_| format!("vhid {asked}: negative advbase {}", r.carpr_advbase))?;
    let advskew = u32::try_from(r.carpr_advskew)
        .map_err(|_| format!("vhid {asked}: negative advskew {}", r.carpr_advskew))?;
    Ok(KernelGroup {
        ifname: ifname.to_string(),
        vhid,
        state,
        advbase,
        advskew,
        key: key_view(&r.carpr_key, root),
        peer: None,
        peer6: None,
        addresses: Vec::new(),
    })
}

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
    use crate::carp::{MULTICAST_V4, MULTICAST_V6};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn vhid(v: u32) -> Vhid {
        Vhid::new(v).unwrap()
    }

    fn req() -> SetRequest {
        SetRequest {
            vhid: vhid(2),
            advbase: 1,
            advskew: 100,
            key: None,
            peer: None,
            peer6: None,
            state: None,
        }
    }

    #[test]
    fn ioctl_numbers_match_sys_sockio() {
        assert_eq!(iowr(b'i', 245, 32), 0xc020_69f5);
        assert_eq!(iow(b'i', 25, 32), 0x8020_6919);
    }

    #[test]
    fn set_encodes_every_field() {
        let mut r = req();
        r.key = Some(CarpKey::new(b"hunter2".to_vec()).unwrap());
        r.state = Some(CarpState::Master);
        let c = set_carpreq("op", &r).unwrap();
        assert_eq!(
            (
                c.carpr_count,
                c.carpr_vhid,
                c.carpr_state,
                c.carpr_advskew,
                c.carpr_advbase
            ),
            (1, 2, 2, 100, 1)
        );
        assert_eq!(&c.carpr_key[..7], b"hunter2");
        assert!(c.carpr_key[7..].iter().all(|&b| b == 0));
    }

    #[test]
    fn set_keeps_key_and_state_when_absent() {
        let c = set_carpreq("op", &req()).unwrap();
        assert_eq!(c.carpr_key, [0; KEY_LEN]);
        assert_eq!(c.carpr_state, 0);
        let mut r = req();
        r.key = Some(CarpKey::new(Vec::new()).unwrap());
        r.state = Some(CarpState::Init);
        let c = set_carpreq("op", &r).unwrap();
        assert_eq!((c.carpr_key, c.carpr_state), ([0; KEY_LEN], 0));
    }

    #[test]
    fn set_refuses_unicast_but_accepts_multicast_and_keep() {
        let mut r = req();
        r.peer = Some(MULTICAST_V4);
        r.peer6 = Some(MULTICAST_V6);
        assert!(set_carpreq("op", &r).is_ok());
        r.peer = Some(Ipv4Addr::UNSPECIFIED);
        r.peer6 = Some(Ipv6Addr::UNSPECIFIED);
        assert!(set_carpreq("op", &r).is_ok());
        r.peer = Some(Ipv4Addr::new(178, 32, 70, 110));
        let e = set_carpreq("SET carp 2@vmx1 (SIOCSVH)", &r).err().unwrap();
        assert!(e.to_string().contains("FreeBSD 14"), "{e}");
        let mut r = req();
        r.peer6 = Some("2001:db8::1".parse().unwrap());
        assert!(set_carpreq("op", &r).is_err());
    }

    #[test]
    fn set_refuses_what_the_kernel_would_misread() {
        let mut r = req();
        r.key = Some(CarpKey::new(b"\0abc".to_vec()).unwrap());
        let e = set_carpreq("op", &r).err().unwrap();
        assert!(e.detail.contains("NUL"), "{e}");
        let mut r = req();
        r.advskew = u32::MAX;
        assert!(set_carpreq("op", &r).err().unwrap().is_errno(libc::EINVAL));
    }

    fn answer(vhid: c_int, state: c_int, key: &[u8]) -> CarpReq {
        let mut c = CarpReq::get(Vhid::new(vhid as u32).unwrap_or(Vhid::new(1).unwrap()));
        c.carpr_vhid = vhid;
        c.carpr_state = state;
        c.carpr_advbase = 3;
        c.carpr_advskew = 40;
        c.carpr_key[..key.len()].copy_from_slice(key);
        c
    }

    #[test]
    fn decode_reads_fields_and_key_as_root() {
        let g = decode_carpreq("vmx1", vhid(2), &answer(2, 2, b"pw"), true).unwrap();
        assert_eq!(
            (g.ifname.as_str(), g.vhid, g.state),
            ("vmx1", vhid(2), CarpState::Master)
        );
        assert_eq!((g.advbase, g.advskew, g.peer, g.peer6), (3, 40, None, None));
        assert_eq!(g.key, KeyView::Known(CarpKey::new(b"pw".to_vec()).unwrap()));
        assert!(g.addresses.is_empty());
        let g = decode_carpreq("vmx1", vhid(2), &answer(2, 1, b""), true).unwrap();
        assert_eq!((g.state, g.key), (CarpState::Backup, KeyView::Unset));
        let full = [b'k'; KEY_LEN];
        let g = decode_carpreq("vmx1", vhid(2), &answer(2, 0, &full), true).unwrap();
        assert_eq!(g.key, KeyView::Known(CarpKey::new(full.to_vec()).unwrap()));
    }

    #[test]
    fn decode_hides_key_when_not_root() {
        for key in [&b""[..], b"pw"] {
            let g = decode_carpreq("vmx1", vhid(2), &answer(2, 1, key), false).unwrap();
            assert_eq!(g.key, KeyView::Hidden);
        }
    }

    #[test]
    fn decode_rejects_nonsense() {
        assert!(decode_carpreq("vmx1", vhid(2), &answer(3, 1, b""), true).is_err());
        assert!(decode_carpreq("vmx1", vhid(2), &answer(2, 7, b""), true).is_err());
        let mut c = answer(2, 1, b"");
        c.carpr_advskew = -1;
        assert!(decode_carpreq("vmx1", vhid(2), &c, true).is_err());
        let mut c = answer(2, 1, b"");
        c.carpr_count = 0;
        assert!(decode_carpreq("vmx1", vhid(2), &c, true).is_err());
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
