//! Two real `carpd run` processes (router-002 preferred, router-003), a real OpenBao dev
//! server holding the OVH credentials (AppRole login through secretsmith files), and the OVH
//! simulator on loopback: the end-to-end world of `tests/e2e.rs` and `tests/lifecycle.rs`.
//! Each router's CARP state lives in a simulated kernel (a state file) that the test drives
//! as an election would, telling the daemon through its own fake devd socket — the daemons
//! read the truth from the kernel, as on FreeBSD.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::devd::FakeDevd;
use crate::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
use carpd::carp::{CarpState, GroupId};
use carpd::control::{self, Reply, Request};
use carpd::devd::CarpEvent;
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::observe::daemon_view::DaemonView;

use crate::bao::Bao;
use crate::write_private;

pub const SN: &str = "ns1234567.ip-51-68-252.eu";
pub const VIP: &str = "51.68.252.230";
pub const GROUP: &str = "2@vmx1";
pub const OVH_PATH: &str = "network/carp-hyper-001-switch";
/// Simulated OVH task time.
pub const TASK: Duration = Duration::from_millis(200);
/// How long the IP may take to reach the MASTER after a step.
pub const BOUND: Duration = Duration::from_secs(20);

pub fn group() -> GroupId {
    GROUP.parse().unwrap()
}

pub struct Router {
    pub name: &'static str,
    pub mac: &'static str,
    pub dir: PathBuf,
    pub kernel: SimKernel,
    pub devd: FakeDevd,
    pub child: Option<Child>,
}

impl Router {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("carpd.log")).unwrap_or_default()
    }

    /// Starts `carpd run` and waits until it listens and has connected to devd.
    pub async fn spawn(&mut self) {
        // A killed daemon leaves its socket file: remove it so "exists" means "this one".
        let _ = std::fs::remove_file(self.dir.join("carpd.sock"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("carpd.log"))
            .unwrap();
        let child = Command::new(crate::carpd_bin())
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

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The network sets this router's vhid; devd reports it when `event`.
    pub async fn set(&mut self, state: CarpState, event: bool) {
        let g = group();
        self.kernel.set_state(&g.ifname, g.vhid, state).unwrap();
        if event && self.child.is_some() {
            let _ = self.devd.send_event(&CarpEvent::new(g, state)).await;
        }
    }

    pub async fn status(&self) -> DaemonView {
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

pub struct World {
    pub _dir: tempfile::TempDir,
    pub bao: Bao,
    pub sim: OvhSim,
    pub routers: Vec<Router>,
}

/// [`crate::wait_until`] with this world's bound.
pub async fn wait_for(what: &str, f: impl FnMut() -> bool) {
    crate::wait_until(what, BOUND, f).await
}

/// OpenBao with the deployment's AppRole and the simulator's keys, the simulator with the
/// IP on router-003's vMAC, and both routers started BACKUP. `vault_extra` goes into each
/// router's `vault:` section.
pub async fn world(vault_extra: &str) -> World {
    world_with(vault_extra, "").await
}

/// [`world`] with `daemon_extra` added to each router's `daemon:` flow mapping (for
/// example `stop_grace: 2s`).
pub async fn world_with(vault_extra: &str, daemon_extra: &str) -> World {
    let daemon_extra = if daemon_extra.is_empty() {
        String::new()
    } else {
        format!(", {daemon_extra}")
    };
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
daemon: {{ resync_interval: 1s, coalesce: 20ms{daemon_extra} }}
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

pub async fn wait_checked(r: &Router) {
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
    pub fn holder(&self) -> Option<String> {
        self.sim
            .with_world(|w| w.holder(VIP.parse().unwrap()))
            .map(|(_, m)| m)
    }

    /// The invariant: the IP reaches `who`'s vMAC within [`BOUND`] and stays 1.5 s; no vMAC
    /// was ever deleted. Returns the time from `since` to bound.
    pub async fn expect_bound(&self, who: usize, since: Instant, step: &str) -> Duration {
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

    pub async fn elect(&mut self, master: usize) -> Instant {
        let at = Instant::now();
        let backup = 1 - master;
        self.routers[backup].set(CarpState::Backup, true).await;
        self.routers[master].set(CarpState::Master, true).await;
        at
    }
}

pub fn assert_no_secrets(text: &str, what: &str) {
    for s in [TEST_AS, TEST_CK] {
        assert!(!text.contains(s), "{what} contains a secret");
    }
}

pub const A: usize = 0;
pub const B: usize = 1;

impl World {
    /// Waits until OVH accepted a `method` mutation at or after `since` (`what` names it in
    /// the timeout's message).
    pub async fn accepted(&self, method: &str, since: Instant, what: &str) {
        let sim = &self.sim;
        wait_for(what, || {
            sim.requests()
                .iter()
                .any(|r| r.method == method && r.mutation && r.at >= since)
        })
        .await;
    }
}

impl Router {
    /// Sends `sig` to the running daemon.
    pub fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id();
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
        assert_eq!(r, 0, "kill({pid}, {sig})");
    }

    /// Waits for the daemon to exit; returns its exit status and when it exited, or panics
    /// after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Instant) {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let at = Instant::now();
                self.child = None;
                return (status, at);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Rewrites this router's carpd.yaml with `f`.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let path = self.dir.join("carpd.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, f(text)).unwrap();
    }
}
