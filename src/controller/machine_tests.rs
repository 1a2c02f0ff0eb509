//! Tests of the controller: scenarios through `handle`, and property tests of its invariants
//! over random runs of events, kernel changes, job ends, reloads, repairs and the stop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::controller::claims::JobKind;
use crate::controller::duties::GroupDuties;
use crate::ovh::plan::Found;

const S: Duration = Duration::from_secs(1);

fn g() -> GroupId {
    "2@vmx1".parse().unwrap()
}

fn ips() -> Vec<IpAddr> {
    vec![
        "51.68.252.230".parse().unwrap(),
        "51.68.252.231".parse().unwrap(),
    ]
}

fn timing() -> DaemonConfig {
    DaemonConfig {
        resync_interval: Duration::from_secs(5),
        coalesce: Duration::from_millis(100),
        ..DaemonConfig::default()
    }
}

fn duties() -> Duties {
    let mut d = Duties::new();
    d.insert(
        g(),
        GroupDuties {
            failover_ips: ips(),
        },
    );
    d
}

fn controller(t0: Instant) -> Controller {
    Controller::new(
        timing(),
        duties(),
        ips().into_iter().map(|ip| (ip, g())).collect(),
        ClaimPolicy::default(),
        "t",
        t0,
    )
}

fn env(now: Instant) -> Env {
    Env {
        now,
        checks_allowed: true,
    }
}

/// A stand-in executor: carries out reads against `kernel` at once, collects the rest.
struct Harness {
    c: Controller,
    kernel: BTreeMap<GroupId, CarpState>,
    running: BTreeMap<IpAddr, Job>,
    cancelled: BTreeSet<JobId>,
    /// What the controller was last told of the group by a reading.
    told: Option<CarpState>,
    started: Vec<(Instant, Job)>,
}

impl Harness {
    fn new(t0: Instant, state: CarpState) -> Harness {
        let mut h = Harness {
            c: controller(t0),
            kernel: [(g(), state)].into_iter().collect(),
            running: BTreeMap::new(),
            cancelled: BTreeSet::new(),
            told: None,
            started: Vec::new(),
        };
        h.drive(Input::Tick, t0).unwrap();
        h
    }

    /// Feeds `input` and carries out every effect, checking the invariants on the way.
    fn drive(&mut self, input: Input<'_>, now: Instant) -> Result<(), TestCaseError> {
        let mut queue: std::collections::VecDeque<Effect> = self.c.handle(input, env(now)).into();
        let mut rounds = 0;
        while let Some(e) = queue.pop_front() {
            rounds += 1;
            prop_assert!(rounds < 64, "the controller spins");
            match e {
                Effect::Read(work) => {
                    let reading: Vec<(GroupId, Option<CarpState>)> = match &work {
                        Work::Full(_) => self
                            .kernel
                            .iter()
                            .map(|(g, s)| (g.clone(), Some(*s)))
                            .collect(),
                        Work::Groups(gs) => gs
                            .iter()
                            .map(|(g, _)| (g.clone(), self.kernel.get(g).copied()))
                            .collect(),
                    };
                    if let Some((_, s)) = reading.iter().find(|(x, _)| *x == g()) {
                        self.told = *s;
                    }
                    let more = self.c.handle(
                        Input::Read {
                            work: &work,
                            reading: Ok(&reading),
                        },
                        env(now),
                    );
                    queue.extend(more);
                }
                Effect::Start(job) => {
                    prop_assert!(
                        !self.running.contains_key(&job.ip),
                        "two writers for {}: {:?} while {:?} runs",
                        job.ip,
                        job,
                        self.running.get(&job.ip)
                    );
                    prop_assert!(!self.c.claims().stopping(), "a job started after the stop");
                    if job.kind == JobKind::Claim {
                        prop_assert_eq!(
                            self.told,
                            Some(CarpState::Master),
                            "claim while not MASTER"
                        );
                        prop_assert!(self.c.current(&job.ip, job.generation));
                    }
                    self.started.push((now, job.clone()));
                    self.running.insert(job.ip, job);
                }
                Effect::Cancel(id) => {
                    prop_assert!(
                        self.running.values().any(|j| j.id == id),
                        "cancel of a job that does not run"
                    );
                    prop_assert!(self.cancelled.insert(id), "cancelled twice");
                }
                Effect::Supersede(id) => {
                    let job = self.running.values().find(|j| j.id == id);
                    prop_assert!(job.is_some(), "supersede of a job that does not run");
                    let job = job.unwrap();
                    prop_assert!(
                        !self.c.current(&job.ip, job.generation),
                        "a job superseded while its term lasts"
                    );
                }
                Effect::Demote { on, .. } => {
                    let more = self.c.handle(Input::Demoted { on, ok: true }, env(now));
                    queue.extend(more);
                }
                Effect::Report(_) | Effect::Verdict { .. } => {}
            }
        }
        Ok(())
    }

    /// Ends the running job of `ip` with `done`.
    fn end(&mut self, ip: IpAddr, done: Done, now: Instant) -> Result<Option<Job>, TestCaseError> {
        let Some(job) = self.running.remove(&ip) else {
            return Ok(None);
        };
        self.drive(
            Input::JobEnded {
                job: &job,
                done: &done,
                found: None,
            },
            now,
        )?;
        Ok(Some(job))
    }
}

#[test]
fn a_master_event_reads_the_kernel_then_claims_every_ip() {
    let t0 = Instant::now();
    let mut h = Harness::new(t0, CarpState::Backup);
    assert_eq!(h.running.len(), 2, "start-up checks of both IPs");
    for ip in ips() {
        h.end(
            ip,
            Done::Located {
                found: Found::Unbound,
                here: false,
            },
            t0,
        )
        .unwrap();
    }
    h.kernel.insert(g(), CarpState::Master);
    let t1 = t0 + S;
    let event = Input::Event {
        group: g(),
        claimed: CarpState::Master,
    };
    let effects = h.c.handle(event, env(t1));
    assert!(
        matches!(effects.as_slice(), [Effect::Read(Work::Groups(_))]),
        "an event only asks for a reading, never decides by itself: {effects:?}"
    );
    let Effect::Read(work) = &effects[0] else {
        unreachable!()
    };
    let reading = vec![(g(), Some(CarpState::Master))];
    let after = h.c.handle(
        Input::Read {
            work,
            reading: Ok(&reading),
        },
        env(t1),
    );
    let claims = after
        .iter()
        .filter(|e| matches!(e, Effect::Start(j) if j.kind == JobKind::Claim))
        .count();
    assert_eq!(claims, 2, "{after:?}");
    // An event that claims MASTER while the kernel says BACKUP starts nothing.
    let mut h = Harness::new(t0, CarpState::Backup);
    for ip in ips() {
        h.end(
            ip,
            Done::Located {
                found: Found::Unbound,
                here: false,
            },
            t0,
        )
        .unwrap();
    }
    h.drive(
        Input::Event {
            group: g(),
            claimed: CarpState::Master,
        },
        t1,
    )
    .unwrap();
    assert!(h.running.is_empty(), "the kernel, not the event, decides");
}

#[test]
fn stop_cancels_running_jobs_once_and_starts_nothing() {
    let t0 = Instant::now();
    let mut h = Harness::new(t0, CarpState::Master);
    assert_eq!(h.running.len(), 2);
    h.drive(Input::Stop, t0).unwrap();
    assert_eq!(h.cancelled.len(), 2);
    assert!(h.c.draining());
    h.drive(Input::Stop, t0).unwrap();
    for ip in ips() {
        h.end(ip, Done::Moved { before: None }, t0).unwrap();
    }
    assert!(!h.c.draining());
    h.drive(Input::Tick, t0 + 60 * S).unwrap();
    assert!(h.running.is_empty());
}

#[test]
fn a_reload_that_changes_one_ip_cancels_only_that_claim() {
    let t0 = Instant::now();
    let mut h = Harness::new(t0, CarpState::Master);
    let [a, b] = [ips()[0], ips()[1]];
    let changed: BTreeSet<IpAddr> = [a].into_iter().collect();
    h.drive(
        Input::Reconfigure {
            timing: timing(),
            duties: duties(),
            ips: ips().into_iter().map(|ip| (ip, g())).collect(),
            changed,
            policy: ClaimPolicy::default(),
        },
        t0,
    )
    .unwrap();
    let ja = h.running[&a].id;
    let jb = h.running[&b].id;
    assert!(h.cancelled.contains(&ja) && !h.cancelled.contains(&jb));
    // The old claim of `a` ends at its safe point; the new configuration claims it again.
    h.end(a, Done::Cancelled, t0).unwrap();
    assert!(h.running.contains_key(&a), "the new claim started");
    assert_ne!(h.running[&a].id, ja);
}

#[test]
fn readiness_demotes_once_per_change_and_not_before_it_is_known() {
    let t0 = Instant::now();
    let mut c = controller(t0);
    let demote = |c: &mut Controller, ready, demotion| {
        c.handle(Input::Readiness { ready, demotion }, env(t0))
            .into_iter()
            .filter_map(|e| match e {
                Effect::Demote { on, delta } => Some((on, delta)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        demote(&mut c, None, 50),
        vec![],
        "start-up is not \"not ready\""
    );
    assert_eq!(demote(&mut c, Some(false), 50), vec![(true, 50)]);
    // Until the executor says it worked, the controller asks again.
    assert_eq!(demote(&mut c, Some(false), 50), vec![(true, 50)]);
    c.handle(Input::Demoted { on: true, ok: true }, env(t0));
    assert_eq!(demote(&mut c, Some(false), 50), vec![]);
    assert_eq!(demote(&mut c, Some(true), 50), vec![(false, 50)]);
    c.handle(
        Input::Demoted {
            on: false,
            ok: true,
        },
        env(t0),
    );
    assert_eq!(demote(&mut c, Some(true), 50), vec![]);
    // Turned off: a demotion left by an earlier configuration is removed once.
    let mut c = controller(t0);
    assert_eq!(demote(&mut c, None, 0), vec![(false, 0)]);
    c.handle(
        Input::Demoted {
            on: false,
            ok: true,
        },
        env(t0),
    );
    assert_eq!(demote(&mut c, Some(false), 0), vec![]);
}

#[derive(Clone, Debug)]
enum Op {
    Kernel(Option<CarpState>),
    Event,
    Advance(u64),
    End(u8, u8),
    Reload(u8),
    Repair(u8),
    Stop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop_oneof![
            Just(None),
            Just(Some(CarpState::Master)),
            Just(Some(CarpState::Backup)),
            Just(Some(CarpState::Init)),
        ]
        .prop_map(Op::Kernel),
        4 => Just(Op::Event),
        4 => (0u64..90).prop_map(Op::Advance),
        6 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::End(a, b)),
        1 => (0u8..4).prop_map(Op::Reload),
        1 => any::<u8>().prop_map(Op::Repair),
        1 => Just(Op::Stop),
    ]
}

proptest! {
    /// Over any run: one writer per IP (across reloads and the stop); a claim only while the
    /// latest reading says MASTER; nothing starts after the stop; moves of one IP in one
    /// term and configuration keep the hold-down (repairs and unbound IPs excepted); a cancel only for a
    /// running job, once; and once the inputs stop, every job ends and nothing is left to do
    /// while the IP's state is known.
    #[test]
    fn controller_invariants_hold(ops in proptest::collection::vec(op(), 1..150)) {
        let t0 = Instant::now();
        let mut h = Harness::new(t0, CarpState::Backup);
        let hold = ClaimPolicy::default().hold_down;
        let mut now = t0;
        let mut moves: Vec<(Instant, IpAddr, u64, u64, bool)> = Vec::new();
        let mut configured: Vec<IpAddr> = ips();
        // Whether each running job was started as a repair (exempt from the hold-down; a
        // reload may reset the IP's state before the job ends).
        let mut repairs: BTreeMap<IpAddr, bool> = BTreeMap::new();
        for o in ops {
            let before = h.started.len();
            match o {
                Op::Kernel(s) => {
                    match s {
                        Some(s) => h.kernel.insert(g(), s),
                        None => h.kernel.remove(&g()),
                    };
                }
                Op::Event => {
                    let claimed = h.kernel.get(&g()).copied().unwrap_or(CarpState::Init);
                    h.drive(Input::Event { group: g(), claimed }, now)?;
                }
                Op::Advance(secs) => {
                    now += Duration::from_secs(secs);
                    h.drive(Input::Tick, now)?;
                }
                Op::End(which, how) => {
                    let Some(ip) = h.running.keys().nth(usize::from(which) % 2.max(h.running.len())).copied() else {
                        continue;
                    };
                    let job = h.running[&ip].clone();
                    let repair = repairs.get(&ip).copied().unwrap_or(false);
                    let done = match (job.kind, how % 4) {
                        (JobKind::Claim, 0) if h.c.current(&ip, job.generation) => {
                            moves.push((now, ip, job.generation, job.epoch, repair));
                            Done::Moved { before: None }
                        }
                        (JobKind::Claim, 1) => Done::Cancelled,
                        (_, 2) => Done::Failed { mutated: how % 8 == 2 },
                        _ => Done::Located { found: Found::Unbound, here: how % 2 == 0 },
                    };
                    h.end(ip, done, now)?;
                }
                Op::Reload(what) => {
                    let all = ips();
                    configured = match what {
                        0 | 1 => all.clone(),
                        2 => vec![all[0]],
                        _ => all.clone(),
                    };
                    let changed: BTreeSet<IpAddr> =
                        if what == 1 { [all[1]].into_iter().collect() } else { BTreeSet::new() };
                    let mut d = Duties::new();
                    d.insert(g(), GroupDuties { failover_ips: configured.clone() });
                    h.drive(Input::Reconfigure {
                        timing: timing(),
                        duties: d,
                        ips: configured.iter().map(|ip| (*ip, g())).collect(),
                        changed,
                        policy: ClaimPolicy::default(),
                    }, now)?;
                }
                Op::Repair(which) => {
                    let ip = ips()[usize::from(which) % 2];
                    h.drive(Input::Repair(ip), now)?;
                }
                Op::Stop => h.drive(Input::Stop, now)?,
            }
            for (_, j) in &h.started[before..] {
                prop_assert!(configured.contains(&j.ip), "a job for an IP no longer configured");
                let exempt = h.c.claims().get(&j.ip).is_some_and(|s| {
                    s.repair
                        || matches!(
                            s.binding,
                            Some((Found::Unbound | Found::Service { service: None }, _, _))
                        )
                });
                repairs.insert(j.ip, exempt);
            }
        }
        // Every running job ends; then nothing needed is forgotten.
        let running: Vec<IpAddr> = h.running.keys().copied().collect();
        for ip in running {
            h.end(ip, Done::Failed { mutated: false }, now)?;
        }
        if !h.c.claims().stopping() {
            h.drive(Input::Tick, now)?;
            for (ip, s) in h.c.claims().ips() {
                if s.wants_claim() && !h.running.contains_key(ip) {
                    prop_assert!(h.c.claims().next_wakeup(now).is_some(), "a needed claim was forgotten");
                }
            }
        }
        for ip in ips() {
            let mine: Vec<_> = moves.iter().filter(|m| m.1 == ip).collect();
            for w in mine.windows(2) {
                if w[0].2 == w[1].2 && w[0].3 == w[1].3 && !w[1].4 {
                    prop_assert!(w[1].0 - w[0].0 >= hold, "moves {:?} closer than the hold-down", w);
                }
            }
        }
    }
}
