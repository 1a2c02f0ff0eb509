//! `carpd lab`: the two-router drill, with no FreeBSD and no cloud.
//!
//! Two real daemons (the same `Daemon` `carpd run` starts) run in this process, each on its
//! own simulated kernel (a state file), fake devd socket, control socket and ovh.conf, against
//! one OVH simulator on loopback. A script plays the network through the pure election model
//! ([`election`]): it sets each kernel's state and sends devd's event, as a real election
//! would. The daemons do the rest; the lab only watches what OVH ends up holding.
//!
//! Timeline: start; the preferred router (router-002) becomes MASTER and claims; it fails and
//! router-003 takes over; it returns and preempts; a split brain (both MASTER) and its
//! healing; a flap storm. Invariants, checked throughout: no vMAC is ever deleted; after each
//! step, within a bound, the failover IP is on the MASTER's vMAC and stays there. Any
//! violation makes `carpd lab` exit 1.

pub mod election;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::carp::{CarpState, GroupId};
use crate::controller::daemon::{Daemon, Settings};
use crate::devd::{BackoffPolicy, CarpEvent, ClientConfig, FakeDevd};
use crate::kernel::sim::{Flavour, SimKernel};
use crate::ovh::ClientOptions;
use crate::secrets::SecretPolicy;
use crate::sim::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

use election::Node as ElectionNode;

const SERVICE: &str = "ns1234567.ip-51-68-252.eu";
const VIP: &str = "51.68.252.230";
const GROUP: &str = "2@vmx1";
/// Simulated OVH task time: real tasks take seconds; the ratio is what matters.
const TASK: Duration = Duration::from_millis(300);
const HOLD_DOWN: Duration = Duration::from_secs(3);
/// How long the IP may take to reach the MASTER after a step (tasks, hold-down, re-check).
const BOUND: Duration = Duration::from_secs(15);

/// What `carpd lab` was asked.
#[derive(Clone, Debug)]
pub struct LabOptions {
    pub json: bool,
    /// Keep the working directory (configs, kernel state files) and say where it is.
    pub keep: bool,
    /// Events per router in the flap storm (sent within about a second).
    pub storm_events: u32,
}

/// One line of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub at_s: f64,
    pub what: String,
    pub detail: String,
}

/// The drill's result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabReport {
    pub timeline: Vec<Step>,
    /// Named measurements, milliseconds or counts.
    pub measurements: Vec<(String, f64)>,
    pub violations: Vec<String>,
}

struct Router {
    name: &'static str,
    mac: &'static str,
    advskew: u32,
    dir: PathBuf,
    kernel: SimKernel,
    devd: FakeDevd,
    daemon: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    up: bool,
    state: CarpState,
}

struct Drill {
    sim: OvhSim,
    routers: Vec<Router>,
    started: Instant,
    report: LabReport,
    partitioned: bool,
    out: Option<Box<dyn Write + Send>>,
}

fn group() -> GroupId {
    GROUP.parse().expect("a valid group")
}

fn vip() -> Ipv4Addr {
    VIP.parse().expect("a valid IP")
}

impl Router {
    fn config(&self, sim: &OvhSim) -> String {
        format!(
            "# carpd lab: {name}
node: {name}
daemon: {{ resync_interval: 1s, coalesce: 20ms }}
groups:
  - {{ interface: vmx1, vhid: 2, advskew: {advskew}, addresses: [{VIP}/32] }}
ovh:
  endpoint: {url}
  credentials: {{ file: {dir}/ovh.conf }}
  claim_deadline: 30
  recheck_interval: 1s
  hold_down: {hold}s
maintenance: {{ state_dir: {dir}/db }}
failover_ips:
  - ip: {VIP}
    group: {GROUP}
    ovh_virtual_mac: {{ service: {SERVICE}, mac: \"{mac}\", virtual_machine_name: {name} }}
",
            name = self.name,
            advskew = self.advskew,
            url = sim.base_url(),
            dir = self.dir.display(),
            hold = HOLD_DOWN.as_secs(),
            mac = self.mac,
        )
    }

    fn settings(&self) -> Settings {
        Settings {
            config_path: self.dir.join("carpd.yaml"),
            policy: SecretPolicy::default(),
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
            ovh_client: ClientOptions::default(),
        }
    }

    async fn start(&mut self) -> Result<(), String> {
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
        self.up = true;
        Ok(())
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.daemon.take() {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// The kernel changes state and devd says so.
    async fn set(&mut self, state: CarpState, event: bool) -> Result<(), String> {
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

impl Drill {
    fn log(&mut self, what: &str, detail: String) {
        let at_s = self.started.elapsed().as_secs_f64();
        if let Some(out) = self.out.as_mut() {
            let _ = writeln!(out, "{at_s:8.3} s  {what:<11} {detail}");
        }
        self.report.timeline.push(Step {
            at_s,
            what: what.to_string(),
            detail,
        });
    }

    fn measure(&mut self, name: &str, value: f64) {
        self.report.measurements.push((name.to_string(), value));
    }

    fn violation(&mut self, what: String) {
        self.log("VIOLATION", what.clone());
        self.report.violations.push(what);
    }

    fn holder(&self) -> Option<String> {
        self.sim.with_world(|w| w.holder(vip())).map(|(_, mac)| mac)
    }

    fn name_of(&self, mac: Option<&str>) -> String {
        match mac {
            None => "no vMAC".to_string(),
            Some(m) => self
                .routers
                .iter()
                .find(|r| r.mac == m)
                .map_or(m.to_string(), |r| format!("{}'s vMAC", r.name)),
        }
    }

    /// Runs the election model and plays its result on the kernels (with devd events).
    async fn elect(&mut self, preempt: bool) -> Result<Instant, String> {
        let nodes: Vec<ElectionNode> = self
            .routers
            .iter()
            .map(|r| ElectionNode {
                up: r.up,
                advskew: r.advskew,
            })
            .collect();
        let before: Vec<CarpState> = self.routers.iter().map(|r| r.state).collect();
        let after = election::elect(&nodes, &before, self.partitioned, preempt);
        let at = Instant::now();
        for (r, s) in self.routers.iter_mut().zip(&after) {
            if r.up && r.state != *s {
                r.set(*s, true).await?;
            }
        }
        let states: Vec<String> = self
            .routers
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.name,
                    if r.up { r.state.as_str() } else { "down" }
                )
            })
            .collect();
        self.log("election", states.join(", "));
        Ok(at)
    }

    /// Waits until the IP is on `mac` and stays there for `settle`; records latencies from
    /// `since` (the devd event).
    async fn expect_bound(&mut self, who: usize, since: Instant, label: &str) {
        let mac = self.routers[who].mac;
        let name = self.routers[who].name;
        let deadline = since + BOUND;
        let bound_at = loop {
            if self.holder().as_deref() == Some(mac) {
                break Some(Instant::now());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let Some(bound_at) = bound_at else {
            let h = self.holder();
            let h = self.name_of(h.as_deref());
            self.violation(format!(
                "{label}: {VIP} not on {name}'s vMAC within {BOUND:?} (it is on {h})"
            ));
            return;
        };
        let first = self
            .sim
            .requests()
            .iter()
            .filter(|r| r.mutation && r.at >= since)
            .map(|r| r.at)
            .min();
        let took = bound_at - since;
        let mut detail = format!(
            "{VIP} on {name}'s vMAC {:.0} ms after the event",
            took.as_secs_f64() * 1000.0
        );
        if let Some(first) = first.filter(|f| *f <= bound_at) {
            let react = first - since;
            detail.push_str(&format!(
                " (first OVH change after {:.2} ms; beyond the 2 tasks of {} ms: {:.0} ms)",
                react.as_secs_f64() * 1000.0,
                TASK.as_millis(),
                (took.as_secs_f64() - 2.0 * TASK.as_secs_f64()).max(0.0) * 1000.0
            ));
            self.measure(
                &format!("{label}: event -> first OVH change (ms)"),
                react.as_secs_f64() * 1000.0,
            );
        }
        self.measure(
            &format!("{label}: event -> bound (ms)"),
            took.as_secs_f64() * 1000.0,
        );
        self.log("bound", detail);
        // It must stay there (no ping-pong after the step).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if self.holder().as_deref() != Some(mac) {
            let h = self.holder();
            let h = self.name_of(h.as_deref());
            self.violation(format!(
                "{label}: {VIP} left {name}'s vMAC again (now on {h})"
            ));
        }
    }
}

/// Runs the drill, printing the timeline to `out` (unless JSON is asked, then the report
/// is printed at the end). Returns whether every invariant held.
pub async fn run(opts: &LabOptions, mut out: Box<dyn Write + Send>) -> Result<bool, String> {
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
        w.task_delay = TASK;
        // router-003's vMAC holds the failover IP at start: the preferred router must claim.
        w.add_vmac(SERVICE, plan[0].1, &[plan[0].2.parse().expect("ip")]);
        w.add_vmac(SERVICE, plan[1].1, &[plan[1].2.parse().expect("ip"), vip()]);
    });
    let mut routers = Vec::new();
    for (name, mac, _, advskew) in plan {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        write_private(
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
        };
        write_private(&r.dir.join("carpd.yaml"), &r.config(&sim))?;
        routers.push(r);
    }
    if !opts.json {
        let _ = writeln!(
            out,
            "carpd lab: two routers on simulated FreeBSD kernels, one failover IP ({VIP}), the OVH simulator at {} (tasks take {} ms), credentials in each router's ovh.conf",
            sim.base_url(),
            TASK.as_millis()
        );
    }
    let mut d = Drill {
        sim,
        routers,
        started: Instant::now(),
        report: LabReport::default(),
        partitioned: false,
        out: if opts.json { None } else { Some(out) },
    };

    let result = script(&mut d, opts).await;
    for r in &mut d.routers {
        r.stop().await;
    }
    if let Err(e) = result {
        d.violation(format!("the drill could not run: {e}"));
    }
    // The simulator records every vMAC it deletes: none may be.
    let deleted = d.sim.with_world(|w| w.deleted_vmacs.clone());
    if !deleted.is_empty() {
        d.violation(format!("vMAC(s) deleted: {}", deleted.join(", ")));
    }
    let ok = d.report.violations.is_empty();
    let report = std::mem::take(&mut d.report);
    let mut out = d.out.take();
    if opts.keep {
        let kept = tmp.keep();
        if let Some(o) = out.as_mut() {
            let _ = writeln!(o, "working directory kept: {}", kept.display());
        }
    }
    match out {
        Some(mut o) => {
            let _ = writeln!(o, "\nmeasurements:");
            for (k, v) in &report.measurements {
                let _ = writeln!(o, "  {k}: {v:.2}");
            }
            let _ = writeln!(
                o,
                "\ninvariants: {}",
                if ok {
                    "all held (the IP followed the MASTER after every step; no vMAC deleted)"
                        .to_string()
                } else {
                    format!("{} VIOLATED", report.violations.len())
                }
            );
        }
        None => {
            let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
            let mut o = std::io::stdout();
            let _ = writeln!(o, "{text}");
        }
    }
    Ok(ok)
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn script(d: &mut Drill, opts: &LabOptions) -> Result<(), String> {
    const A: usize = 0;
    const B: usize = 1;
    // 1. Start: both daemons up, both BACKUP.
    for i in [A, B] {
        // The daemon creates the vhid (apply at start-up); the network then makes it BACKUP.
        d.routers[i].start().await?;
        d.routers[i].set(CarpState::Backup, true).await?;
    }
    let h = d.holder();
    let h = d.name_of(h.as_deref());
    d.log(
        "start",
        format!("router-002 (advskew 0) and router-003 (advskew 100) run carpd, both BACKUP; {VIP} is on {h}"),
    );
    // Let the start-up checks warm the binding cache, as on a real router.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. The preferred router wins the election and claims.
    let at = d.elect(true).await?;
    d.expect_bound(A, at, "election").await;

    // 3. It fails: its daemon and kernel stop; the peer takes over.
    d.routers[A].stop().await;
    d.routers[A].up = false;
    d.routers[A].set(CarpState::Init, false).await?;
    d.log(
        "fail",
        "router-002 goes down (carpd stopped, vhid INIT)".into(),
    );
    let at = d.elect(true).await?;
    d.expect_bound(B, at, "failover").await;

    // 4. It returns and preempts.
    d.routers[A].start().await?;
    d.routers[A].set(CarpState::Backup, true).await?;
    d.log(
        "return",
        "router-002 is back (carpd started, BACKUP)".into(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = d.elect(true).await?;
    d.expect_bound(A, at, "preempt").await;

    // 5. Split brain: the routers stop hearing each other; both are MASTER and both claim.
    let mutations_before = d.sim.mutations();
    d.partitioned = true;
    d.log(
        "partition",
        "the CARP link between the routers is cut".into(),
    );
    let _ = d.elect(true).await?;
    let split = Duration::from_secs(7);
    tokio::time::sleep(split).await;
    let moves = d.sim.mutations() - mutations_before;
    d.measure("split brain: OVH changes in 7 s", moves as f64);
    // Each MASTER moves the IP at most once per hold-down (2 changes per move) plus its
    // first claim: anything more is the ping-pong the hold-down exists to stop.
    let allowed = 2 * 2 * (split.as_secs() / HOLD_DOWN.as_secs() + 1) as usize;
    d.log(
        "split brain",
        format!(
            "both MASTER for {} s: {moves} OVH changes (hold-down {} s allows at most {allowed})",
            split.as_secs(),
            HOLD_DOWN.as_secs()
        ),
    );
    if moves > allowed {
        d.violation(format!(
            "split brain: {moves} OVH changes in {} s, more than the hold-down allows ({allowed})",
            split.as_secs()
        ));
    }
    d.partitioned = false;
    d.log("heal", "the link is back".into());
    let at = d.elect(true).await?;
    d.expect_bound(A, at, "heal").await;

    // 6. Flap storm: the link flaps; each router's vhid alternates and devd reports every
    // flip, `storm_events` events per router within about a second.
    let mutations_before = d.sim.mutations();
    let n = opts.storm_events.max(2);
    let started = Instant::now();
    for i in 0..n {
        // The kernel's truth changes every 50 events (every few ms); devd repeats it.
        let flip = (i / 50) % 2 == 1;
        let (sa, sb) = if flip {
            (CarpState::Backup, CarpState::Master)
        } else {
            (CarpState::Master, CarpState::Backup)
        };
        let kernel_changes = i % 50 == 0;
        for (r, s) in [(A, sa), (B, sb)] {
            if kernel_changes {
                d.routers[r].set(s, true).await?;
            } else {
                d.routers[r]
                    .devd
                    .send_event(&CarpEvent::new(group(), s))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        // Pace to about a second in all.
        let due = started + Duration::from_secs(1).mul_f64(f64::from(i) / f64::from(n));
        if let Some(wait) = due.checked_duration_since(Instant::now())
            && wait > Duration::from_millis(1)
        {
            tokio::time::sleep(wait).await;
        }
    }
    let storm = started.elapsed();
    // The storm ends with router-002 MASTER.
    for (r, s) in [(A, CarpState::Master), (B, CarpState::Backup)] {
        d.routers[r].set(s, true).await?;
    }
    d.log(
        "flap storm",
        format!(
            "{n} events per router in {:.2} s, the vhid flipping every 50; ends with router-002 MASTER",
            storm.as_secs_f64()
        ),
    );
    let at = Instant::now();
    d.expect_bound(A, at, "after the flap storm").await;
    tokio::time::sleep(HOLD_DOWN).await;
    let changes = d.sim.mutations() - mutations_before;
    d.measure("flap storm: OVH changes", changes as f64);
    d.log(
        "storm done",
        format!("{changes} OVH changes during and after the storm (target: at most 3)"),
    );
    Ok(())
}
