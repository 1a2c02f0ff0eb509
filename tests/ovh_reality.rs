//! The OVH client and claims against the simulator playing what the real API does beyond the
//! happy path (reference ovh-api.md §7, issue 15): writes applied whose answer is lost or
//! replaced by a 5xx, IAM refusals, tasks invisible for a while, hostile listings, and
//! failovers close together under the request budget. Over real loopback HTTP; every test
//! has a timeout whose message names the likely fault.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use carpd::ovh::failover::{
    ClaimError, ClaimOptions, ClaimOutcome, ClaimResult, VmacTarget, claim_vmac,
};
use carpd::ovh::plan::Found;
use carpd::ovh::policy::{PollPolicy, RateLimit, RetryPolicy};
use carpd::ovh::{Client, ClientOptions, Credentials, ErrorKind, FailoverApi, FixedCredentials};
use carpd_testkit::ovh::fake::FakeApi;
use carpd_testkit::ovh::world::World;
use carpd_testkit::ovh::{Fault, FaultKind, OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn vip() -> Ipv4Addr {
    ip("51.68.252.230")
}

async fn limit<T>(what: &str, secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result in {secs} s (a poll loop without deadline, or a blind retry loop?)"))
}

fn client_opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        ..ClientOptions::default()
    }
}

fn claim_opts() -> ClaimOptions {
    ClaimOptions {
        deadline: Duration::from_secs(10),
        poll: PollPolicy {
            min: Duration::from_millis(2),
            max: Duration::from_millis(50),
            fresh_404: Duration::from_millis(100),
            ..PollPolicy::default()
        },
        replan_backoff: carpd_testkit::ovh::quick_replans(),
        ..ClaimOptions::default()
    }
}

fn client(sim: &OvhSim) -> Client {
    Client::new(
        sim.endpoint(),
        Arc::new(FixedCredentials(Credentials::classic(
            TEST_AK, TEST_AS, TEST_CK,
        ))),
        client_opts(),
    )
    .unwrap()
}

fn target(mac: &str) -> VmacTarget {
    VmacTarget {
        ip: vip(),
        service: SN.into(),
        mac: mac.into(),
        virtual_machine_name: "router".into(),
        allow_last_ip_release: false,
    }
}

/// Both vMACs hold their router's own IP; the VIP is on the peer's.
async fn sim(task: Duration) -> OvhSim {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
        w.add_vmac(SN, PEER, &[ip("178.32.70.110"), vip()]);
        w.task_delay = task;
    });
    sim
}

fn holder(sim: &OvhSim) -> Option<String> {
    sim.with_world(|w| w.holder(vip()).map(|(_, m)| m))
}

fn master() -> bool {
    true
}

/// Requests the simulator received with this method whose path contains `frag`.
fn sent(sim: &OvhSim, method: &str, frag: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.method == method && r.target.contains(frag))
        .count()
}

/// A claim of the VIP for our vMAC (tasks of 50 ms) with `faults` injected on the virtual
/// address writes, each once (method, kind); the claim must succeed.
async fn claim_with_write_faults(faults: &[(&'static str, FaultKind)]) -> (OvhSim, ClaimOutcome) {
    let sim = sim(Duration::from_millis(50)).await;
    for (method, kind) in faults {
        sim.inject(Fault::new(
            Some(method),
            Some("/virtualAddress"),
            kind.clone(),
            1,
        ));
    }
    let c = client(&sim);
    let out = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master)
        .await
        .unwrap();
    (sim, out)
}

#[tokio::test]
async fn a_lost_post_reply_is_read_back_never_posted_twice() {
    limit("lost POST reply", 20, async {
        let (sim, out) = claim_with_write_faults(&[("POST", FaultKind::ApplyThenDrop)]).await;
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        assert_eq!(sent(&sim, "POST", "/virtualAddress"), 1, "a second POST");
        assert_eq!(sent(&sim, "DELETE", "/virtualAddress"), 1);
        // It waited for the pending task rather than writing.
        assert!(sent(&sim, "GET", "/task?status=") >= 1);
        assert!(sim.with_world(|w| w.deleted_vmacs.is_empty()));
    })
    .await
}

#[tokio::test]
async fn a_lost_delete_reply_is_read_back_never_deleted_twice() {
    limit("lost DELETE reply", 20, async {
        let (sim, out) = claim_with_write_faults(&[("DELETE", FaultKind::ApplyThenDrop)]).await;
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        assert_eq!(
            sent(&sim, "DELETE", "/virtualAddress"),
            1,
            "a second DELETE"
        );
        assert_eq!(sent(&sim, "POST", "/virtualAddress"), 1);
    })
    .await
}

#[tokio::test]
async fn a_5xx_after_the_write_was_applied_is_read_back() {
    limit("applied then 502", 20, async {
        let (sim, out) = claim_with_write_faults(&[
            ("POST", FaultKind::ApplyThenStatus(502)),
            ("DELETE", FaultKind::ApplyThenStatus(503)),
        ])
        .await;
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        assert_eq!(sent(&sim, "DELETE", "/virtualAddress"), 1);
        assert_eq!(sent(&sim, "POST", "/virtualAddress"), 1);
        assert_eq!(out.replans, 2);
    })
    .await
}

#[tokio::test]
async fn a_repeated_post_refused_as_already_there_is_success_once_read() {
    limit("403 already exists", 20, async {
        // The claim reads the IP unbound and POSTs; while the POST is on its way someone
        // (our lost write, in reality) binds it here: the POST meets OVH's 403 "A Virtual Mac
        // already exists", and the read agrees.
        let sim = Arc::new(sim(Duration::from_millis(20)).await);
        sim.with_world(|w| {
            w.add_vmac(SN, PEER, &[ip("178.32.70.110")]);
            w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
        });
        sim.inject(Fault::new(
            Some("POST"),
            Some("virtualAddress"),
            FaultKind::Latency(Duration::from_millis(300)),
            1,
        ));
        let binder = {
            let sim = sim.clone();
            tokio::spawn(async move {
                // Both vMACs answered (the claim's observation is out): bind it behind its back.
                while sent(&sim, "GET", "/virtualAddress") < 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                sim.with_world(|w| {
                    w.add_vmac(SN, OURS, &[ip("178.32.70.111"), vip()]);
                });
            })
        };
        let out = claim_vmac(&client(&sim), &target(OURS), &claim_opts(), None, &master)
            .await
            .unwrap();
        binder.await.unwrap();
        // Nothing of ours changed it: already bound.
        assert_eq!(out.result, ClaimResult::AlreadyBound);
        let posts: Vec<u16> = sim
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.status)
            .collect();
        assert_eq!(posts, [403]);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}

#[tokio::test]
async fn an_iam_refusal_is_final_and_names_the_missing_actions() {
    limit("IAM refusal", 20, async {
        let sim = sim(Duration::from_millis(20)).await;
        sim.inject(Fault::new(
            Some("DELETE"),
            None,
            FaultKind::IamDenied("dedicatedServer:apiovh:virtualMac/virtualAddress/delete".into()),
            10,
        ));
        let c = client(&sim);
        let f = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master)
            .await
            .unwrap_err();
        assert_eq!(
            sent(&sim, "DELETE", ""),
            1,
            "a permanent refusal was retried"
        );
        assert_eq!(f.outcome.replans, 0);
        let ClaimError::Api(e) = &f.error else {
            panic!("{f}")
        };
        assert_eq!(e.kind(), Some(ErrorKind::IamDenied));
        assert!(e.is_permanent());
        let text = f.to_string();
        assert!(
            text.contains("dedicatedServer:apiovh:virtualMac/virtualAddress/delete")
                && text.contains("dedicatedServer:apiovh:task/get")
                && text.contains("query id"),
            "{text}"
        );
        // Nothing changed.
        assert_eq!(holder(&sim).as_deref(), Some(PEER));
    })
    .await
}

#[tokio::test]
async fn not_granted_and_invalid_credentials_end_the_claim_at_once() {
    limit("NOT_GRANTED_CALL", 20, async {
        let sim = sim(Duration::from_millis(20)).await;
        // A consumer key without the DELETE rule.
        sim.with_config(|c| {
            c.consumer_keys = vec![carpd_testkit::ovh::auth::ConsumerKey {
                rules: vec![("GET".into(), "/*".into()), ("POST".into(), "/*".into())],
                ..carpd_testkit::ovh::auth::ConsumerKey::full(TEST_CK, TEST_AK)
            }]
        });
        let c = client(&sim);
        let f = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master)
            .await
            .unwrap_err();
        assert_eq!(sent(&sim, "DELETE", ""), 1);
        assert_eq!(f.outcome.replans, 0);
        assert!(
            f.to_string().contains("virtualMac/*/virtualAddress/*"),
            "{f}"
        );
    })
    .await
}

#[tokio::test]
async fn a_hostile_listing_never_reaches_a_request_path() {
    let junk = || -> Vec<String> {
        vec![
            "../../auth/credential".into(),
            "02:00:00:11:22:33/../../../me".into(),
            "02:00:00:aa:bb:cc?x=1".into(),
            "not a mac".into(),
        ]
    };
    let clean = |sim: &OvhSim| {
        for r in sim.requests() {
            assert!(
                !r.target.contains("..")
                    && !r.target.contains("auth/credential")
                    && !r.target.contains("not")
                    && !r.target.contains("x=1")
                    && !r.target.contains("/me"),
                "{}",
                r.target
            );
        }
    };
    // An unbound VIP is looked for on every listed vMAC, so the claim walks the whole
    // listing, junk included; only MACs may become request paths.
    limit("hostile listing, VIP unbound", 20, async {
        let sim = sim(Duration::from_millis(20)).await;
        sim.with_world(|w| {
            w.junk_vmacs = junk();
            w.add_vmac(SN, PEER, &[ip("178.32.70.110")]);
        });
        let c = client(&sim);
        let out = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master).await;
        clean(&sim);
        assert_eq!(out.unwrap().result, ClaimResult::Claimed);
    })
    .await;
    limit("hostile listing", 20, async {
        let sim = sim(Duration::from_millis(20)).await;
        sim.with_world(|w| {
            w.junk_vmacs = junk();
            // The VIP is the peer vMAC's only IP, listed twice.
            w.add_vmac(SN, PEER, &[vip()]);
            w.duplicate_ips = true;
        });
        let c = client(&sim);
        let f = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master)
            .await
            .unwrap_err();
        assert!(matches!(f.error, ClaimError::LastIp { .. }), "{f}");
        assert_eq!(sim.mutations(), 0);
        clean(&sim);
        assert!(sim.with_world(|w| w.deleted_vmacs.is_empty()));
    })
    .await
}

#[tokio::test]
async fn a_task_invisible_past_the_grace_is_inferred_from_the_binding() {
    limit("task 404", 20, async {
        let sim = sim(Duration::from_millis(50)).await;
        // Tasks answer 404 for far longer than the claim takes.
        sim.with_world(|w| w.fresh_task_404 = Duration::from_secs(60));
        let c = client(&sim);
        let t0 = Instant::now();
        let out = claim_vmac(&c, &target(OURS), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert_eq!(sent(&sim, "POST", ""), 1);
    })
    .await
}

/// The acceptance case on tokio's clock: tasks invisible for 60 s, done after 5 s; the claim
/// succeeds (the binding read tells) and never gives up early.
#[tokio::test(start_paused = true)]
async fn task_404_for_a_minute_then_done_the_claim_succeeds() {
    let mut w = World::new();
    w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
    w.add_vmac(SN, PEER, &[ip("178.32.70.110"), vip()]);
    w.task_delay = Duration::from_secs(5);
    w.fresh_task_404 = Duration::from_secs(60);
    let api = FakeApi::new(w);
    let out = claim_vmac(&api, &target(OURS), &ClaimOptions::default(), None, &master)
        .await
        .unwrap();
    assert_eq!(out.result, ClaimResult::Claimed);
    assert_eq!(api.mutations(), 2);
    // Done soon after the tasks, not after the 404s.
    assert!(out.elapsed < Duration::from_secs(30), "{:?}", out.elapsed);
    // Without the binding to read (only the task): waited out, never an early give-up.
    let mut w = World::new();
    w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
    w.add_vmac(SN, PEER, &[ip("178.32.70.110"), vip()]);
    w.task_delay = Duration::from_secs(5);
    w.fresh_task_404 = Duration::from_secs(60);
    let api = FakeApi::new(w);
    let opts = ClaimOptions {
        poll: PollPolicy {
            fresh_404: Duration::from_secs(3600),
            ..PollPolicy::default()
        },
        ..ClaimOptions::default()
    };
    let out = claim_vmac(&api, &target(OURS), &opts, None, &master)
        .await
        .unwrap();
    assert_eq!(out.result, ClaimResult::Claimed);
    assert!(out.elapsed >= Duration::from_secs(120), "{:?}", out.elapsed);
}

/// Three failovers five seconds apart through one client with the default request budget
/// (60 a minute) already spent by background checks: none waits behind the budget, and
/// once durations are learned a claim costs at most 8 requests. A claim that waited for
/// even one token would take 1.5 s more (40 a minute refill) than its two 0.8 s tasks, so
/// the bound here is 150 % of the task time: loose enough for a loaded test machine, tight
/// enough to catch any wait. The target of task time + 5 % is the benchmark's
/// (`cargo bench --bench failover -- series`), not a timed test's.
#[tokio::test]
async fn failovers_close_together_are_never_throttled() {
    limit("3 failovers", 40, async {
        let task = Duration::from_millis(800);
        let sim = sim(task).await;
        // Both vMACs keep another IP, so either can give the VIP up.
        sim.with_world(|w| w.add_vmac(SN, OURS, &[ip("178.32.70.111"), ip("178.32.70.112")]));
        let c = Client::new(
            sim.endpoint(),
            Arc::new(FixedCredentials(Credentials::classic(
                TEST_AK, TEST_AS, TEST_CK,
            ))),
            ClientOptions {
                rate: RateLimit::default(),
                ..client_opts()
            },
        )
        .unwrap();
        c.warm_up().await.unwrap();
        // Background checks spent the burst already.
        for _ in 0..20 {
            c.list_vmacs(SN).await.unwrap();
        }
        let opts = ClaimOptions {
            poll: PollPolicy::default(),
            ..claim_opts()
        };
        let start = Instant::now();
        let mut hint = Found::Vmac {
            mac: PEER.into(),
            ips: 2,
        };
        for (i, mac) in [OURS, PEER, OURS].into_iter().enumerate() {
            tokio::time::sleep_until((start + Duration::from_secs(5) * i as u32).into()).await;
            let out = claim_vmac(&c, &target(mac), &opts, Some(&hint), &master)
                .await
                .unwrap();
            assert_eq!(out.result, ClaimResult::Claimed);
            eprintln!(
                "failover {i}: {:?}, {} requests, steps {:?}",
                out.elapsed,
                out.requests,
                out.steps.iter().map(|s| s.task_time).collect::<Vec<_>>()
            );
            let bound = out.elapsed.as_secs_f64() / (2.0 * task.as_secs_f64());
            let allowed = 1.5;
            assert!(
                bound <= allowed,
                "failover {i}: {:?} for two tasks of {task:?} ({out:?})",
                out.elapsed
            );
            // Once a task duration is learned, about 8 requests: the safety read, the
            // DELETE and its polls, the POST and its polls, the read-back. The polls read
            // the vMAC (one read a round for all the claims of a failover, issue 21) and the
            // task once its effect shows: one request more per step for a lone claim. The
            // second failover's DELETE is polled closely across the first one's coarse
            // bracket (a few rounds, once: the time it learns is then precise).
            let most = [16, 14, 10][i];
            assert!(
                out.requests <= most,
                "failover {i}: {} requests",
                out.requests
            );
            hint = Found::Vmac {
                mac: mac.into(),
                ips: 2,
            };
        }
        // The budget is in debt: background checks yield.
        assert!(c.rate_headroom() < 8.0, "{}", c.rate_headroom());
    })
    .await
}

#[tokio::test]
async fn garbage_while_checking_an_unbound_hint_falls_back_to_a_full_read() {
    limit("garbage in the unbound check", 20, async {
        // The hint says unbound (stale: the VIP is on the peer), and the first read of the
        // peer's vMAC answers a proxy's error page with 200. The check gives up on that
        // answer (never a write on it), the full observation reads again, and the claim
        // releases and binds as usual: no refused write, no second DELETE.
        let sim = sim(Duration::from_millis(20)).await;
        sim.inject(Fault::new(
            Some("GET"),
            Some(&format!("/virtualMac/{PEER}/virtualAddress")),
            FaultKind::Garbage,
            1,
        ));
        let out = claim_vmac(
            &client(&sim),
            &target(OURS),
            &claim_opts(),
            Some(&Found::Unbound),
            &master,
        )
        .await
        .unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(out.replans, 0);
        let writes: Vec<(String, u16)> = sim
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| (r.method.clone(), r.status))
            .collect();
        assert_eq!(
            writes,
            [("DELETE".to_string(), 200), ("POST".to_string(), 200)]
        );
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}
