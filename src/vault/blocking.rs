//! Vault access from synchronous code (the CLI): a session on a small current-thread tokio
//! runtime of its own. The daemon uses [`super::session::Session`] directly on its runtime.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::client::VaultStore;
use super::error::VaultError;
use super::secretsmith::{self, LoadOptions};
use super::session::{Loader, Session};
use super::store::{SecretPath, SecretStore, TokenInfo};
use crate::config::VaultConfig;
use crate::secret_file::SecretPolicy;

/// Where and how to reach Vault: carpd.yaml's `vault:` section plus the file policy.
#[derive(Clone, Debug)]
pub struct Access {
    /// secretsmith file; `None` falls back to VAULT_ADDR/VAULT_TOKEN.
    pub secretsmith: Option<PathBuf>,
    pub approle_mount: String,
    pub cache_max_age: Duration,
    pub timeout: Duration,
    pub policy: SecretPolicy,
    /// `vault.proxy`; `None`: direct (never the environment's).
    pub proxy: Option<String>,
}

impl Access {
    /// From carpd.yaml's `vault:` section.
    pub fn from_config(v: &VaultConfig, policy: SecretPolicy) -> Access {
        Access {
            secretsmith: v.secretsmith.clone(),
            approle_mount: v.approle_mount.clone(),
            cache_max_age: v.cache_max_age,
            timeout: v.timeout,
            policy,
            proxy: v.proxy.clone(),
        }
    }

    /// A loader reading the secretsmith file (or the process environment) each time.
    pub fn loader(&self) -> Loader {
        let file = self.secretsmith.clone();
        let mount = self.approle_mount.clone();
        let policy = self.policy;
        Box::new(move || secretsmith::load(file.as_deref(), &LoadOptions::process(&mount, policy)))
    }

    /// A session with the real client.
    pub fn session(&self) -> Session<VaultStore> {
        Session::new(
            VaultStore::new(self.timeout).with_proxy(self.proxy.clone()),
            self.loader(),
            self.cache_max_age,
        )
    }
}

/// A session driven from synchronous code.
pub struct BlockingSession<S> {
    rt: tokio::runtime::Runtime,
    pub session: Session<S>,
}

impl BlockingSession<VaultStore> {
    pub fn open(access: &Access) -> std::io::Result<Self> {
        BlockingSession::with(access.session())
    }
}

impl<S: SecretStore> BlockingSession<S> {
    pub fn with(session: Session<S>) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(BlockingSession { rt, session })
    }

    /// Runs any session operation to completion.
    pub fn run<T>(&mut self, f: impl AsyncFnOnce(&mut Session<S>) -> T) -> T {
        let s = &mut self.session;
        self.rt.block_on(f(s))
    }

    pub fn login(&mut self) -> Result<TokenInfo, VaultError> {
        self.run(async |s| s.ensure_token().await)
    }

    pub fn field(&mut self, path: &SecretPath, field: &str) -> Result<SecretString, VaultError> {
        self.run(async |s| s.field(path, field).await.map(|(v, _)| v))
    }
}
