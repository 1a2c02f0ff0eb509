//! An in-memory [`FailoverApi`] over the simulator's [`World`]: the same account semantics
//! without HTTP, signatures or sockets. For tests of the failover logic on tokio's paused
//! clock (task times of minutes run instantly and exactly), and for the daemon's tests later.
//!
//! Time is tokio's clock (`tokio::time::Instant`), so `#[tokio::test(start_paused = true)]`
//! drives task completion. Every call is recorded; refusals become `OvhError::Api` with the
//! same status and class as the HTTP simulator sends. With [`FakeApi::rules`] set, a call
//! outside them is refused with `NOT_GRANTED_CALL` as OVH does (same matcher as carpd's
//! rights check), before the world is touched.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Instant;

use ipnet::IpNet;

use super::world::{Refusal, TaskOwner, TaskView, World};
use carpd::ovh::FailoverApi;
use carpd::ovh::api::{IpInfo, Task, TaskRef, TaskStatus, encode_block, vaddr_path, vmac_path};
use carpd::ovh::error::{ApiError, ErrorBody, OvhError};
use carpd::ovh::rights::{Rule, granted};

/// One recorded call: method, path-like description, and whether it was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub what: String,
    pub ok: bool,
    pub at: Instant,
}

/// The fake. Wrap the world you set up; inspect it and the calls afterwards.
pub struct FakeApi {
    pub world: Mutex<World>,
    pub calls: Mutex<Vec<Call>>,
    /// The consumer key's access rules; `None`: everything is granted.
    pub rules: Mutex<Option<Vec<Rule>>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn refusal(method: &str, what: &str, r: Refusal) -> OvhError {
    OvhError::Api(Box::new(ApiError {
        method: method.into(),
        endpoint: "fake".into(),
        path: what.into(),
        status: r.status,
        body: ErrorBody {
            class: Some(r.class.into()),
            message: Some(r.message),
            ..ErrorBody::default()
        },
        query_id: None,
        retry_after: None,
    }))
}

fn task(v: TaskView) -> Task {
    Task {
        id: v.id,
        function: Some(v.function),
        status: TaskStatus::parse(&v.status),
        comment: v.comment,
    }
}

impl FakeApi {
    pub fn new(world: World) -> FakeApi {
        FakeApi {
            world: Mutex::new(world),
            calls: Mutex::new(Vec::new()),
            rules: Mutex::new(None),
        }
    }

    fn run<T>(
        &self,
        method: &'static str,
        path: String,
        what: String,
        f: impl FnOnce(&mut World, Instant) -> Result<T, Refusal>,
    ) -> Result<T, OvhError> {
        let now = now();
        let allowed = self
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_none_or(|r| granted(r, method, &path));
        if !allowed {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Call {
                    method,
                    what,
                    ok: false,
                    at: now,
                });
            return Err(OvhError::Api(Box::new(ApiError {
                method: method.into(),
                endpoint: "fake".into(),
                path,
                status: 403,
                body: ErrorBody {
                    error_code: Some("NOT_GRANTED_CALL".into()),
                    http_code: Some("403 Forbidden".into()),
                    message: Some("This call has not been granted".into()),
                    ..ErrorBody::default()
                },
                query_id: None,
                retry_after: None,
            })));
        }
        let r = {
            let mut w = self.world.lock().unwrap_or_else(|p| p.into_inner());
            w.advance(now);
            f(&mut w, now)
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Call {
                method,
                what: what.clone(),
                ok: r.is_ok(),
                at: now,
            });
        r.map_err(|e| refusal(method, &what, e))
    }

    /// Accepted POST/DELETE calls so far.
    pub fn mutations(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|c| c.ok && c.method != "GET")
            .count()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl FailoverApi for FakeApi {
    async fn list_vmacs(&self, service: &str) -> Result<Vec<String>, OvhError> {
        self.run(
            "GET",
            vmac_path(service),
            format!("vmacs of {service}"),
            |w, _| w.list_vmacs(service),
        )
    }

    async fn vmac_ips(&self, service: &str, mac: &str) -> Result<Vec<Ipv4Addr>, OvhError> {
        self.run(
            "GET",
            vaddr_path(service, mac),
            format!("ips of {mac}"),
            |w, _| w.vmac_ips(service, mac),
        )
    }

    async fn add_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
        vm_name: &str,
    ) -> Result<Task, OvhError> {
        self.run(
            "POST",
            vaddr_path(service, mac),
            format!("{ip} on {mac}"),
            |w, now| w.add_ip(now, service, mac, ip, vm_name).map(task),
        )
    }

    async fn remove_vmac_ip(
        &self,
        service: &str,
        mac: &str,
        ip: Ipv4Addr,
    ) -> Result<Task, OvhError> {
        let path = format!("{}/{ip}", vaddr_path(service, mac));
        self.run("DELETE", path, format!("{ip} from {mac}"), |w, now| {
            w.remove_ip(now, service, mac, ip).map(task)
        })
    }

    async fn task(&self, t: &TaskRef) -> Result<Task, OvhError> {
        let (owner, id, path) = match t {
            TaskRef::Server { service, id } => (
                TaskOwner::Server(service.clone()),
                *id,
                format!("/dedicated/server/{service}/task/{id}"),
            ),
            TaskRef::Ip { block, id } => (
                TaskOwner::Ip(*block),
                *id,
                format!("/ip/{}/task/{id}", encode_block(*block)),
            ),
        };
        self.run("GET", path, format!("task {id}"), |w, now| {
            w.task(&owner, id, now).map(task)
        })
    }

    async fn server_pending_tasks(&self, service: &str) -> Result<Vec<u64>, OvhError> {
        let path = format!("/dedicated/server/{service}/task");
        self.run(
            "GET",
            path,
            format!("pending tasks of {service}"),
            |w, now| {
                w.server(service)?;
                let mut ids = Vec::new();
                for s in ["init", "todo", "doing"] {
                    ids.extend(w.server_tasks(service, Some(s), now));
                }
                Ok(ids)
            },
        )
    }

    async fn ip_info(&self, block: IpNet) -> Result<IpInfo, OvhError> {
        let path = format!("/ip/{}", encode_block(block));
        self.run("GET", path, format!("ip {block}"), |w, _| {
            let v = w.ip_info(block)?;
            Ok(serde_json::from_value(v).unwrap_or(IpInfo {
                ip: block.to_string(),
                routed_to: None,
            }))
        })
    }

    async fn ip_move(&self, block: IpNet, to: &str) -> Result<Task, OvhError> {
        let path = format!("/ip/{}/move", encode_block(block));
        self.run("POST", path, format!("move {block} to {to}"), |w, now| {
            w.move_ip(now, block, to).map(task)
        })
    }

    async fn ip_pending_moves(&self, block: IpNet) -> Result<Vec<u64>, OvhError> {
        let path = format!("/ip/{}/task", encode_block(block));
        self.run(
            "GET",
            path,
            format!("pending moves of {block}"),
            |w, now| {
                let mut v = w.ip_tasks(block, Some("genericMoveFloatingIp"), Some("todo"), now);
                v.extend(w.ip_tasks(block, Some("genericMoveFloatingIp"), Some("doing"), now));
                Ok(v)
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use carpd::ovh::failover::{
        ClaimOptions, ClaimResult, MoveTarget, VmacTarget, claim_move, claim_vmac,
    };

    const S: &str = "ns1.eu";
    const OURS: &str = "02:00:00:aa:bb:cc";
    const PEER: &str = "02:00:00:11:22:33";

    fn vip() -> Ipv4Addr {
        "51.68.252.230".parse().unwrap()
    }

    fn target() -> VmacTarget {
        VmacTarget {
            ip: vip(),
            service: S.into(),
            mac: OURS.into(),
            virtual_machine_name: "router-003".into(),
            allow_last_ip_release: false,
        }
    }

    fn world(task: Duration) -> World {
        let mut w = World::new();
        w.add_vmac(S, OURS, &["10.0.0.1".parse().unwrap()]);
        w.add_vmac(S, PEER, &["10.0.0.2".parse().unwrap(), vip()]);
        w.task_delay = task;
        w
    }

    /// With OVH tasks of realistic length, the default polling adds little: the outage is the
    /// POST task plus at most 10% (one poll interval), and the polls stay within the rate
    /// budget.
    #[tokio::test(start_paused = true)]
    async fn polling_overhead_is_bounded_for_real_task_times() {
        for secs in [3u64, 20, 90] {
            let task = Duration::from_secs(secs);
            let api = FakeApi::new(world(task));
            let out = claim_vmac(&api, &target(), &ClaimOptions::default(), None, &|| true)
                .await
                .unwrap();
            assert_eq!(out.result, ClaimResult::Claimed);
            let outage = out.outage.unwrap();
            assert!(outage >= task, "{outage:?}");
            let over = outage - task;
            assert!(
                over <= task / 10 + Duration::from_millis(50),
                "{secs} s tasks: outage {outage:?}"
            );
            // Long tasks stay within the client's rate budget (20 at once + 40 per minute), so
            // the limiter does not slow their polling; short ones lean on the limiter.
            let polls = api
                .calls()
                .iter()
                .filter(|c| c.what.starts_with("task"))
                .count();
            let minutes = out.elapsed.as_secs_f64() / 60.0;
            if secs >= 20 {
                assert!(
                    polls as f64 <= 20.0 + 40.0 * minutes,
                    "{secs} s tasks: {polls} polls in {minutes:.1} min"
                );
            }
            // The POST is polled from 80% of the DELETE's time on: a handful of polls.
            let calls = api.calls();
            let post_at = calls.iter().find(|c| c.method == "POST").unwrap().at;
            let post_polls = calls
                .iter()
                .filter(|c| c.what.starts_with("task") && c.at > post_at)
                .count();
            assert!(
                post_polls <= 5,
                "{secs} s tasks: {post_polls} polls of the POST task"
            );
            assert_eq!(api.mutations(), 2);
        }
    }

    /// A POST outside the rules ends the claim at once with the permanent refusal: one
    /// refused POST, no re-plan loop; and every call a claim makes is one `rights` predicts.
    #[tokio::test(start_paused = true)]
    async fn a_refused_post_ends_the_claim_at_once() {
        let api = FakeApi::new(world(Duration::from_secs(3)));
        let t = target();
        let needs = carpd::ovh::rights::vmac_needs(&t, Some(PEER));
        let all: Vec<Rule> = needs
            .iter()
            .map(|n| Rule {
                method: n.method.into(),
                path: n.rule.clone(),
            })
            .collect();
        *api.rules.lock().unwrap() =
            Some(all.iter().filter(|r| r.method != "POST").cloned().collect());
        let f = claim_vmac(&api, &t, &ClaimOptions::default(), None, &|| true)
            .await
            .unwrap_err();
        assert!(
            matches!(&f.error, carpd::ovh::failover::ClaimError::Api(e) if e.is_permanent()),
            "{f:?}"
        );
        let posts = api.calls().iter().filter(|c| c.method == "POST").count();
        assert_eq!(posts, 1, "{:?}", api.calls());
        assert_eq!(f.outcome.replans, 0);
        assert_eq!(f.outcome.steps.len(), 1, "the DELETE ran: {:?}", f.outcome);
        // With the rules `rights` suggests, the same claim goes through.
        let api = FakeApi::new(world(Duration::from_secs(3)));
        *api.rules.lock().unwrap() = Some(all);
        let out = claim_vmac(&api, &t, &ClaimOptions::default(), None, &|| true)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert!(api.calls().iter().all(|c| c.ok), "{:?}", api.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_slower_than_the_deadline_fails_in_time() {
        let api = FakeApi::new(world(Duration::from_secs(600)));
        let opts = ClaimOptions {
            deadline: Duration::from_secs(120),
            ..ClaimOptions::default()
        };
        let t0 = tokio::time::Instant::now();
        let f = claim_vmac(&api, &target(), &opts, None, &|| true)
            .await
            .unwrap_err();
        assert!(
            t0.elapsed() <= Duration::from_secs(120),
            "{:?}",
            t0.elapsed()
        );
        assert!(f.to_string().contains("deadline"), "{f}");
        assert_eq!(f.outcome.steps.len(), 0, "the DELETE never completed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_move_with_someone_elses_pending_move_waits_for_it() {
        let block: IpNet = "51.68.252.230/32".parse().unwrap();
        let mut w = World::new();
        w.add_server("ns-a.eu");
        w.add_server("ns-b.eu");
        w.add_server("ns-c.eu");
        w.add_block(block, Some("ns-a.eu"));
        w.move_delay = Duration::from_secs(60);
        // Someone is moving it to ns-c.
        w.move_ip(now(), block, "ns-c.eu").unwrap();
        let api = FakeApi::new(w);
        let t = MoveTarget {
            block,
            service: "ns-b.eu".into(),
        };
        // Under exactly the rules `rights` suggests for a move: every call is granted.
        *api.rules.lock().unwrap() = Some(
            carpd::ovh::rights::move_needs(&t)
                .iter()
                .map(|n| Rule {
                    method: n.method.into(),
                    path: n.rule.clone(),
                })
                .collect(),
        );
        let out = claim_move(&api, &t, &ClaimOptions::default(), &|| true)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(
            api.world.lock().unwrap().blocks[&block]
                .routed_to
                .as_deref(),
            Some("ns-b.eu")
        );
        assert!(out.elapsed >= Duration::from_secs(120));
        assert!(api.calls().iter().all(|c| c.ok), "{:?}", api.calls());
    }
}
