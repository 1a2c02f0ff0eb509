//! The daemon's one loop (mini-redis style): every source feeds it, the controller decides,
//! the executor acts. Sources: the devd client (events, reconnects, lag), the control socket
//! (status, reload, nudges from the devd hook), SIGHUP, the caller's shutdown future
//! (SIGTERM/SIGINT in `carpd run`), job ends, finished reloads, and the controller's own
//! wake-up time.
//!
//! The stop, in order: stop taking new work (the controller starts nothing and cancels every
//! job at its next safe point), keep serving status while claims inside their open window
//! finish, exit when none runs or `daemon.stop_grace` has passed. An exhausted grace (or a
//! second SIGTERM/SIGINT) logs which IP was left in which phase; the marker then makes the
//! next start repair those first. A kernel change or a reload is never cut in half: the
//! loop only acts between two iterations.

use std::future::Future;
use std::pin::pin;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::control::server::Incoming;
use crate::control::{Reply, Request};
use crate::controller::core::Trigger;
use crate::controller::machine::Input;
use crate::devd::{self, DevdClient, DevdMessage};
use crate::observe::metrics;

use super::{Daemon, Note, recv_signal};

impl Daemon {
    /// Runs until `shutdown` completes and the stop sequence ends: converges and reads the
    /// kernel at once, then watches. Returns after the devd client and the control socket
    /// are closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let _ = self.serve(shutdown).await;
    }

    /// [`Daemon::run`], telling whether the stop was clean: `false` when the stop grace ran
    /// out (or a second signal came) with a claim still running (`carpd run` exits 1).
    pub async fn serve(mut self, shutdown: impl Future<Output = ()>) -> bool {
        let mut clean = true;
        let mut shutdown = pin!(shutdown);
        let (devd_tx, mut devd_rx) = mpsc::channel(devd::CHANNEL_CAPACITY);
        let client = DevdClient::new(self.settings.devd.clone());
        self.devd_stats = client.stats();
        let (stop_devd, devd_stopped) = oneshot::channel::<()>();
        let devd_task = tokio::spawn(client.run(devd_tx, async move {
            let _ = devd_stopped.await;
        }));
        let (ctl_tx, mut ctl_rx) = mpsc::channel::<Incoming>(64);
        let server = self.server.take().expect("run is called once");
        let ctl_task = tokio::spawn(async move {
            server.serve(ctl_tx).await;
        });
        let mut hup = match self.hup.take() {
            Some(s) => Some(s),
            None => match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "cannot catch SIGHUP; reload with `carpd reload` instead");
                    None
                }
            },
        };

        self.restore_ledger();
        self.sync_vault_agent();
        self.sync_failover();
        self.repair_marked();
        let mut reports = self.reports.1.take().expect("run is called once");
        let (stop_metrics, metrics_tasks) = self.start_metrics().await;
        tracing::info!(
            node = %self.loaded.config.node,
            config = %self.settings.config_path.display(),
            kernel = %self.kernel.info().name,
            groups = self.loaded.config.groups.len(),
            apply = self.settings.apply,
            control = %self.settings.control_socket.display(),
            "carpd started"
        );
        self.drive(Input::Tick);
        // Boot order: CARP elections start only now (the ledger and the configuration are in).
        super::boot::release(
            self.kernel.as_ref(),
            &self.loaded.config,
            self.settings.apply,
            self.ledger_error.as_deref().map_or(Ok(()), Err),
        );
        let (mut devd_open, mut ctl_open) = (true, true);
        let mut deadline: Option<Instant> = None;
        let mut again: Option<Again> = None;
        loop {
            if deadline.is_some() && self.jobs.is_empty() {
                break;
            }
            let wake = self.controller.next_wakeup(Instant::now());
            let until_deadline =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                () = &mut shutdown, if deadline.is_none() => {
                    deadline = Some(self.begin_stop());
                    again = Some(Again::new());
                }
                () = wait_again(&mut again), if deadline.is_some() => {
                    tracing::warn!("second stop signal: not waiting for open claims any more");
                    clean = self.grace_ran_out();
                    break;
                }
                () = tokio::time::sleep_until(until_deadline.into()), if deadline.is_some() => {
                    clean = self.grace_ran_out();
                    break;
                }
                Some(()) = recv_signal(&mut hup) => self.start_reload("SIGHUP", None),
                report = self.jobs.next() => self.job_ended(report),
                Some(done) = self.reloads.join_next(), if !self.reloads.is_empty() => {
                    if let Ok(done) = done {
                        self.finish_reload(done);
                    }
                }
                msg = devd_rx.recv(), if devd_open => match msg {
                    Some(m) => {
                        self.on_devd(m);
                        // The rest of a burst: the core folds events for one group into
                        // one read per coalescing window.
                        while let Ok(m) = devd_rx.try_recv() {
                            self.on_devd(m);
                        }
                    }
                    None => devd_open = false,
                },
                inc = ctl_rx.recv(), if ctl_open => match inc {
                    Some(inc) => self.on_control(inc),
                    None => ctl_open = false,
                },
                // The sender lives in self: this channel never closes while the loop runs.
                Some(r) = reports.recv() => self.on_report(r),
                Some(_) = self.aux.join_next(), if !self.aux.is_empty() => {}
                () = tokio::time::sleep_until(wake.into()) => self.drive(Input::Tick),
            }
        }

        let _ = stop_devd.send(());
        drop(stop_metrics);
        for t in metrics_tasks {
            // The textfile task removes its file on the way out.
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        self.aux.abort_all();
        self.reloads.abort_all();
        ctl_task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), devd_task).await;
        // Dropping the server (inside the aborted task) removes the socket file.
        let _ = ctl_task.await;
        tracing::info!("carpd stopped");
        clean
    }

    /// Stop taking new work; returns the deadline of the grace.
    fn begin_stop(&mut self) -> Instant {
        self.stopping = true;
        let grace = self.loaded.config.daemon.stop_grace;
        self.drive(Input::Stop);
        let running = self.jobs.view();
        let open: Vec<String> = running
            .values()
            .filter(|j| j.open)
            .map(|j| format!("{} ({})", j.ip, j.phase))
            .collect();
        if !open.is_empty() {
            tracing::info!(
                grace_s = grace.as_secs(),
                open = %open.join(", "),
                "stopping: finishing the claims that released a failover IP before exiting"
            );
        } else if !running.is_empty() {
            tracing::debug!(
                jobs = running.len(),
                "stopping: cancelling running checks and claims"
            );
        }
        Instant::now() + grace
    }

    /// The grace ran out (or a second signal came): say exactly what is left where. Returns
    /// whether nothing was left inside its open window.
    fn grace_ran_out(&mut self) -> bool {
        let grace = self.loaded.config.daemon.stop_grace;
        let mut clean = true;
        for j in self.jobs.view().values() {
            if j.open {
                clean = false;
                tracing::error!(
                    ip = %j.ip,
                    phase = %j.phase,
                    running_s = j.started.elapsed().as_secs(),
                    marker = %self.marker.path().display(),
                    "stop grace of {}s ran out with the failover IP released and not yet bound here: it may be bound to no vMAC until carpd starts again, which repairs it first (the marker records it)",
                    grace.as_secs()
                );
            } else {
                tracing::info!(ip = %j.ip, phase = %j.phase, "stopped before its next change");
            }
        }
        self.jobs.abort_all();
        clean
    }

    /// Failover IPs an earlier run left inside their open window: repair them first.
    fn repair_marked(&mut self) {
        let found = match self.marker.load() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(
                    "the open-claim marker cannot be read ({e}); the normal start-up checks still run"
                );
                return;
            }
        };
        for (ip, entry) in &found {
            if self.controller.claims().get(ip).is_some() {
                tracing::warn!(
                    %ip,
                    phase = %entry.phase,
                    since = entry.since,
                    "a claim of this failover IP was interrupted inside its open window (crash, or the stop grace ran out): repairing it first"
                );
                self.drive(Input::Repair(*ip));
            } else {
                tracing::warn!(%ip, phase = %entry.phase, "the open-claim marker names a failover IP the configuration no longer has; forgetting it");
            }
        }
        let kept = found
            .into_iter()
            .filter(|(ip, _)| self.controller.claims().get(ip).is_some())
            .collect();
        self.marker.adopt(kept);
    }

    /// Starts the metrics listener and textfile writer the configuration asks for. They stop
    /// when the returned sender is dropped. A listener that cannot bind is logged, not fatal:
    /// metrics must never stand in the way of a failover.
    async fn start_metrics(
        &self,
    ) -> (
        tokio::sync::watch::Sender<()>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(());
        let stopped = |mut rx: tokio::sync::watch::Receiver<()>| async move {
            while rx.changed().await.is_ok() {}
        };
        let cfg = &self.loaded.config.metrics;
        let mut tasks = Vec::new();
        if let Some(addr) = cfg.listen {
            match metrics::http::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
                    tasks.push(tokio::spawn(metrics::http::serve(
                        listener,
                        self.metrics.clone(),
                        stopped(rx.clone()),
                    )));
                }
                Err(e) => tracing::error!("metrics not served: {e}"),
            }
        }
        if let Some(path) = cfg.textfile.clone() {
            tasks.push(tokio::spawn(metrics::textfile::textfile_loop(
                path,
                cfg.textfile_interval,
                self.metrics.clone(),
                stopped(rx.clone()),
            )));
        }
        (tx, tasks)
    }

    fn on_devd(&mut self, m: DevdMessage) {
        match &m {
            DevdMessage::Connected { connection } if *connection > 1 => {
                tracing::info!("devd reconnected: re-reading every group");
            }
            DevdMessage::Lagged { dropped } => tracing::warn!(
                dropped,
                "fell behind devd and dropped events: re-reading every group"
            ),
            _ => {}
        }
        if let Some(input) = devd_input(m) {
            self.drive(input);
        }
    }

    fn on_control(&mut self, inc: Incoming) {
        let reply = match inc.request {
            Request::Status => {
                let mut view = self.view();
                let Some((_, agent)) = &self.vault else {
                    let _ = inc.reply.send(Reply::Status {
                        daemon: Box::new(view),
                    });
                    return;
                };
                // The agent answers between Vault requests; status must not wait for one.
                let pending = agent.try_view();
                self.aux.spawn(async move {
                    if let Some(rx) = pending {
                        view.vault = tokio::time::timeout(Duration::from_millis(200), rx)
                            .await
                            .ok()
                            .and_then(Result::ok);
                    }
                    let _ = inc.reply.send(Reply::Status {
                        daemon: Box::new(view),
                    });
                });
                return;
            }
            Request::Reload => return self.start_reload("control socket", Some(inc.reply)),
            Request::Nudge { group, state } => {
                let now = Instant::now();
                let known = self.loaded.duties.contains_key(&group);
                let state = state.map_or("-", |s| s.as_str());
                tracing::debug!(%group, state = %state, known, "nudged by the control socket");
                self.drive(Input::Nudge(group.clone()));
                self.note(Note::Nudged { group, at: now });
                Reply::Nudged { known }
            }
        };
        // The client may have gone; nothing to do about it.
        let _ = inc.reply.send(reply);
    }
}

/// A second SIGTERM or SIGINT while stopping.
struct Again {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Again {
    fn new() -> Again {
        Again {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }
}

async fn wait_again(again: &mut Option<Again>) {
    let Some(a) = again else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(()) = recv_signal(&mut a.term) => {}
        Some(()) = recv_signal(&mut a.int) => {}
    }
}

/// What a devd message asks of the controller. A (re)connect or a lag means events were
/// missed: read every group. A disconnect asks nothing: the client logs the reason and
/// reconnects, and the resync follows the reconnect.
fn devd_input(m: DevdMessage) -> Option<Input<'static>> {
    match m {
        DevdMessage::Event(ev) => Some(Input::Event {
            group: ev.group,
            claimed: ev.state,
        }),
        DevdMessage::Connected { .. } | DevdMessage::Lagged { .. } => {
            Some(Input::Resync(Trigger::Resync))
        }
        DevdMessage::Disconnected { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lag_and_every_connect_read_every_group_a_disconnect_waits_for_the_reconnect() {
        let resync = |m| matches!(devd_input(m), Some(Input::Resync(Trigger::Resync)));
        assert!(resync(DevdMessage::Lagged { dropped: 3 }));
        assert!(resync(DevdMessage::Connected { connection: 1 }));
        assert!(resync(DevdMessage::Connected { connection: 2 }));
        assert!(
            devd_input(DevdMessage::Disconnected {
                connection: 1,
                reason: crate::devd::DisconnectReason::Closed,
            })
            .is_none()
        );
    }
}
