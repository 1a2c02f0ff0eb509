//! The daemon's failover IPs, in-process: the daemon on a simulated kernel with a fake devd
//! (carpd_testkit::daemon) and the OVH simulator on loopback, credentials in a
//! python-ovh ovh.conf. The test plays the network (the sim kernel's state) and the other
//! router or an operator (the simulator's world), and checks what OVH ends up holding.
//!
//! Covered: BACKUP locates and never claims; MASTER claims at once (event -> DELETE + POST,
//! verified); status shows expected vs actual, the last claim and readiness; drift while
//! MASTER is repaired by the re-check, after the hold-down when the IP just moved; a claim
//! superseded by BACKUP stops before its next mutating step; no vMAC is ever deleted; the
//! credential's rights (readiness `ovh_rights`, no half claims, slow retries of permanent
//! refusals that heal once the credential is fixed, a rotation to a narrower key).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use carpd::carp::CarpState;
use carpd::controller::claims::{Done, JobKind, Verdict};
use carpd::daemon::Note;
use carpd::daemon::cloud::JobReport;
use carpd_testkit::daemon::{LIMIT, Lab, within};
use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";
const VIP: &str = "51.68.252.230";

fn vip() -> Ipv4Addr {
    VIP.parse().unwrap()
}

/// The simulator with router-002 (PEER) holding the failover IP, and a lab whose config
/// points at it. `extra` goes into the ovh: section.
async fn setup(extra: &str) -> (OvhSim, Lab) {
    setup_with(extra, "").await
}

/// [`setup`], with `top` added at the top level of the configuration (`DIR` is replaced by
/// the lab's directory).
async fn setup_with(extra: &str, top: &str) -> (OvhSim, Lab) {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &["178.32.70.111".parse().unwrap()]);
        w.add_vmac(SN, PEER, &["178.32.70.110".parse().unwrap(), vip()]);
        w.task_delay = Duration::from_millis(200);
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ovh.conf");
    std::fs::write(
        &conf,
        format!(
            "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}\n",
            sim.base_url()
        ),
    )
    .unwrap();
    let top = top.replace("DIR", &dir.path().display().to_string());
    let config = format!(
        "{top}
node: router-003
daemon: {{ resync_interval: 1h, coalesce: 50ms }}
groups:
  - {{ interface: vmx1, vhid: 2, advskew: 0, addresses: [{VIP}/32] }}
ovh:
  endpoint: {}
  credentials: {{ file: {} }}
  claim_deadline: 30
{extra}
failover_ips:
  - ip: {VIP}
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\", virtual_machine_name: router-003 }}
",
        sim.base_url(),
        conf.display()
    );
    let lab = Lab::new_in(dir, &config).await;
    (sim, lab)
}

/// Waits for the next finished failover job matching `want`.
async fn job(
    lab: &mut Lab,
    what: &str,
    mut want: impl FnMut(&JobReport, &Verdict) -> bool,
) -> (JobReport, Verdict) {
    let notes = lab.notes();
    within(what, async {
        loop {
            if let Note::Cloud { report, verdict } = notes.recv().await.expect("daemon running")
                && want(&report, &verdict)
            {
                return (*report, verdict);
            }
        }
    })
    .await
}

fn holder(sim: &OvhSim) -> Option<String> {
    sim.with_world(|w| w.holder(vip())).map(|(_, mac)| mac)
}

fn vmacs(sim: &OvhSim) -> usize {
    sim.with_world(|w| w.servers.values().map(|s| s.vmacs.len()).sum())
}

#[tokio::test]
async fn backup_locates_master_claims_and_status_tells_both() {
    let (sim, mut lab) = setup_with(
        "",
        "metrics: { textfile: DIR/carpd.prom, textfile_interval: 1s }",
    )
    .await;
    // BACKUP (the sim kernel's initial state): a read-only check at start, no mutation.
    let (r, _) = job(&mut lab, "the start-up check", |r, _| {
        r.kind == JobKind::Check
    })
    .await;
    assert!(matches!(r.done, Done::Located { here: false, .. }), "{r:?}");
    assert_eq!(sim.mutations(), 0);
    let st = lab.status().await;
    let ip = &st.failover_ips[0];
    assert_eq!(ip.local_state.as_deref(), Some("BACKUP"));
    assert_eq!(ip.bound_here, Some(false));
    assert!(ip.actual.as_deref().unwrap().contains(PEER), "{ip:?}");
    let readiness = st.readiness.expect("readiness with failover IPs");
    assert!(readiness.ready, "{readiness:?}");
    assert!(
        readiness
            .checks
            .iter()
            .any(|c| c.name == "own_vmac" && c.ok),
        "{readiness:?}"
    );

    // The election is won: the event leads to a claim, verified.
    lab.network("2@vmx1", CarpState::Master);
    let sent = Instant::now();
    lab.event("2@vmx1", CarpState::Master).await;
    let (r, _) = job(&mut lab, "the claim", |r, _| r.kind == JobKind::Claim).await;
    assert!(matches!(r.done, Done::Moved { .. }), "{r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.steps.len(), 2, "{o:?}");
    assert!(o.steps[0].action.starts_with("DELETE"), "{o:?}");
    assert!(o.steps[1].action.starts_with("POST"), "{o:?}");
    assert_eq!(holder(&sim).as_deref(), Some(OURS));
    assert_eq!(vmacs(&sim), 2, "no vMAC is ever deleted");
    assert!(sent.elapsed() < LIMIT);

    let st = lab.status().await;
    let ip = &st.failover_ips[0];
    assert_eq!(ip.local_state.as_deref(), Some("MASTER"));
    assert_eq!(ip.expected, "here");
    let claim = ip.last_claim.as_ref().expect("the last claim is shown");
    assert_eq!(claim.result, "claimed");
    let outcome = claim.outcome.as_ref().unwrap();
    assert!(outcome["outage"].as_f64().unwrap() > 0.0, "{outcome}");
    assert_eq!(outcome["steps"].as_array().unwrap().len(), 2);
    let text = carpd::observe::daemon_view::to_text(&st);
    assert!(
        text.contains(&format!(
            "failover IP {VIP} (virtual_mac {OURS}, follows 2@vmx1 MASTER): on virtual MAC {OURS}"
        )),
        "{text}"
    );
    assert!(
        text.contains("[ok]") && text.contains("last claim") && text.contains("outage"),
        "{text}"
    );
    assert!(text.contains("readiness: ready"), "{text}");

    // The metrics say the same (node_exporter textfile, rewritten every second).
    let prom = lab.path("carpd.prom");
    let metrics = within("the textfile to show the claim", async {
        loop {
            if let Ok(t) = std::fs::read_to_string(&prom)
                && t.contains(&format!(
                    "carpd_claims_total{{ip=\"{VIP}\",result=\"claimed\"}} 1"
                ))
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for line in [
        "carpd_group_state{group=\"2@vmx1\",state=\"MASTER\"} 1",
        "carpd_transitions_total{group=\"2@vmx1\",to=\"MASTER\"} 1",
        "carpd_ready_all 1",
        &format!("carpd_claim_outage_seconds_count{{ip=\"{VIP}\"}} 1"),
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(!metrics.contains(TEST_AS) && !metrics.contains(TEST_CK));

    // A restart while MASTER and bound: the claim finds it already here, changes nothing.
    let before = sim.mutations();
    lab.stop().await;
    lab.start().await;
    let (r, _) = job(&mut lab, "the claim after restart", |r, _| {
        r.kind == JobKind::Claim
    })
    .await;
    assert!(matches!(r.done, Done::Located { here: true, .. }), "{r:?}");
    assert_eq!(sim.mutations(), before);
}

#[tokio::test]
async fn drift_while_master_is_repaired_after_the_hold_down() {
    let (sim, mut lab) = setup("  recheck_interval: 1s\n  hold_down: 12s").await;
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    let (r, _) = job(&mut lab, "the claim", |r, _| r.kind == JobKind::Claim).await;
    assert!(matches!(r.done, Done::Moved { .. }), "{r:?}");
    let claimed_at = r.ended;

    // The peer (a split brain) or an operator moves it back at once.
    sim.with_world(|w| {
        w.task_delay = Duration::ZERO;
        let now = Instant::now();
        w.remove_ip(now, SN, OURS, vip()).unwrap();
        w.advance(now);
        w.add_ip(now, SN, PEER, vip(), "router-002").unwrap();
        w.advance(now);
    });
    assert_eq!(holder(&sim).as_deref(), Some(PEER));
    let (_, verdict) = job(&mut lab, "the re-check seeing the drift", |_, v| {
        matches!(v, Verdict::TakenWhileMaster { .. })
    })
    .await;
    let Verdict::TakenWhileMaster { reclaim_at, .. } = verdict else {
        unreachable!()
    };
    assert!(reclaim_at >= claimed_at + Duration::from_secs(12) - Duration::from_millis(50));
    let st = lab.status().await;
    assert!(
        st.failover_ips[0].held_down_until.is_some(),
        "{:?}",
        st.failover_ips[0]
    );

    let (r, _) = job(&mut lab, "the repair", |r, _| r.kind == JobKind::Claim).await;
    assert!(matches!(r.done, Done::Moved { .. }), "{r:?}");
    assert!(
        r.started >= claimed_at + Duration::from_secs(12) - Duration::from_millis(50),
        "the repair waited for the hold-down"
    );
    assert_eq!(holder(&sim).as_deref(), Some(OURS));
    assert_eq!(vmacs(&sim), 2);
}

#[tokio::test]
async fn a_claim_superseded_by_backup_stops_before_its_next_mutation() {
    let (sim, mut lab) = setup("").await;
    sim.with_world(|w| w.task_delay = Duration::from_secs(2));
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    // Wait for the DELETE to be sent, then lose the election while its task runs.
    within("the DELETE", async {
        while !sim.requests().iter().any(|r| r.method == "DELETE") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    lab.network("2@vmx1", CarpState::Backup);
    lab.event("2@vmx1", CarpState::Backup).await;
    // The reading of BACKUP stops the claim at once (the job is superseded, not finished).
    within("the claim to stop", async {
        loop {
            let st = lab.status().await;
            let f = &st.failover_ips[0];
            if f.local_state.as_deref() == Some("BACKUP") && f.in_flight.is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // Past the DELETE's task: no POST ever follows.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !sim.requests().iter().any(|r| r.method == "POST"),
        "no POST after losing MASTER"
    );
    assert_eq!(vmacs(&sim), 2);
}

fn demotion(lab: &Lab) -> i64 {
    use carpd::kernel::Kernel;
    lab.kernel
        .sysctl_get(carpd::carp::Sysctl::Demotion)
        .unwrap()
}

#[tokio::test]
async fn the_daemon_restores_the_ledger_after_a_reboot() {
    use carpd::controller::ledger::{LedgerStore, Reason};
    let (_sim, mut lab) = setup_with("", "maintenance: { state_dir: DIR/db }").await;
    lab.stop().await;
    let store = LedgerStore::new(lab.path("db"));
    store
        .add(
            &lab.kernel,
            Reason::Maintenance,
            240,
            std::time::SystemTime::now(),
        )
        .unwrap();
    assert_eq!(demotion(&lab), 240);
    lab.kernel.reboot().unwrap();
    assert_eq!(demotion(&lab), 0, "a reboot resets the kernel's demotion");
    lab.start().await;
    assert_eq!(demotion(&lab), 240, "carpd run put its part back");
    let st = lab.status().await;
    let m = st.maintenance.clone().expect("the ledger in status");
    assert_eq!(m["maintenance"], true, "{m}");
    assert_eq!(m["carpd_demotion"], 240, "{m}");
    assert_eq!(m["other_demotion"], 0, "{m}");
    let text = carpd::observe::daemon_view::to_text(&st);
    assert!(
        text.contains("demotion: kernel 240 = carpd 240 + other 0; IN MAINTENANCE"),
        "{text}"
    );
}

#[tokio::test]
async fn not_ready_demotes_this_node_until_ready_again() {
    use carpd_testkit::ovh::{Fault, FaultKind};
    let (sim, lab) = setup_with(
        "",
        "maintenance: { state_dir: DIR/db }\nreadiness: { interval: 5s, demotion: 50 }",
    )
    .await;
    // The start-up check succeeded (ready, no demotion). Now OVH refuses the next check.
    sim.inject(Fault::new(
        Some("GET"),
        Some("virtualMac"),
        FaultKind::Status(403),
        1,
    ));
    assert_eq!(demotion(&lab), 0);
    // The periodic check (readiness.interval) meets the refusal.
    within("the not-ready demotion", async {
        while demotion(&lab) != 50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let st = lab.status().await;
    let r = st.readiness.unwrap();
    assert!(!r.ready, "{r:?}");
    assert_eq!(st.maintenance.unwrap()["maintenance"], false);
    // The next check (retried after 1 s) passes: the demotion goes away, exactly.
    within("the demotion removed", async {
        while demotion(&lab) != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(lab.status().await.readiness.unwrap().ready);
}

#[tokio::test]
async fn no_apply_watches_and_never_claims() {
    let (sim, mut lab) = setup("").await;
    lab.stop().await;
    lab.tweak = Some(|s| s.apply = false);
    lab.start().await;
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    // The check that follows shows the IP elsewhere; nothing is claimed.
    let st = within("status to show the wrong binding", async {
        loop {
            let st = lab.status().await;
            let f = &st.failover_ips[0];
            if f.local_state.as_deref() == Some("MASTER") && f.bound_here == Some(false) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(!st.apply);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sim.mutations(), 0, "--no-apply must leave OVH alone");
    assert_eq!(holder(&sim).as_deref(), Some(PEER));
    let text = carpd::observe::daemon_view::to_text(&lab.status().await);
    assert!(text.contains("WRONG: should be here"), "{text}");
}

/// The access rules of the reference for this server, minus those of `without` methods.
fn rules_without(without: &str) -> Vec<(String, String)> {
    [
        ("GET", format!("/dedicated/server/{SN}/virtualMac")),
        ("GET", format!("/dedicated/server/{SN}/virtualMac/*")),
        (
            "POST",
            format!("/dedicated/server/{SN}/virtualMac/*/virtualAddress"),
        ),
        (
            "DELETE",
            format!("/dedicated/server/{SN}/virtualMac/*/virtualAddress/*"),
        ),
        ("GET", format!("/dedicated/server/{SN}/task")),
        ("GET", format!("/dedicated/server/{SN}/task/*")),
    ]
    .into_iter()
    .filter(|(m, _)| *m != without)
    .map(|(m, p)| (m.to_string(), p))
    .collect()
}

fn set_rules(sim: &OvhSim, rules: Vec<(String, String)>) {
    sim.with_config(|c| c.consumer_keys[0].rules = rules);
}

fn writes(sim: &OvhSim, method: &str) -> usize {
    sim.requests().iter().filter(|r| r.method == method).count()
}

const POST_RULE: &str =
    "POST /dedicated/server/ns1234567.ip-51-68-252.eu/virtualMac/*/virtualAddress";

#[tokio::test]
async fn without_post_rights_readiness_names_the_rule_and_master_deletes_nothing() {
    let (sim, mut lab) = setup_with(
        "  refused_retry: 3s\n  recheck_interval: 1s",
        "readiness: { interval: 5s }\nmetrics: { textfile: DIR/carpd.prom, textfile_interval: 1s }",
    )
    .await;
    // Narrowed while BACKUP (a rotation to a narrower consumer key looks the same to carpd).
    set_rules(&sim, rules_without("POST"));
    let (r, _) = job(&mut lab, "a check judging the narrower rights", |r, _| {
        r.kind == JobKind::Check && r.rights.as_ref().is_some_and(|v| v.is_missing())
    })
    .await;
    let Some(carpd::ovh::rights::Verdict::Missing(lines)) = &r.rights else {
        unreachable!()
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with(POST_RULE), "{lines:?}");
    let st = lab.status().await;
    let readiness = st.readiness.unwrap();
    assert!(!readiness.ready, "{readiness:?}");
    let c = readiness
        .checks
        .iter()
        .find(|c| c.name == "ovh_rights")
        .unwrap();
    assert!(!c.ok && c.detail.contains(POST_RULE), "{c:?}");
    assert!(
        c.detail
            .contains("dedicatedServer:apiovh:virtualMac/virtualAddress/create"),
        "{c:?}"
    );
    // The metrics name it too.
    let prom = lab.path("carpd.prom");
    let want = format!("carpd_ovh_rights_missing{{ip=\"{VIP}\",rule=\"{POST_RULE}\"}} 1");
    let metrics = within("the textfile to name the missing rule", async {
        loop {
            if let Ok(t) = std::fs::read_to_string(&prom)
                && t.contains(&want)
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        metrics.contains("carpd_ready{check=\"ovh_rights\"} 0"),
        "{metrics}"
    );

    // MASTER: no half claim. No DELETE, no POST; the IP stays on the peer.
    lab.network("2@vmx1", CarpState::Master);
    let t0 = Instant::now();
    lab.event("2@vmx1", CarpState::Master).await;
    let (r, _) = job(&mut lab, "the claim", |r, _| r.kind == JobKind::Claim).await;
    assert_eq!(r.done, Done::Refused { mutated: false }, "{r:?}");
    assert!(
        r.error.as_ref().unwrap().to_string().contains(POST_RULE),
        "{r:?}"
    );
    // Slow retries: over two periods, at most one claim attempt per period, never a write.
    let mut claims = 1;
    let watch = tokio::time::timeout(Duration::from_millis(6500), async {
        loop {
            let (r, _) = job(&mut lab, "a retry", |r, _| r.kind == JobKind::Claim).await;
            assert_eq!(r.done, Done::Refused { mutated: false }, "{r:?}");
            claims += 1;
        }
    })
    .await;
    assert!(watch.is_err());
    assert!(claims <= 3, "{claims} claims in {:?}", t0.elapsed());
    assert_eq!(writes(&sim, "DELETE") + writes(&sim, "POST"), 0);
    assert_eq!(holder(&sim).as_deref(), Some(PEER));
    let st = lab.status().await;
    assert_eq!(
        st.failover_ips[0].last_claim.as_ref().unwrap().result,
        "refused"
    );

    // The credential is fixed: the next slow retry claims, without a restart.
    set_rules(&sim, rules_without(""));
    let (r, _) = job(&mut lab, "the healing claim", |r, _| {
        r.kind == JobKind::Claim && !matches!(r.done, Done::Refused { .. })
    })
    .await;
    assert!(matches!(r.done, Done::Moved { .. }), "{r:?}");
    assert_eq!(holder(&sim).as_deref(), Some(OURS));
    assert_eq!(vmacs(&sim), 2);
}

#[tokio::test]
async fn rights_removed_before_the_claim_refuse_once_retry_slowly_and_heal() {
    let (sim, mut lab) = setup("  refused_retry: 3s\n  recheck_interval: 1s").await;
    let (r, _) = job(&mut lab, "the start-up check", |r, _| {
        r.kind == JobKind::Check
    })
    .await;
    assert_eq!(
        r.rights,
        Some(carpd::ovh::rights::Verdict::Granted),
        "{r:?}"
    );
    // Removed after readiness judged them (readiness.interval is 30 s: not seen yet).
    set_rules(&sim, rules_without("POST"));
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    let (r, _) = job(&mut lab, "the claim", |r, _| r.kind == JobKind::Claim).await;
    assert_eq!(r.done, Done::Refused { mutated: true }, "{r:?}");
    let refused_posts = || {
        sim.requests()
            .iter()
            .filter(|q| q.method == "POST" && q.status == 403)
            .count()
    };
    assert_eq!(
        refused_posts(),
        1,
        "the refusal ends the claim: no re-plan loop"
    );
    assert_eq!(writes(&sim, "DELETE"), 1);
    assert_eq!(
        holder(&sim),
        None,
        "released, not bound: the outage carpd repairs"
    );
    // Slow retries: over two periods at most one more refused write (the re-read rights
    // say POST is missing, so the retry does not even send it).
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert!(refused_posts() <= 3, "{} refused POSTs", refused_posts());
    assert_eq!(holder(&sim), None);
    let st = lab.status().await;
    let f = &st.failover_ips[0];
    assert_eq!(f.last_claim.as_ref().unwrap().result, "refused", "{f:?}");
    // Restored: the binding completes without a restart.
    set_rules(&sim, rules_without(""));
    let (r, _) = job(&mut lab, "the healing claim", |r, _| {
        r.kind == JobKind::Claim && !matches!(r.done, Done::Refused { .. })
    })
    .await;
    assert!(matches!(r.done, Done::Moved { .. }), "{r:?}");
    assert_eq!(holder(&sim).as_deref(), Some(OURS));
    assert_eq!(vmacs(&sim), 2);
}

/// A rotation to a narrower consumer key while BACKUP (the old one revoked, the file
/// rewritten): the client re-reads the credentials, readiness reads the new key's rules and
/// names what it lacks, the node demotes itself; the claim then does not start.
#[tokio::test]
async fn rotation_to_a_narrower_key_while_backup_is_caught_by_readiness() {
    use carpd_testkit::ovh::auth::ConsumerKey;
    let (sim, mut lab) = setup_with(
        "  refused_retry: 1m",
        "maintenance: { state_dir: DIR/db }\nreadiness: { interval: 5s, demotion: 50 }",
    )
    .await;
    let (r, _) = job(&mut lab, "the start-up check", |r, _| {
        r.kind == JobKind::Check
    })
    .await;
    assert_eq!(
        r.rights,
        Some(carpd::ovh::rights::Verdict::Granted),
        "{r:?}"
    );
    const NEW_CK: &str = "simConsumerKeyRotated0123456789ab";
    sim.with_config(|c| {
        c.consumer_keys.push(ConsumerKey {
            key: NEW_CK.into(),
            application_key: TEST_AK.into(),
            rules: rules_without("POST"),
            revoked: false,
        });
        c.consumer_keys[0].revoked = true;
    });
    std::fs::write(
        lab.path("ovh.conf"),
        format!(
            "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={NEW_CK}\n",
            sim.base_url()
        ),
    )
    .unwrap();
    let (r, _) = job(&mut lab, "a check under the new key", |r, _| {
        r.kind == JobKind::Check && r.rights.as_ref().is_some_and(|v| v.is_missing())
    })
    .await;
    assert!(r.error.is_none(), "the rotation itself is handled: {r:?}");
    let readiness = lab.status().await.readiness.unwrap();
    let c = readiness
        .checks
        .iter()
        .find(|c| c.name == "ovh_rights")
        .unwrap();
    assert!(
        !readiness.ready && c.detail.contains(POST_RULE),
        "{readiness:?}"
    );
    // The optional "demote while not ready" applies: this node should not win an election
    // it cannot complete.
    within("the not-ready demotion", async {
        while demotion(&lab) != 50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    lab.network("2@vmx1", CarpState::Master);
    lab.event("2@vmx1", CarpState::Master).await;
    let (r, _) = job(&mut lab, "the claim", |r, _| r.kind == JobKind::Claim).await;
    assert_eq!(r.done, Done::Refused { mutated: false }, "{r:?}");
    assert_eq!(sim.mutations(), 0);
    assert_eq!(holder(&sim).as_deref(), Some(PEER));
}
