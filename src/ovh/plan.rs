//! The pure decisions of a failover claim: given what OVH was seen to hold, what is the next
//! step. No I/O, no clock: [`super::failover`] observes, calls [`plan_vmac`] or [`plan_move`],
//! does the step, and observes again whenever a step fails or the world surprised it.
//!
//! Safety rules that live here, once:
//! - already where it should be -> nothing to do (success, no mutation);
//! - never remove the only IP of a vMAC (OVH would delete the vMAC for good, and a re-created
//!   one gets a new MAC that no longer matches the VM's NIC) unless explicitly allowed;
//! - never POST onto a vMAC that does not exist (OVH would refuse; the operator must fix the
//!   configuration);
//! - a pending move on the IP is waited for before anything else.

use std::fmt;

/// What OVH was seen to hold for one failover IP.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Found {
    /// On no vMAC of the service.
    Unbound,
    /// On this vMAC, which holds `ips` addresses in total (this one included).
    Vmac { mac: String, ips: usize },
    /// Routed to this service (IP move mode); `None` = routed nowhere.
    Service { service: Option<String> },
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Unbound => f.write_str("on no virtual MAC"),
            Found::Vmac { mac, ips } => write!(f, "on virtual MAC {mac} ({ips} IP(s) there)"),
            Found::Service { service: Some(s) } => write!(f, "routed to {s}"),
            Found::Service { service: None } => f.write_str("routed nowhere"),
        }
    }
}

/// An observation in vMAC mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmacObservation {
    pub found: Found,
    /// Whether our vMAC is among the service's vMACs; `None` when not read (a cached hint).
    pub ours_exists: Option<bool>,
}

/// The next step in vMAC mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmacStep {
    /// Already on our vMAC.
    Done,
    /// On another vMAC where it is the only IP, and releasing it is not allowed.
    RefuseLastIp { mac: String },
    /// Our vMAC does not exist on the service.
    OursMissing,
    /// DELETE it from `from`, then POST it on ours.
    Remove { from: String },
    /// POST it on ours.
    Add,
}

/// `ours` is our vMAC, lowercase. `allow_last_ip_release` is the configuration's
/// `allow_last_ip_release` or the CLI's `--force`.
pub fn plan_vmac(obs: &VmacObservation, ours: &str, allow_last_ip_release: bool) -> VmacStep {
    if obs.ours_exists == Some(false) {
        return VmacStep::OursMissing;
    }
    match &obs.found {
        Found::Vmac { mac, .. } if mac.eq_ignore_ascii_case(ours) => VmacStep::Done,
        Found::Vmac { mac, ips } if *ips <= 1 && !allow_last_ip_release => {
            VmacStep::RefuseLastIp { mac: mac.clone() }
        }
        Found::Vmac { mac, .. } => VmacStep::Remove { from: mac.clone() },
        Found::Unbound | Found::Service { .. } => VmacStep::Add,
    }
}

/// The last-IP rule for several releases from one vMAC at once (a failover of many IPs
/// sharing one listing, issue 21): may `ip` be released from a vMAC whose fresh listing is
/// `listed`, while the IPs in `releasing` are being released from it by other claims?
///
/// The rule is evaluated on the listing for every IP of the failover together: what stays on
/// the vMAC is the listing minus every release in flight minus this one, each address once;
/// it must not be empty, or OVH deletes the vMAC for good. So when a vMAC holds only failover
/// IPs, all but one are released and the last one is refused, whatever order the claims run
/// in; with a permanent IP there, every failover IP may go at once. Returns `false` to refuse
/// (unless `allow_last_ip_release`).
pub fn may_release(
    listed: &[std::net::Ipv4Addr],
    releasing: &std::collections::BTreeSet<std::net::Ipv4Addr>,
    ip: std::net::Ipv4Addr,
    allow_last_ip_release: bool,
) -> bool {
    if allow_last_ip_release {
        return true;
    }
    listed.iter().any(|a| *a != ip && !releasing.contains(a))
}

/// An observation in IP move mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveObservation {
    pub routed_to: Option<String>,
    /// Pending `genericMoveFloatingIp` tasks on the block.
    pub pending: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveStep {
    Done,
    /// Wait for these tasks (someone else's move), then observe again.
    WaitFor(Vec<u64>),
    Move,
}

pub fn plan_move(obs: &MoveObservation, to: &str) -> MoveStep {
    if !obs.pending.is_empty() {
        return MoveStep::WaitFor(obs.pending.clone());
    }
    if obs.routed_to.as_deref() == Some(to) {
        return MoveStep::Done;
    }
    MoveStep::Move
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_from_one_vmac_keep_one_ip_there() {
        use std::collections::BTreeSet;
        use std::net::Ipv4Addr;
        let perm: Ipv4Addr = "178.32.70.111".parse().unwrap();
        let fips: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(51, 68, 252, i)).collect();
        // Only failover IPs there: releases are granted one after another until one is left.
        let mut releasing = BTreeSet::new();
        let mut granted = 0;
        for ip in &fips {
            if may_release(&fips, &releasing, *ip, false) {
                releasing.insert(*ip);
                granted += 1;
            }
        }
        assert_eq!(granted, fips.len() - 1);
        // A permanent IP stays: every failover IP may go at once.
        let mut listed = fips.clone();
        listed.push(perm);
        let mut releasing = BTreeSet::new();
        for ip in &fips {
            assert!(may_release(&listed, &releasing, *ip, false));
            releasing.insert(*ip);
        }
        // An address listed twice is one address: it never makes a last IP look like two.
        let twice = vec![fips[0], fips[0]];
        assert!(!may_release(&twice, &BTreeSet::new(), fips[0], false));
        // Allowed explicitly: always.
        assert!(may_release(&twice, &BTreeSet::new(), fips[0], true));
        // Releases of IPs no longer listed do not count against the rule.
        let gone: BTreeSet<Ipv4Addr> = [Ipv4Addr::new(10, 0, 0, 1)].into();
        assert!(may_release(&[fips[0], fips[1]], &gone, fips[0], false));
    }

    const OURS: &str = "02:00:00:aa:bb:cc";
    const PEER: &str = "02:00:00:11:22:33";

    fn obs(found: Found, ours_exists: Option<bool>) -> VmacObservation {
        VmacObservation { found, ours_exists }
    }

    fn on(mac: &str, ips: usize) -> Found {
        Found::Vmac {
            mac: mac.into(),
            ips,
        }
    }

    #[test]
    fn vmac_table() {
        use VmacStep::*;
        let table: &[(VmacObservation, bool, VmacStep)] = &[
            (obs(on(OURS, 2), Some(true)), false, Done),
            (obs(on(OURS, 1), Some(true)), false, Done),
            (obs(on(&OURS.to_uppercase(), 1), None), false, Done),
            (
                obs(on(PEER, 2), Some(true)),
                false,
                Remove { from: PEER.into() },
            ),
            (
                obs(on(PEER, 1), Some(true)),
                false,
                RefuseLastIp { mac: PEER.into() },
            ),
            (
                obs(on(PEER, 1), Some(true)),
                true,
                Remove { from: PEER.into() },
            ),
            (obs(Found::Unbound, Some(true)), false, Add),
            (obs(Found::Unbound, None), false, Add),
            (obs(Found::Unbound, Some(false)), false, OursMissing),
            (obs(on(PEER, 3), Some(false)), true, OursMissing),
        ];
        for (o, allow, want) in table {
            assert_eq!(&plan_vmac(o, OURS, *allow), want, "{o:?} allow={allow}");
        }
    }

    #[test]
    fn move_table() {
        let o = |r: Option<&str>, p: Vec<u64>| MoveObservation {
            routed_to: r.map(str::to_string),
            pending: p,
        };
        assert_eq!(plan_move(&o(Some("a"), vec![]), "a"), MoveStep::Done);
        assert_eq!(plan_move(&o(Some("b"), vec![]), "a"), MoveStep::Move);
        assert_eq!(plan_move(&o(None, vec![]), "a"), MoveStep::Move);
        assert_eq!(
            plan_move(&o(Some("a"), vec![7]), "a"),
            MoveStep::WaitFor(vec![7])
        );
    }
}
