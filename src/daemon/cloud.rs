//! The cloud edge of the daemon: runs the controller's jobs (claims, checks) against OVH, and
//! builds the OVH client with its credential source.
//!
//! A job is one future, owned (no borrow of the daemon), run by the supervisor
//! ([`super::jobs`]); it reports a [`JobReport`] that the loop hands back to the controller.
//! Claims run through [`crate::ovh::failover`], which asks the [`JobFence`] before each
//! mutating step: the controller's generation for the IP (a newer local reading supersedes
//! the job) plus a fresh kernel read of the group (the truth, not the last event); the fence
//! also carries the claim's phase to the supervisor and the open-window marker.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::carp::{CarpState, GroupId};
use crate::config::Config;
use crate::config::ovh::{FailoverIp, FailoverMode, OvhConfig, OvhCredentialSource};
use crate::kernel::Kernel;
use crate::observe::metrics::kinds::ovh_error_kind;
use crate::ovh::conf;
use crate::ovh::credentials::{
    BoxFuture, CredentialError, CredentialSource, Credentials, FieldNames,
};
use crate::ovh::failover::shared::Fresh;
use crate::ovh::failover::{
    ClaimError, ClaimOptions, ClaimOutcome, ClaimResult, SharedReads, claim_move,
    claim_vmac_shared, locate_shared,
};
use crate::ovh::plan::Found;
use crate::ovh::rights::{self, Credential, Rule, Verdict};
use crate::ovh::{Client, FailoverApi, OvhError};
use crate::secrets::SecretPolicy;
use crate::vault::SecretPath;
use crate::vault::agent::{self, AgentHandle};
use crate::vault::blocking::Access;

use crate::controller::claims::{Done, Job, JobKind};
use crate::ovh::failover::{ClaimFailure, Fence, Phase};

use super::jobs::Progress;

// --- credentials ---------------------------------------------------------------------------

/// Reads OVH credentials from a python-ovh INI file, each time it is asked (rotation).
struct ConfFile {
    path: std::path::PathBuf,
    endpoint: String,
    policy: SecretPolicy,
}

impl CredentialSource for ConfFile {
    fn load(&self) -> BoxFuture<'_, Result<Credentials, CredentialError>> {
        Box::pin(async move {
            let c = conf::load_files(std::slice::from_ref(&self.path), self.policy)?;
            if c.files.is_empty() {
                return Err(CredentialError::Source(format!(
                    "{} does not exist: write the OVH keys there (python-ovh INI: [{}] application_key=... application_secret=... consumer_key=...)",
                    self.path.display(),
                    self.endpoint
                )));
            }
            let env = |k: &str| std::env::var(k).ok();
            c.credentials(&env, Some(&self.endpoint))
        })
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// OVH credentials in a kv-v2 secret, read through the Vault agent each time they are asked
/// for (served from its cache while fresh; re-read after a rotation).
pub struct VaultCredentials {
    pub agent: AgentHandle,
    pub path: SecretPath,
    pub names: FieldNames,
}

impl CredentialSource for VaultCredentials {
    fn load(&self) -> BoxFuture<'_, Result<Credentials, CredentialError>> {
        Box::pin(async move {
            let cached = self
                .agent
                .read(self.path.clone())
                .await
                // The OVH side knows no Vault type (it sits below the vault module): the
                // agent's typed error crosses as its message, which names server and path.
                .map_err(|e| CredentialError::Source(e.to_string()))?;
            if let Some(e) = &cached.stale {
                tracing::warn!(path = %self.path, "Vault read failed, using the last good OVH credentials: {e}");
            }
            Credentials::from_fields(
                cached.fields.as_map(),
                &self.names,
                format!("vault {}", self.path),
            )
        })
    }
    fn describe(&self) -> String {
        format!("vault {}", self.path)
    }
}

/// Why the OVH side of a configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "{}: ovh.credentials comes from Vault ({path}) but there is no vault: section saying how to reach it",
        file.display()
    )]
    NoVaultSection {
        file: std::path::PathBuf,
        path: String,
    },
    #[error("ovh.credentials: vault {path}: {reason}")]
    VaultPath { path: String, reason: String },
    #[error("failover_ips needs an ovh: section")]
    NoOvhSection,
    #[error(transparent)]
    Client(#[from] OvhError),
}

/// A credential source for `ovh.credentials`. A Vault source uses `agent` when given (the
/// daemon's, which already keeps a token), else starts one — so it must be called inside a
/// tokio runtime.
pub fn credential_source(
    config: &Config,
    ovh: &OvhConfig,
    policy: SecretPolicy,
    agent: Option<AgentHandle>,
) -> Result<Arc<dyn CredentialSource>, SetupError> {
    Ok(match &ovh.credentials {
        OvhCredentialSource::File(path) => Arc::new(ConfFile {
            path: path.clone(),
            endpoint: ovh.endpoint.name().to_string(),
            policy,
        }),
        OvhCredentialSource::Vault { path, fields } => {
            let Some(v) = &config.vault else {
                return Err(SetupError::NoVaultSection {
                    file: config.file.clone(),
                    path: path.clone(),
                });
            };
            let path: SecretPath = path.parse().map_err(|reason| SetupError::VaultPath {
                path: path.clone(),
                reason,
            })?;
            let agent =
                agent.unwrap_or_else(|| agent::spawn(Access::from_config(v, policy).session()));
            Arc::new(VaultCredentials {
                agent,
                path,
                names: fields.clone(),
            })
        }
    })
}

// --- rights --------------------------------------------------------------------------------

/// What carpd knows of its credential's rights.
#[derive(Clone, Debug)]
pub enum Known {
    /// The consumer key's access rules.
    Rules(Vec<Rule>),
    /// They cannot be read: why.
    Unverified(String),
}

/// The credential's rights, read at most once per `ttl` for all failover IPs (one request
/// per readiness interval, whatever the number of IPs), shared by the jobs of one client.
#[derive(Debug)]
pub struct RightsCache {
    ttl: Duration,
    known: std::sync::Mutex<Option<(Instant, Known)>>,
    /// One reading at a time: the checks of a group's IPs fall due together (their claims
    /// ended together), and those that find the reading expired wait for one request
    /// instead of each sending its own.
    reading: tokio::sync::Mutex<()>,
}

impl RightsCache {
    pub fn new(ttl: Duration) -> RightsCache {
        RightsCache {
            ttl,
            known: std::sync::Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The last reading when it is younger than the TTL.
    fn fresh(&self) -> Option<Known> {
        match &*self.lock() {
            Some((at, k)) if at.elapsed() < self.ttl => Some(k.clone()),
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, Known)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is known now, without asking OVH (however old: a claim must not wait).
    pub fn peek(&self) -> Option<Known> {
        self.lock().as_ref().map(|(_, k)| k.clone())
    }

    /// Forget: the next check reads the rights again (a refusal says they changed).
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The rights, read from OVH when the last reading is older than the TTL. A transient
    /// failure keeps the last reading.
    pub async fn get(&self, api: &Client) -> Known {
        if let Some(k) = self.fresh() {
            return k;
        }
        // Dropped with its task when a job is cancelled: the next in line reads.
        let _one = self.reading.lock().await;
        // Read by another check while this one waited.
        if let Some(k) = self.fresh() {
            return k;
        }
        let k = match api.signs_with_time() {
            Some(false) => Known::Unverified(
                "an OAuth2 service account's IAM policy cannot be read by carpd: allow the IAM actions `carpd check --online` lists".into(),
            ),
            _ => match api.get::<Credential>(rights::CURRENT_CREDENTIAL).await {
                Ok(c) => Known::Rules(c.rules),
                Err(e) if e.is_transient() => {
                    if let Some(k) = self.peek() {
                        return k;
                    }
                    return Known::Unverified(format!("the access rules could not be read yet: {e}"));
                }
                Err(e) => Known::Unverified(format!(
                    "the access rules could not be read ({e}); grant GET {} to let carpd verify them",
                    rights::CURRENT_CREDENTIAL
                )),
            },
        };
        *self.lock() = Some((Instant::now(), k.clone()));
        k
    }
}

/// The calls a claim of `f` makes; `holder`: where the IP was last seen.
pub fn needs_of(f: &FailoverIp, holder: Option<&Found>) -> Vec<rights::Need> {
    match &f.mode {
        FailoverMode::VirtualMac(t) => {
            let mac = match holder {
                Some(Found::Vmac { mac, .. }) => Some(mac.as_str()),
                _ => None,
            };
            rights::vmac_needs(t, mac)
        }
        FailoverMode::IpMove(t) => rights::move_needs(t),
    }
}

/// Judges the claim of `f` against what is known.
pub fn verdict_of(known: &Known, f: &FailoverIp, holder: Option<&Found>) -> Verdict {
    match known {
        Known::Rules(r) => {
            let needs = needs_of(f, holder);
            let m = rights::missing(r, &needs);
            if m.is_empty() {
                Verdict::Granted
            } else {
                Verdict::Missing(m.iter().map(|n| n.describe()).collect())
            }
        }
        Known::Unverified(why) => Verdict::Unverified(why.clone()),
    }
}

// --- jobs ----------------------------------------------------------------------------------

/// "Still MASTER?" for one IP: the scheduler's generation for it, shared with running jobs.
/// [`NOT_MASTER`] when the group is not MASTER here.
pub type Generation = Arc<AtomicU64>;

/// The value of a [`Generation`] while the group is not MASTER.
pub const NOT_MASTER: u64 = u64::MAX;

/// Why a job failed: typed, so the daemon classifies it without parsing text.
#[derive(Clone, Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Claim(ClaimFailure),
    #[error("{0}")]
    Check(OvhError),
    /// A claim not started: its calls are known to be refused (each line: rule, why, IAM).
    #[error("claim not started: {}", rights::fix(.0))]
    Rights(Vec<String>),
}

impl JobError {
    /// A short class of the error, for metrics and readiness.
    pub fn kind(&self) -> &'static str {
        match self {
            JobError::Claim(f) => claim_error_kind(&f.error),
            JobError::Check(e) => ovh_error_kind(e),
            JobError::Rights(_) => "rights_missing",
        }
    }
}

/// What one job found and did.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub job: Job,
    pub ip: IpAddr,
    pub group: GroupId,
    pub generation: u64,
    pub kind: JobKind,
    /// What the scheduler learns.
    pub done: Done,
    /// For a claim: the operation's record (steps, timings, outage).
    pub outcome: Option<ClaimOutcome>,
    /// Where the IP is after the job, when known.
    pub found: Option<Found>,
    /// Whether our vMAC exists and holds at least one IP (readiness), when read.
    pub own_vmac: Option<OwnVmac>,
    /// What the credential's rights allow for this IP's claim, when judged.
    pub rights: Option<Verdict>,
    pub error: Option<JobError>,
    pub started: Instant,
    pub ended: Instant,
}

impl JobReport {
    /// A report for `job` that has not done anything yet.
    pub fn new(job: Job, done: Done) -> JobReport {
        let now = Instant::now();
        JobReport {
            ip: job.ip,
            group: job.group.clone(),
            generation: job.generation,
            kind: job.kind,
            job,
            done,
            outcome: None,
            found: None,
            own_vmac: None,
            rights: None,
            error: None,
            started: now,
            ended: now,
        }
    }

    pub fn error_kind(&self) -> Option<&'static str> {
        self.error.as_ref().map(JobError::kind)
    }
}

/// The fence of one claim: "still MASTER?" from the controller's generation and a fresh
/// kernel read, and the claim's phases to its [`Progress`].
pub struct JobFence {
    pub fence: Generation,
    pub generation: u64,
    pub group: GroupId,
    pub kernel: Arc<dyn Kernel>,
    pub progress: Arc<Progress>,
}

impl Fence for JobFence {
    fn still_master(&self) -> bool {
        self.fence.load(Ordering::SeqCst) == self.generation
            && matches!(
                self.kernel.group(&self.group.ifname, self.group.vhid),
                Ok(Some(g)) if g.state == CarpState::Master
            )
    }

    fn phase(&self, phase: &Phase) {
        self.progress.set(phase);
    }
}

/// What a check saw of this node's own vMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnVmac {
    pub exists: bool,
    pub ips: usize,
}

/// What the jobs of one OVH client share.
#[derive(Clone)]
pub struct JobContext {
    pub api: Arc<Client>,
    /// The credential's rights as last read.
    pub rights: Arc<RightsCache>,
    /// vMAC reads: one listing serves every IP of a failover, one read-back verifies them.
    pub shared: Arc<SharedReads>,
    /// Claims running at once (`ovh.claim_concurrency`).
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// How old a shared answer a periodic check may use: the checks of a group's IPs fall due
/// together (their claims ended together), so one read serves them all. An observation, not
/// a safety read: claims read afresh, and a write seen done makes older answers unusable.
pub const CHECK_SHARE: Duration = Duration::from_secs(5);

/// Runs `job` for `f` behind `fence`.
pub async fn run_job(
    ctx: JobContext,
    f: FailoverIp,
    opts: ClaimOptions,
    job: Job,
    fence: JobFence,
) -> JobReport {
    let JobContext {
        api,
        rights: rights_cache,
        shared,
        slots,
    } = ctx;
    let mut report = JobReport::new(job.clone(), Done::Failed { mutated: false });
    match job.kind {
        JobKind::Check => match check(api.as_ref(), &f, job.hint.as_ref(), &shared).await {
            Ok((found, here, own)) => {
                let known = rights_cache.get(api.as_ref()).await;
                report.rights = Some(verdict_of(&known, &f, Some(&found)));
                if !matches!(found, Found::Unbound | Found::Service { service: None }) {
                    fence.progress.resolved();
                }
                report.done = Done::Located {
                    found: found.clone(),
                    here,
                };
                report.found = Some(found);
                report.own_vmac = own;
            }
            Err(e) => {
                if e.is_permanent() {
                    // Refused credentials or rights: a rotation or a change; read them
                    // again at the next check rather than trust the last reading.
                    rights_cache.forget();
                }
                report.error = Some(JobError::Check(e));
            }
        },
        JobKind::Claim => {
            // No half claims: a claim whose step is known to be refused does not start
            // (no DELETE on the peer's vMAC when this node may not POST on its own).
            // Known missing: read them again first (once per slow retry), so a fixed
            // credential heals the binding without waiting for the next check.
            if let Some(known) = rights_cache.peek()
                && verdict_of(&known, &f, job.hint.as_ref()).is_missing()
            {
                rights_cache.forget();
                let v = verdict_of(&rights_cache.get(api.as_ref()).await, &f, job.hint.as_ref());
                if let Verdict::Missing(lines) = &v {
                    report.done = Done::Refused { mutated: false };
                    report.error = Some(JobError::Rights(lines.clone()));
                    report.rights = Some(v);
                    report.ended = Instant::now();
                    return report;
                }
            }
            // One writer per IP always; at most `claim_concurrency` IPs at once. Waiting for a
            // slot changes nothing (cancellable, status shows it).
            fence.progress.set(&Phase::Queued);
            let _slot = slots.acquire_owned().await;
            fence.progress.set(&Phase::Observe);
            let r = match &f.mode {
                FailoverMode::VirtualMac(t) => {
                    claim_vmac_shared(api.as_ref(), t, &opts, job.hint.as_ref(), &fence, &shared)
                        .await
                }
                FailoverMode::IpMove(t) => claim_move(api.as_ref(), t, &opts, &fence).await,
            };
            // The claim is over: nothing left to finish for a stop.
            fence.progress.set(&Phase::Observe);
            let ours = ours_found(&f);
            match r {
                Ok(o) => {
                    // Bound here, or refused by the fence (no longer MASTER: the new MASTER
                    // binds it). A failure keeps the marker: the IP may be bound nowhere.
                    fence.progress.resolved();
                    report.done = match &o.result {
                        ClaimResult::AlreadyBound => Done::Located {
                            found: ours.clone(),
                            here: true,
                        },
                        ClaimResult::Claimed => Done::Moved {
                            before: o.found.clone(),
                        },
                        ClaimResult::Cancelled { .. } | ClaimResult::DryRun { .. } => {
                            Done::Cancelled
                        }
                    };
                    if matches!(o.result, ClaimResult::AlreadyBound | ClaimResult::Claimed) {
                        report.found = Some(ours);
                    }
                    report.outcome = Some(o);
                }
                Err(failure) => {
                    let mutated = !failure.outcome.steps.is_empty();
                    report.done = if matches!(&failure.error, ClaimError::Api(e) if e.is_permanent())
                    {
                        // The rights changed since they were read: read them again.
                        rights_cache.forget();
                        Done::Refused { mutated }
                    } else {
                        Done::Failed { mutated }
                    };
                    report.outcome = Some(failure.outcome.clone());
                    report.error = Some(JobError::Claim(failure));
                }
            }
        }
    }
    report.ended = Instant::now();
    report
}

/// The binding that means "here".
pub fn ours_found(f: &FailoverIp) -> Found {
    match &f.mode {
        FailoverMode::VirtualMac(t) => Found::Vmac {
            mac: t.mac.clone(),
            ips: 1,
        },
        FailoverMode::IpMove(t) => Found::Service {
            service: Some(t.service.clone()),
        },
    }
}

/// Where the IP is, whether that is here, and (vMAC mode) what our own vMAC holds.
///
/// A failover IP is on at most one vMAC, so when the last known binding (`hint`) still
/// holds, reading that vMAC (and ours, for readiness) is the whole check: one request while
/// MASTER, two while BACKUP, instead of a listing plus every vMAC. That keeps periodic
/// checks cheap within OVH's rate budget; a stale hint falls back to the full search.
async fn check<A: FailoverApi>(
    api: &A,
    f: &FailoverIp,
    hint: Option<&Found>,
    shared: &SharedReads,
) -> Result<(Found, bool, Option<OwnVmac>), OvhError> {
    let need = Fresh::Within(CHECK_SHARE);
    match &f.mode {
        FailoverMode::VirtualMac(t) => {
            if let Some(Found::Vmac { mac, .. }) = hint
                && let Ok(ips) = shared.vmac_ips(api, &t.service, mac, need).await
                && ips.contains(&t.ip)
            {
                let found = Found::Vmac {
                    mac: mac.to_lowercase(),
                    ips: ips.len(),
                };
                if mac.eq_ignore_ascii_case(&t.mac) {
                    let own = OwnVmac {
                        exists: true,
                        ips: ips.len(),
                    };
                    return Ok((found, true, Some(own)));
                }
                let own = match shared.vmac_ips(api, &t.service, &t.mac, need).await {
                    Ok(ours) => OwnVmac {
                        exists: true,
                        ips: ours.len(),
                    },
                    Err(e) if e.kind() == Some(crate::ovh::ErrorKind::NotFound) => OwnVmac {
                        exists: false,
                        ips: 0,
                    },
                    Err(e) => return Err(e),
                };
                return Ok((found, false, Some(own)));
            }
            let (obs, _, _) =
                locate_shared(api, &t.service, t.ip, &t.mac, shared, need, need).await?;
            let here =
                matches!(&obs.found, Found::Vmac { mac, .. } if mac.eq_ignore_ascii_case(&t.mac));
            let own = match (obs.ours_exists, &obs.found) {
                (Some(false), _) => Some(OwnVmac {
                    exists: false,
                    ips: 0,
                }),
                (_, Found::Vmac { ips, .. }) if here => Some(OwnVmac {
                    exists: true,
                    ips: *ips,
                }),
                _ => {
                    let ips = shared.vmac_ips(api, &t.service, &t.mac, need).await?;
                    Some(OwnVmac {
                        exists: true,
                        ips: ips.len(),
                    })
                }
            };
            Ok((obs.found, here, own))
        }
        FailoverMode::IpMove(t) => {
            let info = api.ip_info(t.block).await?;
            let service = info.service().map(str::to_string);
            let here = service.as_deref() == Some(t.service.as_str());
            Ok((Found::Service { service }, here, None))
        }
    }
}

fn claim_error_kind(e: &ClaimError) -> &'static str {
    match e {
        ClaimError::LastIp { .. } => "last_ip",
        ClaimError::OursMissing { .. } => "own_vmac_missing",
        ClaimError::TaskFailed { .. } => "task_failed",
        ClaimError::Deadline { .. } => "deadline",
        ClaimError::TooManyReplans { .. } => "too_many_replans",
        ClaimError::Api(e) => ovh_error_kind(e),
    }
}

/// Claim options from the configuration. A daemon's claim is an outage in progress: it
/// re-plans sooner and more often than the CLI's default (a 5xx storm delays it by seconds,
/// not minutes), still far inside OVH's rate budget (each re-plan is two or three requests).
pub fn claim_options(ovh: &OvhConfig) -> ClaimOptions {
    let d = ClaimOptions::default();
    ClaimOptions {
        deadline: ovh.claim_deadline,
        replan_backoff: crate::ovh::policy::RetryPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(4),
            ..d.replan_backoff
        },
        max_replans: 8,
        ..d
    }
}

/// How long ago, in milliseconds, for status.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
