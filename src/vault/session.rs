//! An authenticated session: runs the [`Lifecycle`] policy against a [`SecretStore`] and serves
//! reads through the [`ReadCache`].
//!
//! The session owns the only copy of the secretsmith settings and re-reads them through its
//! loader when a login is refused (rotation) and on [`Session::reload`] (SIGHUP). It does no
//! scheduling of its own: the daemon calls [`Session::ensure_token`] when
//! [`Session::next_wakeup`] comes, and reads call it implicitly. Time is tokio's clock, so
//! tests can pause it.

use std::time::{Duration, Instant};

use secrecy::SecretString;

use super::cache::{Cached, ReadCache};
use super::error::{Kind, SettingsError, VaultError};
use super::lifecycle::{Lifecycle, Step};
use super::secretsmith::Settings;
use super::store::{Fields, SecretPath, SecretStore, TokenInfo};

/// Loads the secretsmith settings (the file, or the environment).
pub type Loader = Box<dyn Fn() -> Result<Settings, SettingsError> + Send + Sync>;

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Vault access with token lifecycle and cache.
pub struct Session<S> {
    store: S,
    loader: Loader,
    settings: Option<Settings>,
    life: Lifecycle,
    cache: ReadCache,
    token: Option<TokenInfo>,
}

impl<S: SecretStore> Session<S> {
    /// A session that loads its settings on first use.
    pub fn new(store: S, loader: Loader, cache_max_age: Duration) -> Session<S> {
        Session {
            store,
            loader,
            settings: None,
            life: Lifecycle::new(),
            cache: ReadCache::new(cache_max_age),
            token: None,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The settings in use (after the first login attempt).
    pub fn settings(&self) -> Option<&Settings> {
        self.settings.as_ref()
    }

    /// The server's URL, for messages.
    pub fn server(&self) -> String {
        match &self.settings {
            Some(s) => s.server.url.clone(),
            None => self.store.server().to_string(),
        }
    }

    /// When the current token expires; `None` without a token or for one without a TTL.
    pub fn token_expires_at(&self) -> Option<Instant> {
        self.life.expires_at()
    }

    /// Whether a token that has not expired is held.
    pub fn has_token(&self) -> bool {
        self.life.has_token(now())
    }

    /// When the token needs attention next (renewal or login); `None`: not before a request.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match self.life.step(now()) {
            Step::Use { next } => next,
            _ => Some(now()),
        }
    }

    /// Re-reads the secretsmith settings (SIGHUP). When the server or the credentials
    /// changed, the current token is dropped and the next request logs in with the new ones.
    pub fn reload(&mut self) -> Result<(), VaultError> {
        let new = (self.loader)()?;
        let changed = match &self.settings {
            None => true,
            Some(old) => old.server != new.server || !old.auth.same_credentials(&new.auth),
        };
        if changed {
            self.life.token_rejected();
            self.token = None;
            tracing::info!(origin = %new.origin, "Vault settings changed: logging in again on the next request");
        }
        self.settings = Some(new);
        Ok(())
    }

    /// Makes sure a valid token is held: logs in, renews, re-reads the settings as the
    /// lifecycle policy says. Returns what Vault said about the token.
    pub async fn ensure_token(&mut self) -> Result<TokenInfo, VaultError> {
        // Each pass does one step; four cover renew-fails -> login-refused -> reload -> login.
        let mut last_err = None;
        for _ in 0..4 {
            let t = now();
            match self.life.step(t) {
                Step::Use { .. } => {
                    if let Some(info) = &self.token {
                        return Ok(info.clone());
                    }
                    // Unreachable by construction (Use implies a token); log in to be safe.
                    self.life.token_rejected();
                }
                Step::Renew => match self.store.renew().await {
                    Ok(info) => {
                        tracing::debug!(ttl = ?info.ttl, "Vault token renewed");
                        self.life.renewed(t, &info);
                        self.token = Some(info);
                    }
                    Err(e) => {
                        tracing::info!("Vault token renewal failed, logging in again: {e}");
                        self.life.renew_failed();
                    }
                },
                Step::Login | Step::ReloadAndLogin => {
                    let reload = self.life.step(t) == Step::ReloadAndLogin;
                    if reload && last_err.is_some() {
                        // Refused in this call already: re-read the file once, and try again
                        // only if it changed (Salt may have rendered a new secret_id).
                        let before = self.settings.clone();
                        self.reload()?;
                        let same =
                            before
                                .as_ref()
                                .zip(self.settings.as_ref())
                                .is_some_and(|(a, b)| {
                                    a.server == b.server && a.auth.same_credentials(&b.auth)
                                });
                        if same {
                            let e: VaultError = last_err.take().expect("checked");
                            return Err(annotate(e, &self.settings));
                        }
                        tracing::info!(
                            "secretsmith settings changed since the refused login: trying the new credentials"
                        );
                    } else if reload || self.settings.is_none() {
                        self.settings = Some((self.loader)()?);
                    }
                    let settings = self.settings.as_ref().expect("loaded above");
                    match self.store.login(settings).await {
                        Ok(info) => {
                            tracing::info!(method = %settings.auth.describe(), ttl = ?info.ttl, "logged in to Vault");
                            self.life.logged_in(t, &info);
                            self.token = Some(info);
                        }
                        Err(e) => {
                            self.life.login_failed(e.kind());
                            self.token = None;
                            if e.kind() != Kind::LoginRejected {
                                return Err(e);
                            }
                            last_err = Some(e);
                        }
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| VaultError::Api {
            kind: Kind::Protocol,
            server: self.server(),
            op: "obtain a token".into(),
            reason: "no valid token after renewing and logging in".into(),
            fix: "check the token TTLs of the role (token_ttl is too short?)".into(),
        }))
    }

    /// The token's current TTL and policies, asked from Vault.
    pub async fn lookup(&mut self) -> Result<TokenInfo, VaultError> {
        self.ensure_token().await?;
        self.store.lookup().await
    }

    /// The secret's fields: from the cache if younger than the maximum age, else from Vault
    /// (falling back to a cached value within the maximum age, flagged stale).
    pub async fn get(&mut self, path: &SecretPath) -> Result<Cached, VaultError> {
        if let Some(c) = self.cache.fresh(path, now()) {
            return Ok(c);
        }
        self.refresh(path).await
    }

    /// Reads the secret from Vault; on failure serves the last good value if it is within
    /// the maximum age, with the error in `stale`.
    pub async fn refresh(&mut self, path: &SecretPath) -> Result<Cached, VaultError> {
        match self.fetch(path).await {
            Ok(fields) => Ok(self.cache.store(path, fields, now())),
            Err(e) => {
                let r = self.cache.fallback(path, now(), e);
                if let Ok(c) = &r
                    && let Some(e) = &c.stale
                {
                    tracing::warn!(secret = %path, age = ?c.age, "using the last good value of a Vault secret: {e}");
                }
                r
            }
        }
    }

    async fn fetch(&mut self, path: &SecretPath) -> Result<Fields, VaultError> {
        self.ensure_token().await?;
        match self.store.read(path).await {
            Err(e) if e.kind() == Kind::Denied => {
                // 403 is also what an expired or revoked token gets: log in once more and
                // retry; a second 403 is the policy.
                self.life.token_rejected();
                self.token = None;
                self.ensure_token().await?;
                self.store.read(path).await
            }
            r => r,
        }
    }

    /// Reads one field of a secret (see [`Session::get`]).
    pub async fn field(
        &mut self,
        path: &SecretPath,
        field: &str,
    ) -> Result<(SecretString, Option<VaultError>), VaultError> {
        let c = self.get(path).await?;
        let method = self
            .settings
            .as_ref()
            .map(|s| s.auth.describe())
            .unwrap_or_default();
        let v = require_field(&self.server(), &method, path, &c.fields, field)?.clone();
        Ok((v, c.stale))
    }
}

/// The named field, or an error listing the fields that are there (names only).
pub fn require_field<'a>(
    server: &str,
    method: &str,
    path: &SecretPath,
    fields: &'a Fields,
    field: &str,
) -> Result<&'a SecretString, VaultError> {
    fields.get(field).ok_or_else(|| VaultError::Api {
        kind: Kind::MissingField,
        server: server.to_string(),
        op: format!("read {path} (token from {method})"),
        reason: format!(
            "the secret has no field {field} (it has: {})",
            if fields.is_empty() {
                "no fields".to_string()
            } else {
                fields.names().collect::<Vec<_>>().join(", ")
            }
        ),
        fix: format!("add {field} to the secret, or name an existing field (field: in carpd.yaml)"),
    })
}

/// Adds "the file was re-read and is unchanged" to a refused login's fix.
fn annotate(e: VaultError, settings: &Option<Settings>) -> VaultError {
    match (e, settings) {
        (
            VaultError::Api {
                kind,
                server,
                op,
                reason,
                fix,
            },
            Some(s),
        ) => VaultError::Api {
            kind,
            server,
            op,
            reason: format!("{reason} (re-read {}: credentials unchanged)", s.origin),
            fix,
        },
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests;
