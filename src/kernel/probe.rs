//! Which CARP interface `--kernel auto` uses, decided from what the running kernel answered
//! (pure: `freebsd::open` does the probing, this decides, so the decision is tested on any
//! host).
//!
//! | netlink "carp" family | net.inet.carp | carpreq ioctl | pick |
//! |---|---|---|---|
//! | resolves | - | - | netlink (14+) |
//! | fails otherwise (EPERM, timeout) | - | - | that error: never fall back to a backend without unicast peers |
//! | absent (ENOENT, no netlink) | absent | - | error: carp.ko is not loaded, with the fix |
//! | absent | present | answers (ENOENT, or a record) | ioctl (13.x) |
//! | absent | present | unknown request (EINVAL, ENOTTY) | error: 16-CURRENT removed the ioctl and netlink is missing |
//!
//! The ioctl probe is a SIOCGVH for vhid 1 on an interface that can carry CARP: a kernel
//! with the ioctl answers ENOENT (no such vhid) or the record; a kernel without it passes the
//! request to the interface driver, which rejects it as unknown (EINVAL from ether_ioctl,
//! or ENOTTY).

use super::{CARP_NOT_LOADED_HINT, KernelError};

/// What `auto` opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPick {
    Netlink,
    Ioctl,
}

/// Whether a failed netlink open means "no netlink CARP here" (no family "carp": ENOENT; no
/// netlink at all: EAFNOSUPPORT/EPROTONOSUPPORT) rather than a failure to report.
pub fn netlink_carp_absent(e: &KernelError) -> bool {
    e.is_errno(libc::ENOENT) || e.is_errno(libc::EAFNOSUPPORT) || e.is_errno(libc::EPROTONOSUPPORT)
}

/// Whether the ioctl probe's errno means "this kernel has no carpreq ioctl".
pub fn ioctl_missing(errno: i32) -> bool {
    errno == libc::EINVAL || errno == libc::ENOTTY
}

/// Decides `auto` from the netlink open's result, whether `net.inet.carp` exists, and (asked
/// only when needed) the ioctl probe's result (`None`: no interface to probe on).
pub fn pick_auto(
    netlink: Result<(), KernelError>,
    carp_loaded: bool,
    ioctl_probe: impl FnOnce() -> Option<Result<(), i32>>,
) -> Result<AutoPick, KernelError> {
    let e = match netlink {
        Ok(()) => return Ok(AutoPick::Netlink),
        Err(e) if !netlink_carp_absent(&e) => return Err(e),
        Err(e) => e,
    };
    if !carp_loaded {
        return Err(KernelError::new(
            "open the kernel CARP interface",
            format!(
                "carp.ko not loaded: the generic netlink family \"carp\" does not resolve ({}) \
                 and net.inet.carp does not exist",
                e.detail
            ),
        )
        .hint(CARP_NOT_LOADED_HINT));
    }
    match ioctl_probe() {
        Some(Err(errno)) if ioctl_missing(errno) => Err(KernelError::new(
            "open the kernel CARP interface",
            format!(
                "CARP is loaded but this kernel has neither the netlink CARP interface ({}) nor \
                 the carpreq ioctl (SIOCGVH answers {}: FreeBSD 16 removed it)",
                e.detail,
                super::errno_name(errno)
            ),
        )
        .hint(
            "carpd needs netlink on this kernel: use a kernel with `options NETLINK` (GENERIC \
             has it) or load it (kldload netlink), then check with `sysctl net.netlink`",
        )),
        _ => Ok(AutoPick::Ioctl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn absent() -> Result<(), KernelError> {
        Err(KernelError::errno(
            "resolve generic netlink family \"carp\"",
            libc::ENOENT,
        ))
    }

    #[test]
    fn netlink_wins_and_other_netlink_failures_are_reported() {
        assert_eq!(
            pick_auto(Ok(()), true, || panic!("no probe")).unwrap(),
            AutoPick::Netlink
        );
        let e = pick_auto(Err(KernelError::errno("op", libc::EPERM)), true, || {
            panic!("no probe")
        })
        .unwrap_err();
        assert!(e.is_errno(libc::EPERM), "{e}");
    }

    #[test]
    fn without_carp_the_error_says_carp_ko_is_not_loaded_and_how_to_load_it() {
        let e = pick_auto(absent(), false, || panic!("no probe")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("carp.ko not loaded"), "{s}");
        assert!(s.contains("kldload carp") && s.contains("carp_load"), "{s}");
    }

    #[test]
    fn freebsd_13_uses_the_ioctl() {
        for probe in [Some(Err(libc::ENOENT)), Some(Ok(())), None] {
            assert_eq!(
                pick_auto(absent(), true, || probe).unwrap(),
                AutoPick::Ioctl
            );
        }
    }

    /// issue 16: 16-CURRENT has no carp ioctl; without netlink, carpd must say so at open
    /// instead of failing every later call with an unexplained EINVAL.
    #[test]
    fn a_kernel_without_the_ioctl_and_without_netlink_fails_cleanly() {
        for errno in [libc::EINVAL, libc::ENOTTY] {
            let no_netlink = Err(KernelError::errno(
                "open a netlink socket",
                libc::EAFNOSUPPORT,
            ));
            let e = pick_auto(no_netlink, true, || Some(Err(errno))).unwrap_err();
            let s = e.to_string();
            assert!(s.contains("FreeBSD 16 removed it"), "{s}");
            assert!(s.contains("options NETLINK"), "{s}");
        }
    }
}
