//! Failover operations: locate a failover IP, claim it by virtual MAC, claim it by IP move.
//!
//! Each operation is idempotent and safe to retry: it observes OVH, asks the pure planner
//! ([`super::plan`]) for the next step, does it, and observes again whenever a step fails.
//! Control flow never depends on OVH's message text: any 4xx (or an ambiguous 5xx/timeout) on
//! a mutation means "re-read the state and re-plan", a bounded number of times.
//!
//! Fencing: every operation takes a [`Fence`], asked just before each mutating step whether
//! this node is still MASTER; when it says no, the operation stops and reports what it did.
//!
//! Phases: a vMAC claim is a transaction whose phases it reports to the fence as it enters
//! them ([`Phase`]): observe, release from the other vMAC, bind here, verify. From the moment
//! the DELETE is sent until the POST's task is done the IP may be bound to no vMAC: that
//! *open window* ([`Phase::is_open`]) is what the daemon never abandons on a stop, a reload
//! or a cancellation (only the MASTER fence may end it: a node that is no longer MASTER must
//! not bind the IP to itself; the new MASTER does).
//!
//! Every operation reports a [`ClaimOutcome`]: what it found, each step with its task time,
//! the outage window (from the DELETE task being done to the POST task being done), and
//! timings; on failure the outcome travels with the error, so the caller knows what changed.

use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::Duration;

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use ipnet::IpNet;

use super::api::{FailoverApi, TaskRef, TaskStatus};
use super::error::{ErrorKind, OvhError};
use super::plan::{
    Found, MoveObservation, MoveStep, VmacObservation, VmacStep, plan_move, plan_vmac,
};
use super::policy::{PollPolicy, RetryPolicy};

/// Where a claim stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Reading where the IP is (and re-reading after an ambiguous step).
    Observe,
    /// The DELETE from `from` is about to be sent or its task runs: the window is open.
    Release { from: String },
    /// Released (or not known to be bound anywhere after our DELETE): binding here; the
    /// window is open until the POST's task is done.
    Bind,
    /// Bound here by our POST; reading it back. The window is closed.
    Verify,
    /// IP move mode: the move request and its task (OVH moves it atomically: no window).
    Move,
}

impl Phase {
    /// Whether the IP may be bound to no one because of this claim: the window a stop,
    /// reload or cancellation never abandons.
    pub fn is_open(&self) -> bool {
        matches!(self, Phase::Release { .. } | Phase::Bind)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Observe => "observe",
            Phase::Release { .. } => "release",
            Phase::Bind => "bind",
            Phase::Verify => "verify",
            Phase::Move => "move",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Release { from } => write!(f, "release from {from}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// What a claim asks of the one who runs it.
pub trait Fence: Sync {
    /// Just before every mutating step: is this node still MASTER of the IP's group?
    fn still_master(&self) -> bool;
    /// The claim entered `phase` (status, the open-window marker). Called before the
    /// request of that phase is sent.
    fn phase(&self, _phase: &Phase) {}
}

/// A plain "still MASTER?" closure is a fence (the CLI, tests).
impl<F: Fn() -> bool + Sync> Fence for F {
    fn still_master(&self) -> bool {
        self()
    }
}

/// A failover IP bound by virtual MAC on a dedicated server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmacTarget {
    pub ip: Ipv4Addr,
    pub service: String,
    /// This node's vMAC, lowercase.
    pub mac: String,
    pub virtual_machine_name: String,
    pub allow_last_ip_release: bool,
}

/// A failover IP (block) moved between services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveTarget {
    pub block: IpNet,
    /// This node's service.
    pub service: String,
}

/// How an operation runs.
#[derive(Clone, Copy, Debug)]
pub struct ClaimOptions {
    /// The whole operation, all steps and waits included.
    pub deadline: Duration,
    pub poll: PollPolicy,
    /// Waits between re-plans after a refused or failed mutation.
    pub replan_backoff: RetryPolicy,
    /// Most re-plans after refused mutations or surprising read-backs.
    pub max_replans: u32,
    /// Observe and plan, change nothing.
    pub dry_run: bool,
    /// Allow releasing the last IP of a vMAC (`--force`).
    pub force: bool,
}

impl Default for ClaimOptions {
    fn default() -> ClaimOptions {
        ClaimOptions {
            deadline: Duration::from_secs(300),
            poll: PollPolicy::default(),
            replan_backoff: RetryPolicy {
                initial: Duration::from_millis(500),
                max: Duration::from_secs(15),
                max_attempts: u32::MAX,
                ..RetryPolicy::default()
            },
            max_replans: 5,
            dry_run: false,
            force: false,
        }
    }
}

/// How an operation ended, when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ClaimResult {
    /// Already where it should be: nothing was changed.
    AlreadyBound,
    /// Changed and verified.
    Claimed,
    /// `still_master` said no before a mutating step; `before` names that step.
    Cancelled { before: String },
    /// Dry run: the steps that would run.
    DryRun { would: Vec<String> },
}

/// One mutating step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StepRecord {
    /// `DELETE 51.68.252.230 from 02:00:00:11:22:33`, ...
    pub action: String,
    pub task_id: Option<u64>,
    /// From the start of the operation to the request being sent.
    #[serde(serialize_with = "ser_ms")]
    pub started_after: Duration,
    /// From the request to the task being seen done.
    #[serde(serialize_with = "ser_ms")]
    pub task_time: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64() * 1000.0),
        None => s.serialize_none(),
    }
}

/// What an operation found and did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClaimOutcome {
    pub ip: String,
    /// The first observation.
    pub found: Option<Found>,
    pub result: ClaimResult,
    pub steps: Vec<StepRecord>,
    /// From the DELETE task done to the POST task done: the IP reached no one.
    #[serde(serialize_with = "ser_opt_ms")]
    pub outage: Option<Duration>,
    /// From the start to the first mutating request being sent.
    #[serde(serialize_with = "ser_opt_ms")]
    pub first_mutation_after: Option<Duration>,
    pub replans: u32,
    #[serde(serialize_with = "ser_ms")]
    pub elapsed: Duration,
}

impl ClaimOutcome {
    fn new(ip: String) -> ClaimOutcome {
        ClaimOutcome {
            ip,
            found: None,
            result: ClaimResult::AlreadyBound,
            steps: Vec::new(),
            outage: None,
            first_mutation_after: None,
            replans: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "refusing to remove {ip} from virtual MAC {mac} of {service}: it is that vMAC's only IP, and OVH deletes a vMAC with its last IP for good (a re-created vMAC gets a new MAC the VM's NIC does not have). Fix: add another IP to {mac} first, or set allow_last_ip_release: true (CLI: --force) if losing that vMAC is intended"
    )]
    LastIp {
        ip: Ipv4Addr,
        mac: String,
        service: String,
    },
    #[error(
        "virtual MAC {mac} does not exist on {service} (it has: {have}). Fix: correct ovh_virtual_mac.mac in carpd.yaml (the MAC of this node's NIC, as shown in the OVH manager)"
    )]
    OursMissing {
        mac: String,
        service: String,
        have: String,
    },
    #[error(
        "OVH task {task} ({action}) ended with status {status}{}. Fix: see the task in the OVH manager; carpd retries on the next reconcile",
        comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
    )]
    TaskFailed {
        task: u64,
        action: String,
        status: String,
        comment: Option<String>,
    },
    #[error(
        "{what} for {ip} did not finish within the deadline of {deadline:?}. Fix: OVH may be slow; carpd retries on the next reconcile (raise ovh.claim_deadline if tasks routinely take longer)"
    )]
    Deadline {
        ip: String,
        what: String,
        deadline: Duration,
    },
    #[error("giving up on {ip} after {replans} re-plans; last problem: {last}")]
    TooManyReplans {
        ip: String,
        replans: u32,
        last: String,
    },
    #[error("{0}")]
    Api(#[from] OvhError),
}

/// A failed operation, with what it had done before failing.
#[derive(Clone, Debug)]
pub struct ClaimFailure {
    pub error: ClaimError,
    pub outcome: ClaimOutcome,
}

impl fmt::Display for ClaimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if !self.outcome.steps.is_empty() {
            let done: Vec<&str> = self
                .outcome
                .steps
                .iter()
                .map(|s| s.action.as_str())
                .collect();
            write!(f, " (done before the failure: {})", done.join("; "))?;
        }
        Ok(())
    }
}

impl std::error::Error for ClaimFailure {}

/// Runs `fut`, failing with a deadline error when `deadline` passes first.
async fn within<T>(
    deadline: Instant,
    ip: &str,
    what: &str,
    total: Duration,
    fut: impl Future<Output = Result<T, OvhError>>,
) -> Result<T, ClaimError> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(r) => r.map_err(ClaimError::Api),
        Err(_) => Err(ClaimError::Deadline {
            ip: ip.into(),
            what: what.into(),
            deadline: total,
        }),
    }
}

/// Where the IP is among the service's vMACs (no reverse lookup exists: list, then read each
/// vMAC's IPs). Also reports whether `ours` exists and the vMAC list.
pub async fn locate<A: FailoverApi>(
    api: &A,
    service: &str,
    ip: Ipv4Addr,
    ours: &str,
) -> Result<(VmacObservation, Vec<String>), OvhError> {
    let vmacs = api.list_vmacs(service).await?;
    let ours_exists = vmacs.iter().any(|m| m.eq_ignore_ascii_case(ours));
    // Read our own vMAC first: when the IP is already ours (the common re-check), the other
    // vMACs are still read to be sure it is nowhere else.
    let mut order: Vec<&String> = vmacs.iter().collect();
    order.sort_by_key(|m| !m.eq_ignore_ascii_case(ours));
    let mut found = Found::Unbound;
    for mac in order {
        let ips = api.vmac_ips(service, mac).await?;
        if ips.contains(&ip) {
            found = Found::Vmac {
                mac: mac.to_lowercase(),
                ips: ips.len(),
            };
            break;
        }
    }
    Ok((
        VmacObservation {
            found,
            ours_exists: Some(ours_exists),
        },
        vmacs,
    ))
}

/// What a failed mutation means for the claim loop.
fn replannable(e: &ClaimError) -> bool {
    match e {
        ClaimError::Api(o) => o.is_client_error() || o.is_transient(),
        _ => false,
    }
}

/// What one mutating step came to.
enum Mutation {
    /// Sent, its task done in `task_time`, recorded.
    Done { task_time: Duration },
    /// OVH refused in a way that re-reading its state fixes: plan again.
    Replan,
    /// The claim ends here (dry run, or no longer MASTER): `Run::outcome` says how.
    Ended,
}

struct Run<'a> {
    start: Instant,
    deadline: Instant,
    opts: &'a ClaimOptions,
    outcome: ClaimOutcome,
}

impl Run<'_> {
    fn fail(&mut self, error: ClaimError) -> ClaimFailure {
        self.outcome.elapsed = self.start.elapsed();
        ClaimFailure {
            error,
            outcome: self.outcome.clone(),
        }
    }

    fn finish(&mut self, result: ClaimResult) -> ClaimOutcome {
        self.outcome.result = result;
        self.outcome.elapsed = self.start.elapsed();
        self.outcome.clone()
    }

    /// The gate before every mutating step: a dry run stops here saying what it would do; a
    /// node that is no longer MASTER stops here (fencing). Returns when the mutation started,
    /// or `None` when the claim ends here (its outcome is then in `self.outcome`).
    fn gate(&mut self, action: &str, would: Vec<String>, fence: &dyn Fence) -> Option<Instant> {
        if self.opts.dry_run {
            self.finish(ClaimResult::DryRun { would });
            return None;
        }
        if !fence.still_master() {
            self.finish(ClaimResult::Cancelled {
                before: action.to_string(),
            });
            return None;
        }
        Some(self.mutation_started())
    }

    fn mutation_started(&mut self) -> Instant {
        let now = Instant::now();
        self.outcome
            .first_mutation_after
            .get_or_insert(now - self.start);
        now
    }

    /// One mutating step: the gate (dry run, fencing), the request, polling its task, and the
    /// step's record. A refusal the claim recovers from by re-reading OVH's state (4xx, 5xx)
    /// ends in [`Mutation::Replan`], after the re-plan wait.
    #[allow(clippy::too_many_arguments)]
    async fn mutate<A: FailoverApi>(
        &mut self,
        api: &A,
        action: String,
        would: Vec<String>,
        fence: &dyn Fence,
        phase: Phase,
        request: impl Future<Output = Result<super::api::Task, OvhError>>,
        task_ref: impl FnOnce(u64) -> TaskRef,
        expect: Option<Duration>,
    ) -> Result<Mutation, ClaimFailure> {
        let Some(sent) = self.gate(&action, would, fence) else {
            return Ok(Mutation::Ended);
        };
        fence.phase(&phase);
        let r = within(
            self.deadline,
            &self.outcome.ip,
            &action,
            self.opts.deadline,
            request,
        )
        .await;
        let task = match r {
            Ok(task) => task,
            Err(e) if replannable(&e) => {
                self.replan(&e).await?;
                return Ok(Mutation::Replan);
            }
            Err(e) => return Err(self.fail(e)),
        };
        let task_time = self
            .poll(api, task_ref(task.id), &action, sent, expect)
            .await?;
        self.outcome.steps.push(StepRecord {
            action,
            task_id: Some(task.id),
            started_after: sent - self.start,
            task_time,
        });
        Ok(Mutation::Done { task_time })
    }

    /// Waits before a re-plan; fails when out of re-plans or time.
    async fn replan(&mut self, why: &ClaimError) -> Result<(), ClaimFailure> {
        self.outcome.replans += 1;
        tracing::info!(ip = %self.outcome.ip, replans = self.outcome.replans, error = %why, "re-reading OVH state and re-planning");
        if self.outcome.replans > self.opts.max_replans {
            return Err(self.fail(ClaimError::TooManyReplans {
                ip: self.outcome.ip.clone(),
                replans: self.outcome.replans - 1,
                last: why.to_string(),
            }));
        }
        let retry_after = match why {
            ClaimError::Api(e) => e.api().and_then(|a| a.retry_after),
            _ => None,
        };
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        match self.opts.replan_backoff.delay(
            self.outcome.replans,
            fastrand::f64(),
            retry_after,
            remaining,
        ) {
            Some(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            None => Err(self.fail(ClaimError::Deadline {
                ip: self.outcome.ip.clone(),
                what: "re-planning".into(),
                deadline: self.opts.deadline,
            })),
        }
    }

    /// Polls a task until done; returns its time since `submitted`. `expect` is how long a
    /// similar task just took (the DELETE before a POST): polling starts tight only near it,
    /// which saves requests (OVH's rate budget) without delaying the answer.
    async fn poll<A: FailoverApi>(
        &mut self,
        api: &A,
        task: TaskRef,
        action: &str,
        submitted: Instant,
        expect: Option<Duration>,
    ) -> Result<Duration, ClaimFailure> {
        loop {
            let waited = submitted.elapsed();
            let early = expect
                .map(|e| e.mul_f64(0.8))
                .filter(|e| waited < *e)
                .map(|e| e - waited);
            let wait = early.unwrap_or_else(|| self.opts.poll.next(waited));
            if Instant::now() + wait > self.deadline {
                return Err(self.fail(ClaimError::Deadline {
                    ip: self.outcome.ip.clone(),
                    what: format!("OVH task {} ({action})", task.id()),
                    deadline: self.opts.deadline,
                }));
            }
            tokio::time::sleep(wait).await;
            let r = within(
                self.deadline,
                &self.outcome.ip,
                &format!("OVH task {} ({action})", task.id()),
                self.opts.deadline,
                api.task(&task),
            )
            .await;
            match r {
                Ok(t) => match t.status {
                    TaskStatus::Done => return Ok(submitted.elapsed()),
                    TaskStatus::Failed(status) => {
                        return Err(self.fail(ClaimError::TaskFailed {
                            task: task.id(),
                            action: action.into(),
                            status,
                            comment: t.comment,
                        }));
                    }
                    TaskStatus::Pending(_) => {}
                },
                // A task just created may not be visible yet (region lag).
                Err(ClaimError::Api(e))
                    if e.kind() == Some(ErrorKind::NotFound)
                        && submitted.elapsed() < self.opts.poll.fresh_404 => {}
                // The client already retried; keep polling until the deadline.
                Err(ClaimError::Api(e)) if e.is_transient() => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}

/// Claims `t.ip` for our vMAC. `hint` is a cached observation (the daemon keeps one fresh
/// while BACKUP): it saves the listing, but the vMAC it names is read once before anything is
/// deleted, so a stale hint costs a re-plan, never a wrong DELETE.
pub async fn claim_vmac<A: FailoverApi>(
    api: &A,
    t: &VmacTarget,
    opts: &ClaimOptions,
    hint: Option<&Found>,
    fence: &dyn Fence,
) -> Result<ClaimOutcome, ClaimFailure> {
    let start = Instant::now();
    let mut run = Run {
        start,
        deadline: start + opts.deadline,
        opts,
        outcome: ClaimOutcome::new(t.ip.to_string()),
    };
    let ip_s = t.ip.to_string();
    let allow_last = t.allow_last_ip_release || opts.force;
    let mut hint = hint.cloned();
    let mut next: Option<VmacStep> = None;
    let mut deleted_at: Option<Instant> = None;
    let mut delete_time: Option<Duration> = None;
    // Whether our DELETE may have been applied and the IP not yet bound here since.
    let mut released = false;
    loop {
        let step = match next.take() {
            Some(s) => s,
            None => {
                if !released {
                    fence.phase(&Phase::Observe);
                }
                let obs = match hint.take() {
                    Some(Found::Vmac { mac, .. }) => {
                        let ips = within(
                            run.deadline,
                            &ip_s,
                            "reading the vMAC",
                            opts.deadline,
                            api.vmac_ips(&t.service, &mac),
                        )
                        .await;
                        match ips {
                            Ok(ips) if ips.contains(&t.ip) => Some(VmacObservation {
                                found: Found::Vmac {
                                    mac: mac.to_lowercase(),
                                    ips: ips.len(),
                                },
                                ours_exists: None,
                            }),
                            // Stale or unreadable hint: observe fully.
                            _ => None,
                        }
                    }
                    Some(Found::Unbound) => Some(VmacObservation {
                        found: Found::Unbound,
                        ours_exists: None,
                    }),
                    _ => None,
                };
                let obs = match obs {
                    Some(o) => o,
                    None => {
                        within(
                            run.deadline,
                            &ip_s,
                            "locating the IP",
                            opts.deadline,
                            locate(api, &t.service, t.ip, &t.mac),
                        )
                        .await
                        .map(|(o, vmacs)| {
                            run.outcome.found.get_or_insert(o.found.clone());
                            (o, vmacs)
                        })
                        .map_err(|e| run.fail(e))?
                        .0
                    }
                };
                run.outcome.found.get_or_insert(obs.found.clone());
                if released && !matches!(obs.found, Found::Unbound) {
                    // Our DELETE did not apply (or someone bound it): bound again, the
                    // window is closed (the next step opens it again if needed).
                    fence.phase(&Phase::Observe);
                }
                let step = plan_vmac(&obs, &t.mac, allow_last);
                tracing::debug!(ip = %t.ip, found = %obs.found, ?step, "vMAC claim plan");
                step
            }
        };
        match step {
            VmacStep::Done => {
                let r = if run.outcome.steps.is_empty() {
                    ClaimResult::AlreadyBound
                } else {
                    ClaimResult::Claimed
                };
                return Ok(run.finish(r));
            }
            VmacStep::RefuseLastIp { mac } => {
                return Err(run.fail(ClaimError::LastIp {
                    ip: t.ip,
                    mac,
                    service: t.service.clone(),
                }));
            }
            VmacStep::OursMissing => {
                let have = api
                    .list_vmacs(&t.service)
                    .await
                    .map(|v| v.join(", "))
                    .unwrap_or_else(|_| "?".into());
                return Err(run.fail(ClaimError::OursMissing {
                    mac: t.mac.clone(),
                    service: t.service.clone(),
                    have,
                }));
            }
            VmacStep::Remove { from } => {
                let action = format!("DELETE {} from virtual MAC {from}", t.ip);
                let would = vec![
                    action.clone(),
                    format!("POST {} on virtual MAC {}", t.ip, t.mac),
                ];
                let service = t.service.clone();
                // From here until the POST's task is done the IP may be bound nowhere.
                released = true;
                match run
                    .mutate(
                        api,
                        action,
                        would,
                        fence,
                        Phase::Release { from: from.clone() },
                        api.remove_vmac_ip(&t.service, &from, t.ip),
                        |id| TaskRef::Server { service, id },
                        None,
                    )
                    .await?
                {
                    Mutation::Done { task_time } => {
                        deleted_at = Some(Instant::now());
                        delete_time = Some(task_time);
                    }
                    // Re-read only that vMAC first (one request, not a full listing): a
                    // 5xx storm must not spend the rate budget on listings.
                    Mutation::Replan => {
                        hint = Some(Found::Vmac { mac: from, ips: 0 });
                        continue;
                    }
                    Mutation::Ended => return Ok(run.outcome.clone()),
                }
                // The IP was just seen leaving: go straight to the POST (the outage runs).
                next = Some(VmacStep::Add);
            }
            VmacStep::Add => {
                // The IP is bound nowhere (released by us, or found so): binding it is an
                // open window too, finished even by a stopping daemon.
                released = true;
                let action = format!("POST {} on virtual MAC {}", t.ip, t.mac);
                let service = t.service.clone();
                match run
                    .mutate(
                        api,
                        action.clone(),
                        vec![action],
                        fence,
                        Phase::Bind,
                        api.add_vmac_ip(&t.service, &t.mac, t.ip, &t.virtual_machine_name),
                        |id| TaskRef::Server { service, id },
                        delete_time,
                    )
                    .await?
                {
                    Mutation::Done { .. } => {
                        if let Some(d) = deleted_at.take() {
                            run.outcome.outage = Some(d.elapsed());
                        }
                        released = false;
                        fence.phase(&Phase::Verify);
                    }
                    // After our own DELETE the IP was seen unbound: POST again at once (a
                    // POST that did land is refused, and that re-plan reads everything).
                    Mutation::Replan if deleted_at.is_some() => {
                        hint = Some(Found::Unbound);
                        continue;
                    }
                    Mutation::Replan => continue,
                    Mutation::Ended => return Ok(run.outcome.clone()),
                }
                // Read back and verify.
                let ips = within(
                    run.deadline,
                    &ip_s,
                    "verifying",
                    opts.deadline,
                    api.vmac_ips(&t.service, &t.mac),
                )
                .await;
                match ips {
                    Ok(ips) if ips.contains(&t.ip) => {
                        return Ok(run.finish(ClaimResult::Claimed));
                    }
                    Ok(_) => {
                        let e = ClaimError::Api(OvhError::Config(format!(
                            "the POST task finished but {} is not on {} when read back",
                            t.ip, t.mac
                        )));
                        run.replan(&e).await?;
                    }
                    Err(e) => {
                        run.replan(&e).await?;
                    }
                }
            }
        }
    }
}

/// Claims `t.block` for our service by moving it (`POST /ip/{block}/move`).
pub async fn claim_move<A: FailoverApi>(
    api: &A,
    t: &MoveTarget,
    opts: &ClaimOptions,
    fence: &dyn Fence,
) -> Result<ClaimOutcome, ClaimFailure> {
    let start = Instant::now();
    let mut run = Run {
        start,
        deadline: start + opts.deadline,
        opts,
        outcome: ClaimOutcome::new(t.block.to_string()),
    };
    let ip_s = t.block.to_string();
    let mut verifying = false;
    loop {
        let obs = within(
            run.deadline,
            &ip_s,
            "reading the IP",
            opts.deadline,
            async {
                let info = api.ip_info(t.block).await?;
                let pending = api.ip_pending_moves(t.block).await?;
                Ok(MoveObservation {
                    routed_to: info.service().map(str::to_string),
                    pending,
                })
            },
        )
        .await
        .map_err(|e| run.fail(e))?;
        run.outcome.found.get_or_insert(Found::Service {
            service: obs.routed_to.clone(),
        });
        match plan_move(&obs, &t.service) {
            MoveStep::Done => {
                let r = if run.outcome.steps.is_empty() {
                    ClaimResult::AlreadyBound
                } else {
                    ClaimResult::Claimed
                };
                return Ok(run.finish(r));
            }
            MoveStep::WaitFor(ids) => {
                for id in ids {
                    let tr = TaskRef::Ip { block: t.block, id };
                    // Someone else's move: its failure is theirs; re-plan either way.
                    match run
                        .poll(api, tr, "a pending move", Instant::now(), None)
                        .await
                    {
                        Ok(_) => {}
                        Err(f) if matches!(f.error, ClaimError::TaskFailed { .. }) => {}
                        Err(f) => return Err(f),
                    }
                }
            }
            MoveStep::Move => {
                if verifying {
                    let e = ClaimError::Api(OvhError::Config(format!(
                        "the move task finished but {} is routed to {} when read back",
                        t.block,
                        obs.routed_to.as_deref().unwrap_or("nothing")
                    )));
                    verifying = false;
                    run.replan(&e).await?;
                    continue;
                }
                let action = format!("move {} to {}", t.block, t.service);
                let block = t.block;
                match run
                    .mutate(
                        api,
                        action.clone(),
                        vec![action],
                        fence,
                        Phase::Move,
                        api.ip_move(t.block, &t.service),
                        |id| TaskRef::Ip { block, id },
                        None,
                    )
                    .await?
                {
                    Mutation::Done { .. } => {}
                    Mutation::Replan => continue,
                    Mutation::Ended => return Ok(run.outcome.clone()),
                }
                // Loop: the next observation verifies (Done) or re-plans.
                verifying = true;
            }
        }
    }
}
