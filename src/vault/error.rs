//! Vault errors: what failed, against which server, for which path and auth method, and the fix.
//!
//! Invariant: no message here ever holds a secret value (token, role_id, secret_id, field
//! value). Server replies are reduced to Vault's own `errors` strings, which name paths and
//! addresses, never credentials; response bodies are never shown (a kv read's body holds the
//! secret). `tests/vault.rs` and the unit tests check the rule on every failure they provoke.

use std::fmt;

/// The class of a failure: what the session does next depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The secretsmith file or environment is wrong; nothing was sent.
    Settings,
    /// No connection (refused, timeout, DNS).
    Unreachable,
    /// The TLS handshake failed (unknown CA, wrong name).
    Tls,
    /// The login credentials were refused (wrong role_id/secret_id, CIDR binding, bad token).
    LoginRejected,
    /// The token was refused for this request: expired or revoked, or the policy does not
    /// allow the path (Vault answers 403 to both).
    Denied,
    /// No secret at that path (or the mount does not exist).
    NotFound,
    /// The secret's current version is deleted or destroyed.
    Deleted,
    /// The secret exists but lacks a requested field.
    MissingField,
    /// The token cannot be renewed (not renewable, or at its max TTL).
    NotRenewable,
    /// The server answered with a 5xx (sealed, standby, internal error).
    Server,
    /// An answer carpd did not understand.
    Protocol,
}

impl Kind {
    /// The kind in snake case: the `kind` label of carpd's Vault metrics and log fields.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Settings => "settings",
            Kind::Unreachable => "unreachable",
            Kind::Tls => "tls",
            Kind::LoginRejected => "login_rejected",
            Kind::Denied => "denied",
            Kind::NotFound => "not_found",
            Kind::Deleted => "deleted",
            Kind::MissingField => "missing_field",
            Kind::NotRenewable => "not_renewable",
            Kind::Server => "server",
            Kind::Protocol => "protocol",
        }
    }
}

/// A failure talking to Vault/OpenBao.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Settings(#[from] SettingsError),
    /// `server: op: reason. Fix: fix`, e.g. `https://vault:8200: login with approle (mount
    /// approle): HTTP 400 invalid role or secret ID. Fix: ...`.
    #[error("Vault {server}: {op}: {reason}. Fix: {fix}")]
    Api {
        kind: Kind,
        server: String,
        op: String,
        reason: String,
        fix: String,
    },
}

impl VaultError {
    pub fn kind(&self) -> Kind {
        match self {
            VaultError::Settings(_) => Kind::Settings,
            VaultError::Api { kind, .. } => *kind,
        }
    }
}

/// A problem in the secretsmith file (or the environment standing in for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The file's path, or `environment` for the VAULT_* fallback.
    pub source: String,
    /// Line and column when known.
    pub pos: Option<(u64, u64)>,
    /// Key path, e.g. `vault.auth.role_id`; may be empty.
    pub key: String,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some((line, col)) = self.pos
            && line > 0
        {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SettingsError {}
