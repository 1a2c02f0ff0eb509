//! Benchmark: `carpd run`'s reaction times and idle cost, against the budgets of DESIGN.md
//! and issue 3.
//!
//! 1. devd event -> reconcile decided: in process. The daemon runs on a current-thread runtime
//!    of its own thread, on an in-memory simulated kernel, with `coalesce: 0s`; a fake devd
//!    (a real SOCK_SEQPACKET socket) on the main thread sends one event at a time and waits
//!    for the daemon's `Note::Reconciled` for that group. Measured from just before the send
//!    to the note's `at` (decisions made).
//! 2. `carpd hook` -> daemon nudged: the real binary spawned against that daemon's control
//!    socket; from just before the spawn to the daemon's `Note::Nudged`, and the hook's whole
//!    wall time (spawn to exit).
//! 3. Idle daemon: `carpd run` as a process (state-file kernel, fake devd, default timers),
//!    left alone for a while: RSS, and wake-ups per second counted as context switches
//!    (voluntary + involuntary, every thread) from /proc (Linux only).
//! 4. `carpd status` (text and JSON) against that running daemon.
//!
//! Run: `cargo bench --bench daemon` (release build). Takes about 20 s.

mod common;
use common::proc_sample;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carpd::carp::{CarpState, GroupId};
use carpd::controller::Work;
use carpd::daemon::{Daemon, Note, Settings};
use carpd::devd::{BackoffPolicy, CarpEvent, ClientConfig};
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd::secrets::SecretPolicy;
use carpd_testkit::devd::FakeDevd;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

const BIN: &str = env!("CARGO_BIN_EXE_carpd");

const EVENTS: usize = 2000;
const HOOKS: usize = 200;
const STATUS_RUNS: usize = 100;
const IDLE: Duration = Duration::from_secs(10);
const LIMIT: Duration = Duration::from_secs(20);

/// Groups for the in-process daemon: no coalescing, so every event is its own reconcile, and
/// no periodic re-read to get in the way.
const CONFIG_FAST: &str = "\
node: bench
daemon: { resync_interval: 1h, coalesce: 0s }
groups:
  - { interface: vmx1, vhid: 2, advskew: 0, addresses: [192.0.2.2/32] }
  - { interface: vmx0, vhid: 1, advskew: 100, addresses: [192.0.2.1/24] }
  - { interface: em0, vhid: 3, advskew: 50, addresses: [192.0.2.3/32] }
";

/// The idle daemon runs with the defaults a router gets (periodic re-read every 5 s).
const CONFIG_DEFAULT: &str = "\
node: bench
groups:
  - { interface: vmx1, vhid: 2, advskew: 0, addresses: [192.0.2.2/32] }
  - { interface: vmx0, vhid: 1, advskew: 100, addresses: [192.0.2.1/24] }
";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One line of the final table.
struct Row {
    what: String,
    figure: String,
    target: String,
    verdict: &'static str,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// p50/p99/max of `samples`, as a row against a p50 and a p99 budget (None: report only).
fn latency_row(
    what: &str,
    mut samples: Vec<Duration>,
    p50_max: Option<Duration>,
    p99_max: Option<Duration>,
    target: &str,
) -> Row {
    samples.sort();
    let (p50, p99, max) = (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
    let ok = p50_max.is_none_or(|b| p50 < b) && p99_max.is_none_or(|b| p99 < b);
    Row {
        what: format!("{what} (n={})", samples.len()),
        figure: format!("p50 {} / p99 {} / max {}", ms(p50), ms(p99), ms(max)),
        target: target.to_string(),
        verdict: if p50_max.is_none() && p99_max.is_none() {
            "-"
        } else {
            verdict(ok)
        },
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    println!("carpd daemon benchmark ({BIN})");

    let mut rows = Vec::new();
    in_process(&rt, dir.path(), &mut rows);
    process(&rt, dir.path(), &mut rows);

    if let Ok(meta) = fs::metadata(BIN) {
        let mib = meta.len() as f64 / (1024.0 * 1024.0);
        rows.push(Row {
            what: "binary size (this build)".into(),
            figure: format!("{mib:.2} MiB"),
            target: "< 10 MiB stripped (release)".into(),
            verdict: verdict(mib < 10.0),
        });
    }

    println!();
    let w0 = rows.iter().map(|r| r.what.len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.figure.len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r.target.len()).max().unwrap_or(0);
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  verdict",
        "measure", "figure", "target"
    );
    println!("{}", "-".repeat(w0 + w1 + w2 + 13));
    for r in &rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r.what, r.figure, r.target, r.verdict
        );
    }
}

// -------------------------------------------------------------------------------------------
// 1 and 2: the daemon in process
// -------------------------------------------------------------------------------------------

struct InProcess {
    notes: mpsc::UnboundedReceiver<Note>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Starts the daemon on a thread of its own with a current-thread runtime, as `carpd run`
    /// does.
    fn start(settings: Settings) -> InProcess {
        let (tx, notes) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("carpd-daemon".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let kernel = Box::new(SimKernel::new(Flavour::FreeBsd14));
                    let daemon = Daemon::start(settings, kernel)
                        .unwrap_or_else(|e| panic!("the daemon does not start: {e}"))
                        .with_notes(tx);
                    daemon
                        .run(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .unwrap();
        InProcess {
            notes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The next note satisfying `f`, skipping others.
    fn wait<T>(&mut self, rt: &Runtime, what: &str, mut f: impl FnMut(Note) -> Option<T>) -> T {
        rt.block_on(async {
            tokio::time::timeout(LIMIT, async {
                loop {
                    let n = self.notes.recv().await.expect("the daemon stopped");
                    if let Some(v) = f(n) {
                        return v;
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no note for {what} within {LIMIT:?}"))
        })
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("the daemon thread panicked");
        }
    }
}

fn reads(work: &Work, group: &GroupId) -> bool {
    matches!(work, Work::Groups(gs) if gs.iter().any(|(g, _)| g == group))
}

fn in_process(rt: &Runtime, dir: &Path, rows: &mut Vec<Row>) {
    let cfg = dir.join("fast.yaml");
    fs::write(&cfg, CONFIG_FAST).unwrap();
    let devd_path = dir.join("devd-fast.sock");
    let control = dir.join("fast.sock");
    let mut fake = FakeDevd::bind(&devd_path).unwrap();
    let mut d = InProcess::start(Settings {
        config_path: cfg.clone(),
        policy: SecretPolicy {
            allow_insecure_files: true,
        },
        apply: true,
        control_socket: control.clone(),
        devd: ClientConfig {
            socket: devd_path,
            backoff: BackoffPolicy {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(50),
                stable_after: Duration::from_secs(60),
            },
        },
        ovh_client: carpd::ovh::ClientOptions::default(),
    });
    d.wait(rt, "the start-up read", |n| match n {
        Note::Reconciled {
            work: Work::Full(_),
            ..
        } => Some(()),
        _ => None,
    });
    rt.block_on(tokio::time::timeout(LIMIT, fake.wait_for_clients(1)))
        .expect("the daemon connects to the fake devd")
        .unwrap();
    // The connection's resync, so that measuring starts from a quiet daemon.
    d.wait(rt, "the resync after connecting", |n| match n {
        Note::Reconciled {
            work: Work::Full(_),
            ..
        } => Some(()),
        _ => None,
    });

    // 1. Event -> reconcile decided.
    let groups: Vec<GroupId> = ["2@vmx1", "1@vmx0", "3@em0"]
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    let states = [CarpState::Master, CarpState::Backup];
    let warmup = 100;
    let mut event_lat = Vec::with_capacity(EVENTS);
    for i in 0..warmup + EVENTS {
        let group = &groups[i % groups.len()];
        let ev = CarpEvent::new(group.clone(), states[(i / groups.len()) % 2]);
        let sent = Instant::now();
        let n = rt.block_on(fake.send_event(&ev)).unwrap();
        assert_eq!(n, 1, "the daemon is not connected to the fake devd");
        let at = d.wait(rt, "the event's reconcile", |n| match n {
            Note::Reconciled { work, outcome, at }
                if reads(&work, group) && outcome.readings.iter().any(|x| &x.group == group) =>
            {
                Some(at)
            }
            _ => None,
        });
        if i >= warmup {
            event_lat.push(at.duration_since(sent));
        }
    }
    println!("1. {EVENTS} devd events, one at a time, 3 groups, in-memory kernel: done");
    rows.push(latency_row(
        "devd event -> reconcile decided",
        event_lat,
        Some(Duration::from_millis(2)),
        Some(Duration::from_millis(5)),
        "p50 < 2 ms, p99 < 5 ms (whole reaction budget)",
    ));

    // 2. Hook -> nudged, and the hook's wall time.
    let mut nudge_lat = Vec::with_capacity(HOOKS);
    let mut hook_wall = Vec::with_capacity(HOOKS);
    let group: GroupId = "2@vmx1".parse().unwrap();
    for i in 0..10 + HOOKS {
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--kernel", "sim", "--log-target", "stderr"])
            .arg("--control-socket")
            .arg(&control)
            .args(["hook", "2@vmx1", "MASTER"])
            .env_remove("CARPD_CONFIG")
            .env_remove("CARPD_CONTROL_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = Instant::now();
        let st = cmd.status().expect("spawn carpd hook");
        let wall = t0.elapsed();
        assert!(st.success(), "carpd hook failed: {st}");
        let at = d.wait(rt, "the hook's nudge", |n| match n {
            Note::Nudged { group: g, at } if g == group => Some(at),
            _ => None,
        });
        if i >= 10 {
            nudge_lat.push(at.duration_since(t0));
            hook_wall.push(wall);
        }
    }
    println!("2. {HOOKS} `carpd hook 2@vmx1 MASTER` runs against the daemon: done");
    rows.push(latency_row(
        "carpd hook spawned -> daemon nudged",
        nudge_lat,
        Some(Duration::from_millis(10)),
        None,
        "milliseconds (issue 3); status quo fork+Python 230 ms",
    ));
    rows.push(latency_row(
        "carpd hook process, spawn to exit",
        hook_wall,
        Some(Duration::from_millis(20)),
        None,
        "exit within milliseconds (issue 3)",
    ));

    d.stop();
    drop(fake);
}

// -------------------------------------------------------------------------------------------
// 3 and 4: the daemon as a process
// -------------------------------------------------------------------------------------------

/// Kills and reaps the daemon process whatever happens.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn carpd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-c")
        .arg(dir.join("default.yaml"))
        .args(["--kernel", "sim", "--sim-state"])
        .arg(dir.join("kernel.json"))
        .arg("--allow-insecure-files")
        .arg("--control-socket")
        .arg(dir.join("proc.sock"))
        .args(["--log-target", "stderr"])
        .stdin(Stdio::null());
    for v in [
        "CARPD_CONFIG",
        "CARPD_KERNEL",
        "CARPD_SIM_STATE",
        "CARPD_LOG",
        "CARPD_LOG_TARGET",
        "CARPD_CONTROL_SOCKET",
        "CARPD_DEVD_SOCKET",
    ] {
        c.env_remove(v);
    }
    c
}

fn process(rt: &Runtime, dir: &Path, rows: &mut Vec<Row>) {
    fs::write(dir.join("default.yaml"), CONFIG_DEFAULT).unwrap();
    let devd_path = dir.join("devd-proc.sock");
    let mut fake = FakeDevd::bind(&devd_path).unwrap();
    let log = dir.join("daemon.log");
    let child = carpd(dir)
        .arg("run")
        .arg("--devd-socket")
        .arg(&devd_path)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn carpd run");
    let mut child = Child(child);
    let pid = child.0.id();
    rt.block_on(tokio::time::timeout(LIMIT, fake.wait_for_clients(1)))
        .expect("the daemon connects to the fake devd")
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    loop {
        let o = carpd(dir).args(["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if v["daemon"]["pid"] == pid {
            break;
        }
        if let Some(st) = child.0.try_wait().unwrap() {
            panic!(
                "carpd run exited ({st}): {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never answered status"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // 3. Idle.
    let before = proc_sample(pid);
    let t0 = Instant::now();
    // The measurement window: the daemon is left alone on purpose.
    std::thread::sleep(IDLE);
    let after = proc_sample(pid);
    let window = t0.elapsed();
    println!(
        "3. `carpd run` left idle for {:.1} s (default timers, devd connected): done",
        window.as_secs_f64()
    );
    match (before, after) {
        (Some(b), Some(a)) => {
            let mib = a.rss_kib as f64 / 1024.0;
            rows.push(Row {
                what: "idle daemon RSS (VmRSS)".into(),
                figure: format!(
                    "{mib:.2} MiB (peak {:.2} MiB, {} thread(s))",
                    a.hwm_kib as f64 / 1024.0,
                    a.threads
                ),
                target: "< 10 MiB".into(),
                verdict: verdict(mib < 10.0),
            });
            let wakeups = (a.switches - b.switches) as f64 / window.as_secs_f64();
            rows.push(Row {
                what: "idle daemon wake-ups (context switches)".into(),
                figure: format!(
                    "{wakeups:.2}/s ({} in {:.1} s)",
                    a.switches - b.switches,
                    window.as_secs_f64()
                ),
                target: "no busy wake-ups (timer: 1 re-read per 5 s)".into(),
                verdict: verdict(wakeups < 2.0),
            });
        }
        _ => rows.push(Row {
            what: "idle daemon RSS and wake-ups".into(),
            figure: "n/a (needs Linux /proc)".into(),
            target: "< 10 MiB, no busy wake-ups".into(),
            verdict: "-",
        }),
    }

    // 4. carpd status against the running daemon.
    for json in [false, true] {
        let mut samples = Vec::with_capacity(STATUS_RUNS);
        for _ in 0..STATUS_RUNS {
            let mut cmd = carpd(dir);
            cmd.arg("status");
            if json {
                cmd.arg("--json");
            }
            let t = Instant::now();
            let o = cmd.output().unwrap();
            samples.push(t.elapsed());
            assert!(
                o.status.success() && o.stdout.windows(6).any(|w| w == b"daemon"),
                "carpd status without the daemon's view: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        rows.push(latency_row(
            if json {
                "carpd status --json, daemon running"
            } else {
                "carpd status, daemon running"
            },
            samples,
            None,
            Some(Duration::from_millis(20)),
            "< 20 ms",
        ));
    }
    println!("4. {STATUS_RUNS} x `carpd status` and `carpd status --json`: done");
    if let Some(a) = proc_sample(pid) {
        rows.push(Row {
            what: format!("daemon RSS after {} status requests", 2 * STATUS_RUNS),
            figure: format!("{:.2} MiB", a.rss_kib as f64 / 1024.0),
            target: "< 10 MiB, no growth".into(),
            verdict: verdict(a.rss_kib < 10 * 1024),
        });
    }

    // SAFETY: kill(2) on our own child, not yet reaped (the guard holds it).
    unsafe {
        libc::kill(libc::pid_t::try_from(pid).unwrap(), libc::SIGTERM);
    }
    let deadline = Instant::now() + LIMIT;
    while child.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(fake);
}
