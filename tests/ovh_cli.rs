//! `carpd failover-ip status|claim` end to end: the real binary, the simulated kernel (state
//! file) and the OVH simulator on loopback, credentials in a python-ovh ovh.conf.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use carpd::carp::{CarpState, Vhid};
use carpd::kernel::sim::{Flavour, SimKernel};
use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

const SN: &str = "ns1234567.ip-51-68-252.eu";
const OURS: &str = "02:00:00:aa:bb:cc";
const PEER: &str = "02:00:00:11:22:33";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn carpd(dir: &Path, args: &[&str]) -> Output {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_carpd"))
            .arg("-c")
            .arg(dir.join("carpd.yaml"))
            .args(["--kernel", "sim", "--sim-state"])
            .arg(dir.join("kernel.json"))
            .arg("--allow-insecure-files")
            .args(&args)
            .env_remove("CARPD_CONFIG")
            .env_remove("OVH_ENDPOINT")
            .output()
            .unwrap()
    });
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("carpd did not finish in 60 s (is the simulator answering?)")
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn status_and_claim_follow_the_local_carp_state() {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    let vip: std::net::Ipv4Addr = "51.68.252.230".parse().unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &["178.32.70.111".parse().unwrap()]);
        w.add_vmac(SN, PEER, &["178.32.70.110".parse().unwrap(), vip]);
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "ovh.conf",
        &format!(
            "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}\n",
            sim.base_url()
        ),
    );
    write(
        d,
        "carpd.yaml",
        &format!(
            "node: router-003
groups:
  - interface: vmx1
    vhid: 2
    addresses: [51.68.252.230/32]
ovh:
  endpoint: {}
  credentials: {{ file: {}/ovh.conf }}
  claim_deadline: 30
failover_ips:
  - ip: 51.68.252.230
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\" }}
",
            sim.base_url(),
            d.display()
        ),
    );
    let o = carpd(d, &["apply"]).await;
    assert!(o.status.success(), "{}", text(&o));

    // BACKUP here, IP on the peer: agrees.
    let o = carpd(d, &["failover-ip", "status", "--json"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = &v["failover_ips"][0];
    assert_eq!(row["local_state"], "BACKUP", "{v}");
    assert_eq!(row["ovh"]["mac"], PEER);
    assert_eq!(row["agrees"], true);

    // Claim refused while BACKUP; the dry run shows the plan.
    let o = carpd(d, &["failover-ip", "claim", "51.68.252.230"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is BACKUP here"), "{}", text(&o));
    let o = carpd(d, &["failover-ip", "claim", "51.68.252.230", "--dry-run"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("DELETE 51.68.252.230 from virtual MAC"),
        "{}",
        text(&o)
    );
    assert_eq!(sim.mutations(), 0);

    // MASTER here: status says MISMATCH (exit 1) until the claim.
    SimKernel::open(Flavour::FreeBsd14, Some(d.join("kernel.json")))
        .unwrap()
        .set_state("vmx1", Vhid::new(2).unwrap(), CarpState::Master)
        .unwrap();
    let o = carpd(d, &["failover-ip", "status"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("MISMATCH"), "{}", text(&o));
    let o = carpd(d, &["failover-ip", "claim", "51.68.252.230"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["result"]["result"], "claimed", "{out}");
    assert_eq!(sim.mutations(), 2);
    let o = carpd(d, &["failover-ip", "status"]).await;
    assert!(
        o.status.success() && text(&o).contains(": ok"),
        "{}",
        text(&o)
    );
    let all = sim.requests();
    assert!(all.iter().all(|r| r.status != 400), "{all:?}");
    assert!(!text(&o).contains(TEST_AS));

    // `carpd check` applies the root-only rule to the OVH credentials file.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("ovh.conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = tokio::task::spawn_blocking({
        let d = d.to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_carpd"))
                .arg("-c")
                .arg(d.join("carpd.yaml"))
                .args(["--kernel", "sim", "--sim-state"])
                .arg(d.join("kernel.json"))
                .arg("check")
                .env_remove("CARPD_CONFIG")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("ovh.credentials: OVH credentials file"),
        "{}",
        text(&o)
    );

    // Vault credentials: a clear error until the Vault module lands.
    write(
        d,
        "carpd.yaml",
        &format!(
            "node: router-003
ovh:
  endpoint: ovh-eu
  credentials: {{ vault: apps/network/x }}
failover_ips:
  - ip: 51.68.252.230
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\" }}
"
        ),
    );
    let o = carpd(d, &["failover-ip", "status"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("ovh.credentials: come from Vault (apps/network/x), but carpd.yaml has no vault: section"),
        "{}",
        text(&o)
    );
}

/// `carpd check --online` reads the credential's access rules, names the missing one and
/// prints the rules to grant, ready to paste (the JSON parses and grants every call).
#[tokio::test]
async fn check_online_names_missing_rights_and_prints_rules_to_paste() {
    let sim = OvhSim::start(SimConfig::default()).await.unwrap();
    let vip: std::net::Ipv4Addr = "51.68.252.230".parse().unwrap();
    sim.with_world(|w| {
        w.add_vmac(SN, OURS, &["178.32.70.111".parse().unwrap()]);
        w.add_vmac(SN, PEER, &["178.32.70.110".parse().unwrap(), vip]);
    });
    // A consumer key that may release the IP but not bind it.
    sim.with_config(|c| {
        c.consumer_keys[0].rules = vec![
            ("GET".into(), format!("/dedicated/server/{SN}/*")),
            ("DELETE".into(), format!("/dedicated/server/{SN}/*")),
        ]
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "ovh.conf",
        &format!(
            "[{}]\napplication_key={TEST_AK}\napplication_secret={TEST_AS}\nconsumer_key={TEST_CK}\n",
            sim.base_url()
        ),
    );
    write(
        d,
        "carpd.yaml",
        &format!(
            "node: router-003
groups:
  - interface: vmx1
    vhid: 2
    addresses: [51.68.252.230/32]
ovh:
  endpoint: {}
  credentials: {{ file: {}/ovh.conf }}
failover_ips:
  - ip: 51.68.252.230
    group: 2@vmx1
    ovh_virtual_mac: {{ service: {SN}, mac: \"{OURS}\" }}
",
            sim.base_url(),
            d.display()
        ),
    );
    let o = carpd(d, &["apply"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = carpd(d, &["check", "--online"]).await;
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "failover IP 51.68.252.230: the OVH credential may not make every call of a claim: missing POST /dedicated/server/{SN}/virtualMac/*/virtualAddress"
        )),
        "{t}"
    );
    assert!(
        t.contains("dedicatedServer:apiovh:virtualMac/virtualAddress/create"),
        "{t}"
    );
    // The block to paste is JSON, and those rules grant everything a claim does.
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let start = stdout.find("{\"accessRules\"").expect("the rules to paste");
    let end = start + stdout[start..].find("]}").unwrap() + 2;
    let v: serde_json::Value = serde_json::from_str(&stdout[start..end]).unwrap();
    let rules: Vec<(String, String)> = v["accessRules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(rules.iter().any(|(m, _)| m == "POST"), "{rules:?}");
    let start = stdout
        .find("{\"permissions\"")
        .expect("the IAM actions to paste");
    let end = start + stdout[start..].find("]}}").unwrap() + 3;
    let v: serde_json::Value = serde_json::from_str(&stdout[start..end]).unwrap();
    assert_eq!(
        v["permissions"]["allow"].as_array().unwrap().len(),
        5,
        "{v}"
    );
    assert!(!t.contains(TEST_AS) && !t.contains(TEST_CK));
    assert_eq!(sim.mutations(), 0, "check changes nothing");
    sim.with_config(|c| c.consumer_keys[0].rules = rules);
    let o = carpd(d, &["check", "--online"]).await;
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("the credential's access rules grant every call of a claim"),
        "{t}"
    );
}
