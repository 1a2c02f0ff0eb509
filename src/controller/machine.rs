//! The controller: the one pure decision core of `carpd run`, `handle(input, now) -> effects`.
//!
//! It owns every decision the daemon takes, in two parts that it keeps in step:
//! - [`Core`]: what carpd believes about each CARP group (only from kernel readings), when to
//!   read the kernel again, which readings are transitions;
//! - [`Claims`]: what each failover IP needs (claim while MASTER, re-check, hold-down, flap
//!   damping, backoff), one job at a time per IP, across reloads and the stop.
//!
//! The executor (`crate::daemon`) turns events, signals, control requests and job results
//! into [`Input`]s, and carries out the [`Effect`]s: it reads the kernel, starts and cancels
//! jobs, logs. It decides nothing itself. No I/O and no clock here: every rule is a table or
//! property test (`machine_tests.rs`).
//!
//! Invariants (property-tested):
//! - at most one job (writer) per failover IP, whatever the inputs, reloads and stop;
//! - a claim starts only while the IP's group is MASTER here according to the latest kernel
//!   reading, and its fence generation changes whenever that stops being true;
//! - moves of one IP within one local state are at least the hold-down apart;
//! - every claim that starts ends in a report the controller consumes; after a stop nothing
//!   new starts and every running job is cancelled once.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use crate::carp::{CarpState, GroupId};
use crate::config::DaemonConfig;
use crate::kernel::KernelError;
use crate::ovh::plan::Found;

use super::claims::{ClaimPolicy, Claims, Done, Job, JobId, Verdict};
use super::core::{Core, Outcome, Trigger, Work};
use super::duties::Duties;

/// Something that happened, for the controller to decide on.
#[derive(Debug)]
pub enum Input<'a> {
    /// A devd event: a hint to read `group`, never its state.
    Event { group: GroupId, claimed: CarpState },
    /// The devd hook or an operator asked to look at `group`.
    Nudge(GroupId),
    /// devd (re)connected or carpd fell behind it: read everything.
    Resync(Trigger),
    /// The kernel reading of `work` asked for by [`Effect::Read`], or why it failed.
    Read {
        work: &'a Work,
        reading: Result<&'a [(GroupId, Option<CarpState>)], &'a KernelError>,
    },
    /// A job started by [`Effect::Start`] ended; `found`: where it left the IP, if known.
    JobEnded {
        job: &'a Job,
        done: &'a Done,
        found: Option<&'a Found>,
    },
    /// A new configuration, already validated. `changed`: failover IPs whose configuration
    /// differs from the running one.
    Reconfigure {
        timing: DaemonConfig,
        duties: Duties,
        ips: Vec<(IpAddr, GroupId)>,
        changed: BTreeSet<IpAddr>,
        policy: ClaimPolicy,
    },
    /// `ip` was found mid-claim at start (a marker): repair it first.
    Repair(IpAddr),
    /// What readiness says now: `None` until every failover IP (and Vault) was checked
    /// once, then whether a failover could complete. `demotion` is `readiness.demotion`.
    Readiness { ready: Option<bool>, demotion: u32 },
    /// The executor changed the ledger as [`Effect::Demote`] asked (`ok`), or could not.
    Demoted { on: bool, ok: bool },
    /// Stop: start nothing new, cancel what runs at its next safe point.
    Stop,
    /// Time passed (a timer fired); nothing else happened.
    Tick,
}

/// Something the executor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read this from the kernel now (a full read converges the kernel first) and hand the
    /// result back as [`Input::Read`].
    Read(Work),
    /// What a reading showed: start-up states and transitions, to log and count.
    Report(Outcome),
    /// Start this job; report its end as [`Input::JobEnded`].
    Start(Job),
    /// Ask this running job to stop at its next safe point.
    Cancel(JobId),
    /// Stop this running job now: its term ended (this node is no longer MASTER of the
    /// group, or became it again), so its fence refuses every further change anyway.
    Supersede(JobId),
    /// What a finished job means beyond its own report (split brain, manual move).
    Verdict { ip: IpAddr, verdict: Verdict },
    /// Add (`on`) or remove carpd's not-ready demotion of `delta` through the ledger, and
    /// report the result as [`Input::Demoted`].
    Demote { on: bool, delta: u32 },
}

/// What the executor tells the controller about the world besides the input.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    pub now: Instant,
    /// Whether the OVH request budget has room for background checks (claims never wait).
    pub checks_allowed: bool,
}

/// The controller's state: the group core and the claim scheduler.
#[derive(Debug)]
pub struct Controller {
    core: Core,
    claims: Claims,
    duties: Duties,
    /// Whether the not-ready demotion is in the ledger, as far as this run knows (`None`:
    /// not yet decided this run).
    not_ready_demoted: Option<bool>,
}

impl Controller {
    /// A controller that reads the whole kernel first (`Trigger::Startup`). `ips` are the
    /// failover IPs and the group each follows.
    pub fn new(
        timing: DaemonConfig,
        duties: Duties,
        ips: Vec<(IpAddr, GroupId)>,
        policy: ClaimPolicy,
        run_id: impl Into<String>,
        now: Instant,
    ) -> Controller {
        Controller {
            core: Core::new(timing, duties.clone(), run_id, now),
            claims: Claims::new(ips, policy, now),
            duties,
            not_ready_demoted: None,
        }
    }

    /// `carpd run --no-apply`: locate and report, never claim.
    pub fn set_watch_only(&mut self, on: bool) {
        self.claims.set_watch_only(on);
    }

    /// Decides on `input`. The effects come in the order to carry them out.
    pub fn handle(&mut self, input: Input<'_>, env: Env) -> Vec<Effect> {
        let now = env.now;
        let mut out = Vec::new();
        match input {
            Input::Event { group, claimed } => self.core.event(group, claimed, now),
            Input::Nudge(group) => self.core.nudge(group, now),
            Input::Resync(why) => self.core.resync(why),
            Input::Read { work, reading } => match reading {
                Ok(reading) => {
                    let outcome = self.core.observe(work, reading, now);
                    for (g, state) in reading {
                        self.claims.local(g, *state, now);
                    }
                    if matches!(work, Work::Full(_)) {
                        // A full read that does not list a group: the vhid does not exist.
                        let absent: Vec<GroupId> = self
                            .claims
                            .ips()
                            .values()
                            .map(|s| s.group.clone())
                            .filter(|g| !reading.iter().any(|(r, _)| r == g))
                            .collect();
                        for g in absent {
                            self.claims.local(&g, None, now);
                        }
                    }
                    out.push(Effect::Report(outcome));
                    out.extend(
                        self.claims
                            .take_superseded()
                            .into_iter()
                            .map(Effect::Supersede),
                    );
                }
                // What carpd knows stays as it was; the core retries at the next re-read.
                Err(_) => self.core.read_failed(work, now),
            },
            Input::JobEnded { job, done, found } => {
                let verdict = self.claims.finished(job, done, now);
                if let (Done::Moved { .. }, Some(found)) = (done, found) {
                    self.claims.bound_here(&job.ip, found.clone(), now);
                }
                if verdict != Verdict::Quiet {
                    out.push(Effect::Verdict {
                        ip: job.ip,
                        verdict,
                    });
                }
            }
            Input::Reconfigure {
                timing,
                duties,
                ips,
                changed,
                policy,
            } => {
                self.core.reconfigure(timing, duties.clone(), now);
                self.duties = duties;
                let cancel = self.claims.reconfigure(ips, &changed, policy, now);
                out.extend(cancel.into_iter().map(Effect::Cancel));
            }
            Input::Repair(ip) => self.claims.repair(&ip, now),
            Input::Readiness { ready, demotion } => {
                // Off (0) means "never demoted for readiness": remove one a past
                // configuration added. Start-up is not "not ready": wait until known.
                let want = match (demotion, ready) {
                    (0, _) => Some(false),
                    (_, Some(ready)) => Some(!ready),
                    (_, None) => None,
                };
                if let Some(want) = want
                    && self.not_ready_demoted != Some(want)
                {
                    out.push(Effect::Demote {
                        on: want,
                        delta: demotion,
                    });
                }
            }
            Input::Demoted { on, ok } => {
                if ok {
                    self.not_ready_demoted = Some(on);
                }
            }
            Input::Stop => {
                let cancel = self.claims.stop();
                out.extend(cancel.into_iter().map(Effect::Cancel));
            }
            Input::Tick => {}
        }
        if self.claims.stopping() {
            // Stopping: no new reads either (the jobs' fences read the kernel themselves).
            return out;
        }
        if let Some(work) = self.core.due(now) {
            // Jobs wait for the reading: it may change what is due (a MASTER event).
            out.push(Effect::Read(work));
            return out;
        }
        out.extend(
            self.claims
                .due(now, env.checks_allowed)
                .into_iter()
                .map(Effect::Start),
        );
        out
    }

    /// When to call [`Controller::handle`] with [`Input::Tick`] at the latest.
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        let wake = self.core.next_wakeup(now);
        if self.claims.stopping() {
            return wake;
        }
        match self.claims.next_wakeup(now) {
            Some(w) => wake.min(w),
            None => wake,
        }
    }

    /// Whether a job of `generation` may still mutate `ip`: the fence's pure half.
    pub fn current(&self, ip: &IpAddr, generation: u64) -> bool {
        self.claims.current(ip, generation)
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn duties(&self) -> &Duties {
        &self.duties
    }

    /// Whether a stop was asked and jobs still run.
    pub fn draining(&self) -> bool {
        self.claims.stopping() && self.claims.running().next().is_some()
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
