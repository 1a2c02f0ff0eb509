//! Every carpd command that may touch a secret runs without core dumps (issue 19, item 5):
//! the real binary is started for each such command, held at the point where it waits on a
//! server that never answers (a control socket, a Vault listener), and its limits are read
//! from /proc/<pid>/limits while it waits. The non-dumpable flag itself is checked in-process
//! (src/secrets.rs, `core_dumps_are_off_and_the_process_is_not_dumpable`): /proc shows it to
//! no one but the process.
//!
//! Linux only (/proc); the same function runs on FreeBSD.
#![cfg(target_os = "linux")]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_carpd");

fn write(p: &Path, text: &str, mode: u32) {
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The core-file limit line of a live process, waiting until the process has set it (it
/// starts with the parent's limit).
fn core_limit_of(pid: u32, cmd: &str) -> String {
    let start = Instant::now();
    loop {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .unwrap_or("")
            .to_string();
        if line.split_whitespace().nth(5) == Some("0") || start.elapsed() > Duration::from_secs(10)
        {
            return format!("{cmd}: {line}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_secret_touching_command_runs_without_core_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A control socket that accepts and never answers, and a "Vault" that does the same.
    let sock = d.join("control.sock");
    let control = UnixListener::bind(&sock).unwrap();
    let vault = TcpListener::bind("127.0.0.1:0").unwrap();
    let vault_url = format!("http://{}", vault.local_addr().unwrap());
    write(
        &d.join("s.yaml"),
        &format!("vault:\n  server:\n    url: {vault_url}\n  auth:\n    token: not-a-real-token\n"),
        0o400,
    );
    let cfg = d.join("carpd.yaml");
    write(
        &cfg,
        &format!(
            "node: router-003\nvault:\n  secretsmith: {}\n  timeout: 30s\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: {{ vault: ops/carp/vhid2, field: password }}\n    addresses: [51.68.252.230/32]\nmaintenance: {{ state_dir: {}/db }}\n",
            d.join("s.yaml").display(),
            d.display()
        ),
        0o600,
    );
    let commands: &[&[&str]] = &[
        &["secrets", "check"],
        &["check", "--online"],
        &["apply"],
        &["plan"],
        &["reload"],
        &["status"],
        &["hook", "2@vmx1", "MASTER"],
        &["maintenance", "status"],
    ];
    let mut seen = Vec::new();
    for args in commands {
        let mut child = Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .args(["--kernel", "sim", "--sim-state"])
            .arg(d.join("kernel.json"))
            .arg("--control-socket")
            .arg(&sock)
            .arg("--allow-insecure-files")
            .args(*args)
            .env_remove("CARPD_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = core_limit_of(child.id(), &args.join(" "));
        let _ = child.kill();
        let _ = child.wait();
        seen.push(line);
    }
    drop((control, vault));
    for line in &seen {
        let fields: Vec<&str> = line
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert!(
            fields.len() >= 6 && fields[4] == "0" && fields[5] == "0",
            "core dumps must be off (soft and hard 0) while the command runs:\n{}",
            seen.join("\n")
        );
    }
}
