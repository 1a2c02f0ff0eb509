//! The Prometheus scrape endpoint: `GET /metrics` on a loopback listener (`metrics.listen`).
//!
//! httparse (the parser under hyper, already in the tree for the HTTP clients) reads the
//! request head; the rest is written here because a scrape endpoint needs so little of HTTP
//! (one request per connection, no body, four answers) that a server library would be the
//! largest part of carpd's production tree. This module bounds what a client can cost: request heads over [`MAX_HEAD`] bytes are
//! refused (431), a connection that has not finished within [`ServeOptions::deadline`] is
//! closed (a client that connects and sends nothing, or reads slowly, cannot hold a slot),
//! and at most [`ServeOptions::max_connections`] are served at once; further connections
//! wait in the kernel's accept queue until a slot frees, which the deadline bounds. One
//! request per connection (no keep-alive), so the deadline covers each scrape.
//!
//! Routes: `GET`/`HEAD /metrics` (the exposition), `/` (a pointer to /metrics), anything
//! else 404; other methods 405 with `Allow`.
//!
//! Must not: block the caller (the daemon spawns [`serve`] as its own task), or outlive
//! `shutdown` (in-flight connections are dropped when it fires).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{CONTENT_TYPE as EXPOSITION, Metrics};

/// Largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8192;

/// Limits of the scrape server.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a connection may take from accept to the end of the response.
    pub deadline: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 8,
            deadline: Duration::from_secs(5),
        }
    }
}

/// The listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("metrics.listen: cannot listen on {addr}: {source}. Fix: {fix}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
    pub fix: &'static str,
}

/// Opens the scrape listener on `addr` (checked loopback by the configuration).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let fix = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process holds this port (a second carpd?): stop it, or choose another port in metrics.listen"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "the address is not configured on this host: use 127.0.0.1 or [::1] in metrics.listen"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose a port above 1024 (e.g. 9745) in metrics.listen"
            }
            _ => "check metrics.listen",
        };
        BindError { addr, source, fix }
    })
}

/// Serves scrapes on `listener` until `shutdown` completes, with the default limits.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_with(listener, metrics, ServeOptions::default(), shutdown).await
}

/// [`serve`] with explicit limits (tests use short deadlines).
pub async fn serve_with(
    listener: TcpListener,
    metrics: Metrics,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set never holds more than the live ones.
        while conns.try_join_next().is_some() {}
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            permit = slots.clone().acquire_owned() => {
                // The semaphore is never closed, so this cannot fail; if it ever did, stop
                // serving rather than spin.
                let Ok(permit) = permit else { break };
                let accepted = tokio::select! {
                    _ = &mut shutdown => break,
                    a = listener.accept() => a,
                };
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little instead of
                        // spinning on the same error.
                        tracing::warn!(error = %e, "metrics: accept failed");
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = metrics.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(opts.deadline, connection(stream, metrics)).await;
                });
            }
        }
    }
}

async fn connection(mut stream: TcpStream, metrics: Metrics) {
    let (status, extra, body, head_only) = match read_head(&mut stream).await {
        Some(Head::Request { method, path }) => {
            let head_only = method == "HEAD";
            let (status, extra, body) = answer(&method, &path, &metrics);
            (status, extra, body, head_only)
        }
        Some(Head::TooLarge) => (
            Status::HeadTooLarge,
            None,
            Body::Text("carpd metrics: request head too large\n"),
            false,
        ),
        Some(Head::Malformed) => (
            Status::BadRequest,
            None,
            Body::Text("carpd metrics: not an HTTP/1 request\n"),
            false,
        ),
        // The client went away or the read failed: nobody to answer.
        None => return,
    };
    let (content_type, body) = match &body {
        Body::Text(t) => ("text/plain; charset=utf-8", t.as_bytes()),
        Body::Exposition(e) => (EXPOSITION, e.as_bytes()),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n{}\r\n",
        status.line(),
        body.len(),
        extra.unwrap_or(""),
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    if stream.write_all(&out).await.is_err() {
        return;
    }
    // A lingering close: the client may still be sending (an oversized head); closing with
    // unread bytes makes the kernel send a reset, which can destroy the answer before the
    // client reads it. So: end our side, then read and discard until the client closes (the
    // caller's deadline bounds this).
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// What the request head turned out to be.
enum Head {
    Request { method: String, path: String },
    TooLarge,
    Malformed,
}

/// Reads until the head is complete (`\r\n\r\n`), at most [`MAX_HEAD`] bytes. `None` when
/// the client closed or the read failed before a complete head. A body is never read: no
/// route takes one.
async fn read_head(stream: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let (Some(method), Some(path)) = (req.method, req.path) else {
                    return Some(Head::Malformed);
                };
                // The query string does not select anything.
                let path = path.split('?').next().unwrap_or("");
                return Some(Head::Request {
                    method: method.to_string(),
                    path: path.to_string(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Some(Head::TooLarge),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Some(Head::TooLarge),
            Err(_) => return Some(Head::Malformed),
        }
    }
}

/// The statuses this server answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
        }
    }
}

enum Body {
    Text(&'static str),
    Exposition(String),
}

/// The answer to a well-formed request: status, an extra header line, the body.
fn answer(method: &str, path: &str, metrics: &Metrics) -> (Status, Option<&'static str>, Body) {
    if method != "GET" && method != "HEAD" {
        return (
            Status::MethodNotAllowed,
            Some("Allow: GET, HEAD\r\n"),
            Body::Text("carpd metrics: only GET and HEAD are allowed\n"),
        );
    }
    match path {
        "/metrics" => (Status::Ok, None, Body::Exposition(metrics.render())),
        "/" => (
            Status::Ok,
            None,
            Body::Text("carpd: Prometheus metrics are at /metrics\n"),
        ),
        _ => (
            Status::NotFound,
            None,
            Body::Text("carpd metrics: not found; the metrics are at /metrics\n"),
        ),
    }
}
