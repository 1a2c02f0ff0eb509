//! `carpd maintenance enter|leave|status` end to end: the real binary on the simulated kernel
//! (a state file shared between invocations), the demotion ledger in a temporary state_dir,
//! `carpd simulate reboot` and the daemon's restore (called as the daemon does at start),
//! `--wait` against a group moved by `carpd simulate` from another process and against the
//! OVH simulator, and the errors for a state_dir that cannot be used.

use carpd_testkit::host::Host;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use carpd::carp::{CarpState, Sysctl, Vhid};
use carpd::controller::ledger::{AddOutcome, LedgerStore, Reason};
use carpd::kernel::Kernel;
use carpd::kernel::sim::SimKernel;
use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_carpd");
/// An unprivileged uid/gid (`nobody` on Debian and FreeBSD).
const NOBODY: u32 = 65534;

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";

/// One router's files (carpd_testkit::host) and this file's commands on them.
struct Lab {
    host: Host,
}

const CONFIG: &str = "\
node: router-003
groups:
  - interface: vmx1
    vhid: 2
    addresses: [51.68.252.230/32]
  - interface: vmx0
    vhid: 1
    advskew: 100
    addresses: [172.27.27.13/27]
maintenance:
  state_dir: {dir}/state
";

impl Lab {
    fn new(config: &str) -> Lab {
        let lab = Lab { host: Host::new() };
        lab.write_config(config);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.host.path(name)
    }

    fn write_config(&self, text: &str) {
        self.host.write("carpd.yaml", text, 0o644);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.host.command(BIN, "sim");
        c.args(["--log-target", "stderr", "--allow-insecure-files"])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn carpd(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn kernel(&self) -> SimKernel {
        self.host.kernel()
    }

    fn demotion(&self) -> i64 {
        self.kernel().sysctl_get(Sysctl::Demotion).unwrap()
    }

    fn status(&self) -> Value {
        let o = self.carpd(&["maintenance", "status", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
    }

    /// Configures the groups and makes 2@vmx1 MASTER, as an election won would.
    fn master(&self) {
        let o = self.carpd(&["apply"]);
        assert!(o.status.success(), "{}", text(&o));
        self.kernel()
            .set_state("vmx1", Vhid::new(2).unwrap(), CarpState::Master)
            .unwrap();
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits for a child with a limit whose message names the likely fault.
fn wait_child(mut child: Child, limit: Duration, what: &str) -> Output {
    let end = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{what} did not finish within {limit:?} (is --wait polling?)\n{}",
                text(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to 10 s for `cond`.
fn eventually(what: &str, cond: impl FnMut() -> bool) {
    carpd_testkit::wait_until_blocking(what, Duration::from_secs(10), cond)
}

#[test]
fn enter_status_reboot_restore_leave() {
    let lab = Lab::new(CONFIG);
    assert!(lab.carpd(&["apply"]).status.success());
    // The kernel's own part (an interface down), which carpd must never touch.
    lab.kernel().demotion_add(240).unwrap();

    let o = lab.carpd(&["maintenance", "enter"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("maintenance entered: added 240 to net.inet.carp.demotion")
            && out.contains("net.inet.carp.demotion is now 480"),
        "{out}"
    );
    assert_eq!(lab.demotion(), 480);
    let ledger = lab.path("state/ledger.json");
    assert_eq!(
        fs::metadata(&ledger).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(lab.path("state"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );

    // Twice: nothing more.
    let o = lab.carpd(&["maintenance", "enter"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already in maintenance since"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.demotion(), 480);

    let s = lab.status();
    assert_eq!(s["schema"], "carpd.maintenance-status.v1");
    assert_eq!(s["maintenance"], true);
    assert_eq!(s["entries"][0]["reason"], "maintenance");
    assert_eq!(s["entries"][0]["delta"], 240);
    assert_eq!(s["entries"][0]["state"], "applied");
    assert_eq!(
        (
            &s["carpd_demotion"],
            &s["kernel_demotion"],
            &s["other_demotion"]
        ),
        (&Value::from(240), &Value::from(480), &Value::from(240)),
        "{s}"
    );

    // A reboot resets the kernel's demotion: the entry is lost until the daemon starts.
    let o = lab.carpd(&["simulate", "reboot"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("rebooted"), "{}", text(&o));
    assert_eq!(lab.demotion(), 0);
    let s = lab.status();
    assert_eq!(s["entries"][0]["state"], "lost_by_reboot", "{s}");
    assert_eq!(s["carpd_demotion"], 0);
    let o = lab.carpd(&["maintenance", "status"]);
    assert!(
        o.status.success() && text(&o).contains("lost by a reboot"),
        "{}",
        text(&o)
    );

    // What the daemon does at start.
    let store = LedgerStore::new(lab.path("state"));
    let restored = store.restore(&lab.kernel(), SystemTime::now()).unwrap();
    assert!(
        matches!(
            restored.as_slice(),
            [(
                Reason::Maintenance,
                AddOutcome::ReappliedAfterReboot { delta: 240, .. }
            )]
        ),
        "{restored:?}"
    );
    assert_eq!(lab.demotion(), 240);
    assert!(
        store
            .restore(&lab.kernel(), SystemTime::now())
            .unwrap()
            .is_empty()
    );
    assert_eq!(lab.status()["entries"][0]["state"], "applied");

    // In the new boot an interface goes down; leave removes only carpd's part.
    lab.kernel().demotion_add(240).unwrap();
    let o = lab.carpd(&["maintenance", "leave"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("maintenance left: removed 240")
            && text(&o).contains("net.inet.carp.demotion is now 240"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.demotion(), 240);
    let s = lab.status();
    assert_eq!(s["maintenance"], false);
    assert_eq!(s["other_demotion"], 240);

    // Leave again: nothing to do, still success.
    let o = lab.carpd(&["maintenance", "leave"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not in maintenance"), "{}", text(&o));
    assert_eq!(lab.demotion(), 240);
}

#[test]
fn leave_after_a_reboot_subtracts_nothing() {
    let lab = Lab::new(CONFIG);
    assert!(lab.carpd(&["maintenance", "enter"]).status.success());
    assert!(lab.carpd(&["simulate", "reboot"]).status.success());
    let o = lab.carpd(&["maintenance", "leave"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already reset it; nothing subtracted"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.demotion(), 0, "never negative");
}

#[test]
fn wait_returns_when_the_group_becomes_backup() {
    let lab = Lab::new(CONFIG);
    lab.master();
    let child = lab
        .command(&["maintenance", "enter", "--wait", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The peer takes over once the demotion is in: played by another carpd process.
    eventually("the demotion to reach the kernel", || lab.demotion() == 240);
    let o = lab.carpd(&["simulate", "2@vmx1", "BACKUP"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = wait_child(child, Duration::from_secs(20), "maintenance enter --wait");
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("waiting up to 30s for 2 group(s) to be BACKUP here")
            && text(&o).contains("every group is BACKUP here"),
        "{}",
        text(&o)
    );
}

/// A `carpd run` of this lab, killed when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Lab {
    fn daemon(&self) -> Daemon {
        let child = self
            .command(&["run", "--devd-socket"])
            .arg(self.path("no-devd.pipe"))
            .arg("--control-socket")
            .arg(self.path("carpd.sock"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

/// issue 16, through the real daemon: the boot order (a kernel booted with
/// `net.inet.carp.allow=0` is allowed only after the ledger is restored, and the node is
/// still in maintenance then), and the ledger following the kernel while the daemon runs
/// (carp.ko reloaded: the kernel's demotion drops to 0 with the same boot id, and the
/// daemon's next full re-read applies the maintenance demotion again).
#[test]
fn the_daemon_allows_carp_after_restoring_and_reapplies_after_a_carp_reload() {
    let lab = Lab::new(&format!("{CONFIG}daemon: {{ resync_interval: 1s }}\n"));
    lab.master();
    let o = lab.carpd(&["maintenance", "enter"]);
    assert!(o.status.success(), "{}", text(&o));
    // A reboot with net.inet.carp.allow=0 in loader.conf: vhids wait in INIT.
    let k = lab.kernel();
    let mut st = k.snapshot().unwrap();
    st.loader.insert(Sysctl::Allow, 0);
    k.replace(st).unwrap();
    k.reboot().unwrap();
    let vmx1 = || {
        lab.kernel()
            .group("vmx1", Vhid::new(2).unwrap())
            .unwrap()
            .unwrap()
            .state
    };
    assert_eq!(vmx1(), CarpState::Init);
    let allow = || lab.kernel().sysctl_get(Sysctl::Allow).unwrap();
    let _d = lab.daemon();
    eventually("the daemon to allow CARP", || allow() == 1);
    // By then the ledger was restored: carpd's 240 is in the kernel (the vhids' ifdown
    // demotion was taken back when CARP was allowed).
    assert_eq!(lab.demotion(), 240);
    assert_eq!(vmx1(), CarpState::Backup);
    // carp.ko unloaded and loaded again: demotion back to 0, same boot.
    let boot = lab.kernel().boot_id().unwrap();
    lab.kernel().demotion_add(-240).unwrap();
    assert_eq!(lab.kernel().boot_id().unwrap(), boot);
    eventually("the daemon to re-apply the maintenance demotion", || {
        lab.demotion() == 240
    });
    let s = lab.status();
    assert_eq!(s["entries"][0]["state"], "applied", "{s}");
    assert_eq!(s["carpd_demotion"], 240, "{s}");
}

#[test]
fn wait_times_out_naming_what_did_not_happen() {
    let lab = Lab::new(CONFIG);
    lab.master();
    let started = Instant::now();
    let o = lab.carpd(&["maintenance", "enter", "--wait", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = text(&o);
    assert!(
        out.contains("after 1s not everything moved away")
            && out.contains(
                "2@vmx1 is still MASTER here: is the peer up and preempt enabled? sysctl net.inet.carp.preempt=1 on the peer"
            )
            && !out.contains("1@vmx0"),
        "{out}"
    );
    // The demotion stays: maintenance is entered.
    assert_eq!(lab.demotion(), 240);
    assert_eq!(lab.status()["entries"][0]["state"], "applied");
}

#[test]
fn a_state_dir_that_cannot_be_used_is_a_clear_error() {
    let lab = Lab::new(&CONFIG.replace("{dir}/state", "{dir}/state-file"));
    fs::write(lab.path("state-file"), "not a directory").unwrap();
    let o = lab.carpd(&["maintenance", "enter"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("state-file: exists but is not a directory")
            && text(&o).contains("maintenance.state_dir"),
        "{}",
        text(&o)
    );
    assert_eq!(lab.demotion(), 0, "the kernel is not touched");

    // A corrupt ledger is reported, with the recovery, and left alone.
    let lab = Lab::new(CONFIG);
    fs::create_dir(lab.path("state")).unwrap();
    fs::set_permissions(lab.path("state"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(lab.path("state/ledger.json"), "{ half").unwrap();
    for args in [
        &["maintenance", "enter"][..],
        &["maintenance", "leave"],
        &["maintenance", "status"],
    ] {
        let o = lab.carpd(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("ledger.json is corrupt") && text(&o).contains(".bad"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        fs::read_to_string(lab.path("state/ledger.json")).unwrap(),
        "{ half"
    );
}

/// As a non-root user, with the ledger root's (0700): the error says to run as root. Needs
/// root to run the binary as another uid; skipped otherwise.
#[test]
fn a_non_root_user_is_told_to_run_as_root() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: running carpd as another uid needs root");
        return;
    }
    let lab = Lab::new(CONFIG);
    assert!(lab.carpd(&["maintenance", "enter"]).status.success());
    // Let nobody reach and use the simulated kernel (it is not what is tested), not the
    // ledger directory (0700, root's).
    fs::set_permissions(lab.host.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["kernel.json", "kernel.lock"] {
        fs::set_permissions(lab.path(f), fs::Permissions::from_mode(0o666)).unwrap();
    }
    for args in [&["maintenance", "enter"][..], &["maintenance", "leave"]] {
        let o = lab
            .command(args)
            .current_dir("/")
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIN} as uid {NOBODY}: {e}"));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let out = text(&o);
        assert!(
            out.contains(&lab.path("state").display().to_string())
                && out.contains("Permission denied")
                && out.contains("run carpd as root"),
            "{args:?}: {out}"
        );
    }
    assert_eq!(lab.demotion(), 240, "nothing changed");
}

#[test]
fn simulate_refuses_a_real_kernel_and_a_state_with_reboot() {
    let lab = Lab::new(CONFIG);
    let o = lab.carpd(&["simulate", "reboot", "MASTER"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("takes no state"), "{}", text(&o));
    let o = lab.carpd(&["simulate", "2@vmx1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("give a state"), "{}", text(&o));
    let o = Command::new(BIN)
        .args(["--kernel", "auto", "simulate", "reboot"])
        .env_remove("CARPD_KERNEL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("only drives the simulated kernel"),
        "{}",
        text(&o)
    );
}

// ---------------------------------------------------------------------------------------
// --wait with a failover IP at the OVH simulator

fn ovh_lab(sim: &OvhSim) -> Lab {
    let lab = Lab::new(&format!(
        "node: router-003
groups:
  - interface: vmx1
    vhid: 2
    addresses: [51.68.252.230/32]
ovh:
  endpoint: {}
  credentials: {{ file: {{dir}}/ovh.conf }}
failover_ips:
  - ip: 51.68.252.230
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\" }}
maintenance:
  state_dir: {{dir}}/state
",
        sim.base_url()
    ));
    let conf = lab.path("ovh.conf");
    fs::write(
        &conf,
        format!(
            "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}\n",
            sim.base_url()
        ),
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o600)).unwrap();
    lab
}

fn run_blocking(cmd: Command) -> Output {
    let mut cmd = cmd;
    cmd.output().unwrap()
}

#[tokio::test]
async fn wait_includes_the_failover_ip_being_bound_away() {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    let vip: std::net::Ipv4Addr = "51.68.252.230".parse().unwrap();
    let own: std::net::Ipv4Addr = "178.32.70.111".parse().unwrap();
    let peer: std::net::Ipv4Addr = "178.32.70.110".parse().unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &[own, vip]);
        w.add_vmac(SN, PEER, &[peer]);
    });
    let lab = ovh_lab(&sim);
    lab.master();
    lab.kernel()
        .set_state("vmx1", Vhid::new(2).unwrap(), CarpState::Backup)
        .unwrap();

    // The group is BACKUP but the IP is still here: the timeout names the IP.
    let cmd = lab.command(&["maintenance", "enter", "--wait", "--timeout", "2s"]);
    let o = tokio::task::spawn_blocking(move || run_blocking(cmd))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("51.68.252.230 is still bound to this node at OVH"),
        "{}",
        text(&o)
    );

    // The peer's carpd claims it: --wait returns.
    let child = lab
        .command(&["maintenance", "enter", "--wait", "--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &[own]);
        w.add_vmac(SN, PEER, &[peer, vip]);
    });
    let o = tokio::task::spawn_blocking(move || {
        wait_child(child, Duration::from_secs(20), "enter --wait (OVH)")
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("already in maintenance")
            && text(&o).contains("every failover IP is bound to another node"),
        "{}",
        text(&o)
    );
    assert_eq!(sim.mutations(), 0, "--wait only reads");
    assert!(!text(&o).contains(TEST_AS));
}
