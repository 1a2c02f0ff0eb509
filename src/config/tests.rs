//! Table tests for every configuration problem carpd reports, and a property test that the
//! loader never panics on arbitrary or mutated input (the in-tree fuzzer of the loader).

use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::carp::BackendInfo;

const GOOD: &str = "\
node: router-003
carp:
  preempt: true
  dscp: 56
groups:
  - interface: vmx1
    vhid: 2
    advbase: 1
    advskew: 0
    peer: 178.32.70.110
    password: { file: /usr/local/etc/carpd/vhid2.key }
    addresses: [51.68.252.230/32]
  - interface: vmx0
    vhid: 1
    advskew: 100
    password: { vault: ops/secrets/network/carp/1, field: password }
    addresses: [172.27.27.13/27, 2001:db8::13/64]
vault:
  secretsmith: /usr/local/etc/secrets/carp-secretsmith.yaml
  cache_max_age: 120
";

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(s, Path::new("carpd.yaml"))
}

#[test]
fn good_config_builds_the_model() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.node, "router-003");
    assert_eq!(c.sysctls, vec![(Sysctl::Preempt, 1), (Sysctl::Dscp, 56)]);
    assert_eq!(c.groups.len(), 2);
    let g = &c.groups[0];
    assert_eq!(g.id.to_string(), "2@vmx1");
    assert_eq!(g.peer, Some("178.32.70.110".parse().unwrap()));
    assert_eq!(
        g.password,
        Some(PasswordSource::File(
            "/usr/local/etc/carpd/vhid2.key".into()
        ))
    );
    assert_eq!(g.pos.line, 6);
    let g = &c.groups[1];
    assert_eq!((g.advbase, g.advskew), (1, 100));
    assert_eq!(
        g.password,
        Some(PasswordSource::Vault {
            path: "ops/secrets/network/carp/1".into(),
            field: "password".into()
        })
    );
    assert_eq!(g.addresses.len(), 2);
    assert!(c.warnings.is_empty());
}

/// (what is wrong, the YAML, the "file:line:col: key: ..." prefix expected, a phrase of the fix)
const BAD: &[(&str, &str, &str, &str)] = &[
    ("empty file", "", "carpd.yaml: ", "at least `node:`"),
    ("malformed YAML", "node: [\n", "carpd.yaml:1:7: ", ""),
    (
        "unknown top-level key",
        "node: a\ngroupz: []\n",
        "carpd.yaml:2:1: ",
        "unknown field `groupz`",
    ),
    (
        "unknown group key",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    advskw: 3\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:5:5: ",
        "unknown field `advskw`",
    ),
    (
        "wrong type",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: two\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:4:11: ",
        "",
    ),
    (
        "missing node",
        "groups: []\n",
        "carpd.yaml: node: ",
        "node: router-003",
    ),
    (
        "vhid out of range",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 256\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:4:11: groups[0].vhid: ",
        "allowed 1..255",
    ),
    (
        "vhid zero",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 0\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:4:11: groups[0].vhid: ",
        "allowed 1..255",
    ),
    (
        "advskew out of range",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    advskew: 300\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:5:14: groups[0].advskew: ",
        "allowed 0..240",
    ),
    (
        "advbase zero",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    advbase: 0\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:5:14: groups[0].advbase: ",
        "allowed 1..255",
    ),
    (
        "duplicate vhid on one interface",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    addresses: [10.0.0.1/24]\n  - interface: vmx1\n    vhid: 2\n    addresses: [10.0.0.2/24]\n",
        "carpd.yaml:7:11: groups[1].vhid: ",
        "already configured at line 4",
    ),
    (
        "same address in two groups",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    addresses: [10.0.0.1/24]\n  - interface: vmx0\n    vhid: 2\n    addresses: [10.0.0.1/24]\n",
        "groups[1].addresses: ",
        "already an address of 2@vmx1",
    ),
    (
        "address without prefix",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    addresses: [51.68.252.230]\n",
        "groups[0].addresses[0]: ",
        "51.68.252.230/32",
    ),
    (
        "address garbage",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    addresses: [not-an-ip/3]\n",
        "groups[0].addresses[0]: ",
        "prefix length",
    ),
    (
        "no addresses",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n",
        "groups[0].addresses: ",
        "at least one address",
    ),
    (
        "multicast peer",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    peer: 239.1.1.1\n    addresses: [10.0.0.1/24]\n",
        "groups[0].peer: ",
        "omit peer for multicast",
    ),
    (
        "IPv6 in peer",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    peer: 2001:db8::1\n    addresses: [10.0.0.1/24]\n",
        "groups[0].peer: ",
        "peer6",
    ),
    (
        "bad interface name",
        "node: a\ngroups:\n  - interface: \"vmx 1\"\n    vhid: 2\n    addresses: [10.0.0.1/24]\n",
        "groups[0].interface: ",
        "characters",
    ),
    (
        "password too long",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: abcdefghijklmnopqrstuvwxyz\n    addresses: [10.0.0.1/24]\n",
        "groups[0].password: ",
        "at most 20 bytes",
    ),
    (
        "password source with unknown key",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: { fil: /x }\n    addresses: [10.0.0.1/24]\n",
        "groups[0].password: ",
        "expected {file: /path}",
    ),
    (
        "relative password file",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: { file: pw.txt }\n    addresses: [10.0.0.1/24]\n",
        "groups[0].password: ",
        "absolute path",
    ),
    (
        "vault path without mount",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: { vault: carp }\n    addresses: [10.0.0.1/24]\n",
        "groups[0].password: ",
        "<mount>/<path>",
    ),
    (
        "dscp out of range",
        "node: a\ncarp:\n  dscp: 64\n",
        "carpd.yaml:3:9: carp.dscp: ",
        "allowed 0..63",
    ),
    (
        "log out of range",
        "node: a\ncarp:\n  log: 7\n",
        "carp.log: ",
        "allowed 0",
    ),
    (
        "vault password without a vault section",
        "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: { vault: ops/carp/2 }\n    addresses: [10.0.0.1/24]\n",
        "carpd.yaml:5:15: groups[0].password: ",
        "add `vault: { secretsmith: /usr/local/etc/secrets/carp-secretsmith.yaml }`",
    ),
    (
        "relative secretsmith path",
        "node: a\nvault:\n  secretsmith: secrets/s.yaml\n",
        "carpd.yaml:3:16: vault.secretsmith: ",
        "must be an absolute path",
    ),
    (
        "vault timeout out of range",
        "node: a\nvault:\n  timeout: 0\n",
        "carpd.yaml:3:12: vault.timeout: ",
        "allowed 1..300 seconds",
    ),
    (
        "vault cache age out of range",
        "node: a\nvault:\n  cache_max_age: -1\n",
        "carpd.yaml:3:18: vault.cache_max_age: ",
        "0 disables",
    ),
    (
        "bad approle mount",
        "node: a\nvault:\n  approle_mount: 'a b'\n",
        "carpd.yaml:3:18: vault.approle_mount: ",
        "e.g. approle",
    ),
    (
        "unknown vault key",
        "node: a\nvault:\n  secretsmit: /x\n",
        "carpd.yaml:3:3: ",
        "secretsmit",
    ),
    (
        "duplicate key",
        "node: a\nnode: b\n",
        "carpd.yaml:2:1: ",
        "duplicate",
    ),
];

#[test]
fn every_problem_names_place_and_fix() {
    for (what, yaml, prefix, fix) in BAD {
        let e = parse_str(yaml).expect_err(what);
        let text = e.to_string();
        let placed = if prefix.starts_with("carpd.yaml") {
            text.starts_with(prefix)
        } else {
            text.starts_with("carpd.yaml:") && text.contains(prefix)
        };
        assert!(
            placed,
            "{what}: expected {prefix:?} at the start, got:\n{text}"
        );
        assert!(text.contains(fix), "{what}: expected {fix:?} in:\n{text}");
    }
}

#[test]
fn vault_section_defaults_and_values() {
    let c = parse_str(GOOD).unwrap();
    let v = c.vault.unwrap();
    assert_eq!(
        v.secretsmith.as_deref(),
        Some(Path::new("/usr/local/etc/secrets/carp-secretsmith.yaml"))
    );
    assert_eq!(v.approle_mount, "approle");
    assert_eq!(v.cache_max_age, std::time::Duration::from_secs(120));
    assert_eq!(v.timeout, VaultConfig::DEFAULT_TIMEOUT);
    let c = parse_str("node: a\nvault: {}\n").unwrap();
    let v = c.vault.unwrap();
    assert_eq!(v.secretsmith, None);
    assert_eq!(v.cache_max_age, VaultConfig::DEFAULT_CACHE_MAX_AGE);
    let c = parse_str("node: a\nvault: {approle_mount: /routers/, timeout: 3}\n").unwrap();
    let v = c.vault.unwrap();
    assert_eq!(v.approle_mount, "routers");
    assert_eq!(v.timeout, std::time::Duration::from_secs(3));
}

#[test]
fn proxies_are_configured_per_service_and_checked() {
    let c = parse_str("node: a\nvault: {proxy: 'http://proxy.example:3128'}\n").unwrap();
    assert_eq!(
        c.vault.unwrap().proxy.as_deref(),
        Some("http://proxy.example:3128")
    );
    assert_eq!(
        parse_str("node: a\nvault: {}\n")
            .unwrap()
            .vault
            .unwrap()
            .proxy,
        None
    );
    let e = parse_str("node: a\nvault: {proxy: 'socks5://p:1080'}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("vault.proxy") && e.contains("http://"), "{e}");
    let c = parse_str(
        "node: a\novh: {endpoint: ovh-eu, credentials: {file: /etc/ovh.conf}, proxy: 'https://p.example'}\n",
    )
    .unwrap();
    assert_eq!(c.ovh.unwrap().proxy.as_deref(), Some("https://p.example"));
    let e = parse_str(
        "node: a\novh: {endpoint: ovh-eu, credentials: {file: /etc/ovh.conf}, proxy: 'p.example'}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("ovh.proxy"), "{e}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = "node: a\ngroups:\n  - interface: vmx1\n    vhid: 0\n    advskew: 241\n    addresses: [1.2.3.4]\n";
    let e = parse_str(yaml).unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e}");
}

#[test]
fn inline_password_is_a_warning_and_redacted() {
    let yaml = "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: hunter2\n    addresses: [10.0.0.1/24]\n";
    let c = parse_str(yaml).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].to_string().contains("inline"));
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "Debug must not show the password"
    );
}

#[test]
fn multicast_group_address_means_multicast() {
    let yaml = "node: a\ngroups:\n  - interface: vmx1\n    vhid: 2\n    peer: 224.0.0.18\n    peer6: ff02::12\n    addresses: [10.0.0.1/24]\n";
    let c = parse_str(yaml).unwrap();
    assert_eq!((c.groups[0].peer, c.groups[0].peer6), (None, None));
}

#[test]
fn kernel_problems_unknown_interface_and_unicast_on_13() {
    let c = parse_str(GOOD).unwrap();
    let ifs = vec!["vmx1".to_string(), "lo0".to_string()];
    let netlink = BackendInfo {
        name: "netlink",
        unicast: true,
    };
    let p = validate::kernel_problems(&c, &netlink, &ifs);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].to_string().contains("interface vmx0 does not exist"),
        "{}",
        p[0]
    );
    let ioctl = BackendInfo {
        name: "ioctl",
        unicast: false,
    };
    let p = validate::kernel_problems(&c, &ioctl, &["vmx0".into(), "vmx1".into()]);
    assert_eq!(p.len(), 1);
    let s = p[0].to_string();
    assert!(s.starts_with("carpd.yaml:10:11: groups[0].peer: "), "{s}");
    assert!(s.contains("FreeBSD 14"), "{s}");
}

#[test]
fn load_reports_missing_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = load(&missing).unwrap_err().to_string();
    assert!(
        e.contains("no such file") && e.contains("CARPD_CONFIG"),
        "{e}"
    );
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; (MAX_FILE_SIZE + 1) as usize]).unwrap();
    assert!(load(&big).unwrap_err().to_string().contains("refuses"));
    let bin = dir.path().join("bin.yaml");
    std::fs::write(&bin, [0xff, 0xfe, 0x00]).unwrap();
    assert!(load(&bin).unwrap_err().to_string().contains("UTF-8"));
}

fn yamlish() -> impl Strategy<Value = String> {
    // Pieces that steer random text towards the parser's and validator's interesting paths.
    let atoms = prop::sample::select(vec![
        "node: a\n",
        "groups:\n",
        "  - ",
        "interface: vmx1\n",
        "    vhid: ",
        "2",
        "-1",
        "300",
        "\n",
        "    addresses: [",
        "10.0.0.1/24",
        "]",
        "{ file: /x }",
        "password: ",
        "peer: ",
        "&a ",
        "*a",
        "<<: *a\n",
        "? ",
        ": ",
        "'",
        "\"",
        "\\u0000",
        "!!binary ",
        "[",
        "{",
        "#",
        "carp:\n  dscp: ",
        "  preempt: yes\n",
        "\t",
        "---\n",
        "...\n",
        "~",
        "0x1f",
        "1e9999",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn loader_never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = parse_str(&s);
    }

    #[test]
    fn loader_never_panics_on_yaml_like_text(s in yamlish()) {
        let _ = parse_str(&s);
    }

    #[test]
    fn loader_never_panics_on_mutated_good_config(pos in 0usize..GOOD.len(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut b = GOOD.as_bytes().to_vec();
        if cut { b.truncate(pos) } else { b[pos] = byte }
        if let Ok(s) = String::from_utf8(b)
            && let Err(e) = parse_str(&s)
        {
            // Every error names the file.
            prop_assert!(e.to_string().starts_with("carpd.yaml"));
        }
    }
}

#[test]
fn daemon_section_defaults_and_durations() {
    let c = parse_str("node: n\n").unwrap();
    assert_eq!(c.daemon, DaemonConfig::default());
    assert_eq!(c.daemon.resync_interval, std::time::Duration::from_secs(5));
    let c = parse_str("node: n\ndaemon:\n  resync_interval: 30\n  coalesce: 250ms\n").unwrap();
    assert_eq!(c.daemon.resync_interval, std::time::Duration::from_secs(30));
    assert_eq!(c.daemon.coalesce, std::time::Duration::from_millis(250));
    let c = parse_str("node: n\ndaemon: { resync_interval: 1m 30s, coalesce: 0s }\n").unwrap();
    assert_eq!(c.daemon.resync_interval, std::time::Duration::from_secs(90));
    assert_eq!(c.daemon.coalesce, std::time::Duration::ZERO);
}

#[test]
fn daemon_section_problems_name_key_line_and_range() {
    let table = [
        (
            "node: n\ndaemon:\n  resync_interval: 0\n",
            "carpd.yaml:3:20: daemon.resync_interval: 0s is out of range: allowed 1s to 1h",
        ),
        (
            "node: n\ndaemon:\n  coalesce: 11s\n",
            "carpd.yaml:3:13: daemon.coalesce: 11s is out of range: allowed 0s to 10s",
        ),
        (
            "node: n\ndaemon:\n  coalesce: soon\n",
            "carpd.yaml:3:13: daemon.coalesce: \"soon\" is not a duration",
        ),
        ("node: n\ndaemon:\n  resync: 5s\n", "unknown field `resync`"),
    ];
    for (text, want) in table {
        let e = parse_str(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn maintenance_and_readiness_sections_defaults_and_values() {
    let c = parse_str("node: n\n").unwrap();
    assert_eq!(c.maintenance, MaintenanceConfig::default());
    assert_eq!(
        c.maintenance.state_dir,
        std::path::PathBuf::from("/var/db/carpd")
    );
    assert_eq!(c.maintenance.demotion, 240);
    assert_eq!(c.readiness, ReadinessConfig::default());
    assert_eq!(c.readiness.interval, std::time::Duration::from_secs(30));
    assert_eq!(
        c.readiness.max_clock_delta,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        c.readiness.demotion, 0,
        "readiness demotion is off by default"
    );

    let c = parse_str(
        "node: n\nmaintenance:\n  state_dir: /var/db/carpd-test\n  demotion: 100\nreadiness:\n  interval: 1m\n  max_clock_delta: 2\n  demotion: 50\n",
    )
    .unwrap();
    assert_eq!(
        c.maintenance.state_dir,
        std::path::PathBuf::from("/var/db/carpd-test")
    );
    assert_eq!(c.maintenance.demotion, 100);
    assert_eq!(c.readiness.interval, std::time::Duration::from_secs(60));
    assert_eq!(
        c.readiness.max_clock_delta,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(c.readiness.demotion, 50);
    // The boundaries are allowed.
    let c = parse_str(
        "node: n\nmaintenance: { demotion: 1 }\nreadiness: { demotion: 240, interval: 5s }\n",
    )
    .unwrap();
    assert_eq!((c.maintenance.demotion, c.readiness.demotion), (1, 240));
}

#[test]
fn maintenance_and_readiness_problems_name_key_line_and_range() {
    let table = [
        (
            "node: n\nmaintenance:\n  demotion: 0\n",
            "carpd.yaml:3:13: maintenance.demotion: 0 is out of range: allowed 1..240",
        ),
        (
            "node: n\nmaintenance:\n  demotion: 241\n",
            "carpd.yaml:3:13: maintenance.demotion: 241 is out of range: allowed 1..240",
        ),
        (
            "node: n\nmaintenance:\n  state_dir: var/db/carpd\n",
            "carpd.yaml:3:14: maintenance.state_dir: 'var/db/carpd' must be an absolute path",
        ),
        ("node: n\nmaintenance:\n  dir: /x\n", "unknown field `dir`"),
        (
            "node: n\nreadiness:\n  demotion: -1\n",
            "carpd.yaml:3:13: readiness.demotion: -1 is out of range: allowed 0 (off, the default) to 240",
        ),
        (
            "node: n\nreadiness:\n  interval: 1s\n",
            "carpd.yaml:3:13: readiness.interval: 1s is out of range: allowed 5s to 1h",
        ),
        (
            "node: n\nreadiness:\n  max_clock_delta: never\n",
            "carpd.yaml:3:20: readiness.max_clock_delta: \"never\" is not a duration",
        ),
        (
            "node: n\nreadiness:\n  checks: 5\n",
            "unknown field `checks`",
        ),
    ];
    for (text, want) in table {
        let e = parse_str(text).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}\n got: {e}\nwant: {want}");
    }
    // Every problem of both sections is reported in one run.
    let e = parse_str("node: n\nmaintenance: { demotion: 999 }\nreadiness: { demotion: 999 }\n")
        .unwrap_err();
    assert_eq!(e.problems.len(), 2, "{e}");
}

#[test]
fn proxy_settings_are_http_urls() {
    assert_eq!(
        crate::config::validate::check_proxy(" http://p.example:3128 ").unwrap(),
        "http://p.example:3128"
    );
    assert!(crate::config::validate::check_proxy("https://p.example").is_ok());
    assert!(crate::config::validate::check_proxy("p.example:3128").is_err());
    assert!(
        crate::config::validate::check_proxy("socks5://p.example:1080")
            .unwrap_err()
            .contains("http://")
    );
    let e = crate::config::validate::check_proxy("http//user:hunter2@p").unwrap_err();
    assert!(!e.contains("hunter2"), "{e}");
}

#[test]
fn a_parse_error_never_quotes_a_password_line() {
    let text = "node: r1\ngroups:\n  - vhid: 2\n    interface: vmx1\n    password: \"hunter2secret\"\n    advskew: [1\n";
    let e = validate::parse_yaml(text, std::path::Path::new("/etc/carpd.yaml")).unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains("hunter2secret"), "{shown}");
    assert!(
        shown.contains("/etc/carpd.yaml:6:"),
        "the position stays: {shown}"
    );
    assert!(shown.contains("holds a password"), "{shown}");
    // Quoted or capitalised keys count too; a file without a password keeps its snippet.
    let quoted = text.replace("password:", "\"Password\":");
    let shown = validate::parse_yaml(&quoted, std::path::Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(!shown.contains("hunter2secret"), "{shown}");
    let plain = text.replace("    password: \"hunter2secret\"\n", "");
    let shown = validate::parse_yaml(&plain, std::path::Path::new("c.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("advskew: [1"),
        "the snippet is kept without a password: {shown}"
    );
}
