//! The session against the fake store, on tokio's paused clock: renewal, re-login, rotation of
//! the secretsmith file, the cache and its stale fallback.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;

use super::*;
use crate::secrets::SecretPolicy;
use crate::vault::fake::{FakeState, FakeStore};
use crate::vault::secretsmith::{LoadOptions, parse};

fn file(secret_id: &str) -> String {
    format!(
        "vault:\n  server: {{url: 'https://vault.test:8200'}}\n  auth:\n    method: approle\n    role_id: ROLE\n    secret_id: {secret_id}\n"
    )
}

struct Lab {
    store: FakeStore,
    text: Arc<Mutex<String>>,
}

impl Lab {
    fn new(ttl: u64, renewable: bool) -> Lab {
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "ops/carp/2".to_string(),
            BTreeMap::from([("password".to_string(), "HUNTER2".to_string())]),
        );
        let store = FakeStore::new(FakeState {
            secrets,
            role_id: "ROLE".into(),
            secret_ids: vec!["S1".into()],
            ttl: Some(Duration::from_secs(ttl)),
            renewable,
            ..FakeState::default()
        });
        Lab {
            store,
            text: Arc::new(Mutex::new(file("S1"))),
        }
    }

    fn session(&self, max_age: u64) -> Session<FakeStore> {
        let text = self.text.clone();
        let loader: Loader = Box::new(move || {
            let t = text.lock().unwrap().clone();
            let env = |_: &str| None;
            let opts = LoadOptions {
                approle_mount: "approle",
                policy: SecretPolicy::default(),
                env: &env,
            };
            parse(&t, Path::new("/s.yaml"), &opts, &|_| Err("no".into()))
        });
        Session::new(self.store.clone(), loader, Duration::from_secs(max_age))
    }

    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut self.store.state.lock().unwrap().calls)
    }

    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.store.state.lock().unwrap())
    }
}

fn path() -> SecretPath {
    "ops/carp/2".parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn login_read_and_cache_hit() {
    let lab = Lab::new(300, true);
    let mut s = lab.session(60);
    let (v, stale) = s.field(&path(), "password").await.unwrap();
    assert_eq!(v.expose_secret(), "HUNTER2");
    assert!(stale.is_none());
    assert_eq!(lab.calls(), ["login", "read ops/carp/2"]);
    // Within max age: no round trip at all.
    tokio::time::advance(Duration::from_secs(59)).await;
    s.field(&path(), "password").await.unwrap();
    assert!(lab.calls().is_empty());
    // Past it: read again with the same token.
    tokio::time::advance(Duration::from_secs(2)).await;
    s.field(&path(), "password").await.unwrap();
    assert_eq!(lab.calls(), ["read ops/carp/2"]);
}

#[tokio::test(start_paused = true)]
async fn renews_at_two_thirds_then_logs_in_when_renewal_is_refused() {
    let lab = Lab::new(300, true);
    let mut s = lab.session(0);
    s.ensure_token().await.unwrap();
    let due = s.next_wakeup().unwrap();
    assert_eq!(
        due - tokio::time::Instant::now().into_std(),
        Duration::from_secs(200)
    );
    tokio::time::advance(Duration::from_secs(200)).await;
    s.ensure_token().await.unwrap();
    assert_eq!(lab.calls(), ["login", "renew"]);
    lab.with(|st| st.refuse_renewal = true);
    tokio::time::advance(Duration::from_secs(200)).await;
    s.ensure_token().await.unwrap();
    assert_eq!(lab.calls(), ["renew", "login"]);
}

#[tokio::test(start_paused = true)]
async fn rotated_secret_id_is_picked_up_from_the_file() {
    let lab = Lab::new(3, false);
    let mut s = lab.session(0);
    s.ensure_token().await.unwrap();
    // Terraform makes a new secret_id and destroys the old; Salt renders the file.
    lab.with(|st| st.secret_ids = vec!["S2".into()]);
    *lab.text.lock().unwrap() = file("S2");
    tokio::time::advance(Duration::from_secs(3)).await;
    let (v, _) = s.field(&path(), "password").await.unwrap();
    assert_eq!(v.expose_secret(), "HUNTER2");
    assert_eq!(lab.calls(), ["login", "login", "login", "read ops/carp/2"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_login_with_an_unchanged_file_says_so() {
    let lab = Lab::new(300, true);
    lab.with(|st| st.secret_ids.clear());
    let mut s = lab.session(0);
    let e = s.ensure_token().await.unwrap_err();
    assert_eq!(e.kind(), Kind::LoginRejected);
    assert!(e.to_string().contains("credentials unchanged"), "{e}");
    assert_eq!(lab.calls(), ["login"]);
    // The next attempt re-reads the file first; once it is fixed, login works.
    lab.with(|st| st.secret_ids = vec!["S1".into()]);
    s.ensure_token().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn failed_reads_serve_the_last_good_value_within_max_age_only() {
    let lab = Lab::new(3600, true);
    let mut s = lab.session(60);
    s.refresh(&path()).await.unwrap();
    lab.with(|st| st.down = true);
    tokio::time::advance(Duration::from_secs(30)).await;
    let c = s.refresh(&path()).await.unwrap();
    assert_eq!(c.stale.as_ref().unwrap().kind(), Kind::Unreachable);
    assert_eq!(c.age, Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(31)).await;
    let e = s.refresh(&path()).await.unwrap_err();
    assert_eq!(e.kind(), Kind::Unreachable);
    // Recovery.
    lab.with(|st| st.down = false);
    let c = s.refresh(&path()).await.unwrap();
    assert!(c.stale.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_once_then_the_policy_is_blamed() {
    let lab = Lab::new(3600, true);
    let mut s = lab.session(0);
    s.ensure_token().await.unwrap();
    lab.calls();
    lab.with(|st| st.token_valid = false);
    s.refresh(&path()).await.unwrap();
    assert_eq!(lab.calls(), ["read ops/carp/2", "login", "read ops/carp/2"]);
}

#[tokio::test(start_paused = true)]
async fn missing_fields_are_named_not_their_values() {
    let lab = Lab::new(3600, true);
    let mut s = lab.session(0);
    let e = s.field(&path(), "passwd").await.unwrap_err();
    assert_eq!(e.kind(), Kind::MissingField);
    let m = e.to_string();
    assert!(m.contains("no field passwd (it has: password)"), "{m}");
    assert!(!m.contains("HUNTER2"), "{m}");
}

#[tokio::test(start_paused = true)]
async fn reload_drops_the_token_only_when_credentials_change() {
    let lab = Lab::new(3600, true);
    let mut s = lab.session(0);
    s.ensure_token().await.unwrap();
    s.reload().unwrap();
    s.ensure_token().await.unwrap();
    assert_eq!(lab.calls(), ["login"]);
    lab.with(|st| st.secret_ids.push("S2".into()));
    *lab.text.lock().unwrap() = file("S2");
    s.reload().unwrap();
    s.ensure_token().await.unwrap();
    assert_eq!(lab.calls(), ["login"]);
}

/// The daemon's agent over this session: it logs in at once, renews at 2/3 of the TTL without
/// being asked, serves reads, and after a failure retries on a growing delay instead of
/// spinning.
#[tokio::test(start_paused = true)]
async fn the_agent_keeps_the_token_alive_and_retries_failures() {
    use crate::vault::agent;
    let lab = Lab::new(30, true);
    let handle = agent::spawn(lab.session(60));
    let view = handle.view().await.unwrap();
    assert!(view.token, "{view:?}");
    assert_eq!(view.token_ttl_s, Some(30));
    assert_eq!(lab.calls(), vec!["login"]);

    // Renewal at 2/3 of the TTL, by itself.
    tokio::time::sleep(Duration::from_secs(21)).await;
    let view = handle.view().await.unwrap();
    assert!(view.token && view.last_error.is_none(), "{view:?}");
    assert_eq!(lab.calls(), vec!["renew"]);

    // A read goes through the session's cache.
    let c = handle.read(path()).await.unwrap();
    assert!(c.stale.is_none());
    assert_eq!(lab.calls(), vec!["read ops/carp/2"]);

    // Vault goes down: the renewal fails, the token expires, logins fail; retries are spaced
    // 1 s, 2 s, 4 s, ... not a tight loop.
    lab.with(|s| s.down = true);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let view = handle.view().await.unwrap();
    assert!(!view.token, "{view:?}");
    assert!(
        view.last_error.as_deref().unwrap().contains("down"),
        "{view:?}"
    );
    let attempts = lab.calls().len();
    assert!((3..=12).contains(&attempts), "{attempts} attempts in 60 s");
    // Each failure is counted by kind, for carpd_vault_errors_total.
    let counted: u64 = view.errors.values().sum();
    assert!(counted >= 3, "{view:?}");
    assert!(
        view.errors
            .keys()
            .all(|k| !k.is_empty() && !k.contains(' ')),
        "{view:?}"
    );

    // Back up: the next retry logs in, the error clears.
    lab.with(|s| s.down = false);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = handle.view().await.unwrap();
    assert!(view.token && view.last_error.is_none(), "{view:?}");

    // Reload re-reads the file; a rotated secret_id is used from then on.
    lab.with(|s| s.secret_ids = vec!["S2".into()]);
    *lab.text.lock().unwrap() = file("S2");
    handle.reload().await.unwrap();
    let view = handle.view().await.unwrap();
    assert!(view.token, "{view:?}");
    assert!(lab.calls().contains(&"login".to_string()));
}
