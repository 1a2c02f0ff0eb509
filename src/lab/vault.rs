//! A real OpenBao for the lab, when one is installed: `bao server -dev` on a free loopback
//! port, set up the deployment's way (AppRole `router` whose policy reads exactly the OVH
//! credentials, kv-v2 mount `apps`), with the simulator's keys stored where carpd reads them.
//! Without a `bao` binary the lab keeps the credentials in each router's ovh.conf instead.
//!
//! The binary is found like the tests find it: `CARPD_TEST_BAO`, else `bao` on PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::sim::ovh::{TEST_AK, TEST_AS, TEST_CK};

/// Where the lab's OVH credentials live in Vault (kv-v2 `apps`).
pub const OVH_SECRET: &str = "apps/network/carp-hyper-001-switch";
const ROOT: &str = "carpd-lab-root-token";

/// A running dev server; killed on drop.
pub struct DevVault {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Drop for DevVault {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CARPD_TEST_BAO").map(PathBuf::from)
        && p.is_file()
    {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("bao"))
            .find(|p| p.is_file())
    })
}

impl DevVault {
    /// Starts and sets up a dev server, or `Ok(None)` when no `bao` is installed.
    pub async fn start(dir: &Path) -> Result<Option<DevVault>, String> {
        let Some(bin) = binary() else {
            return Ok(None);
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for OpenBao: {e}"))?
            .port();
        let log = std::fs::File::create(dir.join("bao.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&bin)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env_clear()
            .env("HOME", dir)
            .env("BAO_DEV_ROOT_TOKEN_ID", ROOT)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let v = DevVault {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while v.call("GET", "sys/health", None).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!("OpenBao on {} did not become healthy", v.url));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        v.call("POST", "sys/auth/approle", Some(json!({"type": "approle"})))
            .await?;
        v.call(
            "POST",
            "sys/mounts/apps",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await?;
        v.call(
            "PUT",
            "sys/policies/acl/router",
            Some(json!({"policy": "path \"apps/data/network/carp-hyper-001-switch\" { capabilities = [\"read\"] }\n"})),
        )
        .await?;
        v.call(
            "POST",
            "auth/approle/role/router",
            Some(
                json!({"token_policies": ["router"], "token_ttl": "300s", "token_max_ttl": "600s"}),
            ),
        )
        .await?;
        v.call(
            "POST",
            "apps/data/network/carp-hyper-001-switch",
            Some(json!({"data": {
                "application_key": TEST_AK,
                "application_secret": TEST_AS,
                "consumer_key": TEST_CK,
            }})),
        )
        .await?;
        Ok(Some(v))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .request(m, format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", ROOT)
            .timeout(Duration::from_secs(5));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&b).map_err(|e| e.to_string())?);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| e.to_string())?;
        let v = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("OpenBao {method} {path}: HTTP {status}"));
        }
        Ok(v)
    }

    /// A secretsmith file (mode 0600) with a fresh AppRole secret_id for one router.
    pub async fn secretsmith(&self, path: &Path) -> Result<(), String> {
        let role = self
            .call("GET", "auth/approle/role/router/role-id", None)
            .await?;
        let secret = self
            .call(
                "POST",
                "auth/approle/role/router/secret-id",
                Some(json!({})),
            )
            .await?;
        let (Some(role), Some(secret)) = (
            role["data"]["role_id"].as_str(),
            secret["data"]["secret_id"].as_str(),
        ) else {
            return Err("OpenBao gave no role_id or secret_id".into());
        };
        super::pair::write_private(
            path,
            &format!(
                "vault:\n  server:\n    url: {}\n  auth:\n    method: approle\n    role_id: {role}\n    secret_id: {secret}\n",
                self.url
            ),
        )
    }
}
