//! Tests of the claim scheduler: scenario tables on a hand-driven clock, and a property test
//! of its invariants over random runs.

use super::*;
use proptest::prelude::*;

const S: Duration = Duration::from_secs(1);

fn g() -> GroupId {
    "2@vmx1".parse().unwrap()
}

fn ip() -> IpAddr {
    "51.68.252.230".parse().unwrap()
}

fn here() -> Found {
    Found::Vmac {
        mac: "02:00:00:aa:bb:cc".into(),
        ips: 2,
    }
}

fn there() -> Found {
    Found::Vmac {
        mac: "02:00:00:11:22:33".into(),
        ips: 2,
    }
}

fn setup() -> (Claims, Instant) {
    let t0 = Instant::now();
    (Claims::new([(ip(), g())], ClaimPolicy::default(), t0), t0)
}

/// Takes the single due job, asserting its kind.
fn one(c: &mut Claims, now: Instant, kind: JobKind) -> Job {
    let jobs = c.due(now, true);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].kind, kind, "{jobs:?}");
    jobs.into_iter().next().unwrap()
}

#[test]
fn backup_only_checks_and_never_claims() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Backup), t0);
    let j = one(&mut c, t0, JobKind::Check);
    assert!(c.due(t0, true).is_empty(), "one job in flight per IP");
    let v = c.finished(
        &j,
        &Done::Located {
            found: there(),
            here: false,
        },
        t0,
    );
    assert_eq!(v, Verdict::Quiet, "elsewhere is right while BACKUP");
    assert!(c.due(t0 + 29 * S, true).is_empty());
    assert_eq!(c.next_wakeup(t0), Some(t0 + 30 * S));
    one(&mut c, t0 + 30 * S, JobKind::Check);
}

#[test]
fn becoming_master_claims_at_once_with_the_warm_hint() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Backup), t0);
    let j = one(&mut c, t0, JobKind::Check);
    c.finished(
        &j,
        &Done::Located {
            found: there(),
            here: false,
        },
        t0,
    );
    let t1 = t0 + 5 * S;
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t1, JobKind::Claim);
    assert_eq!(j.hint, Some(there()));
    assert!(c.current(&ip(), j.generation));
    c.finished(&j, &Done::Moved { before: None }, t1 + S);
    assert!(
        c.due(t1 + S, true).is_empty(),
        "claimed: nothing until the re-check"
    );
    assert_eq!(c.next_wakeup(t1 + S), Some(t1 + 31 * S));
    let j = one(&mut c, t1 + 31 * S, JobKind::Check);
    c.finished(
        &j,
        &Done::Located {
            found: here(),
            here: true,
        },
        t1 + 31 * S,
    );
    assert!(c.due(t1 + 32 * S, true).is_empty());
}

#[test]
fn already_bound_counts_as_claimed() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(
        &j,
        &Done::Located {
            found: here(),
            here: true,
        },
        t0,
    );
    assert_eq!(c.get(&ip()).unwrap().claimed, Some(j.generation));
    assert!(c.due(t0 + S, true).is_empty());
}

#[test]
fn drift_while_master_is_reported_and_held_down() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    // The peer (also MASTER: a split brain) takes it back; the re-check sees it.
    let t1 = t0 + 30 * S;
    let j = one(&mut c, t1, JobKind::Check);
    let v = c.finished(
        &j,
        &Done::Located {
            found: there(),
            here: false,
        },
        t1,
    );
    assert_eq!(
        v,
        Verdict::TakenWhileMaster {
            found: there(),
            reclaim_at: t0 + 60 * S
        }
    );
    assert!(c.due(t1, true).is_empty(), "held down");
    assert!(c.due(t0 + 59 * S, true).is_empty(), "held down");
    assert_eq!(c.next_wakeup(t1), Some(t0 + 60 * S));
    one(&mut c, t0 + 60 * S, JobKind::Claim);
}

#[test]
fn drift_long_after_the_last_move_is_repaired_at_once() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    let t1 = t0 + 300 * S;
    let j = one(&mut c, t1, JobKind::Check);
    let v = c.finished(
        &j,
        &Done::Located {
            found: Found::Unbound,
            here: false,
        },
        t1,
    );
    assert!(matches!(v, Verdict::TakenWhileMaster { reclaim_at, .. } if reclaim_at == t1));
    one(&mut c, t1, JobKind::Claim);
}

#[test]
fn a_local_change_lifts_the_hold_down() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    c.local(&g(), Some(CarpState::Backup), t0);
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0 + S, JobKind::Claim);
    assert_eq!(j.generation, 3);
}

#[test]
fn failures_back_off_and_a_new_term_starts_fresh() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let mut now = t0;
    for wait in [1, 2, 4, 8, 16, 30, 30] {
        let j = one(&mut c, now, JobKind::Claim);
        c.finished(&j, &Done::Failed { mutated: false }, now);
        assert!(
            c.due(now + Duration::from_secs(wait) - S / 2, true)
                .is_empty()
        );
        assert_eq!(c.next_wakeup(now), Some(now + Duration::from_secs(wait)));
        now += Duration::from_secs(wait);
    }
    let j = one(&mut c, now, JobKind::Claim);
    c.finished(&j, &Done::Failed { mutated: true }, now);
    c.local(&g(), Some(CarpState::Backup), t0);
    c.local(&g(), Some(CarpState::Master), t0);
    one(&mut c, now, JobKind::Claim);
}

#[test]
fn a_superseded_job_cannot_mark_the_new_term_claimed() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.local(&g(), Some(CarpState::Backup), t0);
    assert!(!c.current(&ip(), j.generation), "the fence must refuse now");
    c.local(&g(), Some(CarpState::Master), t0);
    assert!(
        !c.current(&ip(), j.generation),
        "a new term is another generation"
    );
    assert!(c.due(t0, true).is_empty(), "the old job is still in flight");
    c.finished(&j, &Done::Moved { before: None }, t0);
    assert_eq!(c.get(&ip()).unwrap().claimed, None);
    // Three changes at once is a flap: the new term claims once the state has held.
    assert!(c.due(t0, true).is_empty());
    let j2 = one(&mut c, t0 + SETTLE, JobKind::Claim);
    assert_eq!(j2.generation, j.generation + 2);
}

#[test]
fn a_cancel_the_core_did_not_expect_waits_for_the_next_reading() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Cancelled, t0);
    assert!(c.due(t0, true).is_empty(), "no spinning on refused claims");
    one(&mut c, t0 + S, JobKind::Claim);
    // A cancel caused by a change the core knows does not delay the new term.
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.local(&g(), Some(CarpState::Backup), t0);
    c.local(&g(), Some(CarpState::Master), t0);
    c.finished(&j, &Done::Cancelled, t0);
    one(&mut c, t0 + SETTLE, JobKind::Claim);
}

fn none() -> std::collections::BTreeSet<IpAddr> {
    std::collections::BTreeSet::new()
}

#[test]
fn reload_keeps_known_ips_and_resets_moved_ones() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    let other: IpAddr = "51.68.252.231".parse().unwrap();
    let cancel = c.reconfigure(
        [(ip(), g()), (other, g())],
        &none(),
        ClaimPolicy::default(),
        t0,
    );
    assert!(cancel.is_empty());
    assert_eq!(c.get(&ip()).unwrap().claimed, Some(j.generation));
    assert_eq!(c.get(&other).unwrap().local, None);
    c.reconfigure(
        [(ip(), "3@vmx1".parse().unwrap())],
        &none(),
        ClaimPolicy::default(),
        t0,
    );
    assert_eq!(c.ips().len(), 1);
    assert_eq!(c.get(&ip()).unwrap().claimed, None, "another group: fresh");
}

#[test]
fn reload_of_an_unchanged_ip_leaves_its_claim_running() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    let cancel = c.reconfigure([(ip(), g())], &none(), ClaimPolicy::default(), t0);
    assert!(cancel.is_empty(), "nothing to cancel: {cancel:?}");
    assert!(c.due(t0, true).is_empty(), "still one job in flight");
    c.finished(&j, &Done::Moved { before: None }, t0);
    assert_eq!(c.get(&ip()).unwrap().claimed, Some(j.generation));
    assert!(c.due(t0 + S, true).is_empty(), "claimed: nothing to do");
}

#[test]
fn reload_of_a_changed_ip_cancels_its_claim_and_waits_for_it() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    let changed = [ip()].into_iter().collect();
    let cancel = c.reconfigure([(ip(), g())], &changed, ClaimPolicy::default(), t0);
    assert_eq!(cancel, vec![j.id]);
    assert!(
        c.current(&ip(), j.generation),
        "the fence still holds for its open window"
    );
    assert!(
        c.due(t0, true).is_empty(),
        "never two writers: the old job runs"
    );
    // A second reload does not cancel it twice.
    assert!(
        c.reconfigure([(ip(), g())], &changed, ClaimPolicy::default(), t0)
            .is_empty()
    );
    // Its result concerns the old configuration: the new one claims afresh.
    c.finished(&j, &Done::Moved { before: None }, t0);
    let j2 = one(&mut c, t0, JobKind::Claim);
    assert_eq!(j2.epoch, j.epoch + 2);
}

#[test]
fn a_removed_ip_retires_after_its_job_and_cannot_get_a_second_writer() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    let cancel = c.reconfigure(std::iter::empty(), &none(), ClaimPolicy::default(), t0);
    assert_eq!(cancel, vec![j.id]);
    assert!(c.due(t0, true).is_empty());
    // Put back while the old job still runs: it waits for that job.
    c.reconfigure([(ip(), g())], &none(), ClaimPolicy::default(), t0);
    assert!(
        c.due(t0, true).is_empty(),
        "the retired job is still the writer"
    );
    c.finished(&j, &Done::Cancelled, t0);
    one(&mut c, t0, JobKind::Claim);
    // Removed with nothing running: gone at once.
    let (mut c, t0) = setup();
    c.reconfigure(std::iter::empty(), &none(), ClaimPolicy::default(), t0);
    assert!(c.ips().is_empty());
}

#[test]
fn stopping_cancels_what_runs_and_starts_nothing() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    assert_eq!(c.stop(), vec![j.id]);
    assert!(c.stop().is_empty(), "cancelled once");
    c.finished(&j, &Done::Failed { mutated: false }, t0);
    assert!(c.due(t0 + 60 * S, true).is_empty());
    assert_eq!(c.next_wakeup(t0), None);
}

#[test]
fn a_repair_claims_at_once_without_hint_or_hold_down() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    // Drift inside the hold-down would wait; a repair does not.
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0 + 30 * S, JobKind::Check);
    c.finished(
        &j,
        &Done::Located {
            found: there(),
            here: false,
        },
        t0 + 30 * S,
    );
    assert!(c.due(t0 + 31 * S, true).is_empty(), "held down");
    c.repair(&ip(), t0 + 31 * S);
    let j = one(&mut c, t0 + 31 * S, JobKind::Claim);
    assert_eq!(j.hint, None, "a repair observes from scratch");
    c.finished(&j, &Done::Moved { before: None }, t0 + 32 * S);
    assert!(!c.get(&ip()).unwrap().repair, "repaired");
}

#[derive(Clone, Debug)]
enum Op {
    Local(Option<CarpState>),
    Advance(u64),
    Finish(u8),
    /// A reload: 0 keeps the IP unchanged, 1 changes it, 2 removes it, 3 puts it back.
    Reload(u8),
    Repair,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop_oneof![
            Just(None),
            Just(Some(CarpState::Master)),
            Just(Some(CarpState::Backup)),
            Just(Some(CarpState::Init)),
        ]
        .prop_map(Op::Local),
        (0u64..120).prop_map(Op::Advance),
        any::<u8>().prop_map(Op::Finish),
        (0u8..4).prop_map(Op::Reload),
        Just(Op::Repair),
    ]
}

proptest! {
    /// Over any run: a claim is only started while MASTER; one job at a time; two moves in
    /// one generation are at least the hold-down apart; a MASTER that is not bound here has
    /// a claim in flight or a wake-up scheduled (nothing is forgotten).
    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
        let (mut c, t0) = setup();
        let hold = c.policy().hold_down;
        let mut now = t0;
        // The running job, and whether it was started as a repair (exempt from the
        // hold-down; a reload may reset the IP's state before it ends).
        let mut in_flight: Option<(Job, bool)> = None;
        // (when, generation, epoch, repair): moves of one generation and epoch, outside a
        // repair, keep the hold-down.
        let mut moves: Vec<(Instant, u64, u64, bool)> = Vec::new();
        let mut configured = true;
        for o in ops {
            match o {
                Op::Local(s) => c.local(&g(), s, now),
                Op::Advance(secs) => now += Duration::from_secs(secs),
                Op::Finish(pick) => {
                    if let Some((j, repair)) = in_flight.take() {
                        let done = match (j.kind, pick % 4) {
                            (JobKind::Claim, 0) if c.current(&ip(), j.generation) => {
                                moves.push((now, j.generation, j.epoch, repair));
                                Done::Moved { before: None }
                            }
                            (JobKind::Claim, 1) => Done::Cancelled,
                            (_, 2) => Done::Failed { mutated: pick % 8 == 2 },
                            (JobKind::Claim, 3) if pick % 8 == 3 => Done::Refused { mutated: pick % 16 == 3 },
                            (_, _) => Done::Located { found: there(), here: pick % 2 == 0 },
                        };
                        c.finished(&j, &done, now);
                    }
                }
                Op::Reload(what) => {
                    let changed: std::collections::BTreeSet<IpAddr> =
                        if what == 1 { [ip()].into_iter().collect() } else { none() };
                    configured = what != 2;
                    let ips: Vec<(IpAddr, GroupId)> =
                        if configured { vec![(ip(), g())] } else { vec![] };
                    let cancel = c.reconfigure(ips, &changed, ClaimPolicy::default(), now);
                    for id in cancel {
                        prop_assert_eq!(Some(id), in_flight.as_ref().map(|(j, _)| j.id),
                            "only the running job can be cancelled");
                    }
                }
                Op::Repair => c.repair(&ip(), now),
            }
            for j in c.due(now, true) {
                prop_assert!(in_flight.is_none(), "two jobs in flight");
                prop_assert!(configured, "a job for an IP the configuration removed");
                if j.kind == JobKind::Claim {
                    prop_assert!(c.current(&ip(), j.generation), "claim while not MASTER");
                }
                let repair = c.get(&ip()).is_some_and(|s| s.repair);
                in_flight = Some((j, repair));
            }
            if let Some(s) = c.get(&ip())
                && s.wants_claim() && in_flight.is_none() && !s.retired
            {
                prop_assert!(c.next_wakeup(now).is_some(), "a needed claim was forgotten");
            }
        }
        for w in moves.windows(2) {
            if w[0].1 == w[1].1 && w[0].2 == w[1].2 && !w[1].3 {
                prop_assert!(w[1].0 - w[0].0 >= hold, "moves {:?} closer than the hold-down", w);
            }
        }
    }
}

#[test]
fn a_flapping_group_claims_once_settled_and_the_first_change_at_once() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    // It flips back and forth while the first claim runs.
    let ms = Duration::from_millis(1);
    let mut now = t0;
    for i in 1..=10 {
        now = t0 + 10 * i * ms;
        let s = if i % 2 == 1 {
            CarpState::Backup
        } else {
            CarpState::Master
        };
        c.local(&g(), Some(s), now);
    }
    c.finished(&j, &Done::Cancelled, now);
    assert!(c.get(&ip()).unwrap().is_master());
    assert!(c.due(now, true).is_empty(), "flapping: wait");
    assert_eq!(c.next_wakeup(now), Some(now + SETTLE));
    assert!(c.due(now + SETTLE - ms, true).is_empty());
    one(&mut c, now + SETTLE, JobKind::Claim);
}

#[test]
fn an_unbound_ip_is_never_held_down() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    let j = one(&mut c, t0 + 30 * S, JobKind::Check);
    c.finished(
        &j,
        &Done::Located {
            found: Found::Unbound,
            here: false,
        },
        t0 + 30 * S,
    );
    one(&mut c, t0 + 30 * S, JobKind::Claim);
}

#[test]
fn losing_master_checks_soon_where_the_ip_went() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let j = one(&mut c, t0, JobKind::Claim);
    c.finished(&j, &Done::Moved { before: None }, t0);
    let t1 = t0 + 10 * S;
    c.local(&g(), Some(CarpState::Backup), t1);
    assert!(c.due(t1 + AFTER_LOSS - S / 2, true).is_empty());
    assert_eq!(c.next_wakeup(t1), Some(t1 + AFTER_LOSS));
    one(&mut c, t1 + AFTER_LOSS, JobKind::Check);
}

#[test]
fn checks_wait_when_the_budget_is_kept_for_claims_and_claims_never_do() {
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Backup), t0);
    assert!(c.due(t0, false).is_empty(), "the check is put off");
    assert_eq!(c.next_wakeup(t0), Some(t0 + CHECK_DEFER));
    one(&mut c, t0 + CHECK_DEFER, JobKind::Check);
    let (mut c, t0) = setup();
    c.local(&g(), Some(CarpState::Master), t0);
    let jobs = c.due(t0, false);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].kind, JobKind::Claim);
}

#[test]
fn a_refused_claim_waits_the_slow_period_across_terms_while_checks_go_on() {
    let (mut c, t0) = setup();
    let slow = c.policy().refused_retry;
    assert!(slow >= 60 * S, "minutes, not seconds");
    c.local(&g(), Some(CarpState::Master), t0);
    // Table: how a claim ends -> when the next claim may start.
    let table: &[(Done, Option<Duration>)] = &[
        (Done::Refused { mutated: false }, Some(slow)),
        (Done::Refused { mutated: true }, Some(slow)),
        (Done::Failed { mutated: false }, Some(S)),
    ];
    let mut now = t0;
    for (done, wait) in table {
        let j = one(&mut c, now, JobKind::Claim);
        c.finished(&j, done, now);
        let wait = wait.unwrap();
        // Checks (reads) go on at their cadence meanwhile; never a claim before `wait`.
        let mut t = now;
        while t < now + wait - S / 2 {
            for j in c.due(t, true) {
                assert_eq!(j.kind, JobKind::Check, "{done:?}: claim at {:?}", t - now);
                c.finished(
                    &j,
                    &Done::Located {
                        found: there(),
                        here: false,
                    },
                    t,
                );
            }
            t += S;
        }
        now += wait;
        assert!(
            c.next_wakeup(now - S / 2).is_some_and(|w| w <= now),
            "{done:?}"
        );
    }
    // A refusal survives a new term: flapping cannot turn it into a loop.
    let j = one(&mut c, now, JobKind::Claim);
    c.finished(&j, &Done::Refused { mutated: false }, now);
    c.local(&g(), Some(CarpState::Backup), now + S);
    c.local(&g(), Some(CarpState::Master), now + 2 * S);
    for j in c.due(now + 2 * S, true) {
        assert_eq!(j.kind, JobKind::Check);
        c.finished(
            &j,
            &Done::Located {
                found: there(),
                here: false,
            },
            now + 2 * S,
        );
    }
    for j in c.due(now + slow - S, true) {
        assert_eq!(j.kind, JobKind::Check);
        c.finished(
            &j,
            &Done::Located {
                found: there(),
                here: false,
            },
            now + slow - S,
        );
    }
    let j = one(&mut c, now + slow, JobKind::Claim);
    // Fixed: the claim goes through and the refusal is forgotten.
    c.finished(&j, &Done::Moved { before: None }, now + slow);
    assert_eq!(c.get(&ip()).unwrap().refused_until, None);
}
