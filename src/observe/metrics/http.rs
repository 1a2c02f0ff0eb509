//! The Prometheus scrape endpoint: `GET /metrics` on a loopback listener (`metrics.listen`).
//!
//! hyper's HTTP/1 server does the parsing (it is already in the tree for the OVH simulator);
//! this module only bounds what a client can cost: request heads over [`MAX_HEAD`] bytes are
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

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{CONTENT_TYPE as EXPOSITION, Metrics};

/// Largest request head (request line and headers) read; hyper's minimum buffer.
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
                    let _ = tokio::time::timeout(opts.deadline, connection(stream, metrics, opts)).await;
                });
            }
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, metrics: Metrics, opts: ServeOptions) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let metrics = metrics.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics)) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.deadline)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "carpd metrics: only GET and HEAD are allowed\n",
        );
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(EXPOSITION),
            );
            r
        }
        "/" => text(
            StatusCode::OK,
            "carpd: Prometheus metrics are at /metrics\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "carpd metrics: not found; the metrics are at /metrics\n",
        ),
    }
}
