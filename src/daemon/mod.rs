//! `carpd run`: the daemon's wiring. The decisions are the controller's
//! ([`crate::controller::machine::Controller`]); this module connects it to the world:
//!
//! - [`event_loop`]: the one loop on a current-thread runtime: devd, the control socket,
//!   signals, timers, job ends and reloads become controller inputs; the stop sequence;
//! - [`reconcile`]: the effect executor: kernel reads (after converging the kernel on the
//!   configuration), jobs started and cancelled, what a reading showed logged once;
//! - [`reload`]: SIGHUP and `carpd reload`: the new configuration is loaded off the
//!   runtime thread, validated, then applied in place;
//! - [`jobs`]: supervised cloud jobs (owned, cancellable at safe points, phases visible);
//! - [`failover`], [`cloud`]: the OVH side: client, fences, claims and checks, their records;
//! - [`marker`]: the open-window marker a crash or an exhausted stop grace leaves behind;
//! - [`boot`]: the boot order: `net.inet.carp.allow=1` once the ledger and the configuration
//!   are applied.
//!
//! Must not: believe an event, log a transition twice, log a secret, stop on a kernel error
//! (it is logged once, shown in status, and retried at the next re-read), leave a detached
//! task, or abandon a claim inside its open window.

pub mod boot;
pub mod cloud;
mod event_loop;
pub mod failover;
pub mod jobs;
pub mod marker;
mod reconcile;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::carp::{CarpState, GroupId};
use crate::config::{self, Config, ConfigError};
use crate::control::server::{BindError, ControlServer};
use crate::controller::core::{Outcome, Trigger, Work};
use crate::controller::duties::{Duties, GroupDuties};
use crate::controller::machine::Controller;
use crate::devd::{ClientConfig, DevdStats};
use crate::kernel::Kernel;
use crate::observe::daemon_view::{
    self, ApplyView, Clock, DaemonView, EventView, ReconcileView, ReloadView, TransitionView,
};
use crate::observe::metrics::Metrics;
use crate::ovh::ClientOptions;
use crate::plan::Desired;
use crate::plan::gather::{NotApplicable, desired_for};
use crate::secrets::SecretPolicy;
use crate::vault::agent::{self, AgentHandle};
use crate::vault::blocking::Access;

use crate::controller::claims::Verdict;
use crate::controller::ledger::{LedgerStore, Reason};
use failover::{Failover, ReadinessSettings, Report};
use jobs::Jobs;
use marker::Marker;

pub use reconcile::{read_all, read_groups};

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
    /// A kernel reading was handed to the controller; `at` is when it decided.
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
        report: Box<cloud::JobReport>,
        verdict: Verdict,
    },
}

/// Why a configuration cannot be taken, at start-up or on reload.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigError),
    #[error("the configuration does not fit this kernel:\n{}", .0.join("\n"))]
    Kernel(Vec<String>),
    #[error("cannot read the passwords:\n{}", .0.join("\n"))]
    Secrets(Vec<String>),
    #[error(transparent)]
    Bind(#[from] BindError),
}

impl From<NotApplicable> for StartError {
    fn from(e: NotApplicable) -> StartError {
        match e {
            NotApplicable::Kernel(e) => StartError::Kernel(vec![e.to_string()]),
            NotApplicable::Fit(list) => StartError::Kernel(list),
            NotApplicable::Secrets(list) => StartError::Secrets(list),
        }
    }
}

/// A checked configuration with its secrets read: everything a reload swaps at once.
struct Loaded {
    config: Config,
    desired: Desired,
    duties: Duties,
}

/// Loads, checks and reads the secrets of the configuration. Blocking (files, and Vault for
/// passwords): the daemon runs it on a blocking thread, never on the runtime thread.
fn load(settings: &Settings, k: &dyn Kernel) -> Result<Loaded, StartError> {
    let config = config::load(&settings.config_path)?;
    let desired = desired_for(&config, k, settings.policy)?;
    let duties = duties_of(&config);
    Ok(Loaded {
        config,
        desired,
        duties,
    })
}

/// The groups the configuration names (`groups`, and those `failover_ips` follow), and the
/// failover IPs that follow each.
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
}

/// The running daemon.
pub struct Daemon {
    settings: Settings,
    kernel: Arc<dyn Kernel>,
    loaded: Loaded,
    /// The one decision core.
    controller: Controller,
    /// Failover IPs and the OVH client, when the configuration has any.
    failover: Option<Failover>,
    /// Every claim and check, supervised.
    jobs: Jobs,
    /// Helper tasks (warm-up, Vault views, status replies, agent reloads): owned, aborted
    /// when the daemon ends. They change nothing outside carpd.
    aux: JoinSet<()>,
    /// The open-window marker in the state directory.
    marker: Arc<Marker>,
    /// Prometheus metrics (served or written when `metrics:` says so).
    metrics: Metrics,
    /// The last ledger problem logged, so a persistent one is logged once.
    ledger_error: Option<String>,
    reports: (
        mpsc::UnboundedSender<Report>,
        Option<mpsc::UnboundedReceiver<Report>>,
    ),
    server: Option<ControlServer>,
    devd_stats: Arc<DevdStats>,
    started: Clock,
    records: Records,
    notes: Option<mpsc::UnboundedSender<Note>>,
    hup: Option<Signal>,
    /// The Vault agent keeping a token alive, when `vault:` is configured.
    vault: Option<(VaultAccessKey, AgentHandle)>,
    /// Set once a stop was asked.
    stopping: bool,
    /// The reload being loaded off the runtime thread, and the one asked meanwhile (its
    /// requesters share the next load).
    reloads: JoinSet<reload::Loading>,
    queued_reload: Option<(
        &'static str,
        Vec<tokio::sync::oneshot::Sender<crate::control::Reply>>,
    )>,
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
        let kernel: Arc<dyn Kernel> = Arc::from(kernel);
        // Reading Vault passwords runs a Vault session on a small runtime of its own, which
        // cannot be started from this runtime's thread: do it on a scoped thread. Nothing
        // else runs yet (the control socket is not served before this returns).
        let loaded = std::thread::scope(|s| {
            s.spawn(|| load(&settings, kernel.as_ref()))
                .join()
                .unwrap_or_else(|_| {
                    Err(StartError::Secrets(vec![
                        "reading the passwords panicked".to_string(),
                    ]))
                })
        })?;
        let server = ControlServer::bind(&settings.control_socket)?;
        let started = Clock::now();
        // Correlation ids: unique per run without coordination (pid and start second).
        let secs = started
            .wall
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = format!("{:x}{:x}", std::process::id(), secs & 0xffff);
        let mut controller = Controller::new(
            loaded.config.daemon,
            loaded.duties.clone(),
            failover::ips_of(&loaded.config),
            failover::policy_of(&loaded.config),
            run_id,
            started.mono,
        );
        controller.set_watch_only(!settings.apply);
        let marker = Arc::new(Marker::new(&loaded.config.maintenance.state_dir));
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Daemon {
            settings,
            kernel,
            loaded,
            controller,
            failover: None,
            jobs: Jobs::default(),
            aux: JoinSet::new(),
            marker,
            metrics: Metrics::new(),
            ledger_error: None,
            reports: (tx, Some(rx)),
            server: Some(server),
            devd_stats: Arc::new(DevdStats::default()),
            started,
            records: Records::default(),
            notes: None,
            hup: None,
            vault: None,
            stopping: false,
            reloads: JoinSet::new(),
            queued_reload: None,
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

    fn note(&self, n: Note) {
        if let Some(tx) = &self.notes {
            let _ = tx.send(n);
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
                // Owned by the task set; the old agent (if any) ends when its handle drops.
                let (handle, task) = agent::new(access.session());
                self.aux.spawn(task);
                self.vault = Some((vault_key(v), handle));
            }
        }
    }

    fn readiness_settings(&self) -> ReadinessSettings {
        let config = &self.loaded.config;
        ReadinessSettings {
            interval: config.readiness.interval,
            max_clock_delta: config.readiness.max_clock_delta,
        }
    }

    /// Builds the failover side when the configuration has failover IPs and none exists
    /// yet; a reload changes an existing one in place ([`reload`]).
    fn sync_failover(&mut self) {
        if self.failover.is_some() {
            return;
        }
        let readiness = self.readiness_settings();
        let agent = self.vault.as_ref().map(|(_, a)| a.clone());
        self.failover = match Failover::new(
            &self.loaded.config,
            readiness,
            failover::Deps {
                policy: self.settings.policy,
                agent,
                kernel: self.kernel.clone(),
                reports: self.reports.0.clone(),
                client_options: self.settings.ovh_client.clone(),
                metrics: self.metrics.clone(),
                watch_only: !self.settings.apply,
            },
            Some(self.marker.clone()),
        ) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("failover IPs disabled: {e}");
                None
            }
        };
        if let Some(f) = &mut self.failover {
            f.sync_fences(self.controller.claims());
            f.set_passwords_from_local_copy(self.loaded.desired.from_local_copy.clone());
            self.aux.spawn(f.warm_up());
        }
    }

    /// Something a helper task sent back (the Vault agent's view).
    fn on_report(&mut self, r: Report) {
        if let Some(f) = self.failover.as_mut() {
            f.on_report(r);
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
                            "demotion re-applied from the ledger (the kernel lost it: reboot, carp.ko reloaded or interrupted change)"
                        );
                    }
                }
            }
            Err(e) => {
                // Called at every full resync: log a persistent problem once.
                let text = e.to_string();
                if self.ledger_error.as_deref() != Some(&text) {
                    tracing::error!("the demotion ledger could not be restored: {text}");
                    self.ledger_error = Some(text);
                }
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
        let ready = self.failover.as_ref().map(Failover::settled_readiness);
        let Some(ready) = ready else {
            return;
        };
        let demotion = self.loaded.config.readiness.demotion;
        self.drive(crate::controller::machine::Input::Readiness { ready, demotion });
    }

    /// Carries out [`crate::controller::machine::Effect::Demote`]: the ledger first, then
    /// the kernel; returns whether it worked.
    fn demote(&mut self, on: bool, delta: u32) -> bool {
        let store = self.ledger();
        let now = std::time::SystemTime::now();
        let r = if on {
            store
                .add(self.kernel.as_ref(), Reason::NotReady, delta, now)
                .map(|o| o.kernel_delta())
        } else {
            store
                .remove(self.kernel.as_ref(), Reason::NotReady, now)
                .map(|o| -o.kernel_delta())
        };
        let ok = match r {
            Ok(changed) => {
                if on {
                    tracing::warn!(
                        delta,
                        "not ready for a failover: demoting this node (readiness.demotion) until it is"
                    );
                } else if changed != 0 {
                    tracing::info!("ready again: the not-ready demotion is removed");
                }
                self.ledger_error = None;
                true
            }
            Err(e) => {
                let text = e.to_string();
                if self.ledger_error.as_deref() != Some(&text) {
                    tracing::error!("readiness demotion not changed: {text}");
                    self.ledger_error = Some(text);
                }
                false
            }
        };
        self.publish_demotion();
        ok
    }

    /// The daemon's view for `carpd status`.
    pub fn view(&self) -> DaemonView {
        let clock = Clock::now();
        let stamp = |at: Instant| clock.stamp(at);
        let groups = self
            .controller
            .core()
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
                actions: self.group_actions(id),
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
        let timing = self.controller.core().timing();
        let failover_ips = self
            .failover
            .as_ref()
            .map(|f| f.view(&clock, self.controller.claims(), &self.jobs.view()))
            .unwrap_or_default();
        DaemonView {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: self.loaded.config.node.clone(),
            config: self.settings.config_path.display().to_string(),
            kernel: self.kernel.info().name.to_string(),
            apply: self.settings.apply,
            stopping: self.stopping,
            passwords_from_local_copy: self
                .loaded
                .desired
                .from_local_copy
                .iter()
                .map(|(g, why)| format!("{g}: {why}"))
                .collect(),
            started_at: Clock::wall_stamp(self.started.wall),
            uptime_s: clock.mono.duration_since(self.started.mono).as_secs(),
            resync_interval_ms: millis(timing.resync_interval),
            coalesce_ms: millis(timing.coalesce),
            next_resync_ms: millis(self.controller.core().until_timer(clock.mono)),
            devd: self.devd_stats.snapshot(),
            events: self.controller.core().events(),
            reconciles: self.controller.core().reconciles(),
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
                .controller
                .core()
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
            failover_ips: failover_ips.clone(),
            failovers: crate::observe::progress::failovers(&failover_ips),
            readiness: self.readiness_view(),
            maintenance: serde_json::to_value(self.ledger().status(self.kernel.as_ref())).ok(),
        }
    }

    /// What the controller is doing for `group`'s failover IPs, for status.
    fn group_actions(&self, group: &GroupId) -> Vec<String> {
        let claims = self.controller.claims();
        crate::controller::duties::failover_ips(group, &self.loaded.duties)
            .iter()
            .filter_map(|ip| {
                let s = claims.get(ip)?;
                match s.in_flight {
                    Some(f) => Some(format!(
                        "{} failover IP {ip} (running)",
                        if f.kind == crate::controller::claims::JobKind::Claim {
                            "claim"
                        } else {
                            "check"
                        }
                    )),
                    None if s.wants_claim() => Some(format!("claim failover IP {ip} (due)")),
                    None => None,
                }
            })
            .collect()
    }

    fn readiness_view(&self) -> Option<daemon_view::ReadinessView> {
        let f = self.failover.as_ref()?;
        let checks = f.readiness();
        Some(daemon_view::ReadinessView {
            ready: crate::controller::readiness::ready(&checks),
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
