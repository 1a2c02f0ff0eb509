//! The OVH client and failover operations against the OVH simulator, over real loopback HTTP;
//! and the golden signature vectors from python-ovh, from both the signing and the verifying
//! side. Every test has a timeout whose message names the likely fault.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carpd::ovh::credentials::{BoxFuture, CredentialError, CredentialSource};
use carpd::ovh::failover::{
    ClaimError, ClaimOptions, ClaimResult, MoveTarget, VmacTarget, claim_move, claim_vmac,
};
use carpd::ovh::plan::Found;
use carpd::ovh::policy::{PollPolicy, RateLimit, RetryPolicy};
use carpd::ovh::{
    Client, ClientOptions, Credentials, Endpoint, ErrorKind, FailoverApi, FixedCredentials, sign,
};
use carpd_testkit::ovh::auth::{self, Application, ConsumerKey};
use carpd_testkit::ovh::{
    Fault, FaultKind, OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK, TEST_CLIENT_ID,
    TEST_CLIENT_SECRET,
};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn vip() -> Ipv4Addr {
    ip("51.68.252.230")
}

async fn limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result in 20 s (a hung simulator connection, or a poll loop without deadline?)"))
}

fn client_opts() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(2),
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        rate: RateLimit {
            burst: 1000,
            per_minute: 60_000,
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
            ratio: 0.1,
            fresh_404: Duration::from_secs(2),
            ..PollPolicy::default()
        },
        replan_backoff: carpd_testkit::ovh::quick_replans(),
        ..ClaimOptions::default()
    }
}

fn client_with(sim: &OvhSim, creds: Credentials, opts: ClientOptions) -> Client {
    Client::new(sim.endpoint(), Arc::new(FixedCredentials(creds)), opts).unwrap()
}

fn client(sim: &OvhSim) -> Client {
    client_with(
        sim,
        Credentials::classic(TEST_AK, TEST_AS, TEST_CK),
        client_opts(),
    )
}

fn target() -> VmacTarget {
    VmacTarget {
        ip: vip(),
        service: SN.into(),
        mac: OURS.into(),
        virtual_machine_name: "router-003".into(),
        allow_last_ip_release: false,
    }
}

/// Our vMAC holds our own IP; the peer's holds its own and, if `on_peer`, the VIP.
async fn sim_with(on_peer: bool) -> OvhSim {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
        let mut peer = vec![ip("178.32.70.110")];
        if on_peer {
            peer.push(vip());
        }
        w.add_vmac(SN, PEER, &peer);
        w.task_delay = Duration::from_millis(20);
    });
    sim
}

fn holder(sim: &OvhSim) -> Option<String> {
    sim.with_world(|w| w.holder(vip()).map(|(_, m)| m))
}

fn master() -> bool {
    true
}

// --- golden vectors ---------------------------------------------------------------------

fn vectors() -> serde_json::Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/ovh-signature-vectors.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn golden_vectors_signing_side() {
    let v = vectors();
    let mut n = 0;
    for vec in v["vectors"].as_array().unwrap() {
        let i = &vec["inputs"];
        let s = |k: &str| i[k].as_str().unwrap().to_string();
        let ts: i64 = s("timestamp").parse().unwrap();
        let sig = sign::signature(
            &s("application_secret"),
            &s("consumer_key"),
            &s("method"),
            &s("full_url"),
            s("body").as_bytes(),
            ts,
        );
        assert_eq!(
            sig,
            vec["output"]["X-Ovh-Signature"].as_str().unwrap(),
            "{}",
            vec["label"]
        );
        // The URL the client builds from endpoint + path is the URL of the vector.
        let ep = Endpoint::parse(&s("endpoint")).unwrap();
        if !s("full_url").contains('?') {
            assert_eq!(ep.url(&s("path")), s("full_url"));
        }
        n += 1;
    }
    let up = &v["upstream_python_ovh_test_vectors"];
    let g = |k: &str| up[k].as_str().unwrap().to_string();
    for vec in up["vectors"].as_array().unwrap() {
        let s = |k: &str| vec[k].as_str().unwrap().to_string();
        let sig = sign::signature(
            &g("application_secret"),
            &g("consumer_key"),
            &s("method"),
            &s("full_url"),
            s("body").as_bytes(),
            s("timestamp").parse().unwrap(),
        );
        assert_eq!(
            sig,
            s("X-Ovh-Signature"),
            "{} {}",
            s("method"),
            s("full_url")
        );
        n += 1;
    }
    assert_eq!(n, 13, "every vector is checked");
}

#[test]
fn golden_bodies_are_encoded_like_python_ovh() {
    #[derive(serde::Serialize)]
    struct Add {
        #[serde(rename = "ipAddress")]
        ip: &'static str,
        #[serde(rename = "virtualMachineName")]
        vm: &'static str,
    }
    let v = vectors();
    let body = v["vectors"][1]["inputs"]["body"].as_str().unwrap();
    assert_eq!(
        sign::to_body(&Add {
            ip: "51.68.252.230",
            vm: "fw-b"
        }),
        body.as_bytes()
    );
}

#[test]
fn golden_vectors_verifying_side() {
    let v = vectors();
    for vec in v["vectors"].as_array().unwrap() {
        let i = &vec["inputs"];
        let s = |k: &str| i[k].as_str().unwrap().to_string();
        let apps = [Application {
            key: s("application_key"),
            secret: s("application_secret"),
        }];
        let cks = [ConsumerKey::full(&s("consumer_key"), &s("application_key"))];
        let headers = vec["output"]["headers_sent"].clone();
        let header = |name: &str| {
            headers
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str().unwrap().to_string())
        };
        let url = s("full_url");
        let path = s("path");
        let body = s("body");
        let method = s("method");
        let ts: i64 = s("timestamp").parse().unwrap();
        let req = |body: &str, method: &str| {
            let r = auth::Request {
                method,
                full_url: &url,
                path: &path,
                body: body.as_bytes(),
                header: &header,
            };
            auth::check_classic(&r, &apps, &cks, ts, 60)
        };
        assert_eq!(req(&body, &method), Ok(()), "{}", vec["label"]);
        // An altered body: rejected (GET and DELETE are verified with an empty body, so a
        // client that signs a DELETE body fails; see the HTTP test below).
        let e = req(&format!("{body} "), &method);
        if method == "GET" || method == "DELETE" {
            assert!(e.is_ok());
        } else {
            assert_eq!(e.unwrap_err().code, "INVALID_SIGNATURE", "{}", vec["label"]);
        }
        // Stale or future timestamps: rejected.
        let r = auth::Request {
            method: &method,
            full_url: &url,
            path: &path,
            body: body.as_bytes(),
            header: &header,
        };
        assert_eq!(
            auth::check_classic(&r, &apps, &cks, ts + 61, 60)
                .unwrap_err()
                .code,
            "QUERY_TIME_OUT"
        );
        assert_eq!(
            auth::check_classic(&r, &apps, &cks, ts - 61, 60)
                .unwrap_err()
                .code,
            "QUERY_TIME_OUT"
        );
        // Wrong secret.
        let wrong = [Application {
            key: s("application_key"),
            secret: "x".into(),
        }];
        assert_eq!(
            auth::check_classic(&r, &wrong, &cks, ts, 60)
                .unwrap_err()
                .code,
            "INVALID_SIGNATURE"
        );
    }
}

// --- the simulator's authentication over HTTP ------------------------------------------

#[tokio::test]
async fn simulator_rejects_wrong_secret_unknown_keys_and_names_the_query_id() {
    limit("auth", async {
        let sim = sim_with(true).await;
        let bad = client_with(
            &sim,
            Credentials::classic(TEST_AK, "wrong-secret-value", TEST_CK),
            client_opts(),
        );
        let e = bad.list_vmacs(SN).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::InvalidSignature));
        let a = e.api().unwrap();
        assert_eq!(a.status, 400);
        assert!(a.query_id.as_deref().unwrap().starts_with("SIM.ext-1."));
        let msg = e.to_string();
        assert!(
            msg.contains("query id SIM.ext-1.") && msg.contains("virtualMac"),
            "{msg}"
        );
        assert!(
            !msg.contains("wrong-secret-value") && !msg.contains(TEST_CK),
            "{msg}"
        );

        let e = client_with(
            &sim,
            Credentials::classic("unknownAK", TEST_AS, TEST_CK),
            client_opts(),
        )
        .list_vmacs(SN)
        .await
        .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::InvalidKey));
        let e = client_with(
            &sim,
            Credentials::classic(TEST_AK, TEST_AS, "unknownCK"),
            client_opts(),
        )
        .list_vmacs(SN)
        .await
        .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::InvalidCredential));
    })
    .await
}

/// Sends a hand-signed request, as a buggy client would.
async fn raw(
    sim: &OvhSim,
    method: &str,
    path: &str,
    body: &str,
    sign_body: &str,
    ts: i64,
) -> (u16, String) {
    let url = format!("{}{path}", sim.base_url());
    let sig = sign::signature(TEST_AS, TEST_CK, method, &url, sign_body.as_bytes(), ts);
    // carpd's reqwest has no crypto provider of its own (rustls on ring, installed by carpd).
    carpd::remote::install_ring_provider();
    let r = reqwest::Client::new()
        .request(method.parse().unwrap(), &url)
        .header("X-Ovh-Application", TEST_AK)
        .header("X-Ovh-Consumer", TEST_CK)
        .header("X-Ovh-Timestamp", ts.to_string())
        .header("X-Ovh-Signature", sig)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn simulator_rejects_stale_timestamps_delete_bodies_and_missing_headers() {
    limit("raw requests", async {
        let sim = sim_with(true).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let list = format!("/dedicated/server/{SN}/virtualMac");
        assert_eq!(raw(&sim, "GET", &list, "", "", now).await.0, 200);
        let (s, b) = raw(&sim, "GET", &list, "", "", now - 3600).await;
        assert_eq!(s, 400);
        assert!(b.contains("QUERY_TIME_OUT"), "{b}");
        let (s, _) = raw(&sim, "GET", &list, "", "", now + 3600).await;
        assert_eq!(s, 400);
        // DELETE with a body, signed with it: OVH verifies DELETE with an empty body.
        let del = format!("/dedicated/server/{SN}/virtualMac/{PEER}/virtualAddress/51.68.252.230");
        let (s, b) = raw(&sim, "DELETE", &del, "{}", "{}", now).await;
        assert_eq!((s, b.contains("INVALID_SIGNATURE")), (400, true), "{b}");
        // An altered body.
        let post = format!("/dedicated/server/{SN}/virtualMac/{OURS}/virtualAddress");
        let (s, _) = raw(
            &sim,
            "POST",
            &post,
            r#"{"ipAddress":"1.2.3.4","virtualMachineName":"x"}"#,
            r#"{"ipAddress":"1.2.3.5","virtualMachineName":"x"}"#,
            now,
        )
        .await;
        assert_eq!(s, 400);
        assert_eq!(sim.mutations(), 0);
        // No headers at all.
        let r = reqwest::get(format!("{}{list}", sim.base_url()))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key("X-Ovh-QueryID"));
    })
    .await
}

#[tokio::test]
async fn not_granted_names_the_access_rule_to_add() {
    limit("rights", async {
        let sim = sim_with(true).await;
        sim.with_config(|c| {
            c.consumer_keys[0].rules = vec![("GET".into(), format!("/dedicated/server/{SN}/*"))];
        });
        let c = client(&sim);
        assert!(c.list_vmacs(SN).await.is_ok());
        let e = c.remove_vmac_ip(SN, PEER, vip()).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotGranted));
        let m = e.to_string();
        assert!(
            m.contains(&format!(
                "DELETE /dedicated/server/{SN}/virtualMac/*/virtualAddress/*"
            )),
            "{m}"
        );
    })
    .await
}

// --- claims by virtual MAC -------------------------------------------------------------

#[tokio::test]
async fn claim_from_the_peer_then_reclaim_does_nothing() {
    limit("claim from peer", async {
        let sim = sim_with(true).await;
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(
            out.found,
            Some(Found::Vmac {
                mac: PEER.into(),
                ips: 2
            })
        );
        assert_eq!(out.steps.len(), 2);
        assert!(out.steps[0].action.starts_with("DELETE"));
        assert!(out.steps[1].action.starts_with("POST"));
        let outage = out.outage.expect("an outage window is measured");
        assert!(
            outage >= Duration::from_millis(20),
            "{outage:?} covers the POST task"
        );
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        assert_eq!(sim.mutations(), 2);

        sim.clear_requests();
        let again = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(again.result, ClaimResult::AlreadyBound);
        assert!(again.steps.is_empty());
        assert_eq!(sim.mutations(), 0);
    })
    .await
}

#[tokio::test]
async fn refuses_to_empty_a_vmac_unless_forced() {
    limit("last IP", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        sim.with_world(|w| {
            w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
            w.add_vmac(SN, PEER, &[vip()]);
        });
        let c = client(&sim);
        let f = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap_err();
        assert!(matches!(f.error, ClaimError::LastIp { .. }), "{f}");
        let m = f.to_string();
        assert!(
            m.contains("only IP") && m.contains("--force") && m.contains(PEER),
            "{m}"
        );
        assert_eq!(sim.mutations(), 0);

        let forced = ClaimOptions {
            force: true,
            ..claim_opts()
        };
        let out = claim_vmac(&c, &target(), &forced, None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
        let gone = sim.with_world(|w| w.list_vmacs(SN).unwrap());
        assert_eq!(gone, vec![OURS.to_string()], "the emptied vMAC was deleted");
    })
    .await
}

#[tokio::test]
async fn unbound_ip_is_posted_only_and_dry_run_changes_nothing() {
    limit("unbound", async {
        let sim = sim_with(false).await;
        let c = client(&sim);
        let dry = ClaimOptions {
            dry_run: true,
            ..claim_opts()
        };
        let out = claim_vmac(&c, &target(), &dry, None, &master)
            .await
            .unwrap();
        assert!(matches!(out.result, ClaimResult::DryRun { ref would } if would.len() == 1));
        assert_eq!(sim.mutations(), 0);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.found, Some(Found::Unbound));
        assert_eq!(out.steps.len(), 1);
        assert_eq!(out.outage, None);
        assert_eq!(sim.mutations(), 1);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}

#[tokio::test]
async fn a_pending_task_on_the_ip_is_waited_for_then_replanned() {
    limit("pending task", async {
        let sim = sim_with(true).await;
        // Someone else already started removing the VIP from the peer's vMAC.
        sim.with_world(|w| {
            w.task_delay = Duration::from_millis(150);
            w.remove_ip(std::time::Instant::now(), SN, PEER, vip())
                .unwrap();
            w.task_delay = Duration::from_millis(10);
        });
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        // One refusal, then the wait for the pending task: the read after it finds the IP
        // unbound (without the wait, the read finds it still on the peer, and the DELETE is
        // refused again).
        assert_eq!(out.replans, 1, "{out:?}");
        let refused = sim
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && !(200..300).contains(&r.status))
            .count();
        assert_eq!(refused, 1);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}

#[tokio::test]
async fn a_failed_task_ends_the_claim_at_once() {
    limit("task failure", async {
        let sim = sim_with(true).await;
        sim.with_world(|w| w.task_delay = Duration::from_millis(5));
        sim.fail_next_tasks(&["ovhError"]);
        let c = client(&sim);
        let f = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap_err();
        assert!(
            matches!(&f.error, ClaimError::TaskFailed { status, .. } if status == "ovhError"),
            "{f}"
        );
        assert!(
            f.outcome.elapsed < Duration::from_secs(2),
            "failure ends polling at once"
        );
        assert_eq!(holder(&sim).as_deref(), Some(PEER), "nothing changed");
    })
    .await
}

#[tokio::test]
async fn fresh_task_404_is_retried() {
    limit("fresh task 404", async {
        let sim = sim_with(true).await;
        sim.with_world(|w| w.fresh_task_404 = Duration::from_millis(60));
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        let task_404s = sim
            .requests()
            .iter()
            .filter(|r| r.target.contains("/task/") && r.status == 404)
            .count();
        assert!(task_404s > 0, "the simulator hid the fresh task");
    })
    .await
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retried_within_the_deadline() {
    limit("5xx / 429", async {
        let sim = sim_with(true).await;
        sim.inject(Fault::new(
            Some("GET"),
            Some("/virtualMac"),
            FaultKind::Status(503),
            2,
        ));
        sim.inject(Fault::new(
            Some("POST"),
            Some("/virtualAddress"),
            FaultKind::Status(429),
            1,
        ));
        sim.inject(Fault::new(Some("DELETE"), None, FaultKind::Status(502), 1));
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        // The 502 on DELETE is ambiguous for a mutation: re-plan, not blind retry.
        assert_eq!(out.replans, 1);
        let log = sim.requests();
        let posts: Vec<u16> = log
            .iter()
            .filter(|r| r.method == "POST")
            .map(|r| r.status)
            .collect();
        assert_eq!(
            posts,
            vec![429, 200],
            "a 429 mutation is retried by the client"
        );
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}

/// The retries of one logical request are bounded twice: by the attempts (6 by default) and
/// by `request_deadline`. A server answering 503 to everything gets exactly 6 tries, and with
/// attempts to spare, a clear error at the 1 s deadline, not retries without end (the
/// resource-bounds row "OVH retries"; the test above only shows that retries happen).
#[tokio::test]
async fn retries_end_after_the_attempts_or_at_the_request_deadline() {
    limit("503 forever", async {
        let fives = |sim: &OvhSim| {
            sim.requests()
                .iter()
                .filter(|r| r.method == "GET" && r.status == 503)
                .count()
        };
        let forever = || {
            Fault::new(
                Some("GET"),
                Some("/virtualMac"),
                FaultKind::Status(503),
                u32::MAX,
            )
        };
        // The attempts: 6, each 5..50 ms apart, well inside the 30 s deadline.
        let sim = sim_with(true).await;
        sim.inject(forever());
        let c = client(&sim);
        let e = c.list_vmacs(SN).await.unwrap_err();
        assert!(e.to_string().contains("503"), "{e}");
        assert_eq!(fives(&sim), 6);

        // The deadline: attempts to spare, 1 s to use them.
        let sim = sim_with(true).await;
        sim.inject(forever());
        let mut opts = client_opts();
        opts.request_deadline = Duration::from_secs(1);
        opts.retry.max_attempts = 10_000;
        let c = client_with(&sim, Credentials::classic(TEST_AK, TEST_AS, TEST_CK), opts);
        let start = std::time::Instant::now();
        let e = c.list_vmacs(SN).await.unwrap_err();
        let took = start.elapsed();
        assert!(e.to_string().contains("503"), "{e}");
        assert!(took < Duration::from_secs(3), "gave up after {took:?}");
        // At most 50 ms apart: more than the 6 attempts of the default policy were made.
        assert!(fives(&sim) > 6, "{} tries", fives(&sim));
    })
    .await
}

#[tokio::test]
async fn a_retry_after_is_waited_for_before_the_retry() {
    limit("429 with Retry-After", async {
        let sim = sim_with(true).await;
        // The client's own backoff is 5..50 ms: only the header makes it wait a second.
        sim.inject(Fault::new(
            Some("GET"),
            Some("/virtualMac"),
            FaultKind::TooManyRequests(1),
            1,
        ));
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        let log = sim.requests();
        let refused = log
            .iter()
            .position(|r| r.status == 429)
            .expect("the simulator answered 429");
        let retry = &log[refused + 1..]
            .iter()
            .find(|r| r.method == log[refused].method && r.target == log[refused].target)
            .expect("the refused request was retried");
        let waited = retry.at.duration_since(log[refused].at);
        assert!(
            waited >= Duration::from_secs(1),
            "retried {waited:?} after a 429 saying Retry-After: 1"
        );
    })
    .await
}

#[tokio::test]
async fn hung_and_dropped_connections_are_retried() {
    limit("hang / drop", async {
        let sim = sim_with(true).await;
        sim.inject(Fault::new(
            Some("GET"),
            Some("/virtualMac"),
            FaultKind::Hang,
            1,
        ));
        sim.inject(Fault::new(
            Some("GET"),
            Some("/virtualAddress"),
            FaultKind::Drop,
            1,
        ));
        let opts = ClientOptions {
            timeout: Duration::from_millis(300),
            ..client_opts()
        };
        let c = client_with(&sim, Credentials::classic(TEST_AK, TEST_AS, TEST_CK), opts);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
    })
    .await
}

#[tokio::test]
async fn the_deadline_bounds_a_slow_task() {
    limit("deadline", async {
        let sim = sim_with(true).await;
        sim.with_world(|w| w.task_delay = Duration::from_secs(30));
        let c = client(&sim);
        let opts = ClaimOptions {
            deadline: Duration::from_millis(400),
            ..claim_opts()
        };
        let f = claim_vmac(&c, &target(), &opts, None, &master)
            .await
            .unwrap_err();
        assert!(matches!(f.error, ClaimError::Deadline { .. }), "{f}");
        assert!(f.outcome.elapsed < Duration::from_secs(2));
        assert!(f.to_string().contains("51.68.252.230"));
    })
    .await
}

#[tokio::test]
async fn clock_skew_is_resynced_and_the_request_retried_once() {
    limit("clock skew", async {
        let sim = sim_with(true).await;
        let c = client(&sim);
        c.warm_up().await.unwrap();
        // The server's clock jumps: our cached delta is now 10 minutes off.
        sim.with_config(|cfg| cfg.clock_offset = 600);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        let log = sim.requests();
        let times = log
            .iter()
            .filter(|r| r.target.ends_with("/auth/time"))
            .count();
        assert_eq!(times, 2, "one sync at warm-up, one after QUERY_TIME_OUT");
        assert_eq!(log.iter().filter(|r| r.status == 400).count(), 1);
    })
    .await
}

#[tokio::test]
async fn cancellation_before_a_mutating_step() {
    limit("cancellation", async {
        let sim = sim_with(true).await;
        let c = client(&sim);
        let never = || false;
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &never).await.unwrap();
        assert!(matches!(out.result, ClaimResult::Cancelled { ref before } if before.starts_with("DELETE")));
        assert_eq!(sim.mutations(), 0);

        // BACKUP arrives between the DELETE and the POST.
        let calls = AtomicUsize::new(0);
        let once = || calls.fetch_add(1, Ordering::SeqCst) == 0;
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &once).await.unwrap();
        assert!(matches!(out.result, ClaimResult::Cancelled { ref before } if before.starts_with("POST")), "{out:?}");
        assert_eq!(out.steps.len(), 1);
        assert_eq!(sim.mutations(), 1);
        assert_eq!(holder(&sim), None, "the new MASTER will POST it on its own vMAC");
    })
    .await
}

#[tokio::test]
async fn a_refused_post_rereads_and_replans() {
    limit("4xx on POST", async {
        let sim = sim_with(false).await;
        sim.inject(Fault::new(Some("POST"), None, FaultKind::Status(400), 1));
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(out.replans, 1);
        assert_eq!(holder(&sim).as_deref(), Some(OURS));
    })
    .await
}

#[tokio::test]
async fn a_stale_hint_costs_a_read_never_a_wrong_delete() {
    limit("stale hint", async {
        let sim = sim_with(false).await;
        let c = client(&sim);
        // The cache says the IP is on the peer; it is actually unbound.
        let hint = Found::Vmac {
            mac: PEER.into(),
            ips: 2,
        };
        let out = claim_vmac(&c, &target(), &claim_opts(), Some(&hint), &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert!(sim.requests().iter().all(|r| r.method != "DELETE"));
        // A hint "unbound" while it is on the peer (seen while the other router's failover
        // was half done): checked before the POST, so nothing is refused and nothing
        // re-planned: the IP is released from the peer, then bound here.
        let sim = sim_with(true).await;
        let c = client(&sim);
        let out = claim_vmac(&c, &target(), &claim_opts(), Some(&Found::Unbound), &master)
            .await
            .unwrap();
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
    })
    .await
}

/// A credential source that hands out the revoked key first, then the rotated one.
struct Rotating {
    loads: AtomicUsize,
    keys: Vec<&'static str>,
}

impl CredentialSource for Rotating {
    fn load(&self) -> BoxFuture<'_, Result<Credentials, CredentialError>> {
        let n = self.loads.fetch_add(1, Ordering::SeqCst);
        let ck = self.keys[n.min(self.keys.len() - 1)];
        Box::pin(async move { Ok(Credentials::classic(TEST_AK, TEST_AS, ck)) })
    }
    fn describe(&self) -> String {
        "test rotation".into()
    }
}

#[tokio::test]
async fn revoked_credentials_are_reread_once() {
    limit("revoked credentials", async {
        let sim = sim_with(true).await;
        sim.with_config(|c| {
            let mut old = ConsumerKey::full("revokedCK", TEST_AK);
            old.revoked = true;
            c.consumer_keys.push(old);
        });
        let rotating = Arc::new(Rotating {
            loads: AtomicUsize::new(0),
            keys: vec!["revokedCK", TEST_CK],
        });
        let c = Client::new(sim.endpoint(), rotating.clone(), client_opts()).unwrap();
        assert!(c.list_vmacs(SN).await.is_ok());
        assert_eq!(rotating.loads.load(Ordering::SeqCst), 2);

        let stuck = Arc::new(Rotating {
            loads: AtomicUsize::new(0),
            keys: vec!["revokedCK"],
        });
        let c = Client::new(sim.endpoint(), stuck.clone(), client_opts()).unwrap();
        let e = c.list_vmacs(SN).await.unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::InvalidCredential));
        assert_eq!(
            stuck.loads.load(Ordering::SeqCst),
            2,
            "re-read once, then give up"
        );
        assert!(
            e.to_string().contains("create and validate a new one"),
            "{e}"
        );
    })
    .await
}

// --- IP move and OAuth2 ----------------------------------------------------------------

#[tokio::test]
async fn ip_move_mode() {
    limit("ip move", async {
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        let block: ipnet::IpNet = "51.68.252.230/32".parse().unwrap();
        sim.with_world(|w| {
            w.add_server("ns-a.eu");
            w.add_server("ns-b.eu");
            w.add_block(block, Some("ns-a.eu"));
            w.move_delay = Duration::from_millis(30);
        });
        let c = client(&sim);
        let t = MoveTarget {
            block,
            service: "ns-b.eu".into(),
        };
        let out = claim_move(&c, &t, &claim_opts(), &master).await.unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        assert_eq!(
            out.found,
            Some(Found::Service {
                service: Some("ns-a.eu".into())
            })
        );
        assert!(out.steps[0].task_time >= Duration::from_millis(30));
        assert!(
            sim.requests()
                .iter()
                .any(|r| r.target.contains("/ip/51.68.252.230%2F32/move"))
        );
        let again = claim_move(&c, &t, &claim_opts(), &master).await.unwrap();
        assert_eq!(again.result, ClaimResult::AlreadyBound);
        assert_eq!(sim.mutations(), 1);
    })
    .await
}

#[tokio::test]
async fn oauth2_service_account() {
    limit("oauth2", async {
        let sim = sim_with(true).await;
        let c = client_with(
            &sim,
            Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
            client_opts(),
        );
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        // No timestamp in OAuth2 requests: the server's time is never asked for, and the
        // daemon's readiness is told the clock does not matter (`clock_needed`).
        assert_eq!(c.signs_with_time(), Some(false));
        assert!(
            !sim.requests()
                .iter()
                .any(|r| r.target.contains("/auth/time")),
            "an OAuth2 client synced the clock"
        );
        let tokens = sim
            .requests()
            .iter()
            .filter(|r| r.target == "/auth/oauth2/token")
            .count();
        assert_eq!(tokens, 1, "the token is cached");
        // An expired token: the 401 fetches a new one and the request goes through.
        sim.expire_tokens();
        assert!(c.list_vmacs(SN).await.is_ok());
        let tokens = sim
            .requests()
            .iter()
            .filter(|r| r.target == "/auth/oauth2/token")
            .count();
        assert_eq!(tokens, 2);
        let bad = client_with(
            &sim,
            Credentials::oauth2(TEST_CLIENT_ID, "nope"),
            client_opts(),
        );
        let e = bad.list_vmacs(SN).await.unwrap_err();
        assert!(e.to_string().contains("client_id/client_secret"), "{e}");
    })
    .await
}

// --- secrets ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn secrets_never_appear_in_errors_debug_or_logs() {
    let cap = Capture::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut texts = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let sim = sim_with(true).await;
            sim.inject(Fault::new(Some("GET"), None, FaultKind::Status(503), 1));
            let good = client(&sim);
            let out = claim_vmac(&good, &target(), &claim_opts(), None, &master)
                .await
                .unwrap();
            texts.push(format!("{out:?}"));
            texts.push(format!("{good:?}"));
            let bad = client_with(
                &sim,
                Credentials::classic(TEST_AK, "Wr0ngSecretValue", TEST_CK),
                client_opts(),
            );
            let e = bad.list_vmacs(SN).await.unwrap_err();
            texts.push(e.to_string());
            texts.push(format!("{e:?}"));
            let oauth = client_with(
                &sim,
                Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
                client_opts(),
            );
            oauth.list_vmacs(SN).await.unwrap();
            texts.push(format!("{oauth:?}"));
            texts.push(format!(
                "{:?}",
                Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET)
            ));
            texts.push(format!(
                "{:?}",
                Credentials::classic(TEST_AK, TEST_AS, TEST_CK)
            ));
        })
    });
    let logs = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("OVH request"), "logging was captured: {logs}");
    texts.push(logs);
    let all = texts.join("\n");
    for secret in [
        TEST_AS,
        TEST_CK,
        "Wr0ngSecretValue",
        TEST_CLIENT_SECRET,
        "sim-token-",
        "$1$",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into:\n{all}");
    }
}

// --- HTTPS ------------------------------------------------------------------------------

#[tokio::test]
async fn claim_over_https_with_the_simulators_certificate() {
    limit("https", async {
        let sim = OvhSim::start(SimConfig {
            tls: true,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        sim.with_world(|w| {
            w.add_vmac(SN, OURS, &[ip("178.32.70.111")]);
            w.add_vmac(SN, PEER, &[ip("178.32.70.110"), vip()]);
        });
        assert!(sim.base_url().starts_with("https://127.0.0.1:"));
        let opts = ClientOptions {
            extra_roots_pem: vec![sim.ca_pem().unwrap().to_string()],
            ..client_opts()
        };
        let c = client_with(&sim, Credentials::classic(TEST_AK, TEST_AS, TEST_CK), opts);
        let out = claim_vmac(&c, &target(), &claim_opts(), None, &master)
            .await
            .unwrap();
        assert_eq!(out.result, ClaimResult::Claimed);
        // Signatures cover the https:// URL the simulator reconstructs.
        assert!(sim.requests().iter().all(|r| r.status == 200));

        // Without trusting the certificate: a network error naming the endpoint, no retry
        // storm past the deadline.
        let untrusting = client(&sim);
        let e = untrusting.list_vmacs(SN).await.unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("https://127.0.0.1:") && m.contains("certificate"),
            "{m}"
        );
    })
    .await
}

/// The daemon's rights reading over HTTP: the simulator serves the consumer key's own rules
/// (`GET /auth/currentCredential`, needing no rule itself), read once per TTL for every IP;
/// an OAuth2 service account's rights are unverified, never guessed.
#[tokio::test]
async fn rights_are_read_from_the_current_credential_once_per_ttl() {
    use carpd::daemon::cloud::{Known, RightsCache};
    limit("rights", async {
        let sim = sim_with(true).await;
        let rules = vec![
            ("GET".to_string(), format!("/dedicated/server/{SN}/*")),
            ("DELETE".to_string(), format!("/dedicated/server/{SN}/*")),
        ];
        sim.with_config(|c| c.consumer_keys[0].rules = rules.clone());
        let c = client(&sim);
        let cache = RightsCache::new(Duration::from_secs(60));
        let Known::Rules(got) = cache.get(&c).await else {
            panic!("{:?}", cache.peek())
        };
        let got: Vec<(String, String)> = got.into_iter().map(|r| (r.method, r.path)).collect();
        assert_eq!(got, rules);
        let needs = carpd::ovh::rights::vmac_needs(&target(), None);
        let missing: Vec<String> = carpd::ovh::rights::missing(
            &got.iter()
                .map(|(m, p)| carpd::ovh::rights::Rule {
                    method: m.clone(),
                    path: p.clone(),
                })
                .collect::<Vec<_>>(),
            &needs,
        )
        .iter()
        .map(|n| n.rule_line())
        .collect();
        assert_eq!(
            missing,
            vec![format!(
                "POST /dedicated/server/{SN}/virtualMac/*/virtualAddress"
            )]
        );
        // The simulator refuses the POST exactly as predicted, with OVH's body.
        let e = c
            .add_vmac_ip(SN, OURS, vip(), "router-003")
            .await
            .unwrap_err();
        assert!(e.is_permanent(), "{e}");
        assert!(e.to_string().contains("NOT_GRANTED_CALL"), "{e}");
        // Once per TTL, whatever the number of IPs asking.
        let _ = cache.get(&c).await;
        let reads = || {
            sim.requests()
                .iter()
                .filter(|r| r.target == "/1.0/auth/currentCredential")
                .count()
        };
        assert_eq!(reads(), 1);
        // Sixteen checks finding it expired at once (a group's checks fall due together):
        // one reading for all of them.
        let cache = RightsCache::new(Duration::from_secs(60));
        let askers: Vec<_> = (0..16).map(|_| cache.get(&c)).collect();
        for k in carpd_testkit::join_all(askers).await {
            assert!(matches!(k, Known::Rules(_)), "{k:?}");
        }
        assert_eq!(reads(), 2);
        // A reading cancelled half-way (its job superseded while OVH does not answer) does
        // not hold the others: the next asker reads.
        sim.inject(Fault::new(
            Some("GET"),
            Some("currentCredential"),
            FaultKind::Hang,
            1,
        ));
        let cache = RightsCache::new(Duration::from_secs(60));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), cache.get(&c))
                .await
                .is_err()
        );
        let next = tokio::time::timeout(Duration::from_secs(5), cache.get(&c)).await;
        assert!(matches!(next, Ok(Known::Rules(_))), "{next:?}");
        let oauth = client_with(
            &sim,
            Credentials::oauth2(TEST_CLIENT_ID, TEST_CLIENT_SECRET),
            client_opts(),
        );
        oauth.warm_up().await.unwrap();
        let cache = RightsCache::new(Duration::from_secs(60));
        assert!(
            matches!(cache.get(&oauth).await, Known::Unverified(w) if w.contains("OAuth2")),
            "{:?}",
            cache.peek()
        );
    })
    .await
}
