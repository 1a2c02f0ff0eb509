//! Many failover IPs on one group (issue 21): one failover, not one queue. The claims of a
//! failover run side by side, share their reads (one listing of the peer vMAC, one
//! read-back), keep the last-IP rule for all IPs at once, survive a 429 storm without a
//! burst after Retry-After, and one IP that fails does not hold up the others.
//!
//! The read-sharing and last-IP tests run on the in-memory OVH ([`FakeApi`]) on tokio's
//! paused clock; the 429 storm on the HTTP simulator with the real client over loopback;
//! the failing IP on two in-process daemons (the lab pair). Every wait has a timeout whose
//! message names the likely fault.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use carpd::carp::CarpState;
use carpd::control::{self, Reply, Request};
use carpd::devd::CarpEvent;
use carpd::ovh::failover::{
    ClaimError, ClaimOptions, ClaimResult, SharedReads, VmacTarget, claim_vmac_shared,
};
use carpd::ovh::plan::Found;
use carpd::ovh::policy::{RateLimit, RetryPolicy};
use carpd::ovh::{Client, ClientOptions, Credentials, FixedCredentials};
use carpd_testkit::join_all;
use carpd_testkit::ovh::fake::FakeApi;
use carpd_testkit::ovh::world::World;
use carpd_testkit::ovh::{Fault, FaultKind, OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
use carpd_testkit::pair::{Pair, PairOptions, SERVICE, group, vips};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// `n` failover IPs, 51.68.252.1 and on.
fn fips(n: u8) -> Vec<Ipv4Addr> {
    (1..=n).map(|i| Ipv4Addr::new(51, 68, 252, i)).collect()
}

fn target(ip: Ipv4Addr) -> VmacTarget {
    VmacTarget {
        ip,
        service: SN.into(),
        mac: OURS.into(),
        virtual_machine_name: "router-002".into(),
        allow_last_ip_release: false,
    }
}

fn peer_hint() -> Found {
    Found::Vmac {
        mac: PEER.into(),
        ips: 0,
    }
}

async fn limit<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result in {secs} s (a claim waiting for another, or a read nobody answers?)"))
}

/// The peer vMAC holds its router's own IP and the failover IPs (`permanent`), or only the
/// failover IPs.
fn world(ips: &[Ipv4Addr], permanent: bool, task: Duration) -> World {
    let mut w = World::new();
    w.add_vmac(SN, OURS, &[ip("178.32.70.110")]);
    let mut held = ips.to_vec();
    if permanent {
        held.push(ip("178.32.70.111"));
    }
    w.add_vmac(SN, PEER, &held);
    w.task_delay = task;
    w
}

/// Runs the claims of `ips` side by side, sharing their reads.
async fn claim_all<A: carpd::ovh::FailoverApi + Sync>(
    api: &A,
    ips: &[Ipv4Addr],
    shared: &SharedReads,
) -> Vec<Result<ClaimResult, ClaimError>> {
    let opts = ClaimOptions::default();
    let targets: Vec<VmacTarget> = ips.iter().map(|i| target(*i)).collect();
    let hint = peer_hint();
    let claims = targets.iter().map(|t| {
        let hint = &hint;
        async move {
            claim_vmac_shared(api, t, &opts, Some(hint), &|| true, shared)
                .await
                .map(|o| o.result)
                .map_err(|f| f.error)
        }
    });
    join_all(claims.collect()).await
}

/// Sixteen claims of one failover: one read of the peer vMAC serves every safety check, one
/// read of ours verifies every bind, the polls of all the claims share one read of a vMAC's
/// IP list a round (each task is read once, when its effect shows), and the binds run in
/// parallel (the last one is done within the two task times and the polling's few percent,
/// not sixteen times that).
#[tokio::test(start_paused = true)]
async fn sixteen_claims_share_one_listing_and_one_read_back() {
    let task = Duration::from_secs(2);
    let ips = fips(16);
    let api = FakeApi::new(world(&ips, true, task));
    let shared = SharedReads::new();
    let t0 = tokio::time::Instant::now();
    let results = limit("16 claims", 600, claim_all(&api, &ips, &shared)).await;
    let took = t0.elapsed();
    for (ip, r) in ips.iter().zip(&results) {
        assert!(matches!(r, Ok(ClaimResult::Claimed)), "{ip}: {r:?}");
    }
    let bound = api.world.lock().unwrap().vmac_ips(SN, OURS).unwrap();
    assert!(ips.iter().all(|i| bound.contains(i)), "{bound:?}");
    let calls = api.calls();
    let reads = |mac: &str| {
        calls
            .iter()
            .filter(|c| c.method == "GET" && c.what.contains(mac) && !c.what.contains("task"))
            .count()
    };
    let writes = calls.iter().filter(|c| c.method != "GET").count();
    assert_eq!(writes, 32, "a DELETE and a POST per IP");
    // The polls: one read of the vMAC a round serves all 16 claims, and each task is read
    // when its effect shows, plus once blind after a second while nothing is learned (the
    // release here: a task that failed never shows its effect). Before, each claim polled
    // its own task every round: about 20 task reads per IP on this cold start.
    let task_reads = calls
        .iter()
        .filter(|c| c.method == "GET" && c.what.starts_with("task"))
        .count();
    assert!(
        task_reads <= 3 * 16,
        "{task_reads} task reads for 32 steps: {calls:#?}"
    );
    // The safety read and the release polls' rounds (nothing learned: 100 ms apart, then
    // growing) on the peer; the bind polls' rounds (expecting the DELETE's time) and the one
    // read-back on ours: a constant, not a number per IP.
    let rounds = (2 * task).as_millis() as usize / 100;
    assert!(
        reads(PEER) <= 1 + rounds,
        "peer vMAC read {} times: {calls:#?}",
        reads(PEER)
    );
    assert!(
        reads(OURS) <= 6,
        "our vMAC read {} times: {calls:#?}",
        reads(OURS)
    );
    assert!(
        calls.len() <= 5 * 16 + 1 + rounds + 6,
        "{} requests for 16 IPs",
        calls.len()
    );
    // Parallel: nothing learned yet, so polling starts tight (10% overshoot at most), but
    // never one claim after another.
    assert!(
        took < (2 * task).mul_f64(1.3),
        "16 IPs bound and verified in {took:?}: claims ran one after another?"
    );
}

/// A vMAC holding only failover IPs keeps one of them, whatever order the parallel claims
/// run in: the last-IP rule counts every release in flight from that vMAC.
#[tokio::test(start_paused = true)]
async fn parallel_claims_never_release_a_vmacs_last_ip() {
    let ips = fips(4);
    let api = FakeApi::new(world(&ips, false, Duration::from_millis(500)));
    let shared = SharedReads::new();
    let results = limit("4 claims", 600, claim_all(&api, &ips, &shared)).await;
    let claimed = results
        .iter()
        .filter(|r| matches!(r, Ok(ClaimResult::Claimed)))
        .count();
    let refused: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Err(ClaimError::LastIp { mac, .. }) => Some(mac.clone()),
            _ => None,
        })
        .collect();
    assert_eq!((claimed, refused.len()), (3, 1), "{results:?}");
    assert_eq!(refused[0], PEER);
    let w = api.world.lock().unwrap();
    assert!(
        w.deleted_vmacs.is_empty(),
        "a vMAC was deleted with its last IP"
    );
    assert_eq!(w.vmac_ips(SN, PEER).unwrap().len(), 1);
}

fn storm_client(sim: &OvhSim, failover_per_minute: u32) -> Client {
    Client::new(
        sim.endpoint(),
        Arc::new(FixedCredentials(Credentials::classic(
            TEST_AK, TEST_AS, TEST_CK,
        ))),
        ClientOptions {
            timeout: Duration::from_secs(2),
            retry: RetryPolicy {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(50),
                max_attempts: 20,
                ..RetryPolicy::default()
            },
            request_deadline: Duration::from_secs(60),
            failover_rate: RateLimit::failover(failover_per_minute),
            ..ClientOptions::default()
        },
    )
    .unwrap()
}

/// A 429 storm in the middle of a 16-IP failover: every IP ends bound here (the peer vMAC
/// intact), nothing is sent while OVH asked to wait, and when the wait ends the claims do
/// not all rush out at once: requests leave one at a time, spaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_during_a_16_ip_failover_loses_no_ip_and_causes_no_burst() {
    let task = Duration::from_millis(200);
    let ips = fips(16);
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| *w = world(&ips, true, task));
    // 240 a minute: spaced 250 ms apart after a pause.
    let spacing = Duration::from_millis(250);
    let api = storm_client(&sim, 240);
    let shared = SharedReads::new();
    let storm = async {
        // The storm starts once the DELETEs are out: polls and POSTs meet it.
        limit("the first DELETE", 10, async {
            while !sim.requests().iter().any(|r| r.mutation) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        sim.inject(Fault::new(
            None,
            Some("/1.0/dedicated"),
            FaultKind::TooManyRequests(1),
            8,
        ));
    };
    let (results, ()) = limit("16 claims through a 429 storm", 120, async {
        tokio::join!(claim_all(&api, &ips, &shared), storm)
    })
    .await;
    for (ip, r) in ips.iter().zip(&results) {
        assert!(matches!(r, Ok(ClaimResult::Claimed)), "{ip}: {r:?}");
    }
    sim.with_world(|w| {
        let ours = w.vmac_ips(SN, OURS).unwrap();
        assert!(ips.iter().all(|i| ours.contains(i)), "{ours:?}");
        assert!(w.deleted_vmacs.is_empty());
    });
    let log = sim.requests();
    let limited: Vec<_> = log
        .iter()
        .filter(|r| r.status == 429)
        .map(|r| r.at)
        .collect();
    assert_eq!(limited.len(), 8, "the storm met the failover");
    // Nothing while OVH asked to wait (a request already on the wire when the 429 left may
    // arrive just after it).
    let slack = Duration::from_millis(100);
    for t in &limited {
        let inside = log
            .iter()
            .filter(|r| r.at > *t + slack && r.at + slack < *t + Duration::from_secs(1))
            .count();
        assert_eq!(inside, 0, "requests sent during a Retry-After pause");
    }
    // When the last pause ends: spaced, no burst of the waiting claims.
    let resume = *limited.iter().max().unwrap() + Duration::from_secs(1) - slack;
    let after: Vec<_> = log
        .iter()
        .filter(|r| r.at >= resume)
        .map(|r| r.at)
        .collect();
    assert!(after.len() > 8, "the failover went on after the storm");
    let first_second = after
        .iter()
        .filter(|a| **a < resume + Duration::from_secs(1))
        .count();
    let most = (Duration::from_secs(1).as_millis() / spacing.as_millis()) as usize + 2;
    assert!(
        first_second <= most,
        "{first_second} requests in the second after Retry-After (at most {most}): a burst"
    );
}

/// One IP's write refused (a 409) while the other claims' tasks run: before reading again,
/// its claim waits for the server's pending tasks (OVH refuses a write while a task on the
/// same IP runs), but not for the tasks of the failover's other IPs, which cannot be why it
/// was refused. A task nobody in the failover created (the operator adding an IP) is waited
/// for: the refused IP's second `DELETE` goes out after that task ends and before the other
/// IPs' tasks do. Refused again, the claim waits for every pending task (whether OVH also
/// refuses while another IP's task on the vMAC runs is not documented): its third `DELETE`
/// goes out after the other IPs' tasks ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_does_not_wait_for_the_other_ips_tasks() {
    let task = Duration::from_secs(1);
    let ips = fips(4);
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| *w = world(&ips, true, task));
    let refused = ips[3];
    sim.inject(Fault::new(
        Some("DELETE"),
        Some(&format!("/virtualAddress/{refused}")),
        FaultKind::Status(409),
        2,
    ));
    // Someone else's task on the server, shorter than the failover's.
    let foreign = Duration::from_millis(400);
    let t0 = std::time::Instant::now();
    sim.with_world(|w| {
        w.task_delay = foreign;
        w.add_ip(t0, SN, OURS, ip("178.32.70.200"), "other")
            .unwrap();
        w.task_delay = task;
    });
    let api = storm_client(&sim, 240);
    let shared = SharedReads::new();
    let opts = ClaimOptions {
        replan_backoff: carpd_testkit::ovh::quick_replans(),
        ..ClaimOptions::default()
    };
    let targets: Vec<VmacTarget> = ips.iter().map(|i| target(*i)).collect();
    let hint = peer_hint();
    let claims = targets.iter().map(|t| {
        let (hint, opts, shared, api) = (&hint, &opts, &shared, &api);
        async move {
            let t0 = std::time::Instant::now();
            let r = claim_vmac_shared(api, t, opts, Some(hint), &|| true, shared).await;
            (r, t0.elapsed())
        }
    });
    let out = limit("4 claims, one refused once", 30, join_all(claims.collect())).await;
    for (ip, (r, _)) in ips.iter().zip(&out) {
        assert!(
            matches!(r, Ok(o) if o.result == ClaimResult::Claimed),
            "{ip}: {r:?}"
        );
    }
    let (r, took) = &out[3];
    assert_eq!(r.as_ref().unwrap().replans, 2);
    let deletes = sim
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.target.ends_with(&refused.to_string()))
        .map(|r| (r.at.saturating_duration_since(t0), r.status))
        .collect::<Vec<_>>();
    let statuses: Vec<u16> = deletes.iter().map(|d| d.1).collect();
    assert_eq!(statuses, [409, 409, 200], "{deletes:?}");
    let at = deletes[1].0;
    assert!(
        at >= foreign,
        "the second DELETE went out {at:?} after the start, before the foreign task ended"
    );
    // Waiting for the other IPs' DELETE tasks (1 s) would have sent it after them.
    assert!(
        at < task,
        "the second DELETE went out {at:?} after the start: it waited for the other IPs' tasks"
    );
    let third = deletes[2].0;
    assert!(
        third >= task,
        "the third DELETE went out {third:?} after the start, before the other IPs' tasks ended"
    );
    // The second wait ends with the others' DELETE tasks; waiting for them the first time
    // too would make the second wait end with their POST tasks, a task time later.
    assert!(
        *took < task * 3 + task * 3 / 4,
        "the refused IP was bound {took:?} after the failover began (tasks of {task:?})"
    );
}

/// One IP whose claim is stuck (OVH never answers its `DELETE`) does not hold up the others:
/// two real daemons (in process), four IPs on one group, the stuck one first in line; the
/// three others reach the new MASTER while its claim is still waiting for OVH (the client's
/// timeout is 10 s: a queue behind it would wait that long), and `carpd status` says "3 of 4
/// IPs bound here" naming the stuck IP, in its release, as the slowest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_ip_does_not_hold_up_the_others() {
    let n = 4;
    let mut pair = Pair::start(PairOptions {
        task: Duration::from_millis(200),
        hold_down: Duration::from_secs(1),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        vault: false,
        rate: RateLimit::default(),
        ips: n,
    })
    .await
    .expect("pair");
    for r in &mut pair.routers {
        r.start().await.expect("daemon");
        r.set(CarpState::Backup, true).await.unwrap();
    }
    let ips = vips(n);
    let bad = ips[0];
    pair.sim.inject(Fault::new(
        Some("DELETE"),
        Some(&format!("/virtualAddress/{bad}")),
        FaultKind::Hang,
        1000,
    ));
    let win = &mut pair.routers[0];
    win.set(CarpState::Master, false).await.unwrap();
    let mac = win.mac;
    let t0 = std::time::Instant::now();
    win.devd
        .send_event(&CarpEvent::new(group(), CarpState::Master))
        .await
        .unwrap();
    let others: BTreeSet<Ipv4Addr> = ips.iter().copied().filter(|i| *i != bad).collect();
    limit("the three good IPs on the new MASTER", 30, async {
        loop {
            let here = pair.sim.with_world(|w| {
                others
                    .iter()
                    .filter(|i| w.holder(**i).is_some_and(|(_, m)| m == mac))
                    .count()
            });
            if here == others.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let hung = pair
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.target.contains(&bad.to_string()))
        .count();
    // Still its first DELETE, unanswered: the others did not wait for that claim to end
    // (its client times out after 10 s, then reads and tries again).
    assert_eq!(
        hung,
        1,
        "the good IPs were bound only after the stuck claim gave up ({:?} after MASTER)",
        t0.elapsed()
    );
    assert!(
        pair.sim.with_world(|w| w
            .vmac_ips(SERVICE, pair.routers[1].mac)
            .unwrap()
            .contains(&bad)),
        "the stuck IP left the peer's vMAC"
    );
    // `carpd status` says where the failover stands: 3 of 4 bound, the stuck IP the slowest,
    // inside its release (the DELETE that gets no answer).
    let sock = pair.routers[0].dir.join("carpd.sock");
    let view = limit("status with 3 of 4 bound", 10, async {
        loop {
            let path = sock.clone();
            let r = tokio::task::spawn_blocking(move || {
                control::request(&path, &Request::Status, Duration::from_secs(5))
            })
            .await
            .unwrap()
            .expect("status");
            let Reply::Status { daemon } = r else {
                panic!("not a status reply: {r:?}")
            };
            if daemon.failovers.first().is_some_and(|f| f.bound == 3) {
                break daemon;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let f = &view.failovers[0];
    assert_eq!((f.group.as_str(), f.ips, f.bound), ("2@vmx1", 4, 3));
    let slow = f.slowest.as_ref().expect("the stuck IP is named");
    assert_eq!(slow.ip, bad.to_string());
    assert!(slow.why.contains("release"), "{}", slow.why);
    assert!(slow.running_ms.is_some());
    let text = carpd::observe::daemon_view::to_text(&view);
    assert!(
        text.contains(&format!(
            "failover of 2@vmx1: 3 of 4 IPs bound here; slowest {bad}"
        )),
        "{text}"
    );
    pair.stop().await;
}

/// One IP's `DELETE` applied while its answer is lost, in the middle of a four-IP failover:
/// its task is nobody's known task (its id never came back), so the claim's wait for
/// pending tasks waits for it, then reads the IP gone from the peer and binds it. Never a
/// second `DELETE`, and the other IPs' tasks are not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_delete_reply_in_a_failover_is_waited_for_and_read_never_resent() {
    let task = Duration::from_millis(500);
    let ips = fips(4);
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| *w = world(&ips, true, task));
    let lost = ips[1];
    sim.inject(Fault::new(
        Some("DELETE"),
        Some(&format!("/virtualAddress/{lost}")),
        FaultKind::ApplyThenDrop,
        1,
    ));
    let api = storm_client(&sim, 240);
    let shared = SharedReads::new();
    let results = limit(
        "4 claims, one DELETE answer lost",
        30,
        claim_all(&api, &ips, &shared),
    )
    .await;
    for (ip, r) in ips.iter().zip(&results) {
        assert!(matches!(r, Ok(ClaimResult::Claimed)), "{ip}: {r:?}");
    }
    let deletes = sim
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE" && r.target.ends_with(&lost.to_string()))
        .count();
    assert_eq!(deletes, 1, "a DELETE whose answer was lost was sent again");
    sim.with_world(|w| {
        let ours = w.vmac_ips(SN, OURS).unwrap();
        assert!(ips.iter().all(|i| ours.contains(i)), "{ours:?}");
    });
}
