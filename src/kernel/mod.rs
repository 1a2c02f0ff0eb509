//! Access to kernel CARP: one trait, [`Kernel`], and its implementations.
//!
//! - `netlink` (FreeBSD 14+): generic netlink family "carp"; the only way to read or set a
//!   unicast peer.
//! - `ioctl` (FreeBSD 13.x): the carpreq ioctls, one vhid at a time; no peers.
//! - `sim`: an in-memory kernel with FreeBSD's SET/GET semantics, optionally persisted in a
//!   state file so that separate CLI invocations see the same kernel. Chosen explicitly
//!   (`--kernel sim`), never as a silent fallback.
//!
//! The trait mirrors the kernel's own operations and semantics (a raw SET overwrites advskew,
//! 0 keeps advbase, ...). The get-merge-set that callers want lives once, in [`merge`], on top
//! of any implementation, so the simulator exercises exactly the code path FreeBSD does.
//!
//! Every error is a [`KernelError`] naming the operation, the group or sysctl, the errno and
//! what the operator can do about it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::IpNet;

use crate::carp::{CarpKey, CarpState, CarpStats, GroupId, KeyView, Sysctl, Vhid};

pub mod bootid;
pub mod carpreq;
pub mod merge;
pub mod probe;
pub mod sim;

#[cfg(target_os = "freebsd")]
pub mod freebsd;
#[cfg(target_os = "freebsd")]
pub mod ifaddr;
#[cfg(target_os = "freebsd")]
pub mod ioctl;
pub mod netlink;
#[cfg(target_os = "freebsd")]
pub mod sysctl;

/// One vhid as read from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelGroup {
    pub ifname: String,
    pub vhid: Vhid,
    pub state: CarpState,
    pub advbase: u32,
    /// The configured advskew, before demotion is added.
    pub advskew: u32,
    pub key: KeyView,
    /// Unicast IPv4 peer; `None` means multicast (224.0.0.18).
    pub peer: Option<Ipv4Addr>,
    /// Unicast IPv6 peer; `None` means multicast (ff02::12).
    pub peer6: Option<Ipv6Addr>,
    /// Addresses on the interface that carry this vhid, sorted.
    pub addresses: Vec<IpNet>,
}

impl KernelGroup {
    pub fn id(&self) -> GroupId {
        GroupId::new(self.ifname.clone(), self.vhid)
    }
}

/// A raw SET, with the kernel's semantics (shared by `CARP_NL_CMD_SET` and `SIOCSVH`):
/// - `advskew` is always written (absent means 0);
/// - `advbase` 0 keeps the current value;
/// - `key` `None` (an empty key) keeps the current key: a key cannot be cleared;
/// - `peer`/`peer6` `None` (0.0.0.0 / ::) keep the current peer; send the multicast group
///   explicitly to go back to multicast;
/// - `state` is honoured only when the vhid is not in INIT, and only BACKUP/MASTER force
///   anything; `None` asks for no change.
///
/// A SET on a vhid that does not exist creates it (advbase 1, advskew 0, INIT, multicast).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRequest {
    pub vhid: Vhid,
    pub advbase: u32,
    pub advskew: u32,
    pub key: Option<CarpKey>,
    pub peer: Option<Ipv4Addr>,
    pub peer6: Option<Ipv6Addr>,
    pub state: Option<CarpState>,
}

pub use crate::carp::BackendInfo;

/// The operations carpd needs from the kernel.
///
/// Methods take `&self`: implementations hold a socket or a lock, never per-call state, so the
/// daemon can share one kernel handle between tasks.
pub trait Kernel: Send + Sync {
    fn info(&self) -> BackendInfo;

    /// Interfaces present, in the kernel's order.
    fn interfaces(&self) -> Result<Vec<String>, KernelError>;

    /// Every vhid of `ifname`, sorted by vhid. An interface without CARP gives an empty list;
    /// an interface that does not exist is an error (ENXIO).
    fn groups(&self, ifname: &str) -> Result<Vec<KernelGroup>, KernelError>;

    /// One vhid, `None` when it does not exist on that interface.
    fn group(&self, ifname: &str, vhid: Vhid) -> Result<Option<KernelGroup>, KernelError>;

    /// A raw SET with the kernel's semantics (see [`SetRequest`]). Use [`merge::set_merged`]
    /// to change some parameters and keep the others.
    fn set_raw(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError>;

    /// Attach `addr` to `ifname` with `vhid` (the vhid must exist).
    fn add_address(&self, ifname: &str, vhid: Vhid, addr: IpNet) -> Result<(), KernelError>;

    /// Remove `addr` from `ifname`. Removing a vhid's last address destroys the vhid.
    fn del_address(&self, ifname: &str, addr: IpNet) -> Result<(), KernelError>;

    /// Read a `net.inet.carp.*` integer.
    fn sysctl_get(&self, knob: Sysctl) -> Result<i64, KernelError>;

    /// Write a `net.inet.carp.*` integer. Refuses [`Sysctl::Demotion`], whose writes add:
    /// use [`Kernel::demotion_add`].
    fn sysctl_set(&self, knob: Sysctl, value: i64) -> Result<(), KernelError>;

    /// Add `delta` (may be negative) to the global demotion counter, as a write to
    /// `net.inet.carp.demotion` does.
    fn demotion_add(&self, delta: i64) -> Result<(), KernelError>;

    /// `net.inet.carp.stats`.
    fn stats(&self) -> Result<CarpStats, KernelError>;

    /// Which boot of the kernel this is. The demotion ledger compares it with the boot each
    /// of its entries was applied in: the kernel's demotion resets to 0 at every boot, so an
    /// entry from another boot is no longer in the kernel.
    fn boot_id(&self) -> Result<BootId, KernelError>;
}

/// The identity of one boot of the kernel: equal within a boot, different after a reboot.
///
/// Opaque text with a prefix naming its source: `boot_id:<hex>` (FreeBSD's `kern.boot_id`,
/// random at every boot), `boottime:<sec>.<usec>` (`kern.boottime`, on kernels without
/// `kern.boot_id`), `sim:<n>` (the simulated kernel's boot counter). Only equality matters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct BootId(pub String);

impl fmt::Display for BootId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which kernel backend to open (`--kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// FreeBSD: netlink when the "carp" family resolves, else the 13.x ioctls.
    Auto,
    /// FreeBSD 14+: generic netlink.
    Netlink,
    /// FreeBSD 13.x: carpreq ioctls.
    Ioctl,
    /// Simulated FreeBSD 14+ kernel (netlink semantics, unicast peers).
    Sim,
    /// Simulated FreeBSD 13.x kernel (ioctl semantics, no unicast peers).
    Sim13,
}

/// Opens the chosen backend. `sim_state` persists a simulated kernel between invocations.
pub fn open(
    choice: KernelChoice,
    sim_state: Option<PathBuf>,
) -> Result<Box<dyn Kernel>, KernelError> {
    match choice {
        KernelChoice::Sim => Ok(Box::new(sim::SimKernel::open(
            sim::Flavour::FreeBsd14,
            sim_state,
        )?)),
        KernelChoice::Sim13 => Ok(Box::new(sim::SimKernel::open(
            sim::Flavour::FreeBsd13,
            sim_state,
        )?)),
        #[cfg(target_os = "freebsd")]
        KernelChoice::Auto | KernelChoice::Netlink | KernelChoice::Ioctl => freebsd::open(choice),
        #[cfg(not(target_os = "freebsd"))]
        KernelChoice::Auto | KernelChoice::Netlink | KernelChoice::Ioctl => Err(KernelError::new(
            "open the kernel CARP interface",
            "this is not FreeBSD: kernel CARP is not available",
        )
        .hint("use --kernel sim (or sim13) to run against the simulated kernel")),
    }
}

/// A failed kernel operation: what was attempted, on what, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The operation and its object, e.g. "SET carp 2@vmx1 (netlink)".
    pub op: String,
    /// The errno, when the kernel returned one.
    pub errno: Option<i32>,
    /// What went wrong, in words.
    pub detail: String,
    /// What the operator can do.
    pub hint: Option<String>,
}

impl KernelError {
    pub fn new(op: impl Into<String>, detail: impl Into<String>) -> KernelError {
        KernelError {
            op: op.into(),
            errno: None,
            detail: detail.into(),
            hint: None,
        }
    }

    /// An errno from the kernel, with the meaning and fix from carp(4)'s error table.
    pub fn errno(op: impl Into<String>, errno: i32) -> KernelError {
        let (detail, hint) = errno_meaning(errno);
        KernelError {
            op: op.into(),
            errno: Some(errno),
            detail: detail.to_string(),
            hint: hint.map(str::to_string),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> KernelError {
        self.hint = Some(hint.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> KernelError {
        self.detail = detail.into();
        self
    }

    /// A `net.inet.carp.*` sysctl that does not exist (ENOENT): carp.ko is not loaded.
    pub fn carp_sysctl_missing(op: impl Into<String>) -> KernelError {
        KernelError::errno(op, libc::ENOENT)
            .detail("no such sysctl (net.inet.carp.* exists only with carp.ko loaded)")
            .hint(CARP_NOT_LOADED_HINT)
    }

    /// `net.inet.carp.demotion` has no absolute setter: every write adds (shared by backends).
    pub fn demotion_not_settable(op: impl Into<String>) -> KernelError {
        KernelError::new(
            op,
            "net.inet.carp.demotion adds what is written; it has no absolute setter",
        )
        .hint("use demotion_add with a delta")
    }

    pub fn is_errno(&self, e: i32) -> bool {
        self.errno == Some(e)
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.detail)?;
        if let Some(e) = self.errno {
            write!(f, " ({})", errno_name(e))?;
        }
        if let Some(h) = &self.hint {
            write!(f, ". {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// The hint given whenever CARP turns out not to be loaded.
pub const CARP_NOT_LOADED_HINT: &str = "carp.ko is not loaded: run `kldload carp`, and add carp_load=\"YES\" to /boot/loader.conf so it loads at boot";

/// The error every 13.x (ioctl) backend gives for a unicast peer.
pub fn unicast_unsupported(op: String) -> KernelError {
    KernelError::new(
        op,
        "unicast peers (peer/peer6) need the netlink CARP interface of FreeBSD 14+; this kernel only has the carpreq ioctl",
    )
    .hint("remove peer/peer6 from the group to use multicast, or upgrade to FreeBSD 14")
}

/// Meaning of an errno from a CARP operation, after the kernel sources (ip_carp.c).
fn errno_meaning(e: i32) -> (&'static str, Option<&'static str>) {
    match e {
        libc::EPERM | libc::EACCES => (
            "permission denied",
            Some("changing CARP needs root (PRIV_NETINET_CARP): run carpd as root"),
        ),
        libc::ENOENT => ("no such vhid on this interface", None),
        libc::ENXIO => (
            "no such interface",
            Some("check the interface name with ifconfig -l"),
        ),
        libc::EINVAL => (
            "the kernel rejected a value as invalid",
            Some(
                "vhid must be 1..255, advbase 1..255, advskew below 255 (the kernel rejects 255 and above; \
                 carpd.yaml allows 0..240, the most that changes an election), key at most 20 bytes",
            ),
        ),
        libc::EOPNOTSUPP => (
            "this interface type cannot carry CARP",
            Some("use an Ethernet, VLAN or bridge interface"),
        ),
        libc::EADDRNOTAVAIL => (
            "the interface has no IFF_MULTICAST",
            Some("CARP needs a multicast-capable interface"),
        ),
        libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT => (
            "CARP is not available in this kernel",
            Some(CARP_NOT_LOADED_HINT),
        ),
        libc::ENOPROTOOPT => (
            "no CARP on this interface yet",
            Some("create the vhid (carpd apply) before attaching addresses"),
        ),
        libc::EEXIST => ("the address already exists", None),
        libc::EADDRINUSE => ("the address is in use", None),
        _ => ("the kernel returned an error", None),
    }
}

/// Maps an errno of a `net.inet.carp.*` sysctl to an error with the fix: ENOENT is carp.ko
/// not loaded, EPERM/EACCES names the sysctl and says "run as root". Used by the FreeBSD
/// sysctl backend; it lives here, pure, so its test runs on every platform (the backend's
/// own tests run only on FreeBSD).
#[cfg_attr(not(target_os = "freebsd"), allow(dead_code))]
pub(crate) fn sysctl_error(op: String, mib: &str, errno: i32) -> KernelError {
    let e = KernelError::errno(op, errno);
    match errno {
        libc::ENOENT => e
            .detail(format!("{mib} does not exist: CARP is not in this kernel"))
            .hint(CARP_NOT_LOADED_HINT),
        libc::EPERM | libc::EACCES => {
            e.hint(format!("writing {mib} needs root: run carpd as root"))
        }
        _ => e,
    }
}

/// `ENOENT`-style symbolic name of an errno, portable between Linux and FreeBSD builds.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ENXIO => "ENXIO",
        libc::EINVAL => "EINVAL",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EEXIST => "EEXIST",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EBUSY => "EBUSY",
        libc::ENOMEM => "ENOMEM",
        libc::ENOBUFS => "ENOBUFS",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sysctl backend's errors (FreeBSD-only code; the mapping is tested here). The
    /// generic EPERM text already says "root", so the check is that the sysctl is named.
    #[test]
    fn sysctl_errors_name_the_sysctl_and_the_fix() {
        let mib = "net.inet.carp.preempt";
        let s = sysctl_error(format!("read {mib}"), mib, libc::ENOENT).to_string();
        assert!(
            s.contains("net.inet.carp.preempt does not exist") && s.contains("kldload carp"),
            "{s}"
        );
        for errno in [libc::EPERM, libc::EACCES] {
            let s = sysctl_error("write x".into(), mib, errno).to_string();
            assert!(
                s.contains(&errno_name(errno))
                    && s.contains("writing net.inet.carp.preempt needs root: run carpd as root"),
                "{s}"
            );
        }
    }

    #[test]
    fn errors_name_operation_errno_and_fix() {
        let e = KernelError::errno("SET carp 2@vmx1 (netlink)", libc::EPROTONOSUPPORT);
        let s = e.to_string();
        assert!(
            s.starts_with("SET carp 2@vmx1 (netlink): CARP is not available"),
            "{s}"
        );
        assert!(s.contains("EPROTONOSUPPORT"), "{s}");
        assert!(s.contains("kldload carp"), "{s}");
        let s = KernelError::errno("SET carp 2@vmx1", libc::EPERM).to_string();
        assert!(s.contains("EPERM") && s.contains("root"), "{s}");
        let s = KernelError::errno("GET carp 2@em9", libc::ENXIO).to_string();
        assert!(s.contains("ENXIO") && s.contains("ifconfig -l"), "{s}");
        // issue 16: the kernel rejects advskew >= 255, not > 240.
        let s = KernelError::errno("SET carp 2@vmx1", libc::EINVAL).to_string();
        assert!(s.contains("advskew below 255"), "{s}");
        assert!(!s.contains("advskew 0..240,"), "{s}");
    }

    #[test]
    fn open_without_freebsd_points_at_sim() {
        #[cfg(not(target_os = "freebsd"))]
        {
            let e = open(KernelChoice::Auto, None).err().unwrap();
            assert!(e.to_string().contains("--kernel sim"), "{e}");
        }
    }
}
