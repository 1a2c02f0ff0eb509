//! `net.inet.carp.*` through sysctlbyname(3): the integer knobs, the demotion counter and the
//! statistics block.
//!
//! What lives here: typed reads and writes of the knobs carpd knows ([`Sysctl`]), each a C
//! `int` in the kernel; [`demotion_add`], the only way to touch `net.inet.carp.demotion`,
//! whose writes ADD; [`stats`], the 128-byte `struct carpstats`; [`carp_loaded`], the
//! probe `freebsd::open` uses to tell "no netlink" from "no carp at all"; and [`boot_id`],
//! which tells the demotion ledger whether the kernel rebooted (and so reset demotion).
//!
//! What it must not do: write demotion as if it were a value (that would add it), or write
//! `net.inet.carp.stats` (any write zeroes the counters). Errors say which sysctl, and turn
//! ENOENT into "carp.ko is not loaded" and EPERM into "run as root".

use std::ffi::{CStr, CString, c_int, c_void};
use std::mem::size_of;

use crate::carp::{CarpStats, Sysctl};

use super::ioctl::last_errno;
use super::{BootId, KernelError, sysctl_error};

/// The sysctl that exists exactly when CARP is in the kernel (module or `device carp`).
const CARP_PROBE: &str = "net.inet.carp.allow";
/// The statistics block; read-only for carpd.
const CARP_STATS: &str = "net.inet.carp.stats";

fn cname(name: &str) -> CString {
    CString::new(name).expect("sysctl names are constants without NUL")
}

/// sysctlbyname(3) read into `buf`; the number of bytes the kernel wrote.
fn read_raw(name: &CStr, buf: &mut [u8]) -> Result<usize, i32> {
    let mut len = buf.len();
    // SAFETY: `name` is NUL-terminated; `buf` is valid for `len` writable bytes and `len`
    // lives across the call; no new value is passed (NULL, 0).
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast::<c_void>(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(len) }
}

/// sysctlbyname(3) write of `value`, without reading the old value.
fn write_raw(name: &CStr, value: &[u8]) -> Result<(), i32> {
    // SAFETY: `name` is NUL-terminated; `value` is valid for `value.len()` readable bytes;
    // no old value is requested (NULL, NULL).
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            value.as_ptr().cast::<c_void>(),
            value.len(),
        )
    };
    if rc < 0 { Err(last_errno()) } else { Ok(()) }
}

/// Reads a C `int` sysctl by name.
fn read_int(op: String, mib: &str) -> Result<i64, KernelError> {
    let mut buf = [0u8; size_of::<c_int>()];
    let n = read_raw(&cname(mib), &mut buf).map_err(|e| sysctl_error(op.clone(), mib, e))?;
    if n != buf.len() {
        return Err(KernelError::new(
            op,
            format!(
                "{mib} returned {n} bytes, expected a {}-byte C int",
                buf.len()
            ),
        ));
    }
    Ok(i64::from(c_int::from_ne_bytes(buf)))
}

/// Writes a C `int` sysctl by name.
fn write_int(op: String, mib: &str, value: i64) -> Result<(), KernelError> {
    let v = c_int::try_from(value).map_err(|_| {
        KernelError::errno(op.clone(), libc::EINVAL)
            .detail(format!("{value} does not fit the C int {mib}"))
    })?;
    write_raw(&cname(mib), &v.to_ne_bytes()).map_err(|e| sysctl_error(op, mib, e))
}

/// Reads a `net.inet.carp.*` integer (for demotion: the current global level).
pub fn get(knob: Sysctl) -> Result<i64, KernelError> {
    read_int(format!("read {}", knob.mib()), knob.mib())
}

/// Writes a `net.inet.carp.*` integer. Refuses [`Sysctl::Demotion`]: a write to it adds the
/// value instead of setting it; use [`demotion_add`].
pub fn set(knob: Sysctl, value: i64) -> Result<(), KernelError> {
    let op = format!("write {}={value}", knob.mib());
    if knob == Sysctl::Demotion {
        return Err(KernelError::demotion_not_settable(op));
    }
    write_int(op, knob.mib(), value)
}

/// Adds `delta` (negative to undo) to the global demotion counter.
///
/// The kernel's handler for `net.inet.carp.demotion` does not store the written value: it
/// ADDS it to the current level (`carp_demote_adj`), logs "demoted by N" and re-sends every
/// advertisement. So this writes the delta itself, never a target level, and writes nothing
/// for a zero delta (which would only log and re-advertise). The counter is shared with the
/// kernel (interface down, send errors) and pfsync: callers track what they added.
pub fn demotion_add(delta: i64) -> Result<(), KernelError> {
    if delta == 0 {
        return Ok(());
    }
    let mib = Sysctl::Demotion.mib();
    write_int(format!("add {delta} to {mib}"), mib, delta)
}

/// `net.inet.carp.stats`, decoded.
pub fn stats() -> Result<CarpStats, KernelError> {
    let op = format!("read {CARP_STATS}");
    let mut buf = [0u8; CarpStats::SIZE];
    let n = read_raw(&cname(CARP_STATS), &mut buf).map_err(|e| {
        let err = sysctl_error(op.clone(), CARP_STATS, e);
        if e == libc::ENOMEM {
            err.detail(format!(
                "{CARP_STATS} is larger than the {} bytes of the struct carpstats this carpd knows",
                CarpStats::SIZE
            ))
        } else {
            err
        }
    })?;
    CarpStats::decode(&buf[..n]).map_err(|detail| KernelError::new(op, detail))
}

/// 16 random bytes the kernel draws once per boot (FreeBSD 13+).
const BOOT_ID: &str = "kern.boot_id";
/// `struct timeval` of the boot; older kernels' only boot identity.
const BOOTTIME: &str = "kern.boottime";

/// The identity of this boot: `kern.boot_id` as hex, or `kern.boottime` when it is missing
/// or not yet usable (see [`super::bootid`] for the decision and its consequences).
pub fn boot_id() -> Result<BootId, KernelError> {
    let mut id = [0u8; 16];
    let answer = read_raw(&cname(BOOT_ID), &mut id).map(|n| id[..n].to_vec());
    super::bootid::choose(answer, || {
        let op = format!("read {BOOTTIME}");
        let mut buf = [0u8; size_of::<libc::timeval>()];
        let n =
            read_raw(&cname(BOOTTIME), &mut buf).map_err(|e| KernelError::errno(op.clone(), e))?;
        if n != buf.len() {
            return Err(KernelError::new(
                op,
                format!(
                    "returned {n} bytes, expected a {}-byte struct timeval",
                    buf.len()
                ),
            ));
        }
        // SAFETY: `buf` holds exactly size_of::<timeval>() bytes written by the kernel, and
        // every bit pattern is a valid timeval (two integers); read_unaligned needs no
        // alignment.
        let tv = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<libc::timeval>()) };
        // time_t and suseconds_t are i64 on 64-bit FreeBSD, narrower elsewhere.
        #[allow(clippy::unnecessary_cast)]
        let t = (tv.tv_sec as i64, tv.tv_usec as i64);
        Ok(t)
    })
}

/// Whether CARP is in the kernel at all: `net.inet.carp.allow` exists (as a module or
/// compiled in). Any error other than ENOENT (which should not happen for a read of an int)
/// counts as present, so that the real operation reports it.
pub fn carp_loaded() -> bool {
    let mut buf = [0u8; size_of::<c_int>()];
    !matches!(read_raw(&cname(CARP_PROBE), &mut buf), Err(libc::ENOENT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demotion_has_no_absolute_setter() {
        let e = set(Sysctl::Demotion, 10).err().unwrap();
        assert!(e.to_string().contains("demotion_add"), "{e}");
    }

    #[test]
    fn zero_delta_writes_nothing() {
        // Succeeds without root and without carp: no system call is made.
        demotion_add(0).unwrap();
    }

    #[test]
    fn out_of_range_values_are_refused_before_the_kernel() {
        let e = set(Sysctl::Preempt, i64::from(i32::MAX) + 1).err().unwrap();
        assert!(
            e.is_errno(libc::EINVAL) && e.detail.contains("C int"),
            "{e}"
        );
    }
}
