//! `carpd run`: the long-running controller (see `controller::daemon`). This file only builds
//! the runtime, opens the kernel and turns SIGTERM/SIGINT into a clean shutdown.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::daemon::{Daemon, Settings};
use crate::devd::ClientConfig;

use super::Context;

pub fn run(ctx: &Context, apply: bool, devd_socket: PathBuf) -> bool {
    // The daemon holds tokens, OVH keys and CARP passwords in memory for its whole life.
    if let Err(e) = crate::secrets::forbid_core_dumps() {
        tracing::warn!(
            "cannot turn core dumps off (setrlimit RLIMIT_CORE): {e}; a crash may write the daemon's memory, secrets included, to disk"
        );
    }
    // One thread: the controller loop, the devd reader and the control socket are all
    // I/O-bound and share state through the loop, never through locks.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return false;
        }
    };
    rt.block_on(async {
        // Catch the signals before anything else: from here on SIGTERM waits for the step
        // in flight (the start-up apply included) instead of killing the process mid-way.
        let shutdown = shutdown_signal();
        let hup = signal(SignalKind::hangup());
        let kernel = match ctx.open_kernel() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!("not started: {e}");
                return false;
            }
        };
        let settings = Settings {
            config_path: ctx.config_path.clone(),
            policy: ctx.policy,
            apply,
            control_socket: ctx.control_socket.clone(),
            devd: ClientConfig {
                socket: devd_socket,
                ..ClientConfig::default()
            },
            ovh_client: crate::ovh::ClientOptions::default(),
        };
        let daemon = match Daemon::start(settings, kernel) {
            Ok(d) => match hup {
                Ok(hup) => d.with_reload_signal(hup),
                Err(e) => {
                    tracing::error!(
                        "cannot catch SIGHUP ({e}); reload with `carpd reload` instead"
                    );
                    d
                }
            },
            Err(e) => {
                tracing::error!("not started: {e}");
                return false;
            }
        };
        daemon.serve(shutdown).await
    })
}

/// Installs the SIGTERM (service stop, daemon(8) forwarding) and SIGINT (Ctrl-C) handlers
/// now, and returns a future that completes when one of them arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    wait_for(term, int)
}

async fn wait_for(
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
) {
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("received {name}, shutting down");
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("cannot catch SIGTERM/SIGINT ({e}); stop carpd with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
