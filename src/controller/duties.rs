//! What the configuration makes carpd responsible for, per group: the groups it manages and
//! the failover IPs that follow each. Data only: what a group's state obliges carpd to do
//! with those IPs is decided in one place, the claim scheduler ([`super::claims`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::carp::GroupId;

/// What one group obliges carpd to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupDuties {
    /// Failover IPs that follow this group's state (`failover_ips[].group`).
    pub failover_ips: Vec<IpAddr>,
}

/// Duties of every group the configuration names.
pub type Duties = BTreeMap<GroupId, GroupDuties>;

/// The failover IPs that follow `group` (none for a group without duties).
pub fn failover_ips<'a>(group: &GroupId, duties: &'a Duties) -> &'a [IpAddr] {
    duties.get(group).map_or(&[], |d| d.failover_ips.as_slice())
}
