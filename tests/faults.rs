//! Fault-matrix rows that no other test covered (docs/faults.md links every row to its test):
//! a daemon that accepts a control connection and never answers, a daemon answering
//! garbage or another protocol version; a Vault server that accepts and never answers, or
//! answers 200 with something that is not JSON; an OVH API answering 200 with garbage, or
//! with a clock a day off from the first request; a ledger disk that is full.
//!
//! Servers are raw sockets on 127.0.0.1 or in a temporary directory, written for the fault.
//! Every wait has a limit whose message names the likely fault.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use carpd::control::{self, ClientError, Request};
use carpd::ovh::{Client, ClientOptions, Credentials, Endpoint, FixedCredentials, OvhError};
use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};

async fn limit<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result in 20 s (a missing timeout?)"))
}

/// A unix socket server that accepts, reads the request line and answers `answer` (nothing
/// at all when `None`, holding the connection open).
fn control_server(dir: &Path, answer: Option<&'static [u8]>) -> PathBuf {
    let path = dir.join("carpd.sock");
    let l = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(&s).read_line(&mut line);
                match answer {
                    Some(a) => {
                        let _ = s.write_all(a);
                    }
                    None => std::thread::sleep(Duration::from_secs(60)),
                }
            });
        }
    });
    path
}

#[test]
fn a_hung_daemon_is_reported_by_the_cli_within_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = control_server(dir.path(), None);
    let started = Instant::now();
    let e = control::request(&path, &Request::Status, Duration::from_millis(500)).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("the daemon may be stuck (see its log)"),
        "{msg}"
    );
}

#[test]
fn a_daemon_answering_garbage_or_another_version_is_a_clear_error() {
    for (answer, want) in [
        (&b"garbage\n"[..], "not a JSON object"),
        (
            b"{\"v\":7,\"reply\":\"nudged\",\"known\":true}\n",
            "restart the daemon after an upgrade",
        ),
        (b"", "control socket"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = control_server(dir.path(), Some(answer));
        let e = control::request(&path, &Request::Status, Duration::from_secs(5)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(want),
            "{}: {msg}",
            String::from_utf8_lossy(answer)
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

/// A TCP server on 127.0.0.1 that reads one request head and answers `answer` (or holds the
/// connection without a word when `None`).
fn http_server(answer: Option<&'static str>) -> String {
    http_server_status(200, answer)
}

/// [`http_server`] answering with `status`.
fn http_server_status(status: u16, answer: Option<&'static str>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || serve_http(s, status, answer));
        }
    });
    url
}

fn serve_http(s: TcpStream, status: u16, answer: Option<&str>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        match answer {
            None => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Some(a) => {
                let reply = format!(
                    "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{a}",
                    a.len()
                );
                if w.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

fn vault_settings(url: &str) -> carpd::vault::Settings {
    use carpd::vault::secretsmith::{Auth, Origin, Server, Settings, Verify};
    use secrecy::SecretString;
    Settings {
        origin: Origin::File("secretsmith.yaml".into()),
        server: Server {
            url: url.to_string(),
            verify: Verify::System,
            namespace: None,
        },
        auth: Auth::AppRole {
            mount: "approle".into(),
            role_id: SecretString::from("role"),
            secret_id: Some(SecretString::from("sid")),
        },
    }
}

#[tokio::test]
async fn a_vault_that_accepts_and_never_answers_fails_the_login_within_the_timeout() {
    use carpd::vault::client::VaultStore;
    use carpd::vault::{Kind, SecretStore};
    let url = http_server(None);
    let mut store = VaultStore::new(Duration::from_millis(700));
    let started = Instant::now();
    let e = limit(
        "login against a hung Vault",
        store.login(&vault_settings(&url)),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(e.kind(), Kind::Unreachable, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("no answer in time"), "{msg}");
    assert!(
        msg.contains("vault.timeout in carpd.yaml sets the limit"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_vault_answering_200_with_garbage_is_a_protocol_error_naming_the_server() {
    use carpd::vault::client::VaultStore;
    use carpd::vault::{Kind, SecretStore};
    // Each body with a marker that must not reach the message ("{}" has none: it is there
    // for the "no data" path).
    for (body, marker) in [
        ("<html>proxy login</html>", Some("proxy login")),
        ("{\"auth\": 42}", Some("\"auth\"")),
        ("{}", None),
    ] {
        let url = http_server(Some(body));
        let mut store = VaultStore::new(Duration::from_secs(5));
        let e = limit(
            "login against a garbage Vault",
            store.login(&vault_settings(&url)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), Kind::Protocol, "{body}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(msg.contains("login with approle"), "{msg}");
        assert!(
            msg.contains("check that the URL points at Vault/OpenBao"),
            "{body}: {msg}"
        );
        // Never the body: a proxy's page or a hostile server's text stays out of the logs.
        if let Some(marker) = marker {
            assert!(!msg.contains(marker), "{body}: {msg}");
        }
    }
}

#[tokio::test]
async fn a_sealed_vault_is_a_server_error_saying_unseal() {
    use carpd::vault::client::VaultStore;
    use carpd::vault::{Kind, SecretStore};
    let url = http_server_status(503, Some(r#"{"errors":["Vault is sealed"]}"#));
    let mut store = VaultStore::new(Duration::from_secs(5));
    let e = limit(
        "login against a sealed Vault",
        store.login(&vault_settings(&url)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), Kind::Server, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("HTTP 503: Vault is sealed"), "{msg}");
    assert!(msg.contains("unseal it (bao operator unseal)"), "{msg}");
}

fn ovh_client(base: &str) -> Client {
    Client::new(
        Endpoint::parse(base).unwrap(),
        Arc::new(FixedCredentials(Credentials::classic(
            TEST_AK, TEST_AS, TEST_CK,
        ))),
        ClientOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn an_ovh_answer_of_the_wrong_shape_is_a_decode_error_naming_the_call() {
    // /auth/time answers a number (a plausible clock), everything else garbage.
    let url = http_server(Some("1700000000"));
    let c = ovh_client(&format!("{url}/1.0"));
    let e = limit(
        "GET /ip against a garbage API",
        c.get::<carpd::ovh::api::IpInfo>("/ip/51.68.252.230%2F32"),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, OvhError::Decode { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("GET /ip/51.68.252.230%2F32"), "{msg}");
    assert!(msg.contains("unexpected answer"), "{msg}");
    assert!(msg.contains("HTTP 200"), "{msg}");
}

#[tokio::test]
async fn a_clock_a_day_off_from_ovhs_signs_correctly_from_the_first_request() {
    // The local clock is a day behind OVH's (or OVH's a day ahead): the client measures the
    // delta before the first signed call, so nothing is refused, not even once.
    for offset in [86_400, -86_400] {
        let sim = OvhSim::start(SimConfig {
            clock_offset: offset,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        sim.with_world(|w| {
            w.add_vmac(
                "ns1.ip-1-2-3.eu",
                "02:00:00:aa:bb:cc",
                &["10.0.0.1".parse().unwrap()],
            )
        });
        let c = ovh_client(&sim.base_url());
        let vmacs: Vec<String> = limit(
            "a signed GET with a skewed clock",
            c.get("/dedicated/server/ns1.ip-1-2-3.eu/virtualMac"),
        )
        .await
        .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        assert_eq!(vmacs, ["02:00:00:aa:bb:cc"]);
        let d = c.time_delta().unwrap();
        assert!(
            (d - offset).abs() <= 2,
            "measured delta {d} for offset {offset}"
        );
        let refused = sim.requests().iter().filter(|r| r.status == 400).count();
        assert_eq!(refused, 0, "offset {offset}: {:?}", sim.requests());
    }
}

/// A full disk under the ledger: the write fails with an error naming the file and the
/// operation, and the kernel is not touched (the write-ahead record could not be made).
/// Needs root to mount a small tmpfs (docs/faults.md marks the row "root"; CI and
/// scripts/test-all run as root). Without root it fails rather than pass having proven
/// nothing, unless CARPD_TEST_UNPRIVILEGED=1 says the skip is known.
#[cfg(target_os = "linux")]
#[test]
fn a_full_ledger_disk_changes_nothing_in_the_kernel() {
    use carpd::carp::Sysctl;
    use carpd::controller::ledger::{LedgerStore, Reason};
    use carpd::kernel::Kernel;
    use carpd::kernel::sim::{Flavour, SimKernel};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var_os("CARPD_TEST_UNPRIVILEGED").is_some(),
            "this test needs root (it mounts a tmpfs to fill): run it as root, as CI does, or set CARPD_TEST_UNPRIVILEGED=1 to skip it knowingly"
        );
        eprintln!("not root, CARPD_TEST_UNPRIVILEGED set: skipped, nothing proven");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs on {}", mnt.display());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let state = mnt.join("db");
    let store = LedgerStore::new(&state);
    let kernel = SimKernel::open(Flavour::FreeBsd14, None).unwrap();
    // The directory and lock file fit; then fill the disk.
    store.read().unwrap();
    store
        .add(&kernel, Reason::NotReady, 10, std::time::SystemTime::now())
        .unwrap();
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let block = vec![0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    drop(filler);
    let before = kernel.sysctl_get(Sysctl::Demotion).unwrap();
    let e = store
        .add(
            &kernel,
            Reason::Maintenance,
            240,
            std::time::SystemTime::now(),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&state.display().to_string()), "{msg}");
    assert!(
        msg.contains("No space left on device") || msg.contains("cannot write"),
        "{msg}"
    );
    assert_eq!(
        kernel.sysctl_get(Sysctl::Demotion).unwrap(),
        before,
        "the kernel was changed although the ledger could not record it"
    );
    // What was recorded before the disk filled is intact.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let l = store.read().unwrap();
    assert_eq!(l.entries.len(), 1, "{l:?}");
    assert_eq!(l.entries[0].reason, Reason::NotReady);
}

/// docs/faults.md links tests by `file::name`: each must exist, so a renamed or deleted
/// test cannot leave a row pointing at nothing.
#[test]
fn the_fault_matrix_names_only_tests_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/faults.md")).unwrap();
    let mut checked = 0;
    let mut missing = Vec::new();
    for line in doc.lines() {
        for (i, piece) in line.split('`').enumerate() {
            // Odd pieces are inside backticks.
            let Some((file, name)) = piece.split_once("::").filter(|_| i % 2 == 1) else {
                continue;
            };
            if !file.ends_with(".rs")
                || name.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            {
                continue;
            }
            let path = root.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                missing.push(format!("{file} (no such file)"));
                continue;
            };
            checked += 1;
            if !text.contains(&format!("fn {name}(")) {
                missing.push(format!("{file}::{name}"));
            }
        }
    }
    assert!(
        checked > 80,
        "only {checked} tests found in docs/faults.md: parser broken?"
    );
    assert!(
        missing.is_empty(),
        "docs/faults.md names tests that do not exist: {missing:#?}"
    );
}

/// The kernel-error row of docs/faults.md names five errnos: each becomes a message with the
/// operation (vhid and interface), the errno's name, what it means for CARP, and (where there
/// is one) the fix. A mapping removed or changed fails here.
#[test]
fn every_errno_of_the_kernel_row_names_operation_meaning_and_fix() {
    use carpd::kernel::KernelError;
    for (errno, name, meaning, fix) in [
        (
            libc::EINVAL,
            "EINVAL",
            "rejected a value as invalid",
            Some("advskew below 255"),
        ),
        (
            libc::ENOENT,
            "ENOENT",
            "no such vhid on this interface",
            None,
        ),
        (
            libc::ENXIO,
            "ENXIO",
            "no such interface",
            Some("ifconfig -l"),
        ),
        (
            libc::EOPNOTSUPP,
            "EOPNOTSUPP",
            "cannot carry CARP",
            Some("Ethernet, VLAN or bridge"),
        ),
        (
            libc::EADDRNOTAVAIL,
            "EADDRNOTAVAIL",
            "no IFF_MULTICAST",
            Some("multicast-capable"),
        ),
    ] {
        let s = KernelError::errno("SET carp 2@vmx1 (netlink)", errno).to_string();
        assert!(s.starts_with("SET carp 2@vmx1 (netlink): "), "{name}: {s}");
        assert!(s.contains(name) && s.contains(meaning), "{name}: {s}");
        if let Some(f) = fix {
            assert!(s.contains(f), "{name}: the fix is missing: {s}");
        }
    }
}
