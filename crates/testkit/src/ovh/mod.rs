//! An OVH API simulator: an HTTP server on 127.0.0.1 (random port) that authenticates and
//! answers like OVH for the calls carpd makes, with a state model ([`world`]), signature and
//! timestamp verification ([`auth`]), fault injection, and an inspection API for tests.
//!
//! Used in-process by tests, the lab and the benchmarks: [`OvhSim::start`] returns a handle
//! whose [`OvhSim::endpoint`] a [`carpd::ovh::Client`] points at. Dropping the handle stops the
//! server and every connection. It binds loopback (or, for the FreeBSD acceptance script's
//! jails, the address `examples/ovh-sim.rs` is given) and never contacts anything.
//!
//! Served (under `/1.0`): `GET /auth/time`; the dedicated-server vMAC endpoints and tasks;
//! `GET /ip/{block}`, `POST /ip/{block}/move`, `GET /ip/{block}/task[/{id}]`; and outside
//! `/1.0`, `POST /auth/oauth2/token` (client credentials, HTTP Basic). Every answer carries an
//! `X-Ovh-QueryID`; errors use OVH's two JSON shapes.
//!
//! Faults ([`Fault`]): extra latency, an HTTP status (5xx, 429 with `Retry-After`), a hung
//! response, a dropped connection, on requests matching a method and path fragment, a given
//! number of times; task failures via [`OvhSim::fail_next_tasks`]. And what reality adds
//! (reference §7): a write applied whose answer is lost ([`FaultKind::ApplyThenDrop`]) or
//! replaced by a 5xx ([`FaultKind::ApplyThenStatus`]), an IAM refusal with its `details`
//! ([`FaultKind::IamDenied`]); the world adds tasks that answer 404 while fresh, 403 for an IP
//! already on a vMAC, and hostile listings ([`world::World::junk_vmacs`],
//! [`world::World::duplicate_ips`]).

pub mod auth;
pub mod fake;
pub mod world;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use auth::{Application, ConsumerKey, IssuedToken};
use carpd::ovh::Endpoint;
use world::{Refusal, Snapshot, TaskOwner, World};

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answer with this status and an OVH error body (429 adds `Retry-After: 0`).
    Status(u16),
    /// 429 `Client::TooManyRequests` with `Retry-After` of this many seconds (a fair-use
    /// refusal as OVH sends it).
    TooManyRequests(u32),
    /// Wait this long, then handle the request normally.
    Latency(Duration),
    /// Never answer (until the client gives up).
    Hang,
    /// Close the connection without an answer.
    Drop,
    /// Handle the request (a write is applied), then close the connection without an answer.
    ApplyThenDrop,
    /// Handle the request (a write is applied), then answer this status (a 5xx from a proxy
    /// after the backend acted).
    ApplyThenStatus(u16),
    /// 403 `Client::Forbidden` with `details.unauthorizedActionsByIAM` naming this action.
    IamDenied(String),
    /// 200 with a body that is not the call's JSON (a proxy's error page).
    Garbage,
}

/// A fault for requests matching `method` (any if `None`) and containing `path` (any if
/// `None`), applied `times` times.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<String>,
    pub path: Option<String>,
    pub kind: FaultKind,
    pub times: u32,
}

impl Fault {
    pub fn new(method: Option<&str>, path: Option<&str>, kind: FaultKind, times: u32) -> Fault {
        Fault {
            method: method.map(str::to_string),
            path: path.map(str::to_string),
            kind,
            times,
        }
    }
}

/// One request as the simulator saw it.
#[derive(Clone, Debug, Serialize)]
pub struct LoggedRequest {
    #[serde(skip)]
    pub at: Instant,
    pub method: String,
    /// Path and query after the host, e.g. `/1.0/auth/time`.
    pub target: String,
    pub status: u16,
    pub query_id: String,
    /// A POST/DELETE/PUT the simulator accepted (2xx).
    pub mutation: bool,
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub applications: Vec<Application>,
    pub consumer_keys: Vec<ConsumerKey>,
    /// OAuth2 service accounts (client id, secret).
    pub oauth_clients: Vec<(String, String)>,
    pub token_ttl: Duration,
    /// Server clock minus local clock, seconds.
    pub clock_offset: i64,
    /// Allowed distance between `X-Ovh-Timestamp` and the server clock.
    pub timestamp_tolerance: i64,
    /// Latency added to every request.
    pub latency: Duration,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1 made at start (see
    /// [`OvhSim::ca_pem`]); plain HTTP otherwise.
    pub tls: bool,
}

/// Re-plans for tests: 20 ms, doubling to 200 ms, as many as the claim's deadline allows
/// (carpd's default starts at 500 ms, sized for OVH's tasks, not the simulator's).
pub fn quick_replans() -> carpd::ovh::policy::RetryPolicy {
    carpd::ovh::policy::RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        max_attempts: u32::MAX,
        ..carpd::ovh::policy::RetryPolicy::default()
    }
}

/// The keys of [`SimConfig::default`], for tests and the lab.
pub const TEST_AK: &str = "simApplicationKey";
pub const TEST_AS: &str = "simApplicationSecret0123456789ab";
pub const TEST_CK: &str = "simConsumerKey0123456789abcdefgh";
pub const TEST_CLIENT_ID: &str = "sim-service-account";
pub const TEST_CLIENT_SECRET: &str = "simClientSecret0123456789";

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            applications: vec![Application {
                key: TEST_AK.into(),
                secret: TEST_AS.into(),
            }],
            consumer_keys: vec![ConsumerKey::full(TEST_CK, TEST_AK)],
            oauth_clients: vec![(TEST_CLIENT_ID.into(), TEST_CLIENT_SECRET.into())],
            token_ttl: Duration::from_secs(3600),
            clock_offset: 0,
            timestamp_tolerance: 60,
            latency: Duration::ZERO,
            tls: false,
        }
    }
}

struct State {
    config: SimConfig,
    world: World,
    faults: Vec<Fault>,
    tokens: Vec<IssuedToken>,
    log: Vec<LoggedRequest>,
    next_query: u64,
}

struct Inner {
    state: Mutex<State>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator. Dropping it stops the server.
pub struct OvhSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
    /// The self-signed certificate (PEM) when serving HTTPS.
    ca_pem: Option<String>,
}

impl Drop for OvhSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error a handler returns to make hyper drop the connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

type Answer = Response<Full<Bytes>>;

impl OvhSim {
    /// Starts the simulator on 127.0.0.1 with an empty account.
    pub async fn start(config: SimConfig) -> std::io::Result<OvhSim> {
        OvhSim::start_on(config, (Ipv4Addr::LOCALHOST, 0).into()).await
    }

    /// Starts the simulator on `addr` (the FreeBSD acceptance script's jails reach it over
    /// a bridge; `examples/ovh-sim.rs`). Tests use [`OvhSim::start`].
    pub async fn start_on(config: SimConfig, addr: SocketAddr) -> std::io::Result<OvhSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (acceptor, ca_pem) = if config.tls {
            let (a, pem) = tls_acceptor()?;
            (Some(a), Some(pem))
        } else {
            (None, None)
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                config,
                world: World::new(),
                faults: Vec::new(),
                tokens: Vec::new(),
                log: Vec::new(),
                next_query: 0,
            }),
        });
        let srv = inner.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let inner = srv.clone();
                        match acceptor.clone() {
                            Some(acceptor) => conns.spawn(async move {
                                if let Ok(tls) = acceptor.accept(stream).await {
                                    serve(TokioIo::new(tls), inner, "https").await;
                                }
                            }),
                            None => conns.spawn(serve(TokioIo::new(stream), inner, "http")),
                        };
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(OvhSim {
            addr,
            inner,
            task,
            ca_pem,
        })
    }

    /// The certificate to trust when serving HTTPS (PEM).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/1.0` (or `https://`).
    pub fn base_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/1.0", self.addr)
    }

    /// The simulator as an endpoint, with its OAuth2 token URL (`/auth/oauth2/token`).
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::parse(&self.base_url())
            .expect("the simulator's URL is a valid endpoint")
            .with_token_url(self.token_url())
    }

    /// Where the simulator issues OAuth2 tokens (`ovh.token_url` of a config pointing at it).
    pub fn token_url(&self) -> String {
        let base = self.base_url();
        format!("{}/auth/oauth2/token", base.trim_end_matches("/1.0"))
    }

    /// Changes the account (set-up, or a test playing "someone else").
    pub fn with_world<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        let mut st = self.inner.lock();
        st.world.advance(Instant::now());
        f(&mut st.world)
    }

    /// Changes the settings (keys, clock offset, latency, ...).
    pub fn with_config<T>(&self, f: impl FnOnce(&mut SimConfig) -> T) -> T {
        f(&mut self.inner.lock().config)
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut st = self.inner.lock();
        let now = Instant::now();
        st.world.advance(now);
        st.world.snapshot(now)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.lock().log.clone()
    }

    pub fn clear_requests(&self) {
        self.inner.lock().log.clear();
    }

    /// Accepted mutations so far.
    pub fn mutations(&self) -> usize {
        self.inner.lock().log.iter().filter(|r| r.mutation).count()
    }

    pub fn inject(&self, fault: Fault) {
        self.inner.lock().faults.push(fault);
    }

    /// Removes every injected fault (requests already hanging stay hung).
    pub fn clear_faults(&self) {
        self.inner.lock().faults.clear();
    }

    /// Invalidates every OAuth2 token issued so far (as if they expired).
    pub fn expire_tokens(&self) {
        self.inner.lock().tokens.clear();
    }

    /// The next tasks created end with these statuses instead of `done`.
    pub fn fail_next_tasks(&self, statuses: &[&str]) {
        let mut st = self.inner.lock();
        st.world
            .next_task_failures
            .extend(statuses.iter().map(|s| s.to_string()));
    }
}

/// A TLS acceptor with a fresh self-signed certificate for 127.0.0.1 and localhost, on the
/// ring provider.
fn tls_acceptor() -> std::io::Result<(tokio_rustls::TlsAcceptor, String)> {
    let fail = |e: String| std::io::Error::other(format!("simulator TLS set-up: {e}"));
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .map_err(|e| fail(e.to_string()))?;
    let pem = ck.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .map_err(|e| fail(e.to_string()))?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), pem))
}

async fn serve<I>(io: I, inner: Arc<Inner>, scheme: &'static str)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let inner = inner.clone();
        async move { handle(inner, req, scheme).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc)
        .await;
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn json_answer(status: u16, body: Vec<u8>, qid: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    let h = r.headers_mut();
    h.insert(
        "Content-Type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    if let Ok(v) = qid.parse() {
        h.insert("X-Ovh-QueryID", v);
    }
    r
}

fn class_error(status: u16, class: &str, message: &str, qid: &str) -> Answer {
    let body = serde_json::json!({"class": class, "message": message});
    json_answer(status, body.to_string().into_bytes(), qid)
}

fn code_error(status: u16, code: &str, message: &str, qid: &str) -> Answer {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let body = serde_json::json!({"errorCode": code, "httpCode": format!("{status} {reason}"), "message": message});
    json_answer(status, body.to_string().into_bytes(), qid)
}

fn refusal(r: Refusal, qid: &str) -> Answer {
    class_error(r.status, r.class, &r.message, qid)
}

fn ok<T: Serialize>(v: &T, qid: &str) -> Answer {
    json_answer(200, serde_json::to_vec(v).unwrap_or_default(), qid)
}

/// Percent-decodes the two escapes OVH paths carry (`%2F` in blocks, `%3A` in MACs).
fn unescape(seg: &str) -> String {
    seg.replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%3A", ":")
        .replace("%3a", ":")
}

async fn handle(
    inner: Arc<Inner>,
    req: Request<Incoming>,
    scheme: &'static str,
) -> Result<Answer, Dropped> {
    let at = Instant::now();
    let method = req.method().as_str().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let host = req
        .headers()
        .get("Host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };

    let (qid, fault, latency) = {
        let mut st = inner.lock();
        st.next_query += 1;
        let qid = format!("SIM.ext-1.{:08x}", st.next_query);
        let fault = st
            .faults
            .iter_mut()
            .find(|f| {
                f.times > 0
                    && f.method.as_deref().is_none_or(|m| m == method)
                    && f.path.as_deref().is_none_or(|p| target.contains(p))
            })
            .map(|f| {
                f.times -= 1;
                f.kind.clone()
            });
        st.faults.retain(|f| f.times > 0);
        (qid, fault, st.config.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut after: Option<FaultKind> = None;
    let answer = match fault {
        Some(k @ (FaultKind::ApplyThenDrop | FaultKind::ApplyThenStatus(_))) => {
            after = Some(k);
            None
        }
        Some(FaultKind::IamDenied(action)) => {
            let body = serde_json::json!({
                "class": "Client::Forbidden",
                "message": "User not granted for this request",
                "details": {"unauthorizedActionsByAuthentication": "", "unauthorizedActionsByIAM": action},
            });
            Some(json_answer(403, body.to_string().into_bytes(), &qid))
        }
        Some(FaultKind::Drop) => {
            log(&inner, at, &method, &target, 0, &qid, false);
            return Err(Dropped);
        }
        Some(FaultKind::Hang) => {
            // Logged on arrival with status 0: the request reached the API (a write may or
            // may not be applied by a real one), no answer ever comes.
            log(&inner, at, &method, &target, 0, &qid, false);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Err(Dropped);
        }
        Some(FaultKind::Garbage) => Some(json_answer(
            200,
            b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            &qid,
        )),
        Some(FaultKind::Latency(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(FaultKind::TooManyRequests(secs)) => {
            let mut a = class_error(429, "Client::TooManyRequests", "Too many requests", &qid);
            if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
                a.headers_mut().insert("Retry-After", v);
            }
            Some(a)
        }
        Some(FaultKind::Status(s)) => {
            let mut a = if s == 429 {
                class_error(s, "Client::TooManyRequests", "Too many requests", &qid)
            } else {
                class_error(
                    s,
                    "Server::InternalServerError",
                    "Internal server error",
                    &qid,
                )
            };
            if s == 429 {
                a.headers_mut()
                    .insert("Retry-After", hyper::header::HeaderValue::from_static("0"));
            }
            Some(a)
        }
        None => None,
    };
    let answer = match answer {
        Some(a) => a,
        None => route(
            &inner, &method, &target, &host, scheme, &headers, &body, &qid,
        ),
    };
    let status = answer.status().as_u16();
    let mutation = method != "GET" && (200..300).contains(&status) && target.starts_with("/1.0/");
    log(&inner, at, &method, &target, status, &qid, mutation);
    match after {
        Some(FaultKind::ApplyThenDrop) => Err(Dropped),
        Some(FaultKind::ApplyThenStatus(s)) => Ok(class_error(
            s,
            "Server::BadGateway",
            "Upstream answer lost",
            &qid,
        )),
        _ => Ok(answer),
    }
}

fn log(
    inner: &Inner,
    at: Instant,
    method: &str,
    target: &str,
    status: u16,
    qid: &str,
    mutation: bool,
) {
    inner.lock().log.push(LoggedRequest {
        at,
        method: method.into(),
        target: target.into(),
        status,
        query_id: qid.into(),
        mutation,
    });
}

#[allow(clippy::too_many_arguments)]
fn route(
    inner: &Inner,
    method: &str,
    target: &str,
    host: &str,
    scheme: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
    qid: &str,
) -> Answer {
    let now = Instant::now();
    let mut st = inner.lock();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));

    if path == "/auth/oauth2/token" && method == "POST" {
        return token(&mut st, headers, body, now);
    }
    let Some(api_path) = path.strip_prefix("/1.0") else {
        return class_error(
            404,
            "Client::NotFound",
            "Got an invalid (or empty) URL",
            qid,
        );
    };
    let server_now = unix_now() + st.config.clock_offset;
    if api_path == "/auth/time" && method == "GET" {
        return json_answer(200, server_now.to_string().into_bytes(), qid);
    }

    // Authentication.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(authz) = header("Authorization") {
        st.tokens.retain(|t| t.expires > now);
        if let Err(e) = auth::check_bearer(&authz, &st.tokens, now) {
            return class_error(e.status, e.code, e.message, qid);
        }
    } else {
        let full_url = format!("{scheme}://{host}{target}");
        let r = auth::Request {
            method,
            full_url: &full_url,
            path: api_path,
            body,
            header: &header,
        };
        if let Err(e) = auth::check_classic(
            &r,
            &st.config.applications,
            &st.config.consumer_keys,
            server_now,
            st.config.timestamp_tolerance,
        ) {
            return if e.status == 401 {
                class_error(e.status, e.code, e.message, qid)
            } else {
                code_error(e.status, e.code, e.message, qid)
            };
        }
    }

    if api_path == auth::CURRENT_CREDENTIAL && method == "GET" {
        return current_credential(&st, &header, qid);
    }

    st.world.advance(now);
    let w = &mut st.world;
    let segs: Vec<String> = api_path
        .trim_start_matches('/')
        .split('/')
        .map(unescape)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let bad_request = |m: &str| class_error(400, "Client::BadRequest", m, qid);
    let parse_ip = |s: &str| s.parse::<Ipv4Addr>().ok();
    let r: Result<Answer, Refusal> = match (method, segs.as_slice()) {
        ("GET", ["dedicated", "server", sn, "virtualMac"]) => w.list_vmacs(sn).map(|v| ok(&v, qid)),
        ("GET", ["dedicated", "server", sn, "virtualMac", mac]) => {
            w.vmac_info(sn, mac).map(|v| ok(&v, qid))
        }
        (
            "GET",
            [
                "dedicated",
                "server",
                sn,
                "virtualMac",
                mac,
                "virtualAddress",
            ],
        ) => w.vmac_ips(sn, mac).map(|v| ok(&v, qid)),
        (
            "POST",
            [
                "dedicated",
                "server",
                sn,
                "virtualMac",
                mac,
                "virtualAddress",
            ],
        ) => {
            #[derive(serde::Deserialize)]
            struct Add {
                #[serde(rename = "ipAddress")]
                ip: String,
                #[serde(rename = "virtualMachineName")]
                vm: String,
            }
            match serde_json::from_slice::<Add>(body) {
                Err(_) => Ok(bad_request(
                    "Invalid body: expected {\"ipAddress\",\"virtualMachineName\"}",
                )),
                Ok(a) => match parse_ip(&a.ip) {
                    None => Ok(bad_request("Invalid ipAddress")),
                    Some(ip) => w.add_ip(now, sn, mac, ip, &a.vm).map(|t| ok(&t, qid)),
                },
            }
        }
        (
            "GET",
            [
                "dedicated",
                "server",
                sn,
                "virtualMac",
                mac,
                "virtualAddress",
                ip,
            ],
        ) => match parse_ip(ip) {
            None => Ok(bad_request("Invalid ipAddress")),
            Some(ip) => w.vaddr(sn, mac, ip).map(|v| ok(&v, qid)),
        },
        (
            "DELETE",
            [
                "dedicated",
                "server",
                sn,
                "virtualMac",
                mac,
                "virtualAddress",
                ip,
            ],
        ) => match parse_ip(ip) {
            None => Ok(bad_request("Invalid ipAddress")),
            Some(ip) => w.remove_ip(now, sn, mac, ip).map(|t| ok(&t, qid)),
        },
        ("GET", ["dedicated", "server", sn, "task"]) => {
            let status = query.split('&').find_map(|kv| kv.strip_prefix("status="));
            w.server(sn)
                .map(|_| ok(&w.server_tasks(sn, status, now), qid))
        }
        ("GET", ["dedicated", "server", sn, "task", id]) => match id.parse::<u64>() {
            Err(_) => Ok(bad_request("Invalid taskId")),
            Ok(id) => w
                .task(&TaskOwner::Server(sn.to_string()), id, now)
                .map(|t| ok(&t, qid)),
        },
        ("GET", ["ip", block]) => match block.parse::<IpNet>() {
            Err(_) => Ok(bad_request("Invalid ip")),
            Ok(b) => w.ip_info(b).map(|v| ok(&v, qid)),
        },
        ("POST", ["ip", block, "move"]) => {
            #[derive(serde::Deserialize)]
            struct Move {
                to: String,
            }
            match (block.parse::<IpNet>(), serde_json::from_slice::<Move>(body)) {
                (Err(_), _) => Ok(bad_request("Invalid ip")),
                (_, Err(_)) => Ok(bad_request("Invalid body: expected {\"to\"}")),
                (Ok(b), Ok(m)) => w.move_ip(now, b, &m.to).map(|t| ok(&t, qid)),
            }
        }
        ("GET", ["ip", block, "task"]) => match block.parse::<IpNet>() {
            Err(_) => Ok(bad_request("Invalid ip")),
            Ok(b) => {
                let q = |k: &str| {
                    query.split('&').find_map(|kv| {
                        kv.split_once('=')
                            .filter(|(key, _)| *key == k)
                            .map(|(_, v)| v.to_string())
                    })
                };
                let (f, s) = (q("function"), q("status"));
                Ok(ok(&w.ip_tasks(b, f.as_deref(), s.as_deref(), now), qid))
            }
        },
        ("GET", ["ip", block, "task", id]) => match (block.parse::<IpNet>(), id.parse::<u64>()) {
            (Ok(b), Ok(id)) => w.task(&TaskOwner::Ip(b), id, now).map(|t| ok(&t, qid)),
            _ => Ok(bad_request("Invalid ip or taskId")),
        },
        _ => Ok(class_error(
            404,
            "Client::NotFound",
            "Got an invalid (or empty) URL",
            qid,
        )),
    };
    r.unwrap_or_else(|e| refusal(e, qid))
}

/// `GET /auth/currentCredential` for the calling consumer key (authenticated above), in
/// OVH's shape: `credentialId`, `applicationId`, `status`, `expiration`, `allowedIPs`,
/// `rules`. A bearer token has no consumer key: answered as OVH answers an unknown route.
fn current_credential(st: &State, header: &dyn Fn(&str) -> Option<String>, qid: &str) -> Answer {
    let ck = header("X-Ovh-Consumer").unwrap_or_default();
    let ak = header("X-Ovh-Application").unwrap_or_default();
    let Some((i, c)) = st
        .config
        .consumer_keys
        .iter()
        .enumerate()
        .find(|(_, c)| c.key == ck && c.application_key == ak)
    else {
        return class_error(
            404,
            "Client::NotFound",
            "Got an invalid (or empty) URL",
            qid,
        );
    };
    let rules: Vec<serde_json::Value> = c
        .rules
        .iter()
        .map(|(m, p)| serde_json::json!({"method": m, "path": p}))
        .collect();
    ok(
        &serde_json::json!({
            "credentialId": i + 1,
            "applicationId": 1,
            "status": "validated",
            "creation": "2026-01-01T00:00:00+01:00",
            "expiration": null,
            "lastUse": null,
            "allowedIPs": null,
            "ovhSupport": false,
            "rules": rules,
        }),
        qid,
    )
}

fn token(st: &mut State, headers: &hyper::HeaderMap, body: &[u8], now: Instant) -> Answer {
    let deny = |m: &str| {
        let body = serde_json::json!({"error": "invalid_client", "error_description": m});
        json_answer(401, body.to_string().into_bytes(), "SIM.oauth")
    };
    let basic = headers
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = basic.as_deref().and_then(|b| b.split_once(':')) else {
        return deny("missing HTTP Basic client credentials");
    };
    let form = String::from_utf8_lossy(body);
    let mut fields = form.split('&');
    if !fields.any(|f| f == "grant_type=client_credentials") {
        return deny("grant_type must be client_credentials");
    }
    if !st
        .config
        .oauth_clients
        .iter()
        .any(|(i, s)| i == id && s == secret)
    {
        return deny("invalid client credentials");
    }
    let token = format!("sim-token-{:016x}", fastrand::u64(..));
    st.tokens.push(IssuedToken {
        token: token.clone(),
        expires: now + st.config.token_ttl,
    });
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": st.config.token_ttl.as_secs(),
        "scope": "all",
    });
    json_answer(200, body.to_string().into_bytes(), "SIM.oauth")
}
