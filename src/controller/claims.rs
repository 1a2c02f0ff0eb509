//! Who may touch each failover IP, and when: the pure scheduler of cloud work.
//!
//! The daemon tells it every local reading of a group ([`Claims::local`]) and the end of every
//! cloud job ([`Claims::finished`]); it answers which jobs are due ([`Claims::due`]) and when
//! to wake. No I/O and no clock of its own, so every rule below is a table test.
//!
//! Rules, per IP:
//! - **One writer.** At most one job (claim or check) in flight per IP.
//! - **Generations.** Every change of "this node is MASTER of the IP's group" bumps the IP's
//!   generation. A job carries the generation it was started for; the executor's fence
//!   refuses every mutating step once the generation moved on (a newer observation
//!   supersedes the job), and a stale job's result only updates what is known of the cloud.
//! - **MASTER means "bound here".** A claim runs at once when the group becomes MASTER (the
//!   reaction path), and again whenever a check finds the IP elsewhere (drift: a split brain,
//!   a missed event, an operator's manual change). While bound, a read-only check runs every
//!   `recheck`.
//! - **Hold-down.** After a claim that moved the IP, no other claim moves it within
//!   `hold_down` unless the local state changed in between: two MASTERs of a split brain
//!   cannot ping-pong the IP faster than that. Failed claims are retried with backoff (the
//!   hold-down is about successful moves, so a claim that failed half-way is never stuck).
//!   The hold-down never delays a claim of an IP bound to no one: nobody can ping-pong it.
//! - **Permanent refusals.** A claim OVH refused for good (the credential lacks the right,
//!   or is not valid), or that the executor did not start because a step is known to be
//!   refused, is tried again only after `refused_retry` (minutes), whatever happens to the
//!   local state meanwhile: one refused call per period at most, never a loop, and the binding
//!   heals by itself once the credential is fixed. Read-only checks go on meanwhile.
//! - **Flap damping.** The first change to MASTER claims at once (the reaction path). When the
//!   group keeps flipping ([`FLAPS`] changes within [`FLAP_WINDOW`]), claims wait until its
//!   state has held for [`SETTLE`]: a flapping link must not drag the IP back and forth.
//! - **BACKUP and INIT: not this node's business.** Never release; a read-only check soon
//!   after losing MASTER ([`AFTER_LOSS`]) and then every `refresh` keeps the binding known
//!   (so the claim after the next election starts from a warm hint) and feeds readiness.
//! - **Reload in place.** An IP whose configuration did not change keeps its state and its
//!   job. A changed or removed one gets a new configuration *epoch*: its running job is
//!   cancelled (the executor stops it at a safe point, never inside the window where the IP
//!   is bound nowhere) and nothing new starts for that IP until it has ended: a reload never
//!   makes two writers. A result of an older epoch teaches nothing about the new one.
//! - **Stop.** Once stopping, no job starts; every job in flight is cancelled at its next
//!   safe point.
//! - **Repair first.** An IP found mid-claim at start (a marker left by a crash or an
//!   exhausted stop grace) is claimed without hold-down or settling, from a full observation.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::carp::{CarpState, GroupId};
use crate::ovh::plan::Found;

/// Local changes within [`FLAP_WINDOW`] that make a group "flapping".
pub const FLAPS: usize = 3;
pub const FLAP_WINDOW: Duration = Duration::from_secs(2);
/// How long a flapping group's state must hold before a claim starts.
pub const SETTLE: Duration = Duration::from_secs(1);
/// After losing MASTER, when to look where the IP went (the new MASTER is claiming it): the
/// next election then starts from a warm hint instead of a full listing.
pub const AFTER_LOSS: Duration = Duration::from_secs(2);

/// How long a check waits when the rate budget is kept for claims.
pub const CHECK_DEFER: Duration = Duration::from_secs(2);

/// Timing rules of the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimPolicy {
    /// While MASTER and bound here: how often to re-read the binding.
    pub recheck: Duration,
    /// While not MASTER: how often to re-read it (readiness, warm hint).
    pub refresh: Duration,
    /// Least time between two claims that move the IP, within one local state.
    pub hold_down: Duration,
    /// First wait after a failed job; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// After a permanent refusal: when the claim is tried again (fixed, not doubling: the
    /// fix is a person's, and the binding should heal soon after it).
    pub refused_retry: Duration,
}

impl Default for ClaimPolicy {
    fn default() -> ClaimPolicy {
        ClaimPolicy {
            recheck: Duration::from_secs(30),
            refresh: Duration::from_secs(30),
            hold_down: Duration::from_secs(60),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            refused_retry: Duration::from_secs(120),
        }
    }
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Make the IP bound here (reads first; already bound is success without a change).
    Claim,
    /// Read where the IP is; change nothing.
    Check,
}

/// Identifies one job for its whole life (unique within a [`Claims`]).
pub type JobId = u64;

/// A job the executor must start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub ip: IpAddr,
    pub group: GroupId,
    pub generation: u64,
    /// The configuration epoch of the IP the job was started for.
    pub epoch: u64,
    pub kind: JobKind,
    /// The last known binding, when recent enough to save the claim a listing.
    pub hint: Option<Found>,
}

/// How a job ended, as far as scheduling cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Done {
    /// A check, or a claim that found the IP already here: where the IP is.
    Located { found: Found, here: bool },
    /// A claim changed OVH and verified the IP is here now.
    Moved { before: Option<Found> },
    /// A claim stopped before a mutating step because the fence said no.
    Cancelled,
    /// The job failed; `mutated` when it had changed something before failing.
    Failed { mutated: bool },
    /// A claim refused for good (rights or credential), or not started because one of its
    /// steps is known to be refused; `mutated` as for `Failed`. Retried after
    /// `refused_retry`.
    Refused { mutated: bool },
}

/// What the daemon should say about a finished job, beyond the job's own log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing worth more than the job's own report.
    Quiet,
    /// While MASTER and after claiming it, the IP was found on `found`: another node claims
    /// it too (split brain), or someone moved it. `reclaim_at` is when carpd claims it back.
    TakenWhileMaster { found: Found, reclaim_at: Instant },
}

/// The job running for an IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub id: JobId,
    pub generation: u64,
    pub epoch: u64,
    pub kind: JobKind,
    /// Asked to stop at its next safe point (reload changed the IP, or carpd stops).
    pub cancelled: bool,
    /// Its term ended: asked to stop at once.
    pub superseded: bool,
}

/// What is known about one failover IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpState {
    pub group: GroupId,
    /// The last reading of the group; `None` when the vhid does not exist (yet).
    pub local: Option<CarpState>,
    pub generation: u64,
    /// Bumped by every reload that changes this IP's configuration.
    pub epoch: u64,
    /// The generation whose claim succeeded (bound here, verified).
    pub claimed: Option<u64>,
    /// The job running for this IP, whatever its epoch (one writer across reloads).
    pub in_flight: Option<InFlight>,
    /// Removed from the configuration while its job ran: kept only until that job ends.
    pub retired: bool,
    /// Found mid-claim at start: claim (or look) first, without hold-down.
    pub repair: bool,
    /// The last known binding and whether it is ours, with when it was learned.
    pub binding: Option<(Found, bool, Instant)>,
    /// The last claim that moved the IP, and the generation it was made in.
    pub last_move: Option<(Instant, u64)>,
    /// Consecutive failed jobs, and when the next attempt may start.
    pub failures: u32,
    pub retry_at: Option<Instant>,
    /// After a permanent refusal: no claim before this, across terms (checks go on).
    pub refused_until: Option<Instant>,
    /// When the next read-only check is due.
    pub next_check: Instant,
    /// When the last [`FLAPS`] changes of "MASTER here" happened (flap damping).
    pub flips: std::collections::VecDeque<Instant>,
}

impl IpState {
    fn new(group: GroupId, now: Instant) -> IpState {
        IpState {
            group,
            local: None,
            generation: 0,
            epoch: 0,
            claimed: None,
            in_flight: None,
            retired: false,
            repair: false,
            binding: None,
            last_move: None,
            failures: 0,
            retry_at: None,
            refused_until: None,
            // The first check runs at once: it warms the hint before any election.
            next_check: now,
            flips: std::collections::VecDeque::new(),
        }
    }

    pub fn is_master(&self) -> bool {
        self.local == Some(CarpState::Master)
    }

    /// A claim is needed: MASTER, and not (known to be) bound here in this generation.
    pub fn wants_claim(&self) -> bool {
        self.is_master()
            && (self.claimed != Some(self.generation)
                || matches!(self.binding, Some((_, false, _))))
    }

    /// Until when a claim that would move the IP is held down, if it is now. An IP known to
    /// be bound to no one, or being repaired, is never held down.
    pub fn held_down_until(&self, hold_down: Duration, now: Instant) -> Option<Instant> {
        if self.repair {
            return None;
        }
        let unbound = matches!(
            self.binding,
            Some((Found::Unbound | Found::Service { service: None }, _, _))
        );
        match self.last_move {
            Some((at, generation))
                if !unbound && generation == self.generation && now < at + hold_down =>
            {
                Some(at + hold_down)
            }
            _ => None,
        }
    }

    /// Until when a claim waits for a flapping group to settle, if it does now.
    pub fn settling_until(&self, now: Instant) -> Option<Instant> {
        if self.repair {
            return None;
        }
        let last = *self.flips.back()?;
        let flapping = self.flips.len() >= FLAPS
            && self
                .flips
                .front()
                .is_some_and(|first| last.saturating_duration_since(*first) <= FLAP_WINDOW);
        (flapping && now < last + SETTLE).then_some(last + SETTLE)
    }

    /// Until when a needed claim must wait (hold-down or settling), if it must now.
    pub fn claim_waits_until(&self, hold_down: Duration, now: Instant) -> Option<Instant> {
        match (
            self.held_down_until(hold_down, now),
            self.settling_until(now),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The scheduler of every failover IP.
#[derive(Clone, Debug)]
pub struct Claims {
    policy: ClaimPolicy,
    ips: BTreeMap<IpAddr, IpState>,
    /// `carpd run --no-apply`: never claim; checks still run so status shows what is wrong.
    watch_only: bool,
    /// The daemon stops: nothing new starts.
    stopping: bool,
    next_job: JobId,
    /// Jobs whose term ended (MASTER here changed) since the last [`Claims::take_superseded`].
    superseded: Vec<JobId>,
    /// The last configuration epoch given out: epochs are never reused, so an IP removed
    /// and put back is a new configuration (its old moves no longer hold it down).
    last_epoch: u64,
}

/// What identifies an IP's configuration: a reload that changes it is a new epoch. Opaque
/// to the scheduler (the daemon renders the IP's whole configuration into it).
pub type Fingerprint = String;

impl Claims {
    pub fn new(
        ips: impl IntoIterator<Item = (IpAddr, GroupId)>,
        policy: ClaimPolicy,
        now: Instant,
    ) -> Claims {
        Claims {
            policy,
            ips: ips
                .into_iter()
                .map(|(ip, g)| (ip, IpState::new(g, now)))
                .collect(),
            watch_only: false,
            stopping: false,
            next_job: 1,
            superseded: Vec::new(),
            last_epoch: 0,
        }
    }

    /// Watch only (`--no-apply`): claims are never started, checks go on.
    pub fn set_watch_only(&mut self, on: bool) {
        self.watch_only = on;
    }

    pub fn policy(&self) -> ClaimPolicy {
        self.policy
    }

    /// A reload, in place. `ips` is the new configuration, `changed` the IPs whose
    /// configuration differs from the running one (the caller compares fingerprints). An
    /// unchanged IP keeps everything, its running job included. A changed IP starts a new
    /// epoch from what the kernel said of its group; a removed IP with a job running is kept,
    /// retired, until that job ends. Returns the jobs to cancel at their next safe point.
    pub fn reconfigure(
        &mut self,
        ips: impl IntoIterator<Item = (IpAddr, GroupId)>,
        changed: &std::collections::BTreeSet<IpAddr>,
        policy: ClaimPolicy,
        now: Instant,
    ) -> Vec<JobId> {
        let mut old = std::mem::take(&mut self.ips);
        let mut cancel = Vec::new();
        for (ip, group) in ips {
            let state = match old.remove(&ip) {
                Some(s) if !s.retired && !changed.contains(&ip) && s.group == group => s,
                Some(s) => {
                    let mut fresh = IpState::new(group, now);
                    self.last_epoch += 1;
                    fresh.epoch = self.last_epoch;
                    if fresh.group == s.group {
                        // Same group: the local state and its term carry over, so the fence
                        // of a job that must finish its open window still holds.
                        fresh.local = s.local;
                        fresh.generation = s.generation;
                        fresh.flips = s.flips;
                    }
                    fresh.in_flight = s.in_flight.map(|mut f| {
                        if !f.cancelled {
                            f.cancelled = true;
                            cancel.push(f.id);
                        }
                        f
                    });
                    fresh
                }
                None => {
                    let mut fresh = IpState::new(group, now);
                    self.last_epoch += 1;
                    fresh.epoch = self.last_epoch;
                    fresh
                }
            };
            self.ips.insert(ip, state);
        }
        for (ip, mut s) in old {
            if let Some(f) = s.in_flight.as_mut() {
                if !f.cancelled {
                    f.cancelled = true;
                    cancel.push(f.id);
                }
                s.retired = true;
                self.last_epoch += 1;
                s.epoch = self.last_epoch;
                self.ips.insert(ip, s);
            }
        }
        self.policy = policy;
        cancel
    }

    /// Stop: nothing new starts from now on. Returns the jobs to cancel at their next safe
    /// point (a claim inside its open window finishes it first).
    pub fn stop(&mut self) -> Vec<JobId> {
        self.stopping = true;
        let mut cancel = Vec::new();
        for s in self.ips.values_mut() {
            if let Some(f) = s.in_flight.as_mut()
                && !f.cancelled
            {
                f.cancelled = true;
                cancel.push(f.id);
            }
        }
        cancel
    }

    /// Jobs superseded by a change of "MASTER here" since the last call: the executor stops
    /// them at once (their fence already refuses every change).
    pub fn take_superseded(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.superseded)
    }

    /// Whether [`Claims::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// Jobs still running.
    pub fn running(&self) -> impl Iterator<Item = (&IpAddr, &InFlight)> {
        self.ips
            .iter()
            .filter_map(|(ip, s)| s.in_flight.as_ref().map(|f| (ip, f)))
    }

    /// `ip` was found mid-claim at start: claim it first (no hold-down, no settling, no
    /// hint) when MASTER, look where it is at once otherwise.
    pub fn repair(&mut self, ip: &IpAddr, now: Instant) {
        if let Some(s) = self.ips.get_mut(ip) {
            s.repair = true;
            s.binding = None;
            s.next_check = now;
            s.retry_at = None;
        }
    }

    pub fn ips(&self) -> &BTreeMap<IpAddr, IpState> {
        &self.ips
    }

    pub fn get(&self, ip: &IpAddr) -> Option<&IpState> {
        self.ips.get(ip)
    }

    /// A reading of `group` at `now`: `None` when the vhid does not exist here.
    pub fn local(&mut self, group: &GroupId, state: Option<CarpState>, now: Instant) {
        for s in self.ips.values_mut().filter(|s| &s.group == group) {
            let was = s.is_master();
            s.local = state;
            if s.is_master() != was {
                s.generation += 1;
                // Its fence refuses every further change: stop it now, not at a safe point
                // (a window it opened can only be finished by the MASTER, which claims).
                if let Some(f) = s.in_flight.as_mut()
                    && f.generation != s.generation
                    && !f.superseded
                {
                    f.superseded = true;
                    self.superseded.push(f.id);
                }
                if s.flips.len() == FLAPS {
                    s.flips.pop_front();
                }
                s.flips.push_back(now);
                if was {
                    s.next_check = s.next_check.min(now + AFTER_LOSS);
                }
                // A new term: earlier failures say nothing about this one.
                s.failures = 0;
                s.retry_at = None;
            }
        }
    }

    /// Whether a job of `generation` may still mutate `ip` (the fence's pure half; the
    /// executor also re-reads the kernel).
    pub fn current(&self, ip: &IpAddr, generation: u64) -> bool {
        self.ips
            .get(ip)
            .is_some_and(|s| s.generation == generation && s.is_master())
    }

    /// The jobs to start now; each is marked in flight. Without `checks_allowed` (the OVH
    /// rate budget is kept for claims), due checks are put off by [`CHECK_DEFER`].
    pub fn due(&mut self, now: Instant, checks_allowed: bool) -> Vec<Job> {
        let policy = self.policy;
        let mut jobs = Vec::new();
        if self.stopping {
            return jobs;
        }
        for (ip, s) in &mut self.ips {
            if s.retired || s.in_flight.is_some() || s.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            let refused = s.refused_until.is_some_and(|t| now < t);
            let kind = if s.wants_claim() && !self.watch_only && !refused {
                if s.claim_waits_until(policy.hold_down, now).is_some() {
                    continue;
                }
                JobKind::Claim
            } else if now >= s.next_check {
                if !checks_allowed {
                    s.next_check = now + CHECK_DEFER;
                    continue;
                }
                JobKind::Check
            } else {
                continue;
            };
            let id = self.next_job;
            self.next_job += 1;
            s.in_flight = Some(InFlight {
                id,
                generation: s.generation,
                epoch: s.epoch,
                kind,
                cancelled: false,
                superseded: false,
            });
            jobs.push(Job {
                id,
                ip: *ip,
                group: s.group.clone(),
                generation: s.generation,
                epoch: s.epoch,
                kind,
                hint: s.binding.as_ref().map(|(f, _, _)| f.clone()),
            });
        }
        jobs
    }

    /// A job ended.
    pub fn finished(&mut self, job: &Job, done: &Done, now: Instant) -> Verdict {
        let policy = self.policy;
        let (ip, generation) = (&job.ip, job.generation);
        let Some(s) = self.ips.get_mut(ip) else {
            return Verdict::Quiet;
        };
        let kind = match s.in_flight.take() {
            Some(f) if f.id == job.id => f.kind,
            // Not the job in flight (cannot happen while the executor reports every job
            // once): nothing to learn.
            other => {
                s.in_flight = other;
                return Verdict::Quiet;
            }
        };
        if s.retired {
            self.ips.remove(ip);
            return Verdict::Quiet;
        }
        if job.epoch != s.epoch {
            // Started for a configuration that is gone: what it found or did concerns the
            // old one. Look again at once under the new one.
            s.binding = None;
            s.next_check = now;
            return Verdict::Quiet;
        }
        if !matches!(
            done,
            Done::Failed { .. } | Done::Refused { .. } | Done::Cancelled
        ) {
            s.repair = false;
        }
        if kind == JobKind::Claim && matches!(done, Done::Moved { .. } | Done::Located { .. }) {
            // The credential let a claim through: whatever refused it before is fixed.
            s.refused_until = None;
        }
        let fresh = generation == s.generation;
        let mut verdict = Verdict::Quiet;
        match done {
            Done::Located { found, here } => {
                s.binding = Some((found.clone(), *here, now));
                s.failures = 0;
                s.retry_at = None;
                if *here {
                    if fresh && s.is_master() {
                        s.claimed = Some(generation);
                    }
                } else if fresh && s.is_master() && s.claimed == Some(generation) {
                    // We had it in this term and lost it without a local change.
                    s.claimed = None;
                    let reclaim_at = s.held_down_until(policy.hold_down, now).unwrap_or(now);
                    verdict = Verdict::TakenWhileMaster {
                        found: found.clone(),
                        reclaim_at,
                    };
                }
                s.next_check = now + interval(s, &policy);
            }
            Done::Moved { .. } => {
                s.last_move = Some((now, generation));
                s.failures = 0;
                s.retry_at = None;
                if fresh {
                    s.claimed = Some(generation);
                }
                // The binding is ours now (read back and verified by the claim).
                s.binding = None;
                s.next_check = now + interval(s, &policy);
            }
            Done::Cancelled => {
                // Superseded: the next term decides; what OVH holds is unknown now. Look
                // again soon, not at once: a flapping group would otherwise spend the rate
                // budget on checks that the next flip cancels too.
                s.binding = None;
                s.next_check = now + AFTER_LOSS;
                if fresh {
                    // The kernel said no before the core heard of it: the reading that
                    // follows decides; until then do not spin on claims the fence refuses.
                    s.retry_at = Some(now + policy.retry_initial);
                }
            }
            Done::Refused { mutated } => {
                // Whatever the term: the credential is the same in the next one.
                s.refused_until = Some(now + policy.refused_retry);
                s.failures = s.failures.saturating_add(1);
                if *mutated {
                    s.binding = None;
                }
                // What OVH holds is worth knowing (readiness, the next claim's hint).
                s.next_check = s.next_check.min(now + interval(s, &policy));
            }
            Done::Failed { mutated } if !fresh => {
                // A job of an older term: its failure says nothing about this one.
                if *mutated {
                    s.binding = None;
                }
            }
            Done::Failed { mutated } => {
                s.failures = s.failures.saturating_add(1);
                let wait =
                    crate::backoff::Backoff::doubling(policy.retry_initial, policy.retry_max)
                        .delay(s.failures);
                s.retry_at = Some(now + wait);
                if *mutated {
                    s.binding = None;
                }
                if kind == JobKind::Check {
                    s.next_check = now + wait;
                }
            }
        }
        verdict
    }

    /// The binding a successful move leaves: ours. Separate from [`Claims::finished`] so the
    /// executor can record the read-back it verified.
    pub fn bound_here(&mut self, ip: &IpAddr, found: Found, now: Instant) {
        if let Some(s) = self.ips.get_mut(ip) {
            s.binding = Some((found, true, now));
        }
    }

    /// When the scheduler next has something to do (ignoring jobs in flight, which wake the
    /// daemon when they end).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let policy = self.policy;
        let watch_only = self.watch_only;
        if self.stopping {
            return None;
        }
        self.ips
            .values()
            .filter(|s| s.in_flight.is_none() && !s.retired)
            .map(|s| {
                let at = if s.wants_claim() && !watch_only {
                    let claim_at = s.claim_waits_until(policy.hold_down, now).unwrap_or(now);
                    match s.refused_until {
                        // Refused: the claim waits, the checks do not.
                        Some(r) if r > claim_at => r.min(s.next_check),
                        _ => claim_at,
                    }
                } else {
                    s.next_check
                };
                s.retry_at.map_or(at, |r| at.max(r))
            })
            .min()
    }
}

fn interval(s: &IpState, policy: &ClaimPolicy) -> Duration {
    if s.is_master() {
        policy.recheck
    } else {
        policy.refresh
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
