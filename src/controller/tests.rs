//! Tests of the pure core: table tests for each rule, and a property test that drives it
//! with random events, kernel changes and time against a model kernel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::carp::{CarpState, GroupId};
use crate::config::DaemonConfig;

use super::core::{Core, HISTORY, RECENT_EVENTS, Trigger, Work};
use super::duties::{Duties, GroupDuties};

const MS: Duration = Duration::from_millis(1);

fn g(s: &str) -> GroupId {
    s.parse().unwrap()
}

fn timing() -> DaemonConfig {
    DaemonConfig {
        resync_interval: Duration::from_secs(5),
        coalesce: Duration::from_millis(100),
        ..DaemonConfig::default()
    }
}

fn core(t0: Instant) -> Core {
    let mut duties = Duties::new();
    duties.insert(
        g("2@vmx1"),
        GroupDuties {
            failover_ips: vec!["51.68.252.230".parse().unwrap()],
        },
    );
    Core::new(timing(), duties, "r", t0)
}

/// Reads `kernel` for `work` the way the executor does.
fn read(kernel: &BTreeMap<GroupId, CarpState>, work: &Work) -> Vec<(GroupId, Option<CarpState>)> {
    match work {
        Work::Full(_) => kernel.iter().map(|(g, s)| (g.clone(), Some(*s))).collect(),
        Work::Groups(gs) => gs
            .iter()
            .map(|(g, _)| (g.clone(), kernel.get(g).copied()))
            .collect(),
    }
}

fn kernel(entries: &[(&str, CarpState)]) -> BTreeMap<GroupId, CarpState> {
    entries.iter().map(|(n, s)| (g(n), *s)).collect()
}

/// A core past its start-up read of a kernel where 2@vmx1 is in `state`.
fn started(state: CarpState) -> (Instant, Core, BTreeMap<GroupId, CarpState>) {
    let t0 = Instant::now();
    let mut c = core(t0);
    let k = kernel(&[("2@vmx1", state)]);
    let w = c.due(t0).unwrap();
    c.observe(&w, &read(&k, &w), t0);
    (t0, c, k)
}

#[test]
fn start_up_reads_everything_and_reports_state_not_transitions() {
    let t0 = Instant::now();
    let mut c = core(t0);
    let k = kernel(&[("2@vmx1", CarpState::Master), ("1@vmx0", CarpState::Backup)]);
    let work = c.due(t0).expect("a full read at start-up");
    assert_eq!(work, Work::Full(Trigger::Startup));
    let out = c.observe(&work, &read(&k, &work), t0);
    assert!(out.transitions.is_empty(), "{:?}", out.transitions);
    assert_eq!(out.initial.len(), 2);
    // Level-triggered: every group's state is handed on at once, without any event.
    let r = out
        .readings
        .iter()
        .find(|r| r.group == g("2@vmx1"))
        .unwrap();
    assert_eq!((r.state, r.trigger), (CarpState::Master, Trigger::Startup));
    assert!(c.due(t0).is_none());
    assert_eq!(c.next_wakeup(t0), t0 + timing().resync_interval);
}

#[test]
fn an_event_is_a_hint_the_kernel_decides() {
    let (t0, mut c, mut k) = started(CarpState::Backup);

    // devd claims MASTER but the kernel still says BACKUP (a stale or forged event).
    c.event(g("2@vmx1"), CarpState::Master, t0 + MS);
    let w = c.due(t0 + MS).unwrap();
    assert_eq!(w, Work::Groups(vec![(g("2@vmx1"), Trigger::Event)]));
    let out = c.observe(&w, &read(&k, &w), t0 + MS);
    assert!(out.transitions.is_empty());
    assert_eq!(c.groups()[&g("2@vmx1")].state, CarpState::Backup);
    assert_eq!(out.readings[0].state, CarpState::Backup);

    // Now the kernel changes; the next event's read sees it: one transition, learned by event.
    k.insert(g("2@vmx1"), CarpState::Master);
    let t1 = t0 + Duration::from_secs(1);
    c.event(g("2@vmx1"), CarpState::Master, t1);
    let w = c.due(t1).unwrap();
    let out = c.observe(&w, &read(&k, &w), t1);
    assert_eq!(out.transitions.len(), 1);
    let t = &out.transitions[0];
    assert_eq!(
        (t.from, t.to, t.learned),
        (
            Some(CarpState::Backup),
            Some(CarpState::Master),
            Trigger::Event
        )
    );
    assert_eq!(t.id, "r-1");
    assert_eq!(out.readings[0].state, CarpState::Master);

    // The same reading again reports nothing: a transition is logged once.
    c.nudge(g("2@vmx1"), t1 + MS);
    let w = c.due(t1 + MS).unwrap();
    assert!(c.observe(&w, &read(&k, &w), t1 + MS).transitions.is_empty());
    assert_eq!(c.groups()[&g("2@vmx1")].history.len(), 1);
}

#[test]
fn a_burst_of_events_folds_into_one_read_per_window() {
    let (t0, mut c, k) = started(CarpState::Master);

    let start = t0 + Duration::from_secs(1);
    let mut reads = 0;
    // 10,000 events within 50 ms, the loop checking for work after each one as the executor
    // does after each drained batch.
    for i in 0..10_000u32 {
        let now = start + Duration::from_micros(u64::from(i) * 5);
        c.event(g("2@vmx1"), CarpState::Master, now);
        if let Some(w) = c.due(now) {
            c.observe(&w, &read(&k, &w), now);
            reads += 1;
        }
    }
    // The first event is read at once (a MASTER event must not wait).
    assert_eq!(reads, 1);
    // The rest wait for the end of the window, then share one read.
    let end = start + Duration::from_micros(50_000);
    assert!(c.due(end).is_none());
    let wake = c.next_wakeup(end);
    assert_eq!(wake, start + timing().coalesce);
    let w = c.due(wake).unwrap();
    assert_eq!(w, Work::Groups(vec![(g("2@vmx1"), Trigger::Event)]));
    c.observe(&w, &read(&k, &w), wake);
    assert!(c.due(wake).is_none());
    assert_eq!(c.events(), 10_000);
    assert_eq!(c.recent_events().len(), RECENT_EVENTS);
}

#[test]
fn a_nudge_is_never_delayed_by_coalescing() {
    let (t0, mut c, k) = started(CarpState::Backup);
    c.event(g("2@vmx1"), CarpState::Master, t0 + MS);
    let w = c.due(t0 + MS).unwrap();
    c.observe(&w, &read(&k, &w), t0 + MS);
    c.event(g("2@vmx1"), CarpState::Master, t0 + 2 * MS);
    assert!(c.due(t0 + 2 * MS).is_none(), "coalesced");
    c.nudge(g("2@vmx1"), t0 + 3 * MS);
    assert_eq!(
        c.due(t0 + 3 * MS),
        Some(Work::Groups(vec![(g("2@vmx1"), Trigger::Nudge)]))
    );
}

#[test]
fn the_timer_reads_everything_and_notices_what_no_event_announced() {
    let (t0, mut c, mut k) = started(CarpState::Backup);
    k.insert(g("2@vmx1"), CarpState::Master);
    k.insert(g("3@vmx1"), CarpState::Init);
    let t1 = t0 + timing().resync_interval;
    assert!(c.due(t1 - MS).is_none());
    let w = c.due(t1).unwrap();
    assert_eq!(w, Work::Full(Trigger::Timer));
    let out = c.observe(&w, &read(&k, &w), t1);
    let summary: Vec<_> = out
        .transitions
        .iter()
        .map(|t| (t.group.to_string(), t.from, t.to, t.learned))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "2@vmx1".into(),
                Some(CarpState::Backup),
                Some(CarpState::Master),
                Trigger::Timer
            ),
            ("3@vmx1".into(), None, Some(CarpState::Init), Trigger::Timer),
        ]
    );
    // Destroyed: the next read reports it gone, once.
    k.remove(&g("3@vmx1"));
    let t2 = t1 + timing().resync_interval;
    let w = c.due(t2).unwrap();
    let out = c.observe(&w, &read(&k, &w), t2);
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].to, None);
    assert!(!c.groups().contains_key(&g("3@vmx1")));
}

#[test]
fn a_pending_event_keeps_its_trigger_when_a_full_read_gets_there_first() {
    let (t0, mut c, mut k) = started(CarpState::Backup);
    c.event(g("2@vmx1"), CarpState::Master, t0 + MS);
    let w = c.due(t0 + MS).unwrap();
    c.observe(&w, &read(&k, &w), t0 + MS);
    k.insert(g("2@vmx1"), CarpState::Master);
    c.event(g("2@vmx1"), CarpState::Master, t0 + 2 * MS); // coalesced, pending
    c.resync(Trigger::Resync); // devd reconnected meanwhile
    let w = c.due(t0 + 3 * MS).unwrap();
    assert_eq!(w, Work::Full(Trigger::Resync));
    let out = c.observe(&w, &read(&k, &w), t0 + 3 * MS);
    assert_eq!(out.transitions[0].learned, Trigger::Event);
    assert_eq!(c.pending_len(), 0);
}

#[test]
fn resync_reasons_keep_the_most_telling() {
    let t0 = Instant::now();
    let mut c = core(t0);
    c.resync(Trigger::Resync);
    assert_eq!(c.due(t0), Some(Work::Full(Trigger::Startup)));
    let w = c.due(t0).unwrap();
    c.observe(&w, &[], t0);
    c.resync(Trigger::Reload);
    c.resync(Trigger::Resync);
    assert_eq!(c.due(t0), Some(Work::Full(Trigger::Reload)));
}

#[test]
fn a_failed_read_is_retried_at_the_next_tick_not_in_a_tight_loop() {
    let t0 = Instant::now();
    let mut c = core(t0);
    let w = c.due(t0).unwrap();
    c.read_failed(&w, t0);
    assert!(c.due(t0).is_none());
    assert_eq!(c.next_wakeup(t0), t0 + timing().resync_interval);
    c.event(g("2@vmx1"), CarpState::Master, t0 + MS);
    let w = c.due(t0 + MS).unwrap();
    c.read_failed(&w, t0 + MS);
    assert!(c.due(t0 + 2 * MS).is_none());
    assert_eq!(
        c.due(t0 + MS + timing().resync_interval),
        Some(Work::Full(Trigger::Timer))
    );
}

#[test]
fn history_is_a_bounded_ring_and_ids_are_unique() {
    let (t0, mut c, mut k) = started(CarpState::Backup);
    let mut ids = std::collections::BTreeSet::new();
    for i in 1..=(HISTORY as u64 * 3) {
        let s = if i % 2 == 1 {
            CarpState::Master
        } else {
            CarpState::Backup
        };
        k.insert(g("2@vmx1"), s);
        let now = t0 + Duration::from_secs(i);
        c.nudge(g("2@vmx1"), now);
        let w = c.due(now).unwrap();
        for t in c.observe(&w, &read(&k, &w), now).transitions {
            assert!(ids.insert(t.id));
        }
    }
    assert_eq!(ids.len(), HISTORY * 3);
    assert_eq!(c.groups()[&g("2@vmx1")].history.len(), HISTORY);
}

#[test]
fn reconfigure_changes_duties_and_reads_everything() {
    let (t0, mut c, k) = started(CarpState::Master);
    c.reconfigure(timing(), Duties::new(), t0 + MS);
    let w = c.due(t0 + MS).unwrap();
    assert_eq!(w, Work::Full(Trigger::Reload));
    let out = c.observe(&w, &read(&k, &w), t0 + MS);
    assert!(out.transitions.is_empty());
    assert_eq!(out.readings.len(), 1, "still read, with no duties any more");
}

/// One step of the random scenario.
#[derive(Clone, Debug)]
enum Step {
    /// The kernel changes group `n` (or destroys it with `None`), with or without an event.
    Change(u8, Option<CarpState>, bool),
    /// devd sends an event whose claim may be wrong.
    Event(u8, CarpState),
    Nudge(u8),
    Resync,
    Wait(u16),
}

fn state() -> impl Strategy<Value = CarpState> {
    prop_oneof![
        Just(CarpState::Init),
        Just(CarpState::Backup),
        Just(CarpState::Master)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, proptest::option::of(state()), any::<bool>()).prop_map(|(n, s, e)| Step::Change(n, s, e)),
        3 => (0u8..4, state()).prop_map(|(n, s)| Step::Event(n, s)),
        1 => (0u8..4).prop_map(Step::Nudge),
        1 => Just(Step::Resync),
        3 => (0u16..7000).prop_map(Step::Wait),
    ]
}

fn group_n(n: u8) -> GroupId {
    GroupId::new("vmx1", crate::carp::Vhid::new(u32::from(n) + 1).unwrap())
}

proptest! {
    /// Whatever devd sends and however the kernel moves:
    /// - the core's belief is always the last kernel reading of each group;
    /// - every reported transition is a real change between two readings, never from == to;
    /// - after the next full read, the belief equals the kernel exactly;
    /// - the loop never spins: `due` is empty right after its work is observed.
    #[test]
    fn belief_follows_kernel_readings_only(steps in proptest::collection::vec(step(), 1..80)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut c = Core::new(timing(), Duties::new(), "p", t0);
        let mut k: BTreeMap<GroupId, CarpState> = BTreeMap::new();
        let mut believed: BTreeMap<GroupId, CarpState> = BTreeMap::new();
        let run = |c: &mut Core, k: &BTreeMap<GroupId, CarpState>, believed: &mut BTreeMap<GroupId, CarpState>, now: Instant| -> Result<(), TestCaseError> {
            for _ in 0..3 {
                let Some(w) = c.due(now) else { return Ok(()) };
                let reading = read(k, &w);
                let out = c.observe(&w, &reading, now);
                for t in &out.transitions {
                    prop_assert_ne!(t.from, t.to);
                    prop_assert_eq!(believed.get(&t.group).copied(), t.from);
                    match t.to {
                        Some(s) => { believed.insert(t.group.clone(), s); }
                        None => { believed.remove(&t.group); }
                    }
                }
                for (g, s) in &out.initial {
                    prop_assert!(!believed.contains_key(g));
                    believed.insert(g.clone(), *s);
                }
                for (g, s) in &reading {
                    prop_assert_eq!(believed.get(g).copied(), *s);
                }
                let core_view: BTreeMap<GroupId, CarpState> = c.groups().iter().map(|(g, v)| (g.clone(), v.state)).collect();
                prop_assert_eq!(&core_view, &*believed);
            }
            prop_assert!(c.due(now).is_none(), "work still due after three rounds");
            Ok(())
        };
        for s in steps {
            match s {
                Step::Change(n, st, with_event) => {
                    match st {
                        Some(st) => { k.insert(group_n(n), st); }
                        None => { k.remove(&group_n(n)); }
                    }
                    if with_event && let Some(st) = st {
                        c.event(group_n(n), st, now);
                    }
                }
                Step::Event(n, st) => c.event(group_n(n), st, now),
                Step::Nudge(n) => c.nudge(group_n(n), now),
                Step::Resync => c.resync(Trigger::Resync),
                Step::Wait(ms) => now += Duration::from_millis(u64::from(ms)),
            }
            run(&mut c, &k, &mut believed, now)?;
        }
        c.resync(Trigger::Resync);
        run(&mut c, &k, &mut believed, now)?;
        prop_assert_eq!(&believed, &k);
    }
}
