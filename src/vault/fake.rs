//! An in-memory [`SecretStore`] for pure tests: secrets, credentials and token TTLs are plain
//! data a test changes while a session runs, and every call is recorded.
//!
//! It models what the session depends on, not Vault: AppRole login checks role_id/secret_id,
//! tokens expire by a clock the test advances (`expire_token`), renewal can be refused, the
//! server can be "down". Values are test data; the fake still never puts one in an error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::error::{Kind, VaultError};
use super::secretsmith::{Auth, Settings};
use super::store::{Fields, SecretPath, SecretStore, TokenInfo};

/// What the fake server knows; shared between the test and the store.
#[derive(Debug, Default)]
pub struct FakeState {
    /// `mount/path` -> field -> value.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    pub role_id: String,
    pub secret_ids: Vec<String>,
    /// Tokens accepted by the token method.
    pub tokens: Vec<String>,
    /// TTL and renewability of issued tokens (`None` = never expires).
    pub ttl: Option<Duration>,
    pub renewable: bool,
    /// Renewal answers 400 when set.
    pub refuse_renewal: bool,
    /// Every request fails as unreachable when set.
    pub down: bool,
    /// Whether the current token is valid (a test sets false to model expiry).
    pub token_valid: bool,
    /// `login`, `renew`, `lookup`, `read mount/path`, in order.
    pub calls: Vec<String>,
}

/// A [`SecretStore`] over [`FakeState`].
#[derive(Clone, Default)]
pub struct FakeStore {
    pub state: Arc<Mutex<FakeState>>,
}

impl FakeStore {
    pub fn new(state: FakeState) -> FakeStore {
        FakeStore {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(kind: Kind, op: &str, reason: &str) -> VaultError {
        VaultError::Api {
            kind,
            server: "fake://vault".into(),
            op: op.into(),
            reason: reason.into(),
            fix: "(fake)".into(),
        }
    }

    fn info(s: &FakeState) -> TokenInfo {
        TokenInfo {
            ttl: s.ttl,
            renewable: s.renewable,
            policies: vec!["default".into()],
        }
    }
}

impl SecretStore for FakeStore {
    fn server(&self) -> &str {
        "fake://vault"
    }

    async fn login(&mut self, settings: &Settings) -> Result<TokenInfo, VaultError> {
        let mut s = self.lock();
        s.calls.push("login".into());
        if s.down {
            return Err(Self::err(Kind::Unreachable, "login", "down"));
        }
        let ok = match &settings.auth {
            Auth::Token { token, .. } => s.tokens.iter().any(|t| t == token.expose_secret()),
            Auth::AppRole {
                role_id, secret_id, ..
            } => {
                role_id.expose_secret() == s.role_id
                    && secret_id
                        .as_ref()
                        .is_some_and(|id| s.secret_ids.iter().any(|x| x == id.expose_secret()))
            }
        };
        if !ok {
            return Err(Self::err(
                Kind::LoginRejected,
                "login",
                "invalid role or secret ID",
            ));
        }
        s.token_valid = true;
        Ok(Self::info(&s))
    }

    async fn renew(&mut self) -> Result<TokenInfo, VaultError> {
        let mut s = self.lock();
        s.calls.push("renew".into());
        if s.down {
            return Err(Self::err(Kind::Unreachable, "renew", "down"));
        }
        if s.refuse_renewal || !s.renewable || !s.token_valid {
            return Err(Self::err(Kind::NotRenewable, "renew", "not renewable"));
        }
        Ok(Self::info(&s))
    }

    async fn lookup(&mut self) -> Result<TokenInfo, VaultError> {
        let mut s = self.lock();
        s.calls.push("lookup".into());
        if !s.token_valid {
            return Err(Self::err(Kind::Denied, "lookup", "permission denied"));
        }
        Ok(Self::info(&s))
    }

    async fn read(&mut self, path: &SecretPath) -> Result<Fields, VaultError> {
        let mut s = self.lock();
        s.calls.push(format!("read {path}"));
        if s.down {
            return Err(Self::err(Kind::Unreachable, "read", "down"));
        }
        if !s.token_valid {
            return Err(Self::err(Kind::Denied, "read", "permission denied"));
        }
        match s.secrets.get(&path.to_string()) {
            Some(m) => Ok(Fields::new(
                m.iter()
                    .map(|(k, v)| (k.clone(), SecretString::from(v.as_str())))
                    .collect(),
            )),
            None => Err(Self::err(Kind::NotFound, "read", "HTTP 404")),
        }
    }
}
