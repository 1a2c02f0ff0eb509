//! "What to do for group X in state S": the one pure function the controller asks after
//! every reading of a group, and the duties from the configuration it answers from.
//!
//! Level-triggered: the answer depends only on the group's current state and its duties, not
//! on the transition that led there, so it is asked on every reconcile and the executor makes
//! each action idempotent (already correct is success and does nothing).
//!
//! Today's duty is the failover IPs bound to a group: MASTER means "the IP is bound here";
//! BACKUP and INIT mean "not this node's business" — releasing the IP on BACKUP would only
//! open an outage window, since the new MASTER claims it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::carp::{CarpState, GroupId};

/// What one group obliges carpd to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupDuties {
    /// Failover IPs that follow this group's state (`failover_ips[].group`).
    pub failover_ips: Vec<IpAddr>,
}

/// Duties of every group the configuration names.
pub type Duties = BTreeMap<GroupId, GroupDuties>;

/// One thing to make true for a group.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupAction {
    /// Make the cloud route `ip` to this node.
    ClaimFailoverIp(IpAddr),
}

impl std::fmt::Display for GroupAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupAction::ClaimFailoverIp(ip) => write!(f, "claim failover IP {ip}"),
        }
    }
}

/// The actions for `group` in `state`. Groups without duties need nothing.
pub fn actions_for(group: &GroupId, state: CarpState, duties: &Duties) -> Vec<GroupAction> {
    let Some(d) = duties.get(group) else {
        return Vec::new();
    };
    match state {
        CarpState::Master => d
            .failover_ips
            .iter()
            .map(|ip| GroupAction::ClaimFailoverIp(*ip))
            .collect(),
        CarpState::Backup | CarpState::Init => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(s: &str) -> GroupId {
        s.parse().unwrap()
    }

    fn duties() -> Duties {
        let mut d = Duties::new();
        d.insert(
            g("2@vmx1"),
            GroupDuties {
                failover_ips: vec![
                    "51.68.252.230".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                ],
            },
        );
        d.insert(g("3@vmx1"), GroupDuties::default());
        d
    }

    #[test]
    fn master_claims_every_bound_ip_and_nothing_else_acts() {
        let d = duties();
        let table = [
            ("2@vmx1", CarpState::Master, 2),
            ("2@vmx1", CarpState::Backup, 0),
            ("2@vmx1", CarpState::Init, 0),
            ("3@vmx1", CarpState::Master, 0),
            ("2@vmx0", CarpState::Master, 0),
            ("9@em0", CarpState::Master, 0),
        ];
        for (group, state, n) in table {
            let actions = actions_for(&g(group), state, &d);
            assert_eq!(actions.len(), n, "{group} {state}: {actions:?}");
        }
        assert_eq!(
            actions_for(&g("2@vmx1"), CarpState::Master, &d),
            vec![
                GroupAction::ClaimFailoverIp("51.68.252.230".parse().unwrap()),
                GroupAction::ClaimFailoverIp("2001:db8::1".parse().unwrap()),
            ]
        );
    }
}
