//! The controller's pure core: what carpd believes about each CARP group, why it looked, and
//! when it must look again. No I/O and no clock of its own: the executor (`daemon.rs`) feeds
//! it inputs stamped with `now` and carries out the [`Work`] it asks for.
//!
//! The cycle, kube-runtime style:
//! 1. inputs mark groups *pending* ([`Core::event`], [`Core::nudge`]) or ask for a full
//!    re-read ([`Core::resync`]); the periodic timer does the same by itself;
//! 2. [`Core::due`] says what to read from the kernel now, [`Core::next_wakeup`] when to ask
//!    again;
//! 3. the executor reads the kernel and hands the result to [`Core::observe`], which compares
//!    it with what was known, records transitions and returns them with the [`Reading`] of
//!    every group it looked at. What a reading obliges carpd to do (claims) is decided by
//!    [`super::claims`], once, inside [`super::machine::Controller`].
//!
//! Invariants (property-tested in `tests.rs`):
//! - the state of a group only ever comes from a kernel reading, never from an event;
//! - a transition is reported once: the same reading twice reports nothing the second time;
//! - the first reading of a group (start-up, a restarted daemon) is not a transition;
//! - events for one group closer together than `coalesce` share reconciles: the first runs
//!   at once (latency matters: a MASTER event starts a failover), the rest fold into at most
//!   one more per `coalesce` window, always against the current kernel state;
//! - memory is bounded whatever devd sends: pending entries and the coalescing memory only
//!   hold groups that exist or were asked about within one window, histories are rings.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::carp::{CarpState, GroupId};
use crate::config::DaemonConfig;

use super::duties::Duties;

/// Transitions kept per group for status.
pub const HISTORY: usize = 16;
/// devd events kept for status.
pub const RECENT_EVENTS: usize = 32;
/// Groups remembered for coalescing that the kernel does not have (events for vhids that do
/// not exist); beyond this the oldest are forgotten, which only costs an extra kernel read.
const MAX_COALESCE_MEMORY: usize = 1024;

/// Why carpd looked at the kernel: logged with every transition as "how it was learned".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The first read after `carpd run` started.
    Startup,
    /// A devd event named the group.
    Event,
    /// devd (re)connected or carpd fell behind it: events may have been missed.
    Resync,
    /// The periodic re-read.
    Timer,
    /// A control-socket request: the devd hook, or an operator.
    Nudge,
    /// The configuration was reloaded (SIGHUP or `carpd reload`).
    Reload,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Event => "event",
            Trigger::Resync => "resync",
            Trigger::Timer => "timer",
            Trigger::Nudge => "nudge",
            Trigger::Reload => "reload",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to read from the kernel now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// Every vhid on every interface.
    Full(Trigger),
    /// These groups only, each with what made it pending.
    Groups(Vec<(GroupId, Trigger)>),
}

/// One state change of one group, as learned from a kernel reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Correlation id: every log line about this transition and what it causes carries it.
    pub id: String,
    pub group: GroupId,
    /// `None` when the group did not exist before (created while carpd watched).
    pub from: Option<CarpState>,
    /// `None` when the group no longer exists (destroyed, or its interface went away).
    pub to: Option<CarpState>,
    pub learned: Trigger,
    pub at: Instant,
}

/// One group as a kernel reading found it. Handed to the claim scheduler on every reconcile
/// of the group, not only on transitions, so a missed event costs nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reading {
    pub group: GroupId,
    pub state: CarpState,
    pub trigger: Trigger,
}

/// The result of [`Core::observe`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The first reading of groups (start-up or first sight): state, not a change.
    pub initial: Vec<(GroupId, CarpState)>,
    pub transitions: Vec<Transition>,
    pub readings: Vec<Reading>,
}

/// What carpd knows about one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupView {
    pub state: CarpState,
    /// When the state was last seen to change (or first seen).
    pub since: Instant,
    /// How the current state was learned.
    pub learned: Trigger,
    pub history: VecDeque<Transition>,
    /// devd events received for this group.
    pub events: u64,
    /// The state the last event claimed, and when it came.
    pub last_event: Option<(Instant, CarpState)>,
    /// Kernel readings of this group.
    pub reconciles: u64,
    pub last_reconcile: Option<(Instant, Trigger)>,
}

/// A recent devd event, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentEvent {
    pub at: Instant,
    pub group: GroupId,
    pub state: CarpState,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    trigger: Trigger,
    not_before: Instant,
}

/// The controller's memory and decision logic.
#[derive(Debug)]
pub struct Core {
    timing: DaemonConfig,
    duties: Duties,
    /// Prefix of correlation ids: unique per daemon run.
    run_id: String,
    seq: u64,
    groups: BTreeMap<GroupId, GroupView>,
    pending: BTreeMap<GroupId, Pending>,
    full: Option<Trigger>,
    next_timer: Instant,
    /// When each group last had an event-driven reconcile: the coalescing memory.
    last_event_reconcile: BTreeMap<GroupId, Instant>,
    recent_events: VecDeque<RecentEvent>,
    events: u64,
    reconciles: u64,
}

impl Core {
    /// A core that wants a full read at once (`Trigger::Startup`).
    pub fn new(
        timing: DaemonConfig,
        duties: Duties,
        run_id: impl Into<String>,
        now: Instant,
    ) -> Core {
        Core {
            timing,
            duties,
            run_id: run_id.into(),
            seq: 0,
            groups: BTreeMap::new(),
            pending: BTreeMap::new(),
            full: Some(Trigger::Startup),
            next_timer: now + timing.resync_interval,
            last_event_reconcile: BTreeMap::new(),
            recent_events: VecDeque::new(),
            events: 0,
            reconciles: 0,
        }
    }

    /// A new configuration: new pacing and duties, and a full re-read at once.
    pub fn reconfigure(&mut self, timing: DaemonConfig, duties: Duties, now: Instant) {
        self.timing = timing;
        self.duties = duties;
        self.next_timer = now + timing.resync_interval;
        self.resync(Trigger::Reload);
    }

    /// A devd event: a hint that `group` may have changed. Its claimed state is recorded
    /// for status and never believed.
    pub fn event(&mut self, group: GroupId, claimed: CarpState, now: Instant) {
        self.events += 1;
        if self.recent_events.len() == RECENT_EVENTS {
            self.recent_events.pop_front();
        }
        self.recent_events.push_back(RecentEvent {
            at: now,
            group: group.clone(),
            state: claimed,
        });
        if let Some(v) = self.groups.get_mut(&group) {
            v.events += 1;
            v.last_event = Some((now, claimed));
        }
        let not_before = match self.last_event_reconcile.get(&group) {
            Some(last) => (*last + self.timing.coalesce).max(now),
            None => now,
        };
        self.mark(group, Trigger::Event, not_before);
    }

    /// A control-socket nudge (the devd hook): look at `group` now, without coalescing.
    pub fn nudge(&mut self, group: GroupId, now: Instant) {
        self.mark(group, Trigger::Nudge, now);
    }

    /// Events may have been missed (devd reconnected or lagged), or the configuration
    /// changed: read everything at once.
    pub fn resync(&mut self, why: Trigger) {
        // Keep the most telling reason when several arrive before the read.
        self.full = Some(match self.full {
            Some(Trigger::Startup) => Trigger::Startup,
            Some(Trigger::Reload) if why != Trigger::Startup => Trigger::Reload,
            _ => why,
        });
    }

    fn mark(&mut self, group: GroupId, trigger: Trigger, not_before: Instant) {
        let entry = self.pending.entry(group).or_insert(Pending {
            trigger,
            not_before,
        });
        // A nudge or a due event is never delayed by an earlier, coalesced one.
        if not_before < entry.not_before {
            entry.not_before = not_before;
            entry.trigger = trigger;
        }
    }

    /// What to read now, if anything.
    pub fn due(&self, now: Instant) -> Option<Work> {
        if let Some(t) = self.full {
            return Some(Work::Full(t));
        }
        if now >= self.next_timer {
            return Some(Work::Full(Trigger::Timer));
        }
        let ready: Vec<(GroupId, Trigger)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.not_before <= now)
            .map(|(g, p)| (g.clone(), p.trigger))
            .collect();
        (!ready.is_empty()).then_some(Work::Groups(ready))
    }

    /// When [`Core::due`] will next have work, if no input arrives before.
    pub fn next_wakeup(&self, now: Instant) -> Instant {
        if self.full.is_some() {
            return now;
        }
        self.pending
            .values()
            .map(|p| p.not_before)
            .fold(self.next_timer, Instant::min)
    }

    /// Hands in what the kernel said for `work`. For [`Work::Full`], `reading` holds every
    /// group that exists; for [`Work::Groups`], one entry per group asked for, `None` when
    /// the group does not exist.
    pub fn observe(
        &mut self,
        work: &Work,
        reading: &[(GroupId, Option<CarpState>)],
        now: Instant,
    ) -> Outcome {
        let mut out = Outcome::default();
        match work {
            Work::Full(trigger) => {
                self.full = None;
                self.next_timer = now + self.timing.resync_interval;
                let pending = std::mem::take(&mut self.pending);
                let mut seen = std::collections::BTreeSet::new();
                for (group, state) in reading {
                    let Some(state) = state else { continue };
                    seen.insert(group.clone());
                    // A group pending for an event is learned "by event" even when the
                    // timer's read got to it first.
                    let why = pending.get(group).map_or(*trigger, |p| p.trigger);
                    self.apply(group, Some(*state), why, now, &mut out);
                }
                let gone: Vec<GroupId> = self
                    .groups
                    .keys()
                    .filter(|g| !seen.contains(*g))
                    .cloned()
                    .collect();
                for group in gone {
                    let why = pending.get(&group).map_or(*trigger, |p| p.trigger);
                    self.apply(&group, None, why, now, &mut out);
                }
            }
            Work::Groups(asked) => {
                for (group, trigger) in asked {
                    self.pending.remove(group);
                    if *trigger == Trigger::Event {
                        self.remember_event_reconcile(group, now);
                    }
                    let state = reading
                        .iter()
                        .find(|(g, _)| g == group)
                        .and_then(|(_, s)| *s);
                    self.apply(group, state, *trigger, now, &mut out);
                }
            }
        }
        out
    }

    /// A kernel read for `work` failed: nothing is believed changed. A full read stays
    /// wanted and is retried at the next timer tick (not at once: a kernel that fails now
    /// would fail in a tight loop); groups asked for are retried by that full read too.
    pub fn read_failed(&mut self, work: &Work, now: Instant) {
        self.next_timer = now + self.timing.resync_interval;
        match work {
            Work::Full(_) => self.full = None,
            Work::Groups(asked) => {
                for (group, _) in asked {
                    self.pending.remove(group);
                }
            }
        }
    }

    fn remember_event_reconcile(&mut self, group: &GroupId, now: Instant) {
        if self.last_event_reconcile.len() >= MAX_COALESCE_MEMORY {
            let window = self.timing.coalesce;
            self.last_event_reconcile
                .retain(|_, at| now.saturating_duration_since(*at) < window);
            if self.last_event_reconcile.len() >= MAX_COALESCE_MEMORY {
                self.last_event_reconcile.clear();
            }
        }
        self.last_event_reconcile.insert(group.clone(), now);
    }

    fn apply(
        &mut self,
        group: &GroupId,
        state: Option<CarpState>,
        trigger: Trigger,
        now: Instant,
        out: &mut Outcome,
    ) {
        self.reconciles += 1;
        let known = self.groups.get(group).map(|v| v.state);
        match (known, state) {
            (None, None) => {}
            (None, Some(s)) => {
                let mut view = GroupView {
                    state: s,
                    since: now,
                    learned: trigger,
                    history: VecDeque::new(),
                    events: 0,
                    last_event: None,
                    reconciles: 1,
                    last_reconcile: Some((now, trigger)),
                };
                if trigger == Trigger::Startup {
                    out.initial.push((group.clone(), s));
                } else {
                    // Created while carpd watched: that is a change worth a line.
                    let t = self.transition(group, None, Some(s), trigger, now);
                    view.history.push_back(t.clone());
                    out.transitions.push(t);
                }
                self.groups.insert(group.clone(), view);
            }
            (Some(old), None) => {
                let t = self.transition(group, Some(old), None, trigger, now);
                out.transitions.push(t);
                self.groups.remove(group);
                self.last_event_reconcile.remove(group);
            }
            (Some(old), Some(new)) => {
                let t = (old != new)
                    .then(|| self.transition(group, Some(old), Some(new), trigger, now));
                let view = self.groups.get_mut(group).expect("known group");
                view.reconciles += 1;
                view.last_reconcile = Some((now, trigger));
                if let Some(t) = t {
                    view.state = new;
                    view.since = now;
                    view.learned = trigger;
                    if view.history.len() == HISTORY {
                        view.history.pop_front();
                    }
                    view.history.push_back(t.clone());
                    out.transitions.push(t);
                }
            }
        }
        if let Some(s) = state {
            out.readings.push(Reading {
                group: group.clone(),
                state: s,
                trigger,
            });
        }
    }

    fn transition(
        &mut self,
        group: &GroupId,
        from: Option<CarpState>,
        to: Option<CarpState>,
        learned: Trigger,
        at: Instant,
    ) -> Transition {
        self.seq += 1;
        Transition {
            id: format!("{}-{}", self.run_id, self.seq),
            group: group.clone(),
            from,
            to,
            learned,
            at,
        }
    }

    pub fn groups(&self) -> &BTreeMap<GroupId, GroupView> {
        &self.groups
    }

    pub fn recent_events(&self) -> &VecDeque<RecentEvent> {
        &self.recent_events
    }

    pub fn duties(&self) -> &Duties {
        &self.duties
    }

    /// devd events received since start.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Group readings since start.
    pub fn reconciles(&self) -> u64 {
        self.reconciles
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn timing(&self) -> DaemonConfig {
        self.timing
    }

    /// How long until the periodic re-read.
    pub fn until_timer(&self, now: Instant) -> Duration {
        self.next_timer.saturating_duration_since(now)
    }
}
