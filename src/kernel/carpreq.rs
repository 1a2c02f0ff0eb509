//! `struct carpreq` (netinet/ip_carp.h) and the pure conversions between it and carpd's
//! types, for the FreeBSD 13.x ioctl backend ([`super::ioctl`], which re-exports them).
//!
//! Nothing here calls the kernel, so this module builds on every platform and its tests run
//! on Linux too (the ioctl backend itself is FreeBSD-only). What it must not do: show key
//! bytes ([`CarpReq`] has no `Debug` and zeroizes its key on drop), or encode what the kernel
//! would misread (see [`set_carpreq`]).

use std::ffi::c_int;
use std::mem::{offset_of, size_of};

use zeroize::Zeroize;

use crate::carp::{CarpKey, CarpState, KEY_LEN, KeyView, Vhid};

use super::{KernelError, KernelGroup, SetRequest, unicast_unsupported};

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
}
