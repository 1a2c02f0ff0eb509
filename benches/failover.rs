//! Failover benchmark (harness = false): the whole path, devd event to OVH, against the
//! status quo of a fresh process per event. Run: `cargo bench --bench failover` (or
//! `scripts/bench`, which runs every benchmark); the report is bench/README.md.
//!
//! Two in-process daemons on simulated kernels and the OVH simulator on loopback
//! (`carpd_testkit::pair`, the lab's set-up), with simulated OVH tasks of 300 ms:
//! 1. reaction: devd MASTER event -> first mutating OVH request received by the simulator,
//!    warm (credentials, connection and binding known from the checks while BACKUP);
//! 2. event -> IP bound and verified, beyond the two simulated task times;
//! 3. flap storm: 10,000 alternating events per router within a second -> OVH mutations;
//! 4. status quo: the same claim by a fresh `carpd failover-ip claim` process per event (what
//!    a devd action running a script does: start, read credentials, find the IP, claim);
//! 5. the idle `carpd run` process with failover IPs: RSS and wake-ups;
//! 6. a series of failovers 12 s apart under the default request budget (60 a minute, the
//!    periodic checks running): event -> first OVH request, -> first mutation, the worst
//!    event -> bound against the two task times, and the requests each claim cost.
//!    `cargo bench --bench failover -- series` runs this phase alone.
//! 7. many failover IPs on one group (issue 21): 1, 4 and 16 IPs following one vhid, tasks of
//!    0.2 s and 2 s, the budgets lifted and checks on: MASTER event -> the last IP
//!    bound, against twice the task time, and the OVH requests of the failover per IP
//!    (both routers, from the event to the last IP bound and read back), with where they
//!    went (by method and path shape) and when the writes reached the simulator.
//!    `cargo bench --bench failover -- group` runs this phase alone;
//!    `CARPD_BENCH_GROUP=16x200` one size and task time (ms); `CARPD_BENCH_TRACE=1` prints
//!    the log of a run that had a refused request.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carpd::carp::CarpState;
use carpd::devd::CarpEvent;
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::ovh::policy::RateLimit;
use carpd_testkit::pair::{GROUP, Pair, PairOptions, SERVICE, VIP, group};

const BIN: &str = env!("CARGO_BIN_EXE_carpd");
const TASK: Duration = Duration::from_millis(300);
const RUNS: usize = 30;

fn pct(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn first_mutation_after(pair: &Pair, t0: Instant) -> Option<Instant> {
    pair.sim
        .requests()
        .iter()
        .filter(|r| r.mutation && r.at >= t0)
        .map(|r| r.at)
        .min()
}

async fn wait_holder(pair: &Pair, mac: &str, limit: Duration) -> Option<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if pair.holder().as_deref() == Some(mac) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    None
}

struct Figures {
    reaction: Vec<Duration>,
    beyond: Vec<Duration>,
    storm_mutations: Vec<usize>,
}

async fn daemon_path() -> Figures {
    let mut pair = Pair::start(PairOptions {
        task: TASK,
        hold_down: Duration::from_secs(1),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        // Failovers back to back: lift the budget so the figures are carpd's own.
        vault: false,
        rate: RateLimit {
            burst: 1000,
            per_minute: 6000,
        },
        ips: 1,
    })
    .await
    .expect("pair");
    for r in &mut pair.routers {
        r.start().await.expect("daemon");
        r.set(CarpState::Backup, true).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut f = Figures {
        reaction: Vec::new(),
        beyond: Vec::new(),
        storm_mutations: Vec::new(),
    };
    // Alternate: each run the BACKUP router wins. The loser looks where the IP went 2 s
    // after losing (AFTER_LOSS), so the next winner starts from a warm binding.
    for i in 0..RUNS {
        let (win, lose) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        pair.routers[lose]
            .set(CarpState::Backup, true)
            .await
            .unwrap();
        // The network's part (the kernel's new state) first; the clock starts with devd's
        // event, as on a router.
        pair.routers[win]
            .set(CarpState::Master, false)
            .await
            .unwrap();
        let t0 = Instant::now();
        pair.routers[win]
            .devd
            .send_event(&CarpEvent::new(group(), CarpState::Master))
            .await
            .unwrap();
        let mac = pair.routers[win].mac;
        let Some(bound) = wait_holder(&pair, mac, Duration::from_secs(10)).await else {
            eprintln!("run {i}: not bound within 10 s");
            continue;
        };
        if let Some(first) = first_mutation_after(&pair, t0) {
            f.reaction.push(first - t0);
        }
        f.beyond.push((bound - t0).saturating_sub(2 * TASK));
        tokio::time::sleep(Duration::from_millis(2600)).await;
    }
    // Flap storms, each ending with the other router MASTER.
    for k in 0..3 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = pair.sim.mutations();
        let (a, b) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
        pair.flap_storm(a, b, 10_000).await.unwrap();
        pair.routers[a].set(CarpState::Backup, true).await.unwrap();
        pair.routers[b].set(CarpState::Master, true).await.unwrap();
        let mac = pair.routers[b].mac;
        if wait_holder(&pair, mac, Duration::from_secs(15))
            .await
            .is_none()
        {
            eprintln!("storm {k}: not bound to the final MASTER");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        f.storm_mutations.push(pair.sim.mutations() - before);
    }
    pair.stop().await;
    f
}

/// The status quo: a fresh process per MASTER event, as a devd action would start. With
/// `vault`, the process logs in to OpenBao (AppRole, secretsmith file) and reads the OVH
/// credentials first, as the deployment does (the lab's set-up: `None` when no OpenBao is
/// installed); else it reads an ovh.conf.
async fn status_quo(dir: &Path, vault: bool) -> Option<(Vec<Duration>, Vec<Duration>)> {
    let mut pair = Pair::start(PairOptions {
        task: TASK,
        hold_down: Duration::from_secs(1),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        vault,
        rate: RateLimit::default(),
        ips: 1,
    })
    .await
    .expect("pair");
    // The routers' files are reused for the CLI; no daemon runs.
    let cfg = pair.routers[0].dir.join("carpd.yaml");
    if vault && pair.vault.is_none() {
        return None;
    }
    let state = dir.join("quo-kernel.json");
    let k = SimKernel::open(Flavour::FreeBsd14, Some(state.clone())).unwrap();
    let apply = Command::new(BIN)
        .arg("-c")
        .arg(&cfg)
        .args(["--kernel", "sim", "--sim-state"])
        .arg(&state)
        .arg("apply")
        .output()
        .unwrap();
    assert!(apply.status.success(), "{apply:?}");
    let g: carpd::carp::GroupId = GROUP.parse().unwrap();
    k.set_state(&g.ifname, g.vhid, CarpState::Master).unwrap();
    let (ours, peer) = (pair.routers[0].mac, pair.routers[1].mac);
    let mut reaction = Vec::new();
    let mut beyond = Vec::new();
    for _ in 0..10 {
        // Put the IP back on the peer.
        pair.sim.with_world(|w| {
            let now = Instant::now();
            w.task_delay = Duration::ZERO;
            let ip = VIP.parse().unwrap();
            if w.holder(ip).is_some_and(|(_, m)| m == ours) {
                w.remove_ip(now, SERVICE, ours, ip).unwrap();
                w.advance(now);
                w.add_ip(now, SERVICE, peer, ip, "router-003").unwrap();
                w.advance(now);
            }
            w.task_delay = TASK;
        });
        // The simulator runs on this thread's runtime: wait for the child off it.
        let (cfg2, state2) = (cfg.clone(), state.clone());
        let t0 = Instant::now();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BIN)
                .arg("-c")
                .arg(&cfg2)
                .args(["--kernel", "sim", "--allow-insecure-files", "--sim-state"])
                .arg(&state2)
                .args(["failover-ip", "claim", VIP])
                .env_clear()
                .stdout(Stdio::null())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let end = Instant::now();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(first) = first_mutation_after(&pair, t0) {
            reaction.push(first - t0);
        }
        beyond.push((end - t0).saturating_sub(2 * TASK));
    }
    pair.stop().await;
    Some((reaction, beyond))
}

/// A real `carpd run` with a failover IP, left alone: RSS and wake-ups per second.
async fn idle(dir: &Path) -> Option<(f64, f64)> {
    let mut pair = Pair::start(PairOptions {
        task: TASK,
        hold_down: Duration::from_secs(60),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        vault: false,
        rate: RateLimit::default(),
        ips: 1,
    })
    .await
    .ok()?;
    let r = &mut pair.routers[0];
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(r.dir.join("carpd.yaml"))
        .args(["--kernel", "sim", "--sim-state"])
        .arg(r.dir.join("kernel.json"))
        .arg("--control-socket")
        .arg(dir.join("idle.sock"))
        .args(["--log-target", "stderr", "run", "--devd-socket"])
        .arg(r.dir.join("devd.pipe"))
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = child.id();
    let a = common::proc_sample(pid);
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let b = common::proc_sample(pid);
    let _ = child.kill();
    let _ = child.wait();
    let (a, b) = (a?, b?);
    Some((
        b.rss_kib as f64 / 1024.0,
        (b.switches - a.switches) as f64 / window.as_secs_f64(),
    ))
}

/// Phase 6 (issue 15): failovers 12 s apart, default budget, checks on.
struct Series {
    first_request: Vec<Duration>,
    first_mutation: Vec<Duration>,
    bound: Vec<Duration>,
    requests: Vec<usize>,
}

const SERIES_RUNS: usize = 8;
const SERIES_GAP: Duration = Duration::from_secs(12);

async fn series() -> Series {
    let mut pair = Pair::start(PairOptions {
        task: TASK,
        hold_down: Duration::from_secs(1),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        vault: false,
        rate: RateLimit::default(),
        ips: 1,
    })
    .await
    .expect("pair");
    for r in &mut pair.routers {
        r.start().await.expect("daemon");
        r.set(CarpState::Backup, true).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut s = Series {
        first_request: Vec::new(),
        first_mutation: Vec::new(),
        bound: Vec::new(),
        requests: Vec::new(),
    };
    for i in 0..SERIES_RUNS {
        let started = Instant::now();
        let (win, lose) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        pair.routers[lose]
            .set(CarpState::Backup, true)
            .await
            .unwrap();
        pair.routers[win]
            .set(CarpState::Master, false)
            .await
            .unwrap();
        let t0 = Instant::now();
        pair.routers[win]
            .devd
            .send_event(&CarpEvent::new(group(), CarpState::Master))
            .await
            .unwrap();
        let mac = pair.routers[win].mac;
        let Some(bound) = wait_holder(&pair, mac, Duration::from_secs(10)).await else {
            eprintln!("series run {i}: not bound within 10 s");
            continue;
        };
        // The claim's read-back follows the bind.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let log = pair.sim.requests();
        let during: Vec<_> = log
            .iter()
            .filter(|r| r.at >= t0 && r.at <= bound + Duration::from_millis(50))
            .collect();
        if let Some(first) = during.iter().map(|r| r.at).min() {
            s.first_request.push(first - t0);
        }
        if let Some(first) = during.iter().filter(|r| r.mutation).map(|r| r.at).min() {
            s.first_mutation.push(first - t0);
        }
        s.bound.push(bound - t0);
        s.requests.push(during.len());
        tokio::time::sleep_until((started + SERIES_GAP).into()).await;
    }
    pair.stop().await;
    s
}

fn report_series(s: &Series) {
    let row = |what: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("{what:<58} no samples");
        } else {
            println!(
                "{what:<58} p50 {:>8.2} ms  p99 {:>8.2} ms  (n={})",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
                v.len()
            );
        }
    };
    println!(
        "series: {SERIES_RUNS} failovers {} s apart, default budget (60/min), checks on",
        SERIES_GAP.as_secs()
    );
    row("series: devd event -> first OVH request", &s.first_request);
    row(
        "series: devd event -> first OVH mutation",
        &s.first_mutation,
    );
    if let Some(worst) = s.bound.iter().max() {
        println!(
            "{:<58} {:.1} ms = {:.1}% of the 2 task times ({} ms)",
            "series: worst event -> bound",
            ms(*worst),
            100.0 * ms(*worst) / ms(2 * TASK),
            ms(2 * TASK)
        );
    }
    println!(
        "{:<58} {:?} (max {})",
        "series: OVH requests per failover (both routers)",
        s.requests,
        s.requests.iter().max().copied().unwrap_or(0)
    );
}

/// Phase 7 (issue 21): one failover of `n` IPs on one group; per run, the time from the
/// MASTER event to the last IP bound and the requests of the failover.
struct GroupRun {
    n: usize,
    task: Duration,
    /// (event -> last IP bound, requests) per run; the first two runs are each router's first
    /// failover (nothing learned yet), the others warm.
    runs: Vec<(Option<Duration>, usize)>,
    /// Per run, the requests by method and path shape (where they go).
    kinds: Vec<Vec<(String, usize)>>,
    /// Per run, when the simulator received the first and the last DELETE, and the first
    /// and the last POST, from the event (where the time goes).
    writes: Vec<Option<[Duration; 4]>>,
}

/// A request's method and path with its variable parts named (`{sn}`, `{mac}`, `{ip}`,
/// `{id}`), the winner's and the loser's vMAC told apart: what the counts are grouped by.
fn shape(method: &str, target: &str, winner: &str) -> String {
    let path = target.trim_start_matches("/1.0");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let parts: Vec<String> = path
        .split('/')
        .map(|seg| {
            let seg = seg.replace("%3A", ":").replace("%3a", ":");
            if seg == SERVICE {
                "{sn}".to_string()
            } else if seg.eq_ignore_ascii_case(winner) {
                "{ours}".to_string()
            } else if seg.contains(':') {
                "{peer}".to_string()
            } else if seg.parse::<std::net::Ipv4Addr>().is_ok() {
                "{ip}".to_string()
            } else if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{id}".to_string()
            } else {
                seg
            }
        })
        .collect();
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{method} {}{q}", parts.join("/"))
}

// Each router wins three times: cold (nothing learned), then the first warm failover (which
// may poll across the cold one's coarse bracket once), then warm.
const GROUP_RUNS: usize = 6;

async fn group_failover(n: usize, task: Duration) -> GroupRun {
    let mut pair = Pair::start(PairOptions {
        task,
        hold_down: Duration::from_secs(1),
        recheck: Duration::from_secs(30),
        readiness: Duration::from_secs(30),
        vault: false,
        // Failovers every few seconds: lift the budgets (steady and failover) so the figures
        // are carpd's own; the requests per IP say what a failover costs the budget.
        rate: RateLimit {
            burst: 1000,
            per_minute: 6000,
        },
        ips: n,
    })
    .await
    .expect("pair");
    for r in &mut pair.routers {
        r.start().await.expect("daemon");
        r.set(CarpState::Backup, true).await.unwrap();
    }
    // The checks while BACKUP locate every IP (the claims' hints).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let gap = Duration::from_secs(10) + 3 * task;
    let mut out = GroupRun {
        n,
        task,
        runs: Vec::new(),
        kinds: Vec::new(),
        writes: Vec::new(),
    };
    for i in 0..GROUP_RUNS {
        let started = Instant::now();
        let (win, lose) = if i % 2 == 0 { (0, 1) } else { (1, 0) };
        pair.routers[lose]
            .set(CarpState::Backup, true)
            .await
            .unwrap();
        pair.routers[win]
            .set(CarpState::Master, false)
            .await
            .unwrap();
        let t0 = Instant::now();
        pair.routers[win]
            .devd
            .send_event(&CarpEvent::new(group(), CarpState::Master))
            .await
            .unwrap();
        let mac = pair.routers[win].mac;
        let end = t0 + Duration::from_secs(60) + 10 * task;
        let mut bound = None;
        while Instant::now() < end {
            if pair.held_by(mac, n) == n {
                bound = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        // The read-back follows the last bind.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let last = bound.unwrap_or_else(Instant::now) + Duration::from_millis(100);
        let logged: Vec<_> = pair
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.at >= t0 && r.at <= last)
            .collect();
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &logged {
            let mut k = shape(&r.method, &r.target, mac);
            if !(200..300).contains(&r.status) {
                k = format!("{k} -> {}", r.status);
            }
            *kinds.entry(k).or_default() += 1;
        }
        // A refused request in a failover is worth reading in order: print the run's log.
        if std::env::var_os("CARPD_BENCH_TRACE").is_some()
            && logged.iter().any(|r| !(200..300).contains(&r.status))
        {
            for r in &logged {
                println!(
                    "      {:>9.1} ms {} {} -> {}",
                    ms(r.at - t0),
                    r.method,
                    r.target,
                    r.status
                );
            }
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.kinds.push(kinds);
        let span = |method: &str| {
            let at: Vec<Duration> = logged
                .iter()
                .filter(|r| r.method == method && r.mutation)
                .map(|r| r.at - t0)
                .collect();
            Some((*at.iter().min()?, *at.iter().max()?))
        };
        out.writes.push(
            span("DELETE")
                .zip(span("POST"))
                .map(|((d0, d1), (p0, p1))| [d0, d1, p0, p1]),
        );
        out.runs.push((bound.map(|b| b - t0), logged.len()));
        tokio::time::sleep_until((started + gap).into()).await;
    }
    pair.stop().await;
    out
}

fn report_group(g: &GroupRun) {
    let limit = (2 * g.task).mul_f64(1.05);
    let runs: Vec<String> = g
        .runs
        .iter()
        .map(|(b, r)| match b {
            Some(b) => format!(
                "{:.0} ms ({:.0}%), {:.1} req/IP",
                ms(*b),
                100.0 * ms(*b) / ms(2 * g.task),
                *r as f64 / g.n as f64
            ),
            None => format!("not all bound, {r} requests"),
        })
        .collect();
    println!(
        "group: {:>2} IPs, tasks {:>4} ms (2 tasks + 5% = {:.0} ms): {}",
        g.n,
        g.task.as_millis(),
        ms(limit),
        runs.join(" | ")
    );
    for (i, kinds) in g.kinds.iter().enumerate() {
        let k: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let w = match g.writes.get(i).copied().flatten() {
            Some([d0, d1, p0, p1]) => format!(
                "DELETEs at {:.1}-{:.1} ms, POSTs at {:.1}-{:.1} ms; ",
                ms(d0),
                ms(d1),
                ms(p0),
                ms(p1)
            ),
            None => String::new(),
        };
        println!("    run {}: {w}{}", i + 1, k.join(", "));
    }
}

/// Phase 7 on its own.
async fn groups() -> Vec<GroupRun> {
    let mut out = Vec::new();
    // `CARPD_BENCH_GROUP=16x2000` runs one size and task time (ms) alone.
    let only = std::env::var("CARPD_BENCH_GROUP").ok();
    for task in [Duration::from_millis(200), Duration::from_secs(2)] {
        for n in [1, 4, 16] {
            if only
                .as_deref()
                .is_some_and(|o| o != format!("{n}x{}", task.as_millis()))
            {
                continue;
            }
            let g = group_failover(n, task).await;
            report_group(&g);
            out.push(g);
        }
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "group") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        println!(
            "group: MASTER event -> last IP bound (% of 2 task times), requests per IP; runs 1-2 cold, 3-4 first warm, 5-6 warm"
        );
        rt.block_on(groups());
        return;
    }
    if std::env::args().any(|a| a == "series") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let s = rt.block_on(series());
        report_series(&s);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two workers: the simulator and the two daemons do not queue behind each other on one
    // thread (in production each daemon is its own process).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "carpd failover benchmark ({BIN}); simulated OVH tasks {} ms",
        TASK.as_millis()
    );
    let f = rt.block_on(daemon_path());
    let (quo_reaction, quo_beyond) = rt
        .block_on(status_quo(dir.path(), false))
        .expect("the status quo without Vault always runs");
    let vault_quo = rt.block_on(status_quo(dir.path(), true));
    let idle = rt.block_on(idle(dir.path()));
    let series = rt.block_on(series());
    println!(
        "group: MASTER event -> last IP bound (% of 2 task times), requests per IP; runs 1-2 cold, 3-4 first warm, 5-6 warm"
    );
    rt.block_on(groups());

    let row = |what: &str, v: &[Duration]| {
        if v.is_empty() {
            println!("{what:<58} no samples");
        } else {
            println!(
                "{what:<58} p50 {:>8.2} ms  p99 {:>8.2} ms  (n={})",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.99)),
                v.len()
            );
        }
    };
    println!();
    row("daemon: devd event -> first OVH change (warm)", &f.reaction);
    row("daemon: event -> bound, beyond the 2 task times", &f.beyond);
    row(
        "status quo: fresh process -> first OVH change",
        &quo_reaction,
    );
    row(
        "status quo: fresh process -> bound, beyond the 2 tasks",
        &quo_beyond,
    );
    if let Some((r, b)) = &vault_quo {
        row("status quo + Vault login: fresh process -> first change", r);
        row("status quo + Vault login: -> bound, beyond the 2 tasks", b);
        if !f.reaction.is_empty() && !r.is_empty() {
            println!(
                "{:<58} {:.0}x faster to the first change (p50)",
                "ratio status quo with Vault / daemon",
                ms(pct(r, 0.5)) / ms(pct(&f.reaction, 0.5))
            );
        }
    } else {
        println!("status quo with a Vault login: not measured (no OpenBao: set CARPD_TEST_BAO)");
    }
    if !f.reaction.is_empty() && !quo_reaction.is_empty() {
        println!(
            "{:<58} {:.0}x faster to the first change (p50)",
            "ratio status quo / daemon",
            ms(pct(&quo_reaction, 0.5)) / ms(pct(&f.reaction, 0.5))
        );
    }
    if !f.beyond.is_empty() {
        println!(
            "{:<58} {:.1}% (p50) of the 2 task times",
            "daemon: outage beyond the task times",
            100.0 * ms(pct(&f.beyond, 0.5)) / ms(2 * TASK)
        );
    }
    if !quo_beyond.is_empty() {
        println!(
            "{:<58} {:.1}% (p50) of the 2 task times",
            "status quo: beyond the task times",
            100.0 * ms(pct(&quo_beyond, 0.5)) / ms(2 * TASK)
        );
    }
    println!(
        "{:<58} {:?} (max {})",
        "flap storm (10,000 events/router in 1 s): OVH mutations",
        f.storm_mutations,
        f.storm_mutations.iter().max().copied().unwrap_or(0)
    );
    match idle {
        Some((rss, wake)) => println!(
            "{:<58} RSS {rss:.1} MiB, {wake:.2} wake-ups/s",
            "idle carpd run with a failover IP"
        ),
        None => println!("idle carpd run: not measured (no /proc)"),
    }
    report_series(&series);
    if let Ok(m) = std::fs::metadata(BIN) {
        println!(
            "{:<58} {:.2} MiB",
            "binary size (this build)",
            m.len() as f64 / (1024.0 * 1024.0)
        );
    }
}
