//! The executor of `carpd run`: one loop on a current-thread tokio runtime that feeds the
//! pure [`Core`] and carries out what it asks.
//!
//! Inputs, each from its own task or source, all into this one loop (mini-redis style):
//! - the devd client (events, reconnects, lag) through a bounded channel;
//! - the control socket server (status, reload, nudges from the devd hook);
//! - SIGHUP (reload); the caller's shutdown future (SIGTERM/SIGINT in `carpd run`);
//! - the core's own wake-up time (periodic re-read, coalesced events).
//!
//! Every full read (start-up, timer, devd resync, reload) first converges the kernel on the
//! configuration — the same minimal diff `carpd apply` makes — unless `--no-apply`, then reads
//! every vhid. Event and nudge reads only read the groups named. Kernel calls are synchronous
//! and fast (one netlink round trip or ioctl); they run on the loop, which is the kernel's
//! only writer, so two changes can never interleave.
//!
//! Shutdown happens between two iterations: a kernel change or a reload is never cut in half.
//!
//! Must not: believe an event, log a transition twice, log a secret, or stop on a kernel
//! error (it is logged once, shown in status, and retried at the next re-read).

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::carp::{CarpState, GroupId};
use crate::config::{self, Config, ConfigError};
use crate::control::server::{BindError, ControlServer, Incoming};
use crate::control::{Reply, Request};
use crate::devd::{self, ClientConfig, DevdClient, DevdMessage, DevdStats};
use crate::kernel::{Kernel, KernelError};
use crate::observe::daemon_view::{
    self, ApplyView, Clock, DaemonView, EventView, ReconcileView, ReloadView, TransitionView,
};
use crate::plan::apply::apply;
use crate::plan::gather::{NotApplicable, desired_for, observe};
use crate::plan::{Desired, diff};
use crate::secrets::SecretPolicy;
use crate::vault::agent::{self, AgentHandle};
use crate::vault::blocking::Access;

use crate::observe::metrics::{self, Metrics};
use crate::ovh::ClientOptions;

use super::claims::Verdict;
use super::core::{Core, Outcome, Trigger, Work};
use super::duties::{Duties, GroupAction, GroupDuties};
use super::failover::{Failover, ReadinessSettings, Report};
use super::ledger::{LedgerStore, Reason};

/// What `carpd run` was told on its command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config_path: PathBuf,
    pub policy: SecretPolicy,
    /// Converge the kernel on the configuration (the default); `--no-apply` only watches.
    pub apply: bool,
    pub control_socket: PathBuf,
    pub devd: ClientConfig,
    /// How the OVH client talks (timeouts, extra roots: the simulator's certificate in tests).
    pub ovh_client: ClientOptions,
}

/// Something the daemon did, for in-process observers (tests, benchmarks).
#[derive(Clone, Debug)]
pub enum Note {
    /// A kernel reading was handed to the core; `at` is when the decisions were made.
    Reconciled {
        work: Work,
        outcome: Outcome,
        at: Instant,
    },
    /// A control-socket nudge arrived.
    Nudged { group: GroupId, at: Instant },
    /// A reload was attempted.
    Reloaded { ok: bool },
    /// A failover job (claim or check) ended.
    Cloud {
        report: Box<super::cloud::JobReport>,
        verdict: Verdict,
    },
}

/// Why a configuration cannot be taken, at start-up or on reload.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigError),
    #[error("the configuration does not fit this kernel:\n{0}")]
    Kernel(String),
    #[error("cannot read the passwords:\n{0}")]
    Secrets(String),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A checked configuration with its secrets read: everything a reload swaps at once.
struct Loaded {
    config: Config,
    desired: Desired,
    duties: Duties,
}

fn load(settings: &Settings, k: &dyn Kernel) -> Result<Loaded, StartError> {
    let config = config::load(&settings.config_path)?;
    // Reading Vault passwords runs a Vault session on a small runtime of its own, which
    // cannot be started from this runtime's thread: do it on a scoped thread. Start-up and
    // reload are rare, and the loop has nothing better to do meanwhile.
    let policy = settings.policy;
    let desired = std::thread::scope(|s| {
        s.spawn(|| desired_for(&config, k, policy))
            .join()
            .unwrap_or_else(|_| {
                Err(NotApplicable::Secrets(vec![
                    "reading the passwords panicked".to_string(),
                ]))
            })
    })
    .map_err(|e| match e {
        NotApplicable::Kernel(e) => StartError::Kernel(e.to_string()),
        NotApplicable::Fit(list) => StartError::Kernel(list.join("\n")),
        NotApplicable::Secrets(list) => StartError::Secrets(list.join("\n")),
    })?;
    let duties = duties_of(&config);
    Ok(Loaded {
        config,
        desired,
        duties,
    })
}

/// The groups the configuration names (`groups`, and those `failover_ips` follow), and what
/// each obliges carpd to do.
pub fn duties_of(config: &Config) -> Duties {
    let mut duties: Duties = config
        .groups
        .iter()
        .map(|g| (g.id.clone(), GroupDuties::default()))
        .collect();
    for f in &config.failover_ips {
        duties
            .entry(f.group.clone())
            .or_default()
            .failover_ips
            .push(std::net::IpAddr::V4(f.ip));
    }
    duties
}

#[derive(Default)]
struct Records {
    last_reconcile: Option<(Instant, Trigger, String, Duration, Option<String>)>,
    last_apply: Option<(Instant, Trigger, Vec<String>, Option<String>)>,
    last_reload: Option<(Instant, bool, String)>,
    /// Last kernel error logged, so a persistent one is logged once, not every re-read.
    last_error: Option<String>,
    /// Last drift reported with `--no-apply`, for the same reason.
    last_drift: Option<Vec<String>>,
    actions: std::collections::BTreeMap<GroupId, Vec<GroupAction>>,
}

/// The running daemon.
pub struct Daemon {
    settings: Settings,
    kernel: Arc<dyn Kernel>,
    loaded: Loaded,
    /// Failover IPs and the OVH client, when the configuration has any.
    failover: Option<Failover>,
    /// Prometheus metrics (served or written when `metrics:` says so).
    metrics: Metrics,
    /// Whether carpd's `not_ready` demotion is in the ledger (as far as this run knows).
    not_ready_demoted: Option<bool>,
    /// The last ledger problem logged, so a persistent one is logged once.
    ledger_error: Option<String>,
    reports: (
        mpsc::UnboundedSender<Report>,
        Option<mpsc::UnboundedReceiver<Report>>,
    ),
    core: Core,
    server: Option<ControlServer>,
    devd_stats: Arc<DevdStats>,
    started: Clock,
    records: Records,
    notes: Option<mpsc::UnboundedSender<Note>>,
    hup: Option<Signal>,
    /// The Vault agent keeping a token alive, when `vault:` is configured.
    vault: Option<(VaultAccessKey, AgentHandle)>,
}

/// What identifies a Vault agent's setup: a reload that changes it starts a new agent.
type VaultAccessKey = (Option<PathBuf>, String, Duration, Duration);

fn vault_key(v: &crate::config::VaultConfig) -> VaultAccessKey {
    (
        v.secretsmith.clone(),
        v.approle_mount.clone(),
        v.cache_max_age,
        v.timeout,
    )
}

impl Daemon {
    /// Loads and checks the configuration, reads its secrets and binds the control socket.
    /// Must be called inside a tokio runtime. Nothing is changed in the kernel yet.
    pub fn start(settings: Settings, kernel: Box<dyn Kernel>) -> Result<Daemon, StartError> {
        let loaded = load(&settings, kernel.as_ref())?;
        let server = ControlServer::bind(&settings.control_socket)?;
        let started = Clock::now();
        // Correlation ids: unique per run without coordination (pid and start second).
        let secs = started
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = format!("{:x}{:x}", std::process::id(), secs & 0xffff);
        let core = Core::new(
            loaded.config.daemon,
            loaded.duties.clone(),
            run_id,
            started.mono,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Daemon {
            settings,
            kernel: Arc::from(kernel),
            loaded,
            failover: None,
            metrics: Metrics::new(),
            not_ready_demoted: None,
            ledger_error: None,
            reports: (tx, Some(rx)),
            core,
            server: Some(server),
            devd_stats: Arc::new(DevdStats::default()),
            started,
            records: Records::default(),
            notes: None,
            hup: None,
            vault: None,
        })
    }

    /// Reload on this SIGHUP stream. `carpd run` creates it before anything slow, so that a
    /// SIGHUP during start-up is a reload and not the default action (death). Without it,
    /// [`Daemon::run`] catches SIGHUP itself.
    pub fn with_reload_signal(mut self, hup: Signal) -> Daemon {
        self.hup = Some(hup);
        self
    }

    /// The daemon's metrics (tests read them directly).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Sends a [`Note`] for everything the daemon does (tests and benchmarks).
    pub fn with_notes(mut self, tx: mpsc::UnboundedSender<Note>) -> Daemon {
        self.notes = Some(tx);
        self
    }

    /// Runs until `shutdown` completes: converges and reads the kernel at once, then
    /// watches. Returns after the devd client and the control socket are closed.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
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
        self.reconcile_due();
        self.start_cloud_jobs();
        let (mut devd_open, mut ctl_open) = (true, true);
        loop {
            let now = Instant::now();
            let wake = self.core.next_wakeup(now);
            let wake = match self.failover.as_ref().and_then(|f| f.next_wakeup(now)) {
                Some(w) => wake.min(w),
                None => wake,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(()) = recv_signal(&mut hup) => self.reload_logged("SIGHUP"),
                msg = devd_rx.recv(), if devd_open => match msg {
                    Some(m) => {
                        self.on_devd(m);
                        // Take the whole burst before reading the kernel: one read for all.
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
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.reconcile_due();
            self.start_cloud_jobs();
        }

        let _ = stop_devd.send(());
        drop(stop_metrics);
        for t in metrics_tasks {
            // The textfile task removes its file on the way out.
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        ctl_task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), devd_task).await;
        // Dropping the server (inside the aborted task) removes the socket file.
        let _ = ctl_task.await;
        tracing::info!("carpd stopped");
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

    fn note(&self, n: Note) {
        if let Some(tx) = &self.notes {
            let _ = tx.send(n);
        }
    }

    fn on_devd(&mut self, m: DevdMessage) {
        let now = Instant::now();
        match m {
            DevdMessage::Event(ev) => self.core.event(ev.group, ev.state, now),
            DevdMessage::Connected { connection } => {
                if connection > 1 {
                    tracing::info!("devd reconnected: re-reading every group");
                }
                self.core.resync(Trigger::Resync);
            }
            DevdMessage::Lagged { dropped } => {
                tracing::warn!(
                    dropped,
                    "fell behind devd and dropped events: re-reading every group"
                );
                self.core.resync(Trigger::Resync);
            }
            // The client logs the reason and reconnects; the resync follows the reconnect.
            DevdMessage::Disconnected { .. } => {}
        }
    }

    /// Starts, restarts (new settings) or stops the Vault agent to match the configuration.
    fn sync_vault_agent(&mut self) {
        let want = self.loaded.config.vault.as_ref();
        match (want, &self.vault) {
            (None, _) => self.vault = None,
            (Some(v), Some((key, _))) if *key == vault_key(v) => {}
            (Some(v), _) => {
                let access = Access::from_config(v, self.settings.policy);
                self.vault = Some((vault_key(v), agent::spawn(access.session())));
            }
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
                tokio::spawn(async move {
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
            Request::Reload => match self.reload("control socket") {
                Ok(message) => Reply::Reloaded { message },
                Err(message) => Reply::Error { message },
            },
            Request::Nudge { group, state } => {
                let now = Instant::now();
                let known = self.loaded.duties.contains_key(&group);
                let state = state.map_or("-", |s| s.as_str());
                tracing::debug!(%group, state = %state, known, "nudged by the control socket");
                self.core.nudge(group.clone(), now);
                self.note(Note::Nudged { group, at: now });
                Reply::Nudged { known }
            }
        };
        // The client may have gone; nothing to do about it.
        let _ = inc.reply.send(reply);
    }

    fn reload_logged(&mut self, via: &str) {
        let _ = self.reload(via);
    }

    /// Re-reads the configuration and its secrets; swaps them in only when all is valid, then
    /// converges the kernel at once. Returns what to tell the requester.
    fn reload(&mut self, via: &str) -> Result<String, String> {
        let now = Instant::now();
        match load(&self.settings, self.kernel.as_ref()) {
            Ok(loaded) => {
                let groups = loaded.config.groups.len();
                self.core
                    .reconfigure(loaded.config.daemon, loaded.duties.clone(), now);
                self.loaded = loaded;
                let kept_agent = self.vault.as_ref().map(|(k, a)| (k.clone(), a.clone()));
                self.sync_vault_agent();
                self.sync_failover();
                // The same agent: have it re-read the secretsmith file (rotation).
                if let (Some((old, agent)), Some((new, _))) = (kept_agent, &self.vault)
                    && old == *new
                {
                    tokio::spawn(async move {
                        if let Err(e) = agent.reload().await {
                            tracing::error!("Vault settings not reloaded: {e}");
                        }
                    });
                }
                tracing::info!(via = %via, config = %self.settings.config_path.display(), groups, "configuration reloaded");
                self.reconcile_due();
                let applied = match &self.records.last_apply {
                    Some((at, Trigger::Reload, changes, error)) if *at >= now => match error {
                        Some(e) => format!("; applying it failed: {e}"),
                        None if self.settings.apply => {
                            format!("; {} kernel change(s) made", changes.len())
                        }
                        None => format!(
                            "; {} kernel change(s) needed, not applied (--no-apply)",
                            changes.len()
                        ),
                    },
                    _ => "; the kernel already matched".to_string(),
                };
                let message = format!(
                    "{} reloaded: {groups} group(s){applied}",
                    self.settings.config_path.display()
                );
                self.records.last_reload = Some((now, true, message.clone()));
                self.note(Note::Reloaded { ok: true });
                Ok(message)
            }
            Err(e) => {
                let message =
                    format!("reload refused, the running configuration stays in force: {e}");
                tracing::error!(via = %via, "{message}");
                self.records.last_reload = Some((now, false, message.clone()));
                self.note(Note::Reloaded { ok: false });
                Err(message)
            }
        }
    }

    /// Does whatever the core says is due, a bounded number of rounds (each round clears
    /// what it did, so this ends; the bound only guards against a core bug spinning here).
    fn reconcile_due(&mut self) {
        for _ in 0..4 {
            let Some(work) = self.core.due(Instant::now()) else {
                return;
            };
            if let Work::Full(trigger) = &work {
                self.converge(*trigger);
            }
            let started = Instant::now();
            let reading = match &work {
                Work::Full(_) => read_all(self.kernel.as_ref()),
                Work::Groups(groups) => read_groups(self.kernel.as_ref(), groups),
            };
            let at = Instant::now();
            let (trigger, scope) = describe(&work);
            match reading {
                Ok(reading) => {
                    let outcome = self.core.observe(&work, &reading, at);
                    self.tell_failover(&work, &reading);
                    if matches!(work, Work::Full(_)) {
                        // `carpd maintenance` may have changed the ledger meanwhile.
                        self.publish_demotion();
                    }
                    self.report(&outcome);
                    if self.records.last_error.take().is_some() {
                        tracing::info!("kernel reads work again");
                    }
                    self.records.last_reconcile = Some((at, trigger, scope, at - started, None));
                    self.note(Note::Reconciled { work, outcome, at });
                }
                Err(e) => {
                    self.kernel_error(&e);
                    self.core.read_failed(&work, at);
                    self.records.last_reconcile =
                        Some((at, trigger, scope, at - started, Some(e.to_string())));
                    self.note(Note::Reconciled {
                        work,
                        outcome: Outcome::default(),
                        at,
                    });
                }
            }
        }
    }

    /// Hands a kernel reading to the failover scheduler. A full read that does not list a
    /// group means the vhid does not exist (any more).
    fn tell_failover(&mut self, work: &Work, reading: &[(GroupId, Option<CarpState>)]) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        for (g, state) in reading {
            f.local(g, *state);
        }
        if matches!(work, Work::Full(_)) {
            let absent: Vec<GroupId> = f
                .groups()
                .filter(|g| !reading.iter().any(|(r, _)| r == *g))
                .cloned()
                .collect();
            for g in absent {
                f.local(&g, None);
            }
        }
    }

    /// Starts the failover jobs that are due (claims on MASTER, re-checks, readiness).
    fn start_cloud_jobs(&mut self) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let core = &self.core;
        f.start_due(|g| {
            core.groups()
                .get(g)
                .and_then(|v| v.history.back())
                .map(|t| t.id.clone())
        });
    }

    fn on_report(&mut self, r: Report) {
        let Some(f) = self.failover.as_mut() else {
            return;
        };
        let job = match &r {
            Report::Job(j) => Some(j.clone()),
            Report::Vault(_) => None,
        };
        if let (Some(verdict), Some(report)) = (f.on_report(r), job) {
            self.note(Note::Cloud { report, verdict });
        }
        self.demote_if_not_ready();
    }

    /// The demotion ledger of this configuration.
    fn ledger(&self) -> LedgerStore {
        LedgerStore::from_config(&self.loaded.config.maintenance)
    }

    /// After a reboot the kernel's demotion is 0 again: put back what carpd's ledger says it
    /// added (maintenance, not ready). Logged loudly on failure, never fatal.
    fn restore_ledger(&mut self) {
        match self
            .ledger()
            .restore(self.kernel.as_ref(), std::time::SystemTime::now())
        {
            Ok(done) => {
                for (reason, outcome) in done {
                    if outcome.kernel_delta() != 0 {
                        tracing::warn!(
                            reason = reason.as_str(),
                            delta = outcome.kernel_delta(),
                            "demotion re-applied from the ledger (the kernel lost it: reboot or interrupted change)"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!("the demotion ledger could not be restored: {e}");
                self.ledger_error = Some(e.to_string());
            }
        }
        self.publish_demotion();
    }

    /// `carpd_demotion` and `carpd_maintenance` from the ledger and the kernel.
    fn publish_demotion(&self) {
        let st = self.ledger().status(self.kernel.as_ref());
        self.metrics.demotion(st.kernel_demotion, st.carpd_demotion);
        self.metrics.maintenance(st.maintenance);
    }

    /// With `readiness.demotion` set: demote this node while it could not complete a
    /// failover, and stop when it could again. Acts only on a change, and only once every
    /// failover IP was checked at least once (start-up is not "not ready").
    fn demote_if_not_ready(&mut self) {
        let delta = self.loaded.config.readiness.demotion;
        let Some(f) = self.failover.as_ref() else {
            return;
        };
        let want = if delta == 0 {
            false
        } else {
            let Some(ready) = f.settled_readiness() else {
                return;
            };
            !ready
        };
        if self.not_ready_demoted == Some(want) {
            return;
        }
        let store = self.ledger();
        let now = std::time::SystemTime::now();
        let r = if want {
            store
                .add(self.kernel.as_ref(), Reason::NotReady, delta, now)
                .map(|o| o.kernel_delta())
        } else {
            store
                .remove(self.kernel.as_ref(), Reason::NotReady, now)
                .map(|o| -o.kernel_delta())
        };
        match r {
            Ok(changed) => {
                if want {
                    tracing::warn!(
                        delta,
                        "not ready for a failover: demoting this node (readiness.demotion) until it is"
                    );
                } else if changed != 0 {
                    tracing::info!("ready again: the not-ready demotion is removed");
                }
                self.not_ready_demoted = Some(want);
                self.ledger_error = None;
            }
            Err(e) => {
                let text = e.to_string();
                if self.ledger_error.as_deref() != Some(&text) {
                    tracing::error!("readiness demotion not changed: {text}");
                    self.ledger_error = Some(text);
                }
            }
        }
        self.publish_demotion();
    }

    /// Builds, rebuilds or keeps the failover side to match the configuration.
    fn sync_failover(&mut self) {
        let config = &self.loaded.config;
        let readiness = ReadinessSettings {
            interval: config.readiness.interval,
            max_clock_delta: config.readiness.max_clock_delta,
        };
        if let Some(f) = self.failover.as_mut()
            && f.same_setup(config)
        {
            f.reconfigure(config, readiness);
            return;
        }
        let agent = self.vault.as_ref().map(|(_, a)| a.clone());
        self.failover = match Failover::new(
            config,
            readiness,
            super::failover::Deps {
                policy: self.settings.policy,
                agent,
                kernel: self.kernel.clone(),
                reports: self.reports.0.clone(),
                client_options: crate::ovh::ClientOptions {
                    proxy: config.ovh.as_ref().and_then(|o| o.proxy.clone()),
                    ..self.settings.ovh_client.clone()
                },
                metrics: self.metrics.clone(),
                watch_only: !self.settings.apply,
            },
        ) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("failover IPs disabled: {e}");
                None
            }
        };
        // A new scheduler knows nothing yet; the full read that follows start-up and every
        // reload (the core asks for one) tells it each group's state.
    }

    /// Logs a kernel error once while it persists; repeats go to debug.
    fn kernel_error(&mut self, e: &KernelError) {
        let text = e.to_string();
        if self.records.last_error.as_deref() == Some(&text) {
            tracing::debug!("kernel still failing: {text}");
        } else {
            tracing::error!("{text}");
            self.records.last_error = Some(text);
        }
    }

    /// Makes the kernel match the configuration (or, with `--no-apply`, reports that it
    /// does not), as `carpd apply` would.
    fn converge(&mut self, trigger: Trigger) {
        let want = &self.loaded.desired;
        if want.groups.is_empty() && want.sysctls.is_empty() {
            return;
        }
        let k = self.kernel.as_ref();
        let have = match observe(k, want) {
            Ok(h) => h,
            Err(e) => return self.kernel_error(&e),
        };
        let plan = diff(want, &have);
        let now = Instant::now();
        if plan.is_empty() {
            if matches!(trigger, Trigger::Startup | Trigger::Reload) {
                tracing::info!("the kernel matches the configuration");
            }
            self.records.last_drift = None;
            return;
        }
        for n in &plan.notes {
            tracing::info!("{n}");
        }
        let changes: Vec<String> = plan.actions.iter().map(ToString::to_string).collect();
        if !self.settings.apply {
            if self.records.last_drift.as_ref() != Some(&changes) {
                tracing::warn!(
                    changes = %changes.join("; "),
                    "the kernel differs from the configuration; not changing it (--no-apply)"
                );
                self.records.last_drift = Some(changes.clone());
            }
            self.records.last_apply = Some((now, trigger, changes, None));
            return;
        }
        let report = apply(k, &plan);
        let done: Vec<String> = report.done.iter().map(ToString::to_string).collect();
        for a in &done {
            if matches!(trigger, Trigger::Startup | Trigger::Reload) {
                tracing::info!(change = %a, "applied the configuration to the kernel");
            } else {
                tracing::warn!(change = %a, %trigger, "the kernel had drifted from the configuration; restored");
            }
        }
        let error = report.failed.as_ref().map(|(a, e)| format!("{a}: {e}"));
        if let Some((_, e)) = &report.failed {
            self.kernel_error(e);
        }
        self.records.last_apply = Some((now, trigger, done, error));
    }

    fn report(&mut self, outcome: &Outcome) {
        for (group, state) in &outcome.initial {
            tracing::info!(%group, %state, "state at start-up");
            self.metrics.group_state(group, Some(*state));
        }
        for t in &outcome.transitions {
            self.metrics.transition(&t.group, t.to);
            self.metrics.group_state(&t.group, t.to);
        }
        for t in &outcome.transitions {
            let from = t.from.map_or("NONE", CarpState::as_str);
            let to = t.to.map_or("NONE", CarpState::as_str);
            // Losing MASTER to INIT (link down, vhid destroyed) is what pages someone.
            if t.from == Some(CarpState::Master) && t.to != Some(CarpState::Backup) {
                tracing::warn!(xid = %t.id, group = %t.group, from = %from, to = %to, learned = %t.learned, "CARP transition");
            } else {
                tracing::info!(xid = %t.id, group = %t.group, from = %from, to = %to, learned = %t.learned, "CARP transition");
            }
        }
        for d in &outcome.decisions {
            if !d.actions.is_empty() {
                let xid = outcome
                    .transitions
                    .iter()
                    .find(|t| t.group == d.group)
                    .map(|t| t.id.as_str())
                    .unwrap_or("-");
                let actions: Vec<String> = d.actions.iter().map(ToString::to_string).collect();
                tracing::debug!(xid = %xid, group = %d.group, state = %d.state, actions = %actions.join(", "), "decided");
            }
            self.records
                .actions
                .insert(d.group.clone(), d.actions.clone());
        }
        for t in &outcome.transitions {
            if t.to.is_none() {
                self.records.actions.remove(&t.group);
            }
        }
    }

    /// The daemon's view for `carpd status`.
    pub fn view(&self) -> DaemonView {
        let clock = Clock::now();
        let stamp = |at: Instant| clock.stamp(at);
        let groups = self
            .core
            .groups()
            .iter()
            .map(|(id, v)| daemon_view::GroupView {
                group: id.to_string(),
                state: v.state.to_string(),
                since: stamp(v.since),
                learned: v.learned.to_string(),
                managed: self.loaded.duties.contains_key(id),
                events: v.events,
                reconciles: v.reconciles,
                actions: self
                    .records
                    .actions
                    .get(id)
                    .map(|a| a.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                history: v
                    .history
                    .iter()
                    .rev()
                    .map(|t| TransitionView {
                        id: t.id.clone(),
                        at: stamp(t.at),
                        from: t.from.map_or("NONE", CarpState::as_str).to_string(),
                        to: t.to.map_or("NONE", CarpState::as_str).to_string(),
                        learned: t.learned.to_string(),
                    })
                    .collect(),
            })
            .collect();
        let timing = self.core.timing();
        DaemonView {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.loaded.config.node.clone(),
            config: self.settings.config_path.display().to_string(),
            kernel: self.kernel.info().name.to_string(),
            apply: self.settings.apply,
            started_at: Clock::wall_stamp(self.started.wall),
            uptime_s: clock.mono.duration_since(self.started.mono).as_secs(),
            resync_interval_ms: millis(timing.resync_interval),
            coalesce_ms: millis(timing.coalesce),
            next_resync_ms: millis(self.core.until_timer(clock.mono)),
            devd: self.devd_stats.snapshot(),
            events: self.core.events(),
            reconciles: self.core.reconciles(),
            last_reconcile: self.records.last_reconcile.as_ref().map(
                |(at, trigger, scope, took, error)| ReconcileView {
                    at: stamp(*at),
                    trigger: trigger.to_string(),
                    scope: scope.clone(),
                    duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    error: error.clone(),
                },
            ),
            last_apply: self
                .records
                .last_apply
                .as_ref()
                .map(|(at, trigger, changes, error)| ApplyView {
                    at: stamp(*at),
                    trigger: trigger.to_string(),
                    changes: changes.clone(),
                    error: error.clone(),
                }),
            last_reload: self
                .records
                .last_reload
                .as_ref()
                .map(|(at, ok, message)| ReloadView {
                    at: stamp(*at),
                    ok: *ok,
                    message: message.clone(),
                }),
            vault: None,
            recent_events: self
                .core
                .recent_events()
                .iter()
                .rev()
                .map(|e| EventView {
                    at: stamp(e.at),
                    group: e.group.to_string(),
                    state: e.state.to_string(),
                })
                .collect(),
            groups,
            failover_ips: self
                .failover
                .as_ref()
                .map(|f| f.view(&clock))
                .unwrap_or_default(),
            readiness: self.readiness_view(),
            maintenance: serde_json::to_value(self.ledger().status(self.kernel.as_ref())).ok(),
            passwords_from_local_copy: (self.loaded.desired.from_local_copy.iter())
                .map(|(g, why)| format!("{g}: {why}"))
                .collect(),
        }
    }

    fn readiness_view(&self) -> Option<daemon_view::ReadinessView> {
        let f = self.failover.as_ref()?;
        let checks = f.readiness();
        Some(daemon_view::ReadinessView {
            ready: super::readiness::ready(&checks),
            checks,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn recv_signal(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn describe(work: &Work) -> (Trigger, String) {
    match work {
        Work::Full(t) => (*t, "all".to_string()),
        Work::Groups(gs) => {
            let trigger = gs.first().map_or(Trigger::Event, |(_, t)| *t);
            let names: Vec<String> = gs.iter().map(|(g, _)| g.to_string()).collect();
            (trigger, names.join(","))
        }
    }
}

/// Every vhid on every interface. An interface that disappears between the listing and its
/// read is skipped: its groups are gone.
pub fn read_all(k: &dyn Kernel) -> Result<Vec<(GroupId, Option<CarpState>)>, KernelError> {
    let mut out = Vec::new();
    for ifname in k.interfaces()? {
        match k.groups(&ifname) {
            Ok(gs) => out.extend(gs.into_iter().map(|g| (g.id(), Some(g.state)))),
            Err(e) if e.is_errno(libc::ENXIO) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The named groups; `None` for a group (or interface) that does not exist.
pub fn read_groups(
    k: &dyn Kernel,
    groups: &[(GroupId, Trigger)],
) -> Result<Vec<(GroupId, Option<CarpState>)>, KernelError> {
    let mut out = Vec::with_capacity(groups.len());
    for (g, _) in groups {
        match k.group(&g.ifname, g.vhid) {
            Ok(found) => out.push((g.clone(), found.map(|kg| kg.state))),
            Err(e) if e.is_errno(libc::ENXIO) => out.push((g.clone(), None)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
