//! The secretsmith configuration file: where the Vault/OpenBao server is and how to log in.
//!
//! carpd honours the file the Python tooling already uses (see the README, "Vault"):
//!
//! ```yaml
//! vault:
//!   server:
//!     url: https://172.27.27.7:8200
//!     verify: /usr/local/share/certs/nasqueron-vault-ca.crt   # or true / false
//!     namespace: ops                                          # optional, else VAULT_NAMESPACE
//!   auth:
//!     method: approle          # or token (the default): token, or tokenfile / token_file
//!     role_id: ...
//!     secret_id: ...           # optional
//! ```
//!
//! With no file, `VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT` and `VAULT_NAMESPACE` stand in.
//! Keys secretsmith ignores are ignored here too (the file may serve other tools).
//!
//! [`parse`] is pure (the token file is read through a closure); [`load`] adds the file
//! system: the root-only check (the file holds a secret_id), the size limit and reading.
//! Secret values go straight into [`SecretString`]s and never into a message.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_saphyr::Spanned;
use zeroize::Zeroizing;

use super::error::SettingsError;
use super::pybool::{PyScalar, classify};
use crate::secret_file::SecretPolicy;
use crate::secret_file::read_private;

/// Where carpd's deployment keeps the file.
pub const DEFAULT_PATH: &str = "/usr/local/etc/secrets/carp-secretsmith.yaml";
/// AppRole's default mount, as in secretsmith (defined with carpd.yaml's key).
pub use crate::config::DEFAULT_APPROLE_MOUNT;
/// A secretsmith file is a few hundred bytes; anything over this is a wrong path.
pub const MAX_FILE_SIZE: u64 = 64 * 1024;

/// Where the settings came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Environment,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Environment => f.write_str("environment (VAULT_ADDR, VAULT_TOKEN)"),
        }
    }
}

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The system's trust store (`verify: true`, or absent).
    System,
    /// This CA bundle (`verify: /path/ca.pem`), in addition to the system's roots.
    CaFile(PathBuf),
    /// No check at all (`verify: false`): carpd warns loudly every time it connects.
    Insecure,
}

/// The server part: everything needed to open a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `http://` or `https://` URL without a trailing slash.
    pub url: String,
    pub verify: Verify,
    pub namespace: Option<String>,
}

/// How carpd logs in. `Debug` shows the method, never a credential.
#[derive(Clone)]
pub enum Auth {
    /// A token given directly (`token:`, `VAULT_TOKEN`) or read from `file`.
    Token {
        token: SecretString,
        file: Option<PathBuf>,
    },
    /// AppRole login on `mount`.
    AppRole {
        mount: String,
        role_id: SecretString,
        secret_id: Option<SecretString>,
    },
}

impl Auth {
    /// The method as messages name it, e.g. `approle (mount approle)`.
    pub fn describe(&self) -> String {
        match self {
            Auth::Token { file: None, .. } => "token".into(),
            Auth::Token { file: Some(f), .. } => format!("token (from {})", f.display()),
            Auth::AppRole {
                mount, secret_id, ..
            } => format!(
                "approle (mount {mount}{})",
                if secret_id.is_none() {
                    ", no secret_id"
                } else {
                    ""
                }
            ),
        }
    }

    /// True when the same credentials would be sent (used to tell a rotated file).
    pub fn same_credentials(&self, other: &Auth) -> bool {
        fn eq(a: &SecretString, b: &SecretString) -> bool {
            a.expose_secret() == b.expose_secret()
        }
        match (self, other) {
            (Auth::Token { token: a, .. }, Auth::Token { token: b, .. }) => eq(a, b),
            (
                Auth::AppRole {
                    mount: m1,
                    role_id: r1,
                    secret_id: s1,
                },
                Auth::AppRole {
                    mount: m2,
                    role_id: r2,
                    secret_id: s2,
                },
            ) => {
                m1 == m2
                    && eq(r1, r2)
                    && match (s1, s2) {
                        (Some(a), Some(b)) => eq(a, b),
                        (None, None) => true,
                        _ => false,
                    }
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Auth({}, [redacted])", self.describe())
    }
}

/// A loaded secretsmith configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub origin: Origin,
    pub server: Server,
    pub auth: Auth,
}

/// What the loader needs besides the file.
pub struct LoadOptions<'a> {
    /// AppRole mount (carpd.yaml `vault.approle_mount`).
    pub approle_mount: &'a str,
    pub policy: SecretPolicy,
    /// The environment (a closure so tests do not touch the process's).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl LoadOptions<'_> {
    /// Options reading the process environment.
    pub fn process(approle_mount: &str, policy: SecretPolicy) -> LoadOptions<'_> {
        LoadOptions {
            approle_mount,
            policy,
            env: &process_env,
        }
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// --- the YAML shape ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawFile {
    vault: Option<Spanned<RawVault>>,
}

#[derive(Deserialize)]
struct RawVault {
    server: Option<Spanned<RawServer>>,
    auth: Option<Spanned<RawAuth>>,
}

#[derive(Deserialize)]
struct RawServer {
    url: Option<Spanned<String>>,
    /// Read as text so the PyYAML spelling rules can be applied (see `pybool`).
    verify: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawAuth {
    method: Option<Spanned<String>>,
    token: Option<Spanned<SecretText>>,
    tokenfile: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    role_id: Option<Spanned<SecretText>>,
    secret_id: Option<Spanned<SecretText>>,
}

/// A scalar holding a secret: straight into a zeroizing string, no `Debug` of the value.
struct SecretText(SecretString);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        Ok(SecretText(SecretString::from(s.as_str())))
    }
}

// --- loading ----------------------------------------------------------------------------------

/// Loads the settings: from `file` when given, else from the environment.
pub fn load(file: Option<&Path>, opts: &LoadOptions<'_>) -> Result<Settings, SettingsError> {
    let Some(file) = file else {
        return from_env(opts);
    };
    let fail = |message: String| SettingsError {
        source: file.display().to_string(),
        pos: None,
        key: String::new(),
        message,
    };
    let bytes = read_private(
        file,
        "secretsmith file (it holds Vault credentials)",
        opts.policy,
        MAX_FILE_SIZE as usize,
    )
    .map_err(|e| fail(e.to_string()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| fail(format!("is not UTF-8 (byte {})", e.valid_up_to())))?;
    let read_token = |p: &Path| read_token_file(p, opts.policy);
    parse(text, file, opts, &read_token)
}

/// Reads a token file: root-only, one line, trailing newline ignored.
pub fn read_token_file(path: &Path, policy: SecretPolicy) -> Result<SecretString, String> {
    // A Vault token is at most a few hundred bytes.
    let bytes = read_private(path, "token file", policy, 4096).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| format!("token file {} is not UTF-8", path.display()))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!(
            "token file {} must hold exactly one token on one line",
            path.display()
        ));
    }
    Ok(SecretString::from(token))
}

/// Parses and checks secretsmith text; `file` names it in messages. Never panics.
pub fn parse(
    text: &str,
    file: &Path,
    opts: &LoadOptions<'_>,
    read_token: &dyn Fn(&Path) -> Result<SecretString, String>,
) -> Result<Settings, SettingsError> {
    let source = file.display().to_string();
    let err = |pos: Option<(u64, u64)>, key: &str, message: String| SettingsError {
        source: source.clone(),
        pos,
        key: key.to_string(),
        message,
    };
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let pos = e.location().map(|l| (l.line(), l.column()));
        err(pos, "", yaml_message(&e.to_string()))
    })?;
    let Some(vault) = raw.vault else {
        return Err(err(
            None,
            "vault",
            "is missing: a secretsmith file starts with `vault:` holding `server:` and `auth:` (see the README, \"Vault\")".into(),
        ));
    };
    let vpos = Some(at(&vault));
    let vault = vault.value;

    // Server.
    let (url_text, url_pos) = match vault.server.as_ref().and_then(|s| s.value.url.as_ref()) {
        Some(u) => (u.value.trim().to_string(), Some(at(u))),
        None => match (opts.env)("VAULT_ADDR") {
            Some(a) => (a, None),
            None => {
                return Err(err(
                    vault.server.as_ref().map(at).or(vpos),
                    "vault.server.url",
                    "is missing (and VAULT_ADDR is not set): give the server's URL, e.g. https://172.27.27.7:8200".into(),
                ));
            }
        },
    };
    let url = check_url(&url_text).map_err(|m| err(url_pos, "vault.server.url", m))?;
    let verify = match vault.server.as_ref().and_then(|s| s.value.verify.as_ref()) {
        None => env_cacert(opts),
        Some(v) => {
            parse_verify(&v.value).map_err(|m| err(Some(at(v)), "vault.server.verify", m))?
        }
    };
    let namespace = match vault
        .server
        .as_ref()
        .and_then(|s| s.value.namespace.as_ref())
    {
        Some(n) if !n.value.trim().is_empty() => Some(n.value.trim().to_string()),
        Some(n) => {
            return Err(err(
                Some(at(n)),
                "vault.server.namespace",
                "is empty: give a namespace, or remove the key".into(),
            ));
        }
        None => (opts.env)("VAULT_NAMESPACE"),
    };
    let server = Server {
        url,
        verify,
        namespace,
    };

    // Auth.
    let auth_pos = vault.auth.as_ref().map(at).or(vpos);
    let empty = RawAuth {
        method: None,
        token: None,
        tokenfile: None,
        token_file: None,
        role_id: None,
        secret_id: None,
    };
    let a = vault.auth.as_ref().map(|a| &a.value).unwrap_or(&empty);
    let method = a.method.as_ref().map(|m| (m.value.trim(), Some(at(m))));
    let auth = match method {
        None | Some(("token", _)) => {
            let file_key = match (&a.tokenfile, &a.token_file) {
                (Some(_), Some(f)) => {
                    return Err(err(
                        Some(at(f)),
                        "vault.auth.token_file",
                        "and vault.auth.tokenfile are both set: keep one".into(),
                    ));
                }
                (Some(f), None) => Some(("vault.auth.tokenfile", f)),
                (None, Some(f)) => Some(("vault.auth.token_file", f)),
                (None, None) => None,
            };
            match (&a.token, file_key) {
                (Some(t), Some((k, _))) => {
                    return Err(err(
                        Some(at(t)),
                        "vault.auth.token",
                        format!("and {k} are both set: keep one"),
                    ));
                }
                (Some(t), None) => {
                    if t.value.0.expose_secret().trim().is_empty() {
                        return Err(err(Some(at(t)), "vault.auth.token", "is empty".into()));
                    }
                    Auth::Token {
                        token: SecretString::from(t.value.0.expose_secret().trim()),
                        file: None,
                    }
                }
                (None, Some((k, f))) => {
                    let path = PathBuf::from(f.value.trim());
                    if !path.is_absolute() {
                        return Err(err(
                            Some(at(f)),
                            k,
                            format!(
                                "'{}' must be an absolute path (carpd runs from /)",
                                f.value.escape_default()
                            ),
                        ));
                    }
                    let token = read_token(&path).map_err(|m| err(Some(at(f)), k, m))?;
                    Auth::Token {
                        token,
                        file: Some(path),
                    }
                }
                (None, None) => match (opts.env)("VAULT_TOKEN") {
                    Some(t) => Auth::Token {
                        token: SecretString::from(t),
                        file: None,
                    },
                    None => {
                        return Err(err(
                            auth_pos,
                            "vault.auth",
                            "has no credentials: method token (the default) needs token: or tokenfile:, or VAULT_TOKEN; for AppRole write `method: approle` with role_id: and secret_id:".into(),
                        ));
                    }
                },
            }
        }
        Some(("approle", mpos)) => {
            let role_id = match &a.role_id {
                Some(r) if !r.value.0.expose_secret().trim().is_empty() => {
                    SecretString::from(r.value.0.expose_secret().trim())
                }
                Some(r) => {
                    return Err(err(Some(at(r)), "vault.auth.role_id", "is empty".into()));
                }
                None => {
                    return Err(err(
                        mpos.or(auth_pos),
                        "vault.auth.role_id",
                        "is missing: method approle needs the role's role_id (and usually a secret_id)".into(),
                    ));
                }
            };
            let secret_id = match &a.secret_id {
                Some(s) if !s.value.0.expose_secret().trim().is_empty() => {
                    Some(SecretString::from(s.value.0.expose_secret().trim()))
                }
                Some(s) => {
                    return Err(err(
                        Some(at(s)),
                        "vault.auth.secret_id",
                        "is empty: give the secret_id, or remove the key for a role without bind_secret_id".into(),
                    ));
                }
                None => None,
            };
            let mount = opts.approle_mount.trim_matches('/');
            if mount.is_empty() {
                return Err(err(
                    None,
                    "approle_mount",
                    "is empty: the AppRole mount is usually `approle`".into(),
                ));
            }
            Auth::AppRole {
                mount: mount.to_string(),
                role_id,
                secret_id,
            }
        }
        Some((other, mpos)) => {
            return Err(err(
                mpos,
                "vault.auth.method",
                format!(
                    "'{}' is not supported: use token (the default) or approle",
                    other.escape_default()
                ),
            ));
        }
    };
    Ok(Settings {
        origin: Origin::File(file.to_path_buf()),
        server,
        auth,
    })
}

/// The VAULT_* fallback when no secretsmith file is configured.
fn from_env(opts: &LoadOptions<'_>) -> Result<Settings, SettingsError> {
    let err = |key: &str, message: &str| SettingsError {
        source: "environment".into(),
        pos: None,
        key: key.into(),
        message: message.into(),
    };
    let addr = (opts.env)("VAULT_ADDR").ok_or_else(|| {
        err(
            "VAULT_ADDR",
            "is not set and carpd.yaml names no secretsmith file: set vault.secretsmith in carpd.yaml (e.g. /usr/local/etc/secrets/carp-secretsmith.yaml), or export VAULT_ADDR and VAULT_TOKEN",
        )
    })?;
    let url = check_url(&addr).map_err(|m| err("VAULT_ADDR", &m))?;
    let token = (opts.env)("VAULT_TOKEN").ok_or_else(|| {
        err(
            "VAULT_TOKEN",
            "is not set: without a secretsmith file carpd logs in with VAULT_TOKEN",
        )
    })?;
    Ok(Settings {
        origin: Origin::Environment,
        server: Server {
            url,
            verify: env_cacert(opts),
            namespace: (opts.env)("VAULT_NAMESPACE"),
        },
        auth: Auth::Token {
            token: SecretString::from(token),
            file: None,
        },
    })
}

fn env_cacert(opts: &LoadOptions<'_>) -> Verify {
    match (opts.env)("VAULT_CACERT") {
        Some(p) => Verify::CaFile(PathBuf::from(p)),
        None => Verify::System,
    }
}

fn at<T>(s: &Spanned<T>) -> (u64, u64) {
    (s.referenced.line(), s.referenced.column())
}

/// `verify`: a PyYAML boolean or an absolute CA bundle path.
fn parse_verify(text: &str) -> Result<Verify, String> {
    match classify(text.trim()) {
        PyScalar::Bool(true) => Ok(Verify::System),
        PyScalar::Bool(false) => Ok(Verify::Insecure),
        PyScalar::Ambiguous => Err(format!(
            "'{}' is not a boolean to secretsmith (PyYAML reads it as a file name): write true or false (or yes/no, on/off), or the absolute path of the CA bundle",
            text.escape_default()
        )),
        PyScalar::Text => {
            let p = PathBuf::from(text.trim());
            if p.is_absolute() {
                Ok(Verify::CaFile(p))
            } else {
                Err(format!(
                    "'{}' is neither a boolean nor an absolute path: give the CA bundle's absolute path, e.g. /usr/local/share/certs/vault-ca.crt",
                    text.escape_default()
                ))
            }
        }
    }
}

/// Accepts `http://` and `https://` URLs with a host; returns it without a trailing slash.
pub fn check_url(text: &str) -> Result<String, String> {
    let u = url::Url::parse(text.trim()).map_err(|e| {
        format!(
            "'{}' is not a URL ({e}): write it like https://172.27.27.7:8200",
            text.escape_default()
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "'{}' must be an http:// or https:// URL with a host, e.g. https://172.27.27.7:8200",
            text.escape_default()
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("must not hold credentials: put them under vault.auth".into());
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}

/// The parser's first message line, with quoted text removed: in a file holding secrets a
/// type error must not echo the value it choked on.
fn yaml_message(full: &str) -> String {
    let first = full.lines().next().unwrap_or("invalid YAML");
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    let rest = match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((_, m)) => m,
        None => rest,
    };
    let mut out = String::new();
    let mut quote: Option<char> = None;
    for c in rest.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if matches!(c, '"' | '`' | '\'') {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    format!("not a valid secretsmith file: {out}")
}

#[cfg(test)]
mod tests;
