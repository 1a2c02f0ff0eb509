//! The real [`SecretStore`]: Vault/OpenBao over HTTPS with vaultrs, rustls on the ring provider.
//!
//! What this file adds to vaultrs: explicit settings (vaultrs would otherwise read VAULT_*
//! variables behind carpd's back), the ring provider, a request timeout, a loud warning for
//! `verify: false`, and the translation of every failure into a [`VaultError`] that names the
//! server, the operation (auth method or secret path) and the fix — without ever showing a
//! response body (a kv read's body is the secret).
//!
//! TLS: `verify: /path/ca.pem` adds that CA to the system roots (vaultrs merges CA files;
//! secretsmith/requests would use the bundle alone). A certificate signed by neither is
//! refused. vaultrs keeps the token in plain `String`s inside its client; carpd's own copies
//! are `SecretString`s, and the AppRole answer's copy is wiped right after use.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::Zeroize;

use super::error::{Kind, VaultError};
use super::secretsmith::{Auth, Server, Settings, Verify};
use super::store::{Fields, SecretPath, SecretStore, TokenInfo};

/// Default time limit of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A Vault/OpenBao server reached with vaultrs.
pub struct VaultStore {
    timeout: Duration,
    /// `vault.proxy`; `None`: direct (the environment's proxies are never used).
    proxy: Option<String>,
    conn: Option<Conn>,
}

struct Conn {
    server: Server,
    client: VaultClient,
    /// Names the settings' origin and auth method in messages.
    origin: String,
    method: String,
}

impl VaultStore {
    pub fn new(timeout: Duration) -> VaultStore {
        crate::remote::install_ring_provider();
        VaultStore {
            timeout,
            proxy: None,
            conn: None,
        }
    }

    /// Reaches Vault through this HTTP proxy.
    pub fn with_proxy(mut self, proxy: Option<String>) -> VaultStore {
        self.proxy = proxy;
        self
    }

    fn conn(&self) -> Result<&Conn, VaultError> {
        self.conn.as_ref().ok_or_else(|| VaultError::Api {
            kind: Kind::Protocol,
            server: "(none)".into(),
            op: "request".into(),
            reason: "not logged in".into(),
            fix: "log in first (this is a bug in carpd)".into(),
        })
    }
}

/// Builds a vaultrs client with every setting explicit.
fn connect(
    server: &Server,
    timeout: Duration,
    proxy: Option<&str>,
    origin: &str,
) -> Result<VaultClient, VaultError> {
    let settings_err = |reason: String, fix: &str| VaultError::Api {
        kind: Kind::Settings,
        server: server.url.clone(),
        op: "connect".into(),
        reason,
        fix: fix.into(),
    };
    let mut ca_certs = Vec::new();
    match &server.verify {
        Verify::System => {}
        Verify::CaFile(p) => {
            // Read it here for a precise message; vaultrs reads it again.
            let pem = std::fs::read(p).map_err(|e| {
                settings_err(
                    format!("cannot read the CA bundle {} (vault.server.verify in {origin}): {e}", p.display()),
                    "point vault.server.verify at the CA certificate that signed the server's certificate",
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(settings_err(
                    format!(
                        "{} (vault.server.verify in {origin}) holds no PEM certificate",
                        p.display()
                    ),
                    "point vault.server.verify at a PEM file (-----BEGIN CERTIFICATE-----)",
                ));
            }
            ca_certs.push(p.display().to_string());
        }
        Verify::Insecure => {
            tracing::warn!(
                server = %server.url,
                "TLS CERTIFICATE VERIFICATION IS OFF (verify: false in {origin}): anyone between carpd and Vault can read the token and every secret. Set vault.server.verify to the CA bundle's path"
            );
        }
    }
    if server.url.starts_with("http://") {
        tracing::warn!(server = %server.url, "Vault is reached over plain http: tokens and secrets cross the network in clear text");
    }
    let mut b = VaultClientSettingsBuilder::default();
    b.address(&server.url)
        .token("")
        .timeout(Some(timeout))
        .verify(server.verify != Verify::Insecure)
        .ca_certs(ca_certs)
        .identity(None)
        .namespace(server.namespace.clone());
    let settings = b.build().map_err(|e| {
        settings_err(
            format!("invalid client settings: {e}"),
            "check vault.server in the secretsmith file",
        )
    })?;
    let mut client = VaultClient::new(settings).map_err(|e| {
        settings_err(
            format!("cannot set up the HTTP client: {}", chain(&e)),
            "check vault.server.verify (a PEM CA bundle) in the secretsmith file",
        )
    })?;
    // vaultrs builds its reqwest client with redirects followed and environment proxies
    // honoured, and offers no setting for either: carpd swaps in its own, built the same way
    // (TLS backend, timeout, verification, CA bundle) plus carpd's rules (src/remote.rs). A
    // redirected login would otherwise re-send role_id and secret_id to the new origin.
    client.http.http = http_client(server, timeout, proxy).map_err(|e| {
        settings_err(
            format!("cannot set up the HTTP client: {}", chain(&e)),
            "check vault.server.verify (a PEM CA bundle) in the secretsmith file",
        )
    })?;
    Ok(client)
}

/// The HTTP client of the Vault connection: what vaultrs would build, without redirects and
/// without environment proxies.
fn http_client(
    server: &Server,
    timeout: Duration,
    proxy: Option<&str>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::ClientBuilder::new()
        .tls_backend_rustls()
        .timeout(timeout)
        .tls_danger_accept_invalid_certs(server.verify == Verify::Insecure)
        .redirect(crate::remote::no_redirects())
        .no_proxy();
    if let Some(url) = proxy {
        b = b.proxy(reqwest::Proxy::all(url)?);
    }
    if server.url.starts_with("http://") {
        // As vaultrs does: no certificate store is needed (and loading one may fail).
        b = b.tls_certs_only(Vec::new());
    } else if let Verify::CaFile(p) = &server.verify {
        // Read and checked as PEM by `connect` just before.
        let pem = std::fs::read(p).unwrap_or_default();
        if let Ok(certs) = reqwest::Certificate::from_pem_bundle(&pem) {
            b = b.tls_certs_merge(certs);
        }
    }
    b.build()
}

/// What an operation was, for the error translation.
enum Op<'a> {
    Login {
        method: &'a str,
        origin: &'a str,
    },
    Renew,
    Lookup,
    /// The path, and the auth method the token came from.
    Read(&'a SecretPath, &'a str),
}

impl Op<'_> {
    fn describe(&self) -> String {
        match self {
            Op::Login { method, .. } => format!("login with {method}"),
            Op::Renew => "renew the token".into(),
            Op::Lookup => "look up the token".into(),
            Op::Read(p, method) => format!("read {p} (token from {method})"),
        }
    }
}

/// The `Display` of an error and its sources, joined. Used only for transport and client-setup
/// errors, whose messages hold URLs and OS errors, never bodies.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = s.source();
    }
    out
}

fn translate(e: ClientError, server: &str, op: Op<'_>) -> VaultError {
    let api = |kind: Kind, reason: String, fix: String| VaultError::Api {
        kind,
        server: server.to_string(),
        op: op.describe(),
        reason,
        fix,
    };
    match e {
        ClientError::APIError { code, errors } => {
            let reason = if errors.is_empty() {
                format!("HTTP {code}")
            } else {
                // Server text: escaped and bounded before it reaches a log line.
                let errors: Vec<String> = errors
                    .iter()
                    .take(5)
                    .map(|e| crate::remote::untrusted(e, 300))
                    .collect();
                format!("HTTP {code}: {}", errors.join("; "))
            };
            let text = errors.join(" ").to_lowercase();
            classify_status(code, &text, &op, reason, &api)
        }
        ClientError::RestClientError { source } => match source {
            rustify::errors::ClientError::ServerResponseError { code, content } => {
                if let (Op::Read(p, _), Some(body)) = (&op, &content)
                    && let Some((version, what)) = deleted_version(body)
                {
                    return api(
                        Kind::Deleted,
                        format!(
                            "HTTP {code}: the current version {version} of the secret is {what}"
                        ),
                        format!(
                            "write a new version of {p}, or undelete version {version} (bao kv undelete -mount={} -versions={version} {})",
                            p.mount(),
                            p.path()
                        ),
                    );
                }
                classify_status(code, "", &op, format!("HTTP {code}"), &api)
            }
            rustify::errors::ClientError::ResponseParseError { .. }
            | rustify::errors::ClientError::ResponseConversionError { .. } => api(
                Kind::Protocol,
                "the answer could not be parsed".into(),
                "check that the URL points at Vault/OpenBao and the mount is kv version 2".into(),
            ),
            other => transport(&other, server, &api),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => api(
            Kind::Protocol,
            "the answer has no data".into(),
            match op {
                Op::Read(p, _) => format!("check that {} is a kv version 2 mount", p.mount()),
                _ => "check that the URL points at Vault/OpenBao".into(),
            },
        ),
        ClientError::JsonParseError { .. } => api(
            Kind::Protocol,
            "the answer has an unexpected shape".into(),
            match op {
                Op::Read(p, _) => format!("check that {} is a kv version 2 mount", p.mount()),
                _ => "check that the URL points at Vault/OpenBao".into(),
            },
        ),
        other => api(
            Kind::Protocol,
            other.to_string(),
            "check the server settings in the secretsmith file".into(),
        ),
    }
}

fn transport(
    e: &rustify::errors::ClientError,
    server: &str,
    api: &dyn Fn(Kind, String, String) -> VaultError,
) -> VaultError {
    let msg = chain(e);
    let lower = msg.to_lowercase();
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        api(
            Kind::Tls,
            format!("TLS failed: {msg}"),
            format!(
                "the certificate of {server} is not signed by a CA carpd trusts, or names another host: set vault.server.verify to the CA bundle's path in the secretsmith file (verify: false disables the check, for labs only)"
            ),
        )
    } else if lower.contains("timed out") || lower.contains("timeout") {
        api(
            Kind::Unreachable,
            format!("no answer in time: {msg}"),
            format!(
                "check that {server} is up and reachable from this host (firewall, routing); vault.timeout in carpd.yaml sets the limit"
            ),
        )
    } else {
        api(
            Kind::Unreachable,
            format!("cannot reach the server: {msg}"),
            format!(
                "check that Vault/OpenBao runs and listens at {server}, and that this host can reach it"
            ),
        )
    }
}

fn classify_status(
    code: u16,
    errors: &str,
    op: &Op<'_>,
    reason: String,
    api: &dyn Fn(Kind, String, String) -> VaultError,
) -> VaultError {
    if let Op::Renew = op {
        // Vault answers a renewal past the max TTL with 400 or 500 depending on version;
        // either way the remedy is a new login, which the session does.
        return api(
            Kind::NotRenewable,
            reason,
            "carpd logs in again instead".into(),
        );
    }
    if code >= 500 {
        let fix = if code == 503 {
            "the server is sealed or a standby: unseal it (bao operator unseal) or point at the active node"
        } else {
            "the server failed: check its log"
        };
        return api(Kind::Server, reason, fix.into());
    }
    match op {
        Op::Login { method, origin } => {
            let fix = if errors.contains("cidr") || errors.contains("source address") {
                "the secret_id or role is bound to source addresses (secret_id_bound_cidrs / token_bound_cidrs) that exclude this host: log in over the allowed interface, or widen the binding in Terraform".to_string()
            } else if method.starts_with("approle") {
                if code == 404
                    || errors.contains("no handler")
                    || errors.contains("unsupported path")
                {
                    "no AppRole auth at that mount: check vault.approle_mount in carpd.yaml (default approle)".to_string()
                } else {
                    format!(
                        "role_id/secret_id in {origin} are wrong, or the secret_id was rotated, used up or expired: re-deploy the secrets (make deploy-secrets) so Salt renders a fresh file; carpd re-reads it on the next login"
                    )
                }
            } else {
                format!("the token in {origin} is invalid, expired or revoked: give a valid token")
            };
            api(Kind::LoginRejected, reason, fix)
        }
        Op::Read(p, _) => match code {
            403 => api(
                Kind::Denied,
                reason,
                format!(
                    "the token's policies do not allow reading {p}, or the token expired: the policy needs `path \"{}\" {{ capabilities = [\"read\"] }}`",
                    p.policy_path()
                ),
            ),
            404 => api(
                Kind::NotFound,
                reason,
                format!(
                    "no secret at {p}: check the path (its first segment, {}, is the kv-v2 mount) and that the secret was written",
                    p.mount()
                ),
            ),
            _ => api(
                Kind::Protocol,
                reason,
                "unexpected answer to a kv-v2 read: check the mount type".into(),
            ),
        },
        Op::Renew => api(
            Kind::NotRenewable,
            reason,
            "carpd logs in again instead".into(),
        ),
        Op::Lookup => api(
            if code == 403 {
                Kind::Denied
            } else {
                Kind::Protocol
            },
            reason,
            "the token is invalid or expired: carpd logs in again".into(),
        ),
    }
}

/// For a 404 on a kv-v2 read: the version and `deleted`/`destroyed` when the latest version
/// was removed (Vault then answers with its metadata and no data).
fn deleted_version(body: &str) -> Option<(u64, &'static str)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let meta = v.get("data")?.get("metadata")?;
    let version = meta.get("version")?.as_u64()?;
    if meta.get("destroyed").and_then(|d| d.as_bool()) == Some(true) {
        return Some((version, "destroyed"));
    }
    match meta.get("deletion_time").and_then(|d| d.as_str()) {
        Some(t) if !t.is_empty() => Some((version, "deleted")),
        _ => None,
    }
}

/// A kv field: strings as they are, anything else (numbers, maps) as its JSON text.
struct FieldValue(SecretString);

impl<'de> Deserialize<'de> for FieldValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(FieldValue(match v {
            serde_json::Value::String(mut s) => {
                let secret = SecretString::from(s.as_str());
                s.zeroize();
                secret
            }
            other => {
                let mut s = other.to_string();
                let secret = SecretString::from(s.as_str());
                s.zeroize();
                secret
            }
        }))
    }
}

/// What carpd itself decodes of Vault's answers, reachable without a server, for the fuzz
/// target `vault` and the tests: the kv-v2 `data` object into fields (vaultrs hands carpd
/// that object), the body of a 404 on a deleted version, and the translation of an error
/// answer into a [`VaultError`]. Everything else of the HTTP exchange is vaultrs's.
#[doc(hidden)]
pub mod decoding {
    use super::*;

    /// The fields of a kv-v2 secret, from the JSON of its `data.data` object.
    pub fn kv_fields(json: &[u8]) -> Result<Fields, String> {
        let map: BTreeMap<String, FieldValue> =
            serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok(Fields::new(
            map.into_iter().map(|(k, v)| (k, v.0)).collect(),
        ))
    }

    /// The version and `deleted`/`destroyed` of a 404 body on a kv-v2 read.
    pub fn deleted(body: &str) -> Option<(u64, &'static str)> {
        deleted_version(body)
    }

    /// An error answer (`{"errors": [...]}` decoded by vaultrs) to a read of `path`, or to
    /// an AppRole login when `path` is `None`.
    pub fn api_error(code: u16, errors: Vec<String>, path: Option<&SecretPath>) -> VaultError {
        let op = match path {
            Some(p) => Op::Read(p, "approle"),
            None => Op::Login {
                method: "approle (role_id from the file)",
                origin: "secretsmith.yaml",
            },
        };
        translate(
            ClientError::APIError { code, errors },
            "https://vault.example:8200",
            op,
        )
    }

    /// An error answer whose body vaultrs could not decode as `{"errors": [...]}`.
    pub fn raw_error(code: u16, body: Option<String>, path: &SecretPath) -> VaultError {
        translate(
            ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError {
                    code,
                    content: body,
                },
            },
            "https://vault.example:8200",
            Op::Read(path, "approle"),
        )
    }
}

fn token_info(lease: u64, renewable: bool, policies: Vec<String>) -> TokenInfo {
    TokenInfo {
        ttl: (lease > 0).then(|| crate::remote::remote_secs(lease)),
        renewable,
        policies,
    }
}

impl SecretStore for VaultStore {
    fn server(&self) -> &str {
        self.conn
            .as_ref()
            .map(|c| c.server.url.as_str())
            .unwrap_or("")
    }

    async fn login(&mut self, settings: &Settings) -> Result<TokenInfo, VaultError> {
        let origin = settings.origin.to_string();
        let method = settings.auth.describe();
        let reuse = self
            .conn
            .as_ref()
            .is_some_and(|c| c.server == settings.server);
        if !reuse {
            let client = connect(
                &settings.server,
                self.timeout,
                self.proxy.as_deref(),
                &origin,
            )?;
            self.conn = Some(Conn {
                server: settings.server.clone(),
                client,
                origin: origin.clone(),
                method: method.clone(),
            });
        }
        let conn = self.conn.as_mut().expect("set above");
        conn.origin = origin;
        conn.method = method;
        let url = conn.server.url.clone();
        let op = Op::Login {
            method: &conn.method,
            origin: &conn.origin,
        };
        match &settings.auth {
            Auth::Token { token, .. } => {
                conn.client.set_token(token.expose_secret());
                let r = vaultrs::token::lookup_self(&conn.client).await;
                match r {
                    Ok(l) => Ok(token_info(l.ttl, l.renewable.unwrap_or(false), l.policies)),
                    Err(e) => {
                        conn.client.set_token("");
                        Err(translate(e, &url, op))
                    }
                }
            }
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                conn.client.set_token("");
                let r = vaultrs::auth::approle::login(
                    &conn.client,
                    mount,
                    role_id.expose_secret(),
                    secret_id.as_ref().map(|s| s.expose_secret()).unwrap_or(""),
                )
                .await;
                match r {
                    Ok(mut a) => {
                        conn.client.set_token(&a.client_token);
                        a.client_token.zeroize();
                        a.accessor.zeroize();
                        let policies = if a.token_policies.is_empty() {
                            a.policies
                        } else {
                            a.token_policies
                        };
                        Ok(token_info(a.lease_duration, a.renewable, policies))
                    }
                    Err(e) => Err(translate(e, &url, op)),
                }
            }
        }
    }

    async fn renew(&mut self) -> Result<TokenInfo, VaultError> {
        let conn = self.conn()?;
        match vaultrs::token::renew_self(&conn.client, None).await {
            Ok(mut a) => {
                a.client_token.zeroize();
                let policies = if a.token_policies.is_empty() {
                    a.policies
                } else {
                    a.token_policies
                };
                // Unlike a login, a renewal answering 0 s means "capped to nothing" (max TTL
                // reached), not "never expires": the lifecycle then logs in again.
                Ok(TokenInfo {
                    ttl: Some(crate::remote::remote_secs(a.lease_duration)),
                    renewable: a.renewable,
                    policies,
                })
            }
            Err(e) => Err(translate(e, &conn.server.url, Op::Renew)),
        }
    }

    async fn lookup(&mut self) -> Result<TokenInfo, VaultError> {
        let conn = self.conn()?;
        match vaultrs::token::lookup_self(&conn.client).await {
            Ok(mut l) => {
                l.id.zeroize();
                Ok(token_info(
                    l.ttl,
                    l.renewable.unwrap_or(false),
                    std::mem::take(&mut l.policies),
                ))
            }
            Err(e) => Err(translate(e, &conn.server.url, Op::Lookup)),
        }
    }

    async fn read(&mut self, path: &SecretPath) -> Result<Fields, VaultError> {
        let conn = self.conn()?;
        tracing::debug!(server = %conn.server.url, secret = %path, "kv-v2 read");
        match vaultrs::kv2::read::<BTreeMap<String, FieldValue>>(
            &conn.client,
            path.mount(),
            path.path(),
        )
        .await
        {
            Ok(map) => Ok(Fields::new(
                map.into_iter().map(|(k, v)| (k, v.0)).collect(),
            )),
            Err(e) => Err(translate(e, &conn.server.url, Op::Read(path, &conn.method))),
        }
    }
}
