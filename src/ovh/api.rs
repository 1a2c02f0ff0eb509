//! The OVH calls carpd makes, typed: one narrow trait, [`FailoverApi`], implemented by the
//! real [`Client`]. The failover operations are written against the trait, so tests can run
//! them on anything that answers like OVH (the simulator over HTTP, or a fake in memory).
//!
//! Paths follow the reference: MACs go into the path literally (with colons), a vMAC's IP as
//! a bare IPv4, an IP block URL-encoded (`/ip/51.68.252.230%2F32`). Every variable path
//! segment goes through one encoder, [`seg`]. Decoders accept unknown fields and never panic
//! on any input.
//!
//! Answers are untrusted: a vMAC listing keeps only entries that parse as MACs (normalised
//! to lowercase; anything else is dropped with a warning and never reaches a path), an IP
//! listing only entries that parse as IPv4, each once.

use std::future::Future;
use std::net::Ipv4Addr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use super::client::Client;
use super::error::OvhError;

/// Where a task stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// `init`, `todo`, `doing`, or a status carpd does not know (waiting is the safe reading:
    /// the deadline bounds it).
    Pending(String),
    Done,
    /// `cancelled`, `customerError`, `ovhError`.
    Failed(String),
}

impl TaskStatus {
    pub fn parse(s: &str) -> TaskStatus {
        match s {
            "done" => TaskStatus::Done,
            "init" | "todo" | "doing" => TaskStatus::Pending(s.to_string()),
            "cancelled" | "customerError" | "ovhError" => TaskStatus::Failed(s.to_string()),
            // Server text: escaped and bounded before it can reach a log line.
            other => TaskStatus::Pending(crate::remote::untrusted(other, 64)),
        }
    }
}

impl<'de> Deserialize<'de> for TaskStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TaskStatus, D::Error> {
        Ok(TaskStatus::parse(&String::deserialize(d)?))
    }
}

/// A dedicated-server task or an IP task (same shape for what carpd reads).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Task {
    #[serde(rename = "taskId")]
    pub id: u64,
    #[serde(default, deserialize_with = "untrusted_text")]
    pub function: Option<String>,
    pub status: TaskStatus,
    /// OVH's words on a failed task; quoted in errors and logs, so escaped and bounded.
    #[serde(default, deserialize_with = "untrusted_text")]
    pub comment: Option<String>,
}

/// An optional string from the server, escaped and cut to 500 characters (src/remote.rs).
fn untrusted_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|t| crate::remote::untrusted(&t, 500)))
}

/// `GET /ip/{block}`, the part carpd reads.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct IpInfo {
    pub ip: String,
    #[serde(default, rename = "routedTo")]
    pub routed_to: Option<RoutedTo>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RoutedTo {
    #[serde(default, rename = "serviceName")]
    pub service_name: Option<String>,
}

impl IpInfo {
    pub fn service(&self) -> Option<&str> {
        self.routed_to.as_ref()?.service_name.as_deref()
    }
}

/// Which task list a task id belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskRef {
    Server { service: String, id: u64 },
    Ip { block: IpNet, id: u64 },
}

impl TaskRef {
    pub fn id(&self) -> u64 {
        match self {
            TaskRef::Server { id, .. } | TaskRef::Ip { id, .. } => *id,
        }
    }
}

/// The OVH operations failover needs. Each is one request (plus the client's own retries).
pub trait FailoverApi {
    fn list_vmacs(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Vec<String>, OvhError>> + Send;
    fn vmac_ips(
        &self,
        service: &str,
        mac: &str,
    ) -> impl Future<Output = Result<Vec<Ipv4Addr>, OvhError>> + Send;
    fn add_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
        vm_name: &str,
    ) -> impl Future<Output = Result<Task, OvhError>> + Send;
    fn remove_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> impl Future<Output = Result<Task, OvhError>> + Send;
    fn task(&self, task: &TaskRef) -> impl Future<Output = Result<Task, OvhError>> + Send;
    fn ip_info(&self, block: IpNet) -> impl Future<Output = Result<IpInfo, OvhError>> + Send;
    fn ip_move(
        &self,
        block: IpNet,
        to: &str,
    ) -> impl Future<Output = Result<Task, OvhError>> + Send;
    fn ip_pending_moves(
        &self,
        block: IpNet,
    ) -> impl Future<Output = Result<Vec<u64>, OvhError>> + Send;
    /// Tasks of a dedicated server that are not finished (`init`, `todo`, `doing`): read
    /// after a write whose outcome is unknown, before anything is written again.
    fn server_pending_tasks(
        &self,
        service: &str,
    ) -> impl Future<Output = Result<Vec<u64>, OvhError>> + Send;
    /// How long this kind of task took lately, as learned by [`FailoverApi::learn`]; task
    /// polling starts near it. `None` before the first one.
    fn learned(&self, _kind: TaskKind) -> Option<crate::ovh::policy::Expect> {
        None
    }
    /// Records how long a task of `kind` took (from the request to being seen done).
    fn learn(&self, _kind: TaskKind, _took: crate::ovh::policy::Sample) {}
}

/// The kinds of task whose durations carpd learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskKind {
    VmacRemove,
    VmacAdd,
    Move,
}

/// The one encoder of variable path segments: everything but RFC 3986's unreserved
/// characters and `:` (MACs go in with their colons, as OVH's clients send them) is
/// percent-encoded, so no value from the configuration or from an answer can add a path
/// segment, a query or a fragment to a signed URL.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `51.68.252.230/32` as it goes into a path.
pub fn encode_block(block: IpNet) -> String {
    seg(&block.to_string())
}

/// A MAC address as six hex pairs separated by colons (or dashes), normalised to lowercase
/// with colons; `None` for anything else.
pub fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = s.len() == 17
        && parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| parts.join(":").to_ascii_lowercase())
}

/// The MACs of a vMAC listing: parsed, normalised, each once; other entries are dropped
/// (and named, quoted, in a warning).
pub fn clean_macs(service: &str, listed: Vec<serde_json::Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in listed {
        match v.as_str().and_then(parse_mac) {
            Some(m) if !out.contains(&m) => out.push(m),
            Some(_) => {}
            None => tracing::warn!(
                service,
                entry = %quote(&v.to_string()),
                "OVH listed a virtual MAC that is not a MAC address: ignored"
            ),
        }
    }
    out
}

/// The IPv4 addresses of a listing: parsed, each once; other entries are dropped with a
/// warning (fewer IPs makes the last-IP guard stricter, never looser).
pub fn clean_ips(what: &str, listed: Vec<serde_json::Value>) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for v in listed {
        match v.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
            Some(ip) if !out.contains(&ip) => out.push(ip),
            Some(_) => {}
            None => tracing::warn!(
                what,
                entry = %quote(&v.to_string()),
                "OVH listed an address that is not an IPv4 address: ignored"
            ),
        }
    }
    out
}

/// Untrusted text for a log line: at most 64 characters, control characters escaped.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    format!("{:?}", cut)
}

pub fn vmac_path(service: &str) -> String {
    format!("/dedicated/server/{}/virtualMac", seg(service))
}

pub fn vaddr_path(service: &str, mac: &str) -> String {
    format!(
        "/dedicated/server/{}/virtualMac/{}/virtualAddress",
        seg(service),
        seg(mac)
    )
}

#[derive(Serialize)]
struct AddVirtualAddress<'a> {
    #[serde(rename = "ipAddress")]
    ip_address: String,
    #[serde(rename = "virtualMachineName")]
    virtual_machine_name: &'a str,
}

#[derive(Serialize)]
struct Move<'a> {
    to: &'a str,
}

impl FailoverApi for Client {
    async fn list_vmacs(&self, service: &str) -> Result<Vec<String>, OvhError> {
        Ok(clean_macs(service, self.get(&vmac_path(service)).await?))
    }

    async fn vmac_ips(&self, service: &str, mac: &str) -> Result<Vec<Ipv4Addr>, OvhError> {
        Ok(clean_ips(mac, self.get(&vaddr_path(service, mac)).await?))
    }

    async fn add_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
        vm_name: &str,
    ) -> Result<Task, OvhError> {
        let body = AddVirtualAddress {
            ip_address: ip.to_string(),
            virtual_machine_name: vm_name,
        };
        self.post(&vaddr_path(service, mac), &body).await
    }

    async fn remove_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<Task, OvhError> {
        self.delete(&format!(
            "{}/{}",
            vaddr_path(service, mac),
            seg(&ip.to_string())
        ))
        .await
    }

    async fn task(&self, task: &TaskRef) -> Result<Task, OvhError> {
        match task {
            TaskRef::Server { service, id } => {
                self.get(&format!("/dedicated/server/{}/task/{id}", seg(service)))
                    .await
            }
            TaskRef::Ip { block, id } => {
                self.get(&format!("/ip/{}/task/{id}", encode_block(*block)))
                    .await
            }
        }
    }

    async fn ip_info(&self, block: IpNet) -> Result<IpInfo, OvhError> {
        self.get(&format!("/ip/{}", encode_block(block))).await
    }

    async fn ip_move(&self, block: IpNet, to: &str) -> Result<Task, OvhError> {
        self.post(&format!("/ip/{}/move", encode_block(block)), &Move { to })
            .await
    }

    async fn ip_pending_moves(&self, block: IpNet) -> Result<Vec<u64>, OvhError> {
        let mut ids = Vec::new();
        for status in ["todo", "doing"] {
            let v: Vec<u64> = self
                .get(&format!(
                    "/ip/{}/task?function=genericMoveFloatingIp&status={status}",
                    encode_block(block)
                ))
                .await?;
            ids.extend(v);
        }
        Ok(ids)
    }

    async fn server_pending_tasks(&self, service: &str) -> Result<Vec<u64>, OvhError> {
        let mut ids = Vec::new();
        for status in ["init", "todo", "doing"] {
            let v: Vec<u64> = self
                .get(&format!(
                    "/dedicated/server/{}/task?status={status}",
                    seg(service)
                ))
                .await?;
            for id in v {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn learned(&self, kind: TaskKind) -> Option<crate::ovh::policy::Expect> {
        self.learned_task_time(kind)
    }

    fn learn(&self, kind: TaskKind, took: crate::ovh::policy::Sample) {
        self.learn_task_time(kind, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoders() {
        let t: Task = serde_json::from_str(
            r#"{"taskId":42,"function":"addVirtualMac","status":"doing","comment":null,"startDate":"2024-01-01T00:00:00+01:00","extra":[1]}"#,
        )
        .unwrap();
        assert_eq!(t.id, 42);
        assert_eq!(t.status, TaskStatus::Pending("doing".into()));
        let t: Task = serde_json::from_str(
            r#"{"taskId":1,"status":"ovhError","comment":"no\nFAKE carpd: MASTER","function":"x\u001b[2J"}"#,
        )
        .unwrap();
        assert_eq!(t.comment.as_deref(), Some("no\\nFAKE carpd: MASTER"));
        assert_eq!(t.function.as_deref(), Some("x\\u{1b}[2J"));
        assert_eq!(
            TaskStatus::parse("customerError"),
            TaskStatus::Failed("customerError".into())
        );
        let i: IpInfo = serde_json::from_str(
            r#"{"ip":"51.68.252.230/32","type":"failover","routedTo":{"serviceName":"ns1.eu"}}"#,
        )
        .unwrap();
        assert_eq!(i.service(), Some("ns1.eu"));
        let i: IpInfo = serde_json::from_str(r#"{"ip":"1.2.3.4/32","routedTo":null}"#).unwrap();
        assert_eq!(i.service(), None);
        assert_eq!(
            encode_block("51.68.252.230/32".parse().unwrap()),
            "51.68.252.230%2F32"
        );
        assert_eq!(
            TaskStatus::parse("init"),
            TaskStatus::Pending("init".into())
        );
    }

    #[test]
    fn hostile_listings_are_cleaned() {
        let macs = clean_macs(
            "ns1.eu",
            serde_json::from_str(
                r#"["02:00:00:AA:bb:cc","../../auth/x","02-00-00-11-22-33","02:00:00:aa:bb:cc",7,"02:00:00:aa:bb:cc?x=1"]"#,
            )
            .unwrap(),
        );
        assert_eq!(macs, ["02:00:00:aa:bb:cc", "02:00:00:11:22:33"]);
        let ips = clean_ips(
            "m",
            serde_json::from_str(r#"["1.2.3.4","1.2.3.4","1.2.3.4/32","x",null,"5.6.7.8"]"#)
                .unwrap(),
        );
        assert_eq!(ips, [ip4("1.2.3.4"), ip4("5.6.7.8")]);
        assert_eq!(seg("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(seg("02:00:00:aa:bb:cc"), "02:00:00:aa:bb:cc");
        assert_eq!(parse_mac("02:00:00:aa:bb"), None);
        assert_eq!(parse_mac("02:00:00:aa:bb:cg"), None);
    }

    fn ip4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = serde_json::from_slice::<Task>(&bytes);
            let _ = serde_json::from_slice::<IpInfo>(&bytes);
            let _ = serde_json::from_slice::<Vec<Ipv4Addr>>(&bytes);
            let _ = serde_json::from_slice::<Vec<String>>(&bytes);
        }

        #[test]
        fn segments_never_carry_a_separator(s in "\\PC{0,40}") {
            let e = seg(&s);
            proptest::prop_assert!(!e.contains(['/', '?', '#', ' ']));
            if let Some(m) = parse_mac(&s) {
                proptest::prop_assert_eq!(seg(&m), m);
            }
        }

        #[test]
        fn task_decoder_never_panics_on_near_misses(id in proptest::num::i64::ANY, status in "\\PC{0,12}", f in proptest::option::of("\\PC{0,8}")) {
            let v = serde_json::json!({"taskId": id, "status": status, "function": f});
            let _ = serde_json::from_value::<Task>(v);
        }
    }
}
