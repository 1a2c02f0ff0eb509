//! The HTTP client of the OVH API: signing, server time, OAuth2 tokens, timeouts, retries,
//! rate limiting. One [`Client`] per endpoint and credential source, shared by every task.
//!
//! - Requests are built as a URL string and body bytes once, signed, and sent as signed
//!   (the URL is normalised through `reqwest::Url` first, and the normalised string is what
//!   gets signed, so a path that needed escaping can never break the signature).
//! - The time delta comes from `GET /auth/time`, is refreshed every `time_refresh` and after
//!   a `QUERY_TIME_OUT` or an `INVALID_SIGNATURE` (then the request is retried once).
//! - `NOT_CREDENTIAL`/`INVALID_CREDENTIAL` (and a 401 with OAuth2) re-read the credentials
//!   from their source once (rotation), then the error stands.
//! - GETs are retried on 429, 5xx and network errors with jittered exponential backoff
//!   within `request_deadline`. Mutations are retried only when they certainly did not run
//!   (429, connection refused): after a 5xx or a timeout a POST may or may not have been
//!   applied, and the failover layer re-reads the state and re-plans instead.
//! - Claims come first ([`claim_scope`]): a request made inside a claim never waits for the
//!   rate limiter (it takes its token, or runs the bucket into debt, so background checks
//!   yield), never refreshes a time delta or a token that still works, and is counted for
//!   the claim's request total.
//! - Task durations are learned per kind ([`Client::learned_task_time`]), so a claim polls
//!   its tasks near their expected end instead of tightly from the start.
//! - Connections are kept alive (reqwest's pool) so that a claim starts on a warm connection;
//!   [`Client::warm_up`] loads credentials, the time delta, a token and a connection ahead.
//! - Secret headers are marked sensitive (never printed by `Debug`), logs name method, path,
//!   status and query id only.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::TaskKind;
use super::credentials::{Auth, CredentialSource, Credentials};
use super::endpoint::Endpoint;
use super::error::{ApiError, ErrorBody, ErrorKind, OvhError};
use super::policy::{Cooldown, RateLimit, RateLimiter, RetryPolicy};
use super::sign;

/// Tunables of the client; the defaults suit the daemon.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of one HTTP exchange.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Overall time for one logical request, retries included.
    pub request_deadline: Duration,
    pub retry: RetryPolicy,
    pub rate: RateLimit,
    /// What claims may send (`ovh.failover_requests_per_minute`): the burst of a failover.
    pub failover_rate: RateLimit,
    /// How often the server time delta is refreshed.
    pub time_refresh: Duration,
    /// Extra trusted certificates (PEM), added to the built-in Mozilla roots: a TLS-inspecting
    /// proxy's CA, or the simulator's certificate.
    pub extra_roots_pem: Vec<String>,
    /// Credentials older than this are loaded again from their source before the next
    /// request (`None`: only when OVH refuses them). With a Vault source this is the read
    /// cache's maximum age: while Vault answers, credentials follow rotations; when it is
    /// down, the last good ones serve until they are that old, then calls fail clearly.
    pub credentials_max_age: Option<Duration>,
    /// The HTTP proxy (`ovh.proxy`); `None`: direct. The environment's proxies are never
    /// used (src/remote.rs).
    pub proxy: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            request_deadline: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            rate: RateLimit::default(),
            failover_rate: RateLimit::failover(super::policy::DEFAULT_FAILOVER_PER_MINUTE),
            time_refresh: Duration::from_secs(3600),
            extra_roots_pem: Vec::new(),
            credentials_max_age: None,
            proxy: None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: bytes::Bytes,
    pub query_id: Option<String>,
}

struct Token {
    value: SecretString,
    refresh_at: Instant,
    /// When OVH stops accepting it: a claim uses it until then rather than refresh first.
    expires_at: Instant,
}

tokio::task_local! {
    /// Set while a claim runs: its request counter. See [`claim_scope`].
    static CLAIM: Arc<AtomicU64>;
}

/// Runs `fut` (a claim) with claim priority, and returns its output with the number of HTTP
/// requests it sent through any [`Client`] (retries, time and token requests included).
pub async fn claim_scope<F: Future>(fut: F) -> (F::Output, u64) {
    let counter = Arc::new(AtomicU64::new(0));
    let out = CLAIM.scope(counter.clone(), fut).await;
    (out, counter.load(Ordering::Relaxed))
}

/// Whether the current task runs a claim.
fn in_claim() -> bool {
    CLAIM.try_with(|_| ()).is_ok()
}

fn count_request() {
    let _ = CLAIM.try_with(|c| c.fetch_add(1, Ordering::Relaxed));
}

/// Longest `Retry-After` honoured: a server asking for more gets this (the claim's deadline
/// bounds it anyway).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// A `Retry-After` header in seconds, saturated at [`RETRY_AFTER_MAX`] (an HTTP date or
/// garbage counts as absent).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Any run of digits: too long to parse means too big.
    let secs = v.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(RETRY_AFTER_MAX))
}

/// Token lifetime when the answer has no `expires_in`: short, so a token of unknown life is
/// replaced soon (OVH's live an hour).
pub const TOKEN_LIFE_DEFAULT: Duration = Duration::from_secs(300);
/// Longest token lifetime believed.
pub const TOKEN_LIFE_MAX: Duration = Duration::from_secs(24 * 3600);

/// When to refresh a token of `expires_in` seconds, and when it expires, both as offsets
/// from its receipt: at 90% of the life, at most a minute before expiry. Saturating.
pub fn token_timing(expires_in: Option<u64>) -> (Duration, Duration) {
    let life = expires_in
        .map(Duration::from_secs)
        .unwrap_or(TOKEN_LIFE_DEFAULT)
        .min(TOKEN_LIFE_MAX);
    let margin = (life / 10).min(Duration::from_secs(60));
    (life.saturating_sub(margin), life)
}

#[derive(Default)]
struct State {
    /// The credentials in use and when they were loaded.
    credentials: Option<(Arc<Credentials>, Instant)>,
    /// Server time minus local time, seconds, and when it was measured.
    delta: Option<(i64, Instant)>,
    token: Option<Token>,
}

/// The OVH API client.
pub struct Client {
    http: reqwest::Client,
    endpoint: Endpoint,
    source: Arc<dyn CredentialSource>,
    opts: ClientOptions,
    state: Mutex<State>,
    limiter: Mutex<RateLimiter>,
    /// Claims' own budget: the burst of a failover.
    claim_limiter: Mutex<RateLimiter>,
    /// Every request waits here after a 429.
    cooldown: Mutex<Cooldown>,
    requests: AtomicU64,
    /// Learned task durations (smoothed), per kind.
    learned: Mutex<BTreeMap<TaskKind, crate::ovh::policy::Expect>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.source.describe())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

enum Prepared {
    Classic {
        ak: String,
        as_: SecretString,
        ck: SecretString,
        delta: i64,
    },
    Bearer(SecretString),
    None,
}

impl Client {
    pub fn new(
        endpoint: Endpoint,
        source: Arc<dyn CredentialSource>,
        opts: ClientOptions,
    ) -> Result<Client, OvhError> {
        crate::remote::install_ring_provider();
        let mut builder = reqwest::Client::builder().tls_backend_rustls();
        for pem in &opts.extra_roots_pem {
            let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
                OvhError::Config(format!("an extra root certificate is not valid PEM: {e}"))
            })?;
            builder = builder.tls_certs_merge([cert]);
        }
        // Never a proxy from the environment; the configured one only (src/remote.rs).
        builder = builder.no_proxy();
        if let Some(url) = &opts.proxy {
            let proxy = reqwest::Proxy::all(url.as_str())
                .map_err(|e| OvhError::Config(format!("ovh.proxy: {e}")))?;
            builder = builder.proxy(proxy);
        }
        let http = builder
            .timeout(opts.timeout)
            .connect_timeout(opts.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // Signed requests and tokens must never be re-sent elsewhere (src/remote.rs).
            .redirect(crate::remote::no_redirects())
            .user_agent(concat!("carpd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OvhError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            endpoint,
            source,
            limiter: Mutex::new(RateLimiter::new(opts.rate)),
            claim_limiter: Mutex::new(RateLimiter::new(opts.failover_rate)),
            cooldown: Mutex::new(Cooldown::new(Duration::from_secs_f64(
                60.0 / f64::from(opts.failover_rate.per_minute.max(1)),
            ))),
            opts,
            state: Mutex::new(State::default()),
            requests: AtomicU64::new(0),
            learned: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// OVH's clock minus ours, seconds, as last measured (`None` before the first
    /// measurement, and with OAuth2 credentials, which do not sign with a timestamp).
    pub fn time_delta(&self) -> Option<i64> {
        self.lock().delta.map(|(d, _)| d)
    }

    /// Requests that can go out now without waiting for the rate limiter. Background work
    /// (periodic checks) leaves a reserve, so a claim never waits behind it.
    pub fn rate_headroom(&self) -> f64 {
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .available(Instant::now())
    }

    /// Whether the credentials in use sign with a timestamp (application keys, not OAuth2),
    /// so the clock matters; `None` before credentials were loaded.
    pub fn signs_with_time(&self) -> Option<bool> {
        self.lock()
            .credentials
            .as_ref()
            .map(|(c, _)| matches!(c.auth, super::credentials::Auth::Classic { .. }))
    }

    /// How long tasks of `kind` took lately (smoothed, with how precisely it is known),
    /// `None` before the first one.
    pub fn learned_task_time(&self, kind: TaskKind) -> Option<crate::ovh::policy::Expect> {
        self.learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&kind)
            .copied()
    }

    /// Records a task's duration (request to seen done).
    pub fn learn_task_time(&self, kind: TaskKind, took: crate::ovh::policy::Sample) {
        let mut l = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let v = crate::ovh::policy::learn_from(l.get(&kind).copied(), took);
        l.insert(kind, v);
    }

    /// HTTP requests sent so far (every attempt, `/auth/time` and tokens included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads credentials, the time delta (or a token) and opens a connection, so the next
    /// request goes out at once.
    pub async fn warm_up(&self) -> Result<(), OvhError> {
        self.prepare(true).await.map(|_| ())
    }

    async fn credentials(&self, reload: bool) -> Result<Arc<Credentials>, OvhError> {
        let max_age = self.opts.credentials_max_age;
        if !reload
            && let Some((c, at)) = self.lock().credentials.clone()
            && max_age.is_none_or(|m| at.elapsed() < m)
        {
            return Ok(c);
        }
        let c = Arc::new(self.source.load().await?);
        let mut st = self.lock();
        st.credentials = Some((c.clone(), Instant::now()));
        if reload {
            st.token = None;
        }
        Ok(c)
    }

    /// The server time (`GET /auth/time`, unauthenticated).
    /// Retried like any GET (429, 5xx, network errors) within the request deadline.
    pub async fn server_time(&self) -> Result<i64, OvhError> {
        let deadline = Instant::now() + self.opts.request_deadline;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.rate_limit(deadline).await;
            let e = match self
                .send_once("GET", "/auth/time", None, &Prepared::None)
                .await
            {
                Ok(r) => {
                    return serde_json::from_slice::<i64>(&r.body)
                        .map_err(|e| self.decode_error("GET", "/auth/time", &r, e));
                }
                Err(e) => e,
            };
            self.note_rate_limited(&e);
            let remaining = deadline.saturating_duration_since(Instant::now());
            let retry_after = e.api().and_then(|a| a.retry_after);
            match self
                .opts
                .retry
                .delay(attempt, fastrand::f64(), retry_after, remaining)
            {
                Some(d) if e.is_transient() => tokio::time::sleep(d).await,
                _ => return Err(e),
            }
        }
    }

    async fn sync_time(&self) -> Result<i64, OvhError> {
        let server = self.server_time().await?;
        // Saturating: the server's number can be anything (src/remote.rs).
        let delta = server.saturating_sub(unix_now());
        self.lock().delta = Some((delta, Instant::now()));
        tracing::debug!(delta, endpoint = self.endpoint.name(), "OVH time delta");
        Ok(delta)
    }

    async fn token(&self, creds: &Credentials) -> Result<SecretString, OvhError> {
        if let Some(t) = &self.lock().token {
            let now = Instant::now();
            // A claim does not stop to refresh a token that still works.
            if now < t.refresh_at || (in_claim() && now < t.expires_at) {
                return Ok(t.value.clone());
            }
        }
        let Auth::OAuth2 {
            client_id,
            client_secret,
        } = &creds.auth
        else {
            return Err(OvhError::Config("no OAuth2 credentials".into()));
        };
        let url = self.endpoint.token_url().ok_or_else(|| {
            OvhError::Config(format!(
                "endpoint {} has no OAuth2 token URL: OAuth2 service accounts exist on ovh-eu, ovh-ca and ovh-us only; for a custom endpoint set ovh.token_url",
                self.endpoint
            ))
        })?;
        let fail = |detail: String| OvhError::OAuth {
            url: url.to_string(),
            detail,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        count_request();
        let resp = self
            .http
            .post(url)
            .basic_auth(client_id, Some(client_secret.expose_secret()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&scope=all")
            .send()
            .await
            .map_err(|e| fail(describe_reqwest(&e)))?;
        let status = resp.status().as_u16();
        let body = read_bounded(resp, MAX_BODY).await.map_err(|e| match e {
            BodyError::Network(e) => fail(describe_reqwest(&e)),
            too_big => fail(format!("HTTP {status}, {too_big}")),
        })?;
        if status != 200 {
            let b = ErrorBody::decode(&body);
            return Err(fail(format!(
                "HTTP {status}{}",
                b.message.map(|m| format!(": {m}")).unwrap_or_default()
            )));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            access_token: String,
            /// Absent, or not a whole number of seconds: a short default.
            #[serde(default, deserialize_with = "lenient_u64")]
            expires_in: Option<u64>,
        }
        let reply: TokenReply = serde_json::from_slice(&body)
            .map_err(|_| fail("the reply has no access_token".into()))?;
        let (refresh, life) = token_timing(reply.expires_in);
        let value = SecretString::from(reply.access_token);
        let now = Instant::now();
        self.lock().token = Some(Token {
            value: value.clone(),
            refresh_at: now + refresh,
            expires_at: now + life,
        });
        Ok(value)
    }

    async fn prepare(&self, warm: bool) -> Result<Prepared, OvhError> {
        let creds = self.credentials(false).await?;
        let p = match &creds.auth {
            Auth::Classic {
                application_key,
                application_secret,
                consumer_key,
            } => {
                let cached = self.lock().delta;
                let delta = match cached {
                    Some((d, at)) if at.elapsed() < self.opts.time_refresh => d,
                    // A claim signs with the delta it has: OVH says QUERY_TIME_OUT if it
                    // went wrong, and that re-syncs once.
                    Some((d, _)) if in_claim() => d,
                    _ => self.sync_time().await?,
                };
                Prepared::Classic {
                    ak: application_key.clone(),
                    as_: application_secret.clone(),
                    ck: consumer_key.clone(),
                    delta,
                }
            }
            Auth::OAuth2 { .. } => {
                let t = self.token(&creds).await?;
                if warm {
                    // Open a connection to the API host (the token may live elsewhere).
                    let _ = self.server_time().await;
                }
                Prepared::Bearer(t)
            }
        };
        Ok(p)
    }

    /// GET `path` and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, OvhError> {
        let r = self.call("GET", path, None).await?;
        serde_json::from_slice(&r.body).map_err(|e| self.decode_error("GET", path, &r, e))
    }

    /// POST `body` (encoded like python-ovh) to `path` and decode the answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, OvhError> {
        let r = self.call("POST", path, Some(sign::to_body(body))).await?;
        serde_json::from_slice(&r.body).map_err(|e| self.decode_error("POST", path, &r, e))
    }

    /// DELETE `path` (never with a body: it would break the signature) and decode the answer.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, OvhError> {
        let r = self.call("DELETE", path, None).await?;
        serde_json::from_slice(&r.body).map_err(|e| self.decode_error("DELETE", path, &r, e))
    }

    fn decode_error(
        &self,
        method: &str,
        path: &str,
        r: &Response,
        e: serde_json::Error,
    ) -> OvhError {
        OvhError::Decode {
            method: method.into(),
            endpoint: self.endpoint.name().into(),
            path: path.into(),
            query_id: r.query_id.clone(),
            detail: format!("{e} (HTTP {}, {} bytes)", r.status, r.body.len()),
        }
    }

    /// One logical, authenticated request with the retry rules above.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, OvhError> {
        let mutating = method != "GET";
        let deadline = Instant::now() + self.opts.request_deadline;
        let mut attempt = 0u32;
        let mut resynced = false;
        let mut reloaded = false;
        loop {
            attempt += 1;
            self.rate_limit(deadline).await;
            let prepared = self.prepare(false).await?;
            let result = self
                .send_once(method, path, body.as_deref(), &prepared)
                .await;
            let e = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            match e.kind() {
                Some(ErrorKind::QueryTimeOut | ErrorKind::InvalidSignature)
                    if !resynced && matches!(prepared, Prepared::Classic { .. }) =>
                {
                    // A skewed clock shows as either; the request was refused, so sending
                    // it again (signed anew) is safe, once.
                    resynced = true;
                    tracing::info!(path, error = %e, "OVH refused the signature or timestamp: resyncing the time delta once");
                    self.sync_time().await?;
                    continue;
                }
                Some(ErrorKind::InvalidCredential) if !reloaded => {
                    reloaded = true;
                    tracing::warn!(path, source = %self.source.describe(), "OVH refused the consumer key: re-reading credentials once");
                    self.credentials(true).await?;
                    continue;
                }
                Some(ErrorKind::Unauthorized)
                    if !reloaded && matches!(prepared, Prepared::Bearer(_)) =>
                {
                    reloaded = true;
                    self.credentials(true).await?;
                    continue;
                }
                _ => {}
            }
            self.note_rate_limited(&e);
            let retry_safe = match &e {
                OvhError::Api(a) => a.status == 429 || (!mutating && a.kind().is_transient()),
                OvhError::Network { connect, .. } => *connect || !mutating,
                _ => false,
            };
            if retry_safe {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let retry_after = e.api().and_then(|a| a.retry_after);
                if let Some(d) =
                    self.opts
                        .retry
                        .delay(attempt, fastrand::f64(), retry_after, remaining)
                {
                    tracing::info!(method, path, attempt, delay_ms = d.as_millis() as u64, error = %e, "OVH request failed, retrying");
                    tokio::time::sleep(d).await;
                    continue;
                }
            }
            return Err(e);
        }
    }

    /// A 429 slows every request of this client at once (see [`Cooldown`]).
    fn note_rate_limited(&self, e: &OvhError) {
        if let OvhError::Api(a) = e
            && a.status == 429
        {
            tracing::warn!(
                retry_after_ms = a.retry_after.map(|d| d.as_millis() as u64),
                "OVH answered 429 (too many requests): every request pauses, then goes out spaced"
            );
            self.cooldown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .rate_limited(Instant::now(), a.retry_after);
        }
    }

    /// Whether a 429 pauses or spaces requests now (status).
    pub fn cooling_down(&self) -> bool {
        self.cooldown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active(Instant::now())
    }

    async fn rate_limit(&self, deadline: Instant) {
        // After a 429 nobody goes first: claims too wait for their slot; a 429 that arrives
        // while waiting (another request's) means a new pause: take a new slot after it.
        loop {
            let (slot, epoch) = {
                let mut c = self.cooldown.lock().unwrap_or_else(|p| p.into_inner());
                (c.slot(Instant::now()), c.epoch())
            };
            let Some(at) = slot else { break };
            tokio::time::sleep_until(at.into()).await;
            let now_epoch = self
                .cooldown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .epoch();
            if now_epoch == epoch {
                break;
            }
        }
        if in_claim() {
            // Claims never wait for the steady budget: the token is taken (the bucket may go
            // into debt), and background checks, which look at the headroom, yield until it
            // refills. They wait only when the failover's own burst is spent.
            self.limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(Instant::now());
            loop {
                let wait = {
                    let mut l = self.claim_limiter.lock().unwrap_or_else(|p| p.into_inner());
                    match l.acquire(Instant::now()) {
                        Ok(()) => return,
                        Err(w) => w,
                    }
                };
                if Instant::now() + wait > deadline {
                    return;
                }
                tracing::debug!(
                    wait_ms = wait.as_millis() as u64,
                    "OVH failover budget spent: waiting"
                );
                tokio::time::sleep(wait).await;
            }
        }
        loop {
            let wait = {
                let mut l = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
                match l.acquire(Instant::now()) {
                    Ok(()) => return,
                    Err(w) => w,
                }
            };
            let now = Instant::now();
            if now + wait > deadline {
                // Go over the local budget rather than fail a request the deadline allows:
                // the deadline is the harder promise; OVH answers 429 if we truly overdo it.
                return;
            }
            tracing::debug!(wait_ms = wait.as_millis() as u64, "OVH rate limit: waiting");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        auth: &Prepared,
    ) -> Result<Response, OvhError> {
        let url_string = self.endpoint.url(path);
        let network = |detail: String, connect: bool| OvhError::Network {
            method: method.into(),
            endpoint: self.endpoint.name().into(),
            path: path.into(),
            detail,
            connect,
        };
        let url = reqwest::Url::parse(&url_string)
            .map_err(|e| network(format!("invalid URL: {e}"), true))?;
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| network("invalid method".into(), true))?;
        let mut headers = HeaderMap::new();
        let sensitive = |v: &str| {
            let mut h = HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
            h.set_sensitive(true);
            h
        };
        match auth {
            Prepared::Classic { ak, as_, ck, delta } => {
                let ts = unix_now().saturating_add(*delta);
                let sig = sign::signature(
                    as_.expose_secret(),
                    ck.expose_secret(),
                    method,
                    url.as_str(),
                    body.unwrap_or_default(),
                    ts,
                );
                headers.insert(
                    "X-Ovh-Application",
                    HeaderValue::from_str(ak).unwrap_or(HeaderValue::from_static("")),
                );
                headers.insert("X-Ovh-Consumer", sensitive(ck.expose_secret()));
                headers.insert("X-Ovh-Timestamp", HeaderValue::from(ts));
                headers.insert("X-Ovh-Signature", sensitive(&sig));
            }
            Prepared::Bearer(t) => {
                headers.insert(
                    "Authorization",
                    sensitive(&format!("Bearer {}", t.expose_secret())),
                );
            }
            Prepared::None => {}
        }
        let mut req = self.http.request(m, url).headers(headers);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_vec());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        count_request();
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            if e.is_redirect() {
                // Not transient: asking again gets the same redirect (src/remote.rs).
                OvhError::Decode {
                    method: method.into(),
                    endpoint: self.endpoint.name().into(),
                    path: path.into(),
                    query_id: None,
                    detail: describe_reqwest(&e),
                }
            } else {
                network(describe_reqwest(&e), e.is_connect())
            }
        })?;
        let status = resp.status().as_u16();
        let query_id = resp
            .headers()
            .get("X-Ovh-QueryID")
            .and_then(|v| v.to_str().ok())
            .map(|q| crate::remote::untrusted(q, 100));
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match read_bounded(resp, MAX_BODY).await {
            Ok(b) => b,
            Err(BodyError::Network(e)) => return Err(network(describe_reqwest(&e), false)),
            Err(too_big @ BodyError::TooBig { .. }) => {
                return Err(OvhError::Decode {
                    method: method.into(),
                    endpoint: self.endpoint.name().into(),
                    path: path.into(),
                    query_id,
                    detail: format!(
                        "HTTP {status}, {too_big}. Fix: check that ovh.endpoint points at the OVH API and that no proxy answers in its place"
                    ),
                });
            }
        };
        tracing::debug!(
            method,
            path,
            status,
            query_id = query_id.as_deref().unwrap_or("-"),
            elapsed_us = started.elapsed().as_micros() as u64,
            "OVH request"
        );
        if (200..300).contains(&status) {
            return Ok(Response {
                status,
                body,
                query_id,
            });
        }
        Err(OvhError::Api(Box::new(ApiError {
            method: method.into(),
            endpoint: self.endpoint.name().into(),
            path: path.into(),
            status,
            body: ErrorBody::decode(&body),
            query_id,
            retry_after,
        })))
    }
}

/// `expires_in` as a whole number of seconds, or `None` (absent, null, negative, fractional,
/// a string): the caller then uses a short default.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = <serde_json::Value as serde::Deserialize>::deserialize(d)?;
    Ok(v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
}

/// Largest answer carpd reads from the OVH API or its token endpoint. The biggest real
/// answers (a server's vMAC list, an IP's details) are a few KiB; a broken proxy or a hostile
/// server sending more cannot grow the daemon's memory past this: reading stops here.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why an answer's body was not read.
#[derive(Debug)]
enum BodyError {
    Network(reqwest::Error),
    /// `declared`: the Content-Length, when the server announced the size.
    TooBig {
        declared: Option<u64>,
        limit: usize,
    },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Network(e) => write!(f, "{}", describe_reqwest(e)),
            BodyError::TooBig {
                declared: Some(n),
                limit,
            } => write!(
                f,
                "the answer announces {n} bytes, more than the {limit} bytes carpd reads: not read"
            ),
            BodyError::TooBig {
                declared: None,
                limit,
            } => write!(
                f,
                "the answer is longer than the {limit} bytes carpd reads: reading stopped there"
            ),
        }
    }
}

/// Reads a body chunk by chunk, refusing it as soon as it is announced or found to be longer
/// than `limit` (the connection is then dropped, not drained).
async fn read_bounded(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    if let Some(n) = resp.content_length()
        && n > limit as u64
    {
        return Err(BodyError::TooBig {
            declared: Some(n),
            limit,
        });
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Network)? {
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooBig {
                declared: None,
                limit,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// A reqwest error in words, without the URL (the caller names endpoint and path).
fn describe_reqwest(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection failed while reading the answer"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_saturates_and_ignores_garbage() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(
            parse_retry_after("18446744073709551615"),
            Some(RETRY_AFTER_MAX)
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(""), None);
    }

    #[test]
    fn token_timing_defaults_and_saturates() {
        assert_eq!(
            token_timing(Some(3600)),
            (Duration::from_secs(3540), Duration::from_secs(3600))
        );
        assert_eq!(token_timing(None).1, TOKEN_LIFE_DEFAULT);
        assert_eq!(token_timing(Some(u64::MAX)).1, TOKEN_LIFE_MAX);
        assert_eq!(token_timing(Some(0)), (Duration::ZERO, Duration::ZERO));
        assert_eq!(
            token_timing(Some(10)),
            (Duration::from_secs(9), Duration::from_secs(10))
        );
    }

    #[test]
    fn lenient_expires_in() {
        #[derive(serde::Deserialize)]
        struct R {
            #[serde(default, deserialize_with = "lenient_u64")]
            e: Option<u64>,
        }
        let e = |j: &str| serde_json::from_str::<R>(j).unwrap().e;
        assert_eq!(e(r#"{"e":60}"#), Some(60));
        assert_eq!(e(r#"{"e":"60"}"#), Some(60));
        assert_eq!(e(r#"{"e":-5}"#), None);
        assert_eq!(e(r#"{"e":1e300}"#), None);
        assert_eq!(e(r#"{"e":null}"#), None);
        assert_eq!(e(r#"{}"#), None);
    }
}
