//! Which identity a FreeBSD boot gets ([`crate::kernel::BootId`]), decided from what the two
//! sysctls answered (pure: `sysctl::boot_id` reads them, this decides, so the fallback is
//! tested on any host).
//!
//! `kern.boot_id` (16 random bytes per boot) is preferred. It is unavailable on kernels
//! without it (ENOENT, before 13) and can fail early in boot, before the RNG is seeded: then
//! `kern.boottime` stands in, so that carpd never fails for lack of a boot identity. That
//! fallback errs on the safe side: a boottime identity changes when the clock is stepped
//! and differs from the `kern.boot_id` one of the same boot, so the ledger may take one boot
//! for two and re-apply its demotion (over-demoting, shown by `carpd maintenance status`,
//! gone at the next reboot). The ledger also follows the kernel's demotion level, which
//! catches the opposite case (a reset without a new identity).

use super::{BootId, KernelError};

/// The identity from `kern.boot_id`'s answer (its bytes, or the errno) and, asked only
/// when that is unusable, `kern.boottime`'s (seconds, microseconds).
pub fn choose(
    boot_id: Result<Vec<u8>, i32>,
    boottime: impl FnOnce() -> Result<(i64, i64), KernelError>,
) -> Result<BootId, KernelError> {
    let why = match boot_id {
        Ok(id) if id.len() == 16 && id.iter().any(|b| *b != 0) => {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            return Ok(BootId(format!("boot_id:{hex}")));
        }
        Ok(id) if id.len() == 16 => "kern.boot_id is all zero (not generated yet)".to_string(),
        Ok(id) => format!("kern.boot_id returned {} bytes, expected 16", id.len()),
        Err(e) => format!("kern.boot_id: {}", super::errno_name(e)),
    };
    match boottime() {
        Ok((sec, usec)) => Ok(BootId(format!("boottime:{sec}.{usec:06}"))),
        Err(e) => Err(KernelError {
            detail: format!("{} (and {why})", e.detail),
            ..e
        }
        .hint("the kernel gives no boot identity: the demotion ledger cannot tell a reboot; check `sysctl kern.boot_id kern.boottime`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> Result<(i64, i64), KernelError> {
        panic!("kern.boottime must not be read when kern.boot_id works")
    }

    #[test]
    fn boot_id_is_preferred() {
        let id = choose(Ok((1..=16).collect()), never).unwrap();
        assert_eq!(id.0, "boot_id:0102030405060708090a0b0c0d0e0f10");
    }

    /// issue 16: early in boot (RNG not seeded) or on old kernels kern.boot_id fails; carpd
    /// falls back to kern.boottime instead of failing.
    #[test]
    fn any_boot_id_failure_falls_back_to_boottime() {
        for answer in [
            Err(libc::ENOENT),
            Err(libc::EAGAIN),
            Err(libc::ENXIO),
            Ok(vec![0; 16]),
            Ok(vec![1; 8]),
        ] {
            let id = choose(answer.clone(), || Ok((1_764_806_400, 42))).unwrap();
            assert_eq!(id.0, "boottime:1764806400.000042", "{answer:?}");
        }
    }

    #[test]
    fn without_either_the_error_names_both() {
        let e = choose(Err(libc::EAGAIN), || {
            Err(KernelError::new("read kern.boottime", "no such sysctl"))
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kern.boottime") && e.contains("kern.boot_id"),
            "{e}"
        );
    }
}
