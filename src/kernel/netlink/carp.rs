//! The generic netlink family "carp" (FreeBSD 14+, `netinet/ip_carp_nl.h`): building GET and
//! SET requests, parsing GET answers, and [`CarpNetlink`], the handle the FreeBSD kernel
//! backend drives.
//!
//! The builders and the parser are pure, so the exact bytes are tested on any host; only
//! [`CarpNetlink`] talks to a kernel. It keeps the kernel's raw semantics (see
//! [`SetRequest`]): the get-merge-set callers want lives in `kernel::merge`.
//!
//! What the kernel sends back for each vhid (`carp_nl_send`): VHID, STATE, ADVBASE, ADVSKEW,
//! ADDR and ADDR6 always; KEY only when the reader has `PRIV_NETINET_CARP` (root), as the full
//! 20-byte key buffer, zero-padded. Attributes this module does not know (anything newer
//! than FreeBSD 15) are skipped, so a newer kernel still reads.
//!
//! FreeBSD 15 also keeps VRRPv3 vhids in this family: their records carry VERSION 3,
//! VRRP_PRIORITY and VRRP_ADV_INTER and no ADVBASE/ADVSKEW. carpd drives CARP only: such a
//! record parses as [`Answer::Vrrp`] (never an error, never a CARP group), and the backend
//! reports it as not managed by carpd.

use std::net::{Ipv4Addr, Ipv6Addr};

use zeroize::Zeroizing;

use crate::carp::{
    CarpKey, CarpState, IFNAMSIZ, KEY_LEN, KeyView, MULTICAST_V4, MULTICAST_V6, Vhid,
};
use crate::kernel::{KernelError, SetRequest};

use super::attr::attrs;
use super::builder::MsgBuilder;
use super::codec::{
    DecodeError, EncodeError, GenlMsg, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NlMsg,
};

pub const CARP_FAMILY_NAME: &str = "carp";
/// The family's version (`genl_register_family("carp", 0, 2, ...)`), sent in requests.
pub const CARP_FAMILY_VERSION: u8 = 2;

pub const CARP_NL_CMD_GET: u8 = 1;
pub const CARP_NL_CMD_SET: u8 = 2;

pub const CARP_NL_VHID: u16 = 1;
pub const CARP_NL_STATE: u16 = 2;
pub const CARP_NL_ADVBASE: u16 = 3;
pub const CARP_NL_ADVSKEW: u16 = 4;
pub const CARP_NL_KEY: u16 = 5;
pub const CARP_NL_IFINDEX: u16 = 6;
pub const CARP_NL_ADDR: u16 = 7;
pub const CARP_NL_ADDR6: u16 = 8;
pub const CARP_NL_IFNAME: u16 = 9;
/// FreeBSD 15+: 2 = CARP, 3 = VRRPv3.
pub const CARP_NL_VERSION: u16 = 10;
pub const CARP_NL_VRRP_PRIORITY: u16 = 11;
pub const CARP_NL_VRRP_ADV_INTER: u16 = 12;

/// One vhid as a GET answer describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpRecord {
    pub vhid: Vhid,
    pub state: CarpState,
    pub advbase: u32,
    /// The configured advskew, before the global demotion is added.
    pub advskew: u32,
    /// `Hidden` when the KEY attribute is absent: the kernel sends the key to root only, so
    /// for anyone else "no key" and "a key" look the same. When the attribute is present, an
    /// empty or all-zero key is `Unset` (the kernel keeps the key in a zero-padded 20-byte
    /// buffer and authenticates with all 20 bytes, so trailing zeros are not part of it).
    pub key: KeyView,
    /// Unicast IPv4 peer; `None` for multicast (224.0.0.18) or unset (0.0.0.0).
    pub peer: Option<Ipv4Addr>,
    /// Unicast IPv6 peer; `None` for multicast (ff02::12) or unset (::).
    pub peer6: Option<Ipv6Addr>,
}

/// A VRRPv3 vhid (FreeBSD 15+) found in a dump: shown, never managed by carpd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpRecord {
    pub vhid: Vhid,
    pub state: CarpState,
    /// The VERSION attribute (3 for VRRPv3).
    pub version: u8,
    /// VRRP_PRIORITY, when sent.
    pub priority: Option<u8>,
    /// VRRP_ADV_INTER in centiseconds, when sent.
    pub adv_interval: Option<u16>,
}

/// One GET answer: a CARP vhid (VERSION absent or 2) or a VRRP one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Carp(CarpRecord),
    Vrrp(VrrpRecord),
}

/// The VERSION attribute's value for CARP (absent before FreeBSD 15, where every vhid is CARP).
pub const VERSION_CARP: u8 = 2;

/// A GET for `ifname`: every vhid, or only `vhid`. Sent as a dump (one answer per vhid, then
/// `NLMSG_DONE`).
pub fn build_get(
    family: u16,
    ifname: &str,
    vhid: Option<Vhid>,
) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    let mut m = MsgBuilder::genl(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        CARP_NL_CMD_GET,
        CARP_FAMILY_VERSION,
    );
    m.put_cstr(CARP_NL_IFNAME, ifname);
    if let Some(v) = vhid {
        m.put_u32(CARP_NL_VHID, v.get());
    }
    m.finish()
}

/// A SET carrying exactly what `req` says, with the kernel's semantics: IFNAME, VHID, ADVBASE
/// and ADVSKEW always (advskew is always overwritten, advbase 0 keeps); KEY only when given
/// and non-empty (empty keeps); ADDR/ADDR6 only when given (absent keeps); STATE only for
/// BACKUP or MASTER (the kernel cannot be forced into INIT, and absent means no change).
pub fn build_set(
    family: u16,
    ifname: &str,
    req: &SetRequest,
) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    let mut m = MsgBuilder::genl(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        CARP_NL_CMD_SET,
        CARP_FAMILY_VERSION,
    );
    m.put_cstr(CARP_NL_IFNAME, ifname)
        .put_u32(CARP_NL_VHID, req.vhid.get())
        // s32 in the kernel; anything above i32::MAX is out of range there (EINVAL) anyway.
        .put_i32(
            CARP_NL_ADVBASE,
            i32::try_from(req.advbase).unwrap_or(i32::MAX),
        )
        .put_i32(
            CARP_NL_ADVSKEW,
            i32::try_from(req.advskew).unwrap_or(i32::MAX),
        );
    if let Some(key) = &req.key
        && !key.is_empty()
    {
        m.put(CARP_NL_KEY, key.expose());
    }
    if let Some(peer) = req.peer {
        m.put(CARP_NL_ADDR, &peer.octets());
    }
    if let Some(peer6) = req.peer6 {
        m.put(CARP_NL_ADDR6, &peer6.octets());
    }
    if let Some(state @ (CarpState::Backup | CarpState::Master)) = req.state {
        m.put_u32(CARP_NL_STATE, state.to_kernel());
    }
    m.finish()
}

/// Parses the generic netlink payload of one GET answer that must be a CARP vhid; a VRRP
/// record is an error here (see [`parse_answer`] for dumps that may hold both).
pub fn parse_record(payload: &[u8]) -> Result<CarpRecord, DecodeError> {
    match parse_answer(payload)? {
        Answer::Carp(r) => Ok(r),
        Answer::Vrrp(v) => Err(DecodeError::new(format!(
            "vhid {} is a VRRP (version {}) record, not CARP",
            v.vhid, v.version
        ))),
    }
}

/// Parses the generic netlink payload of one GET answer: CARP or (FreeBSD 15+) VRRP.
pub fn parse_answer(payload: &[u8]) -> Result<Answer, DecodeError> {
    let g = GenlMsg::parse(payload)?;
    if g.cmd != CARP_NL_CMD_GET {
        return Err(DecodeError::new(format!(
            "command {} in a GET answer, expected CARP_NL_CMD_GET ({CARP_NL_CMD_GET})",
            g.cmd
        )));
    }
    let (mut vhid, mut state, mut advbase, mut advskew) = (None, None, None, None);
    let (mut key, mut peer, mut peer6) = (KeyView::Hidden, None, None);
    let (mut version, mut priority, mut adv_interval) = (None, None, None);
    for a in attrs(g.attrs) {
        let a = a?;
        match a.ty {
            CARP_NL_VHID => {
                let v = a.u32().map_err(|e| e.context("VHID"))?;
                vhid =
                    Some(Vhid::new(v).ok_or_else(|| {
                        DecodeError::new(format!("VHID {v} is out of range 1..255"))
                    })?);
            }
            CARP_NL_STATE => {
                let v = a.u32().map_err(|e| e.context("STATE"))?;
                state = Some(CarpState::from_kernel(v).ok_or_else(|| {
                    DecodeError::new(format!(
                        "STATE {v} is none of 0 (INIT), 1 (BACKUP), 2 (MASTER)"
                    ))
                })?);
            }
            CARP_NL_ADVBASE => advbase = Some(non_negative(a.i32(), "ADVBASE")?),
            CARP_NL_ADVSKEW => advskew = Some(non_negative(a.i32(), "ADVSKEW")?),
            CARP_NL_KEY => key = parse_key(a.data)?,
            CARP_NL_ADDR => {
                let ip = Ipv4Addr::from(a.array::<4>().map_err(|e| e.context("ADDR"))?);
                peer = (!ip.is_unspecified() && ip != MULTICAST_V4).then_some(ip);
            }
            CARP_NL_ADDR6 => {
                let ip = Ipv6Addr::from(a.array::<16>().map_err(|e| e.context("ADDR6"))?);
                peer6 = (!ip.is_unspecified() && ip != MULTICAST_V6).then_some(ip);
            }
            CARP_NL_VERSION => {
                version = Some(a.u8().map_err(|e| e.context("VERSION"))?);
            }
            CARP_NL_VRRP_PRIORITY => {
                priority = Some(a.u8().map_err(|e| e.context("VRRP_PRIORITY"))?);
            }
            CARP_NL_VRRP_ADV_INTER => {
                adv_interval = Some(a.u16().map_err(|e| e.context("VRRP_ADV_INTER"))?);
            }
            // IFINDEX, IFNAME and whatever comes next: not part of a record.
            _ => {}
        }
    }
    let missing = |name: &str| DecodeError::new(format!("the answer has no {name} attribute"));
    let vhid = vhid.ok_or_else(|| missing("VHID"))?;
    let state = state.ok_or_else(|| missing("STATE"))?;
    match version {
        None | Some(VERSION_CARP) => {}
        Some(version) => {
            return Ok(Answer::Vrrp(VrrpRecord {
                vhid,
                state,
                version,
                priority,
                adv_interval,
            }));
        }
    }
    Ok(Answer::Carp(CarpRecord {
        vhid,
        state,
        advbase: advbase.ok_or_else(|| missing("ADVBASE"))?,
        advskew: advskew.ok_or_else(|| missing("ADVSKEW"))?,
        key,
        peer,
        peer6,
    }))
}

fn non_negative(v: Result<i32, DecodeError>, name: &str) -> Result<u32, DecodeError> {
    let v = v.map_err(|e| e.context(name))?;
    u32::try_from(v).map_err(|_| DecodeError::new(format!("{name} {v} is negative")))
}

/// The KEY attribute: at most 20 bytes. Errors give the length, never the content.
fn parse_key(data: &[u8]) -> Result<KeyView, DecodeError> {
    if data.len() > KEY_LEN {
        return Err(DecodeError::new(format!(
            "KEY has {} bytes, the kernel's key holds at most {KEY_LEN}",
            data.len()
        )));
    }
    let used = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    match data.get(..used) {
        None | Some([]) => Ok(KeyView::Unset),
        Some(bytes) => CarpKey::new(bytes.to_vec())
            .map(KeyView::Known)
            .map_err(|n| DecodeError::new(format!("KEY has {n} bytes, at most {KEY_LEN}"))),
    }
}

/// The operation name used in errors: "GET carp 2@vmx1 (netlink)", "GET carp on vmx1 (netlink)".
fn get_op(ifname: &str, vhid: Option<Vhid>) -> String {
    match vhid {
        Some(v) => format!("GET carp {v}@{ifname} (netlink)"),
        None => format!("GET carp on {ifname} (netlink)"),
    }
}

fn set_op(ifname: &str, vhid: Vhid) -> String {
    format!("SET carp {vhid}@{ifname} (netlink)")
}

/// One GET answer message, checked to belong to the carp family.
pub(super) fn record_from_msg(op: &str, family: u16, m: &NlMsg<'_>) -> Result<Answer, KernelError> {
    if m.header.ty != family {
        return Err(KernelError::new(
            op,
            format!(
                "unexpected message type {} in the answer (the carp family is {family})",
                m.header.ty
            ),
        ));
    }
    parse_answer(m.payload).map_err(|e| KernelError::new(op, format!("malformed carp record: {e}")))
}

/// A GET dump, split by protocol: the CARP vhids carpd reads and manages, and the VRRP ones
/// (FreeBSD 15+) it only reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub carp: Vec<CarpRecord>,
    pub vrrp: Vec<VrrpRecord>,
}

impl Dump {
    pub(super) fn push(&mut self, a: Answer) {
        match a {
            Answer::Carp(r) => self.carp.push(r),
            Answer::Vrrp(v) => self.vrrp.push(v),
        }
    }
}

/// What a finished GET dump means: ENOENT is "no CARP on this interface" (or no such vhid),
/// an empty list; ENXIO names the missing interface. Records come sorted by vhid.
pub(super) fn finish_get(
    ifname: &str,
    vhid: Option<Vhid>,
    result: Result<(), KernelError>,
    dump: Dump,
) -> Result<Dump, KernelError> {
    let Dump {
        carp: mut records,
        mut vrrp,
    } = dump;
    match result {
        Ok(()) => {}
        Err(e) if e.is_errno(libc::ENOENT) => return Ok(Dump::default()),
        Err(e) if e.is_errno(libc::ENXIO) => {
            let detail = format!("no such interface '{}'", ifname.escape_default());
            return Err(e.detail(detail));
        }
        Err(e) => return Err(e),
    }
    if let Some(v) = vhid {
        records.retain(|r| r.vhid == v);
        vrrp.retain(|r| r.vhid == v);
    }
    records.sort_by_key(|r| r.vhid);
    vrrp.sort_by_key(|r| r.vhid);
    Ok(Dump {
        carp: records,
        vrrp,
    })
}

/// Refuses names the kernel would misread: empty, too long for IFNAMSIZ, or with a NUL.
fn check_ifname(op: &str, ifname: &str) -> Result<(), KernelError> {
    if ifname.is_empty() || ifname.len() >= IFNAMSIZ || ifname.contains('\0') {
        return Err(KernelError::new(
            op,
            format!(
                "'{}' is not an interface name: 1..{} bytes without NUL",
                ifname.escape_default(),
                IFNAMSIZ - 1
            ),
        ));
    }
    Ok(())
}

/// Refuses what the kernel would silently ignore in a SET.
fn check_set(op: &str, req: &SetRequest) -> Result<(), KernelError> {
    // carp_ioctl_set() takes a key only when its first byte is not NUL: such a key would
    // leave the old one in place while the caller believes it changed.
    if let Some(key) = &req.key
        && key.expose().first() == Some(&0)
    {
        return Err(KernelError::new(
            op,
            "the key starts with a NUL byte, which the kernel takes for \"keep the current key\"",
        )
        .hint("use a key that does not start with a NUL byte"));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
pub use handle::CarpNetlink;

#[cfg(any(target_os = "linux", target_os = "freebsd"))]
mod handle {
    use super::*;
    use crate::kernel::CARP_NOT_LOADED_HINT;
    use crate::kernel::netlink::ctrl::Family;
    use crate::kernel::netlink::socket::GenlSocket;

    /// The carp family on one generic netlink socket. `Send + Sync`: requests are serialized
    /// by the socket.
    #[derive(Debug)]
    pub struct CarpNetlink {
        sock: GenlSocket,
        /// The family as last resolved. A failed request resolves it again: unloading and
        /// reloading carp.ko (or re-creating a VNET) may register it under another id, and
        /// a daemon that kept the old one would fail every request until restarted.
        family: std::sync::Mutex<Family>,
        /// The family's name: [`CARP_FAMILY_NAME`], another only in tests.
        name: &'static str,
    }

    impl CarpNetlink {
        /// Opens a socket and resolves the family "carp". When the kernel has no such family
        /// (or no netlink at all) the error's hint is [`CARP_NOT_LOADED_HINT`].
        pub fn open() -> Result<CarpNetlink, KernelError> {
            let sock = GenlSocket::open().map_err(|e| {
                if e.is_errno(libc::EAFNOSUPPORT) || e.is_errno(libc::EPROTONOSUPPORT) {
                    e.hint(CARP_NOT_LOADED_HINT)
                } else {
                    e
                }
            })?;
            CarpNetlink::with_socket(sock)
        }

        /// Resolves "carp" on an already opened socket (e.g. one with another timeout).
        pub fn with_socket(sock: GenlSocket) -> Result<CarpNetlink, KernelError> {
            CarpNetlink::with_family_name(sock, CARP_FAMILY_NAME)
        }

        fn with_family_name(
            sock: GenlSocket,
            name: &'static str,
        ) -> Result<CarpNetlink, KernelError> {
            let family = resolve(&sock, name)?;
            Ok(CarpNetlink {
                sock,
                family: std::sync::Mutex::new(family),
                name,
            })
        }

        fn family(&self) -> std::sync::MutexGuard<'_, Family> {
            self.family.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// The id the kernel gave the carp family.
        pub fn family_id(&self) -> u16 {
            self.family().id
        }

        /// The carp family's version as the controller reports it (2 on FreeBSD 14 and 15).
        pub fn family_version(&self) -> u32 {
            self.family().version
        }

        /// Runs `request` with the family id; when it fails, resolves the family again and,
        /// if its id changed (carp.ko was reloaded), runs it once more with the new one.
        /// The family gone altogether is carp.ko unloaded: that error, with its fix.
        fn with_family<T>(
            &self,
            request: impl Fn(u16) -> Result<T, KernelError>,
        ) -> Result<T, KernelError> {
            let id = self.family_id();
            let first = request(id);
            let Err(e) = first else {
                return first;
            };
            match resolve(&self.sock, self.name) {
                Ok(family) if family.id != id => {
                    tracing::info!(
                        old_id = id,
                        new_id = family.id,
                        "the generic netlink family \"{}\" has a new id (carp.ko reloaded?): using it",
                        self.name
                    );
                    let new_id = family.id;
                    *self.family() = family;
                    request(new_id)
                }
                Ok(_) => Err(e),
                Err(gone) if gone.is_errno(libc::ENOENT) => Err(gone),
                Err(_) => Err(e),
            }
        }

        /// The vhids of `ifname` (all, or only `vhid`), sorted by vhid, CARP and VRRP apart.
        /// An interface without CARP, or without that vhid, gives an empty dump; a missing
        /// interface is an error naming it (ENXIO).
        pub fn get(&self, ifname: &str, vhid: Option<Vhid>) -> Result<Dump, KernelError> {
            let op = get_op(ifname, vhid);
            check_ifname(&op, ifname)?;
            // The raw answer goes through the family check first: a stale id may be answered
            // ENOENT, which for the family itself means "no such vhid" (an empty dump).
            let got = self.with_family(|family| {
                let mut msg = build_get(family, ifname, vhid)
                    .map_err(|e| KernelError::new(&op, e.to_string()))?;
                let mut dump = Dump::default();
                self.sock.dump(&op, &mut msg, |m| {
                    dump.push(record_from_msg(&op, family, m)?);
                    Ok(())
                })?;
                Ok(dump)
            });
            match got {
                Ok(dump) => finish_get(ifname, vhid, Ok(()), dump),
                Err(e) => finish_get(ifname, vhid, Err(e), Dump::default()),
            }
        }

        /// A raw SET with the kernel's semantics (see [`SetRequest`]). Needs root.
        pub fn set(&self, ifname: &str, req: &SetRequest) -> Result<(), KernelError> {
            let op = set_op(ifname, req.vhid);
            check_ifname(&op, ifname)?;
            check_set(&op, req)?;
            self.with_family(|family| {
                let mut msg = build_set(family, ifname, req)
                    .map_err(|e| KernelError::new(&op, e.to_string()))?;
                // A SET is answered by its acknowledgement alone; nothing else is expected.
                self.sock.request(&op, &mut msg, |_| Ok(()))
            })
        }
    }

    /// Resolves the family `name`; its absence is carp.ko not loaded, with the fix.
    fn resolve(sock: &GenlSocket, name: &str) -> Result<Family, KernelError> {
        sock.family(name).map_err(|e| {
            if e.is_errno(libc::ENOENT) {
                let detail = format!(
                    "{} (carp.ko is not loaded, or the kernel is older than FreeBSD 14)",
                    e.detail
                );
                e.detail(detail).hint(CARP_NOT_LOADED_HINT)
            } else {
                e
            }
        })
    }

    /// A family id that went stale (as after a carp.ko reload) is resolved again on the first
    /// failed request. "carp" does not exist on Linux: the real controller's own family
    /// stands in, under a forged stale id.
    #[cfg(all(test, target_os = "linux"))]
    #[test]
    fn a_stale_family_id_is_resolved_again_after_a_failed_request() {
        let sock = GenlSocket::open().unwrap();
        let nl = CarpNetlink::with_family_name(sock, "nlctrl").unwrap();
        let real = nl.family_id();
        nl.family().id = 0x7ff0;
        // nlctrl does not speak CARP: the request fails either way; what matters is that
        // the failure under the stale id made carpd look the family up again.
        let _ = nl.get("lo", None);
        assert_eq!(nl.family_id(), real);
    }
}

/// Encodes a GET answer the way the kernel's `carp_nl_send` does (test support for the
/// decoder's round-trip and fuzz tests).
#[cfg(test)]
pub(super) fn encode_record(
    family: u16,
    seq: u32,
    r: &CarpRecord,
    extra: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    use super::codec::{NLM_F_MULTI, stamp};
    let mut m = MsgBuilder::genl(family, NLM_F_MULTI, CARP_NL_CMD_GET, 0);
    m.put_u32(CARP_NL_VHID, r.vhid.get())
        .put_u32(CARP_NL_STATE, r.state.to_kernel())
        .put_i32(CARP_NL_ADVBASE, r.advbase as i32)
        .put_i32(CARP_NL_ADVSKEW, r.advskew as i32)
        .put(CARP_NL_ADDR, &r.peer.unwrap_or(MULTICAST_V4).octets())
        .put(CARP_NL_ADDR6, &r.peer6.unwrap_or(MULTICAST_V6).octets());
    match &r.key {
        KeyView::Hidden => {}
        KeyView::Unset => {
            m.put(CARP_NL_KEY, &[0u8; KEY_LEN]);
        }
        KeyView::Known(k) => {
            let mut padded = [0u8; KEY_LEN];
            padded[..k.expose().len()].copy_from_slice(k.expose());
            m.put(CARP_NL_KEY, &padded);
        }
    }
    for (ty, data) in extra {
        m.put(*ty, data);
    }
    let mut bytes = m.finish().expect("small test record").to_vec();
    stamp(&mut bytes, seq, 0).expect("has a header");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::exchange::{Progress, handle_datagram};

    fn vhid(v: u32) -> Vhid {
        Vhid::new(v).unwrap()
    }

    fn key(s: &[u8]) -> CarpKey {
        CarpKey::new(s.to_vec()).unwrap()
    }

    fn req(v: u32) -> SetRequest {
        SetRequest {
            vhid: vhid(v),
            advbase: 0,
            advskew: 0,
            key: None,
            peer: None,
            peer6: None,
            state: None,
        }
    }

    // Byte-exact expectations are for little-endian hosts (amd64); addresses are in network
    // order on every host.
    #[cfg(target_endian = "little")]
    #[test]
    fn get_request_bytes() {
        let m = build_get(0x21, "vmx1", Some(vhid(2))).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            40, 0, 0, 0,        // nlmsg_len = 16 + 4 + 12 + 8
            0x21, 0,            // nlmsg_type = the carp family id
            0x01, 0x03,         // NLM_F_REQUEST | NLM_F_DUMP (0x300)
            0, 0, 0, 0,         // seq (stamped when sent)
            0, 0, 0, 0,         // pid
            1, 2, 0, 0,         // CARP_NL_CMD_GET, version 2, reserved
            9, 0, 9, 0,         // IFNAME: 4 + 5 bytes
            b'v', b'm', b'x', b'1', 0, 0, 0, 0, // "vmx1\0" + 3 bytes of padding
            8, 0, 1, 0,         // VHID
            2, 0, 0, 0,         // 2
        ];
        assert_eq!(&m[..], expected);

        // Without a vhid: every vhid of the interface.
        let m = build_get(0x21, "em0", None).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            28, 0, 0, 0, 0x21, 0, 0x01, 0x03, 0, 0, 0, 0, 0, 0, 0, 0,
            1, 2, 0, 0,
            8, 0, 9, 0, b'e', b'm', b'0', 0, // IFNAME "em0\0", no padding needed
        ];
        assert_eq!(&m[..], expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn set_request_bytes_with_everything() {
        let r = SetRequest {
            advbase: 1,
            advskew: 100,
            key: Some(key(b"secret")),
            peer: Some(Ipv4Addr::new(178, 32, 70, 110)),
            peer6: Some("2001:db8::1".parse().unwrap()),
            state: Some(CarpState::Master),
            ..req(2)
        };
        let m = build_set(0x21, "vmx1", &r).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            104, 0, 0, 0,       // nlmsg_len = 16 + 4 + 12 + 8 + 8 + 8 + 12 + 8 + 20 + 8
            0x21, 0,            // the carp family id
            0x05, 0,            // NLM_F_REQUEST | NLM_F_ACK
            0, 0, 0, 0, 0, 0, 0, 0, // seq, pid
            2, 2, 0, 0,         // CARP_NL_CMD_SET, version 2
            9, 0, 9, 0, b'v', b'm', b'x', b'1', 0, 0, 0, 0, // IFNAME "vmx1\0"
            8, 0, 1, 0, 2, 0, 0, 0,     // VHID 2
            8, 0, 3, 0, 1, 0, 0, 0,     // ADVBASE 1
            8, 0, 4, 0, 100, 0, 0, 0,   // ADVSKEW 100
            10, 0, 5, 0, b's', b'e', b'c', b'r', b'e', b't', 0, 0, // KEY "secret", raw, padded
            8, 0, 7, 0, 178, 32, 70, 110, // ADDR, network order
            20, 0, 8, 0,                // ADDR6, network order
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            8, 0, 2, 0, 2, 0, 0, 0,     // STATE 2 (MASTER)
        ];
        assert_eq!(&m[..], expected);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn set_request_bytes_minimal_keeps_everything_but_advskew() {
        // No key, an empty key, no peers, INIT: none of them is sent.
        for (k, state) in [(None, None), (Some(key(b"")), Some(CarpState::Init))] {
            let r = SetRequest {
                key: k,
                state,
                ..req(7)
            };
            let m = build_set(0x21, "vmx1", &r).unwrap();
            #[rustfmt::skip]
            let expected: &[u8] = &[
                56, 0, 0, 0, 0x21, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                2, 2, 0, 0,
                9, 0, 9, 0, b'v', b'm', b'x', b'1', 0, 0, 0, 0, // IFNAME
                8, 0, 1, 0, 7, 0, 0, 0,     // VHID 7
                8, 0, 3, 0, 0, 0, 0, 0,     // ADVBASE 0 = keep
                8, 0, 4, 0, 0, 0, 0, 0,     // ADVSKEW 0: always written
            ];
            assert_eq!(&m[..], expected);
        }
        // BACKUP is sent as 1; the multicast group is sent as such (back to multicast).
        let r = SetRequest {
            state: Some(CarpState::Backup),
            peer: Some(MULTICAST_V4),
            ..req(7)
        };
        let m = build_set(0x21, "vmx1", &r).unwrap();
        assert_eq!(
            &m[56..],
            &[8, 0, 7, 0, 224, 0, 0, 18, 8, 0, 2, 0, 1, 0, 0, 0]
        );
    }

    /// A dump as FreeBSD sends it to root: two answers in one read, then NLMSG_DONE.
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    const TWO_RECORD_DUMP: &[u8] = &[
        // --- vhid 1: MASTER, multicast, key "pw" ---
        104, 0, 0, 0,           // nlmsg_len = 16 + 4 + 4 * 8 + 8 + 20 + 24
        0x21, 0,                // the carp family id
        0x02, 0,                // NLM_F_MULTI
        7, 0, 0, 0,             // seq 7
        0x34, 0x12, 0, 0,       // pid (our port)
        1, 0, 0, 0,             // CARP_NL_CMD_GET, version 0 (as FreeBSD answers)
        8, 0, 1, 0, 1, 0, 0, 0, // VHID 1
        8, 0, 2, 0, 2, 0, 0, 0, // STATE 2 (MASTER)
        8, 0, 3, 0, 1, 0, 0, 0, // ADVBASE 1
        8, 0, 4, 0, 0, 0, 0, 0, // ADVSKEW 0
        8, 0, 7, 0, 224, 0, 0, 18, // ADDR 224.0.0.18: multicast
        20, 0, 8, 0,            // ADDR6 ff02::12: multicast
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12,
        24, 0, 5, 0,            // KEY: the whole 20-byte buffer
        b'p', b'w', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        // --- vhid 2: BACKUP, unicast peers, no key (not root), FreeBSD 15 extras ---
        112, 0, 0, 0,           // nlmsg_len = 16 + 4 + 4 * 8 + 8 + 20 + 4 * 8
        0x21, 0, 0x02, 0, 7, 0, 0, 0, 0x34, 0x12, 0, 0,
        1, 0, 0, 0,
        8, 0, 1, 0, 2, 0, 0, 0,   // VHID 2
        8, 0, 2, 0, 1, 0, 0, 0,   // STATE 1 (BACKUP)
        8, 0, 3, 0, 3, 0, 0, 0,   // ADVBASE 3
        8, 0, 4, 0, 100, 0, 0, 0, // ADVSKEW 100
        8, 0, 7, 0, 178, 32, 70, 110, // ADDR 178.32.70.110
        20, 0, 8, 0,              // ADDR6 2001:db8::1
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        5, 0, 10, 0, 2, 0, 0, 0,  // VERSION 2 (u8 + padding): CARP
        5, 0, 11, 0, 100, 0, 0, 0, // VRRP_PRIORITY 100: ignored on a CARP vhid
        6, 0, 12, 0, 100, 0, 0, 0, // VRRP_ADV_INTER 100: ignored on a CARP vhid
        8, 0, 99, 0, 1, 2, 3, 4,  // an attribute from the future: ignored
        // --- end of the dump ---
        20, 0, 0, 0, 3, 0, 0x02, 0, 7, 0, 0, 0, 0x34, 0x12, 0, 0, // NLMSG_DONE, seq 7
        0, 0, 0, 0,             // the dump's result: 0
    ];

    fn run_get(
        datagram: &[u8],
        seq: u32,
        vhid: Option<Vhid>,
    ) -> Result<Vec<CarpRecord>, KernelError> {
        run_dump(datagram, seq, vhid).map(|d| d.carp)
    }

    fn run_dump(datagram: &[u8], seq: u32, vhid: Option<Vhid>) -> Result<Dump, KernelError> {
        let op = get_op("vmx1", vhid);
        let mut dump = Dump::default();
        let result = handle_datagram(&op, datagram, seq, &mut |m| {
            dump.push(record_from_msg(&op, 0x21, m)?);
            Ok(())
        })
        .map(|p| assert_eq!(p, Progress::Finished, "the dump must end in this datagram"));
        finish_get("vmx1", vhid, result, dump)
    }

    /// issue 16: a FreeBSD 15 dump mixing a CARP vhid and a VRRPv3 one (VERSION 3,
    /// VRRP_PRIORITY, VRRP_ADV_INTER, no ADVBASE/ADVSKEW) used to fail as a whole ("no
    /// ADVBASE attribute"); the VRRP vhid is now reported apart and the CARP one read.
    #[cfg(target_endian = "little")]
    #[test]
    fn a_dump_with_a_vrrp_vhid_reads_the_carp_ones_and_reports_the_vrrp_one() {
        #[rustfmt::skip]
        let dump: &[u8] = &[
            // --- vhid 1: CARP with VERSION 2 (FreeBSD 15 sends it) ---
            60, 0, 0, 0,            // nlmsg_len = 16 + 4 + 4 * 8 + 8
            0x21, 0, 0x02, 0, 7, 0, 0, 0, 0x34, 0x12, 0, 0,
            1, 0, 0, 0,
            8, 0, 1, 0, 1, 0, 0, 0, // VHID 1
            8, 0, 2, 0, 1, 0, 0, 0, // STATE 1 (BACKUP)
            8, 0, 3, 0, 1, 0, 0, 0, // ADVBASE 1
            8, 0, 4, 0, 20, 0, 0, 0, // ADVSKEW 20
            5, 0, 10, 0, 2, 0, 0, 0, // VERSION 2
            // --- vhid 9: VRRPv3 ---
            60, 0, 0, 0,            // nlmsg_len = 16 + 4 + 2 * 8 + 3 * 8
            0x21, 0, 0x02, 0, 7, 0, 0, 0, 0x34, 0x12, 0, 0,
            1, 0, 0, 0,
            8, 0, 1, 0, 9, 0, 0, 0, // VHID 9
            8, 0, 2, 0, 2, 0, 0, 0, // STATE 2 (MASTER)
            5, 0, 10, 0, 3, 0, 0, 0, // VERSION 3
            5, 0, 11, 0, 150, 0, 0, 0, // VRRP_PRIORITY 150
            6, 0, 12, 0, 100, 0, 0, 0, // VRRP_ADV_INTER 100 cs
            // --- end of the dump ---
            20, 0, 0, 0, 3, 0, 0x02, 0, 7, 0, 0, 0, 0x34, 0x12, 0, 0,
            0, 0, 0, 0,
        ];
        let d = run_dump(dump, 7, None).unwrap();
        assert_eq!(
            d.carp
                .iter()
                .map(|r| (r.vhid.get(), r.advskew))
                .collect::<Vec<_>>(),
            [(1, 20)]
        );
        assert_eq!(
            d.vrrp,
            [VrrpRecord {
                vhid: vhid(9),
                state: CarpState::Master,
                version: 3,
                priority: Some(150),
                adv_interval: Some(100),
            }]
        );
        // Asking for the VRRP vhid alone gives no CARP record, and no error either.
        let d = run_dump(dump, 7, Some(vhid(9))).unwrap();
        assert!(d.carp.is_empty() && d.vrrp.len() == 1, "{d:?}");
        // parse_record (a single CARP answer) names what it got instead.
        let vrrp_payload = &dump[60 + 16..60 + 60];
        let e = parse_record(vrrp_payload).unwrap_err().to_string();
        assert!(e.contains("VRRP") && e.contains("vhid 9"), "{e}");
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn decodes_a_two_record_dump() {
        let got = run_get(TWO_RECORD_DUMP, 7, None).unwrap();
        assert_eq!(
            got,
            vec![
                CarpRecord {
                    vhid: vhid(1),
                    state: CarpState::Master,
                    advbase: 1,
                    advskew: 0,
                    key: KeyView::Known(key(b"pw")),
                    peer: None,
                    peer6: None,
                },
                CarpRecord {
                    vhid: vhid(2),
                    state: CarpState::Backup,
                    advbase: 3,
                    advskew: 100,
                    key: KeyView::Hidden,
                    peer: Some(Ipv4Addr::new(178, 32, 70, 110)),
                    peer6: Some("2001:db8::1".parse().unwrap()),
                },
            ]
        );
        // Only the asked vhid is kept, even if a kernel sent more.
        let got = run_get(TWO_RECORD_DUMP, 7, Some(vhid(2))).unwrap();
        assert_eq!(got.iter().map(|r| r.vhid.get()).collect::<Vec<_>>(), [2]);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn enoent_means_no_carp_and_enxio_names_the_interface() {
        #[rustfmt::skip]
        let linux_error: &[u8] = &[
            36, 0, 0, 0,        // nlmsg_len = 16 + 4 + 16
            2, 0,               // NLMSG_ERROR
            0, 1,               // NLM_F_CAPPED
            7, 0, 0, 0, 0, 0, 0, 0, // seq 7, pid 0
            0xfe, 0xff, 0xff, 0xff, // error -2 (-ENOENT)
            40, 0, 0, 0, 0x21, 0, 0x01, 0x03, 7, 0, 0, 0, 0, 0, 0, 0, // the request's header
        ];
        assert_eq!(run_get(linux_error, 7, Some(vhid(9))).unwrap(), vec![]);

        #[rustfmt::skip]
        let freebsd_done: &[u8] = &[
            20, 0, 0, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, // NLMSG_DONE, seq 7
            2, 0, 0, 0,         // the dump's result: ENOENT, positive (FreeBSD)
        ];
        assert_eq!(run_get(freebsd_done, 7, None).unwrap(), vec![]);

        #[rustfmt::skip]
        let enxio: &[u8] = &[
            36, 0, 0, 0, 2, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0,
            6, 0, 0, 0,         // error ENXIO (6), positive (FreeBSD)
            40, 0, 0, 0, 0x21, 0, 0x01, 0x03, 7, 0, 0, 0, 0, 0, 0, 0,
        ];
        let e = run_get(enxio, 7, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GET carp on vmx1 (netlink): no such interface 'vmx1' (ENXIO). check the interface name with ifconfig -l"
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn set_ack_and_set_error() {
        #[rustfmt::skip]
        let ack: &[u8] = &[
            36, 0, 0, 0, 2, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, // NLMSG_ERROR, CAPPED, seq 3
            0, 0, 0, 0,         // error 0: acknowledgement
            56, 0, 0, 0, 0x21, 0, 0x05, 0, 3, 0, 0, 0, 0, 0, 0, 0,
        ];
        let op = set_op("vmx1", vhid(2));
        assert_eq!(
            handle_datagram(&op, ack, 3, &mut |_| Ok(())),
            Ok(Progress::Finished)
        );

        let mut eperm = ack.to_vec();
        eperm[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        let e = handle_datagram(&op, &eperm, 3, &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SET carp 2@vmx1 (netlink): permission denied (EPERM). changing CARP needs root (PRIV_NETINET_CARP): run carpd as root"
        );
    }

    #[test]
    fn keys_are_trimmed_and_checked_without_showing_them() {
        assert_eq!(parse_key(&[]).unwrap(), KeyView::Unset);
        assert_eq!(parse_key(&[0; 20]).unwrap(), KeyView::Unset);
        assert_eq!(
            parse_key(b"ab\0c\0\0").unwrap(),
            KeyView::Known(key(b"ab\0c"))
        );
        let e = parse_key(&[b'x'; 21]).unwrap_err().to_string();
        assert_eq!(e, "KEY has 21 bytes, the kernel's key holds at most 20");
    }

    fn record_payload(attrs_bytes: &[u8]) -> Vec<u8> {
        let mut p = vec![CARP_NL_CMD_GET, 0, 0, 0];
        p.extend_from_slice(attrs_bytes);
        p
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn malformed_records_are_clear_errors() {
        const BASE: &[u8] = &[
            8, 0, 2, 0, 1, 0, 0, 0, // STATE 1
            8, 0, 3, 0, 1, 0, 0, 0, // ADVBASE 1
            8, 0, 4, 0, 0, 0, 0, 0, // ADVSKEW 0
        ];
        let with = |extra: &[u8]| {
            let mut a = BASE.to_vec();
            a.extend_from_slice(extra);
            parse_record(&record_payload(&a)).map_err(|e| e.to_string())
        };
        assert_eq!(
            with(&[8, 0, 1, 0, 0, 0, 0, 0]).unwrap_err(),
            "VHID 0 is out of range 1..255"
        );
        assert_eq!(
            with(&[8, 0, 1, 0, 0, 1, 0, 0]).unwrap_err(),
            "VHID 256 is out of range 1..255"
        );
        assert_eq!(
            with(&[8, 0, 1, 0, 1, 0, 0, 0, 8, 0, 2, 0, 3, 0, 0, 0]).unwrap_err(),
            "STATE 3 is none of 0 (INIT), 1 (BACKUP), 2 (MASTER)"
        );
        assert_eq!(
            with(&[6, 0, 1, 0, 1, 0, 0, 0]).unwrap_err(),
            "VHID: attribute 1 has 2 bytes, expected 4 (u32)"
        );
        assert_eq!(
            with(&[8, 0, 1, 0, 1, 0, 0, 0, 8, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]).unwrap_err(),
            "ADVSKEW -1 is negative"
        );
        assert_eq!(
            with(&[8, 0, 1, 0, 1, 0, 0, 0, 7, 0, 7, 0, 1, 2, 3, 0]).unwrap_err(),
            "ADDR: attribute 7 has 3 bytes, expected 4 (bytes)"
        );
        assert_eq!(with(&[]).unwrap_err(), "the answer has no VHID attribute");
        let e = parse_record(&record_payload(&[8, 0, 1, 0, 1, 0, 0, 0])).unwrap_err();
        assert_eq!(e.to_string(), "the answer has no STATE attribute");
        let e = parse_record(&[CARP_NL_CMD_SET, 0, 0, 0]).unwrap_err();
        assert!(e.to_string().contains("expected CARP_NL_CMD_GET"), "{e}");
        // Unspecified peers read as "no unicast peer".
        let r = with(&[
            8, 0, 1, 0, 1, 0, 0, 0, // VHID 1
            8, 0, 7, 0, 0, 0, 0, 0, // ADDR 0.0.0.0
            20, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR6 ::
        ])
        .unwrap();
        assert_eq!((r.peer, r.peer6, r.key), (None, None, KeyView::Hidden));
    }

    #[test]
    fn foreign_message_types_are_rejected() {
        let r = CarpRecord {
            vhid: vhid(1),
            state: CarpState::Init,
            advbase: 1,
            advskew: 0,
            key: KeyView::Hidden,
            peer: None,
            peer6: None,
        };
        let bytes = encode_record(0x22, 1, &r, &[]);
        let e = run_get(&bytes, 1, None).unwrap_err();
        assert!(e.detail.contains("unexpected message type 34"), "{e}");
    }

    #[test]
    fn names_and_keys_the_kernel_would_misread_are_refused() {
        let op = set_op("vmx1", vhid(2));
        for bad in ["", "averyveryverylongname0", "vmx1\0em0"] {
            let e = check_ifname(&op, bad).unwrap_err();
            assert!(e.detail.contains("is not an interface name"), "{e}");
        }
        assert!(check_ifname(&op, "vmx1").is_ok());
        let r = SetRequest {
            key: Some(key(b"\0abc")),
            ..req(2)
        };
        let e = check_set(&op, &r).unwrap_err().to_string();
        assert!(
            e.contains("starts with a NUL byte") && !e.contains("abc"),
            "{e}"
        );
        assert!(
            check_set(
                &op,
                &SetRequest {
                    key: Some(key(b"a\0")),
                    ..req(2)
                }
            )
            .is_ok()
        );
    }

    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    #[test]
    fn carp_netlink_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CarpNetlink>();
    }

    /// Linux has no "carp" family: opening must say carp is not loaded and how to fix it.
    /// This is a real round trip with the running kernel's controller (no root needed).
    #[cfg(target_os = "linux")]
    #[test]
    fn open_on_linux_says_carp_is_not_loaded() {
        let e = CarpNetlink::open().unwrap_err();
        assert_eq!(e.errno, Some(libc::ENOENT), "{e}");
        assert_eq!(
            e.hint.as_deref(),
            Some(crate::kernel::CARP_NOT_LOADED_HINT),
            "{e}"
        );
        let s = e.to_string();
        assert!(
            s.starts_with("resolve generic netlink family \"carp\": the kernel has no generic netlink family \"carp\""),
            "{s}"
        );
        assert!(s.contains("kldload carp"), "{s}");
    }
}
