//! The daemon's failover IPs: the OVH client, the fence of each IP, and what `carpd status`,
//! the metrics and readiness need to know about them.
//!
//! It decides nothing: the controller ([`crate::controller::machine`]) says which job to
//! start; [`Failover::start`] builds it (client, fence, progress) and hands it to the
//! supervisor ([`super::jobs`]); [`Failover::finished`] records and logs what it did.
//!
//! Logging follows the daemon's rule: quiet when healthy (checks that find the IP where it
//! should be log nothing above debug), one line per claim with its timings, a loud error when
//! the IP is found taken while this node is MASTER, and a repeated failure logged once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::carp::{CarpState, GroupId};
use crate::config::Config;
use crate::config::ovh::{FailoverIp, FailoverMode};
use crate::controller::claims::{ClaimPolicy, Claims, Done, Job, JobKind, Verdict};
use crate::kernel::Kernel;
use crate::observe::daemon_view::{ClaimView, Clock, FailoverIpView};
use crate::observe::metrics::{ClaimMetric, Metrics};
use crate::ovh::failover::{ClaimOptions, ClaimResult, SharedReads};
use crate::ovh::{Client, ClientOptions};
use crate::secrets::SecretPolicy;
use crate::vault::agent::{AgentHandle, AgentView};

use crate::controller::readiness::{self, Check, Evidence, IpEvidence};

use super::cloud::{self, Generation, JobFence, JobReport, NOT_MASTER, RightsCache, SetupError};
use super::jobs::{Jobs, Progress};
use super::marker::Marker;
use crate::ovh::rights::Verdict as Rights;

/// Readiness knobs (the `readiness:` section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessSettings {
    /// While not MASTER: how often each IP is located (and readiness refreshed).
    pub interval: Duration,
    pub max_clock_delta: Duration,
}

impl Default for ReadinessSettings {
    fn default() -> ReadinessSettings {
        ReadinessSettings {
            interval: Duration::from_secs(30),
            max_clock_delta: Duration::from_secs(10),
        }
    }
}

/// Requests of the rate budget that periodic checks leave for claims.
const CLAIM_RESERVE: f64 = 8.0;

/// What [`Failover`] works with, from the daemon.
pub struct Deps {
    pub policy: SecretPolicy,
    /// The daemon's Vault agent, for OVH credentials kept in Vault.
    pub agent: Option<AgentHandle>,
    /// Re-read by the fence before every mutating step.
    pub kernel: Arc<dyn Kernel>,
    /// Where the Vault agent's views come back.
    pub reports: mpsc::UnboundedSender<Report>,
    pub client_options: ClientOptions,
    pub metrics: Metrics,
    /// `carpd run --no-apply`: locate and report, never claim.
    pub watch_only: bool,
}

/// What the helper tasks of [`Failover`] send back to the loop.
#[derive(Debug)]
pub enum Report {
    Vault(AgentView),
}

/// The last claim of one IP, for status and metrics.
#[derive(Clone, Debug)]
struct LastClaim {
    at: Instant,
    report: JobReport,
}

#[derive(Clone, Debug, Default)]
struct IpRecord {
    last_claim: Option<LastClaim>,
    evidence: IpEvidence,
    /// The last error logged at error level, so a persistent one is logged once.
    logged_error: Option<String>,
    /// The missing rights last logged, so they are logged once per change.
    logged_rights: Option<Vec<String>>,
}

/// What the daemon needs to know to build the OVH side again on reload.
type SetupKey = String;

/// Failover IPs and the OVH client of a running daemon.
pub struct Failover {
    key: SetupKey,
    /// The client new jobs use. A reload that changes the OVH setup replaces it; jobs that
    /// run keep theirs until they end.
    api: Arc<Client>,
    /// The credential's rights as last read, shared by the jobs of `api`.
    rights: Arc<RightsCache>,
    /// vMAC reads shared by the jobs of `api` (one listing serves every IP of a failover).
    shared: Arc<SharedReads>,
    /// Claims running at once (`ovh.claim_concurrency`).
    slots: Arc<tokio::sync::Semaphore>,
    concurrency: usize,
    opts: ClaimOptions,
    ips: BTreeMap<IpAddr, FailoverIp>,
    fences: BTreeMap<IpAddr, Generation>,
    records: BTreeMap<IpAddr, IpRecord>,
    readiness: ReadinessSettings,
    kernel: Arc<dyn Kernel>,
    reports: mpsc::UnboundedSender<Report>,
    vault: Option<AgentHandle>,
    vault_view: Option<AgentView>,
    metrics: Metrics,
    marker: Option<Arc<Marker>>,
    passwords_from_local_copy: Vec<(GroupId, String)>,
    watch_only: bool,
    /// Watch only: the generation in which "would claim" was last said, per IP.
    told_would_claim: BTreeMap<IpAddr, u64>,
}

/// A short description of the OVH setup: a reload that changes it builds a new client.
fn setup_key(config: &Config) -> Option<SetupKey> {
    let ovh = config.ovh.as_ref()?;
    if config.failover_ips.is_empty() {
        return None;
    }
    Some(format!(
        "{}|{:?}|{:?}",
        ovh.endpoint.base(),
        ovh.credentials,
        config.vault
    ))
}

/// The claim scheduler's timing rules from the configuration.
pub fn policy_of(config: &Config) -> ClaimPolicy {
    let ovh = config.ovh.as_ref();
    ClaimPolicy {
        recheck: ovh.map_or(crate::config::ovh::DEFAULT_RECHECK, |o| o.recheck_interval),
        refresh: config.readiness.interval,
        hold_down: ovh.map_or(crate::config::ovh::DEFAULT_HOLD_DOWN, |o| o.hold_down),
        refused_retry: ovh.map_or(crate::config::ovh::DEFAULT_REFUSED_RETRY, |o| {
            o.refused_retry
        }),
        ..ClaimPolicy::default()
    }
}

/// Every failover IP with the group it follows.
pub fn ips_of(config: &Config) -> Vec<(IpAddr, GroupId)> {
    config
        .failover_ips
        .iter()
        .map(|f| (IpAddr::V4(f.ip), f.group.clone()))
        .collect()
}

/// The failover IPs whose configuration differs between `old` and `new` (present in both;
/// added and removed ones are the controller's business).
pub fn changed_ips(old: &Config, new: &Config) -> std::collections::BTreeSet<IpAddr> {
    let before: BTreeMap<IpAddr, &FailoverIp> = old
        .failover_ips
        .iter()
        .map(|f| (IpAddr::V4(f.ip), f))
        .collect();
    let mut changed: std::collections::BTreeSet<IpAddr> = new
        .failover_ips
        .iter()
        .filter(|f| before.get(&IpAddr::V4(f.ip)).is_some_and(|o| *o != *f))
        .map(|f| IpAddr::V4(f.ip))
        .collect();
    // Another OVH account or endpoint: the same IP names another thing.
    if setup_key(old) != setup_key(new) {
        changed.extend(
            new.failover_ips
                .iter()
                .map(|f| IpAddr::V4(f.ip))
                .filter(|ip| before.contains_key(ip)),
        );
    }
    changed
}

impl Failover {
    /// The failover side of `config`, or `None` when it has no failover IPs. Must be called
    /// inside a tokio runtime (a Vault credential source may start an agent).
    pub fn new(
        config: &Config,
        readiness: ReadinessSettings,
        deps: Deps,
        marker: Option<Arc<Marker>>,
    ) -> Result<Option<Failover>, SetupError> {
        let Deps {
            policy,
            agent,
            kernel,
            reports,
            client_options,
            metrics,
            watch_only,
        } = deps;
        let (Some(key), Some(_)) = (setup_key(config), config.ovh.as_ref()) else {
            return Ok(None);
        };
        let api = build_client(config, policy, agent.clone(), client_options)?;
        let mut me = Failover {
            key,
            api: Arc::new(api),
            rights: Arc::new(RightsCache::new(readiness.interval)),
            shared: Arc::new(SharedReads::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(
                crate::config::ovh::DEFAULT_CLAIM_CONCURRENCY,
            )),
            concurrency: crate::config::ovh::DEFAULT_CLAIM_CONCURRENCY,
            opts: ClaimOptions::default(),
            fences: BTreeMap::new(),
            records: BTreeMap::new(),
            ips: BTreeMap::new(),
            readiness,
            kernel,
            reports,
            vault: agent,
            vault_view: None,
            metrics,
            marker,
            passwords_from_local_copy: Vec::new(),
            watch_only,
            told_would_claim: BTreeMap::new(),
        };
        me.set_ips(config);
        Ok(Some(me))
    }

    fn set_ips(&mut self, config: &Config) {
        self.ips = config
            .failover_ips
            .iter()
            .map(|f| (IpAddr::V4(f.ip), f.clone()))
            .collect();
        if let Some(ovh) = &config.ovh {
            self.opts = cloud::claim_options(ovh);
            if ovh.claim_concurrency != self.concurrency {
                // Running claims keep the permits of the old limit until they end.
                self.concurrency = ovh.claim_concurrency;
                self.slots = Arc::new(tokio::sync::Semaphore::new(ovh.claim_concurrency));
            }
        }
        self.records.retain(|ip, _| self.ips.contains_key(ip));
        for ip in self.ips.keys() {
            self.metrics.failover_ip(&ip.to_string());
        }
    }

    /// A reload, in place: new IPs, timings, and a new client when the OVH setup changed
    /// (running jobs keep the one they started with). Returns an error when the new client
    /// cannot be built; the old one then stays.
    pub fn reconfigure(
        &mut self,
        config: &Config,
        readiness: ReadinessSettings,
        policy: SecretPolicy,
        client_options: ClientOptions,
    ) -> Result<(), SetupError> {
        if setup_key(config).as_deref() != Some(self.key.as_str()) {
            let api = build_client(config, policy, self.vault.clone(), client_options)?;
            self.api = Arc::new(api);
            self.rights = Arc::new(RightsCache::new(readiness.interval));
            self.shared = Arc::new(SharedReads::new());
            self.key = setup_key(config).unwrap_or_default();
            self.vault_view = None;
        }
        self.readiness = readiness;
        self.set_ips(config);
        Ok(())
    }

    /// The Vault agent the client reads credentials through, when it changes on reload.
    pub fn set_agent(&mut self, agent: Option<AgentHandle>) {
        self.vault = agent;
    }

    /// Loads credentials, the time delta and a connection ahead of the first claim; the
    /// caller owns the returned future (a supervised task).
    pub fn warm_up(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let api = self.api.clone();
        async move {
            if let Err(e) = api.warm_up().await {
                tracing::warn!("OVH not reachable yet (carpd keeps trying): {e}");
            }
        }
    }

    /// Whether the OVH request budget leaves room for background checks: they keep a
    /// reserve for claims, so a claim never waits behind them.
    pub fn checks_allowed(&self) -> bool {
        self.api.rate_headroom() >= CLAIM_RESERVE
    }

    /// The fences follow the controller: each IP's generation while its group is MASTER
    /// here, [`NOT_MASTER`] otherwise. Called after every input the controller handled.
    pub fn sync_fences(&mut self, claims: &Claims) {
        let fences = &mut self.fences;
        fences.retain(|ip, _| claims.get(ip).is_some());
        for (ip, s) in claims.ips() {
            let value = if s.is_master() {
                s.generation
            } else {
                NOT_MASTER
            };
            fences
                .entry(*ip)
                .or_insert_with(|| Arc::new(AtomicU64::new(NOT_MASTER)))
                .store(value, Ordering::SeqCst);
        }
    }

    /// Starts `job` under the supervisor. `xid` correlates a claim with the transition
    /// that caused it.
    pub fn start(&mut self, job: Job, jobs: &mut Jobs, xid: Option<String>) {
        let Some(f) = self.ips.get(&job.ip).cloned() else {
            // Not configured any more (the controller retired it): nothing to run.
            tracing::debug!(ip = %job.ip, "job for an IP no longer configured not started");
            return;
        };
        let Some(fence) = self.fences.get(&job.ip).cloned() else {
            return;
        };
        if job.kind == JobKind::Claim {
            tracing::info!(
                xid = %xid.unwrap_or_else(|| "-".into()),
                ip = %job.ip,
                group = %job.group,
                hint = %job.hint.as_ref().map_or("none".to_string(), ToString::to_string),
                "MASTER: claiming the failover IP"
            );
        }
        let progress = Arc::new(Progress::new(job.ip, self.marker.clone()));
        let fence = JobFence {
            fence,
            generation: job.generation,
            group: job.group.clone(),
            kernel: self.kernel.clone(),
            progress: progress.clone(),
        };
        let work = cloud::run_job(
            cloud::JobContext {
                api: self.api.clone(),
                rights: self.rights.clone(),
                shared: self.shared.clone(),
                slots: self.slots.clone(),
            },
            f,
            self.opts,
            job.clone(),
            fence,
        );
        let cancelled = job.clone();
        jobs.spawn(&job, progress, work, move || {
            JobReport::new(cancelled, Done::Cancelled)
        });
    }

    /// Asks the Vault agent for its view (readiness); the answer comes back as a
    /// [`Report::Vault`] on the reports channel. The caller owns the returned future.
    pub fn refresh_vault_view(
        &self,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let rx = self.vault.as_ref().and_then(AgentHandle::try_view)?;
        let tx = self.reports.clone();
        Some(async move {
            if let Ok(Ok(v)) = tokio::time::timeout(Duration::from_secs(5), rx).await {
                let _ = tx.send(Report::Vault(v));
            }
        })
    }

    /// Something a helper task sent back.
    pub fn on_report(&mut self, r: Report) {
        match r {
            Report::Vault(v) => {
                // The agent counts its errors by kind; count what is new since its last view.
                for (kind, n) in &v.errors {
                    let seen = self
                        .vault_view
                        .as_ref()
                        .and_then(|old| old.errors.get(kind))
                        .copied()
                        .unwrap_or(0);
                    for _ in seen..*n {
                        self.metrics.vault_error(kind);
                    }
                }
                self.vault_view = Some(v);
                self.publish_readiness();
            }
        }
    }

    /// A job ended and the controller has seen it (`verdict`, and `claims` after it):
    /// record, count and log what deserves it.
    pub fn finished(&mut self, r: JobReport, verdict: &Verdict, claims: &Claims) {
        let now = Instant::now();
        if !self.ips.contains_key(&r.ip) {
            return;
        }
        let rec = self.records.entry(r.ip).or_default();
        rec.evidence.ip = r.ip.to_string();
        if r.error.is_none() {
            rec.evidence.ok_at = Some(r.ended);
            rec.evidence.error = None;
            if rec.logged_error.take().is_some() {
                tracing::info!(ip = %r.ip, "OVH answers again for the failover IP");
            }
        } else if let Some(e) = &r.error {
            rec.evidence.error = Some((e.kind(), e.to_string()));
        }
        if let Some(own) = r.own_vmac
            && let Some(FailoverMode::VirtualMac(t)) = self.ips.get(&r.ip).map(|f| &f.mode)
        {
            rec.evidence.own_vmac = Some((own.exists, own.ips, t.mac.clone()));
        }
        if let Some(v) = &r.rights {
            rec.evidence.rights = Some(v.clone());
            let rules: Vec<String> = match v {
                // Each line starts with "METHOD /path (to ...": the rule is its head.
                Rights::Missing(lines) => lines
                    .iter()
                    .map(|l| l.split(" (").next().unwrap_or(l).to_string())
                    .collect(),
                _ => Vec::new(),
            };
            self.metrics.rights_missing(&r.ip.to_string(), &rules);
            match v {
                Rights::Missing(lines) if rec.logged_rights.as_ref() != Some(lines) => {
                    tracing::error!(ip = %r.ip, group = %r.group, "not ready: {}", crate::ovh::rights::fix(lines));
                    rec.logged_rights = Some(lines.clone());
                }
                Rights::Granted if rec.logged_rights.take().is_some() => {
                    tracing::info!(ip = %r.ip, "the OVH credential now grants every call of a claim");
                }
                _ => {}
            }
        }
        let took = r.ended - r.started;
        match (&r.kind, &r.done) {
            (JobKind::Claim, Done::Moved { before }) => {
                let o = r.outcome.as_ref();
                tracing::info!(
                    ip = %r.ip,
                    group = %r.group,
                    was = %before.as_ref().map_or("unknown".to_string(), ToString::to_string),
                    took_ms = took.as_millis() as u64,
                    first_mutation_ms = o.and_then(|o| o.first_mutation_after).map_or(0.0, cloud::ms),
                    outage_ms = o.and_then(|o| o.outage).map_or(0.0, cloud::ms),
                    "failover IP claimed: bound here and verified"
                );
            }
            (JobKind::Claim, Done::Located { .. }) => {
                tracing::info!(ip = %r.ip, group = %r.group, "failover IP already bound here");
            }
            (JobKind::Claim, Done::Cancelled) => {
                let before = match r.outcome.as_ref().map(|o| &o.result) {
                    Some(ClaimResult::Cancelled { before }) => before.clone(),
                    _ => "a mutating step".into(),
                };
                tracing::info!(ip = %r.ip, group = %r.group, before = %before, "claim stopped: no longer MASTER");
            }
            (_, Done::Failed { mutated } | Done::Refused { mutated }) => {
                let text = r
                    .error
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                if rec.logged_error.as_deref() == Some(&text) {
                    tracing::debug!(ip = %r.ip, "still failing: {text}");
                } else {
                    tracing::error!(ip = %r.ip, group = %r.group, kind = ?r.kind, changed_something = mutated, "{text}");
                    rec.logged_error = Some(text);
                }
            }
            (JobKind::Check, _) => {
                tracing::debug!(ip = %r.ip, found = %r.found.as_ref().map_or("?".to_string(), ToString::to_string), "failover IP located");
            }
        }
        if self.watch_only
            && let (Done::Located { here: false, found }, Some(s)) = (&r.done, claims.get(&r.ip))
            && s.is_master()
            && self.told_would_claim.get(&r.ip) != Some(&s.generation)
        {
            tracing::warn!(ip = %r.ip, group = %r.group, found = %found, "MASTER here but the failover IP is elsewhere: carpd would claim it, but --no-apply leaves OVH alone");
            self.told_would_claim.insert(r.ip, s.generation);
        }
        if let Verdict::TakenWhileMaster { found, reclaim_at } = verdict {
            let wait = reclaim_at.saturating_duration_since(now);
            tracing::error!(
                ip = %r.ip,
                group = %r.group,
                found = %found,
                reclaim_in_s = wait.as_secs(),
                "failover IP taken from this node while it is MASTER: another node claims it too (split brain? check the CARP link between the routers) or it was moved by hand; claiming it back"
            );
        }
        if let Some(kind) = r.error_kind() {
            self.metrics.ovh_error(kind);
        }
        let ip_s = r.ip.to_string();
        if r.kind == JobKind::Claim {
            let result = match &r.done {
                Done::Moved { .. } => ClaimMetric::Claimed,
                Done::Located { .. } => ClaimMetric::AlreadyBound,
                Done::Cancelled => ClaimMetric::Cancelled,
                Done::Failed { .. } | Done::Refused { .. } => ClaimMetric::Failed,
            };
            let outage = r.outcome.as_ref().and_then(|o| o.outage);
            self.metrics.claim(&ip_s, result, took, outage);
            rec.last_claim = Some(LastClaim { at: now, report: r });
        }
        if let Verdict::TakenWhileMaster { reclaim_at, .. } = verdict
            && *reclaim_at > now
        {
            self.metrics
                .claim(&ip_s, ClaimMetric::HeldDown, Duration::ZERO, None);
        }
        self.publish_readiness();
    }

    /// Readiness into the metrics (`carpd_ready{check}`, `carpd_ready_all`).
    fn publish_readiness(&self) {
        let checks = self.readiness();
        for c in &checks {
            self.metrics.readiness(&c.name, c.ok);
        }
        self.metrics.ready(readiness::ready(&checks));
    }

    /// Whether this node is ready, once every failover IP was checked at least once (and
    /// Vault, when used, answered); `None` before that.
    pub fn settled_readiness(&self) -> Option<bool> {
        let all_checked = self.ips.keys().all(|ip| {
            self.records
                .get(ip)
                .is_some_and(|r| r.evidence.ok_at.is_some() || r.evidence.error.is_some())
        });
        let vault_known = self.vault.is_none() || self.vault_view.is_some();
        (all_checked && vault_known).then(|| readiness::ready(&self.readiness()))
    }

    /// The readiness checks, now.
    pub fn readiness(&self) -> Vec<Check> {
        let ips: Vec<IpEvidence> = self
            .ips
            .keys()
            .map(|ip| {
                self.records
                    .get(ip)
                    .map(|r| r.evidence.clone())
                    .unwrap_or_else(|| IpEvidence {
                        ip: ip.to_string(),
                        ..IpEvidence::default()
                    })
            })
            .collect();
        readiness::assess(&Evidence {
            now: Instant::now(),
            // Two intervals and a grace: one slow or lost check is not "not ready".
            stale_after: self.readiness.interval * 2 + Duration::from_secs(5),
            ips: &ips,
            vault: self.vault.as_ref().and(self.vault_view.as_ref()),
            clock_delta: self.api.time_delta(),
            max_clock_delta: self.readiness.max_clock_delta,
            clock_needed: self.api.signs_with_time().unwrap_or(true),
            passwords_from_local_copy: &self.passwords_from_local_copy,
        })
    }

    /// The CARP passwords the last load took from the local copy (readiness says so).
    pub fn set_passwords_from_local_copy(&mut self, list: Vec<(GroupId, String)>) {
        self.passwords_from_local_copy = list;
        self.publish_readiness();
    }

    /// Status of every failover IP.
    pub fn view(
        &self,
        clock: &Clock,
        claims: &Claims,
        running: &BTreeMap<IpAddr, super::jobs::RunningView>,
    ) -> Vec<FailoverIpView> {
        let now = clock.mono;
        let hold_down = claims.policy().hold_down;
        self.ips
            .iter()
            .map(|(ip, f)| {
                let s = claims.get(ip);
                let job = running.get(ip);
                let rec = self.records.get(ip);
                let (mode, ours) = match &f.mode {
                    FailoverMode::VirtualMac(t) => ("virtual_mac", t.mac.clone()),
                    FailoverMode::IpMove(t) => ("ip_move", t.service.clone()),
                };
                let local = s.and_then(|s| s.local);
                FailoverIpView {
                    ip: ip.to_string(),
                    group: f.group.to_string(),
                    mode: mode.to_string(),
                    ours,
                    local_state: local.map(|s| s.to_string()),
                    expected: match local {
                        Some(CarpState::Master) => "here",
                        _ => "not this node's business",
                    }
                    .to_string(),
                    actual: s
                        .and_then(|s| s.binding.as_ref())
                        .map(|(found, _, _)| found.to_string()),
                    bound_here: s.and_then(|s| s.binding.as_ref()).map(|(_, here, _)| *here),
                    checked_at: s
                        .and_then(|s| s.binding.as_ref())
                        .map(|(_, _, at)| clock.stamp(*at)),
                    in_flight: s.and_then(|s| s.in_flight).map(|f| f.kind),
                    phase: job.map(|j| j.phase.to_string()),
                    claim_running_ms: job
                        .filter(|_| {
                            s.and_then(|s| s.in_flight).map(|f| f.kind) == Some(JobKind::Claim)
                        })
                        .map(|j| {
                            u64::try_from(now.saturating_duration_since(j.started).as_millis())
                                .unwrap_or(u64::MAX)
                        }),
                    window_open: job.is_some_and(|j| j.open),
                    next_check_ms: s.map(|s| {
                        u64::try_from(s.next_check.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                    held_down_until: s
                        .filter(|s| s.wants_claim())
                        .and_then(|s| s.claim_waits_until(hold_down, now))
                        .map(|t| clock.stamp(t)),
                    failures: s.map_or(0, |s| s.failures),
                    last_error: rec.and_then(|r| r.evidence.error.as_ref().map(|(_, t)| t.clone())),
                    last_claim: rec.and_then(|r| r.last_claim.as_ref()).map(|c| ClaimView {
                        at: clock.stamp(c.at),
                        result: match &c.report.done {
                            Done::Moved { .. } => "claimed",
                            Done::Located { .. } => "already_bound",
                            Done::Cancelled => "cancelled",
                            Done::Failed { .. } => "failed",
                            Done::Refused { .. } => "refused",
                        }
                        .to_string(),
                        outcome: c
                            .report
                            .outcome
                            .as_ref()
                            .and_then(|o| serde_json::to_value(o).ok()),
                        error: c.report.error.as_ref().map(ToString::to_string),
                    }),
                }
            })
            .collect()
    }
}

/// The OVH client of `config`, with its credential source (a Vault source reads through
/// `agent`, the daemon's token keeper).
fn build_client(
    config: &Config,
    policy: SecretPolicy,
    agent: Option<AgentHandle>,
    client_options: ClientOptions,
) -> Result<Client, SetupError> {
    let Some(ovh) = config.ovh.as_ref() else {
        return Err(SetupError::NoOvhSection);
    };
    let source = cloud::credential_source(config, ovh, policy, agent)?;
    let mut client_options = client_options;
    // `ovh.proxy`, never one from the environment.
    client_options.proxy = ovh.proxy.clone();
    if let Some(n) = ovh.requests_per_minute {
        client_options.rate = crate::ovh::policy::RateLimit::per_minute(n);
    }
    if ovh.failover_requests_per_minute.is_some() || ovh.requests_per_minute.is_some() {
        client_options.failover_rate =
            crate::ovh::policy::RateLimit::failover(ovh.failover_budget());
    }
    if matches!(
        ovh.credentials,
        crate::config::ovh::OvhCredentialSource::Vault { .. }
    ) {
        // Follow Vault's read cache: fresh credentials serve through a Vault outage,
        // stale ones are not used (the claim fails clearly and is retried).
        client_options.credentials_max_age = config.vault.as_ref().map(|v| v.cache_max_age);
    }
    Ok(Client::new(ovh.endpoint.clone(), source, client_options)?)
}
