//! The daemon's Vault agent: one task that owns the [`Session`] and keeps its token alive, so
//! that a failover never waits for a login.
//!
//! It wakes when the session's lifecycle says so (renewal at 2/3 of the TTL, a new login when
//! renewal is impossible), re-reads the secretsmith file on reload (SIGHUP) and whenever a
//! login is refused (rotation by Salt), and serves reads through the session's cache. Other
//! tasks talk to it through an [`AgentHandle`]; the controller loop never awaits Vault.
//!
//! A failing Vault is retried with a capped exponential delay ([`RETRY_MIN`]..[`RETRY_MAX`]),
//! logged once per distinct error, and reported in [`AgentView`] for `carpd status`.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::cache::Cached;
use super::error::VaultError;
use super::session::Session;
use super::store::{SecretPath, SecretStore};

pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// What the agent tells `carpd status` (the `vault` field of the daemon view).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentView {
    pub server: String,
    /// A valid token is held.
    pub token: bool,
    /// Seconds until the token expires; `null` without a token or for a token without TTL.
    pub token_ttl_s: Option<u64>,
    /// When the token was last obtained or renewed (RFC 3339).
    pub last_ok: Option<String>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
    /// Every failed Vault call since start, by kind (`carpd_vault_errors_total`).
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, u64>,
}

enum Request {
    Read {
        path: SecretPath,
        reply: oneshot::Sender<Result<Cached, VaultError>>,
    },
    Reload {
        reply: oneshot::Sender<Result<(), VaultError>>,
    },
    View {
        reply: oneshot::Sender<AgentView>,
    },
}

/// Talks to the agent; cheap to clone.
#[derive(Clone, Debug)]
pub struct AgentHandle {
    tx: mpsc::Sender<Request>,
}

impl AgentHandle {
    /// The secret's fields, from the cache when fresh.
    pub async fn read(&self, path: SecretPath) -> Result<Cached, AgentError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Read { path, reply }).await?;
        Ok(rx.await.map_err(|_| AgentError::Stopped)??)
    }

    /// Re-reads the secretsmith file (SIGHUP).
    pub async fn reload(&self) -> Result<(), AgentError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Reload { reply }).await?;
        Ok(rx.await.map_err(|_| AgentError::Stopped)??)
    }

    /// The agent's state for status. Never waits on Vault: the agent answers between steps.
    pub async fn view(&self) -> Option<AgentView> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::View { reply }).await.ok()?;
        rx.await.ok()
    }

    /// The agent's state, or `None` when it is busy with Vault right now (for callers that
    /// must not wait, like the controller loop answering `carpd status`).
    pub fn try_view(&self) -> Option<oneshot::Receiver<AgentView>> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Request::View { reply }).ok()?;
        Some(rx)
    }

    async fn send(&self, r: Request) -> Result<(), AgentError> {
        self.tx.send(r).await.map_err(|_| AgentError::Stopped)
    }
}

/// Why the agent could not answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// Vault answered with an error, or could not be reached (the message names the server,
    /// the path and the fix).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The agent's task has ended (the daemon is stopping).
    #[error("the Vault agent has stopped")]
    Stopped,
}

/// The agent and its task, not started: the caller owns the task (the daemon keeps it in its
/// task set, so nothing it starts is detached). Once running, it logs in at once, and ends
/// when every handle is dropped.
pub fn new<S: SecretStore + Send + 'static>(
    session: Session<S>,
) -> (AgentHandle, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(16);
    (AgentHandle { tx }, run(session, rx))
}

/// [`new`], started on the current runtime: for one-shot commands and tests, whose runtime
/// ends with them.
pub fn spawn<S: SecretStore + Send + 'static>(session: Session<S>) -> AgentHandle {
    let (handle, task) = new(session);
    tokio::spawn(task);
    handle
}

struct State {
    last_ok: Option<SystemTime>,
    last_error: Option<String>,
    errors: std::collections::BTreeMap<String, u64>,
    /// Failures in a row (the delay comes from [`crate::backoff`]).
    failures: u32,
    /// When to try again after a failure.
    retry_at: Option<Instant>,
}

async fn run<S: SecretStore>(mut session: Session<S>, mut rx: mpsc::Receiver<Request>) {
    let mut st = State {
        last_ok: None,
        last_error: None,
        errors: std::collections::BTreeMap::new(),
        failures: 0,
        retry_at: None,
    };
    // Log in at once: readiness is knowing now that Vault works, not at the first failover.
    keep_alive(&mut session, &mut st).await;
    loop {
        let wake = st.retry_at.or_else(|| session.next_wakeup());
        tokio::select! {
            req = rx.recv() => match req {
                None => return,
                Some(Request::Read { path, reply }) => {
                    let r = session.get(&path).await;
                    note(&mut st, r.as_ref().map(|_| ()));
                    let _ = reply.send(r);
                }
                Some(Request::Reload { reply }) => {
                    let r = session.reload();
                    if r.is_ok() {
                        st.retry_at = None;
                        keep_alive(&mut session, &mut st).await;
                    }
                    let _ = reply.send(r);
                }
                Some(Request::View { reply }) => {
                    let _ = reply.send(view(&session, &st));
                }
            },
            () = sleep_until(wake) => {
                st.retry_at = None;
                keep_alive(&mut session, &mut st).await;
            }
        }
    }
}

/// tokio's clock, as the session uses (tests pause it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn keep_alive<S: SecretStore>(session: &mut Session<S>, st: &mut State) {
    let r = session.ensure_token().await.map(|_| ());
    let failed = r.is_err();
    note(st, r.as_ref().map(|_| ()));
    if failed {
        st.failures = st.failures.saturating_add(1);
        st.retry_at = Some(now() + retry_delay(st.failures));
    } else {
        st.failures = 0;
    }
}

/// The wait after `failures` failed keep-alives in a row: [`RETRY_MIN`] doubling to [`RETRY_MAX`].
fn retry_delay(failures: u32) -> Duration {
    crate::backoff::Backoff::doubling(RETRY_MIN, RETRY_MAX).delay(failures)
}

fn note(st: &mut State, r: Result<(), &VaultError>) {
    match r {
        Ok(()) => {
            if st.last_error.take().is_some() {
                tracing::info!("Vault works again");
            }
            st.last_ok = Some(SystemTime::now());
        }
        Err(e) => {
            let kind = e.kind().label();
            *st.errors.entry(kind.to_string()).or_insert(0) += 1;
            let e = e.to_string();
            if st.last_error.as_deref() != Some(&e) {
                tracing::warn!("Vault: {e}");
            }
            st.last_error = Some(e);
        }
    }
}

fn view<S: SecretStore>(session: &Session<S>, st: &State) -> AgentView {
    let ttl = session
        .token_expires_at()
        .map(|at| at.saturating_duration_since(now()));
    AgentView {
        server: session.server(),
        token: session.has_token(),
        token_ttl_s: ttl.map(|d| d.as_secs()),
        last_ok: st
            .last_ok
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        last_error: st.last_error.clone(),
        errors: st.errors.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_keep_alives_back_off_from_one_second_to_the_cap() {
        let secs = |n| retry_delay(n).as_secs();
        assert_eq!(
            (1..=7).map(secs).collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 60]
        );
        assert_eq!(retry_delay(1000), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }
}
