//! Shared reads (src/ovh/failover/shared.rs) against the in-memory OVH: who needs how fresh
//! an answer decides whether a read is sent, joined or served from the last answer.

use std::time::Duration;

use carpd::ovh::failover::shared::{Fresh, SharedReads, VERIFY_COALESCE};
use carpd_testkit::ovh::fake::FakeApi;
use carpd_testkit::ovh::world::World;
use tokio::time::Instant;

const S: &str = "ns1.eu";
const MAC: &str = "02:00:00:aa:bb:cc";

fn api() -> FakeApi {
    let mut w = World::new();
    w.add_vmac(S, MAC, &["10.0.0.1".parse().unwrap()]);
    FakeApi::new(w)
}

fn reads(api: &FakeApi) -> usize {
    api.calls()
        .iter()
        .filter(|c| c.what.starts_with("ips"))
        .count()
}

#[tokio::test(start_paused = true)]
async fn freshness_is_the_callers_and_a_write_makes_older_answers_stale() {
    let api = api();
    let shared = SharedReads::new();
    let t0 = Instant::now();
    shared
        .vmac_ips(&api, S, MAC, Fresh::AnsweredAfter(t0))
        .await
        .unwrap();
    // Answered at t0: serves another claim that needed it from t0, and a check.
    shared
        .vmac_ips(&api, S, MAC, Fresh::AnsweredAfter(t0))
        .await
        .unwrap();
    shared
        .vmac_ips(&api, S, MAC, Fresh::Within(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(reads(&api), 1);
    // A claim that needs it from later reads again.
    tokio::time::advance(Duration::from_millis(10)).await;
    shared
        .vmac_ips(&api, S, MAC, Fresh::AnsweredAfter(Instant::now()))
        .await
        .unwrap();
    assert_eq!(reads(&api), 2);
    // A write seen done: even a check within its age reads again.
    tokio::time::advance(Duration::from_millis(10)).await;
    shared.wrote(S, MAC);
    shared
        .vmac_ips(&api, S, MAC, Fresh::Within(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(reads(&api), 3);
    // A read-back sent after a bind: one read for the binds of the next few milliseconds.
    let at = Instant::now();
    let need = Fresh::SentAfter {
        at,
        coalesce: VERIFY_COALESCE,
    };
    let later = Fresh::SentAfter {
        at: at + Duration::from_millis(5),
        coalesce: VERIFY_COALESCE,
    };
    let (a, b) = tokio::join!(
        shared.vmac_ips(&api, S, MAC, need),
        shared.vmac_ips(&api, S, MAC, later)
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(reads(&api), 4, "one coalesced read-back");
    // A bind after the read-back was sent is never verified by it.
    shared
        .vmac_ips(
            &api,
            S,
            MAC,
            Fresh::SentAfter {
                at: Instant::now() + Duration::from_millis(1),
                coalesce: Duration::ZERO,
            },
        )
        .await
        .unwrap();
    assert_eq!(reads(&api), 5);
}

/// An "unbound" hint is checked with the vMAC list this process already read (it rarely
/// changes) and every vMAC's IPs read afresh. Our own vMAC created since that list was read
/// is not taken for missing: the list is read again, and the IP bound there.
#[tokio::test(start_paused = true)]
async fn an_old_vmac_list_without_ours_is_read_again_before_a_claim_fails() {
    use carpd::ovh::failover::{ClaimOptions, ClaimResult, VmacTarget, claim_vmac_shared};
    use carpd::ovh::plan::Found;
    const PEER: &str = "02:00:00:11:22:33";
    let mut w = World::new();
    w.add_vmac(S, PEER, &["10.0.0.2".parse().unwrap()]);
    let api = FakeApi::new(w);
    let shared = SharedReads::new();
    // A check while BACKUP read the list before our vMAC existed.
    shared
        .list_vmacs(&api, S, Fresh::Within(Duration::ZERO))
        .await
        .unwrap();
    api.world
        .lock()
        .unwrap()
        .add_vmac(S, MAC, &["10.0.0.1".parse().unwrap()]);
    tokio::time::advance(Duration::from_secs(60)).await;
    let t = VmacTarget {
        ip: "10.0.0.9".parse().unwrap(),
        service: S.into(),
        mac: MAC.into(),
        virtual_machine_name: "router".into(),
        allow_last_ip_release: false,
    };
    let out = claim_vmac_shared(
        &api,
        &t,
        &ClaimOptions::default(),
        Some(&Found::Unbound),
        &|| true,
        &shared,
    )
    .await
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(out.result, ClaimResult::Claimed);
    let lists = api
        .calls()
        .iter()
        .filter(|c| c.what.starts_with("vmacs of"))
        .count();
    assert_eq!(lists, 2, "{:?}", api.calls());
}

/// A claim dropped while it waits for its task (its job superseded, the daemon stopping)
/// leaves no task marked as a claim's own: another claim's wait for pending tasks after a
/// refused write would otherwise skip a task nobody waits for any more.
#[tokio::test(start_paused = true)]
async fn a_dropped_claim_leaves_no_task_marked_as_its_own() {
    use carpd::ovh::failover::{ClaimOptions, VmacTarget, claim_vmac_shared};
    use carpd::ovh::plan::Found;
    const PEER: &str = "02:00:00:11:22:33";
    let ip: std::net::Ipv4Addr = "10.0.0.9".parse().unwrap();
    let mut w = World::new();
    w.add_vmac(S, MAC, &["10.0.0.1".parse().unwrap()]);
    w.add_vmac(S, PEER, &["10.0.0.2".parse().unwrap(), ip]);
    w.task_delay = Duration::from_secs(10);
    let api = FakeApi::new(w);
    let shared = SharedReads::new();
    let t = VmacTarget {
        ip,
        service: S.into(),
        mac: MAC.into(),
        virtual_machine_name: "router".into(),
        allow_last_ip_release: false,
    };
    let hint = Found::Vmac {
        mac: PEER.into(),
        ips: 2,
    };
    let opts = ClaimOptions::default();
    let mut claim = Box::pin(claim_vmac_shared(
        &api,
        &t,
        &opts,
        Some(&hint),
        &|| true,
        &shared,
    ));
    // The DELETE is out and its task runs: the claim waits for it.
    tokio::select! {
        r = &mut claim => panic!("the claim ended before its task: {r:?}"),
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    let pending =
        api.world
            .lock()
            .unwrap()
            .server_tasks(S, None, tokio::time::Instant::now().into_std());
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(shared.is_own_task(S, pending[0]));
    drop(claim);
    assert!(!shared.is_own_task(S, pending[0]));
}
