//! End to end: two real `carpd run` processes (router-002 preferred, router-003), a real
//! OpenBao dev server holding the OVH credentials (AppRole login through secretsmith files),
//! and the OVH simulator on loopback. Each router's CARP state lives in a simulated kernel
//! (a state file) that the test drives as an election would, telling the daemon through its
//! own fake devd socket — the daemons read the truth from the kernel, as on FreeBSD.
//!
//! Checked continuously: no vMAC is ever deleted (the simulator records every deletion);
//! after each step, within a bound, the failover IP is on the MASTER's vMAC and stays there.
//!
//! Scenarios: the preferred router wins and claims; it dies (SIGKILL) and the peer takes
//! over; it returns and preempts; a partition (both MASTER) and its healing; each daemon
//! crashes and restarts (no change while the IP is right); a flap storm; an OVH 5xx storm
//! during a failover; Vault down during a failover with fresh cached credentials (the claim
//! succeeds) and with stale ones (a clear error, retried until Vault is back).

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carpd::carp::{CarpState, GroupId};
use carpd::control::{self, Reply, Request};
use carpd::devd::{CarpEvent, FakeDevd};
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::observe::daemon_view::DaemonView;
use carpd::sim::ovh::{Fault, FaultKind, OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
use support::bao::{Bao, write_private};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const VIP: &str = "51.68.252.230";
const GROUP: &str = "2@vmx1";
const OVH_PATH: &str = "network/carp-hyper-001-switch";
/// Simulated OVH task time.
const TASK: Duration = Duration::from_millis(200);
/// How long the IP may take to reach the MASTER after a step.
const BOUND: Duration = Duration::from_secs(20);

fn group() -> GroupId {
    GROUP.parse().unwrap()
}

struct Router {
    name: &'static str,
    mac: &'static str,
    dir: PathBuf,
    kernel: SimKernel,
    devd: FakeDevd,
    child: Option<Child>,
}

impl Router {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("carpd.log")).unwrap_or_default()
    }

    /// Starts `carpd run` and waits until it listens and has connected to devd.
    async fn spawn(&mut self) {
        // A killed daemon leaves its socket file: remove it so "exists" means "this one".
        let _ = std::fs::remove_file(self.dir.join("carpd.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("carpd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_carpd"))
            .arg("-c")
            .arg(self.dir.join("carpd.yaml"))
            .args(["--kernel", "sim", "--sim-state"])
            .arg(self.dir.join("kernel.json"))
            .arg("--control-socket")
            .arg(self.dir.join("carpd.sock"))
            .args(["--log-target", "stderr", "--log-level", "info"])
            .arg("run")
            .arg("--devd-socket")
            .arg(self.dir.join("devd.pipe"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("carpd run starts");
        self.child = Some(child);
        let name = self.name;
        tokio::time::timeout(Duration::from_secs(20), self.devd.wait_for_clients(1))
            .await
            .unwrap_or_else(|_| {
                panic!("{name}: carpd run did not connect to devd:\n{}", self.log())
            })
            .unwrap();
        let sock = self.dir.join("carpd.sock");
        wait_for(&format!("{name}'s control socket"), || sock.exists()).await;
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The network sets this router's vhid; devd reports it when `event`.
    async fn set(&mut self, state: CarpState, event: bool) {
        let g = group();
        self.kernel.set_state(&g.ifname, g.vhid, state).unwrap();
        if event && self.child.is_some() {
            let _ = self.devd.send_event(&CarpEvent::new(g, state)).await;
        }
    }

    async fn status(&self) -> DaemonView {
        let path = self.dir.join("carpd.sock");
        let r = tokio::task::spawn_blocking(move || {
            control::request(&path, &Request::Status, Duration::from_secs(5))
        })
        .await
        .unwrap()
        .expect("status");
        match r {
            Reply::Status { daemon } => *daemon,
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

struct World {
    _dir: tempfile::TempDir,
    bao: Bao,
    sim: OvhSim,
    routers: Vec<Router>,
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// OpenBao with the deployment's AppRole and the simulator's keys, the simulator with the
/// IP on router-003's vMAC, and both routers started BACKUP. `vault_extra` goes into each
/// router's `vault:` section.
async fn world(vault_extra: &str) -> World {
    let bao = Bao::start().await;
    bao.setup("300s", "600s").await;
    bao.put(
        "apps",
        OVH_PATH,
        &[
            ("application_key", TEST_AK),
            ("application_secret", TEST_AS),
            ("consumer_key", TEST_CK),
        ],
    )
    .await;
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    let plan = [
        ("router-002", "02:00:00:00:00:02", "178.32.70.110", 0),
        ("router-003", "02:00:00:00:00:03", "178.32.70.111", 100),
    ];
    sim.with_world(|w| {
        w.task_delay = TASK;
        w.add_vmac(SN, plan[0].1, &[plan[0].2.parse().unwrap()]);
        w.add_vmac(
            SN,
            plan[1].1,
            &[plan[1].2.parse().unwrap(), VIP.parse().unwrap()],
        );
    });
    let dir = tempfile::tempdir().unwrap();
    let mut routers = Vec::new();
    for (name, mac, _, advskew) in plan {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let role = bao.role_id().await;
        let secret = bao.secret_id(&[]).await;
        let smith = d.join("secretsmith.yaml");
        write_private(
            &smith,
            &format!(
                "vault:\n  server:\n    url: {}\n  auth:\n    method: approle\n    role_id: {role}\n    secret_id: {secret}\n",
                bao.url
            ),
        );
        std::fs::write(
            d.join("carpd.yaml"),
            format!(
                "node: {name}
daemon: {{ resync_interval: 1s, coalesce: 20ms }}
groups:
  - {{ interface: vmx1, vhid: 2, advskew: {advskew}, addresses: [{VIP}/32] }}
vault:
  secretsmith: {smith}
  timeout: 2
{vault_extra}
ovh:
  endpoint: {url}
  credentials: {{ vault: apps/{OVH_PATH} }}
  claim_deadline: 30
  recheck_interval: 5s
  hold_down: 3s
readiness: {{ interval: 10s }}
maintenance: {{ state_dir: {d}/db }}
failover_ips:
  - ip: {VIP}
    group: {GROUP}
    ovh_virtual_mac: {{ service: {SN}, mac: \"{mac}\", virtual_machine_name: {name} }}
",
                smith = smith.display(),
                url = sim.base_url(),
                d = d.display(),
            ),
        )
        .unwrap();
        let kernel = SimKernel::open(Flavour::FreeBsd14, Some(d.join("kernel.json"))).unwrap();
        let devd = FakeDevd::bind(d.join("devd.pipe")).unwrap();
        let mut r = Router {
            name,
            mac,
            dir: d,
            kernel,
            devd,
            child: None,
        };
        r.spawn().await;
        r.set(CarpState::Backup, true).await;
        routers.push(r);
    }
    let w = World {
        _dir: dir,
        bao,
        sim,
        routers,
    };
    // Both BACKUP have located the IP (warm binding) before the first election.
    for r in &w.routers {
        wait_checked(r).await;
    }
    w
}

async fn wait_checked(r: &Router) {
    let deadline = Instant::now() + BOUND;
    loop {
        let st = r.status().await;
        if st.failover_ips.first().is_some_and(|f| f.actual.is_some()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: no OVH check: {st:?}\n{}",
            r.name,
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl World {
    fn holder(&self) -> Option<String> {
        self.sim
            .with_world(|w| w.holder(VIP.parse().unwrap()))
            .map(|(_, m)| m)
    }

    /// The invariant: the IP reaches `who`'s vMAC within [`BOUND`] and stays 1.5 s; no vMAC
    /// was ever deleted. Returns the time from `since` to bound.
    async fn expect_bound(&self, who: usize, since: Instant, step: &str) -> Duration {
        let r = &self.routers[who];
        let deadline = since + BOUND;
        while self.holder().as_deref() != Some(r.mac) {
            assert!(
                Instant::now() < deadline,
                "{step}: {VIP} not on {}'s vMAC within {BOUND:?} (on {:?})\n--- router-002:\n{}\n--- router-003:\n{}",
                r.name,
                self.holder(),
                self.routers[0].log(),
                self.routers[1].log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = since.elapsed();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            self.holder().as_deref(),
            Some(r.mac),
            "{step}: the IP left {}'s vMAC again",
            r.name
        );
        let deleted = self.sim.with_world(|w| w.deleted_vmacs.clone());
        assert!(deleted.is_empty(), "{step}: vMAC(s) deleted: {deleted:?}");
        took
    }

    async fn elect(&mut self, master: usize) -> Instant {
        let at = Instant::now();
        let backup = 1 - master;
        self.routers[backup].set(CarpState::Backup, true).await;
        self.routers[master].set(CarpState::Master, true).await;
        at
    }
}

fn assert_no_secrets(text: &str, what: &str) {
    for s in [TEST_AS, TEST_CK] {
        assert!(!text.contains(s), "{what} contains a secret");
    }
}

const A: usize = 0;
const B: usize = 1;

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
    let sim = &w.sim;
    wait_for("router-003's DELETE", || {
        sim.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.mutation && r.at >= t)
    })
    .await;
    w.routers[B].kill();
    w.routers[B].spawn().await;
    // The new daemon reads the kernel (MASTER), finds the IP on no vMAC or pending, claims.
    w.expect_bound(B, at, "restart mid-claim").await;
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
    let sim = &w.sim;
    wait_for("router-003's hung POST", || {
        sim.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.mutation && r.at >= t)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = w.elect(A).await;
    w.expect_bound(A, at, "the hung claim superseded").await;
    let st = w.routers[B].status().await;
    assert_eq!(st.failover_ips[0].in_flight, None, "{st:?}");
}
