//! The real FreeBSD kernel behind the [`Kernel`] trait: picks the CARP backend (generic
//! netlink on 14+, the carpreq ioctls on 13.x) and combines it with `ifaddr` (addresses and
//! their vhids) and `sysctl` (knobs, demotion, statistics).
//!
//! What lives here: [`open`], which probes what the running kernel offers, and
//! [`FreeBsdKernel`], which assembles a [`KernelGroup`] from a CARP record plus the addresses
//! carrying its vhid. It holds sockets, never per-call state, so one handle is shared.
//!
//! What it must not do: fall back silently to something with different abilities. `Auto`
//! picks the ioctls only when netlink has no "carp" family but CARP is loaded (13.x), and says
//! so in the log; [`FreeBsdKernel::info`] tells callers whether unicast peers are possible, and
//! the ioctl backend refuses them instead of going multicast. The simulator is never chosen
//! here. No merge logic either: `set_raw` is the kernel's raw SET (see `merge`).

use std::collections::BTreeSet;
use std::sync::Mutex;

use ipnet::IpNet;

use crate::carp::{CarpStats, MULTICAST_V4, MULTICAST_V6, Sysctl, Vhid};

use super::ioctl::CarpIoctl;
use super::netlink::{CarpNetlink, CarpRecord, VrrpRecord};
use super::probe::{self, AutoPick};
use super::{
    BackendInfo, BootId, CARP_NOT_LOADED_HINT, Kernel, KernelChoice, KernelError, KernelGroup,
    SetRequest, ifaddr, sysctl,
};

/// How CARP parameters are read and set.
enum Backend {
    /// FreeBSD 14+: generic netlink family "carp"; unicast peers.
    Netlink(CarpNetlink),
    /// FreeBSD 13.x: SIOCSVH/SIOCGVH; multicast only.
    Ioctl(CarpIoctl),
}

/// Opens the backend `choice` names (`Auto`, `Netlink` or `Ioctl`; the simulated kernels are
/// opened by `kernel::open`).
///
/// `Auto`: netlink when the "carp" family resolves. When the family (or netlink) is absent,
/// either this is 13.x (no netlink CARP, but `net.inet.carp` exists: use the ioctls) or CARP
/// is not loaded at all (the error says how to load it). Any other netlink failure is
/// returned as is.
pub fn open(choice: KernelChoice) -> Result<Box<dyn Kernel>, KernelError> {
    let backend = match choice {
        KernelChoice::Netlink => Backend::Netlink(CarpNetlink::open()?),
        KernelChoice::Ioctl => {
            ensure_loaded("open the carpreq ioctl backend (--kernel ioctl)")?;
            Backend::Ioctl(CarpIoctl::open()?)
        }
        KernelChoice::Auto => {
            let (nl, nl_result) = match CarpNetlink::open() {
                Ok(nl) => (Some(nl), Ok(())),
                Err(e) => (None, Err(e)),
            };
            let nl_error = nl_result.as_ref().err().map(ToString::to_string);
            let mut io = None;
            let pick = probe::pick_auto(nl_result, sysctl::carp_loaded(), || {
                let c = CarpIoctl::open().ok()?;
                let ifname = ifaddr::interface_names()
                    .ok()?
                    .into_iter()
                    .find(|n| !n.starts_with("lo"))?;
                let one = Vhid::new(1)?;
                let r = c
                    .get(&ifname, one)
                    .map(|_| ())
                    .map_err(|e| e.errno.unwrap_or(0));
                io = Some(c);
                Some(r)
            })?;
            match (pick, nl) {
                (AutoPick::Netlink, Some(nl)) => {
                    tracing::debug!(
                        family_version = nl.family_version(),
                        "kernel CARP through generic netlink"
                    );
                    Backend::Netlink(nl)
                }
                _ => {
                    tracing::info!(
                        netlink_error = nl_error.as_deref().unwrap_or(""),
                        "the generic netlink family \"carp\" is not available but CARP is loaded \
                         (FreeBSD 13.x?): using the carpreq ioctls; unicast peers are not supported"
                    );
                    match io {
                        Some(io) => Backend::Ioctl(io),
                        None => Backend::Ioctl(CarpIoctl::open()?),
                    }
                }
            }
        }
        KernelChoice::Sim | KernelChoice::Sim13 => {
            return Err(KernelError::new(
                "open the kernel CARP interface",
                "the simulated kernels are not FreeBSD backends",
            )
            .hint("open them through kernel::open"));
        }
    };
    Ok(Box::new(FreeBsdKernel {
        backend,
        vrrp_reported: Mutex::new(BTreeSet::new()),
    }))
}

/// Fails with the "not loaded" hint when `net.inet.carp` does not exist.
fn ensure_loaded(op: &str) -> Result<(), KernelError> {
    if sysctl::carp_loaded() {
        Ok(())
    } else {
        Err(
            KernelError::new(op, "CARP is not loaded: net.inet.carp does not exist")
                .hint(CARP_NOT_LOADED_HINT),
        )
    }
}

/// A CARP record from netlink as a [`KernelGroup`] without addresses. The multicast groups
/// and the unspecified address both mean "no unicast peer".
fn from_netlink(ifname: &str, r: CarpRecord) -> KernelGroup {
    KernelGroup {
        ifname: ifname.to_string(),
        vhid: r.vhid,
        state: r.state,
        advbase: r.advbase,
        advskew: r.advskew,
        key: r.key,
        peer: r.peer.filter(|p| *p != MULTICAST_V4 && !p.is_unspecified()),
        peer6: r
            .peer6
            .filter(|p| *p != MULTICAST_V6 && !p.is_unspecified()),
        addresses: Vec::new(),
    }
}

/// Fills each group's `addresses` with the interface addresses carrying its vhid, sorted.
pub fn attach_addresses(groups: &mut [KernelGroup], addrs: &[(IpNet, Option<Vhid>)]) {
    for g in groups.iter_mut() {
        g.addresses = addrs
            .iter()
            .filter(|(_, v)| *v == Some(g.vhid))
            .map(|(a, _)| *a)
            .collect();
        g.addresses.sort();
    }
}

/// A GET error that means "this interface has no CARP" rather than a failure: an interface
/// type that cannot carry CARP (EOPNOTSUPP, e.g. lo0) or without IFF_MULTICAST
/// (EADDRNOTAVAIL) has no vhids.
fn means_no_carp(e: &KernelError) -> bool {
    e.is_errno(libc::EOPNOTSUPP) || e.is_errno(libc::EADDRNOTAVAIL)
}

/// The kernel of the running FreeBSD system.
pub struct FreeBsdKernel {
    backend: Backend,
    /// VRRP vhids already reported as not managed by carpd (once each, not at every read).
    vrrp_reported: Mutex<BTreeSet<(String, u32)>>,
}

impl FreeBsdKernel {
    fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Netlink(_) => "netlink",
            Backend::Ioctl(_) => "ioctl",
        }
    }

    /// ENXIO (with the operation) when `ifname` does not exist, checked up front so that a
    /// missing interface is the same clear error whatever the backend makes of it (netlink
    /// reads ENOENT as "no vhid", and a typo must not look like an interface without CARP).
    fn ensure_interface(&self, op: &str, ifname: &str) -> Result<(), KernelError> {
        match ifaddr::if_index(ifname) {
            Some(_) => Ok(()),
            None => Err(KernelError::errno(op, libc::ENXIO)),
        }
    }

    /// Logs each VRRP vhid (FreeBSD 15+) once: carpd drives CARP only and leaves it alone.
    fn report_vrrp(&self, ifname: &str, vrrp: &[VrrpRecord]) {
        let mut seen = self.vrrp_reported.lock().unwrap_or_else(|p| p.into_inner());
        for v in vrrp {
            if seen.insert((ifname.to_string(), v.vhid.get())) {
                tracing::info!(
                    group = %format!("{}@{ifname}", v.vhid),
                    version = v.version,
                    state = %v.state,
                    "a VRRP vhid, not managed by carpd (carpd drives CARP only; it is left alone)"
                );
            }
        }
    }

    /// The CARP records of `ifname` (one vhid or all), sorted, without addresses.
    fn read(&self, ifname: &str, vhid: Option<Vhid>) -> Result<Vec<KernelGroup>, KernelError> {
        let mut groups = match (&self.backend, vhid) {
            (Backend::Netlink(nl), _) => {
                let dump = nl.get(ifname, vhid)?;
                self.report_vrrp(ifname, &dump.vrrp);
                dump.carp
                    .into_iter()
                    .map(|r| from_netlink(ifname, r))
                    .filter(|g| vhid.is_none_or(|v| g.vhid == v))
                    .collect()
            }
            (Backend::Ioctl(io), Some(v)) => io.get(ifname, v)?.into_iter().collect(),
            (Backend::Ioctl(io), None) => io.list(ifname)?,
        };
        groups.sort_by_key(|g| g.vhid);
        Ok(groups)
    }
}

impl Kernel for FreeBsdKernel {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: self.backend_name(),
            unicast: matches!(self.backend, Backend::Netlink(_)),
        }
    }

    fn interfaces(&self) -> Result<Vec<String>, KernelError> {
        ifaddr::interface_names()
    }

    fn groups(&self, ifname: &str) -> Result<Vec<KernelGroup>, KernelError> {
        let op = format!("GET carp on {ifname} ({})", self.backend_name());
        self.ensure_interface(&op, ifname)?;
        let mut groups = match self.read(ifname, None) {
            Ok(g) => g,
            Err(e) if means_no_carp(&e) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        if !groups.is_empty() {
            attach_addresses(&mut groups, &ifaddr::addresses(ifname)?);
        }
        Ok(groups)
    }

    fn group(&self, ifname: &str, vhid: Vhid) -> Result<Option<KernelGroup>, KernelError> {
        let op = format!("GET carp {vhid}@{ifname} ({})", self.backend_name());
        self.ensure_interface(&op, ifname)?;
        let mut groups = match self.read(ifname, Some(vhid)) {
            Ok(g) => g,
            Err(e) if means_no_carp(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if groups.is_empty() {
            return Ok(None);
        }
        attach_addresses(&mut groups, &ifaddr::addresses(ifname)?);
        Ok(groups.into_iter().next())
    }

    fn set_raw(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError> {
        match &self.backend {
            Backend::Netlink(nl) => nl.set(ifname, req),
            Backend::Ioctl(io) => io.set(ifname, req),
        }
    }

    fn add_address(&self, ifname: &str, vhid: Vhid, addr: IpNet) -> Result<(), KernelError> {
        ifaddr::add(ifname, vhid, addr)
    }

    fn del_address(&self, ifname: &str, addr: IpNet) -> Result<(), KernelError> {
        ifaddr::remove(ifname, addr)
    }

    fn sysctl_get(&self, knob: Sysctl) -> Result<i64, KernelError> {
        sysctl::get(knob)
    }

    fn sysctl_set(&self, knob: Sysctl, value: i64) -> Result<(), KernelError> {
        sysctl::set(knob, value)
    }

    fn demotion_add(&self, delta: i64) -> Result<(), KernelError> {
        sysctl::demotion_add(delta)
    }

    fn stats(&self) -> Result<CarpStats, KernelError> {
        sysctl::stats()
    }

    fn boot_id(&self) -> Result<BootId, KernelError> {
        sysctl::boot_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carp::{CarpState, KeyView};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn vhid(v: u32) -> Vhid {
        Vhid::new(v).unwrap()
    }

    fn group(v: u32) -> KernelGroup {
        KernelGroup {
            ifname: "vmx1".into(),
            vhid: vhid(v),
            state: CarpState::Backup,
            advbase: 1,
            advskew: 0,
            key: KeyView::Unset,
            peer: None,
            peer6: None,
            addresses: Vec::new(),
        }
    }

    #[test]
    fn addresses_go_to_their_vhid_sorted() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let addrs = vec![
            (net("10.0.0.2/24"), None),
            (net("51.68.252.231/32"), Some(vhid(2))),
            (net("2001:db8::2/64"), Some(vhid(2))),
            (net("51.68.252.230/32"), Some(vhid(2))),
            (net("192.0.2.9/32"), Some(vhid(9))),
        ];
        let mut groups = vec![group(2), group(3)];
        attach_addresses(&mut groups, &addrs);
        assert_eq!(
            groups[0].addresses,
            vec![
                net("51.68.252.230/32"),
                net("51.68.252.231/32"),
                net("2001:db8::2/64")
            ]
        );
        assert!(groups[1].addresses.is_empty());
    }

    #[test]
    fn netlink_records_read_multicast_as_no_peer() {
        let rec = |peer, peer6| CarpRecord {
            vhid: vhid(2),
            state: CarpState::Master,
            advbase: 1,
            advskew: 100,
            key: KeyView::Hidden,
            peer,
            peer6,
        };
        let g = from_netlink("vmx1", rec(Some(MULTICAST_V4), Some(MULTICAST_V6)));
        assert_eq!((g.peer, g.peer6), (None, None));
        let g = from_netlink(
            "vmx1",
            rec(Some(Ipv4Addr::UNSPECIFIED), Some(Ipv6Addr::UNSPECIFIED)),
        );
        assert_eq!((g.peer, g.peer6), (None, None));
        let p = Ipv4Addr::new(178, 32, 70, 110);
        let g = from_netlink("vmx1", rec(Some(p), None));
        assert_eq!(
            (g.ifname.as_str(), g.peer, g.advskew, g.state),
            ("vmx1", Some(p), 100, CarpState::Master)
        );
    }

    #[test]
    fn unsupported_interfaces_have_no_carp() {
        assert!(means_no_carp(&KernelError::errno("op", libc::EOPNOTSUPP)));
        assert!(means_no_carp(&KernelError::errno(
            "op",
            libc::EADDRNOTAVAIL
        )));
        assert!(!means_no_carp(&KernelError::errno("op", libc::EPERM)));
    }
}
