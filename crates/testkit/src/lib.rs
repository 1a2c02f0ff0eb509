//! carpd-testkit: the simulators of what carpd talks to, and the helpers its tests, benchmarks
//! and lab share. Never part of a router's build: only `carpd`'s dev-dependencies and
//! `carpd-lab` depend on it.
//!
//! - [`ovh`]: the OVH API simulator (HTTP on loopback: signatures, vMACs, IPs, tasks,
//!   faults), its state model and an in-memory fake of carpd's `FailoverApi`.
//! - [`devd`]: a fake devd on a real `SOCK_SEQPACKET` socket.
//! - [`bao`]: a real OpenBao dev server, set up the deployment's way.
//! - [`pair`]: two routers as in-process daemons on simulated kernels (the lab, benchmarks).
//! - [`routers`]: two routers as real `carpd run` processes with OpenBao (end-to-end tests).
//! - [`daemon`]: one in-process daemon whose every step a test can wait for.
//! - [`host`]: one router's files and command line, for tests that run the `carpd` binary.
//! - [`redirect`]: a proxy that redirects or answers chosen requests (hostile servers).
//! - [`poll`], [`wait_until`] (and their blocking twins), [`write_private`]: the waiting and
//!   the files every test needs; [`join_all`]: many futures side by side on one task (the
//!   claims or checks of one failover, as the daemon runs them).

pub mod bao;
pub mod daemon;
pub mod devd;
pub mod host;
pub mod ovh;
pub mod pair;
pub mod redirect;
pub mod routers;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the waits below look again: often enough that a test waits milliseconds past
/// the moment its condition holds, rarely enough to cost nothing.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `f` every [`POLL`] until it gives a value, for at most `limit`; panics naming `what`
/// otherwise. Async so that the simulators and daemons of the same runtime keep running.
/// Never a fixed sleep: it returns as soon as the condition holds.
pub async fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll`] for a condition.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    poll(what, limit, || condition().then_some(())).await
}

/// [`poll`] for threads without a runtime (tests that drive processes).
pub fn poll_blocking<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for threads without a runtime.
pub fn wait_until_blocking(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    poll_blocking(what, limit, || condition().then_some(()))
}

/// Polls every future on the calling task until all are done, and returns their outputs in
/// order: futures that borrow the test's locals (a client, shared reads) run side by side
/// without being spawned. Written here rather than taken from `futures` for this one use.
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *o = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

/// The `carpd` binary of the build running this test or benchmark: cargo builds it next to
/// the test executables (`target/<profile>/carpd`, tests in `target/<profile>/deps/`).
/// Integration tests of the carpd package may use `env!("CARGO_BIN_EXE_carpd")` directly;
/// this is for the testkit's own process helpers, which are compiled without it.
pub fn carpd_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the path of the running test executable");
    let mut dir = exe
        .parent()
        .expect("a test executable lives in a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>/deps has a parent");
    }
    let bin = dir.join("carpd");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first (cargo builds it for the carpd package's tests and benches)",
        bin.display()
    );
    bin
}

/// Writes `text` to a file only its owner can read (0600, replacing any file there): how
/// carpd wants its secret files.
pub fn try_write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    // A read-only file from an earlier write cannot be opened for writing: replace it.
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    f.write_all(text.as_bytes()).map_err(fail)
}

/// [`try_write_private`] for tests: panics on failure.
pub fn write_private(path: &Path, text: &str) {
    try_write_private(path, text).unwrap_or_else(|e| panic!("{e}"));
}
