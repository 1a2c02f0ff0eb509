//! Secret hygiene (issue 8, part 4): the real `carpd run` binary (simulated kernel) with known
//! secret values in every place carpd takes secrets from: OVH credentials (ovh.conf: the
//! application secret and consumer key), CARP passwords (a file, inline in carpd.yaml, and a
//! kv-v2 field in a real OpenBao), the AppRole role_id and secret_id (the secretsmith file).
//! The daemon logs in, reads, claims a failover IP on the OVH simulator, fails (wrong
//! secret_id, an OVH consumer key OVH refuses), is killed (SIGKILL, SIGABRT) and restarted;
//! after each step every place output can go is searched for every secret: the daemon's log
//! (stderr, debug level), `carpd status` (human and --json), `carpd plan`, the metrics (HTTP
//! and textfile), CLI error messages, /proc/<pid>/cmdline and environ of the daemon and of
//! the one-shot child the devd hook spawns.
//!
//! Also here: files holding secrets are refused when group/world readable (naming the file,
//! `--allow-insecure-files` overrides), and the types holding secrets are zeroizing ones
//! (a compile-time check: memory inspection of a live process is not attempted).
//!
//! Root-only parts: carpd requires secret files to be owned by root; as non-root the suite
//! passes `--allow-insecure-files` and the refusal checks are skipped (CI runs as root).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use carpd::carp::{CarpState, Vhid};
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd_testkit::ovh::auth::{Application, ConsumerKey};
use carpd_testkit::ovh::{OvhSim, SimConfig};

use carpd_testkit::bao::{Bao, write_private};

const BIN: &str = env!("CARGO_BIN_EXE_carpd");
const LIMIT: Duration = Duration::from_secs(30);

// The secrets. Distinctive, so a match can only be a leak.
const OVH_AK: &str = "hygAppKey0001"; // not secret (an identifier), never asserted
const OVH_AS: &str = "hygAppSecret-7f3a9c51e2";
const OVH_CK: &str = "hygConsumerKey-2b8d41aa90";
/// A consumer key OVH does not know: the refusal path.
const OVH_CK_BAD: &str = "hygRefusedKey-55e0c4d1f3";
const PW_FILE: &str = "hygPwFile-4c1d9e"; // <= 20 bytes (CARP_KEY_LEN)
const PW_INLINE: &str = "hygPwInline-8a2f07";
const PW_VAULT: &str = "hygPwVault-3e61b5";
const WRONG_SECRET_ID: &str = "00000000-hyg0-wrong-secret-id0000000";

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";
const VIP: &str = "51.68.252.230";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The daemon, killed and reaped when the guard goes.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log(&self) -> Vec<u8> {
        fs::read(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own unreaped child.
        assert_eq!(unsafe { libc::kill(self.pid() as libc::pid_t, sig) }, 0);
    }
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some`, for at most [`LIMIT`].
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    carpd_testkit::poll_blocking(what, LIMIT, f)
}

struct Stopper(
    Option<tokio::sync::oneshot::Sender<()>>,
    Option<std::thread::JoinHandle<()>>,
);

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Some(s) = self.0.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// One world: OpenBao with the deployment's AppRole and secrets, the OVH simulator with the
/// peer holding the failover IP, and the files carpd reads.
struct World {
    /// Stops the servers' runtime thread when the world goes.
    _stop: Stopper,
    bao: Bao,
    sim: OvhSim,
    dir: tempfile::TempDir,
    secret_id: String,
    role_id: String,
    metrics_port: u16,
    spawned: u32,
}

impl World {
    fn new() -> World {
        // The servers run on a runtime of their own thread, so they answer while the test
        // thread waits on carpd processes; the thread ends when the world is dropped.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let bao = Bao::start().await;
                bao.setup("1h", "2h").await;
                bao.put("ops", "secrets/network/carp/2", &[("password", PW_VAULT)])
                    .await;
                let role_id = bao.role_id().await;
                let secret_id = bao.secret_id(&[]).await;
                let sim = OvhSim::start(SimConfig {
                    applications: vec![Application {
                        key: OVH_AK.into(),
                        secret: OVH_AS.into(),
                    }],
                    consumer_keys: vec![ConsumerKey::full(OVH_CK, OVH_AK)],
                    ..SimConfig::default()
                })
                .await
                .unwrap();
                sim.with_world(|w| {
                    w.add_vmac(SN, OURS, &["178.32.70.111".parse().unwrap()]);
                    w.add_vmac(
                        SN,
                        PEER,
                        &["178.32.70.110".parse().unwrap(), VIP.parse().unwrap()],
                    );
                    w.task_delay = Duration::from_millis(50);
                });
                tx.send((bao, sim, role_id, secret_id)).unwrap();
                let _ = stopped.await;
            });
        });
        let (bao, sim, role_id, secret_id) = rx
            .recv_timeout(LIMIT)
            .expect("OpenBao and the OVH simulator did not start");
        let dir = tempfile::tempdir().unwrap();
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let w = World {
            _stop: Stopper(Some(stop), Some(runtime)),
            bao,
            sim,
            dir,
            secret_id,
            role_id,
            metrics_port,
            spawned: 0,
        };
        w.write_secrets(&w.secret_id.clone(), OVH_CK);
        w.write_config();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Creates a Vault token with a known id for the deployment's policy. The admin client is
    /// plain HTTP on a runtime of its own (the servers' runtime is on another thread).
    fn create_token(&self, id: &str) {
        let body = serde_json::json!({"id": id, "policies": ["router"], "ttl": "1h"});
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self.bao.ok("POST", "auth/token/create", Some(body)));
    }

    /// Every secret carpd was given, and the one it was given in error.
    fn secrets(&self) -> Vec<String> {
        vec![
            OVH_AS.into(),
            OVH_CK.into(),
            OVH_CK_BAD.into(),
            PW_FILE.into(),
            PW_INLINE.into(),
            PW_VAULT.into(),
            WRONG_SECRET_ID.into(),
            self.secret_id.clone(),
            self.role_id.clone(),
            carpd_testkit::bao::ROOT_TOKEN.into(),
        ]
    }

    fn write_secrets(&self, secret_id: &str, ck: &str) {
        write_private(&self.path("vhid2.key"), &format!("{PW_FILE}\n"));
        write_private(
            &self.path("ovh.conf"),
            &format!(
                "[{}]\napplication_key={OVH_AK}\napplication_secret={OVH_AS}\nconsumer_key={ck}\n",
                self.sim.base_url()
            ),
        );
        write_private(
            &self.path("secretsmith.yaml"),
            &format!(
                "vault:\n  server:\n    url: {}\n  auth:\n    method: approle\n    role_id: {}\n    secret_id: {secret_id}\n",
                self.bao.url, self.role_id
            ),
        );
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let text = format!(
            "node: router-003
daemon: {{ resync_interval: 30m, coalesce: 20ms }}
groups:
  - {{ interface: vmx1, vhid: 2, advskew: 0, password: {{ file: {d}/vhid2.key }}, addresses: [{VIP}/32] }}
  - {{ interface: vmx0, vhid: 1, advskew: 100, password: {PW_INLINE}, addresses: [172.27.27.13/27] }}
  - {{ interface: em0, vhid: 3, advskew: 100, password: {{ vault: ops/secrets/network/carp/2, field: password }}, addresses: [10.3.3.3/24] }}
vault:
  secretsmith: {d}/secretsmith.yaml
maintenance: {{ state_dir: {d}/db }}
ovh:
  endpoint: {}
  credentials: {{ file: {d}/ovh.conf }}
  claim_deadline: 20
failover_ips:
  - ip: {VIP}
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\", virtual_machine_name: router-003 }}
metrics:
  listen: 127.0.0.1:{}
  textfile: {d}/carpd.prom
  textfile_interval: 1s
",
            self.sim.base_url(),
            self.metrics_port
        );
        fs::write(self.path("carpd.yaml"), text).unwrap();
        fs::set_permissions(self.path("carpd.yaml"), fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn cmd(&self) -> Command {
        let mut c = self.cmd_base();
        c.args(["--log-target", "stderr", "--log-level", "debug"]);
        c
    }

    /// The binary with this world's files, sockets and kernel; no log settings.
    fn cmd_base(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-c")
            .arg(self.path("carpd.yaml"))
            .args(["--kernel", "sim", "--sim-state"])
            .arg(self.path("kernel.json"))
            .arg("--control-socket")
            .arg(self.path("carpd.sock"))
            .stdin(Stdio::null());
        if !is_root() {
            c.arg("--allow-insecure-files");
        }
        // What an operator's shell might hold must not change what carpd does.
        for v in ["VAULT_ADDR", "VAULT_TOKEN", "CARPD_CONFIG", "CARPD_LOG"] {
            c.env_remove(v);
        }
        c
    }

    fn carpd(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run carpd")
    }

    fn spawn(&mut self) -> Proc {
        self.spawned += 1;
        let log = self.path(&format!("daemon-{}.log", self.spawned));
        let child = self
            .cmd()
            .arg("run")
            .arg("--devd-socket")
            .arg(self.path("no-devd.sock"))
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Proc { child, log };
        wait_for("the daemon to answer status", || {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!(
                    "the daemon exited ({st}) while starting: {}",
                    String::from_utf8_lossy(&d.log())
                );
            }
            let o = self.carpd(&["status", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            (v["daemon"]["pid"].as_u64() == Some(u64::from(d.pid()))).then_some(())
        });
        d
    }

    fn kernel(&self) -> SimKernel {
        SimKernel::open(Flavour::FreeBsd14, Some(self.path("kernel.json"))).unwrap()
    }

    /// The vMAC holding the failover IP in the simulator.
    fn holder(&self) -> Option<String> {
        self.sim
            .with_world(|w| w.holder(VIP.parse().unwrap()))
            .map(|(_, mac)| mac)
    }

    fn metrics_http(&self) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("metrics listener");
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    /// Searches `what` for every secret.
    fn assert_clean(&self, what: &str, bytes: &[u8]) {
        for s in self.secrets() {
            assert!(
                !contains(bytes, &s),
                "a secret ({}...) leaked into {what}:\n{}",
                &s[..6.min(s.len())],
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Every output of a running daemon `d`, searched.
    fn assert_outputs_clean(&self, d: &Proc, when: &str) {
        for args in [
            &["status", "--json"][..],
            &["status"][..],
            &["plan"][..],
            &["maintenance", "status", "--json"][..],
        ] {
            let o = self.carpd(args);
            self.assert_clean(&format!("`carpd {}` ({when})", args.join(" ")), &o.stdout);
            self.assert_clean(
                &format!("`carpd {}` stderr ({when})", args.join(" ")),
                &o.stderr,
            );
        }
        self.assert_clean(&format!("GET /metrics ({when})"), &self.metrics_http());
        let prom = wait_for("the metrics textfile", || {
            fs::read(self.path("carpd.prom")).ok()
        });
        self.assert_clean(&format!("the metrics textfile ({when})"), &prom);
        #[cfg(target_os = "linux")]
        for f in ["cmdline", "environ"] {
            let bytes = fs::read(format!("/proc/{}/{f}", d.pid())).unwrap();
            self.assert_clean(&format!("/proc/<daemon>/{f} ({when})"), &bytes);
        }
        self.assert_clean(&format!("the daemon's log ({when})"), &d.log());
    }
}

/// Login, the three password sources reaching the kernel, a claim, every output; then a
/// SIGKILL mid-life and a restart (stale socket), then SIGABRT: nothing leaks at any point.
#[test]
fn secrets_stay_secret_through_login_claim_and_crashes() {
    let mut w = World::new();
    let mut d = w.spawn();
    // All three passwords reached the kernel (so the daemon did hold each one).
    let vhid = |ifname: &str, n: u32| {
        wait_for(&format!("{n}@{ifname} in the kernel with its key"), || {
            let st = w.kernel().snapshot().ok()?;
            let v = st.interfaces.get(ifname)?.vhids.get(&(n as u8))?.clone();
            (!v.key.is_empty()).then_some(v.key)
        })
    };
    assert_eq!(vhid("vmx1", 2), PW_FILE.as_bytes());
    assert_eq!(vhid("vmx0", 1), PW_INLINE.as_bytes());
    assert_eq!(vhid("em0", 3), PW_VAULT.as_bytes());
    w.assert_outputs_clean(&d, "after start-up");

    // MASTER: the daemon claims the failover IP with the OVH credentials.
    w.kernel()
        .set_state("vmx1", Vhid::new(2).unwrap(), CarpState::Master)
        .unwrap();
    let o = w.carpd(&["hook", "2@vmx1", "MASTER"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_for("the failover IP on our vMAC", || {
        (w.holder().as_deref() == Some(OURS)).then_some(())
    });
    w.assert_outputs_clean(&d, "after the claim");
    // The search above was not of an empty log: the debug log shows the Vault read and the
    // signed OVH requests whose secrets it must not show.
    let log = d.log();
    for line in ["kv-v2 read", "OVH request", "POST"] {
        assert!(
            contains(&log, line),
            "the daemon's debug log lacks {line:?}: the search proves nothing"
        );
    }

    // SIGKILL: no clean-up ran; a new daemon replaces the stale socket and starts over.
    d.signal(libc::SIGKILL);
    d.wait_exit();
    w.assert_clean("the log of the killed daemon", &d.log());
    let mut d2 = w.spawn();
    w.assert_outputs_clean(&d2, "after a restart following SIGKILL");
    #[cfg(target_os = "linux")]
    {
        let limits = fs::read_to_string(format!("/proc/{}/limits", d2.pid())).unwrap();
        let core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap();
        assert!(
            core.split_whitespace().skip(4).take(2).all(|v| v == "0"),
            "the daemon must not dump core (secrets in memory): {core}"
        );
    }

    // SIGABRT (what a panic does in the release build, panic = "abort"): the process dies
    // without writing anything more, and no core file carries its memory away.
    d2.signal(libc::SIGABRT);
    let st = d2.wait_exit();
    assert!(!st.success());
    w.assert_clean("the log of the aborted daemon", &d2.log());
    let cores: Vec<_> = fs::read_dir(w.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("core"))
        .collect();
    assert!(cores.is_empty(), "core files: {cores:?}");
}

/// The refusal paths. A wrong secret_id: Vault refuses the login, and the daemon, which
/// cannot read a configured password, does not start; its error names the secretsmith file
/// and the fix, never the values. A consumer key OVH refuses: the claim fails and is
/// reported (log, status), the keys never.
#[test]
fn refusals_are_reported_without_the_refused_secrets() {
    let mut w = World::new();
    w.write_secrets(WRONG_SECRET_ID, OVH_CK);
    let o = w
        .cmd()
        .arg("run")
        .arg("--devd-socket")
        .arg(w.path("no-devd.sock"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("invalid role or secret ID"), "{err}");
    assert!(
        err.contains(&w.path("secretsmith.yaml").display().to_string()),
        "{err}"
    );
    w.assert_clean("the refused daemon's log", &o.stderr);
    w.assert_clean("the refused daemon's stdout", &o.stdout);
    for args in [
        &["check", "--online"][..],
        &["plan"][..],
        &["secrets", "check"][..],
    ] {
        let o = w.carpd(args);
        w.assert_clean(&format!("`carpd {}` stdout", args.join(" ")), &o.stdout);
        w.assert_clean(&format!("`carpd {}` stderr", args.join(" ")), &o.stderr);
    }

    w.write_secrets(&w.secret_id.clone(), OVH_CK_BAD);
    let d = w.spawn();
    w.kernel()
        .set_state("vmx1", Vhid::new(2).unwrap(), CarpState::Master)
        .unwrap();
    assert!(w.carpd(&["hook", "2@vmx1", "MASTER"]).status.success());
    wait_for("the daemon to report OVH's refusal", || {
        let log = String::from_utf8_lossy(&d.log()).into_owned();
        (log.contains("INVALID_CREDENTIAL") || log.contains("NOT_CREDENTIAL")).then_some(())
    });
    assert_ne!(
        w.holder().as_deref(),
        Some(OURS),
        "claimed with a refused key"
    );
    w.assert_outputs_clean(&d, "after OVH's refusal");
}

/// The Vault token itself: an AppRole login's token is unknown to the test, so this runs the
/// daemon with a token of a known id (created by root for the same policy) through token
/// auth, and searches every output for it.
#[test]
fn a_known_vault_token_never_appears_either() {
    const TOKEN: &str = "hygKnownToken0123456789abcdef";
    let mut w = World::new();
    w.create_token(TOKEN);
    write_private(
        &w.path("secretsmith.yaml"),
        &format!(
            "vault:\n  server:\n    url: {}\n  auth:\n    method: token\n    token: {TOKEN}\n",
            w.bao.url
        ),
    );
    let d = w.spawn();
    let key = wait_for("3@em0 with the Vault password", || {
        let st = w.kernel().snapshot().ok()?;
        let v = st.interfaces.get("em0")?.vhids.get(&3)?.clone();
        (!v.key.is_empty()).then_some(v.key)
    });
    assert_eq!(key, PW_VAULT.as_bytes());
    let mut all = w.secrets();
    all.push(TOKEN.into());
    for (what, bytes) in [
        ("status --json", w.carpd(&["status", "--json"]).stdout),
        ("the daemon's log", d.log()),
        ("GET /metrics", w.metrics_http()),
    ] {
        assert!(!contains(&bytes, TOKEN), "the token leaked into {what}");
    }
    w.assert_outputs_clean(&d, "with token auth");
}

/// The devd hook with no daemon starts a one-shot reconcile: its environment is empty even
/// when the hook's own environment holds secrets (devd's, or an operator's shell).
#[cfg(target_os = "linux")]
#[test]
fn the_hooks_one_shot_child_inherits_no_secret() {
    let w = World::new();
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(w.path("carpd.lock"))
        .unwrap();
    // Held: the one-shot waits for it, so the test can read its /proc entries.
    lock.lock().unwrap();
    let log = w.path("syslog");
    let sock = std::os::unix::net::UnixDatagram::bind(&log).unwrap();
    sock.set_read_timeout(Some(LIMIT)).unwrap();
    let o = w
        .cmd_base()
        .args(["--log-target", "syslog", "--syslog-socket"])
        .arg(&log)
        .args(["hook", "2@vmx1", "MASTER"])
        .env("VAULT_TOKEN", OVH_CK)
        .env("OVH_APPLICATION_SECRET", OVH_AS)
        .env("CARP_PASSWORD", PW_FILE)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut buf = vec![0u8; 16 * 1024];
    let started = loop {
        let n = sock.recv(&mut buf).expect("the hook's syslog line");
        let l = String::from_utf8_lossy(&buf[..n]).into_owned();
        w.assert_clean("a syslog line of the hook", l.as_bytes());
        if l.contains("started a one-shot reconcile") {
            break l;
        }
    };
    let pid: u32 = started
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid= in {started}"));
    let cmdline = wait_for("the one-shot's exec", || {
        let c = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (!c.is_empty()).then_some(c)
    });
    w.assert_clean("/proc/<one-shot>/cmdline", &cmdline);
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    w.assert_clean("/proc/<one-shot>/environ", &environ);
    assert!(environ.is_empty(), "{}", String::from_utf8_lossy(&environ));
    drop(lock);
    loop {
        let n = sock.recv(&mut buf).expect("the one-shot's result line");
        let l = String::from_utf8_lossy(&buf[..n]).into_owned();
        w.assert_clean("a syslog line of the one-shot", l.as_bytes());
        if l.contains("one-shot reconcile:") {
            break;
        }
    }
}

/// Files holding secrets are refused when group or world can read them; the message names
/// the file and the fix; `--allow-insecure-files` overrides.
#[test]
fn secret_files_others_can_read_are_refused() {
    if !is_root() {
        eprintln!("not root: carpd requires root-owned secret files, nothing to check here");
        return;
    }
    let w = World::new();
    for (file, mode) in [
        ("ovh.conf", 0o644),
        ("secretsmith.yaml", 0o640),
        ("vhid2.key", 0o604),
    ] {
        let p = w.path(file);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        let o = w.carpd(&["check"]);
        let err =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(!o.status.success(), "{file} {mode:o} accepted: {err}");
        assert!(
            err.contains(&p.display().to_string()),
            "names {file}: {err}"
        );
        assert!(
            err.contains("--allow-insecure-files") || err.contains("chmod"),
            "{err}"
        );
        w.assert_clean("the refusal", err.as_bytes());
        let o = w.carpd(&["--allow-insecure-files", "check"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !err.contains(&format!("{} is", p.display())) || o.status.success(),
            "--allow-insecure-files did not override for {file}: {err}"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o400)).unwrap();
    }
}

/// What carpd writes that may matter: the ledger (0600, in a 0700 directory) and the control
/// socket (0600). The secret-bearing files are only ever read, never written.
#[test]
fn files_carpd_creates_are_private() {
    use carpd::controller::ledger::{LEDGER_FILE, LOCK_FILE, LedgerStore, Reason};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("db");
    let kernel = SimKernel::open(Flavour::FreeBsd14, None).unwrap();
    LedgerStore::new(&state)
        .add(
            &kernel,
            Reason::Maintenance,
            240,
            std::time::SystemTime::now(),
        )
        .unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join(LEDGER_FILE)), 0o600);
    assert_eq!(mode(&state.join(LOCK_FILE)), 0o600);
}

/// The types that hold secrets are zeroizing ones (secrecy's `SecretString` zeroizes its
/// buffer on drop; `CarpKey` derives `ZeroizeOnDrop`). This is checked at compile time by
/// naming each field's type; that the bytes are gone from a live process's memory is not
/// proven here (it would need reading the process's memory after the drop).
#[test]
fn secrets_are_held_in_zeroizing_types() {
    use carpd::carp::CarpKey;
    use carpd::ovh::{Auth, Credentials};
    use carpd::vault::secretsmith;
    use secrecy::SecretString;
    fn zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    fn secret(_: &SecretString) {}
    zeroize_on_drop::<CarpKey>();
    zeroize_on_drop::<secrecy::SecretBox<str>>();
    let c = Credentials::classic("ak", "as", "ck");
    if let Auth::Classic {
        application_secret,
        consumer_key,
        ..
    } = &c.auth
    {
        secret(application_secret);
        secret(consumer_key);
    }
    let c = Credentials::oauth2("id", "secret");
    if let Auth::OAuth2 { client_secret, .. } = &c.auth {
        secret(client_secret);
    }
    let a = secretsmith::Auth::AppRole {
        mount: "approle".into(),
        role_id: SecretString::from("r"),
        secret_id: Some(SecretString::from("s")),
    };
    if let secretsmith::Auth::AppRole {
        role_id, secret_id, ..
    } = &a
    {
        secret(role_id);
        secret(secret_id.as_ref().unwrap());
    }
    // Debug never shows them.
    assert!(!format!("{a:?}").contains("\"s\""));
    let key = CarpKey::new(PW_FILE.as_bytes().to_vec()).unwrap();
    assert!(!format!("{key:?}").contains(PW_FILE));
}
