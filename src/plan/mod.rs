//! The difference between what carpd.yaml asks for and what the kernel has, as a list of
//! minimal actions, and the executor that carries them out.
//!
//! [`diff`] is pure: it takes the desired state and what was read from the kernel and returns a
//! [`Plan`]. It never tears a group down to change a parameter, never forces a MASTER/BACKUP
//! state, never touches groups carpd was not asked to manage, and orders address changes so a
//! vhid never loses its last address (which would destroy it). Applying the plan and diffing
//! again yields an empty plan: that convergence is property-tested in `tests.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Serialize;

use crate::carp::{CarpKey, GroupId, KeyView, Sysctl};
use crate::kernel::merge::Changes;
use crate::kernel::{Kernel, KernelError, KernelGroup};

pub mod apply;
pub mod gather;

#[cfg(test)]
mod tests;

/// What one group should look like, passwords resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredGroup {
    pub id: GroupId,
    pub advbase: u32,
    pub advskew: u32,
    pub key: Option<CarpKey>,
    pub peer: Option<Ipv4Addr>,
    pub peer6: Option<Ipv6Addr>,
    pub addresses: Vec<IpNet>,
}

/// The whole desired kernel state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub sysctls: Vec<(Sysctl, i64)>,
    pub groups: Vec<DesiredGroup>,
    /// Groups whose password came from its local copy because Vault was unreachable or
    /// sealed, each with the reason (src/secrets/copy.rs); empty normally. For status and
    /// readiness: the passwords are in use, but Vault must be fixed.
    pub from_local_copy: Vec<(GroupId, String)>,
}

/// What the kernel has, as far as the plan cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    pub sysctls: BTreeMap<Sysctl, i64>,
    /// Every vhid on every interface that a desired group uses.
    pub groups: BTreeMap<GroupId, KernelGroup>,
}

/// One parameter that changes, for display. Keys are never shown, only "set"/"changed".
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub from: String,
    pub to: String,
}

/// One step. Each maps to one kernel call (group changes to one get-merge-set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SetSysctl {
        knob: Sysctl,
        from: i64,
        to: i64,
    },
    /// The vhid does not exist: create it with these parameters.
    CreateGroup {
        id: GroupId,
        changes: Changes,
        fields: Vec<FieldChange>,
    },
    /// The vhid exists: change these parameters, keep the rest.
    UpdateGroup {
        id: GroupId,
        changes: Changes,
        fields: Vec<FieldChange>,
    },
    AddAddress {
        id: GroupId,
        addr: IpNet,
    },
    RemoveAddress {
        id: GroupId,
        addr: IpNet,
    },
}

impl Action {
    /// Runs this action against the kernel.
    pub fn run(&self, k: &dyn Kernel) -> Result<(), KernelError> {
        match self {
            Action::SetSysctl { knob, to, .. } => k.sysctl_set(*knob, *to),
            Action::CreateGroup { id, changes, .. } | Action::UpdateGroup { id, changes, .. } => {
                crate::kernel::merge::set_merged(k, &id.ifname, id.vhid, changes)
            }
            Action::AddAddress { id, addr } => k.add_address(&id.ifname, id.vhid, *addr),
            Action::RemoveAddress { id, addr } => k.del_address(&id.ifname, *addr),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, fields: &[FieldChange]| {
            for (i, c) in fields.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                if c.from.is_empty() {
                    write!(f, "{sep}{} {}", c.field, c.to)?;
                } else {
                    write!(f, "{sep}{} {} -> {}", c.field, c.from, c.to)?;
                }
            }
            Ok(())
        };
        match self {
            Action::SetSysctl { knob, from, to } => {
                write!(f, "sysctl {}: {from} -> {to}", knob.mib())
            }
            Action::CreateGroup { id, fields: fs, .. } => {
                write!(f, "create {id}:")?;
                fields(f, fs)
            }
            Action::UpdateGroup { id, fields: fs, .. } => {
                write!(f, "update {id}:")?;
                fields(f, fs)
            }
            Action::AddAddress { id, addr } => write!(f, "attach {addr} to {id}"),
            Action::RemoveAddress { id, addr } => write!(f, "detach {addr} from {id}"),
        }
    }
}

/// The plan: actions in order, and notes about what carpd will not or cannot do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

fn peer4(p: Option<Ipv4Addr>) -> String {
    p.map_or("multicast".into(), |a| a.to_string())
}

fn peer6(p: Option<Ipv6Addr>) -> String {
    p.map_or("multicast".into(), |a| a.to_string())
}

/// The minimal actions that turn `observed` into `desired`.
pub fn diff(desired: &Desired, observed: &Observed) -> Plan {
    let mut plan = Plan::default();

    for (knob, want) in &desired.sysctls {
        let have = observed.sysctls.get(knob).copied();
        if have != Some(*want) {
            plan.actions.push(Action::SetSysctl {
                knob: *knob,
                from: have.unwrap_or(knob.default_value()),
                to: *want,
            });
        }
    }

    for want in &desired.groups {
        diff_group(want, observed.groups.get(&want.id), &mut plan);
    }
    diff_addresses(desired, observed, &mut plan);

    for id in observed.groups.keys() {
        if !desired.groups.iter().any(|g| g.id == *id) {
            plan.notes.push(format!(
                "{id} exists in the kernel but not in the configuration: left alone"
            ));
        }
    }
    plan
}

fn diff_group(want: &DesiredGroup, have: Option<&KernelGroup>, plan: &mut Plan) {
    let id = &want.id;
    let mut ch = Changes::default();
    let mut fields = Vec::new();
    match have {
        None => {
            let (ch, fields) = full_parameters(want);
            plan.actions.push(Action::CreateGroup {
                id: id.clone(),
                changes: ch,
                fields,
            });
        }
        Some(have) => {
            if have.advbase != want.advbase {
                ch.advbase = Some(want.advbase);
                fields.push(FieldChange {
                    field: "advbase",
                    from: have.advbase.to_string(),
                    to: want.advbase.to_string(),
                });
            }
            if have.advskew != want.advskew {
                ch.advskew = Some(want.advskew);
                fields.push(FieldChange {
                    field: "advskew",
                    from: have.advskew.to_string(),
                    to: want.advskew.to_string(),
                });
            }
            if have.peer != want.peer {
                ch.peer = Some(want.peer);
                fields.push(FieldChange {
                    field: "peer",
                    from: peer4(have.peer),
                    to: peer4(want.peer),
                });
            }
            if have.peer6 != want.peer6 {
                ch.peer6 = Some(want.peer6);
                fields.push(FieldChange {
                    field: "peer6",
                    from: peer6(have.peer6),
                    to: peer6(want.peer6),
                });
            }
            match (&want.key, &have.key) {
                (Some(w), KeyView::Known(h)) if w == h => {}
                (Some(w), KeyView::Known(_)) => {
                    ch.key = Some(w.clone());
                    fields.push(FieldChange { field: "password", from: "set".into(), to: "changed".into() });
                }
                (Some(w), KeyView::Unset) => {
                    ch.key = Some(w.clone());
                    fields.push(FieldChange { field: "password", from: "none".into(), to: "set".into() });
                }
                (Some(w), KeyView::Hidden) => {
                    ch.key = Some(w.clone());
                    fields.push(FieldChange { field: "password", from: "unknown".into(), to: "set".into() });
                    plan.notes.push(format!(
                        "{id}: the kernel does not show the current password to this user (not root): it will be written every time"
                    ));
                }
                (None, KeyView::Known(_)) => plan.notes.push(format!(
                    "{id}: the kernel has a password but the configuration sets none; the kernel cannot clear a password, so it stays (to remove it, detach the group's addresses, which destroys the vhid, and apply again)"
                )),
                (None, _) => {}
            }
            if !ch.is_empty() {
                plan.actions.push(Action::UpdateGroup {
                    id: id.clone(),
                    changes: ch,
                    fields,
                });
            }
        }
    }
}

/// Address changes for all desired groups, ordered so that no vhid loses its last address by
/// accident (the kernel destroys a vhid with its last address):
/// 1. attach addresses that are not on the interface at all;
/// 2. move addresses that are on the wrong vhid or have the wrong prefix (detach, attach),
///    only when the vhid they leave keeps another address — or, when the address is the only
///    one of its own group and only its prefix changes, recreate that group around it;
/// 3. detach addresses the configuration no longer lists.
///
/// An address held by a group carpd does not manage is never taken: that is a note.
fn diff_addresses(desired: &Desired, observed: &Observed, plan: &mut Plan) {
    use std::collections::BTreeMap;
    use std::net::IpAddr;

    // Who holds each address now, per interface, and how many addresses each vhid will hold.
    let mut holder: BTreeMap<(&str, IpAddr), (&GroupId, IpNet)> = BTreeMap::new();
    let mut count: BTreeMap<&GroupId, usize> = BTreeMap::new();
    for (id, g) in &observed.groups {
        count.insert(id, g.addresses.len());
        for a in &g.addresses {
            holder.insert((id.ifname.as_str(), a.addr()), (id, *a));
        }
    }
    let managed = |id: &GroupId| desired.groups.iter().any(|g| g.id == *id);

    // 1. Fresh addresses.
    for g in &desired.groups {
        for a in &g.addresses {
            if !holder.contains_key(&(g.id.ifname.as_str(), a.addr())) {
                plan.actions.push(Action::AddAddress {
                    id: g.id.clone(),
                    addr: *a,
                });
                *count.entry(&g.id).or_default() += 1;
            }
        }
    }
    // 2. Moves and prefix changes.
    for g in &desired.groups {
        for a in &g.addresses {
            let Some((owner, current)) = holder.get(&(g.id.ifname.as_str(), a.addr())).copied()
            else {
                continue;
            };
            if *owner == g.id && current == *a {
                continue;
            }
            if !managed(owner) {
                plan.notes.push(format!(
                    "{a} is wanted for {} but belongs to {owner}, which the configuration does not manage: left alone (move it by hand, or add {owner} to the configuration)",
                    g.id
                ));
                continue;
            }
            let left = count.get(owner).copied().unwrap_or(0);
            if left > 1 {
                plan.actions.push(Action::RemoveAddress {
                    id: owner.clone(),
                    addr: current,
                });
                plan.actions.push(Action::AddAddress {
                    id: g.id.clone(),
                    addr: *a,
                });
                *count.entry(owner).or_default() -= 1;
                *count.entry(&g.id).or_default() += 1;
            } else if *owner == g.id {
                // The group's only address changes prefix: detaching it destroys the vhid, so
                // recreate the group with its full parameters and attach the new address.
                plan.notes.push(format!(
                    "{}: its only address changes from {current} to {a}; the kernel destroys a vhid with its last address, so the group is recreated",
                    g.id
                ));
                plan.actions.push(Action::RemoveAddress {
                    id: owner.clone(),
                    addr: current,
                });
                let (changes, fields) = full_parameters(g);
                plan.actions.push(Action::CreateGroup {
                    id: g.id.clone(),
                    changes,
                    fields,
                });
                plan.actions.push(Action::AddAddress {
                    id: g.id.clone(),
                    addr: *a,
                });
            } else {
                plan.notes.push(format!(
                    "{a} is wanted for {} but is the only address of {owner}; moving it would destroy {owner}: give {owner} its new addresses first (apply), then apply again",
                    g.id
                ));
            }
        }
    }
    // 3. Addresses no longer listed (unless step 2 already moved them).
    for g in &desired.groups {
        let Some(have) = observed.groups.get(&g.id) else {
            continue;
        };
        for a in &have.addresses {
            let wanted_here = g.addresses.iter().any(|w| w.addr() == a.addr());
            let wanted_elsewhere = desired.groups.iter().any(|o| {
                o.id != g.id
                    && o.id.ifname == g.id.ifname
                    && o.addresses.iter().any(|w| w.addr() == a.addr())
            });
            if wanted_here || wanted_elsewhere {
                continue;
            }
            let left = count.entry(&g.id).or_default();
            if *left <= 1 {
                // Only reachable when the configured addresses could not be attached (a note
                // above says why): detaching would destroy the group.
                plan.notes.push(format!(
                    "{}: {a} is kept for now: it is the group's last address and removing it would destroy the vhid",
                    g.id
                ));
                continue;
            }
            *left -= 1;
            plan.actions.push(Action::RemoveAddress {
                id: g.id.clone(),
                addr: *a,
            });
        }
    }
}

/// Every parameter of a group, for creating it.
fn full_parameters(want: &DesiredGroup) -> (Changes, Vec<FieldChange>) {
    let mut ch = Changes {
        advbase: Some(want.advbase),
        advskew: Some(want.advskew),
        key: want.key.clone(),
        ..Changes::default()
    };
    let mut fields = vec![
        FieldChange {
            field: "advbase",
            from: String::new(),
            to: want.advbase.to_string(),
        },
        FieldChange {
            field: "advskew",
            from: String::new(),
            to: want.advskew.to_string(),
        },
    ];
    if want.key.is_some() {
        fields.push(FieldChange {
            field: "password",
            from: String::new(),
            to: "set".into(),
        });
    }
    if want.peer.is_some() {
        ch.peer = Some(want.peer);
        fields.push(FieldChange {
            field: "peer",
            from: String::new(),
            to: peer4(want.peer),
        });
    }
    if want.peer6.is_some() {
        ch.peer6 = Some(want.peer6);
        fields.push(FieldChange {
            field: "peer6",
            from: String::new(),
            to: peer6(want.peer6),
        });
    }
    (ch, fields)
}
