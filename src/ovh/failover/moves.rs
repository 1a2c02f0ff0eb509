//! Claiming a failover IP (block) by moving it between services: read where it is routed,
//! wait for pending moves, move, verify. OVH moves it in one task: there is no window in
//! which carpd leaves it routed nowhere.

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use super::super::api::{FailoverApi, TaskRef};
use super::super::error::OvhError;
use super::super::plan::{Found, MoveObservation, MoveStep, plan_move};
use super::run::{Mutation, Run, within};
use super::{
    ClaimError, ClaimFailure, ClaimOptions, ClaimOutcome, ClaimResult, Fence, MoveTarget, Phase,
};

/// Claims `t.block` for our service by moving it (`POST /ip/{block}/move`).
pub async fn claim_move<A: FailoverApi>(
    api: &A,
    t: &MoveTarget,
    opts: &ClaimOptions,
    fence: &dyn Fence,
) -> Result<ClaimOutcome, ClaimFailure> {
    let ip_s = t.block.to_string();
    let mut run = Run::new(ip_s.clone(), opts);
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
