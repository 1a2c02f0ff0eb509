//! `carpd run` as an operator runs it: the real binary on the simulated kernel (a state file the
//! test shares with it), a fake devd in the test process, the control socket, signals, reloads,
//! the devd hook and its one-shot fallback, syslog, a non-root peer, and secrets.
//!
//! Each test has its own tempdir. Every process started is held by a [`Proc`] guard that
//! SIGKILLs and reaps it when the test ends, passed or failed. No fixed sleeps: every wait
//! polls a condition (the daemon's status, the kernel state file, a process exit) under a
//! generous limit and names what it waited for when it gives up. The configuration sets
//! `daemon.resync_interval: 30m`, so the periodic re-read never runs during a test and every
//! reconcile a test sees has the cause the test gave it.

use carpd_testkit::host::Host;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use carpd::carp::{CarpState, Vhid};
use carpd::devd::CarpEvent;
use carpd::kernel::sim::{Flavour, SimKernel, SimState};
use carpd_testkit::devd::FakeDevd;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_carpd");

/// Generous: these waits normally end in milliseconds; a loaded machine must not fail them.
const LIMIT: Duration = Duration::from_secs(20);

/// The group password, in the password file only. At most 20 bytes (CARP_KEY_LEN).
const SECRET: &str = "Zq9-secret-carpd-01";
/// What the password is rotated to in the secrets test.
const NEW_SECRET: &str = "Xk4-rotated-pw-0002";

/// An unprivileged uid/gid for the peer-credential test (`nobody` on Debian and FreeBSD).
const NOBODY: u32 = 65534;

/// When set, [`peer_helper`] connects to this control socket, reads what the daemon says
/// without sending anything, and prints it after [`PEER_HELPER_MARK`].
const PEER_HELPER_ENV: &str = "CARPD_TEST_PEER_HELPER_SOCKET";
const PEER_HELPER_MARK: &str = "peer-helper-reply: ";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A child process that is killed and reaped when the guard goes, whatever the test did.
struct Proc {
    child: Child,
    /// Where its stderr (the log, with `--log-target stderr`) goes.
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far, without ANSI colours (tracing colours stderr even when it is a file).
    fn log(&self) -> String {
        strip_ansi(&fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Panics with the log when the process has exited: a daemon must keep running.
    fn assert_running(&mut self, when: &str) {
        if let Some(st) = self.child.try_wait().expect("try_wait") {
            panic!("the daemon exited ({st}) {when}; its log:\n{}", self.log());
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped (the guard holds it).
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// The exit status, if the process exits within `limit`.
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte(@..~)
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `f` until it returns `Some`, for at most [`LIMIT`].
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    carpd_testkit::poll_blocking(what, LIMIT, f)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    strip_ansi(&String::from_utf8_lossy(&o.stderr))
}

/// The daemon's view of one group, from `status --json`'s `daemon.groups`.
fn group<'a>(view: &'a Value, id: &str) -> Option<&'a Value> {
    view["groups"]
        .as_array()
        .expect("daemon.groups is an array")
        .iter()
        .find(|g| g["group"] == id)
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned number: {v}"))
}

/// One test's world: a tempdir with carpd.yaml (the example, its password file rewritten to
/// the tempdir), the password file, the simulated kernel's state file and the sockets.
/// One router's files (carpd_testkit::host), its daemons started so far, and this file's
/// commands on them.
struct Lab {
    host: Host,
    spawned: std::cell::Cell<u32>,
}

/// An extra group for the reload tests.
const EM0_GROUP: &str = "  - interface: em0\n    vhid: 3\n    addresses: [10.9.9.1/24]\n";

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            host: Host::new(),
            spawned: std::cell::Cell::new(0),
        };
        lab.write_secret(SECRET);
        lab.write_config(&lab.config(100, ""));
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.host.path(name)
    }

    fn socket(&self) -> PathBuf {
        self.path("carpd.sock")
    }

    /// examples/carpd.yaml with the password file in the tempdir, vmx0's advskew set to
    /// `advskew_vmx0`, `extra_groups` appended to `groups`, and no periodic re-read.
    fn config(&self, advskew_vmx0: u32, extra_groups: &str) -> String {
        let example = include_str!("../examples/carpd.yaml");
        let key = "/usr/local/etc/carpd/vhid2.key";
        assert!(
            example.contains(key) && example.contains("advskew: 100"),
            "examples/carpd.yaml changed shape: update tests/run.rs"
        );
        let mut text = example
            .replace(key, &self.path("vhid2.key").display().to_string())
            .replace("advskew: 100", &format!("advskew: {advskew_vmx0}"));
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // `groups` is the last section of the example: extra groups continue its list.
        text.push_str(extra_groups);
        text.push_str("daemon:\n  resync_interval: 30m\n");
        text
    }

    fn write_config(&self, text: &str) {
        // Written and renamed: a daemon reloading at that moment never reads half a file.
        self.host.write("carpd.yaml", text, 0o600);
    }

    fn write_secret(&self, secret: &str) {
        self.host.write("vhid2.key", &format!("{secret}\n"), 0o400);
    }

    /// The binary with this lab's configuration, kernel and control socket; no log target.
    fn cmd_base(&self) -> Command {
        let mut c = self.host.command(BIN, "sim");
        c.arg("--allow-insecure-files")
            .arg("--control-socket")
            .arg(self.socket())
            .stdin(Stdio::null());
        c
    }

    /// [`Lab::cmd_base`] logging to stderr.
    fn cmd(&self) -> Command {
        let mut c = self.cmd_base();
        c.args(["--log-target", "stderr"]);
        c
    }

    fn carpd(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run carpd")
    }

    /// Starts `carpd [global...] run [run_args...]` without waiting for it; stderr goes to a
    /// log file of its own.
    fn spawn_run(&self, global: &[&str], run_args: &[&str]) -> Proc {
        let n = self.spawned.get() + 1;
        self.spawned.set(n);
        let log = self.path(&format!("daemon-{n}.log"));
        let mut cmd = self.cmd();
        cmd.args(global).arg("run").args(run_args);
        if !run_args.contains(&"--devd-socket") {
            // Never the host's devd: a socket path where nothing listens.
            cmd.arg("--devd-socket").arg(self.path("no-devd.sock"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("spawn carpd run");
        Proc { child, log }
    }

    /// Starts a daemon and waits until it answers `status` with its view.
    fn start(&self, global: &[&str], run_args: &[&str]) -> Proc {
        let mut d = self.spawn_run(global, run_args);
        let pid = d.pid();
        wait_for("the daemon to answer `carpd status`", || {
            d.assert_running("while starting");
            self.daemon_view()
                .filter(|v| u64_of(&v["pid"]) == u64::from(pid))
        });
        d
    }

    /// `carpd status --json`, parsed.
    fn status(&self) -> Value {
        let o = self.carpd(&["status", "--json"]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "status --json is not JSON ({e}): {}{}",
                stdout(&o),
                stderr(&o)
            )
        })
    }

    /// The `daemon` object of status, `None` when no daemon answered.
    fn daemon_view(&self) -> Option<Value> {
        let v = self.status();
        let d = v["daemon"].clone();
        (!d.is_null()).then_some(d)
    }

    fn view(&self) -> Value {
        self.daemon_view()
            .expect("a daemon is running, yet status has no daemon view")
    }

    /// The simulated kernel the daemon uses.
    fn kernel(&self) -> SimKernel {
        SimKernel::open(Flavour::FreeBsd14, Some(self.path("kernel.json"))).expect("sim kernel")
    }

    fn kernel_state(&self) -> SimState {
        self.kernel().snapshot().expect("sim kernel snapshot")
    }
}

fn vhid(state: &SimState, ifname: &str, vhid: u8) -> Option<carpd::kernel::sim::SimVhid> {
    state.interfaces.get(ifname)?.vhids.get(&vhid).cloned()
}

fn v(n: u32) -> Vhid {
    Vhid::new(n).unwrap()
}

/// A current-thread runtime for the fake devd, which runs in the test process.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for_devd_client(rt: &tokio::runtime::Runtime, fake: &mut FakeDevd) {
    rt.block_on(async {
        tokio::time::timeout(LIMIT, fake.wait_for_clients(1))
            .await
            .expect("the daemon never connected to the fake devd")
            .expect("fake devd accept");
    });
}

/// Holds the lock one-shot reconciles take (next to the control socket), so a one-shot
/// started by the hook blocks where the test can look at it.
fn hold_one_shot_lock(lab: &Lab) -> File {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lab.socket().with_extension("lock"))
        .unwrap();
    f.lock().unwrap();
    f
}

/// A local "syslogd": a datagram socket in the tempdir for `--syslog-socket`.
fn syslogd(lab: &Lab) -> (UnixDatagram, PathBuf) {
    let path = lab.path("log");
    let s = UnixDatagram::bind(&path).unwrap();
    s.set_read_timeout(Some(LIMIT)).unwrap();
    (s, path)
}

/// Receives datagrams until one satisfies `want`; returns it and everything received before.
fn recv_until(s: &UnixDatagram, what: &str, want: impl Fn(&str) -> bool) -> (String, Vec<String>) {
    let mut before = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = s.recv(&mut buf).unwrap_or_else(|e| {
            panic!("no syslog datagram {what} ({e}); received so far: {before:#?}")
        });
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        if want(&d) {
            return (d, before);
        }
        before.push(d);
    }
}

/// Every datagram already queued, without waiting.
fn drain(s: &UnixDatagram) -> Vec<String> {
    s.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = s.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    s.set_nonblocking(false).unwrap();
    out
}

/// `<30>carpd[pid]: ` — facility daemon (3 << 3), severity info (6), ident carpd.
fn assert_syslog_format(d: &str, pid: u32) {
    let want = format!("<30>carpd[{pid}]: ");
    assert!(
        d.starts_with(&want),
        "datagram not in the form `{want}message`: {d:?}"
    );
}

/// The value of `key=` in a log line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()
}

/// Runs the hook with syslog to the test's socket; returns the hook's pid, its exit status
/// and how long it took.
fn run_hook_syslog(lab: &Lab, log: &Path, args: &[&str]) -> (u32, ExitStatus, Duration) {
    let started = Instant::now();
    let mut child = lab
        .cmd_base()
        .args(["--log-target", "syslog", "--syslog-socket"])
        .arg(log)
        .arg("hook")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let st = child.wait().unwrap();
    (pid, st, started.elapsed())
}

#[cfg(target_os = "linux")]
fn proc_file(pid: u32, name: &str) -> Vec<u8> {
    fs::read(format!("/proc/{pid}/{name}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{name}: {e} (has the process exited?)"))
}

/// The command line of a process once its exec has finished. The hook's spawn can return
/// while its child is still inside execve (vfork-style spawn resumes the parent when the
/// child drops the old address space), when /proc shows an empty command line and
/// environment; both are in place once the command line is.
#[cfg(target_os = "linux")]
fn exec_cmdline(pid: u32) -> Vec<u8> {
    wait_for(&format!("process {pid} to finish its exec"), || {
        let c = proc_file(pid, "cmdline");
        (!c.is_empty()).then_some(c)
    })
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Start-up, status, --no-apply
// ---------------------------------------------------------------------------------------------

/// `carpd run` converges the kernel at start, binds its control socket 0600, and `status`
/// shows its view: pid, uptime, groups learned at start-up, the last reconcile and apply.
#[test]
fn run_applies_the_configuration_and_status_shows_the_daemon() {
    let lab = Lab::new();
    let mut d = lab.start(&[], &[]);

    let k = lab.kernel_state();
    let g2 = vhid(&k, "vmx1", 2).expect("2@vmx1 created at start-up");
    assert_eq!((g2.advbase, g2.advskew), (1, 0));
    assert_eq!(g2.peer, Some("178.32.70.110".parse().unwrap()));
    assert_eq!(g2.key, SECRET.as_bytes(), "the password file's key is set");
    assert_eq!(g2.state, CarpState::Backup);
    let g1 = vhid(&k, "vmx0", 1).expect("1@vmx0 created at start-up");
    assert_eq!(g1.advskew, 100);
    assert!(
        k.interfaces["vmx1"]
            .addresses
            .iter()
            .any(|a| a.addr.to_string() == "51.68.252.230/32" && a.vhid == Some(2)),
        "{:?}",
        k.interfaces["vmx1"].addresses
    );
    assert_eq!(k.sysctls[&carpd::carp::Sysctl::Preempt], 1);

    let mode = fs::metadata(lab.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket must be root-only");
    assert!(
        fs::symlink_metadata(lab.socket())
            .unwrap()
            .file_type()
            .is_socket()
    );

    let view = lab.view();
    assert_eq!(u64_of(&view["pid"]), u64::from(d.pid()));
    assert_eq!(view["node"], "router-003");
    assert_eq!(view["kernel"], "sim");
    assert_eq!(view["apply"], true);
    let _uptime = u64_of(&view["uptime_s"]);
    assert_eq!(u64_of(&view["resync_interval_ms"]), 30 * 60 * 1000);
    let last = &view["last_reconcile"];
    assert!(last.is_object(), "last_reconcile: {last}");
    assert_eq!(last["trigger"], "startup");
    assert_eq!(last["scope"], "all");
    assert!(last["error"].is_null(), "{last}");
    let apply = &view["last_apply"];
    assert_eq!(apply["trigger"], "startup");
    assert_eq!(apply["changes"].as_array().unwrap().len(), 5, "{apply}");
    for (id, state) in [("2@vmx1", "BACKUP"), ("1@vmx0", "BACKUP")] {
        let g = group(&view, id).unwrap_or_else(|| panic!("{id} missing: {view}"));
        assert_eq!(g["state"], state, "{g}");
        assert_eq!(g["learned"], "startup", "{g}");
        assert_eq!(g["managed"], true, "{g}");
        assert!(g["history"].as_array().unwrap().is_empty(), "{g}");
    }

    // A second look is served by the same daemon (the connection is per request).
    let again = lab.view();
    assert_eq!(again["pid"], view["pid"]);
    assert!(u64_of(&again["uptime_s"]) >= u64_of(&view["uptime_s"]));

    let log = d.log();
    assert!(log.contains("carpd started"), "{log}");
    assert!(
        log.contains("applied the configuration to the kernel") && log.contains("create 2@vmx1"),
        "{log}"
    );
    assert!(
        log.contains("state at start-up group=2@vmx1 state=BACKUP"),
        "{log}"
    );
    d.assert_running("after status requests");
}

/// `--no-apply` changes nothing in the kernel and reports what differs in `last_apply`.
#[test]
fn no_apply_leaves_the_kernel_untouched_and_reports_the_drift() {
    let lab = Lab::new();
    let before = lab.kernel_state(); // creates the state file with the default kernel
    let d = lab.start(&[], &["--no-apply"]);
    assert_eq!(lab.kernel_state(), before, "--no-apply changed the kernel");

    let view = lab.view();
    assert_eq!(view["apply"], false);
    let apply = &view["last_apply"];
    assert_eq!(apply["trigger"], "startup", "{apply}");
    let changes: Vec<&str> = apply["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(changes.len(), 5, "{changes:?}");
    assert!(
        changes.iter().any(|c| c.starts_with("create 2@vmx1"))
            && changes.iter().any(|c| c.starts_with("create 1@vmx0"))
            && changes.iter().any(|c| c.contains("preempt")),
        "{changes:?}"
    );
    assert!(view["groups"].as_array().unwrap().is_empty(), "{view}");
    let log = d.log();
    assert!(log.contains("not changing it (--no-apply)"), "{log}");
    assert!(!log.contains("applied the configuration"), "{log}");

    // A reload says the kernel still differs, not that it matched.
    let o = lab.carpd(&["reload"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("5 kernel change(s) needed, not applied (--no-apply)"),
        "{out}"
    );
    assert_eq!(
        lab.kernel_state(),
        before,
        "reload with --no-apply changed the kernel"
    );
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// Whether `pid` is blocked waiting for a file lock (Linux: a "->" waiter line in /proc/locks).
fn blocked_on_a_lock(pid: u32) -> bool {
    fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks.lines().any(|l| {
            l.contains("->") && l.split_whitespace().nth(5) == Some(pid.to_string().as_str())
        })
    })
}

/// A SIGTERM or SIGHUP that arrives while the daemon is still starting (here: stalled on
/// its first kernel read, the simulated kernel's lock held by the test) waits for the step in
/// flight instead of killing the process: SIGTERM ends it cleanly after the start-up apply,
/// SIGHUP becomes a reload.
#[test]
fn signals_during_start_up_wait_for_the_step_in_flight() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGHUP, "SIGHUP")] {
        let lab = Lab::new();
        let _ = lab.kernel_state();
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lab.path("kernel.lock"))
            .unwrap();
        lock.lock().unwrap();
        let mut d = lab.spawn_run(&[], &[]);
        let pid = d.pid();
        wait_for("the daemon to block on the simulated kernel's lock", || {
            d.assert_running("while starting");
            blocked_on_a_lock(pid).then_some(())
        });
        d.signal(sig);
        lock.unlock().unwrap();
        if sig == libc::SIGTERM {
            let st = d
                .exit_within(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("still running after {name}; log:\n{}", d.log()));
            assert_eq!(st.code(), Some(0), "{name}: {st}; log:\n{}", d.log());
            let log = d.log();
            assert!(log.contains("carpd stopped"), "{log}");
            // The start-up apply ran to its end before the shutdown.
            assert!(vhid(&lab.kernel_state(), "vmx1", 2).is_some(), "{log}");
            assert!(!lab.socket().exists());
        } else {
            wait_for("the reload that SIGHUP asked for", || {
                d.assert_running(name);
                d.log().contains("configuration reloaded").then_some(())
            });
        }
    }
}

/// SIGTERM and SIGINT: exit 0 within 2 s, the control socket file removed, "carpd stopped".
#[test]
fn sigterm_and_sigint_stop_the_daemon_cleanly() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let lab = Lab::new();
        let mut d = lab.start(&[], &[]);
        assert!(lab.socket().exists());
        let sent = Instant::now();
        d.signal(sig);
        let st = d
            .exit_within(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("still running 2 s after {name}; log:\n{}", d.log()));
        assert_eq!(st.code(), Some(0), "{name}: {st}; log:\n{}", d.log());
        eprintln!("{name}: exited in {:?}", sent.elapsed());
        assert!(
            !lab.socket().exists(),
            "{name}: the control socket file was left behind"
        );
        let log = d.log();
        assert!(log.contains(&format!("received {name}")), "{log}");
        assert!(log.contains("carpd stopped"), "{name}: {log}");
        let o = lab.carpd(&["reload"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("no carpd daemon is running"));
    }
}

/// SIGHUP with a valid, changed configuration changes the kernel; with an invalid one the
/// daemon keeps running on the old configuration, logs the refusal and shows it in status.
#[test]
fn sighup_reloads_a_valid_configuration_and_keeps_the_old_one_otherwise() {
    let lab = Lab::new();
    let mut d = lab.start(&[], &[]);
    let k = lab.kernel_state();
    assert_eq!(vhid(&k, "vmx0", 1).unwrap().advskew, 100);
    assert!(vhid(&k, "em0", 3).is_none());

    lab.write_config(&lab.config(50, EM0_GROUP));
    d.signal(libc::SIGHUP);
    let k = wait_for(
        "SIGHUP to apply advskew 50 on 1@vmx0 and create 3@em0 (BACKUP once its address is on)",
        || {
            d.assert_running("after SIGHUP");
            let k = lab.kernel_state();
            let done = vhid(&k, "vmx0", 1).is_some_and(|g| g.advskew == 50)
                && vhid(&k, "em0", 3).is_some_and(|g| g.state == CarpState::Backup);
            done.then_some(k)
        },
    );
    assert_eq!(vhid(&k, "em0", 3).unwrap().advskew, 0);
    let view = lab.view();
    let reload = &view["last_reload"];
    assert_eq!(reload["ok"], true, "{reload}");
    assert!(
        reload["message"].as_str().unwrap().contains("3 group(s)"),
        "{reload}"
    );
    assert_eq!(
        group(&view, "3@em0").expect("3@em0 watched")["learned"],
        "reload"
    );
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("configuration reloaded") && l.contains("SIGHUP")),
        "{log}"
    );

    // Invalid: advskew out of range, and 3@em0 dropped. Nothing may change, and the old
    // configuration (which manages 3@em0) stays in force.
    let before = lab.kernel_state();
    lab.write_config(&lab.config(300, ""));
    d.signal(libc::SIGHUP);
    let view = wait_for("status to show the refused reload", || {
        d.assert_running("after a SIGHUP with an invalid configuration");
        lab.daemon_view()
            .filter(|v| v["last_reload"]["ok"] == false)
    });
    let message = view["last_reload"]["message"].as_str().unwrap();
    assert!(
        message.contains("reload refused") && message.contains("advskew"),
        "{message}"
    );
    assert_eq!(view["node"], "router-003");
    assert_eq!(
        group(&view, "3@em0").expect("3@em0 still watched")["managed"],
        true,
        "the refused configuration replaced the running one"
    );
    // The refusal is one log record; its message spans lines, the fields follow it.
    let log = d.log();
    let refusal = log
        .find("reload refused")
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(log[refusal..].contains("SIGHUP"), "{log}");
    assert_eq!(
        lab.kernel_state(),
        before,
        "a refused reload changed the kernel"
    );

    // Fixed again: the next SIGHUP drops 3@em0 from the configuration (carpd leaves the
    // kernel's vhid alone: it never tears down what it no longer manages).
    lab.write_config(&lab.config(50, ""));
    d.signal(libc::SIGHUP);
    let view = wait_for("the reload of the fixed configuration", || {
        d.assert_running("after the fixed configuration");
        lab.daemon_view().filter(|v| v["last_reload"]["ok"] == true)
    });
    assert_eq!(group(&view, "3@em0").expect("3@em0")["managed"], false);
}

// ---------------------------------------------------------------------------------------------
// carpd reload
// ---------------------------------------------------------------------------------------------

/// `carpd reload` over the control socket: success (exit 0, the daemon's message), refusal
/// (exit 1, the reason), and no daemon (exit 1, "no carpd daemon is running").
#[test]
fn reload_command_reports_success_and_refusal() {
    let lab = Lab::new();
    let o = lab.carpd(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "reload with no daemon");
    assert!(
        stderr(&o).contains("no carpd daemon is running"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("nothing reloaded"), "{}", stderr(&o));

    let mut d = lab.start(&[], &[]);
    let o = lab.carpd(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("reloaded: 2 group(s); the kernel already matched"),
        "{}",
        stdout(&o)
    );

    lab.write_config(&lab.config(70, ""));
    let o = lab.carpd(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("reloaded: 2 group(s); 1 kernel change(s) made"),
        "{}",
        stdout(&o)
    );
    // The reply comes after the change: no wait needed.
    assert_eq!(vhid(&lab.kernel_state(), "vmx0", 1).unwrap().advskew, 70);

    let before = lab.kernel_state();
    lab.write_config("node: router-003\ngroups: [oops\n");
    let o = lab.carpd(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("reload refused, the running configuration stays in force"),
        "{e}"
    );
    assert!(e.contains("carpd.yaml"), "the refusal names the file: {e}");
    d.assert_running("after a refused reload");
    assert_eq!(lab.kernel_state(), before);
    let view = lab.view();
    assert_eq!(view["last_reload"]["ok"], false);
    assert_eq!(view["groups"].as_array().unwrap().len(), 2);
    assert!(d.log().contains("reload refused"), "{}", d.log());
}

// ---------------------------------------------------------------------------------------------
// One daemon per control socket
// ---------------------------------------------------------------------------------------------

/// A second `carpd run` on the same control socket refuses to start and leaves the first
/// alone; a socket file left by a SIGKILLed daemon is replaced by the next one.
#[test]
fn a_second_daemon_refuses_and_a_stale_socket_is_replaced() {
    let lab = Lab::new();
    let mut first = lab.start(&[], &[]);

    let mut second = lab.spawn_run(&[], &[]);
    let st = second.exit_within(LIMIT).unwrap_or_else(|| {
        panic!(
            "a second daemon on the same socket is still running; log:\n{}",
            second.log()
        )
    });
    assert_eq!(st.code(), Some(1), "{}", second.log());
    let log = second.log();
    let path = lab.socket().display().to_string();
    assert!(
        log.contains(&format!("control socket {path}"))
            && log.contains("another carpd is already running"),
        "{log}"
    );
    assert!(!log.contains("carpd started"), "{log}");

    first.assert_running("after the second daemon refused");
    assert!(
        lab.socket().exists(),
        "the refused daemon removed the socket"
    );
    assert_eq!(u64_of(&lab.view()["pid"]), u64::from(first.pid()));

    // SIGKILL: no clean-up, the socket file stays, nothing answers on it.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(lab.socket().exists(), "SIGKILL cannot remove the socket");
    assert!(lab.daemon_view().is_none());

    let third = lab.start(&[], &[]);
    assert_eq!(u64_of(&lab.view()["pid"]), u64::from(third.pid()));
    assert!(third.log().contains("carpd started"), "{}", third.log());
}

// ---------------------------------------------------------------------------------------------
// devd
// ---------------------------------------------------------------------------------------------

/// A devd event after a kernel change shows as a transition learned by "event"; after a devd
/// restart the daemon reconnects and a change made while it was disconnected is learned by
/// "resync".
#[test]
fn devd_events_and_a_devd_restart_reach_the_daemon() {
    let lab = Lab::new();
    let rt = runtime();
    let _guard = rt.enter();
    let devd = lab.path("devd.sock");
    let mut fake = FakeDevd::bind(&devd).unwrap();
    let mut d = lab.start(&[], &["--devd-socket", devd.to_str().unwrap()]);
    wait_for_devd_client(&rt, &mut fake);
    wait_for("the resync that follows the devd connection", || {
        lab.daemon_view().filter(|v| {
            v["devd"]["connected"] == true
                && v["devd"]["connects"] == 1
                && v["last_reconcile"]["trigger"] == "resync"
        })
    });

    // An election won: the kernel says MASTER, then devd says so.
    lab.kernel()
        .set_state("vmx1", v(2), CarpState::Master)
        .unwrap();
    let sent = Instant::now();
    let delivered = rt
        .block_on(fake.send_event(&CarpEvent::new(
            "2@vmx1".parse().unwrap(),
            CarpState::Master,
        )))
        .unwrap();
    assert_eq!(delivered, 1);
    let view = wait_for("the MASTER transition learned by event", || {
        d.assert_running("after a devd event");
        lab.daemon_view()
            .filter(|v| group(v, "2@vmx1").is_some_and(|g| g["state"] == "MASTER"))
    });
    let seen = sent.elapsed();
    assert!(
        seen < Duration::from_secs(5),
        "the transition took {seen:?} to show in status"
    );
    let g = group(&view, "2@vmx1").unwrap();
    assert_eq!(g["learned"], "event", "{g}");
    let h = &g["history"][0];
    assert_eq!(
        (&h["from"], &h["to"], &h["learned"]),
        (&"BACKUP".into(), &"MASTER".into(), &"event".into()),
        "{g}"
    );
    assert_eq!(u64_of(&view["events"]), 1);
    assert_eq!(view["recent_events"][0]["group"], "2@vmx1");
    assert_eq!(view["recent_events"][0]["state"], "MASTER");
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("CARP transition") && l.contains("group=2@vmx1"))
        .unwrap_or_else(|| panic!("no transition logged:\n{log}"));
    assert_eq!(field(line, "from"), Some("BACKUP"), "{line}");
    assert_eq!(field(line, "to"), Some("MASTER"), "{line}");
    assert_eq!(field(line, "learned"), Some("event"), "{line}");
    assert_eq!(
        field(line, "xid"),
        h["id"].as_str(),
        "log and status share the correlation id"
    );

    // devd restarts; while it is down the group falls back to BACKUP and nobody says so.
    fake.stop();
    wait_for("the daemon to notice devd went away", || {
        lab.daemon_view()
            .filter(|v| v["devd"]["connected"] == false)
    });
    lab.kernel()
        .set_state("vmx1", v(2), CarpState::Backup)
        .unwrap();
    fake.listen().unwrap();
    wait_for_devd_client(&rt, &mut fake);
    let view = wait_for("the reconnect and its resync", || {
        d.assert_running("after a devd restart");
        lab.daemon_view().filter(|v| {
            v["devd"]["connects"] == 2 && group(v, "2@vmx1").is_some_and(|g| g["state"] == "BACKUP")
        })
    });
    let g = group(&view, "2@vmx1").unwrap();
    assert_eq!(g["learned"], "resync", "{g}");
    let h = &g["history"][0];
    assert_eq!(
        (&h["from"], &h["to"], &h["learned"]),
        (&"MASTER".into(), &"BACKUP".into(), &"resync".into()),
        "{g}"
    );
    assert_eq!(u64_of(&view["events"]), 1, "no event was sent for BACKUP");
    assert!(
        d.log().contains("devd reconnected: re-reading every group"),
        "{}",
        d.log()
    );
}

/// A daemon restarted while a group is MASTER learns the state from the kernel: no history,
/// "state at start-up" in the log, and no "CARP transition" line, even after a devd resync,
/// a duplicate event and a nudge.
#[test]
fn a_restart_while_master_recovers_the_state_without_a_transition() {
    let lab = Lab::new();
    let rt = runtime();
    let _guard = rt.enter();
    let devd = lab.path("devd.sock");
    let mut fake = FakeDevd::bind(&devd).unwrap();
    let run_args = ["--devd-socket", devd.to_str().unwrap()];

    let mut first = lab.start(&[], &run_args);
    lab.kernel()
        .set_state("vmx1", v(2), CarpState::Master)
        .unwrap();
    let o = lab.carpd(&["reconcile", "2@vmx1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("2@vmx1: nudged the running daemon"),
        "{}",
        stdout(&o)
    );
    wait_for("the first daemon to see MASTER", || {
        lab.daemon_view()
            .filter(|v| group(v, "2@vmx1").is_some_and(|g| g["state"] == "MASTER"))
    });
    assert!(first.log().contains("CARP transition"), "{}", first.log());
    first.signal(libc::SIGTERM);
    let st = first.exit_within(LIMIT).expect("the first daemon stops");
    assert!(st.success(), "{st}");

    let mut second = lab.start(&[], &run_args);
    wait_for_devd_client(&rt, &mut fake);
    wait_for("the second daemon's devd resync", || {
        lab.daemon_view()
            .filter(|v| v["devd"]["connects"] == 1 && v["last_reconcile"]["trigger"] == "resync")
    });
    let view = lab.view();
    let g = group(&view, "2@vmx1").unwrap();
    assert_eq!(g["state"], "MASTER", "{g}");
    assert_eq!(g["learned"], "startup", "{g}");
    assert!(g["history"].as_array().unwrap().is_empty(), "{g}");
    let reconciles = u64_of(&g["reconciles"]);

    // devd repeats what the kernel says, and the hook nudges: still no transition.
    rt.block_on(fake.send_event(&CarpEvent::new(
        "2@vmx1".parse().unwrap(),
        CarpState::Master,
    )))
    .unwrap();
    assert!(lab.carpd(&["hook", "2@vmx1", "MASTER"]).status.success());
    let view = wait_for("the event and the nudge to be reconciled", || {
        second.assert_running("after an event and a nudge");
        lab.daemon_view().filter(|v| {
            v["events"] == 1
                && group(v, "2@vmx1").is_some_and(|g| u64_of(&g["reconciles"]) >= reconciles + 2)
        })
    });
    let g = group(&view, "2@vmx1").unwrap();
    assert!(g["history"].as_array().unwrap().is_empty(), "{g}");
    assert_eq!(g["learned"], "startup", "{g}");
    let log = second.log();
    assert!(
        log.contains("state at start-up group=2@vmx1 state=MASTER"),
        "{log}"
    );
    assert!(
        !log.contains("CARP transition"),
        "a restarted daemon logged a spurious transition:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// The devd hook
// ---------------------------------------------------------------------------------------------

/// With a daemon: the hook nudges it (a reconcile of that group by "nudge") and exits 0;
/// malformed arguments exit 2 with a message and nudge nothing; unknown groups exit 0.
#[test]
fn hook_nudges_a_running_daemon_and_rejects_malformed_arguments() {
    let lab = Lab::new();
    let mut d = lab.start(&[], &[]);
    let view = lab.view();
    let before = u64_of(&group(&view, "2@vmx1").unwrap()["reconciles"]);

    let t = Instant::now();
    let o = lab.carpd(&["hook", "2@vmx1", "MASTER"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(took < Duration::from_secs(5), "the hook took {took:?}");
    eprintln!("hook with a daemon: {took:?} (debug build, process start included)");
    let view = wait_for("the nudge's reconcile of 2@vmx1", || {
        lab.daemon_view()
            .filter(|v| group(v, "2@vmx1").is_some_and(|g| u64_of(&g["reconciles"]) > before))
    });
    assert_eq!(
        u64_of(&group(&view, "2@vmx1").unwrap()["reconciles"]),
        before + 1
    );
    assert_eq!(view["last_reconcile"]["trigger"], "nudge", "{view}");
    assert_eq!(view["last_reconcile"]["scope"], "2@vmx1", "{view}");
    let reconciles = u64_of(&view["reconciles"]);

    let malformed: [(&[&str], &str); 5] = [
        (&["2@", "MASTER"], "first argument"),
        (&["0@vmx1", "MASTER"], "first argument"),
        (&["2@vmx1", "UP"], "second argument"),
        (&["2@vmx1"], "required"),
        (&["2@vmx1", "MASTER", "extra"], "unexpected argument"),
    ];
    for (args, want) in malformed {
        let mut all = vec!["hook"];
        all.extend_from_slice(args);
        let o = lab.carpd(&all);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "hook {args:?}: {e}");
        assert!(e.contains(want), "hook {args:?}: {e}");
        assert!(e.to_lowercase().contains("usage"), "hook {args:?}: {e}");
    }
    let o = lab.carpd(&["hook", "2@", "MASTER"]);
    assert!(
        stderr(&o).contains("the interface name is empty"),
        "{}",
        stderr(&o)
    );
    let o = lab.carpd(&["hook", "0@vmx1", "MASTER"]);
    assert!(stderr(&o).contains("out of range"), "{}", stderr(&o));

    // Unknown to the configuration: exit 0 (the daemon still looks, the vhid does not exist).
    let o = lab.carpd(&["hook", "9@vmx1", "MASTER"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not in the configuration"),
        "{}",
        stderr(&o)
    );
    wait_for("the unknown group's nudge", || {
        lab.daemon_view()
            .filter(|v| v["last_reconcile"]["scope"] == "9@vmx1")
    });
    let view = lab.view();
    assert_eq!(
        u64_of(&view["reconciles"]),
        reconciles + 1,
        "malformed hooks must not nudge"
    );
    assert!(group(&view, "9@vmx1").is_none());
    d.assert_running("after the hooks");
}

/// Without a daemon: the hook starts a detached `carpd reconcile` of the group and exits 0 at
/// once (while the one-shot still waits for its lock); both log to syslog as
/// A one-shot reconcile that fails (here the kernel cannot be read: a corrupt simulator
/// state, as carp.ko missing would be on FreeBSD) says so in syslog: it has no stderr.
#[test]
fn a_failing_one_shot_reconcile_reports_to_syslog() {
    let lab = Lab::new();
    let _ = lab.kernel_state();
    let (syslog, log_path) = syslogd(&lab);
    fs::write(lab.path("kernel.json"), "{not json").unwrap();
    let (_, st, _) = run_hook_syslog(&lab, &log_path, &["2@vmx1", "MASTER"]);
    assert_eq!(st.code(), Some(0), "{:?}", drain(&syslog));
    let (err, _) = recv_until(&syslog, "with the one-shot's error", |d| {
        d.contains("one-shot reconcile:") && d.starts_with("<27>")
    });
    assert!(err.contains("kernel.json"), "{err}");
}

/// `<30>carpd[pid]: ...`; a group the configuration does not name starts nothing.
#[test]
fn hook_without_a_daemon_starts_a_detached_one_shot_reconcile() {
    let lab = Lab::new();
    let o = lab.carpd(&["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    lab.kernel()
        .set_state("vmx1", v(2), CarpState::Master)
        .unwrap();
    let (syslog, log_path) = syslogd(&lab);

    let lock = hold_one_shot_lock(&lab);
    let (hook_pid, st, took) = run_hook_syslog(&lab, &log_path, &["2@vmx1", "MASTER"]);
    assert_eq!(st.code(), Some(0), "{:?}", drain(&syslog));
    eprintln!("hook without a daemon: {took:?} (debug build)");
    let lines = drain(&syslog);
    let started = lines
        .iter()
        .find(|l| l.contains("no daemon running: started a one-shot reconcile"))
        .unwrap_or_else(|| panic!("the hook did not log the one-shot: {lines:#?}"));
    assert_syslog_format(started, hook_pid);
    assert_eq!(field(started, "group"), Some("2@vmx1"), "{started}");
    let child: u32 = field(started, "pid")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {started}"));
    assert_ne!(child, hook_pid);

    // The hook is gone; the one-shot still waits for the lock we hold: the hook did not wait.
    #[cfg(target_os = "linux")]
    {
        let stat = String::from_utf8(proc_file(child, "stat")).unwrap();
        // pid (comm) state ppid pgrp ...: its own process group, out of devd's reach.
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let pgrp: u32 = after_comm.split(' ').nth(2).unwrap().parse().unwrap();
        assert_eq!(
            pgrp, child,
            "the one-shot must lead its own process group: {stat}"
        );
        let cmdline = exec_cmdline(child);
        assert!(
            contains(&cmdline, "reconcile\u{0}2@vmx1"),
            "cmdline {:?}; stat {stat}; syslog {:#?}",
            String::from_utf8_lossy(&cmdline),
            drain(&syslog)
        );
        assert!(
            proc_file(child, "environ").is_empty(),
            "the one-shot's environment must be empty"
        );
    }

    let early = drain(&syslog);
    assert!(
        !early.iter().any(|l| l.contains("one-shot reconcile:")),
        "the one-shot ran although its lock is held: {early:#?}"
    );
    drop(lock);
    let (done, _) = recv_until(&syslog, "from the one-shot reconcile", |d| {
        d.contains("one-shot reconcile:")
    });
    assert_syslog_format(&done, child);
    assert_eq!(field(&done, "group"), Some("2@vmx1"), "{done}");
    assert_eq!(field(&done, "state"), Some("MASTER"), "{done}");
    assert!(done.contains("nothing to do"), "{done}");

    // Not in the configuration: log, exit 0, no one-shot.
    let (hook_pid, st, _) = run_hook_syslog(&lab, &log_path, &["9@vmx1", "MASTER"]);
    assert_eq!(st.code(), Some(0));
    let lines = drain(&syslog);
    let line = lines
        .iter()
        .find(|l| l.contains("not in the configuration: nothing to do"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_syslog_format(line, hook_pid);
    assert!(
        !lines.iter().any(|l| l.contains("one-shot")),
        "an unknown group started a one-shot: {lines:#?}"
    );

    // Malformed arguments go to syslog too (devd discards the hook's stderr).
    let (_, st, _) = run_hook_syslog(&lab, &log_path, &["2@vmx1", "UP"]);
    assert_eq!(st.code(), Some(2));
    let lines = drain(&syslog);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<27>carpd[") && l.contains("second argument")),
        "{lines:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Control socket peers
// ---------------------------------------------------------------------------------------------

/// A peer that is not root is refused even when the socket's mode lets it connect. Needs
/// root to run a client as another uid; as non-root the check itself is tested instead.
#[test]
fn control_socket_refuses_a_non_root_peer() {
    // SAFETY: geteuid(2) cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        eprintln!(
            "SKIPPED (uid {euid}, not root): running a client as a second uid needs root; \
             testing the credential rule only"
        );
        use carpd::control::server::authorized;
        assert!(authorized(0, euid));
        assert!(authorized(euid, euid));
        assert!(!authorized(euid + 1, euid));
        return;
    }
    let lab = Lab::new();
    let mut d = lab.start(&[], &[]);
    let mode = fs::metadata(lab.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "default socket mode");
    let before = u64_of(&lab.view()["reconciles"]);

    // Loosen what the mode protects, so only the peer check stands in the way.
    fs::set_permissions(lab.host.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(lab.socket(), fs::Permissions::from_mode(0o666)).unwrap();
    let as_nobody = |args: &[&str]| -> Output {
        Command::new(BIN)
            .args(["-c", "/nonexistent/carpd.yaml", "--kernel", "sim"])
            .arg("--control-socket")
            .arg(lab.socket())
            .args(["--log-target", "stderr"])
            .args(args)
            .env_clear()
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {BIN} as uid {NOBODY} although this test runs as root ({e}); \
                     is the target directory readable and searchable by others?"
                )
            })
    };
    // What the daemon answers a non-root peer, read by a raw client that only reads (this
    // test binary, re-run as uid 65534: see `peer_helper`).
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "peer_helper", "--nocapture", "--test-threads=1"])
        .env_clear()
        .env(PEER_HELPER_ENV, lab.socket())
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap_or_else(|e| panic!("cannot re-run the test binary as uid {NOBODY}: {e}"));
    let out = stdout(&o);
    let reply = out
        .lines()
        .find_map(|l| l.split_once(PEER_HELPER_MARK).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("the helper printed no reply: {out}{}", stderr(&o)));
    let reply: Value = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"));
    assert_eq!(reply["v"], 1, "{reply}");
    assert_eq!(reply["reply"], "error", "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("permission denied") && message.contains(&format!("uid {NOBODY}")),
        "{reply}"
    );

    // carpd status as that uid: the kernel's view, no daemon view, and the daemon's refusal
    // shown as a warning (the daemon reads the request before refusing, so the client always
    // gets the answer instead of EPIPE).
    for _ in 0..5 {
        let o = as_nobody(&["status", "--json"]);
        let out = format!("{}{}", stdout(&o), stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json as uid {NOBODY}: {e}: {out}"));
        assert!(
            v["daemon"].is_null(),
            "a non-root peer got the daemon's view: {out}"
        );
        assert!(
            stderr(&o).contains("permission denied: uid 65534"),
            "the refusal must reach the client: {out}"
        );
    }

    // A nudge from a non-root peer is refused too (a nudge makes the daemon act).
    let o = as_nobody(&["hook", "2@vmx1", "MASTER"]);
    assert!(!o.status.success(), "{}", stderr(&o));

    let log = d.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("control socket: refused a client that is not root"))
        .collect();
    assert_eq!(refusals.len(), 7, "{log}");
    assert!(
        refusals.iter().all(|l| field(l, "uid") == Some("65534")),
        "{refusals:#?}"
    );
    d.assert_running("after refusing a peer");
    assert_eq!(
        u64_of(&lab.view()["reconciles"]),
        before,
        "a refused peer caused a reconcile"
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// The group password (and its rotated successor) never shows in the daemon's log at debug
/// level, in status (text and JSON), in reload's answer, in the syslog lines of the hook and
/// its one-shot, or in /proc/<pid>/environ and cmdline of the daemon and of the one-shot.
#[test]
fn the_password_never_leaves_its_file() {
    let lab = Lab::new();
    let mut d = lab.start(&["--log-level", "debug"], &[]);
    assert_eq!(
        vhid(&lab.kernel_state(), "vmx1", 2).unwrap().key,
        SECRET.as_bytes(),
        "the password reached the kernel"
    );
    let leaks = |what: &str, bytes: &[u8]| {
        for s in [SECRET, NEW_SECRET] {
            assert!(
                !contains(bytes, s),
                "the password leaked into {what}: {}",
                String::from_utf8_lossy(bytes)
            );
        }
    };

    for args in [&["status", "--json"][..], &["status"][..], &["plan"][..]] {
        let o = lab.carpd(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        leaks(&format!("`carpd {}` stdout", args.join(" ")), &o.stdout);
        leaks(&format!("`carpd {}` stderr", args.join(" ")), &o.stderr);
    }
    #[cfg(target_os = "linux")]
    for f in ["environ", "cmdline"] {
        leaks(&format!("/proc/<daemon>/{f}"), &proc_file(d.pid(), f));
    }

    // Rotate the password: the reload re-reads the file and changes the kernel key.
    lab.write_secret(NEW_SECRET);
    let o = lab.carpd(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("1 kernel change(s) made"),
        "{}",
        stdout(&o)
    );
    leaks("reload's answer", &[o.stdout, o.stderr].concat());
    assert_eq!(
        vhid(&lab.kernel_state(), "vmx1", 2).unwrap().key,
        NEW_SECRET.as_bytes()
    );
    assert!(lab.carpd(&["hook", "2@vmx1", "MASTER"]).status.success());
    let o = lab.carpd(&["status", "--json"]);
    leaks("status --json after the rotation", &o.stdout);

    d.signal(libc::SIGTERM);
    d.exit_within(LIMIT).expect("the daemon stops");
    let log = fs::read(&d.log).unwrap();
    assert!(
        contains(&log, "password"),
        "the debug log should at least mention the password change"
    );
    leaks("the daemon's log", &log);

    // No daemon: the hook's one-shot, caught while it waits for its lock.
    let (syslog, log_path) = syslogd(&lab);
    let lock = hold_one_shot_lock(&lab);
    let (_, st, _) = run_hook_syslog(&lab, &log_path, &["2@vmx1", "MASTER"]);
    assert!(st.success());
    let lines = drain(&syslog);
    let started = lines
        .iter()
        .find(|l| l.contains("started a one-shot reconcile"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    let child: u32 = field(started, "pid").unwrap().parse().unwrap();
    #[cfg(target_os = "linux")]
    {
        leaks("/proc/<one-shot>/cmdline", &exec_cmdline(child));
        leaks("/proc/<one-shot>/environ", &proc_file(child, "environ"));
    }
    drop(lock);
    let (done, before) = recv_until(&syslog, "from the one-shot", |l| {
        l.contains("one-shot reconcile:")
    });
    assert_syslog_format(&done, child);
    for l in lines.iter().chain(&before).chain([&done]) {
        leaks("a syslog line", l.as_bytes());
    }
}

/// Not a test of its own: the raw control-socket client that
/// [`control_socket_refuses_a_non_root_peer`] runs as another uid by re-running this binary.
/// Does nothing (and passes) unless [`PEER_HELPER_ENV`] is set.
#[test]
fn peer_helper() {
    use std::io::Read;
    let Some(path) = std::env::var_os(PEER_HELPER_ENV) else {
        return;
    };
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut reply = String::new();
    // The daemon answers a refused peer at once and closes.
    s.read_to_string(&mut reply).expect("read the reply");
    println!("{PEER_HELPER_MARK}{}", reply.trim_end());
}
