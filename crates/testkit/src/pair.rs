//! Two routers with carpd on simulated kernels and one OVH simulator: the set-up the lab
//! drill ([`super`]) and the failover benchmark (`benches/failover.rs`) share.
//!
//! Each router has its own working directory (carpd.yaml, ovh.conf, kernel state file, devd
//! and control sockets); its daemon is the same `Daemon` `carpd run` starts, in this process.
//! router-002 is preferred (advskew 0); router-003's vMAC holds the failover IP at start.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::bao::{self, Bao};
use crate::devd::FakeDevd;
use crate::try_write_private;

use crate::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
use carpd::carp::{CarpState, GroupId};
use carpd::daemon::{Daemon, Settings};
use carpd::devd::{BackoffPolicy, CarpEvent, ClientConfig};
use carpd::kernel::Kernel;
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::ovh::ClientOptions;
use carpd::secrets::SecretPolicy;

pub const SERVICE: &str = "ns1234567.ip-51-68-252.eu";
pub const VIP: &str = "51.68.252.230";
pub const GROUP: &str = "2@vmx1";

/// Timings of the pair.
#[derive(Clone, Copy, Debug)]
pub struct PairOptions {
    /// Simulated OVH task time.
    pub task: Duration,
    pub hold_down: Duration,
    /// `ovh.recheck_interval`.
    pub recheck: Duration,
    /// `readiness.interval`.
    pub readiness: Duration,
    /// Keep the OVH credentials in a real OpenBao (AppRole login through a secretsmith file)
    /// when a `bao` binary is installed; else in each router's ovh.conf.
    pub vault: bool,
    /// The daemons' OVH rate limit (the default keeps under OVH's advice; benchmarks that
    /// repeat failovers back to back lift it so they measure carpd, not the budget).
    pub rate: carpd::ovh::policy::RateLimit,
    /// Failover IPs following the group: [`VIP`] and `ips - 1` more ([`vips`]); 0 counts
    /// as 1.
    pub ips: usize,
}

/// The two routers and the simulator.
pub struct Pair {
    pub sim: OvhSim,
    pub routers: Vec<Router>,
    /// The OpenBao holding the OVH credentials, when one runs.
    pub vault: Option<Bao>,
    tmp: Option<tempfile::TempDir>,
}

/// One router: its simulated kernel, its fake devd, and its daemon when running.
pub struct Router {
    pub name: &'static str,
    pub mac: &'static str,
    pub advskew: u32,
    pub dir: PathBuf,
    pub kernel: SimKernel,
    pub devd: FakeDevd,
    daemon: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    pub up: bool,
    pub state: CarpState,
    rate: carpd::ovh::policy::RateLimit,
    /// With a Vault: the URL and this router's secretsmith file.
    vault: Option<(String, PathBuf)>,
}

pub fn group() -> GroupId {
    GROUP.parse().expect("a valid group")
}

pub fn vip() -> Ipv4Addr {
    VIP.parse().expect("a valid IP")
}

/// The pair's `n` failover IPs: [`VIP`], then the addresses after it (51.68.252.231, ...).
pub fn vips(n: usize) -> Vec<Ipv4Addr> {
    let base = u32::from(vip());
    (0..n.max(1) as u32)
        .map(|i| Ipv4Addr::from(base + i))
        .collect()
}

impl Router {
    fn config(&self, sim: &OvhSim, o: &PairOptions) -> String {
        format!(
            "# carpd-lab: {name}
node: {name}
daemon: {{ resync_interval: 1s, coalesce: 20ms }}
groups:
  - {{ interface: vmx1, vhid: 2, advskew: {advskew}, addresses: [{VIP}/32] }}
ovh:
  endpoint: {url}
  credentials: {credentials}
  claim_deadline: 30
  recheck_interval: {recheck}ms
  hold_down: {hold}ms
readiness: {{ interval: {readiness}ms }}
{vault}maintenance: {{ state_dir: {dir}/db }}
failover_ips:
{failover}",
            name = self.name,
            advskew = self.advskew,
            url = sim.base_url(),
            dir = self.dir.display(),
            credentials = match &self.vault {
                Some(_) => format!("{{ vault: {} }}", OVH_SECRET),
                None => format!("{{ file: {}/ovh.conf }}", self.dir.display()),
            },
            vault = match &self.vault {
                Some((_, smith)) => format!(
                    "vault: {{ secretsmith: {}, timeout: 5 }}\n",
                    smith.display()
                ),
                None => String::new(),
            },
            hold = o.hold_down.as_millis(),
            recheck = o.recheck.as_millis(),
            readiness = o.readiness.as_millis(),
            failover = vips(o.ips)
                .iter()
                .map(|ip| format!(
                    "  - ip: {ip}\n    group: {GROUP}\n    ovh_virtual_mac: {{ service: {SERVICE}, mac: \"{mac}\", virtual_machine_name: {name} }}\n",
                    mac = self.mac,
                    name = self.name,
                ))
                .collect::<String>(),
        )
    }

    fn settings(&self) -> Settings {
        Settings {
            config_path: self.dir.join("carpd.yaml"),
            // The lab writes its secret files itself (0600); a non-root user owns them.
            policy: SecretPolicy {
                allow_insecure_files: unsafe { libc::geteuid() } != 0,
            },
            apply: true,
            control_socket: self.dir.join("carpd.sock"),
            devd: ClientConfig {
                socket: self.dir.join("devd.pipe"),
                backoff: BackoffPolicy {
                    initial: Duration::from_millis(5),
                    max: Duration::from_millis(100),
                    stable_after: Duration::from_secs(60),
                },
            },
            ovh_client: ClientOptions {
                rate: self.rate,
                // A lifted steady budget lifts the failover's with it.
                failover_rate: carpd::ovh::policy::RateLimit::failover(
                    (self.rate.burst + self.rate.per_minute)
                        .max(carpd::ovh::policy::DEFAULT_FAILOVER_PER_MINUTE),
                ),
                ..ClientOptions::default()
            },
        }
    }

    /// Starts the daemon and waits until it is connected to its devd.
    pub async fn start(&mut self) -> Result<(), String> {
        let k = SimKernel::open(Flavour::FreeBsd14, Some(self.dir.join("kernel.json")))
            .map_err(|e| e.to_string())?;
        let (tx, mut notes) = mpsc::unbounded_channel();
        let daemon = Daemon::start(self.settings(), Box::new(k))
            .map_err(|e| format!("{}: {e}", self.name))?
            .with_notes(tx);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon.run(async move {
            let _ = stopped.await;
        }));
        // Notes are for tests; the lab watches OVH instead. Drain them.
        tokio::spawn(async move { while notes.recv().await.is_some() {} });
        self.daemon = Some((stop, task));
        tokio::time::timeout(Duration::from_secs(10), self.devd.wait_for_clients(1))
            .await
            .map_err(|_| format!("{}: the daemon did not connect to devd", self.name))?
            .map_err(|e| e.to_string())?;
        // Connecting to devd and applying the configuration run side by side: wait for the
        // vhid the daemon creates, so the network can set its state.
        let g = group();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !matches!(self.kernel.group(&g.ifname, g.vhid), Ok(Some(_))) {
            if std::time::Instant::now() > deadline {
                return Err(format!("{}: the daemon did not create {GROUP}", self.name));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.up = true;
        Ok(())
    }

    /// Stops the daemon (as SIGTERM would).
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.daemon.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// The kernel changes state and devd says so.
    pub async fn set(&mut self, state: CarpState, event: bool) -> Result<(), String> {
        let g = group();
        self.kernel
            .set_state(&g.ifname, g.vhid, state)
            .map_err(|e| e.to_string())?;
        self.state = state;
        if event && self.daemon.is_some() {
            self.devd
                .send_event(&CarpEvent::new(g, state))
                .await
                .map_err(|e| format!("{}: devd: {e}", self.name))?;
        }
        Ok(())
    }
}

impl Pair {
    /// Creates both routers' files and the simulator's account; no daemon runs yet.
    pub async fn start(o: PairOptions) -> Result<Pair, String> {
        let tmp = tempfile::Builder::new()
            .prefix("carpd-lab.")
            .tempdir()
            .map_err(|e| format!("cannot create a working directory: {e}"))?;
        let base = tmp.path().to_path_buf();
        let sim = OvhSim::start(SimConfig::default())
            .await
            .map_err(|e| format!("cannot start the OVH simulator: {e}"))?;
        let plan: [(&'static str, &'static str, &'static str, u32); 2] = [
            ("router-002", "02:00:00:00:00:02", "178.32.70.110", 0),
            ("router-003", "02:00:00:00:00:03", "178.32.70.111", 100),
        ];
        sim.with_world(|w| {
            w.task_delay = o.task;
            // router-003's vMAC holds the failover IP at start: the preferred router must claim.
            w.add_vmac(SERVICE, plan[0].1, &[plan[0].2.parse().expect("ip")]);
            let mut held: Vec<Ipv4Addr> = vec![plan[1].2.parse().expect("ip")];
            held.extend(vips(o.ips));
            w.add_vmac(SERVICE, plan[1].1, &held);
        });
        let vault = if o.vault { start_vault().await? } else { None };
        let mut routers = Vec::new();
        for (name, mac, _, advskew) in plan {
            let dir = base.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            try_write_private(
                &dir.join("ovh.conf"),
                &format!(
                    "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}\n",
                    sim.base_url()
                ),
            )?;
            let kernel = SimKernel::open(Flavour::FreeBsd14, Some(dir.join("kernel.json")))
                .map_err(|e| e.to_string())?;
            let devd = FakeDevd::bind(dir.join("devd.pipe")).map_err(|e| e.to_string())?;
            let r = Router {
                name,
                mac,
                advskew,
                dir,
                kernel,
                devd,
                daemon: None,
                up: false,
                state: CarpState::Init,
                rate: o.rate,
                vault: None,
            };
            let mut r = r;
            if let Some(v) = &vault {
                let smith = r.dir.join("secretsmith.yaml");
                vault_secretsmith(v, &smith).await?;
                r.vault = Some((v.url.clone(), smith));
            }
            try_write_private(&r.dir.join("carpd.yaml"), &r.config(&sim, &o))?;
            routers.push(r);
        }
        Ok(Pair {
            sim,
            routers,
            vault,
            tmp: Some(tmp),
        })
    }

    /// The vMAC holding the failover IP.
    pub fn holder(&self) -> Option<String> {
        self.sim.with_world(|w| w.holder(vip())).map(|(_, mac)| mac)
    }

    /// How many of the first `n` failover IPs ([`vips`]) `mac` holds.
    pub fn held_by(&self, mac: &str, n: usize) -> usize {
        let ips = vips(n);
        self.sim.with_world(|w| {
            ips.iter()
                .filter(|ip| w.holder(**ip).is_some_and(|(_, m)| m == mac))
                .count()
        })
    }

    /// A flap storm: `n` events per router paced over about a second, the two vhids in
    /// opposite states flipping every 50 events (the kernel's truth changes every few
    /// milliseconds, devd repeats it in between). Returns how long it took.
    pub async fn flap_storm(&mut self, a: usize, b: usize, n: u32) -> Result<Duration, String> {
        let n = n.max(2);
        let started = std::time::Instant::now();
        for i in 0..n {
            let flip = (i / 50) % 2 == 1;
            let (sa, sb) = if flip {
                (CarpState::Backup, CarpState::Master)
            } else {
                (CarpState::Master, CarpState::Backup)
            };
            for (r, s) in [(a, sa), (b, sb)] {
                if i % 50 == 0 {
                    self.routers[r].set(s, true).await?;
                } else {
                    self.routers[r]
                        .devd
                        .send_event(&CarpEvent::new(group(), s))
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            let due = started + Duration::from_secs(1).mul_f64(f64::from(i) / f64::from(n));
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now())
                && wait > Duration::from_millis(1)
            {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Keeps the working directory after the pair is dropped; returns its path.
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.tmp.take().map(tempfile::TempDir::keep)
    }

    /// Stops both daemons.
    pub async fn stop(&mut self) {
        for r in &mut self.routers {
            r.stop().await;
        }
    }
}

/// Where the pair's OVH credentials live in Vault (kv-v2 `apps`), as in the deployment.
pub const OVH_SECRET: &str = "apps/network/carp-hyper-001-switch";

/// A real OpenBao set up the deployment's way (AppRole `router` whose policy reads exactly
/// the OVH credentials, kv-v2 mount `apps`) holding the simulator's keys; `None` when no
/// `bao` is installed (the routers then keep the keys in ovh.conf).
async fn start_vault() -> Result<Option<Bao>, String> {
    let Some(bin) = bao::find_binary() else {
        return Ok(None);
    };
    let v = Bao::launch(&bin, bao::free_port_pair(), false).await?;
    v.deployment("300s", "600s").await?;
    v.try_ok(
        "POST",
        "apps/data/network/carp-hyper-001-switch",
        Some(json!({"data": {
            "application_key": TEST_AK,
            "application_secret": TEST_AS,
            "consumer_key": TEST_CK,
        }})),
    )
    .await?;
    Ok(Some(v))
}

/// A secretsmith file (mode 0600) with a fresh AppRole secret_id for one router.
async fn vault_secretsmith(v: &Bao, path: &Path) -> Result<(), String> {
    let role = v
        .try_ok("GET", "auth/approle/role/router/role-id", None)
        .await?;
    let secret = v
        .try_ok(
            "POST",
            "auth/approle/role/router/secret-id",
            Some(json!({})),
        )
        .await?;
    let (Some(role), Some(secret)) = (
        role["data"]["role_id"].as_str(),
        secret["data"]["secret_id"].as_str(),
    ) else {
        return Err("OpenBao gave no role_id or secret_id".into());
    };
    try_write_private(
        path,
        &format!(
            "vault:\n  server:\n    url: {}\n  auth:\n    method: approle\n    role_id: {role}\n    secret_id: {secret}\n",
            v.url
        ),
    )
}
