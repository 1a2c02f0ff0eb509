//! The effect executor: carries out what the controller decides and feeds the results
//! back as inputs, until the controller has nothing left to do now.
//!
//! Every full read (start-up, timer, devd resync, reload) first converges the kernel on the
//! configuration — the same minimal diff `carpd apply` makes — unless `--no-apply`, then
//! reads every vhid. Event and nudge reads only read the groups named. Kernel calls are
//! synchronous and fast (one netlink round trip or ioctl); they run on the loop, which is the
//! kernel's only writer, so two changes can never interleave.

use std::collections::VecDeque;
use std::time::Instant;

use crate::carp::{CarpState, GroupId};
use crate::controller::core::{Outcome, Trigger, Work};
use crate::controller::machine::{Effect, Env, Input};
use crate::kernel::{Kernel, KernelError};
use crate::plan::apply::apply;
use crate::plan::diff;
use crate::plan::gather::observe;

use super::cloud::JobReport;
use super::{Daemon, Note};

/// Rounds of effects one input may cause; a guard against a controller bug spinning here
/// (each kernel read clears what it read, so a sound controller ends in two or three).
const MAX_ROUNDS: usize = 64;

impl Daemon {
    /// The controller's view of the world besides the input.
    fn env(&self) -> Env {
        Env {
            now: Instant::now(),
            checks_allowed: self.failover.as_ref().is_none_or(|f| f.checks_allowed()),
        }
    }

    /// Hands `input` to the controller and carries out its effects.
    pub(super) fn drive(&mut self, input: Input<'_>) {
        let env = self.env();
        let effects = self.controller.handle(input, env);
        self.execute(effects);
    }

    /// Carries out `effects` and whatever they lead to.
    fn execute(&mut self, effects: Vec<Effect>) {
        let mut queue: VecDeque<Effect> = effects.into();
        let mut rounds = 0;
        while let Some(effect) = queue.pop_front() {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                tracing::error!(
                    "the controller keeps asking for work; resuming at the next wake-up"
                );
                break;
            }
            match effect {
                Effect::Read(work) => {
                    let more = self.read(work);
                    queue.extend(more);
                }
                Effect::Report(outcome) => self.report(&outcome),
                Effect::Start(job) => {
                    if let Some(f) = self.failover.as_mut() {
                        // The fences first: on a multi-threaded runtime (the lab, benches)
                        // a claim may reach its first write before this loop ends, and must
                        // see the generation it was started for, not the previous one.
                        f.sync_fences(self.controller.claims());
                        let xid = self
                            .controller
                            .core()
                            .groups()
                            .get(&job.group)
                            .and_then(|v| v.history.back())
                            .map(|t| t.id.clone());
                        f.start(job, &mut self.jobs, xid);
                    } else {
                        // No OVH side (its client could not be built): end the job at once
                        // so the controller does not wait for it.
                        let done = crate::controller::claims::Done::Failed { mutated: false };
                        let more = self.controller.handle(
                            Input::JobEnded {
                                job: &job,
                                done: &done,
                                found: None,
                            },
                            self.env(),
                        );
                        queue.extend(more);
                    }
                }
                Effect::Cancel(id) => self.jobs.cancel(id),
                Effect::Supersede(id) => {
                    tracing::debug!(job = id, "superseded job stopped");
                    self.jobs.supersede(id);
                }
                Effect::Verdict { .. } => {}
                Effect::Demote { on, delta } => {
                    let ok = self.demote(on, delta);
                    let env = self.env();
                    queue.extend(self.controller.handle(Input::Demoted { on, ok }, env));
                }
            }
        }
        if let Some(f) = self.failover.as_mut() {
            f.sync_fences(self.controller.claims());
        }
    }

    /// A job ended: the controller learns from it, then the failover side records it.
    pub(super) fn job_ended(&mut self, report: JobReport) {
        let job = report.job.clone();
        let env = self.env();
        let effects = self.controller.handle(
            Input::JobEnded {
                job: &job,
                done: &report.done,
                found: report.found.as_ref(),
            },
            env,
        );
        let verdict = effects
            .iter()
            .find_map(|e| match e {
                Effect::Verdict { ip, verdict } if *ip == job.ip => Some(verdict.clone()),
                _ => None,
            })
            .unwrap_or(crate::controller::claims::Verdict::Quiet);
        if let Some(f) = self.failover.as_mut() {
            f.finished(report.clone(), &verdict, self.controller.claims());
        }
        self.note(Note::Cloud {
            report: Box::new(report),
            verdict,
        });
        self.execute(effects);
        self.demote_if_not_ready();
    }

    /// Converges (full reads) and reads the kernel for `work`; returns what the controller
    /// makes of the reading.
    fn read(&mut self, work: Work) -> Vec<Effect> {
        if let Work::Full(trigger) = &work {
            self.converge(*trigger);
        }
        let started = Instant::now();
        let reading = match &work {
            Work::Full(_) => read_all(self.kernel.as_ref()),
            Work::Groups(groups) => read_groups(self.kernel.as_ref(), groups),
        };
        let at = Instant::now();
        let (trigger, scope) = describe(&work);
        let env = crate::controller::machine::Env {
            now: at,
            ..self.env()
        };
        match reading {
            Ok(reading) => {
                let effects = self.controller.handle(
                    Input::Read {
                        work: &work,
                        reading: Ok(&reading),
                    },
                    env,
                );
                if matches!(work, Work::Full(_)) {
                    // The kernel may have lost carpd's demotion without a reboot (carp.ko
                    // reloaded): re-apply it; `carpd maintenance` may have changed the
                    // ledger meanwhile (restore_ledger publishes it).
                    self.restore_ledger();
                }
                if self.records.last_error.take().is_some() {
                    tracing::info!("kernel reads work again");
                }
                self.records.last_reconcile = Some((at, trigger, scope, at - started, None));
                let outcome = effects
                    .iter()
                    .find_map(|e| match e {
                        Effect::Report(o) => Some(o.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                self.note(Note::Reconciled { work, outcome, at });
                effects
            }
            Err(e) => {
                self.kernel_error(&e);
                let effects = self.controller.handle(
                    Input::Read {
                        work: &work,
                        reading: Err(&e),
                    },
                    env,
                );
                self.records.last_reconcile =
                    Some((at, trigger, scope, at - started, Some(e.to_string())));
                self.note(Note::Reconciled {
                    work,
                    outcome: Outcome::default(),
                    at,
                });
                effects
            }
        }
    }

    /// Logs a kernel error once while it persists; repeats go to debug.
    fn kernel_error(&mut self, e: &KernelError) {
        let text = e.to_string();
        if self.records.last_error.as_deref() == Some(&text) {
            tracing::debug!("kernel still failing: {text}");
        } else {
            tracing::error!("{text}");
            self.records.last_error = Some(text);
        }
    }

    /// Makes the kernel match the configuration (or, with `--no-apply`, reports that it
    /// does not), as `carpd apply` would.
    fn converge(&mut self, trigger: Trigger) {
        let want = &self.loaded.desired;
        if want.groups.is_empty() && want.sysctls.is_empty() {
            return;
        }
        let k = self.kernel.as_ref();
        let have = match observe(k, want) {
            Ok(h) => h,
            Err(e) => return self.kernel_error(&e),
        };
        let plan = diff(want, &have);
        let now = Instant::now();
        if plan.is_empty() {
            if matches!(trigger, Trigger::Startup | Trigger::Reload) {
                tracing::info!("the kernel matches the configuration");
            }
            self.records.last_drift = None;
            return;
        }
        for n in &plan.notes {
            tracing::info!("{n}");
        }
        let changes: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        if !self.settings.apply {
            if self.records.last_drift.as_ref() != Some(&changes) {
                tracing::warn!(
                    changes = %changes.join("; "),
                    "the kernel differs from the configuration; not changing it (--no-apply)"
                );
                self.records.last_drift = Some(changes.clone());
            }
            self.records.last_apply = Some((now, trigger, changes, None));
            return;
        }
        let report = apply(k, &plan);
        let done: Vec<String> = report.done.iter().map(ToString::to_string).collect();
        for a in &done {
            if matches!(trigger, Trigger::Startup | Trigger::Reload) {
                tracing::info!(change = %a, "applied the configuration to the kernel");
            } else {
                tracing::warn!(change = %a, %trigger, "the kernel had drifted from the configuration; restored");
            }
        }
        let error = report.failed.as_ref().map(|(a, e)| format!("{a}: {e}"));
        if let Some((_, e)) = &report.failed {
            self.kernel_error(e);
        }
        self.records.last_apply = Some((now, trigger, done, error));
    }

    fn report(&mut self, outcome: &Outcome) {
        for (group, state) in &outcome.initial {
            tracing::info!(%group, %state, "state at start-up");
            self.metrics.group_state(group, Some(*state));
        }
        for t in &outcome.transitions {
            self.metrics.transition(&t.group, t.to);
            self.metrics.group_state(&t.group, t.to);
        }
        for t in &outcome.transitions {
            let from = t.from.map_or("NONE", CarpState::as_str);
            let to = t.to.map_or("NONE", CarpState::as_str);
            // Losing MASTER to INIT (link down, vhid destroyed) is what pages someone.
            if t.from == Some(CarpState::Master) && t.to != Some(CarpState::Backup) {
                tracing::warn!(xid = %t.id, group = %t.group, from = %from, to = %to, learned = %t.learned, "CARP transition");
            } else {
                tracing::info!(xid = %t.id, group = %t.group, from = %from, to = %to, learned = %t.learned, "CARP transition");
            }
        }
    }
}

fn describe(work: &Work) -> (Trigger, String) {
    match work {
        Work::Full(t) => (*t, "all".to_string()),
        Work::Groups(gs) => {
            let trigger = gs.first().map_or(Trigger::Event, |(_, t)| *t);
            let names: Vec<String> = gs.iter().map(|(g, _)| g.to_string()).collect();
            (trigger, names.join(","))
        }
    }
}

/// Every vhid on every interface. An interface that disappears between the listing and its
/// read is skipped: its groups are gone.
pub fn read_all(k: &dyn Kernel) -> Result<Vec<(GroupId, Option<CarpState>)>, KernelError> {
    let mut out = Vec::new();
    for ifname in k.interfaces()? {
        match k.groups(&ifname) {
            Ok(gs) => out.extend(gs.into_iter().map(|g| (g.id(), Some(g.state)))),
            Err(e) if e.is_errno(libc::ENXIO) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The named groups; `None` for a group (or interface) that does not exist.
pub fn read_groups(
    k: &dyn Kernel,
    groups: &[(GroupId, Trigger)],
) -> Result<Vec<(GroupId, Option<CarpState>)>, KernelError> {
    let mut out = Vec::with_capacity(groups.len());
    for (g, _) in groups {
        match k.group(&g.ifname, g.vhid) {
            Ok(found) => out.push((g.clone(), found.map(|kg| kg.state))),
            Err(e) if e.is_errno(libc::ENXIO) => out.push((g.clone(), None)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
