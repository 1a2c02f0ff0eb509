//! Claiming a failover IP (block) by moving it between services: read where it is routed,
//! wait for pending moves, move, verify. OVH moves it in one task: there is no window in
//! which carpd leaves it routed nowhere.

// tokio's clock: the same as std's at run time, and pausable in tests.
use tokio::time::Instant;

use super::super::api::{FailoverApi, TaskKind, TaskRef};
use super::super::client::claim_scope;
use super::super::error::OvhError;
use super::super::plan::{Found, MoveObservation, MoveStep, plan_move};
use super::run::{Mutation, Run, Seen, Step, within};
use super::{ClaimError, ClaimFailure, ClaimOptions, ClaimOutcome, Fence, MoveTarget, Phase};

/// Claims `t.block` for our service by moving it (`POST /ip/{block}/move`). After a move
/// whose outcome is refused or unknown, the next observation reads where the block is
/// routed and its pending moves (waiting for them) before anything is sent again.
pub async fn claim_move<A: FailoverApi>(
    api: &A,
    t: &MoveTarget,
    opts: &ClaimOptions,
    fence: &dyn Fence,
) -> Result<ClaimOutcome, ClaimFailure> {
    let (mut r, n) = claim_scope(claim_move_inner(api, t, opts, fence)).await;
    super::set_requests(&mut r, n);
    r
}

async fn claim_move_inner<A: FailoverApi>(
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
                let r = run.done();
                return Ok(run.finish(r));
            }
            MoveStep::WaitFor(ids) => {
                for id in ids {
                    let tr = TaskRef::Ip { block: t.block, id };
                    // Someone else's move: its failure is theirs; re-plan either way.
                    match run
                        .poll(
                            api,
                            tr,
                            "a pending move",
                            Instant::now(),
                            (Some(TaskKind::Move), None),
                            None,
                        )
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
                let step = Step {
                    action: action.clone(),
                    would: vec![action],
                    phase: Phase::Move,
                    kind: TaskKind::Move,
                    settle: None,
                    seen: Seen::RoutedTo {
                        block,
                        service: t.service.clone(),
                    },
                    expect: None,
                };
                match run
                    .mutate(api, step, fence, api.ip_move(t.block, &t.service), |id| {
                        TaskRef::Ip { block, id }
                    })
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
