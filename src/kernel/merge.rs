//! Get-merge-set: change some parameters of a vhid and keep the others.
//!
//! The kernel's SET overwrites advskew on every call (absent means 0), so a SET that only
//! means to change the password would silently reset advskew. `ifconfig` avoids this by
//! reading the vhid first; so does this module, once, for every backend. The merge itself is
//! a pure function ([`merged_request`]) so it is tested without a kernel.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::carp::{CarpKey, MULTICAST_V4, MULTICAST_V6, Vhid};

use super::{Kernel, KernelError, KernelGroup, SetRequest};

/// The parameters to change; `None` keeps the kernel's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub advbase: Option<u32>,
    pub advskew: Option<u32>,
    /// A new key. There is no way to clear a key once set (kernel limitation).
    pub key: Option<CarpKey>,
    /// `Some(None)` goes back to multicast, `Some(Some(a))` sets a unicast peer.
    pub peer: Option<Option<Ipv4Addr>>,
    /// As `peer`, for IPv6.
    pub peer6: Option<Option<Ipv6Addr>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The raw SET that applies `ch` to `current` (the vhid as read, `None` if it does not exist
/// yet) and keeps everything else.
pub fn merged_request(vhid: Vhid, current: Option<&KernelGroup>, ch: &Changes) -> SetRequest {
    SetRequest {
        vhid,
        // 0 = keep.
        advbase: ch.advbase.unwrap_or(0),
        // Always overwritten: carry the current value over unless it changes.
        advskew: ch
            .advskew
            .unwrap_or_else(|| current.map_or(0, |g| g.advskew)),
        // Empty = keep.
        key: ch.key.clone(),
        // 0.0.0.0 / :: = keep; the multicast group = back to multicast.
        peer: ch.peer.map(|p| p.unwrap_or(MULTICAST_V4)),
        peer6: ch.peer6.map(|p| p.unwrap_or(MULTICAST_V6)),
        // Never force a state as a side effect of a parameter change.
        state: None,
    }
}

/// Reads the vhid, merges `ch` into it and writes the result.
pub fn set_merged(
    k: &dyn Kernel,
    ifname: &str,
    vhid: Vhid,
    ch: &Changes,
) -> Result<(), KernelError> {
    let current = k.group(ifname, vhid)?;
    k.set_raw(ifname, &merged_request(vhid, current.as_ref(), ch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carp::{CarpState, KeyView};

    fn group(advskew: u32) -> KernelGroup {
        KernelGroup {
            ifname: "vmx1".into(),
            vhid: Vhid::new(2).unwrap(),
            state: CarpState::Backup,
            advbase: 3,
            advskew,
            key: KeyView::Unset,
            peer: Some(Ipv4Addr::new(192, 0, 2, 1)),
            peer6: None,
            addresses: vec![],
        }
    }

    #[test]
    fn key_change_keeps_advskew() {
        let ch = Changes {
            key: Some(CarpKey::new(b"pw".to_vec()).unwrap()),
            ..Changes::default()
        };
        let req = merged_request(Vhid::new(2).unwrap(), Some(&group(100)), &ch);
        assert_eq!(req.advskew, 100, "advskew must be carried over");
        assert_eq!(req.advbase, 0, "advbase 0 keeps");
        assert_eq!(req.peer, None, "peer absent keeps");
        assert_eq!(req.state, None);
    }

    #[test]
    fn back_to_multicast_is_explicit() {
        let ch = Changes {
            peer: Some(None),
            peer6: Some(None),
            ..Changes::default()
        };
        let req = merged_request(Vhid::new(2).unwrap(), Some(&group(0)), &ch);
        assert_eq!(req.peer, Some(MULTICAST_V4));
        assert_eq!(req.peer6, Some(MULTICAST_V6));
    }

    #[test]
    fn new_vhid_defaults_advskew_zero() {
        let req = merged_request(Vhid::new(9).unwrap(), None, &Changes::default());
        assert_eq!(req.advskew, 0);
    }
}
