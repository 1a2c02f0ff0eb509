//! A simulated FreeBSD kernel CARP, faithful to the SET/GET semantics carpd relies on.
//!
//! Used by tests, the lab and `--kernel sim`. It is never chosen silently. It implements what
//! reference/freebsd-carp.md describes, so code that works here works on FreeBSD:
//! - a SET on a missing vhid creates it (advbase 1, advskew 0, INIT, multicast);
//! - advskew is always overwritten, advbase 0 keeps, an empty key keeps, a zero peer keeps,
//!   the multicast group goes back to multicast;
//! - the FreeBSD 14+ flavour creates a missing vhid before it validates the rest of a SET,
//!   as `carp_ioctl_set` does: an EINVAL SET can leave a new vhid (and a valid advbase)
//!   behind;
//! - a forced state (BACKUP/MASTER) is honoured only outside INIT; INIT cannot be forced;
//! - attaching the first address moves a vhid from INIT to BACKUP only when it can run: its
//!   interface is up and `net.inet.carp.allow` is not 0; removing its last address destroys
//!   it;
//! - an interface going down, or `net.inet.carp.allow=0`, puts its vhids (with addresses) in
//!   INIT and adds `net.inet.carp.ifdown_demotion_factor` to the demotion once per vhid
//!   (`carp_sc_state`); coming back removes it and the vhids return to BACKUP;
//!   [`SimKernel::set_link`] plays the interface, `loader` the loader tunables a boot applies;
//! - a demotion write adds (a negative write subtracts, and nothing stops the level going
//!   below 0, as in `carp_demote_adj`); reading gives the current level; the effective skew
//!   is clamped to 0..240 by readers;
//! - a boot counter stands for the boot identity; [`SimKernel::reboot`] starts the next boot
//!   with the `net.inet.carp.*` sysctls (demotion included) back at their defaults and the
//!   statistics zeroed, as a real reboot does (the vhids stay, as if rc.conf re-created them);
//! - errnos as FreeBSD returns them: ENXIO (no interface), ENOENT (no vhid), EINVAL (range),
//!   EPERM (not root), EOPNOTSUPP (loopback), EPROTONOSUPPORT (carp.ko not loaded);
//! - the 13.x flavour has no unicast peers and reports none.
//!
//! The state lives in memory, or in a JSON state file (mode 0600) that is locked, read,
//! changed and atomically replaced on every call, so separate CLI invocations and a daemon see
//! one kernel. A test or lab writes `root: false` or `carp_loaded: false` into that file to
//! make the simulated kernel refuse like an unprivileged or carp-less FreeBSD.
//!
//! Elections are not simulated: a vhid stays BACKUP until something (a test, the lab, or a
//! forced SET) makes it MASTER; a vhid that cannot run (interface down, allow=0) stays INIT
//! whatever the network says ([`SimKernel::set_state`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::carp::{
    CarpKey, CarpState, CarpStats, KeyView, MAX_VHID, MULTICAST_V4, MULTICAST_V6, Sysctl, Vhid,
};

use super::{BackendInfo, BootId, Kernel, KernelError, KernelGroup, SetRequest};

/// Which FreeBSD the simulator behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// 14+ (netlink): unicast peers.
    FreeBsd14,
    /// 13.x (carpreq ioctl only): no unicast peers.
    FreeBsd13,
}

/// The whole simulated kernel; this is what the state file holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimState {
    /// false: every carp call fails with EPROTONOSUPPORT, like a kernel without carp.ko.
    #[serde(default = "yes")]
    pub carp_loaded: bool,
    /// false: changes fail with EPERM and keys are not returned, like a non-root caller.
    #[serde(default = "yes")]
    pub root: bool,
    pub interfaces: BTreeMap<String, SimInterface>,
    #[serde(default = "default_sysctls")]
    pub sysctls: BTreeMap<Sysctl, i64>,
    #[serde(default)]
    pub stats: CarpStats,
    /// Which boot this is (the boot identity); [`SimKernel::reboot`] counts up.
    #[serde(default)]
    pub boot: u64,
    /// `/boot/loader.conf` tunables a reboot applies over the defaults (e.g.
    /// `net.inet.carp.allow=0`, so vhids stay in INIT until a controller allows CARP).
    #[serde(default)]
    pub loader: BTreeMap<Sysctl, i64>,
}

fn yes() -> bool {
    true
}

fn default_sysctls() -> BTreeMap<Sysctl, i64> {
    Sysctl::ALL
        .iter()
        .map(|s| (*s, s.default_value()))
        .collect()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimInterface {
    /// Loopback interfaces refuse CARP with EOPNOTSUPP, as on FreeBSD.
    #[serde(default)]
    pub loopback: bool,
    #[serde(default)]
    pub vhids: BTreeMap<u8, SimVhid>,
    /// Addresses with the vhid they carry (None: a plain address).
    #[serde(default)]
    pub addresses: Vec<SimAddress>,
    /// Link up and IFF_UP; a vhid runs only on an interface that is up.
    #[serde(default = "yes")]
    pub up: bool,
}

impl Default for SimInterface {
    /// An Ethernet interface, up, without addresses.
    fn default() -> SimInterface {
        SimInterface {
            loopback: false,
            vhids: BTreeMap::new(),
            addresses: Vec::new(),
            up: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimVhid {
    pub state: CarpState,
    pub advbase: u32,
    pub advskew: u32,
    /// The raw key bytes. The state file is a test artifact kept at mode 0600.
    #[serde(default)]
    pub key: Vec<u8>,
    #[serde(default)]
    pub peer: Option<Ipv4Addr>,
    #[serde(default)]
    pub peer6: Option<Ipv6Addr>,
    /// `sc_suppress`: this vhid cannot run and has added the ifdown demotion factor.
    #[serde(default)]
    pub suppressed: bool,
}

impl SimVhid {
    /// What `carp_alloc` makes: advbase 1, advskew 0, INIT, multicast, no key.
    fn new() -> SimVhid {
        SimVhid {
            state: CarpState::Init,
            advbase: 1,
            advskew: 0,
            key: Vec::new(),
            peer: None,
            peer6: None,
            suppressed: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SimAddress {
    pub addr: IpNet,
    #[serde(default)]
    pub vhid: Option<u8>,
}

impl Default for SimState {
    /// A small router: loopback plus the interfaces of the production example.
    fn default() -> SimState {
        let mut interfaces = BTreeMap::new();
        interfaces.insert(
            "lo0".to_string(),
            SimInterface {
                loopback: true,
                ..SimInterface::default()
            },
        );
        for name in ["em0", "vmx0", "vmx1"] {
            interfaces.insert(name.to_string(), SimInterface::default());
        }
        SimState {
            carp_loaded: true,
            root: true,
            interfaces,
            sysctls: default_sysctls(),
            stats: CarpStats::default(),
            boot: 0,
            loader: BTreeMap::new(),
        }
    }
}

enum Store {
    Memory(Mutex<SimState>),
    File(PathBuf),
}

/// The simulated kernel.
pub struct SimKernel {
    flavour: Flavour,
    store: Store,
}

impl SimKernel {
    /// In memory with the default interfaces.
    pub fn new(flavour: Flavour) -> SimKernel {
        SimKernel::from_state(flavour, SimState::default())
    }

    pub fn from_state(flavour: Flavour, state: SimState) -> SimKernel {
        SimKernel {
            flavour,
            store: Store::Memory(Mutex::new(state)),
        }
    }

    /// In memory, or backed by `state_file` (created with the default state when missing).
    pub fn open(flavour: Flavour, state_file: Option<PathBuf>) -> Result<SimKernel, KernelError> {
        match state_file {
            None => Ok(SimKernel::new(flavour)),
            Some(path) => {
                let k = SimKernel {
                    flavour,
                    store: Store::File(path),
                };
                // Validate the file now so a broken one is reported before any work.
                k.with_state(false, |_| Ok(()))?;
                Ok(k)
            }
        }
    }

    /// A copy of the whole state (tests, the lab).
    pub fn snapshot(&self) -> Result<SimState, KernelError> {
        self.with_state(false, |s| Ok(s.clone()))
    }

    /// What the network does to a vhid: an election won or lost, a peer appearing. Unlike a
    /// forced SET this works from INIT too, and it is how tests and the lab drive transitions.
    pub fn set_state(&self, ifname: &str, vhid: Vhid, state: CarpState) -> Result<(), KernelError> {
        let op = format!("simulate state of {vhid}@{ifname}");
        self.with_state(true, |s| {
            let v = s
                .interfaces
                .get_mut(ifname)
                .ok_or_else(|| KernelError::errno(op.clone(), libc::ENXIO))?
                .vhids
                .get_mut(&(vhid.get() as u8))
                .ok_or_else(|| KernelError::errno(op.clone(), libc::ENOENT))?;
            // A vhid that cannot run stays INIT, whatever the network says.
            if !v.suppressed {
                v.state = state;
            }
            Ok(())
        })
    }

    /// The interface's link goes down or comes back (`ifconfig vmx1 down`, a cable): its
    /// vhids go to INIT and demote, or return to BACKUP and stop demoting (`carp_sc_state`).
    pub fn set_link(&self, ifname: &str, up: bool) -> Result<(), KernelError> {
        let op = format!(
            "simulate link {} on {ifname}",
            if up { "up" } else { "down" }
        );
        self.with_state(true, |s| {
            s.iface_mut(&op, ifname)?.up = up;
            s.sync_runnable();
            Ok(())
        })
    }

    /// What a reboot does to kernel CARP: the next boot identity, every `net.inet.carp.*`
    /// sysctl back to its default (demotion 0) then the `loader` tunables applied,
    /// statistics zeroed, and every vhid (re-created by rc.conf) starting again from INIT:
    /// BACKUP when it can run, INIT (and demoting) when it cannot.
    pub fn reboot(&self) -> Result<BootId, KernelError> {
        self.with_state(true, |s| {
            s.boot += 1;
            s.sysctls = default_sysctls();
            for (k, v) in &s.loader {
                s.sysctls.insert(*k, *v);
            }
            s.stats = CarpStats::default();
            for iface in s.interfaces.values_mut() {
                for (id, v) in iface.vhids.iter_mut() {
                    // INIT, and BACKUP once it has an address (rc.conf gives it one); then
                    // sync_runnable puts back in INIT what cannot run.
                    let addressed = iface.addresses.iter().any(|a| a.vhid == Some(*id));
                    v.state = if addressed {
                        CarpState::Backup
                    } else {
                        CarpState::Init
                    };
                    v.suppressed = false;
                }
            }
            s.sync_runnable();
            Ok(s.boot_id())
        })
    }

    /// Replace the whole state (tests).
    pub fn replace(&self, state: SimState) -> Result<(), KernelError> {
        self.with_state(true, |s| {
            *s = state;
            Ok(())
        })
    }

    fn backend(&self) -> &'static str {
        match self.flavour {
            Flavour::FreeBsd14 => "sim",
            Flavour::FreeBsd13 => "sim13",
        }
    }

    /// Runs `f` on the state: under the mutex in memory; for a file, under an exclusive lock,
    /// load, change, and (when `write` and `f` succeeded) atomically replace.
    fn with_state<R>(
        &self,
        write: bool,
        f: impl FnOnce(&mut SimState) -> Result<R, KernelError>,
    ) -> Result<R, KernelError> {
        match &self.store {
            Store::Memory(m) => {
                // A panic while holding the lock cannot leave a half-applied change behind
                // (f works on the state in place but only the simulator's own code runs
                // there), so a poisoned lock is still usable.
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut g)
            }
            Store::File(path) => with_state_file(path, write, f),
        }
    }
}

fn file_error(path: &Path, what: &str, e: impl std::fmt::Display) -> KernelError {
    KernelError::new(
        format!("simulated kernel state {}", path.display()),
        format!("{what}: {e}"),
    )
    .hint("fix or delete the state file (deleting it starts a fresh simulated kernel)")
}

fn with_state_file<R>(
    path: &Path,
    write: bool,
    f: impl FnOnce(&mut SimState) -> Result<R, KernelError>,
) -> Result<R, KernelError> {
    let lock_path = path.with_extension("lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| file_error(&lock_path, "cannot open the lock file", e))?;
    lock.lock()
        .map_err(|e| file_error(&lock_path, "cannot lock", e))?;
    let mut state = match fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<SimState>(&bytes)
            .map_err(|e| file_error(path, "not a valid simulated kernel state", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SimState::default(),
        Err(e) => return Err(file_error(path, "cannot read", e)),
    };
    let before = state.clone();
    let r = f(&mut state)?;
    if write && state != before || !path.exists() {
        store(path, &state)?;
    }
    Ok(r)
}

fn store(path: &Path, state: &SimState) -> Result<(), KernelError> {
    let tmp = path.with_extension("tmp");
    let bytes =
        serde_json::to_vec_pretty(state).map_err(|e| file_error(path, "cannot encode", e))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts
        .open(&tmp)
        .map_err(|e| file_error(&tmp, "cannot create", e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(&tmp, "cannot write", e))?;
    fs::rename(&tmp, path).map_err(|e| file_error(path, "cannot replace", e))
}

impl SimState {
    fn boot_id(&self) -> BootId {
        BootId(format!("sim:{}", self.boot))
    }

    fn sysctl(&self, knob: Sysctl) -> i64 {
        self.sysctls
            .get(&knob)
            .copied()
            .unwrap_or(knob.default_value())
    }

    /// `carp_sc_state` for every vhid with an address: one that cannot run (interface down,
    /// allow=0) goes to INIT and adds the ifdown demotion factor once; one that can run again
    /// removes it and goes from INIT to BACKUP.
    fn sync_runnable(&mut self) {
        let allow = self.sysctl(Sysctl::Allow) != 0;
        let factor = self.sysctl(Sysctl::IfdownDemotionFactor);
        let mut delta = 0i64;
        for iface in self.interfaces.values_mut() {
            let runnable = allow && iface.up;
            for (id, v) in iface.vhids.iter_mut() {
                if !iface.addresses.iter().any(|a| a.vhid == Some(*id)) {
                    continue;
                }
                if !runnable {
                    v.state = CarpState::Init;
                    if !v.suppressed {
                        v.suppressed = true;
                        delta += factor;
                    }
                } else if v.suppressed {
                    v.suppressed = false;
                    delta -= factor;
                    if v.state == CarpState::Init {
                        v.state = CarpState::Backup;
                    }
                }
            }
        }
        self.demotion_adjust(delta);
    }

    /// `carp_demote_adj`: adds to the global demotion (no floor).
    fn demotion_adjust(&mut self, delta: i64) {
        if delta != 0 {
            let cur = self.sysctl(Sysctl::Demotion);
            self.sysctls
                .insert(Sysctl::Demotion, cur.saturating_add(delta));
        }
    }

    fn check_loaded(&self, op: &str) -> Result<(), KernelError> {
        if self.carp_loaded {
            Ok(())
        } else {
            Err(KernelError::errno(op, libc::EPROTONOSUPPORT))
        }
    }

    fn check_root(&self, op: &str) -> Result<(), KernelError> {
        if self.root {
            Ok(())
        } else {
            Err(KernelError::errno(op, libc::EPERM))
        }
    }

    fn iface(&self, op: &str, ifname: &str) -> Result<&SimInterface, KernelError> {
        self.interfaces
            .get(ifname)
            .ok_or_else(|| KernelError::errno(op, libc::ENXIO))
    }

    fn iface_mut(&mut self, op: &str, ifname: &str) -> Result<&mut SimInterface, KernelError> {
        self.interfaces
            .get_mut(ifname)
            .ok_or_else(|| KernelError::errno(op, libc::ENXIO))
    }

    fn read_group(&self, flavour: Flavour, ifname: &str, vhid: u8, v: &SimVhid) -> KernelGroup {
        let iface = &self.interfaces[ifname];
        let mut addresses: Vec<IpNet> = iface
            .addresses
            .iter()
            .filter(|a| a.vhid == Some(vhid))
            .map(|a| a.addr)
            .collect();
        addresses.sort();
        let key = if !self.root {
            KeyView::Hidden
        } else if v.key.is_empty() {
            KeyView::Unset
        } else {
            match CarpKey::new(v.key.clone()) {
                Ok(k) => KeyView::Known(k),
                Err(_) => KeyView::Hidden,
            }
        };
        let (peer, peer6) = match flavour {
            Flavour::FreeBsd14 => (v.peer, v.peer6),
            Flavour::FreeBsd13 => (None, None),
        };
        KernelGroup {
            ifname: ifname.to_string(),
            vhid: Vhid::new(u32::from(vhid)).expect("vhids are stored in range"),
            state: v.state,
            advbase: v.advbase,
            advskew: v.advskew,
            key,
            peer,
            peer6,
            addresses,
        }
    }
}

impl Kernel for SimKernel {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: self.backend(),
            unicast: self.flavour == Flavour::FreeBsd14,
        }
    }

    fn interfaces(&self) -> Result<Vec<String>, KernelError> {
        self.with_state(false, |s| Ok(s.interfaces.keys().cloned().collect()))
    }

    fn groups(&self, ifname: &str) -> Result<Vec<KernelGroup>, KernelError> {
        let op = format!("GET carp on {ifname} ({})", self.backend());
        self.with_state(false, |s| {
            s.check_loaded(&op)?;
            let iface = s.iface(&op, ifname)?;
            Ok(iface
                .vhids
                .iter()
                .map(|(vhid, v)| s.read_group(self.flavour, ifname, *vhid, v))
                .collect())
        })
    }

    fn group(&self, ifname: &str, vhid: Vhid) -> Result<Option<KernelGroup>, KernelError> {
        let op = format!("GET carp {vhid}@{ifname} ({})", self.backend());
        self.with_state(false, |s| {
            s.check_loaded(&op)?;
            let iface = s.iface(&op, ifname)?;
            Ok(iface
                .vhids
                .get(&(vhid.get() as u8))
                .map(|v| s.read_group(self.flavour, ifname, vhid.get() as u8, v)))
        })
    }

    fn set_raw(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError> {
        let op = format!("SET carp {}@{ifname} ({})", req.vhid, self.backend());
        let flavour = self.flavour;
        self.with_state(true, |s| {
            s.check_loaded(&op)?;
            s.check_root(&op)?;
            let iface = s.iface_mut(&op, ifname)?;
            if iface.loopback {
                return Err(KernelError::errno(op, libc::EOPNOTSUPP));
            }
            let invalid = || {
                KernelError::errno(op.clone(), libc::EINVAL).detail(format!(
                    "advbase {} / advskew {} rejected as invalid",
                    req.advbase, req.advskew
                ))
            };
            let vhid_id = req.vhid.get() as u8;
            if flavour == Flavour::FreeBsd14 {
                // carp_ioctl_set on 14+: carp_alloc() first, then the checks, each value
                // stored as soon as it passed; an EINVAL leaves what came before it.
                iface.vhids.entry(vhid_id).or_insert_with(SimVhid::new);
                if req.advbase > MAX_VHID {
                    return Err(invalid());
                }
                if req.advbase != 0
                    && let Some(v) = iface.vhids.get_mut(&vhid_id)
                {
                    v.advbase = req.advbase;
                }
                if req.advskew >= 255 {
                    return Err(invalid());
                }
            } else if req.advskew >= 255 || req.advbase > MAX_VHID {
                return Err(invalid());
            }
            if flavour == Flavour::FreeBsd13 {
                let unicast4 = req
                    .peer
                    .is_some_and(|p| p != MULTICAST_V4 && !p.is_unspecified());
                let unicast6 = req
                    .peer6
                    .is_some_and(|p| p != MULTICAST_V6 && !p.is_unspecified());
                if unicast4 || unicast6 {
                    return Err(super::unicast_unsupported(op));
                }
            }
            let v = iface.vhids.entry(vhid_id).or_insert_with(SimVhid::new);
            v.advskew = req.advskew;
            if req.advbase != 0 {
                v.advbase = req.advbase;
            }
            if let Some(k) = &req.key
                && !k.is_empty()
            {
                v.key = k.expose().to_vec();
            }
            if let Some(p) = req.peer
                && !p.is_unspecified()
            {
                v.peer = (p != MULTICAST_V4).then_some(p);
            }
            if let Some(p) = req.peer6
                && !p.is_unspecified()
            {
                v.peer6 = (p != MULTICAST_V6).then_some(p);
            }
            if let Some(want) = req.state
                && v.state != CarpState::Init
                && want != CarpState::Init
            {
                v.state = want;
            }
            Ok(())
        })
    }

    fn add_address(&self, ifname: &str, vhid: Vhid, addr: IpNet) -> Result<(), KernelError> {
        let op = format!("attach {addr} vhid {vhid} to {ifname} ({})", self.backend());
        self.with_state(true, |s| {
            s.check_loaded(&op)?;
            s.check_root(&op)?;
            let allow = s.sysctl(Sysctl::Allow) != 0;
            let factor = s.sysctl(Sysctl::IfdownDemotionFactor);
            let mut released = 0;
            let iface = s.iface_mut(&op, ifname)?;
            if iface.vhids.is_empty() {
                return Err(KernelError::errno(op, libc::ENOPROTOOPT));
            }
            let id = vhid.get() as u8;
            let runnable = iface.up && allow;
            let Some(v) = iface.vhids.get_mut(&id) else {
                return Err(KernelError::errno(op, libc::ENOENT));
            };
            if v.state == CarpState::Init && runnable {
                v.state = CarpState::Backup;
            }
            // Like in_aifaddr_ioctl: an existing identical address is deleted first, with the
            // usual consequence that its vhid dies with its last address.
            if let Some(pos) = iface.addresses.iter().position(|a| a.addr.addr() == addr.addr()) {
                let old = iface.addresses.remove(pos);
                if let Some(old_id) = old.vhid
                    && !iface.addresses.iter().any(|a| a.vhid == Some(old_id))
                {
                    if iface.vhids.remove(&old_id).is_some_and(|v| v.suppressed) {
                        released += factor;
                    }
                    if old_id == id {
                        s.demotion_adjust(-released);
                        return Err(KernelError::errno(op, libc::ENOENT).detail(format!(
                            "re-adding {addr} removed the last address of vhid {vhid}, which destroyed it"
                        )));
                    }
                }
            }
            iface.addresses.push(SimAddress {
                addr,
                vhid: Some(id),
            });
            s.demotion_adjust(-released);
            // A vhid that got its first address on an interface that cannot run demotes.
            s.sync_runnable();
            Ok(())
        })
    }

    fn del_address(&self, ifname: &str, addr: IpNet) -> Result<(), KernelError> {
        let op = format!("remove {addr} from {ifname} ({})", self.backend());
        self.with_state(true, |s| {
            s.check_loaded(&op)?;
            s.check_root(&op)?;
            let iface = s.iface_mut(&op, ifname)?;
            let Some(pos) = iface
                .addresses
                .iter()
                .position(|a| a.addr.addr() == addr.addr())
            else {
                return Err(KernelError::errno(op, libc::EADDRNOTAVAIL)
                    .detail(format!("{addr} is not configured on {ifname}")));
            };
            let removed = iface.addresses.remove(pos);
            if let Some(id) = removed.vhid
                && !iface.addresses.iter().any(|a| a.vhid == Some(id))
                // The kernel destroys a vhid together with its last address; carp_destroy
                // takes back the demotion of a suppressed one.
                && iface.vhids.remove(&id).is_some_and(|v| v.suppressed)
            {
                let factor = s.sysctl(Sysctl::IfdownDemotionFactor);
                s.demotion_adjust(-factor);
            }
            Ok(())
        })
    }

    fn sysctl_get(&self, knob: Sysctl) -> Result<i64, KernelError> {
        let op = format!("read {}", knob.mib());
        self.with_state(false, |s| {
            if !s.carp_loaded {
                return Err(KernelError::carp_sysctl_missing(op));
            }
            Ok(s.sysctls
                .get(&knob)
                .copied()
                .unwrap_or(knob.default_value()))
        })
    }

    fn sysctl_set(&self, knob: Sysctl, value: i64) -> Result<(), KernelError> {
        let op = format!("write {}={value}", knob.mib());
        if knob == Sysctl::Demotion {
            return Err(KernelError::demotion_not_settable(op));
        }
        self.with_state(true, |s| {
            if !s.carp_loaded {
                return Err(KernelError::carp_sysctl_missing(op));
            }
            s.check_root(&op)?;
            if knob == Sysctl::Dscp && !(0..=63).contains(&value) {
                return Err(KernelError::errno(op, libc::EINVAL).detail("dscp must be 0..63"));
            }
            if i32::try_from(value).is_err() {
                return Err(KernelError::errno(op, libc::EINVAL).detail("not a C int"));
            }
            s.sysctls.insert(knob, value);
            if knob == Sysctl::Allow {
                // carp_allow_sysctl: every vhid's state follows at once.
                s.sync_runnable();
            }
            Ok(())
        })
    }

    fn demotion_add(&self, delta: i64) -> Result<(), KernelError> {
        let op = format!("add {delta} to net.inet.carp.demotion");
        self.with_state(true, |s| {
            if !s.carp_loaded {
                return Err(KernelError::carp_sysctl_missing(op));
            }
            s.check_root(&op)?;
            let cur = s.sysctls.get(&Sysctl::Demotion).copied().unwrap_or(0);
            s.sysctls
                .insert(Sysctl::Demotion, cur.saturating_add(delta));
            Ok(())
        })
    }

    fn stats(&self) -> Result<CarpStats, KernelError> {
        self.with_state(false, |s| {
            if !s.carp_loaded {
                return Err(KernelError::carp_sysctl_missing("read net.inet.carp.stats"));
            }
            Ok(s.stats)
        })
    }

    fn boot_id(&self) -> Result<BootId, KernelError> {
        self.with_state(false, |s| Ok(s.boot_id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::merge::{Changes, set_merged};

    fn v(n: u32) -> Vhid {
        Vhid::new(n).unwrap()
    }

    fn req(vhid: u32, advskew: u32) -> SetRequest {
        SetRequest {
            vhid: v(vhid),
            advbase: 0,
            advskew,
            key: None,
            peer: None,
            peer6: None,
            state: None,
        }
    }

    #[test]
    fn new_vhid_has_kernel_defaults_and_init_cannot_be_forced() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        let mut r = req(2, 0);
        r.state = Some(CarpState::Master);
        k.set_raw("vmx1", &r).unwrap();
        let g = k.group("vmx1", v(2)).unwrap().unwrap();
        assert_eq!((g.state, g.advbase, g.advskew), (CarpState::Init, 1, 0));
        assert_eq!((g.peer, g.peer6, g.key), (None, None, KeyView::Unset));
    }

    #[test]
    fn advskew_is_always_overwritten_advbase_zero_and_empty_key_keep() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        let mut r = req(2, 100);
        r.advbase = 3;
        r.key = Some(CarpKey::new(b"secret".to_vec()).unwrap());
        r.peer = Some(Ipv4Addr::new(192, 0, 2, 7));
        k.set_raw("vmx1", &r).unwrap();
        // A raw SET that "only" changes nothing resets advskew and keeps the rest.
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        let g = k.group("vmx1", v(2)).unwrap().unwrap();
        assert_eq!(g.advskew, 0);
        assert_eq!(g.advbase, 3);
        assert_eq!(
            g.key,
            KeyView::Known(CarpKey::new(b"secret".to_vec()).unwrap())
        );
        assert_eq!(g.peer, Some(Ipv4Addr::new(192, 0, 2, 7)));
        // The multicast group goes back to multicast.
        let mut r = req(2, 0);
        r.peer = Some(MULTICAST_V4);
        k.set_raw("vmx1", &r).unwrap();
        assert_eq!(k.group("vmx1", v(2)).unwrap().unwrap().peer, None);
    }

    #[test]
    fn merged_set_keeps_advskew_on_the_simulated_kernel() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.set_raw("vmx1", &req(2, 100)).unwrap();
        let ch = Changes {
            key: Some(CarpKey::new(b"pw".to_vec()).unwrap()),
            ..Changes::default()
        };
        set_merged(&k, "vmx1", v(2), &ch).unwrap();
        assert_eq!(k.group("vmx1", v(2)).unwrap().unwrap().advskew, 100);
    }

    #[test]
    fn state_force_only_outside_init_and_addresses_drive_life_cycle() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        let a: IpNet = "51.68.252.230/32".parse().unwrap();
        let b: IpNet = "51.68.252.231/32".parse().unwrap();
        k.add_address("vmx1", v(2), a).unwrap();
        k.add_address("vmx1", v(2), b).unwrap();
        assert_eq!(
            k.group("vmx1", v(2)).unwrap().unwrap().state,
            CarpState::Backup
        );
        let mut r = req(2, 0);
        r.state = Some(CarpState::Master);
        k.set_raw("vmx1", &r).unwrap();
        assert_eq!(
            k.group("vmx1", v(2)).unwrap().unwrap().state,
            CarpState::Master
        );
        assert_eq!(
            k.group("vmx1", v(2)).unwrap().unwrap().addresses,
            vec![a, b]
        );
        k.del_address("vmx1", a).unwrap();
        assert!(k.group("vmx1", v(2)).unwrap().is_some());
        k.del_address("vmx1", b).unwrap();
        assert!(
            k.group("vmx1", v(2)).unwrap().is_none(),
            "last address destroys the vhid"
        );
    }

    #[test]
    fn errnos_match_freebsd() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        let a: IpNet = "10.0.0.1/24".parse().unwrap();
        assert!(
            k.set_raw("em9", &req(2, 0))
                .unwrap_err()
                .is_errno(libc::ENXIO)
        );
        assert!(
            k.set_raw("lo0", &req(2, 0))
                .unwrap_err()
                .is_errno(libc::EOPNOTSUPP)
        );
        // (on vmx0: a 14+ SET creates the vhid before it rejects the advskew)
        assert!(
            k.set_raw("vmx0", &req(2, 255))
                .unwrap_err()
                .is_errno(libc::EINVAL)
        );
        assert!(
            k.add_address("vmx1", v(2), a)
                .unwrap_err()
                .is_errno(libc::ENOPROTOOPT)
        );
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        assert!(
            k.add_address("vmx1", v(3), a)
                .unwrap_err()
                .is_errno(libc::ENOENT)
        );
        assert!(
            k.del_address("vmx1", a)
                .unwrap_err()
                .is_errno(libc::EADDRNOTAVAIL)
        );
        assert!(k.sysctl_set(Sysctl::Demotion, 5).is_err());

        let s = SimState {
            root: false,
            ..SimState::default()
        };
        let k = SimKernel::from_state(Flavour::FreeBsd14, s);
        assert!(
            k.set_raw("vmx1", &req(2, 0))
                .unwrap_err()
                .is_errno(libc::EPERM)
        );

        let s = SimState {
            carp_loaded: false,
            ..SimState::default()
        };
        let k = SimKernel::from_state(Flavour::FreeBsd14, s);
        let e = k.groups("vmx1").unwrap_err();
        assert!(e.is_errno(libc::EPROTONOSUPPORT));
        assert!(e.to_string().contains("kldload carp"), "{e}");
    }

    #[test]
    fn keys_are_hidden_from_non_root() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        let mut r = req(2, 0);
        r.key = Some(CarpKey::new(b"pw".to_vec()).unwrap());
        k.set_raw("vmx1", &r).unwrap();
        let mut s = k.snapshot().unwrap();
        s.root = false;
        k.replace(s).unwrap();
        assert_eq!(k.group("vmx1", v(2)).unwrap().unwrap().key, KeyView::Hidden);
    }

    #[test]
    fn freebsd13_refuses_unicast_peers() {
        let k = SimKernel::new(Flavour::FreeBsd13);
        let mut r = req(2, 0);
        r.peer = Some(Ipv4Addr::new(192, 0, 2, 1));
        let e = k.set_raw("vmx1", &r).unwrap_err();
        assert!(e.to_string().contains("FreeBSD 14"), "{e}");
        assert!(!k.info().unicast);
    }

    #[test]
    fn demotion_adds() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.demotion_add(50).unwrap();
        k.demotion_add(-20).unwrap();
        assert_eq!(k.sysctl_get(Sysctl::Demotion).unwrap(), 30);
        // Like carp_demote_adj: no floor at 0 (which is why the ledger must never subtract
        // more than it added).
        k.demotion_add(-40).unwrap();
        assert_eq!(k.sysctl_get(Sysctl::Demotion).unwrap(), -10);
    }

    #[test]
    fn reboot_changes_the_boot_id_and_resets_sysctls_not_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel.json");
        let k = SimKernel::open(Flavour::FreeBsd14, Some(path.clone())).unwrap();
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        k.sysctl_set(Sysctl::Preempt, 1).unwrap();
        k.demotion_add(240).unwrap();
        let before = k.boot_id().unwrap();
        assert_eq!(before, k.boot_id().unwrap(), "stable within a boot");
        let after = k.reboot().unwrap();
        assert_ne!(before, after);
        // Another handle on the same file sees the new boot.
        let k2 = SimKernel::open(Flavour::FreeBsd14, Some(path)).unwrap();
        assert_eq!(k2.boot_id().unwrap(), after);
        assert_eq!(k2.sysctl_get(Sysctl::Demotion).unwrap(), 0);
        assert_eq!(k2.sysctl_get(Sysctl::Preempt).unwrap(), 0);
        assert!(k2.group("vmx1", v(2)).unwrap().is_some());
    }

    fn state(k: &SimKernel, vhid: u32) -> CarpState {
        k.group("vmx1", v(vhid)).unwrap().unwrap().state
    }

    fn demotion(k: &SimKernel) -> i64 {
        k.sysctl_get(Sysctl::Demotion).unwrap()
    }

    /// issue 16: the first address of a vhid on an interface that is down leaves it in
    /// INIT (the old simulator made it BACKUP regardless).
    #[test]
    fn first_address_keeps_init_until_the_interface_is_up() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.set_link("vmx1", false).unwrap();
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        k.add_address("vmx1", v(2), "10.0.0.1/32".parse().unwrap())
            .unwrap();
        assert_eq!(state(&k, 2), CarpState::Init);
        assert_eq!(demotion(&k), 240, "a vhid that cannot run demotes");
        k.set_state("vmx1", v(2), CarpState::Master).unwrap();
        assert_eq!(state(&k, 2), CarpState::Init, "no election while down");
        k.set_link("vmx1", true).unwrap();
        assert_eq!(state(&k, 2), CarpState::Backup);
        assert_eq!(demotion(&k), 0);
    }

    /// issue 16: interface down puts its vhids in INIT and adds the ifdown demotion factor
    /// once per vhid; up takes it back.
    #[test]
    fn interface_down_means_init_and_demotion_per_vhid() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        for (n, a) in [(2, "10.0.0.2/32"), (3, "10.0.0.3/32")] {
            k.set_raw("vmx1", &req(n, 0)).unwrap();
            k.add_address("vmx1", v(n), a.parse().unwrap()).unwrap();
        }
        k.set_state("vmx1", v(2), CarpState::Master).unwrap();
        k.set_link("vmx1", false).unwrap();
        assert_eq!(
            (state(&k, 2), state(&k, 3)),
            (CarpState::Init, CarpState::Init)
        );
        assert_eq!(demotion(&k), 480);
        k.set_link("vmx1", false).unwrap();
        assert_eq!(demotion(&k), 480, "once per vhid, not per event");
        // Destroying a suppressed vhid takes its part back (carp_destroy).
        k.del_address("vmx1", "10.0.0.3/32".parse().unwrap())
            .unwrap();
        assert_eq!(demotion(&k), 240);
        k.set_link("vmx1", true).unwrap();
        assert_eq!((state(&k, 2), demotion(&k)), (CarpState::Backup, 0));
    }

    /// issue 16: net.inet.carp.allow=0 does what an interface down does, to every vhid.
    #[test]
    fn allow_zero_means_init_and_demotion() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        k.add_address("vmx1", v(2), "10.0.0.2/32".parse().unwrap())
            .unwrap();
        k.set_state("vmx1", v(2), CarpState::Master).unwrap();
        k.sysctl_set(Sysctl::Allow, 0).unwrap();
        assert_eq!((state(&k, 2), demotion(&k)), (CarpState::Init, 240));
        k.sysctl_set(Sysctl::Allow, 1).unwrap();
        assert_eq!((state(&k, 2), demotion(&k)), (CarpState::Backup, 0));
    }

    /// A reboot with `net.inet.carp.allow=0` in loader.conf: vhids re-created by rc.conf
    /// stay INIT (the MASTER of before the reboot does not come back as MASTER).
    #[test]
    fn reboot_applies_loader_tunables_and_restarts_vhids_from_init() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        k.set_raw("vmx1", &req(2, 0)).unwrap();
        k.add_address("vmx1", v(2), "10.0.0.2/32".parse().unwrap())
            .unwrap();
        k.set_state("vmx1", v(2), CarpState::Master).unwrap();
        k.reboot().unwrap();
        assert_eq!(state(&k, 2), CarpState::Backup, "elections start over");
        let mut st = k.snapshot().unwrap();
        st.loader.insert(Sysctl::Allow, 0);
        k.replace(st).unwrap();
        k.reboot().unwrap();
        assert_eq!(k.sysctl_get(Sysctl::Allow).unwrap(), 0);
        assert_eq!((state(&k, 2), demotion(&k)), (CarpState::Init, 240));
    }

    /// issue 16: FreeBSD 14's SET allocates the vhid before it checks the values: an
    /// EINVAL SET leaves a new vhid, and a valid advbase, behind. 13.x checks first here.
    #[test]
    fn freebsd14_set_creates_the_vhid_before_validating() {
        let k = SimKernel::new(Flavour::FreeBsd14);
        let mut r = req(5, 255);
        r.advbase = 7;
        assert!(k.set_raw("vmx1", &r).unwrap_err().is_errno(libc::EINVAL));
        let g = k
            .group("vmx1", v(5))
            .unwrap()
            .expect("the vhid was created");
        assert_eq!((g.state, g.advbase, g.advskew), (CarpState::Init, 7, 0));
        let mut r = req(6, 0);
        r.advbase = 300;
        assert!(k.set_raw("vmx1", &r).unwrap_err().is_errno(libc::EINVAL));
        assert_eq!(k.group("vmx1", v(6)).unwrap().unwrap().advbase, 1);

        let k = SimKernel::new(Flavour::FreeBsd13);
        assert!(k.set_raw("vmx1", &req(5, 255)).is_err());
        assert!(k.group("vmx1", v(5)).unwrap().is_none());
    }

    #[test]
    fn state_file_is_shared_between_instances_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel.json");
        let a = SimKernel::open(Flavour::FreeBsd14, Some(path.clone())).unwrap();
        a.set_raw("vmx1", &req(7, 42)).unwrap();
        let b = SimKernel::open(Flavour::FreeBsd14, Some(path.clone())).unwrap();
        assert_eq!(b.group("vmx1", v(7)).unwrap().unwrap().advskew, 42);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        fs::write(&path, b"{not json").unwrap();
        let e = SimKernel::open(Flavour::FreeBsd14, Some(path))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("not a valid simulated kernel state"),
            "{e}"
        );
    }
}
