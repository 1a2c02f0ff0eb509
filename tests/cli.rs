//! The carpd binary end to end on the simulated kernel: check, plan, apply, status, their exit
//! codes and messages. Each test gets its own state file and configuration in a tempdir and
//! runs the real binary, as an operator would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use carpd_testkit::host::Host;

/// One router's files; commands run the binary with them.
struct Lab(Host);

impl Lab {
    fn new() -> Lab {
        Lab(Host::new())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path(name)
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        self.0.write(name, text, mode)
    }

    fn carpd(&self, kernel: &str, args: &[&str]) -> Output {
        self.0
            .command(env!("CARGO_BIN_EXE_carpd"), kernel)
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CONFIG: &str = "\
node: router-003
carp:
  preempt: true
groups:
  - interface: vmx1
    vhid: 2
    advskew: 0
    peer: 178.32.70.110
    password: { file: {dir}/vhid2.key }
    addresses: [51.68.252.230/32]
  - interface: vmx0
    vhid: 1
    advskew: 100
    addresses: [172.27.27.13/27]
";

const SECRET: &str = "Zq9-not-in-logs";

fn router() -> Lab {
    let lab = Lab::new();
    lab.write("carpd.yaml", CONFIG, 0o600);
    lab.write("vhid2.key", &format!("{SECRET}\n"), 0o400);
    lab
}

#[test]
fn check_plan_apply_plan_is_empty() {
    let lab = router();
    let o = lab.carpd("sim", &["check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("configuration OK"));

    let o = lab.carpd("sim", &["plan"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(plan.contains("5 change(s)"), "{plan}");
    assert!(
        plan.contains("create 2@vmx1: advbase 1, advskew 0, password set, peer 178.32.70.110"),
        "{plan}"
    );

    let o = lab.carpd("sim", &["apply", "--dry-run"]);
    assert!(o.status.success() && stdout(&o).contains("dry run: nothing changed"));
    let o = lab.carpd("sim", &["plan"]);
    assert!(
        stdout(&o).contains("5 change(s)"),
        "dry run must not change the kernel"
    );

    let o = lab.carpd("sim", &["apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("5 change(s) applied"), "{}", stdout(&o));

    for cmd in ["plan", "apply"] {
        let o = lab.carpd("sim", &[cmd]);
        assert!(o.status.success());
        assert!(
            stdout(&o).contains("no changes: the kernel matches"),
            "{cmd}: {}",
            stdout(&o)
        );
    }
    for o in [
        lab.carpd("sim", &["plan"]),
        lab.carpd("sim", &["status"]),
        lab.carpd("sim", &["status", "--json"]),
    ] {
        assert!(
            !stdout(&o).contains(SECRET) && !stderr(&o).contains(SECRET),
            "the password leaked"
        );
    }
}

#[test]
fn status_json_is_the_documented_schema() {
    let lab = router();
    assert!(lab.carpd("sim", &["apply"]).status.success());
    let o = lab.carpd("sim", &["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema"], "carpd.status.v1");
    assert_eq!(v["node"], "router-003");
    assert_eq!(v["backend"]["name"], "sim");
    assert_eq!(v["sysctls"]["preempt"], 1);
    let g = &v["groups"][1];
    let keys: Vec<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "addresses",
            "advbase",
            "advskew",
            "effective_advskew",
            "group",
            "interface",
            "managed",
            "password",
            "peer",
            "peer6",
            "state",
            "vhid"
        ]
    );
    assert_eq!(g["group"], "2@vmx1");
    assert_eq!(g["state"], "BACKUP");
    assert_eq!(g["password"], "set");
    assert_eq!(g["peer"], "178.32.70.110");
    assert_eq!(g["addresses"][0], "51.68.252.230/32");
    assert_eq!(g["managed"], true);
    assert_eq!(v["stats"]["ipackets"], 0);
}

#[test]
fn status_works_without_a_configuration_and_shows_demotion() {
    let lab = router();
    assert!(lab.carpd("sim", &["apply"]).status.success());
    fs::remove_file(lab.path("carpd.yaml")).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(lab.path("kernel.json")).unwrap()).unwrap();
    state["sysctls"]["demotion"] = 50.into();
    fs::write(lab.path("kernel.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    let o = lab.carpd("sim", &["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("node -"), "{s}");
    // advskew 100 + demotion 50 = 150; advskew 0 + 50 = 50.
    assert!(
        s.lines()
            .any(|l| l.starts_with("1@vmx0") && l.contains(" 100 ") && l.contains(" 150 ")),
        "{s}"
    );
    assert!(s.contains("demotion 50"), "{s}");
}

#[test]
fn check_lists_every_problem_and_fails() {
    let lab = Lab::new();
    lab.write(
        "carpd.yaml",
        "node: a\ngroups:\n  - interface: em9\n    vhid: 2\n    peer: 192.0.2.1\n    password: { file: {dir}/open.key }\n    addresses: [10.0.0.1/24]\n",
        0o644,
    );
    lab.write("open.key", "pw\n", 0o644);
    let o = lab.carpd("sim13", &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let s = stdout(&o);
    assert!(s.contains("chmod 0400"), "{s}");
    assert!(s.contains("interface em9 does not exist"), "{s}");
    assert!(s.contains("FreeBSD 14"), "{s}");
    assert!(s.contains("3 problem(s) found"), "{s}");
    let o = lab.carpd("sim13", &["--allow-insecure-files", "check"]);
    assert!(stdout(&o).contains("2 problem(s) found"), "{}", stdout(&o));
}

/// issue 16: `carpd check` run by hand on a host without carp.ko said "configuration OK"
/// on the simulated kernel (interfaces exist without CARP); it names the missing module and
/// the fix.
#[test]
fn check_says_carp_ko_is_not_loaded_with_the_fix() {
    let lab = router();
    lab.write(
        "kernel.json",
        r#"{"carp_loaded": false, "interfaces": {"vmx0": {}, "vmx1": {}}}"#,
        0o600,
    );
    let o = lab.carpd("sim", &["--allow-insecure-files", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let s = stdout(&o);
    assert!(
        s.contains("carp.ko not loaded") && s.contains("kldload carp") && s.contains("carp_load"),
        "{s}"
    );
    assert!(!s.contains("configuration OK"), "{s}");
    // With carp loaded, the same configuration checks clean.
    fs::remove_file(lab.path("kernel.json")).unwrap();
    let o = lab.carpd("sim", &["--allow-insecure-files", "check"]);
    assert!(stdout(&o).contains("configuration OK"), "{}", stdout(&o));
}

#[test]
fn kernel_errors_are_one_paragraph_with_the_fix() {
    let lab = router();
    // A kernel without carp.ko.
    lab.write(
        "kernel.json",
        r#"{"carp_loaded": false, "interfaces": {"vmx0": {}, "vmx1": {}}}"#,
        0o600,
    );
    let o = lab.carpd("sim", &["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("not loaded") && e.contains("kldload carp") && e.contains("carp_load"),
        "{e}"
    );

    // Not root.
    lab.write(
        "kernel.json",
        r#"{"root": false, "interfaces": {"vmx0": {}, "vmx1": {}}}"#,
        0o600,
    );
    let o = lab.carpd("sim", &["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("EPERM") && e.contains("run carpd as root"),
        "{e}"
    );
    assert!(
        stdout(&o).contains("0 of 5 change(s) applied"),
        "{}",
        stdout(&o)
    );
    assert!(!e.contains(SECRET));
}

#[test]
fn invalid_configuration_changes_nothing() {
    let lab = router();
    lab.write("carpd.yaml", "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    advskew: 300\n    addresses: [10.0.0.1/24]\n", 0o600);
    let o = lab.carpd("sim", &["apply"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("carpd.yaml:5:14: groups[0].advskew: 300 is out of range: allowed 0..240"),
        "{e}"
    );
    assert!(e.contains("nothing done"), "{e}");
    assert!(
        !Path::new(&lab.path("kernel.json")).exists()
            || !fs::read_to_string(lab.path("kernel.json"))
                .unwrap()
                .contains("\"2\"")
    );
}

#[test]
fn usage_errors_exit_2() {
    let o = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .args(["--kernel", "bsd", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn config_path_from_environment() {
    let lab = router();
    let o = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .env("CARPD_CONFIG", lab.path("carpd.yaml"))
        .env("CARPD_KERNEL", "sim")
        .env("CARPD_SIM_STATE", lab.path("kernel.json"))
        .arg("check")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
}

/// One rule for an inline password (issue 19, item 6): `check`, `plan`, `apply` and `run`
/// refuse it the same way while others can read carpd.yaml, and all take it once the file is
/// private or with `--allow-insecure-files`. (Reload: tests/daemon.rs.)
#[test]
fn an_inline_password_in_a_readable_configuration_is_refused_by_every_command() {
    let lab = Lab::new();
    let inline = "node: router-003\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: inl1nePw-93e\n    addresses: [51.68.252.230/32]\n";
    lab.write("carpd.yaml", inline, 0o644);
    for args in [
        &["check"][..],
        &["plan"],
        &["apply"],
        &[
            "--control-socket",
            &lab.path("c.sock").display().to_string(),
            "run",
            "--devd-socket",
            &lab.path("devd.sock").display().to_string(),
        ],
    ] {
        let o = lab.carpd("sim", args);
        let text = stdout(&o) + &stderr(&o);
        assert!(!o.status.success(), "{args:?} accepted it: {text}");
        assert!(
            text.contains("inline password of 2@vmx1") && text.contains("has mode 0644"),
            "{args:?}: {text}"
        );
        assert!(!text.contains("inl1nePw-93e"), "{args:?}: {text}");
    }
    let o = lab.carpd("sim", &["--allow-insecure-files", "apply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::set_permissions(lab.path("carpd.yaml"), fs::Permissions::from_mode(0o600)).unwrap();
    let o = lab.carpd("sim", &["check"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
