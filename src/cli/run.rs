//! `carpd run`: the long-running controller (see `controller::daemon`). This file only builds
//! the runtime, opens the kernel and turns SIGTERM/SIGINT into a clean shutdown.

use std::path::PathBuf;

use tokio::signal::unix::{SignalKind, signal};

use crate::controller::daemon::{Daemon, Settings};
use crate::devd::ClientConfig;

use super::Context;

pub fn run(ctx: &Context, apply: bool, devd_socket: PathBuf) -> bool {
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
        };
        let daemon = match Daemon::start(settings, kernel) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("{e}");
                return false;
            }
        };
        daemon.run(shutdown_signal()).await;
        true
    })
}

/// Completes on SIGTERM (service stop, daemon(8) forwarding) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
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
