//! Stop, reload and crash at the worst moment of a claim: real `carpd run` processes, real
//! OpenBao holding the OVH credentials, the OVH simulator (`support/pair.rs`).
//!
//! The worst moment is the open window: OVH accepted the DELETE of the failover IP from the
//! peer's vMAC and the POST on this node's vMAC is not done, so the IP is bound to nobody.
//! - SIGTERM then: the claim finishes, the IP is bound here before the process exits;
//! - SIGTERM with OVH not answering the POST: exit after `daemon.stop_grace`, exit status 1,
//!   the marker names the IP, and the next start repairs it first;
//! - SIGHUP with the same configuration: one DELETE and one POST, nothing repeated;
//! - SIGHUP changing this node's vMAC: the running claim finishes its window, then the IP
//!   moves to the new vMAC, and two claims never write at once;
//! - `kill -9` in the window is in `tests/e2e.rs` (`daemon_killed_mid_claim_…`).

use std::time::{Duration, Instant};

use carpd_testkit::ovh::{Fault, FaultKind, LoggedRequest};

use carpd_testkit::routers::*;

/// Long enough to act inside the window, short enough for a quick test.
const SLOW_TASK: Duration = Duration::from_millis(1500);

/// Accepted mutations since `t`, as `METHOD target`.
fn mutations_since(w: &World, t: Instant) -> Vec<String> {
    w.sim
        .requests()
        .into_iter()
        .filter(|r| r.mutation && r.at >= t)
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

fn requests_since(w: &World, t: Instant, method: &str) -> Vec<LoggedRequest> {
    w.sim
        .requests()
        .into_iter()
        .filter(|r| r.at >= t && r.method == method && r.target.contains("virtualAddress"))
        .collect()
}

/// Elects router-002 with slow tasks and waits until OVH accepted its DELETE: the window.
async fn into_the_window(w: &mut World) -> Instant {
    w.sim.with_world(|x| x.task_delay = SLOW_TASK);
    let t = Instant::now();
    let _ = w.elect(A).await;
    w.accepted("DELETE", t, "router-002's accepted DELETE")
        .await;
    t
}

fn marker(w: &World, who: usize) -> std::path::PathBuf {
    w.routers[who].dir.join("db").join("claims.json")
}

#[tokio::test]
async fn sigterm_inside_the_window_binds_the_ip_here_before_exiting() {
    let mut w = world_with("", "stop_grace: 10s").await;
    let t = into_the_window(&mut w).await;
    assert!(
        marker(&w, A).exists(),
        "the window is marked on disk before the DELETE is sent"
    );
    w.routers[A].signal(libc::SIGTERM);
    let (status, exited) = w.routers[A].wait_exit(Duration::from_secs(15)).await;
    let log = w.routers[A].log();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(
        w.holder().as_deref(),
        Some(w.routers[A].mac),
        "the IP is bound here when the process has exited\n{log}"
    );
    let posts = requests_since(&w, t, "POST");
    assert!(
        posts.iter().any(|r| r.mutation && r.at < exited),
        "the POST was sent before the exit: {posts:?}"
    );
    assert_eq!(mutations_since(&w, t).len(), 2, "one DELETE, one POST");
    assert!(
        log.contains("stopping: finishing the claims"),
        "the stop says what it waits for:\n{log}"
    );
    assert!(
        !marker(&w, A).exists(),
        "the closed window leaves no marker"
    );
}

#[tokio::test]
async fn sigterm_with_ovh_stuck_exits_after_the_grace_and_the_next_start_repairs() {
    let mut w = world_with("", "stop_grace: 2s").await;
    // OVH takes router-002's DELETE, then never answers a POST.
    w.sim.inject(Fault::new(
        Some("POST"),
        Some("virtualAddress"),
        FaultKind::Hang,
        1000,
    ));
    let t = into_the_window(&mut w).await;
    let sim = &w.sim;
    wait_for("router-002's POST (unanswered)", || {
        sim.requests()
            .iter()
            .any(|r| r.method == "POST" && r.at >= t && r.target.contains("virtualAddress"))
    })
    .await;
    let asked = Instant::now();
    w.routers[A].signal(libc::SIGTERM);
    let (status, exited) = w.routers[A].wait_exit(Duration::from_secs(10)).await;
    let took = exited - asked;
    let log = w.routers[A].log();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "exit {took:?} after SIGTERM with a 2 s grace\n{log}"
    );
    assert_eq!(
        status.code(),
        Some(1),
        "an unclean stop says so: {status:?}"
    );
    assert!(
        log.contains("stop grace of 2s ran out") && log.contains("51.68.252.230"),
        "the log names the IP and its state:\n{log}"
    );
    let m = std::fs::read_to_string(marker(&w, A)).expect("the marker stays");
    assert!(m.contains("51.68.252.230") && m.contains("bind"), "{m}");
    assert_eq!(w.holder(), None, "bound to nobody while carpd is down");

    // OVH answers again; the next start repairs first.
    w.sim.clear_faults();
    w.sim.with_world(|x| x.task_delay = TASK);
    let restarted = Instant::now();
    w.routers[A].spawn().await;
    w.expect_bound(A, restarted, "repair after an exhausted grace")
        .await;
    let log = w.routers[A].log();
    assert!(log.contains("repairing it first"), "{log}");
    wait_for("the marker to go", || !marker(&w, A).exists()).await;
}

#[tokio::test]
async fn sighup_inside_the_window_with_the_same_configuration_repeats_nothing() {
    let mut w = world_with("", "").await;
    let t = into_the_window(&mut w).await;
    w.routers[A].signal(libc::SIGHUP);
    let at = Instant::now();
    w.expect_bound(A, at, "claim across a reload").await;
    let log = w.routers[A].log();
    assert!(log.contains("configuration reloaded"), "{log}");
    // The IP is not taken for changed: its claim is not stopped and claimed again. (A
    // second claim would find the IP bound and write nothing either, so the count of
    // writes below passes even when the reload restarts the claim.)
    assert!(!log.contains("changed by the reload"), "{log}");
    let m = mutations_since(&w, t);
    assert_eq!(m.len(), 2, "one DELETE and one POST, no duplicate: {m:?}");
    assert!(
        m[0].starts_with("DELETE") && m[1].starts_with("POST"),
        "{m:?}"
    );
}

#[tokio::test]
async fn sighup_changing_the_vmac_finishes_the_window_then_moves_to_the_new_one() {
    let mut w = world_with("", "").await;
    const NEW_MAC: &str = "02:00:00:00:00:22";
    w.sim.with_world(|x| {
        x.add_vmac(
            "ns1234567.ip-51-68-252.eu",
            NEW_MAC,
            &["178.32.70.120".parse().unwrap()],
        )
    });
    let t = into_the_window(&mut w).await;
    let old_mac = w.routers[A].mac;
    w.routers[A].edit_config(|c| c.replace(old_mac, NEW_MAC));
    w.routers[A].signal(libc::SIGHUP);
    let sim = &w.sim;
    wait_for("the IP on the new vMAC", || {
        sim.with_world(|x| x.holder("51.68.252.230".parse().unwrap()))
            .is_some_and(|(_, m)| m == NEW_MAC)
    })
    .await;
    let log = w.routers[A].log();
    assert!(log.contains("changed by the reload"), "{log}");
    let m = mutations_since(&w, t);
    let shape: Vec<(&str, bool, bool)> = m
        .iter()
        .map(|r| {
            (
                r.split(' ').next().unwrap(),
                r.contains(old_mac),
                r.contains(NEW_MAC),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("DELETE", false, false), // from router-003's vMAC
            ("POST", true, false),    // the window finished on the old vMAC
            ("DELETE", true, false),  // then the new claim moves it
            ("POST", false, true),
        ],
        "{m:?}\n{log}"
    );
    // One writer: the new claim's DELETE came after the old claim's POST task was done.
    let reqs = w.sim.requests();
    let post_old = reqs
        .iter()
        .find(|r| r.mutation && r.method == "POST" && r.target.contains(old_mac) && r.at >= t)
        .unwrap()
        .at;
    let delete_old = reqs
        .iter()
        .find(|r| r.mutation && r.method == "DELETE" && r.target.contains(old_mac) && r.at >= t)
        .unwrap()
        .at;
    assert!(
        delete_old >= post_old + SLOW_TASK,
        "the new claim started before the old one ended"
    );
}
