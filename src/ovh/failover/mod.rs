//! Failover operations: locate a failover IP, claim it by virtual MAC, claim it by IP move.
//!
//! Files: this one holds the vocabulary (phases, fence, targets, options, outcomes, errors);
//! [`run`] the mechanics every claim shares (the fence gate, one mutating step, task polling,
//! re-planning), [`vmac`] and [`moves`] the two kinds of claim.
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

mod moves;
mod run;
pub mod shared;
mod vmac;

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::IpNet;

use super::error::OvhError;
use super::plan::Found;
use super::policy::{PollPolicy, RetryPolicy};

pub use moves::claim_move;
pub use shared::SharedReads;
pub use vmac::{claim_vmac, claim_vmac_shared, locate, locate_shared};

/// Where a claim stands.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Waiting for a claim slot (`ovh.claim_concurrency`): nothing sent yet.
    Queued,
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
            Phase::Queued => "queued",
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
    /// HTTP requests the claim sent (retries, time and token requests included; 0 when the
    /// API is not the HTTP client).
    pub requests: u64,
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
            requests: 0,
            elapsed: Duration::ZERO,
        }
    }
}

/// Sets the request count of a claim's outcome, success or failure.
fn set_requests(r: &mut Result<ClaimOutcome, ClaimFailure>, n: u64) {
    match r {
        Ok(o) => o.requests = n,
        Err(f) => f.outcome.requests = n,
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
