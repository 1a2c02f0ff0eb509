//! What every claim shares: the fence gate before a mutating step, the step itself with
//! its task polled to the end, and the re-plan after an ambiguous or refused write. A claim
//! (`vmac.rs`, `moves.rs`) decides *which* step comes next; this file only runs steps.
//!
//! Every write's outcome is one of ([`Outcome`]): applied (a task came back), not applied
//! (OVH refused it: a 4xx, or the client's retries of a request that certainly did not run
//! ran out), or unknown (the reply was lost, timed out, or was a 5xx after the request was
//! sent). Nothing is ever written again on an unknown or refused outcome before reading: the
//! step waits for the server's pending tasks to end ([`Run::settle`]), then the claim reads
//! the binding and plans anew, so a write that did land is seen, not repeated. A refusal
//! that only the operator can fix (credentials, access rules, IAM) ends the claim at once.
//!
//! Task polling starts from the durations learned for that kind of task
//! ([`FailoverApi::learned`]): the first poll just before the expected end, then close
//! polls, then backing off. A task that answers 404 is not visible yet (region lag): that is
//! waited out until the claim's deadline, and once it lasts, the binding is read to see
//! whether the step took effect ([`Seen`]).
//!
//! The claims of one failover poll side by side, and one read of a vMAC's IP list shows the
//! step of every IP on it, where a task GET shows one task. So a vMAC claim that shares its
//! reads ([`Run::shared`]) polls by reading the step's effect through [`SharedReads`] (one
//! request a round for all the claims whose rounds fall together), and reads its task only
//! once the effect is seen: the task's status stays the authority (done, failed, pending,
//! invisible), the shared read only replaces the polls that would have said "pending"
//! ([`Run::watch`]). A task that fails never shows its effect; it is read anyway at doubling
//! intervals from twice its expected time (from a second when nothing is expected).

use std::future::Future;
use std::time::Duration;

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::super::api::{FailoverApi, TaskKind, TaskRef, TaskStatus};
use super::super::error::{ErrorKind, OvhError};
use super::super::policy::Expect;
use super::shared::{Fresh, SharedReads};
use super::{
    ClaimError, ClaimFailure, ClaimOptions, ClaimOutcome, ClaimResult, Fence, Phase, StepRecord,
};

/// Runs `fut`, failing with a deadline error when `deadline` passes first.
pub(super) async fn within<T>(
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

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// OVH refused it (it did not run); reading the state tells why.
    NotApplied,
    /// It may or may not have run: read before anything is written again.
    Unknown,
    /// Final: only the operator can fix it, or nothing OVH can answer changes it.
    Fatal,
}

/// Classifies a failed write (never from message text).
pub(super) fn outcome(e: &ClaimError) -> Outcome {
    match e {
        ClaimError::Api(o) if o.is_permanent() => Outcome::Fatal,
        ClaimError::Api(o) if o.is_client_error() => Outcome::NotApplied,
        // A 429 was retried by the client; it did not run.
        ClaimError::Api(o) if o.kind() == Some(ErrorKind::RateLimited) => Outcome::NotApplied,
        ClaimError::Api(OvhError::Network { connect: true, .. }) => Outcome::NotApplied,
        // A 5xx, a lost or timed-out answer, an answer carpd could not read.
        ClaimError::Api(OvhError::Api(_) | OvhError::Network { .. } | OvhError::Decode { .. }) => {
            Outcome::Unknown
        }
        _ => Outcome::Fatal,
    }
}

/// What a step's effect looks like when read, to tell a task that stays invisible (404) is
/// done.
pub(super) enum Seen {
    /// `ip` is (`present`) or is not on `mac` of `service`.
    OnVmac {
        service: String,
        mac: String,
        ip: Ipv4Addr,
        present: bool,
    },
    /// `block` is routed to `service`.
    RoutedTo { block: IpNet, service: String },
}

impl Seen {
    async fn holds<A: FailoverApi>(&self, api: &A) -> Result<bool, OvhError> {
        match self {
            Seen::OnVmac {
                service,
                mac,
                ip,
                present,
            } => match api.vmac_ips(service, mac).await {
                Ok(ips) => Ok(ips.contains(ip) == *present),
                // The vMAC went (with its last IP, when allowed): the IP is not on it.
                Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(!*present),
                Err(e) => Err(e),
            },
            Seen::RoutedTo { block, service } => {
                Ok(api.ip_info(*block).await?.service() == Some(service.as_str()))
            }
        }
    }

    /// [`Seen::holds`] through reads shared with the other claims, as fresh as `need`;
    /// `None` when this effect has no shared read (a move).
    async fn holds_shared<A: FailoverApi>(
        &self,
        api: &A,
        shared: &SharedReads,
        need: Fresh,
    ) -> Option<Result<bool, OvhError>> {
        let Seen::OnVmac {
            service,
            mac,
            ip,
            present,
        } = self
        else {
            return None;
        };
        Some(match shared.vmac_ips(api, service, mac, need).await {
            Ok(ips) => Ok(ips.contains(ip) == *present),
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(!*present),
            Err(e) => Err(e),
        })
    }
}

/// The most a shared effect read may have been sent before a claim's round and still serve
/// it ([`Run::watch`]): half the interval to the claim's next round, at most this. The
/// rounds of the claims of one failover, whose writes went out within a few milliseconds of
/// each other, then share one request, and a round served early is never staler than half
/// its own interval.
pub(super) const WATCH_SLACK: Duration = Duration::from_millis(25);

/// The first blind read of a task whose time nothing teaches yet ([`Run::watch`]): a task
/// that fails at once is seen failed within a second, and a task of a few seconds costs a
/// claim one or two blind reads, not a poll per round.
pub(super) const BLIND_COLD: Duration = Duration::from_secs(1);

/// One mutating step, as [`Run::mutate`] runs it.
pub(super) struct Step<'s> {
    pub(super) action: String,
    /// What a dry run says it would do.
    pub(super) would: Vec<String>,
    pub(super) phase: Phase,
    pub(super) kind: TaskKind,
    /// The server whose pending tasks are waited for after a refused or unknown outcome
    /// (vMAC steps; a move's observation reads the block's pending moves itself).
    pub(super) settle: Option<&'s str>,
    /// How the step's effect reads, for a task that stays invisible.
    pub(super) seen: Seen,
    /// How long a similar task just took in this claim (the DELETE before a POST), when
    /// nothing was learned yet.
    pub(super) expect: Option<Duration>,
}

/// What one mutating step came to.
pub(super) enum Mutation {
    /// Sent, its task done in `task_time`, recorded.
    Done { task_time: Duration },
    /// Refused or unknown: the server's pending tasks have ended (see [`Run::settle`]);
    /// read the state and plan again. Never write before that read.
    Replan,
    /// The claim ends here (dry run, or no longer MASTER): `Run::outcome` says how.
    Ended,
}

pub(super) struct Run<'a> {
    pub(super) start: Instant,
    pub(super) deadline: Instant,
    pub(super) opts: &'a ClaimOptions,
    pub(super) outcome: ClaimOutcome,
    /// A write of this claim had an unknown outcome (it may be why the IP is where it is).
    pub(super) ambiguous: bool,
    /// The last poll of the current task that saw it pending (time since submitted).
    pub(super) last_pending: Option<Duration>,
    /// Reads shared with the other claims of the failover: task polls read the step's
    /// effect through them ([`Run::watch`]).
    pub(super) shared: Option<&'a SharedReads>,
    /// Waits for pending tasks so far ([`Run::settle`]).
    settled: u32,
}

impl<'a> Run<'a> {
    /// A run for the claim of `ip` (as shown in outcomes), starting now.
    pub(super) fn new(ip: String, opts: &'a ClaimOptions) -> Run<'a> {
        let start = Instant::now();
        Run {
            start,
            deadline: start + opts.deadline,
            opts,
            outcome: ClaimOutcome::new(ip),
            ambiguous: false,
            last_pending: None,
            shared: None,
            settled: 0,
        }
    }

    pub(super) fn fail(&mut self, error: ClaimError) -> ClaimFailure {
        self.outcome.elapsed = self.start.elapsed();
        ClaimFailure {
            error,
            outcome: self.outcome.clone(),
        }
    }

    /// `Claimed` when this claim wrote (or may have written), else `AlreadyBound`.
    pub(super) fn done(&self) -> ClaimResult {
        if self.outcome.steps.is_empty() && !self.ambiguous {
            ClaimResult::AlreadyBound
        } else {
            ClaimResult::Claimed
        }
    }

    pub(super) fn finish(&mut self, result: ClaimResult) -> ClaimOutcome {
        self.outcome.result = result;
        self.outcome.elapsed = self.start.elapsed();
        self.outcome.clone()
    }

    /// The gate before every mutating step: a dry run stops here saying what it would do; a
    /// node that is no longer MASTER stops here (fencing). Returns when the mutation started,
    /// or `None` when the claim ends here (its outcome is then in `self.outcome`).
    pub(super) fn gate(
        &mut self,
        action: &str,
        would: Vec<String>,
        fence: &dyn Fence,
    ) -> Option<Instant> {
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

    pub(super) fn mutation_started(&mut self) -> Instant {
        let now = Instant::now();
        self.outcome
            .first_mutation_after
            .get_or_insert(now - self.start);
        now
    }

    /// One mutating step: the gate (dry run, fencing), the request, polling its task, and the
    /// step's record. A refused or unknown outcome ends in [`Mutation::Replan`] once the
    /// server's pending tasks have ended and the re-plan wait is over; a final refusal ends
    /// the claim.
    pub(super) async fn mutate<A: FailoverApi>(
        &mut self,
        api: &A,
        step: Step<'_>,
        fence: &dyn Fence,
        request: impl Future<Output = Result<super::super::api::Task, OvhError>>,
        task_ref: impl Fn(u64) -> TaskRef,
    ) -> Result<Mutation, ClaimFailure> {
        let Some(sent) = self.gate(&step.action, step.would.clone(), fence) else {
            return Ok(Mutation::Ended);
        };
        fence.phase(&step.phase);
        let r = within(
            self.deadline,
            &self.outcome.ip,
            &step.action,
            self.opts.deadline,
            request,
        )
        .await;
        let task = match r {
            Ok(task) => task,
            Err(e) => {
                let o = outcome(&e);
                tracing::info!(ip = %self.outcome.ip, action = %step.action, outcome = ?o, error = %e, "OVH write not confirmed");
                match o {
                    Outcome::Fatal => return Err(self.fail(e)),
                    Outcome::Unknown => self.ambiguous = true,
                    Outcome::NotApplied => {}
                }
                if let Some(service) = step.settle {
                    self.settle(api, service, &task_ref).await?;
                }
                self.replan(&e).await?;
                return Ok(Mutation::Replan);
            }
        };
        // Known to the other claims of the failover while it runs ([`Run::settle`]).
        let _own = match (self.shared, step.settle) {
            (Some(shared), Some(service)) => Some(shared.own_task(service, task.id)),
            _ => None,
        };
        let task_time = self
            .poll(
                api,
                task_ref(task.id),
                &step.action,
                sent,
                (Some(step.kind), step.expect),
                Some(&step.seen),
            )
            .await?;
        api.learn(
            step.kind,
            crate::ovh::policy::sample(self.last_pending, task_time),
        );
        self.outcome.steps.push(StepRecord {
            action: step.action,
            task_id: Some(task.id),
            started_after: sent - self.start,
            task_time,
        });
        Ok(Mutation::Done { task_time })
    }

    /// After a refused or unknown write: reads the server's unfinished tasks and waits for
    /// each to end (a write that did land has its task there), so the read that follows
    /// sees its effect; the tasks the other claims of the failover wait for (other IPs') are
    /// skipped the first time. A task failing here is not ours to report: the read decides.
    async fn settle<A: FailoverApi>(
        &mut self,
        api: &A,
        service: &str,
        task_ref: &impl Fn(u64) -> TaskRef,
    ) -> Result<(), ClaimFailure> {
        let ip = self.outcome.ip.clone();
        let pending = within(
            self.deadline,
            &ip,
            "reading pending tasks",
            self.opts.deadline,
            api.server_pending_tasks(service),
        )
        .await;
        let pending = match pending {
            Ok(p) => p,
            // Unreadable (transient, or a consumer key without the rule for the task list):
            // the re-plan wait and the read that follows stand in (a write that landed and
            // whose task still runs is then refused as pending, and read again); a write
            // never follows without a read.
            Err(e) => {
                tracing::warn!(ip = %ip, error = %e, "cannot read the server's pending tasks: re-reading the binding after the re-plan wait instead");
                return Ok(());
            }
        };
        // The tasks of the failover's other IPs are skipped the first time: OVH refuses a
        // write while a task on the same IP runs (reference), so they cannot be why, and
        // waiting for them would add a task time (issue 21). Whether OVH also refuses while
        // another IP's task on the same vMAC runs is not documented: a second refusal in
        // this claim waits for every pending task.
        let skip_others = self.settled == 0;
        self.settled += 1;
        for id in pending {
            if skip_others && self.shared.is_some_and(|s| s.is_own_task(service, id)) {
                continue;
            }
            let now = Instant::now();
            match self
                .poll(
                    api,
                    task_ref(id),
                    "a pending task",
                    now,
                    // Nothing expected: how long it has run is unknown, so the learned time
                    // counted from now would put the first poll up to a task time late.
                    (None, None),
                    None,
                )
                .await
            {
                Ok(_) => {}
                Err(f) if matches!(f.error, ClaimError::TaskFailed { .. }) => {}
                Err(f) => return Err(f),
            }
        }
        Ok(())
    }

    /// Waits before a re-plan; fails when out of re-plans or time.
    pub(super) async fn replan(&mut self, why: &ClaimError) -> Result<(), ClaimFailure> {
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

    /// Polls a task until done; returns its time since `submitted`. `expect` is the task's
    /// kind, whose learned duration is read again before every poll, and a fallback
    /// duration: the first poll goes near the expected end, which saves requests (OVH's rate
    /// budget) without delaying the answer. Read again, because the claims of a failover
    /// poll side by side: the first task of a kind to end teaches every claim still polling
    /// one (issue 21), instead of each polling tightly from the start. While the task
    /// answers 404 past `poll.fresh_404`, `seen` (the step's effect) is read instead: seen
    /// means done.
    pub(super) async fn poll<A: FailoverApi>(
        &mut self,
        api: &A,
        task: TaskRef,
        action: &str,
        submitted: Instant,
        expect: (Option<TaskKind>, Option<Duration>),
        seen: Option<&Seen>,
    ) -> Result<Duration, ClaimFailure> {
        self.last_pending = None;
        if let (Some(seen), Some(shared)) = (seen, self.shared)
            && matches!(seen, Seen::OnVmac { .. })
        {
            return self
                .watch(api, shared, task, action, submitted, expect, seen)
                .await;
        }
        loop {
            let (kind, fallback) = expect;
            let expect = kind
                .and_then(|k| api.learned(k))
                .or(fallback.map(Expect::exactly));
            let waited = submitted.elapsed();
            let wait = self.opts.poll.next_expecting(waited, expect);
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
                Ok(t) => {
                    if let Some(end) =
                        self.task_read(t, &task, action, submitted, submitted.elapsed())
                    {
                        return end;
                    }
                }
                // A task just created may not be visible for a while (region lag): wait
                // until the deadline, and once it lasts, read whether the step took effect.
                Err(ClaimError::Api(e)) if e.kind() == Some(ErrorKind::NotFound) => {
                    if let Some(seen) = seen
                        && submitted.elapsed() >= self.opts.poll.fresh_404
                    {
                        let r = within(
                            self.deadline,
                            &self.outcome.ip,
                            "reading the binding",
                            self.opts.deadline,
                            seen.holds(api),
                        )
                        .await;
                        match r {
                            Ok(true) => {
                                tracing::info!(ip = %self.outcome.ip, task = task.id(), action, "OVH task still invisible (404), but its effect is read: done");
                                return Ok(submitted.elapsed());
                            }
                            Ok(false) => {}
                            Err(e) if matches!(outcome(&e), Outcome::Fatal) => {
                                return Err(self.fail(e));
                            }
                            Err(_) => {}
                        }
                    }
                }
                // The client already retried; keep polling until the deadline.
                Err(ClaimError::Api(e)) if e.is_transient() => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// What one answer of the claim's task says: `Some` ends the wait (done, with its time
    /// since `submitted`, or failed: the claim's error), `None` keeps polling (still pending;
    /// `pending_at` is noted as the last time it was seen so, for learning its duration).
    fn task_read(
        &mut self,
        t: super::super::api::Task,
        task: &TaskRef,
        action: &str,
        submitted: Instant,
        pending_at: Duration,
    ) -> Option<Result<Duration, ClaimFailure>> {
        match t.status {
            TaskStatus::Done => Some(Ok(submitted.elapsed())),
            TaskStatus::Failed(status) => Some(Err(self.fail(ClaimError::TaskFailed {
                task: task.id(),
                action: action.into(),
                status,
                comment: t.comment,
            }))),
            TaskStatus::Pending(_) => {
                self.last_pending = Some(pending_at);
                None
            }
        }
    }

    /// [`Run::poll`] for a step whose effect a shared read shows (see the file's header):
    /// each round of the schedule ([`crate::ovh::policy::PollPolicy::next_shared`]) reads
    /// the effect (a read sent at most half a round's interval, at most [`WATCH_SLACK`],
    /// before the round serves it, so the claims' rounds share requests); the task itself is
    /// read when the effect is seen, and blind at doubling intervals from twice the expected
    /// time (from [`BLIND_COLD`] when nothing is expected), for a task that fails or whose
    /// effect does not show. Only the task's status ends the wait: done, failed, or, while it
    /// stays invisible (404) past `poll.fresh_404`, its effect seen by the round just before.
    #[allow(clippy::too_many_arguments)]
    async fn watch<A: FailoverApi>(
        &mut self,
        api: &A,
        shared: &SharedReads,
        task: TaskRef,
        action: &str,
        submitted: Instant,
        expect: (Option<TaskKind>, Option<Duration>),
        seen: &Seen,
    ) -> Result<Duration, ClaimFailure> {
        let what = format!("OVH task {} ({action})", task.id());
        let (kind, fallback) = expect;
        // When the task is read without its effect seen (time since submitted).
        let mut blind_at = kind
            .and_then(|k| api.learned(k))
            .or(fallback.map(Expect::exactly))
            .filter(|e| !e.took.is_zero())
            .map_or(BLIND_COLD, |e| 2 * e.latest());
        loop {
            let e = kind
                .and_then(|k| api.learned(k))
                .or(fallback.map(Expect::exactly));
            let wait = self.opts.poll.next_shared(submitted.elapsed(), e);
            if Instant::now() + wait > self.deadline {
                return Err(self.fail(ClaimError::Deadline {
                    ip: self.outcome.ip.clone(),
                    what,
                    deadline: self.opts.deadline,
                }));
            }
            tokio::time::sleep(wait).await;
            let waited = submitted.elapsed();
            let mut seen_now = false;
            if waited >= blind_at {
                // Doubling: a failed task is seen within about twice its time, and a long
                // task costs a few blind reads per claim, not one per round.
                blind_at = 2 * waited;
            } else {
                // Sent after the write in any case: only then can its effect show.
                let slack = (self.opts.poll.next_shared(waited, e) / 2).min(WATCH_SLACK);
                let at = Instant::now()
                    .checked_sub(slack)
                    .map_or(submitted, |t| t.max(submitted));
                let need = Fresh::SentAfter {
                    at,
                    coalesce: Duration::ZERO,
                };
                // Bounded by the claim's deadline like every request of the claim.
                let read = async {
                    match seen.holds_shared(api, shared, need).await {
                        Some(r) => r,
                        None => seen.holds(api).await,
                    }
                };
                let r = within(
                    self.deadline,
                    &self.outcome.ip,
                    "reading the binding",
                    self.opts.deadline,
                    read,
                )
                .await;
                match r {
                    Ok(true) => seen_now = true,
                    Ok(false) => {
                        // The round's read may have gone out up to the slack earlier.
                        self.last_pending = Some(waited.saturating_sub(slack));
                        continue;
                    }
                    Err(e) if matches!(outcome(&e), Outcome::Fatal) => return Err(self.fail(e)),
                    // Transient (the client already retried): the next round.
                    Err(_) => continue,
                }
            }
            let r = within(
                self.deadline,
                &self.outcome.ip,
                &what,
                self.opts.deadline,
                api.task(&task),
            )
            .await;
            match r {
                // Its effect may show before the task ends: the task decides.
                Ok(t) => {
                    if let Some(end) = self.task_read(t, &task, action, submitted, waited) {
                        return end;
                    }
                }
                Err(ClaimError::Api(e)) if e.kind() == Some(ErrorKind::NotFound) => {
                    if seen_now && submitted.elapsed() >= self.opts.poll.fresh_404 {
                        tracing::info!(ip = %self.outcome.ip, task = task.id(), action, "OVH task still invisible (404), but its effect is read: done");
                        return Ok(submitted.elapsed());
                    }
                }
                Err(ClaimError::Api(e)) if e.is_transient() => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
    }
}
