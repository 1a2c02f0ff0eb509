//! What every claim shares: the fence gate before a mutating step, the step itself with
//! its task polled to the end, and the re-plan after an ambiguous or refused write. A claim
//! (`vmac.rs`, `moves.rs`) decides *which* step comes next; this file only runs steps.

use std::future::Future;
use std::time::Duration;

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use super::super::api::{FailoverApi, TaskRef, TaskStatus};
use super::super::error::{ErrorKind, OvhError};
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

/// What a failed mutation means for the claim loop.
fn replannable(e: &ClaimError) -> bool {
    match e {
        // A permanent refusal (rights, credential) ends the claim at once: re-reading the
        // state cannot fix it and re-sending it is the loop the scheduler's slow retry avoids.
        ClaimError::Api(o) => {
            !o.is_permanent_refusal() && (o.is_client_error() || o.is_transient())
        }
        _ => false,
    }
}

/// What one mutating step came to.
pub(super) enum Mutation {
    /// Sent, its task done in `task_time`, recorded.
    Done { task_time: Duration },
    /// OVH refused in a way that re-reading its state fixes: plan again.
    Replan,
    /// The claim ends here (dry run, or no longer MASTER): `Run::outcome` says how.
    Ended,
}

pub(super) struct Run<'a> {
    pub(super) start: Instant,
    pub(super) deadline: Instant,
    pub(super) opts: &'a ClaimOptions,
    pub(super) outcome: ClaimOutcome,
}

impl Run<'_> {
    pub(super) fn fail(&mut self, error: ClaimError) -> ClaimFailure {
        self.outcome.elapsed = self.start.elapsed();
        ClaimFailure {
            error,
            outcome: self.outcome.clone(),
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
    /// step's record. A refusal the claim recovers from by re-reading OVH's state (4xx, 5xx)
    /// ends in [`Mutation::Replan`], after the re-plan wait.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn mutate<A: FailoverApi>(
        &mut self,
        api: &A,
        action: String,
        would: Vec<String>,
        fence: &dyn Fence,
        phase: Phase,
        request: impl Future<Output = Result<super::super::api::Task, OvhError>>,
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

    /// Polls a task until done; returns its time since `submitted`. `expect` is how long a
    /// similar task just took (the DELETE before a POST): polling starts tight only near it,
    /// which saves requests (OVH's rate budget) without delaying the answer.
    pub(super) async fn poll<A: FailoverApi>(
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
