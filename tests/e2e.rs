//! End to end: two real `carpd run` processes, real OpenBao and the OVH simulator
//! (`support/pair.rs` builds that world).
//!
//! Checked continuously: no vMAC is ever deleted (the simulator records every deletion);
//! after each step, within a bound, the failover IP is on the MASTER's vMAC and stays there.
//!
//! Scenarios: the preferred router wins and claims; it dies (SIGKILL) and the peer takes
//! over; it returns and preempts; a partition (both MASTER) and its healing; each daemon
//! crashes and restarts (no change while the IP is right); a flap storm; an OVH 5xx storm
//! during a failover; Vault down during a failover with fresh cached credentials (the claim
//! succeeds) and with stale ones (a clear error, retried until Vault is back).

use std::time::{Duration, Instant};

use carpd::carp::CarpState;
use carpd::devd::CarpEvent;
use carpd_testkit::ovh::{Fault, FaultKind};

use carpd_testkit::routers::*;

#[tokio::test]
async fn the_ip_follows_the_master_through_failure_return_partition_crashes_and_flaps() {
    let mut w = world("").await;

    // The preferred router wins the election and claims.
    let at = w.elect(A).await;
    w.expect_bound(A, at, "election").await;

    // It dies: daemon killed, vhid gone to INIT (no event: nobody is left to tell).
    w.routers[A].kill();
    w.routers[A].set(CarpState::Init, false).await;
    let at = Instant::now();
    w.routers[B].set(CarpState::Master, true).await;
    w.expect_bound(B, at, "master dies").await;

    // It returns (BACKUP first), then preempts.
    w.routers[A].spawn().await;
    w.routers[A].set(CarpState::Backup, true).await;
    wait_checked(&w.routers[A]).await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "return with preempt").await;

    // Partition: both MASTER for a while, then the link heals and router-003 steps down.
    w.routers[B].set(CarpState::Master, true).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "partition healed").await;

    // Each daemon crashes and restarts: nothing changes at OVH while the IP is right.
    let before = w.sim.mutations();
    for i in [B, A] {
        w.routers[i].kill();
        w.routers[i].spawn().await;
        wait_checked(&w.routers[i]).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.sim.mutations(),
        before,
        "a restart must not touch a correct binding"
    );
    assert_eq!(w.holder().as_deref(), Some(w.routers[A].mac));
    let st = w.routers[A].status().await;
    assert_eq!(st.failover_ips[0].bound_here, Some(true), "{st:?}");
    assert_eq!(
        st.failover_ips[0].last_claim.as_ref().unwrap().result,
        "already_bound"
    );

    // Flap storm: 2,000 events per router within about half a second, the vhids flipping
    // every 50; it ends with router-003 MASTER.
    let before = w.sim.mutations();
    let start = Instant::now();
    for i in 0..2000u32 {
        let flip = (i / 50) % 2 == 1;
        let (sa, sb) = if flip {
            (CarpState::Backup, CarpState::Master)
        } else {
            (CarpState::Master, CarpState::Backup)
        };
        if i % 50 == 0 {
            w.routers[A].set(sa, true).await;
            w.routers[B].set(sb, true).await;
        } else {
            let _ = w.routers[A]
                .devd
                .send_event(&CarpEvent::new(group(), sa))
                .await;
            let _ = w.routers[B]
                .devd
                .send_event(&CarpEvent::new(group(), sb))
                .await;
        }
    }
    let at = w.elect(B).await;
    assert!(start.elapsed() < Duration::from_secs(10));
    w.expect_bound(B, at, "after the flap storm").await;
    let changes = w.sim.mutations() - before;
    assert!(
        changes <= 4,
        "flap storm: {changes} OVH changes (one move is 2)"
    );

    for r in &w.routers {
        let log = r.log();
        assert_no_secrets(&log, &format!("{}'s log", r.name));
        assert!(!log.contains("panicked"), "{log}");
    }
}

#[tokio::test]
async fn an_ovh_5xx_storm_during_a_failover_delays_but_does_not_break_it() {
    let mut w = world("").await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "election").await;
    // OVH answers 503 to the next 4 DELETEs and 4 POSTs: a write that failed that way may
    // or may not have happened, so each one is followed by a re-read and a re-plan.
    w.sim
        .inject(Fault::new(Some("POST"), None, FaultKind::Status(503), 4));
    w.sim
        .inject(Fault::new(Some("DELETE"), None, FaultKind::Status(503), 4));
    let at = w.elect(B).await;
    w.expect_bound(B, at, "failover through a 5xx storm").await;
    let st = w.routers[B].status().await;
    assert_eq!(st.failover_ips[0].bound_here, Some(true));
}

#[tokio::test]
async fn vault_down_fresh_credentials_claim_stale_ones_fail_clearly_and_retry() {
    // Credentials younger than 8 s serve through a Vault outage.
    let mut w = world("  cache_max_age: 8").await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "election").await;
    // router-003 (BACKUP) read its credentials moments ago (start-up check); Vault dies.
    w.bao.kill();
    let at = w.elect(B).await;
    w.expect_bound(B, at, "failover with Vault down, fresh credentials")
        .await;

    // Past the maximum age, without Vault: router-002 cannot claim, says why, keeps trying.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let before = w.sim.mutations();
    let _ = w.elect(A).await;
    let deadline = Instant::now() + BOUND;
    let st = loop {
        let st = w.routers[A].status().await;
        let f = &st.failover_ips[0];
        if f.failures >= 2 {
            break st;
        }
        assert!(Instant::now() < deadline, "no failed claim: {f:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let f = &st.failover_ips[0];
    let err = f.last_error.as_deref().unwrap_or_default();
    assert!(err.contains("Vault") || err.contains("vault"), "{err}");
    assert_eq!(w.sim.mutations(), before, "no change without credentials");
    assert_eq!(w.holder().as_deref(), Some(w.routers[B].mac));
    assert_no_secrets(&w.routers[A].log(), "router-002's log");
}

#[tokio::test]
async fn daemon_killed_mid_claim_restarts_and_converges() {
    let mut w = world("").await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "election").await;
    // Slow tasks: router-003's claim is caught between its DELETE and its POST.
    w.sim.with_world(|x| x.task_delay = Duration::from_secs(2));
    let t = Instant::now();
    let at = w.elect(B).await;
    w.accepted("DELETE", t, "router-003's DELETE").await;
    w.routers[B].kill();
    // The window was marked on disk before the DELETE was sent.
    let marker = w.routers[B].dir.join("db").join("claims.json");
    let m = std::fs::read_to_string(&marker).expect("the open window is marked");
    assert!(m.contains(VIP), "{m}");
    w.routers[B].spawn().await;
    // The new daemon reads the marker and the kernel (MASTER): it repairs first.
    w.expect_bound(B, at, "restart mid-claim").await;
    let log = w.routers[B].log();
    assert!(log.contains("repairing it first"), "{log}");
    assert!(!marker.exists(), "repaired: the marker is gone");
}

#[tokio::test]
async fn ovh_hung_during_a_claim_is_superseded_by_backup() {
    let mut w = world("").await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "election").await;
    // OVH never answers router-003's POST; meanwhile router-002 wins again.
    w.sim
        .inject(Fault::new(Some("POST"), None, FaultKind::Hang, 1));
    let t = Instant::now();
    let _ = w.elect(B).await;
    w.accepted("DELETE", t, "router-003's DELETE").await;
    // The simulator logs a hung request when it arrives (status 0, no answer).
    let sim = &w.sim;
    wait_for("router-003's hung POST", || {
        sim.requests()
            .iter()
            .any(|r| r.method == "POST" && r.status == 0 && r.at >= t)
    })
    .await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "the hung claim superseded").await;
    let st = w.routers[B].status().await;
    assert_eq!(st.failover_ips[0].in_flight, None, "{st:?}");
}
