//! The simulated OVH account: dedicated servers with virtual MACs and their IPs, failover IP
//! blocks routed to servers, and asynchronous tasks. Pure: every method takes "now".
//!
//! Semantics modelled (reference: ovh-api.md):
//! - an IP is on at most one vMAC; adding it where it already is is refused with a 403 as
//!   OVH does ("A Virtual Mac already exists"), on a vMAC that does not exist with a 404;
//!   removing it from a vMAC it is not on is a 404;
//! - mutations create tasks (`todo`, then `doing`) that apply only when they complete, after
//!   the configured delay; a task can be made to fail (`customerError`, `ovhError`, ...);
//! - removing a vMAC's last IP deletes the vMAC (when the task applies);
//! - a mutation on an IP that has a pending task is refused (409);
//! - a task is invisible (404) for `fresh_task_404` after its creation (region lag);
//! - moves: to the service the block is already routed to, or to an unknown service, are
//!   refused; the block is re-routed when the task applies.
//!
//! Status codes and messages for refusals are modelled on OVH's error shapes; the exact texts
//! of the live API are unverified, and carpd never depends on them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Serialize;

/// A refusal: HTTP status, OVH class, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub class: &'static str,
    pub message: String,
}

fn refuse(status: u16, class: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        class,
        message: message.into(),
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Vmac {
    #[serde(rename = "type")]
    pub kind: String,
    /// IP -> virtual machine name.
    pub ips: BTreeMap<Ipv4Addr, String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Server {
    pub vmacs: BTreeMap<String, Vmac>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Block {
    pub routed_to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Effect {
    AddIp {
        service: String,
        mac: String,
        ip: Ipv4Addr,
        vm: String,
    },
    RemoveIp {
        service: String,
        mac: String,
        ip: Ipv4Addr,
    },
    Move {
        block: IpNet,
        to: String,
    },
}

/// Which task list a task is in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum TaskOwner {
    Server(String),
    Ip(IpNet),
}

#[derive(Clone, Debug)]
struct SimTask {
    owner: TaskOwner,
    function: &'static str,
    created: Instant,
    ready_at: Instant,
    /// `None`: succeeds; `Some(status)`: ends with that failure status.
    failure: Option<String>,
    effect: Effect,
    /// Set once the task completed (applied or failed).
    ended: Option<String>,
    /// The IP (or block) the task is about, for the pending rule.
    subject: String,
}

/// Snapshot of one task, for the inspection API and the task endpoints.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TaskView {
    #[serde(rename = "taskId")]
    pub id: u64,
    pub function: String,
    pub status: String,
    pub comment: Option<String>,
}

/// The whole simulated account.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub servers: BTreeMap<String, Server>,
    pub blocks: BTreeMap<IpNet, Block>,
    tasks: BTreeMap<u64, SimTask>,
    next_task: u64,
    /// How long vMAC tasks and moves take.
    pub task_delay: Duration,
    pub move_delay: Duration,
    pub fresh_task_404: Duration,
    /// Failure statuses for the next tasks created, in order.
    pub next_task_failures: VecDeque<String>,
    /// Every vMAC deleted (with its last IP), in order: the invariant "no vMAC is ever
    /// deleted" is `deleted_vmacs.is_empty()`.
    pub deleted_vmacs: Vec<String>,
    /// Hostile listing: entries added to every vMAC listing (not MACs, path tricks).
    pub junk_vmacs: Vec<String>,
    /// Hostile listing: every vMAC's IP list names each IP twice.
    pub duplicate_ips: bool,
}

/// A serializable picture of the account (inspection API).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub servers: BTreeMap<String, Server>,
    pub blocks: BTreeMap<String, Block>,
    pub tasks: Vec<TaskView>,
}

impl World {
    pub fn new() -> World {
        World {
            next_task: 1000,
            ..World::default()
        }
    }

    /// Adds a server (if new) and a vMAC with these IPs (vm name "vm").
    pub fn add_vmac(&mut self, service: &str, mac: &str, ips: &[Ipv4Addr]) {
        let s = self.servers.entry(service.into()).or_default();
        s.vmacs.insert(
            mac.to_lowercase(),
            Vmac {
                kind: "vmware".into(),
                ips: ips.iter().map(|ip| (*ip, "vm".to_string())).collect(),
            },
        );
    }

    pub fn add_server(&mut self, service: &str) {
        self.servers.entry(service.into()).or_default();
    }

    pub fn add_block(&mut self, block: IpNet, routed_to: Option<&str>) {
        self.blocks.insert(
            block,
            Block {
                routed_to: routed_to.map(str::to_string),
            },
        );
    }

    /// Completes every task whose time has come; applies the successful ones.
    pub fn advance(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.ended.is_none() && t.ready_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(t) = self.tasks.get_mut(&id) else {
                continue;
            };
            match t.failure.clone() {
                Some(status) => t.ended = Some(status),
                None => {
                    t.ended = Some("done".into());
                    let effect = t.effect.clone();
                    self.apply(effect);
                }
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::AddIp {
                service,
                mac,
                ip,
                vm,
            } => {
                if let Some(v) = self
                    .servers
                    .get_mut(&service)
                    .and_then(|s| s.vmacs.get_mut(&mac))
                {
                    v.ips.insert(ip, vm);
                }
            }
            Effect::RemoveIp { service, mac, ip } => {
                if let Some(s) = self.servers.get_mut(&service) {
                    let empty = s.vmacs.get_mut(&mac).is_some_and(|v| {
                        v.ips.remove(&ip);
                        v.ips.is_empty()
                    });
                    if empty {
                        // OVH deletes a vMAC with its last IP.
                        s.vmacs.remove(&mac);
                        self.deleted_vmacs.push(mac.clone());
                    }
                }
            }
            Effect::Move { block, to } => {
                if let Some(b) = self.blocks.get_mut(&block) {
                    b.routed_to = Some(to);
                }
            }
        }
    }

    fn pending_on(&self, subject: &str) -> bool {
        self.tasks
            .values()
            .any(|t| t.ended.is_none() && t.subject == subject)
    }

    fn create_task(
        &mut self,
        now: Instant,
        owner: TaskOwner,
        function: &'static str,
        effect: Effect,
        subject: String,
        delay: Duration,
    ) -> TaskView {
        self.next_task += 1;
        let id = self.next_task;
        let failure = self.next_task_failures.pop_front();
        self.tasks.insert(
            id,
            SimTask {
                owner,
                function,
                created: now,
                ready_at: now + delay,
                failure,
                effect,
                ended: None,
                subject,
            },
        );
        TaskView {
            id,
            function: function.into(),
            status: "todo".into(),
            comment: None,
        }
    }

    pub fn server(&self, service: &str) -> Result<&Server, Refusal> {
        self.servers.get(service).ok_or_else(|| {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (serviceName = {service}) does not exist"),
            )
        })
    }

    fn vmac(&self, service: &str, mac: &str) -> Result<&Vmac, Refusal> {
        self.server(service)?.vmacs.get(mac).ok_or_else(|| {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (macAddress = {mac}) does not exist"),
            )
        })
    }

    pub fn list_vmacs(&self, service: &str) -> Result<Vec<String>, Refusal> {
        let mut v: Vec<String> = self.server(service)?.vmacs.keys().cloned().collect();
        v.extend(self.junk_vmacs.iter().cloned());
        // OVH's order varies between calls: never rely on it. Rotate by task counter.
        if !v.is_empty() {
            let k = (self.next_task as usize) % v.len();
            v.rotate_left(k);
        }
        Ok(v)
    }

    pub fn vmac_info(&self, service: &str, mac: &str) -> Result<serde_json::Value, Refusal> {
        let v = self.vmac(service, mac)?;
        Ok(serde_json::json!({"macAddress": mac, "type": v.kind}))
    }

    pub fn vmac_ips(&self, service: &str, mac: &str) -> Result<Vec<Ipv4Addr>, Refusal> {
        let ips = self.vmac(service, mac)?.ips.keys().copied();
        let n = if self.duplicate_ips { 2 } else { 1 };
        Ok(ips.flat_map(|ip| std::iter::repeat_n(ip, n)).collect())
    }

    pub fn vaddr(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<serde_json::Value, Refusal> {
        let vm = self.vmac(service, mac)?.ips.get(&ip).ok_or_else(|| {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (ipAddress = {ip}) does not exist"),
            )
        })?;
        Ok(serde_json::json!({"ipAddress": ip.to_string(), "virtualMachineName": vm}))
    }

    pub fn add_ip(
        &mut self,
        now: Instant,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
        vm: &str,
    ) -> Result<TaskView, Refusal> {
        self.vmac(service, mac)?;
        if self.pending_on(&ip.to_string()) {
            return Err(refuse(
                409,
                "Client::Conflict",
                format!("A task is already pending for IP {ip}"),
            ));
        }
        let holder = self
            .servers
            .values()
            .flat_map(|s| s.vmacs.iter())
            .find(|(_, v)| v.ips.contains_key(&ip));
        if let Some((m, _)) = holder {
            return Err(refuse(
                403,
                "Client::Forbidden",
                format!("A Virtual Mac already exists for IP {ip} ({m})"),
            ));
        }
        let delay = self.task_delay;
        Ok(self.create_task(
            now,
            TaskOwner::Server(service.into()),
            "addVirtualMac",
            Effect::AddIp {
                service: service.into(),
                mac: mac.into(),
                ip,
                vm: vm.into(),
            },
            ip.to_string(),
            delay,
        ))
    }

    pub fn remove_ip(
        &mut self,
        now: Instant,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<TaskView, Refusal> {
        self.vaddr(service, mac, ip)?;
        if self.pending_on(&ip.to_string()) {
            return Err(refuse(
                409,
                "Client::Conflict",
                format!("A task is already pending for IP {ip}"),
            ));
        }
        let delay = self.task_delay;
        Ok(self.create_task(
            now,
            TaskOwner::Server(service.into()),
            "removeVirtualMac",
            Effect::RemoveIp {
                service: service.into(),
                mac: mac.into(),
                ip,
            },
            ip.to_string(),
            delay,
        ))
    }

    fn task_view(&self, id: u64, t: &SimTask, now: Instant) -> TaskView {
        let status = match &t.ended {
            Some(s) => s.clone(),
            None if now.saturating_duration_since(t.created) * 2
                < t.ready_at.saturating_duration_since(t.created) =>
            {
                "todo".into()
            }
            None => "doing".into(),
        };
        TaskView {
            id,
            function: t.function.into(),
            comment: t
                .failure
                .as_ref()
                .filter(|_| t.ended.is_some())
                .map(|s| format!("simulated failure ({s})")),
            status,
        }
    }

    pub fn task(&self, owner: &TaskOwner, id: u64, now: Instant) -> Result<TaskView, Refusal> {
        let not_found = || {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (taskId = {id}) does not exist"),
            )
        };
        let t = self.tasks.get(&id).ok_or_else(not_found)?;
        if &t.owner != owner || now.saturating_duration_since(t.created) < self.fresh_task_404 {
            return Err(not_found());
        }
        Ok(self.task_view(id, t, now))
    }

    pub fn ip_info(&self, block: IpNet) -> Result<serde_json::Value, Refusal> {
        let b = self.blocks.get(&block).ok_or_else(|| {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (ip = {block}) does not exist"),
            )
        })?;
        Ok(serde_json::json!({
            "ip": block.to_string(),
            "type": "failover",
            "routedTo": {"serviceName": b.routed_to},
            "canBeTerminated": false,
        }))
    }

    pub fn move_ip(&mut self, now: Instant, block: IpNet, to: &str) -> Result<TaskView, Refusal> {
        let b = self.blocks.get(&block).ok_or_else(|| {
            refuse(
                404,
                "Client::NotFound",
                format!("The requested object (ip = {block}) does not exist"),
            )
        })?;
        if self.pending_on(&block.to_string()) {
            return Err(refuse(
                409,
                "Client::Conflict",
                format!("A move is already pending for {block}"),
            ));
        }
        if b.routed_to.as_deref() == Some(to) {
            return Err(refuse(
                400,
                "Client::BadRequest",
                format!("{block} is already routed to {to}"),
            ));
        }
        if !self.servers.contains_key(to) {
            return Err(refuse(
                400,
                "Client::BadRequest",
                format!("{to} is not a valid destination for {block}"),
            ));
        }
        let delay = self.move_delay;
        Ok(self.create_task(
            now,
            TaskOwner::Ip(block),
            "genericMoveFloatingIp",
            Effect::Move {
                block,
                to: to.into(),
            },
            block.to_string(),
            delay,
        ))
    }

    /// Task ids of a server whose status is `status` (any if `None`), like
    /// `GET /dedicated/server/{sn}/task?status=`.
    pub fn server_tasks(&self, service: &str, status: Option<&str>, now: Instant) -> Vec<u64> {
        let owner = TaskOwner::Server(service.to_string());
        self.tasks
            .iter()
            .filter(|(_, t)| t.owner == owner)
            .filter(|(id, t)| status.is_none_or(|s| self.task_view(**id, t, now).status == s))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Task ids of a block, filtered like `GET /ip/{block}/task?function=&status=`.
    pub fn ip_tasks(
        &self,
        block: IpNet,
        function: Option<&str>,
        status: Option<&str>,
        now: Instant,
    ) -> Vec<u64> {
        let owner = TaskOwner::Ip(block);
        self.tasks
            .iter()
            .filter(|(_, t)| t.owner == owner)
            .filter(|(_, t)| function.is_none_or(|f| t.function == f))
            .filter(|(id, t)| status.is_none_or(|s| self.task_view(**id, t, now).status == s))
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            servers: self.servers.clone(),
            blocks: self
                .blocks
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            tasks: self
                .tasks
                .iter()
                .map(|(id, t)| self.task_view(*id, t, now))
                .collect(),
        }
    }

    /// Where `ip` is: (service, mac).
    pub fn holder(&self, ip: Ipv4Addr) -> Option<(String, String)> {
        self.servers.iter().find_map(|(s, srv)| {
            srv.vmacs
                .iter()
                .find(|(_, v)| v.ips.contains_key(&ip))
                .map(|(m, _)| (s.clone(), m.clone()))
        })
    }

    /// Every IP on every vMAC, for invariants in tests.
    pub fn all_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.servers
            .values()
            .flat_map(|s| s.vmacs.values())
            .flat_map(|v| v.ips.keys().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "ns1.eu";
    const A: &str = "02:00:00:aa:bb:cc";
    const B: &str = "02:00:00:11:22:33";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn tasks_apply_after_their_delay_and_last_ip_deletes_the_vmac() {
        let t0 = Instant::now();
        let mut w = World::new();
        w.task_delay = Duration::from_secs(2);
        w.add_vmac(S, A, &[ip("1.1.1.1")]);
        w.add_vmac(S, B, &[ip("9.9.9.9"), ip("2.2.2.2")]);
        let del = w.remove_ip(t0, S, A, ip("1.1.1.1")).unwrap();
        // Pending: a second mutation on the IP is refused.
        let e = w.add_ip(t0, S, B, ip("1.1.1.1"), "vm").unwrap_err();
        assert_eq!(e.status, 409);
        w.advance(t0 + Duration::from_secs(1));
        assert_eq!(w.vmac_ips(S, A).unwrap(), vec![ip("1.1.1.1")]);
        assert_eq!(
            w.task(
                &TaskOwner::Server(S.into()),
                del.id,
                t0 + Duration::from_secs(1)
            )
            .unwrap()
            .status,
            "doing"
        );
        w.advance(t0 + Duration::from_secs(2));
        assert!(w.vmac_ips(S, A).is_err(), "the vMAC went with its last IP");
        w.add_ip(t0, S, B, ip("1.1.1.1"), "vm").unwrap();
        w.advance(t0 + Duration::from_secs(5));
        assert_eq!(w.holder(ip("1.1.1.1")), Some((S.into(), B.into())));
        // An IP is on one vMAC at most.
        w.add_vmac(S, A, &[ip("3.3.3.3")]);
        assert_eq!(
            w.add_ip(t0, S, A, ip("1.1.1.1"), "vm").unwrap_err().status,
            403
        );
    }

    #[test]
    fn failed_tasks_change_nothing_and_moves_are_checked() {
        let t0 = Instant::now();
        let mut w = World::new();
        w.add_vmac(S, A, &[ip("1.1.1.1"), ip("4.4.4.4")]);
        w.add_server("ns2.eu");
        w.next_task_failures.push_back("ovhError".into());
        let t = w.remove_ip(t0, S, A, ip("1.1.1.1")).unwrap();
        w.advance(t0);
        let v = w.task(&TaskOwner::Server(S.into()), t.id, t0).unwrap();
        assert_eq!(v.status, "ovhError");
        assert_eq!(w.vmac_ips(S, A).unwrap().len(), 2);

        let block: IpNet = "5.5.5.5/32".parse().unwrap();
        w.add_block(block, Some(S));
        assert_eq!(w.move_ip(t0, block, S).unwrap_err().status, 400);
        assert_eq!(w.move_ip(t0, block, "nsX.eu").unwrap_err().status, 400);
        w.move_delay = Duration::from_secs(1);
        let t = w.move_ip(t0, block, "ns2.eu").unwrap();
        assert_eq!(w.move_ip(t0, block, "ns2.eu").unwrap_err().status, 409);
        assert_eq!(
            w.ip_tasks(block, Some("genericMoveFloatingIp"), Some("todo"), t0),
            vec![t.id]
        );
        w.advance(t0 + Duration::from_secs(1));
        assert_eq!(w.blocks[&block].routed_to.as_deref(), Some("ns2.eu"));
    }
}
