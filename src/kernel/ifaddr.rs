//! Interface addresses and their vhids: listing through getifaddrs(3), adding an address with a
//! vhid (`SIOCAIFADDR`, `SIOCAIFADDR_IN6`) and removing one (`SIOCDIFADDR`,
//! `SIOCDIFADDR_IN6`). Used by every FreeBSD backend: netlink CARP and the 13.x ioctls alike.
//!
//! What lives here: the request structs the libc crate lacks (`in6_aliasreq`, `in6_ifreq`)
//! with their layout and ioctl numbers pinned by compile-time assertions, the pure byte-level
//! parsing of the sockaddrs getifaddrs returns (tested below), and thin wrappers that issue
//! the calls. A vhid of an address comes from `ifa_data`, which FreeBSD points at a
//! `struct if_data` whose `ifi_vhid` is the address's vhid (how `ifconfig` prints "vhid N").
//!
//! What it must not do: change anything but the one address asked for (no flush, no
//! "delete any": an IPv4 SIOCDIFADDR whose sockaddr is malformed deletes the FIRST address of
//! the interface, so every sockaddr here is built complete), or re-add an address that is
//! already present (SIOCAIFADDR deletes and re-creates it: callers diff first).

use std::ffi::{CStr, CString, c_int};
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libc::{c_char, c_ulong, sockaddr_in6};

use crate::carp::{IFNAMSIZ, Vhid};

use super::KernelError;
use super::ioctl::{dgram_socket, ifname_buf, ioctl_with, iow};

// ---- layouts and ioctl numbers --------------------------------------------------------------

/// `SIOCAIFADDR = _IOW('i', 43, struct ifaliasreq)`: add an IPv4 address, with `ifra_vhid`.
pub const SIOCAIFADDR: c_ulong = 0x8044_692b;
/// `SIOCDIFADDR = _IOW('i', 25, struct ifreq)`: remove an IPv4 address.
pub const SIOCDIFADDR: c_ulong = 0x8020_6919;
/// `SIOCAIFADDR_IN6 = _IOW('i', 27, struct in6_aliasreq)`.
pub const SIOCAIFADDR_IN6: c_ulong = iow(b'i', 27, size_of::<In6AliasReq>());
/// `SIOCDIFADDR_IN6 = _IOW('i', 25, struct in6_ifreq)` (288 bytes: 0x81206919).
pub const SIOCDIFADDR_IN6: c_ulong = iow(b'i', 25, size_of::<In6Ifreq>());

/// `ND6_INFINITE_LIFETIME`: a VIP does not expire.
const ND6_INFINITE_LIFETIME: u32 = 0xffff_ffff;

// libc's `ifaliasreq` is FreeBSD's `in_aliasreq` (sockaddr and sockaddr_in are both 16
// bytes): 68 bytes, the vhid last.
const _: () = assert!(SIOCAIFADDR == iow(b'i', 43, size_of::<libc::ifaliasreq>()));
const _: () = assert!(SIOCDIFADDR == iow(b'i', 25, size_of::<libc::ifreq>()));
const _: () = assert!(size_of::<libc::ifaliasreq>() == 68);
const _: () = assert!(offset_of!(libc::ifaliasreq, ifra_name) == 0);
const _: () = assert!(offset_of!(libc::ifaliasreq, ifra_addr) == 16);
const _: () = assert!(offset_of!(libc::ifaliasreq, ifra_broadaddr) == 32);
const _: () = assert!(offset_of!(libc::ifaliasreq, ifra_mask) == 48);
const _: () = assert!(offset_of!(libc::ifaliasreq, ifra_vhid) == 64);
const _: () = assert!(size_of::<libc::sockaddr>() == 16);
const _: () = assert!(size_of::<libc::sockaddr_in>() == 16);
const _: () = assert!(offset_of!(libc::sockaddr_in, sin_addr) == 4);
const _: () = assert!(size_of::<sockaddr_in6>() == 28);
const _: () = assert!(offset_of!(sockaddr_in6, sin6_addr) == 8);
// `ifa_data` of an address entry is a `struct if_data`; the vhid is its sixth byte.
const _: () = assert!(offset_of!(libc::if_data, ifi_vhid) == 5);

/// `struct in6_addrlifetime` (netinet6/in6_var.h).
#[repr(C)]
struct In6AddrLifetime {
    ia6t_expire: libc::time_t,
    ia6t_preferred: libc::time_t,
    ia6t_vltime: u32,
    ia6t_pltime: u32,
}

/// `struct in6_aliasreq` (netinet6/in6_var.h); not in the libc crate.
#[repr(C)]
struct In6AliasReq {
    ifra_name: [c_char; IFNAMSIZ],
    ifra_addr: sockaddr_in6,
    ifra_dstaddr: sockaddr_in6,
    ifra_prefixmask: sockaddr_in6,
    ifra_flags: c_int,
    ifra_lifetime: In6AddrLifetime,
    ifra_vhid: c_int,
}

const _: () = assert!(offset_of!(In6AliasReq, ifra_addr) == 16);
const _: () = assert!(offset_of!(In6AliasReq, ifra_dstaddr) == 44);
const _: () = assert!(offset_of!(In6AliasReq, ifra_prefixmask) == 72);
const _: () = assert!(offset_of!(In6AliasReq, ifra_flags) == 100);
// With a 64-bit time_t aligned to 8 (every 64-bit FreeBSD): 136 bytes, the vhid at 128.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(size_of::<In6AddrLifetime>() == 24);
    assert!(offset_of!(In6AliasReq, ifra_lifetime) == 104);
    assert!(offset_of!(In6AliasReq, ifra_vhid) == 128);
    assert!(size_of::<In6AliasReq>() == 136);
    assert!(SIOCAIFADDR_IN6 == 0x8088_691b);
};

/// The union of `struct in6_ifreq`; its largest member is `struct icmp6_ifstat`, 34 x u64.
#[repr(C)]
union In6IfreqU {
    ifru_addr: sockaddr_in6,
    _icmp6_ifstat: [u64; 34],
}

/// `struct in6_ifreq` (netinet6/in6_var.h): 288 bytes, which the kernel copies in whole.
#[repr(C)]
struct In6Ifreq {
    ifr_name: [c_char; IFNAMSIZ],
    ifr_ifru: In6IfreqU,
}

const _: () = assert!(size_of::<In6Ifreq>() == 288);
const _: () = assert!(offset_of!(In6Ifreq, ifr_ifru) == 16);
const _: () = assert!(SIOCDIFADDR_IN6 == 0x8120_6919);

// ---- pure conversions -------------------------------------------------------------------

/// The address in a sockaddr given as its bytes (`sa_len` of them). `None` for a family other
/// than AF_INET/AF_INET6 or a sockaddr too short to hold the address.
///
/// A link-local IPv6 address may carry the KAME embedded scope (the interface index in bytes
/// 2..4) when the kernel does not de-embed it; it is cleared so the address reads as written.
pub fn sockaddr_ip(sa: &[u8]) -> Option<IpAddr> {
    let family = c_int::from(*sa.get(1)?);
    if family == libc::AF_INET {
        let b: [u8; 4] = sa.get(4..8)?.try_into().ok()?;
        Some(IpAddr::V4(Ipv4Addr::from(b)))
    } else if family == libc::AF_INET6 {
        let mut b: [u8; 16] = sa.get(8..24)?.try_into().ok()?;
        if b[0] == 0xfe && b[1] & 0xc0 == 0x80 {
            b[2] = 0;
            b[3] = 0;
        }
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        None
    }
}

/// The prefix length of a netmask sockaddr (its `sa_len` bytes) for an address of `family`.
///
/// Routing-socket netmasks may be trimmed: `sa_len` stops after the last non-zero byte and the
/// family can be 0, so the family comes from the address and missing bytes are zero. No
/// netmask at all means a host address.
pub fn netmask_prefix(family: c_int, mask: Option<&[u8]>) -> Result<u8, String> {
    let (offset, len, host) = if family == libc::AF_INET {
        (4, 4, 32)
    } else {
        (8, 16, 128)
    };
    let Some(mask) = mask else { return Ok(host) };
    let mut b = [0u8; 16];
    for (i, dst) in b[..len].iter_mut().enumerate() {
        *dst = mask.get(offset + i).copied().unwrap_or(0);
    }
    let prefix = if family == libc::AF_INET {
        let m = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        Ipv4Net::with_netmask(Ipv4Addr::UNSPECIFIED, m)
            .map(|n| n.prefix_len())
            .map_err(|_| format!("netmask {m} is not contiguous"))?
    } else {
        let m = Ipv6Addr::from(b);
        Ipv6Net::with_netmask(Ipv6Addr::UNSPECIFIED, m)
            .map(|n| n.prefix_len())
            .map_err(|_| format!("netmask {m} is not contiguous"))?
    };
    Ok(prefix)
}

/// One getifaddrs entry, given its sockaddrs as bytes and the `ifi_vhid` of its `if_data`
/// (0 = none). `None` for entries that are not IPv4/IPv6 addresses (AF_LINK, ...).
pub fn address_entry(
    addr: &[u8],
    mask: Option<&[u8]>,
    vhid: u8,
) -> Option<Result<(IpNet, Option<Vhid>), String>> {
    let ip = sockaddr_ip(addr)?;
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let vhid = Vhid::new(u32::from(vhid));
    Some(netmask_prefix(family, mask).and_then(|p| {
        IpNet::new(ip, p)
            .map(|net| (net, vhid))
            .map_err(|_| format!("{ip}: prefix length {p} out of range"))
    }))
}

/// A complete `sockaddr_in` in libc's generic `sockaddr` (same 16 bytes), as `in_aliasreq`
/// and `ifreq` carry it: `sin_len` 16, AF_INET, port 0, the address in network order.
fn sockaddr_v4(ip: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as c_char; 14];
    // sa_data starts at sin_port (2 bytes); sin_addr follows.
    for (dst, o) in sa_data[2..6].iter_mut().zip(ip.octets()) {
        *dst = o as c_char;
    }
    libc::sockaddr {
        sa_len: size_of::<libc::sockaddr_in>() as u8,
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data,
    }
}

/// A complete `sockaddr_in6` (`sin6_len` 28, AF_INET6).
fn sockaddr_v6(ip: Ipv6Addr, scope_id: u32) -> sockaddr_in6 {
    sockaddr_in6 {
        sin6_len: size_of::<sockaddr_in6>() as u8,
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr {
            s6_addr: ip.octets(),
        },
        sin6_scope_id: scope_id,
    }
}

fn empty_sockaddr_v6() -> sockaddr_in6 {
    sockaddr_in6 {
        sin6_len: 0,
        sin6_family: 0,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
        sin6_scope_id: 0,
    }
}

fn is_link_local_v6(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// The `SIOCAIFADDR` argument: address, mask, no broadcast (the kernel derives it), vhid.
fn in_aliasreq(name: [c_char; IFNAMSIZ], net: Ipv4Net, vhid: Vhid) -> libc::ifaliasreq {
    libc::ifaliasreq {
        ifra_name: name,
        ifra_addr: sockaddr_v4(net.addr()),
        ifra_broadaddr: libc::sockaddr {
            sa_len: 0,
            sa_family: 0,
            sa_data: [0; 14],
        },
        ifra_mask: sockaddr_v4(net.netmask()),
        ifra_vhid: vhid.get() as c_int,
    }
}

/// The `SIOCAIFADDR_IN6` argument: address, prefix mask, infinite lifetimes, vhid.
fn in6_aliasreq(name: [c_char; IFNAMSIZ], net: Ipv6Net, vhid: Vhid, scope_id: u32) -> In6AliasReq {
    In6AliasReq {
        ifra_name: name,
        ifra_addr: sockaddr_v6(net.addr(), scope_id),
        ifra_dstaddr: empty_sockaddr_v6(),
        ifra_prefixmask: sockaddr_v6(net.netmask(), 0),
        ifra_flags: 0,
        ifra_lifetime: In6AddrLifetime {
            ia6t_expire: 0,
            ia6t_preferred: 0,
            ia6t_vltime: ND6_INFINITE_LIFETIME,
            ia6t_pltime: ND6_INFINITE_LIFETIME,
        },
        ifra_vhid: vhid.get() as c_int,
    }
}

// ---- reading ----------------------------------------------------------------------------

/// The list getifaddrs(3) returns, freed on drop.
struct IfAddrs(*mut libc::ifaddrs);

impl IfAddrs {
    fn get() -> Result<IfAddrs, i32> {
        let mut head = std::ptr::null_mut();
        // SAFETY: getifaddrs writes one pointer to `head`, a valid local.
        if unsafe { libc::getifaddrs(&mut head) } < 0 {
            return Err(super::ioctl::last_errno());
        }
        Ok(IfAddrs(head))
    }

    /// The entries, in the kernel's order, borrowed from the list.
    fn iter(&self) -> impl Iterator<Item = &libc::ifaddrs> {
        // SAFETY: every `ifa_next` of the list is NULL or points at a valid entry that lives
        // until freeifaddrs, which only our Drop calls; the borrow of `self` bounds them.
        std::iter::successors(unsafe { self.0.as_ref() }, |e| unsafe {
            e.ifa_next.as_ref()
        })
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from getifaddrs and is freed exactly once.
            unsafe { libc::freeifaddrs(self.0) }
        }
    }
}

/// The bytes of a sockaddr from getifaddrs: `sa_len` of them (getifaddrs copies at least that
/// many). Empty for NULL.
///
/// # Safety
///
/// `sa` must be NULL or point at a sockaddr of a live getifaddrs list, and the returned slice
/// must not outlive that list.
unsafe fn sockaddr_bytes<'a>(sa: *const libc::sockaddr) -> &'a [u8] {
    if sa.is_null() {
        return &[];
    }
    // SAFETY: per the contract `sa` points at a sockaddr whose first byte is sa_len and which
    // is followed by at least sa_len valid bytes.
    unsafe {
        let len = usize::from(sa.cast::<u8>().read());
        std::slice::from_raw_parts(sa.cast::<u8>(), len)
    }
}

/// The IPv4 and IPv6 addresses of `ifname` with their vhids, in the kernel's order. An
/// interface without addresses (or that does not exist) gives an empty list: check existence
/// with [`if_index`].
pub fn addresses(ifname: &str) -> Result<Vec<(IpNet, Option<Vhid>)>, KernelError> {
    let op = format!("list the addresses of {ifname} (getifaddrs)");
    let list = IfAddrs::get()
        .map_err(|e| KernelError::errno(op.clone(), e).detail("getifaddrs failed"))?;
    let mut out = Vec::new();
    for e in list.iter() {
        if e.ifa_name.is_null() || e.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string of the live list.
        if unsafe { CStr::from_ptr(e.ifa_name) }.to_bytes() != ifname.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr/ifa_netmask are NULL or sockaddrs of the live list.
        let (addr, mask) = unsafe { (sockaddr_bytes(e.ifa_addr), sockaddr_bytes(e.ifa_netmask)) };
        let mask = (!e.ifa_netmask.is_null()).then_some(mask);
        let vhid = if e.ifa_data.is_null() {
            0
        } else {
            // SAFETY: for address entries FreeBSD's getifaddrs points ifa_data at a copy of
            // the address's `struct if_data`; ifi_vhid is one byte at a fixed offset (asserted
            // above), so the read is in bounds and needs no alignment.
            unsafe {
                e.ifa_data
                    .cast::<u8>()
                    .add(offset_of!(libc::if_data, ifi_vhid))
                    .read()
            }
        };
        match address_entry(addr, mask, vhid) {
            None => {}
            Some(Ok(entry)) => out.push(entry),
            Some(Err(detail)) => return Err(KernelError::new(op, detail)),
        }
    }
    Ok(out)
}

/// The interface index of `ifname`, `None` when there is no such interface.
pub fn if_index(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: `name` is NUL-terminated and lives across the call.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The names of all interfaces, by index (the kernel's order).
pub fn interface_names() -> Result<Vec<String>, KernelError> {
    // SAFETY: if_nameindex takes no arguments; the result is checked for NULL.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(KernelError::errno(
            "list interfaces (if_nameindex)",
            super::ioctl::last_errno(),
        )
        .detail("if_nameindex failed"));
    }
    let mut names = Vec::new();
    let mut p = head;
    loop {
        // SAFETY: `p` walks the array if_nameindex returned, which ends with an entry of
        // index 0 and NULL name; we stop there and never go past it.
        let e = unsafe { &*p };
        if e.if_index == 0 || e.if_name.is_null() {
            break;
        }
        // SAFETY: if_name is a NUL-terminated string of the live array.
        names.push(
            unsafe { CStr::from_ptr(e.if_name) }
                .to_string_lossy()
                .into_owned(),
        );
        // SAFETY: the terminating entry has not been reached, so the next one exists.
        p = unsafe { p.add(1) };
    }
    // SAFETY: `head` came from if_nameindex and is freed once; no borrow of it remains.
    unsafe { libc::if_freenameindex(head) };
    Ok(names)
}

// ---- changing -----------------------------------------------------------------------------

/// An error creating the socket for an address ioctl: not a CARP problem (EAFNOSUPPORT on an
/// AF_INET6 socket means a kernel without IPv6), so not mapped through carp's errno table.
fn socket_error(op: &str, family: &str, e: std::io::Error) -> KernelError {
    KernelError {
        op: op.to_string(),
        errno: e.raw_os_error(),
        detail: format!("socket({family}, SOCK_DGRAM) failed: {e}"),
        hint: None,
    }
}

/// Attaches `addr` to `ifname` with `vhid` (the vhid must exist: SET it first).
///
/// SIOCAIFADDR on an address that is already there removes and re-creates it: only call this
/// for an address that is absent.
pub fn add(ifname: &str, vhid: Vhid, addr: IpNet) -> Result<(), KernelError> {
    let (ioctl_name, family) = match addr {
        IpNet::V4(_) => ("SIOCAIFADDR", "AF_INET"),
        IpNet::V6(_) => ("SIOCAIFADDR_IN6", "AF_INET6"),
    };
    let op = format!("attach {addr} vhid {vhid} to {ifname} ({ioctl_name})");
    if addr.prefix_len() == 0 {
        return Err(KernelError::errno(op, libc::EINVAL).detail(format!(
            "{addr} has prefix length 0: a CARP address needs a real prefix"
        )));
    }
    let name = ifname_buf(&op, ifname)?;
    let result = match addr {
        IpNet::V4(net) => {
            let sock = dgram_socket(libc::AF_INET).map_err(|e| socket_error(&op, family, e))?;
            let mut req = in_aliasreq(name, net, vhid);
            // SAFETY: SIOCAIFADDR takes a `struct in_aliasreq` (= libc's ifaliasreq, 68 bytes
            // with the vhid last, asserted above); it holds no pointers.
            unsafe { ioctl_with(&sock, SIOCAIFADDR, &mut req) }
        }
        IpNet::V6(net) => {
            let sock = dgram_socket(libc::AF_INET6).map_err(|e| socket_error(&op, family, e))?;
            // A link-local address needs its zone: the interface it is on.
            let scope = if is_link_local_v6(net.addr()) {
                if_index(ifname).unwrap_or(0)
            } else {
                0
            };
            let mut req = in6_aliasreq(name, net, vhid, scope);
            // SAFETY: SIOCAIFADDR_IN6 takes a `struct in6_aliasreq` (layout asserted above,
            // the ioctl number computed from its size); it holds no pointers.
            unsafe { ioctl_with(&sock, SIOCAIFADDR_IN6, &mut req) }
        }
    };
    result.map_err(|errno| {
        let e = KernelError::errno(op, errno);
        match errno {
            libc::ENOENT => e
                .detail(format!("vhid {vhid} does not exist on {ifname}"))
                .hint("create the vhid (SET) before attaching addresses to it"),
            libc::EPERM | libc::EACCES => e.hint("adding an address needs root: run carpd as root"),
            _ => e,
        }
    })
}

/// Removes `addr` from `ifname` (matched by address; the prefix length is not compared).
/// Removing the last address of a vhid destroys the vhid.
pub fn remove(ifname: &str, addr: IpNet) -> Result<(), KernelError> {
    let (ioctl_name, family) = match addr {
        IpNet::V4(_) => ("SIOCDIFADDR", "AF_INET"),
        IpNet::V6(_) => ("SIOCDIFADDR_IN6", "AF_INET6"),
    };
    let op = format!("remove {addr} from {ifname} ({ioctl_name})");
    let name = ifname_buf(&op, ifname)?;
    let result = match addr {
        IpNet::V4(net) => {
            let sock = dgram_socket(libc::AF_INET).map_err(|e| socket_error(&op, family, e))?;
            let mut ifr = libc::ifreq {
                ifr_name: name,
                ifr_ifru: libc::__c_anonymous_ifr_ifru {
                    ifru_buffer: libc::ifreq_buffer {
                        length: 0,
                        buffer: std::ptr::null_mut(),
                    },
                },
            };
            // A complete sockaddr_in (sin_len 16, AF_INET): anything else makes the kernel
            // delete the interface's first address instead.
            ifr.ifr_ifru.ifru_addr = sockaddr_v4(net.addr());
            // SAFETY: SIOCDIFADDR takes a `struct ifreq` (32 bytes, asserted in ioctl.rs)
            // whose address member is set; it holds no pointers.
            unsafe { ioctl_with(&sock, SIOCDIFADDR, &mut ifr) }
        }
        IpNet::V6(net) => {
            let sock = dgram_socket(libc::AF_INET6).map_err(|e| socket_error(&op, family, e))?;
            let scope = if is_link_local_v6(net.addr()) {
                if_index(ifname).unwrap_or(0)
            } else {
                0
            };
            let mut ifr = In6Ifreq {
                ifr_name: name,
                ifr_ifru: In6IfreqU {
                    _icmp6_ifstat: [0; 34],
                },
            };
            ifr.ifr_ifru.ifru_addr = sockaddr_v6(net.addr(), scope);
            // SAFETY: SIOCDIFADDR_IN6 takes a `struct in6_ifreq` (288 bytes, asserted above,
            // all initialised) whose address member is set; it holds no pointers.
            unsafe { ioctl_with(&sock, SIOCDIFADDR_IN6, &mut ifr) }
        }
    };
    result.map_err(|errno| {
        let mut e = KernelError::errno(op, errno);
        match errno {
            libc::EADDRNOTAVAIL => {
                e.detail = format!("{} is not configured on {ifname}", addr.addr());
                e.hint = None;
            }
            libc::EPERM | libc::EACCES => {
                e.hint = Some("removing an address needs root: run carpd as root".into());
            }
            _ => {}
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a libc sockaddr as the kernel would see them.
    fn bytes_v4(sa: &libc::sockaddr) -> Vec<u8> {
        let mut b = vec![sa.sa_len, sa.sa_family];
        b.extend(sa.sa_data.iter().map(|&c| c as u8));
        b
    }

    fn bytes_v6(sa: &sockaddr_in6) -> Vec<u8> {
        let mut b = vec![sa.sin6_len, sa.sin6_family];
        b.extend_from_slice(&sa.sin6_port.to_ne_bytes());
        b.extend_from_slice(&sa.sin6_flowinfo.to_ne_bytes());
        b.extend_from_slice(&sa.sin6_addr.s6_addr);
        b.extend_from_slice(&sa.sin6_scope_id.to_ne_bytes());
        b
    }

    #[test]
    fn sockaddr_v4_is_complete_and_round_trips() {
        let ip = Ipv4Addr::new(51, 68, 252, 230);
        let sa = sockaddr_v4(ip);
        let b = bytes_v4(&sa);
        assert_eq!(&b[..8], &[16, libc::AF_INET as u8, 0, 0, 51, 68, 252, 230]);
        assert!(b[8..].iter().all(|&x| x == 0));
        assert_eq!(sockaddr_ip(&b), Some(IpAddr::V4(ip)));
    }

    #[test]
    fn sockaddr_v6_round_trips_and_clears_kame_scope() {
        let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let b = bytes_v6(&sockaddr_v6(ip, 0));
        assert_eq!((b.len(), b[0], b[1]), (28, 28, libc::AF_INET6 as u8));
        assert_eq!(sockaddr_ip(&b), Some(IpAddr::V6(ip)));
        let embedded: Ipv6Addr = "fe80:2::1".parse().unwrap();
        let b = bytes_v6(&sockaddr_v6(embedded, 2));
        assert_eq!(sockaddr_ip(&b), Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn sockaddr_ip_ignores_other_families_and_short_input() {
        assert_eq!(sockaddr_ip(&[]), None);
        assert_eq!(
            sockaddr_ip(&[20, libc::AF_LINK as u8, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(sockaddr_ip(&[7, libc::AF_INET as u8, 0, 0, 10, 0, 0]), None);
    }

    #[test]
    fn netmask_prefix_handles_full_trimmed_and_missing_masks() {
        let full = bytes_v4(&sockaddr_v4(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(netmask_prefix(libc::AF_INET, Some(&full)), Ok(24));
        // in_socktrim: length up to the last non-zero byte, family 0.
        assert_eq!(
            netmask_prefix(libc::AF_INET, Some(&[7, 0, 0, 0, 255, 255, 255])),
            Ok(24)
        );
        assert_eq!(netmask_prefix(libc::AF_INET, Some(&[])), Ok(0));
        assert_eq!(netmask_prefix(libc::AF_INET, None), Ok(32));
        let host = bytes_v4(&sockaddr_v4(Ipv4Addr::BROADCAST));
        assert_eq!(netmask_prefix(libc::AF_INET, Some(&host)), Ok(32));
        let m6 = bytes_v6(&sockaddr_v6("ffff:ffff:ffff:ffff::".parse().unwrap(), 0));
        assert_eq!(netmask_prefix(libc::AF_INET6, Some(&m6)), Ok(64));
        assert_eq!(netmask_prefix(libc::AF_INET6, None), Ok(128));
        let holes = bytes_v4(&sockaddr_v4(Ipv4Addr::new(255, 0, 255, 0)));
        assert!(
            netmask_prefix(libc::AF_INET, Some(&holes))
                .unwrap_err()
                .contains("contiguous")
        );
    }

    #[test]
    fn address_entry_reads_vhid() {
        let a = bytes_v4(&sockaddr_v4(Ipv4Addr::new(51, 68, 252, 230)));
        let m = bytes_v4(&sockaddr_v4(Ipv4Addr::BROADCAST));
        let (net, vhid) = address_entry(&a, Some(&m), 2).unwrap().unwrap();
        assert_eq!(net, "51.68.252.230/32".parse::<IpNet>().unwrap());
        assert_eq!(vhid, Vhid::new(2));
        let (_, vhid) = address_entry(&a, Some(&m), 0).unwrap().unwrap();
        assert_eq!(vhid, None);
        assert!(address_entry(&[20, libc::AF_LINK as u8, 0, 0], None, 0).is_none());
    }

    #[test]
    fn alias_requests_carry_address_mask_and_vhid() {
        let name = ifname_buf("op", "vmx1").unwrap();
        let v = Vhid::new(2).unwrap();
        let r = in_aliasreq(name, "51.68.252.230/32".parse().unwrap(), v);
        assert_eq!(r.ifra_vhid, 2);
        assert_eq!(
            sockaddr_ip(&bytes_v4(&r.ifra_addr)),
            Some("51.68.252.230".parse().unwrap())
        );
        assert_eq!(
            netmask_prefix(libc::AF_INET, Some(&bytes_v4(&r.ifra_mask))),
            Ok(32)
        );
        assert_eq!(r.ifra_broadaddr.sa_len, 0);

        let r6 = in6_aliasreq(name, "2001:db8::7/64".parse().unwrap(), v, 0);
        assert_eq!(r6.ifra_vhid, 2);
        assert_eq!(
            sockaddr_ip(&bytes_v6(&r6.ifra_addr)),
            Some("2001:db8::7".parse().unwrap())
        );
        assert_eq!(
            netmask_prefix(libc::AF_INET6, Some(&bytes_v6(&r6.ifra_prefixmask))),
            Ok(64)
        );
        assert_eq!(r6.ifra_prefixmask.sin6_len, 28);
        assert_eq!(
            (r6.ifra_dstaddr.sin6_len, r6.ifra_dstaddr.sin6_family),
            (0, 0)
        );
        assert_eq!(r6.ifra_lifetime.ia6t_vltime, ND6_INFINITE_LIFETIME);
        assert_eq!(r6.ifra_lifetime.ia6t_pltime, ND6_INFINITE_LIFETIME);
    }

    #[test]
    fn link_local_detection() {
        assert!(is_link_local_v6("fe80::1".parse().unwrap()));
        assert!(is_link_local_v6("febf::1".parse().unwrap()));
        assert!(!is_link_local_v6("fec0::1".parse().unwrap()));
        assert!(!is_link_local_v6("2001:db8::1".parse().unwrap()));
    }
}
