//! Supervised cloud jobs: every claim and check the controller starts runs here, owned by a
//! `JoinSet` (never detached), cancellable through its token, with its phase visible.
//!
//! Cancellation is safe by construction: a cancelled job is dropped only while its claim is
//! outside the open window ([`Phase::is_open`]); inside it, the claim goes on until the IP is
//! bound here (or the MASTER fence refuses the bind), and the cancellation takes effect the
//! moment the window closes. Dropping the daemon's `Jobs` aborts whatever is left — the stop
//! sequence only does that after its grace, with the open windows logged and marked.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::controller::claims::{Job, JobId};
use crate::ovh::failover::Phase;

use super::cloud::JobReport;
use super::marker::Marker;

/// What a running job shows of itself: its phase, and whether its window is open.
#[derive(Debug)]
pub struct Progress {
    ip: IpAddr,
    phase: Mutex<Phase>,
    open: watch::Sender<bool>,
    marker: Option<Arc<Marker>>,
}

impl Progress {
    pub fn new(ip: IpAddr, marker: Option<Arc<Marker>>) -> Progress {
        Progress {
            ip,
            phase: Mutex::new(Phase::Observe),
            open: watch::Sender::new(false),
            marker,
        }
    }

    /// The claim entered `phase`: recorded for status; an open window is marked on disk
    /// before its request is sent.
    pub fn set(&self, phase: &Phase) {
        let open = phase.is_open();
        if let Some(m) = &self.marker {
            if open {
                m.open(self.ip, &phase.to_string());
            } else if *phase == Phase::Verify {
                // Our POST's task is done: the IP is bound here, whatever happens next.
                m.close(self.ip);
            }
        }
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase.clone();
        self.open.send_replace(open);
    }

    /// The IP is known to be bound (here, or elsewhere while not MASTER): no window of
    /// carpd's is open for it any more, this run's or an earlier one's.
    pub fn resolved(&self) {
        if let Some(m) = &self.marker {
            m.close(self.ip);
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// Completes once cancellation may take effect: at once while the window is closed,
    /// else when it closes.
    async fn safe_point(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`: `wait_for` only ends with the window closed.
        let _ = rx.wait_for(|open| !*open).await;
    }
}

struct Running {
    job: Job,
    ip: IpAddr,
    /// Stop at the next safe point.
    token: CancellationToken,
    /// Stop now (superseded).
    now: CancellationToken,
    progress: Arc<Progress>,
    started: Instant,
}

/// The daemon's running jobs.
#[derive(Default)]
pub struct Jobs {
    set: JoinSet<JobReport>,
    running: BTreeMap<JobId, Running>,
    /// The job of each task, to report a task that ended abnormally.
    tasks: BTreeMap<tokio::task::Id, JobId>,
}

/// A running job as status shows it.
#[derive(Clone, Debug)]
pub struct RunningView {
    pub ip: IpAddr,
    pub phase: Phase,
    pub open: bool,
    pub started: Instant,
}

impl Jobs {
    /// Runs `work` for `job`. When cancelled, the job ends at its next safe point with
    /// `cancelled(job)` as its report.
    pub fn spawn<F>(
        &mut self,
        job: &Job,
        progress: Arc<Progress>,
        work: F,
        cancelled: impl FnOnce() -> JobReport + Send + 'static,
    ) where
        F: Future<Output = JobReport> + Send + 'static,
    {
        let token = CancellationToken::new();
        let now = CancellationToken::new();
        let (t, n, p) = (token.clone(), now.clone(), progress.clone());
        let handle = self.set.spawn(async move {
            tokio::select! {
                biased;
                () = n.cancelled() => cancelled(),
                report = work => report,
                () = async { t.cancelled().await; p.safe_point().await } => cancelled(),
            }
        });
        self.tasks.insert(handle.id(), job.id);
        self.running.insert(
            job.id,
            Running {
                job: job.clone(),
                ip: job.ip,
                token,
                now,
                progress,
                started: Instant::now(),
            },
        );
    }

    /// Asks job `id` to stop at its next safe point.
    pub fn cancel(&mut self, id: JobId) {
        if let Some(r) = self.running.get(&id) {
            r.token.cancel();
        }
    }

    /// Stops job `id` now (its term ended: the fence refuses every change anyway).
    pub fn supersede(&mut self, id: JobId) {
        if let Some(r) = self.running.get(&id) {
            r.now.cancel();
        }
    }

    /// The next job to end. Pending forever while none runs (so it can sit in a `select!`).
    pub async fn next(&mut self) -> JobReport {
        loop {
            match self.set.join_next_with_id().await {
                Some(Ok((task, report))) => {
                    self.tasks.remove(&task);
                    self.running.remove(&report.job.id);
                    return report;
                }
                // A job panicked (tests only: release builds abort on panic). Its claim may
                // have changed something: report it as a failure that did.
                Some(Err(e)) => {
                    tracing::error!("a failover job ended abnormally: {e}");
                    let Some(id) = self.tasks.remove(&e.id()) else {
                        continue;
                    };
                    if let Some(r) = self.running.remove(&id) {
                        return JobReport::new(
                            r.job,
                            crate::controller::claims::Done::Failed { mutated: true },
                        );
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// The running jobs, for status and for the stop's last words.
    pub fn view(&self) -> BTreeMap<IpAddr, RunningView> {
        self.running
            .values()
            .map(|r| {
                (
                    r.ip,
                    RunningView {
                        ip: r.ip,
                        phase: r.progress.phase(),
                        open: r.progress.is_open(),
                        started: r.started,
                    },
                )
            })
            .collect()
    }

    /// Aborts every job now (after the stop grace). The marker keeps the open windows.
    pub fn abort_all(&mut self) {
        self.set.abort_all();
        self.running.clear();
        self.tasks.clear();
    }
}
