//! SIGHUP and `carpd reload`: the new configuration is read and validated on a thread of
//! its own (files, and Vault for passwords, may be slow: the loop keeps serving status and
//! devd meanwhile), then swapped in only when all of it is valid, and applied in place.
//!
//! In place means: the controller keeps what it knows of every failover IP whose
//! configuration did not change, and their running claims go on untouched; a changed or
//! removed IP's job is cancelled at its next safe point (never inside its open window) and
//! nothing new starts for it before that job has ended. A new OVH client (credentials or
//! endpoint changed) serves the jobs that start after the reload.

use std::time::Instant;

use tokio::sync::oneshot;

use crate::control::Reply;
use crate::controller::core::Trigger;
use crate::controller::machine::Input;

use super::failover;
use super::{Daemon, Loaded, Note, StartError, load};

/// A reload that has finished loading, with everyone waiting for its result.
pub(super) struct Loading {
    via: &'static str,
    replies: Vec<oneshot::Sender<Reply>>,
    result: Result<Loaded, StartError>,
}

impl Daemon {
    /// Starts loading the configuration off the runtime thread; [`Daemon::finish_reload`]
    /// takes it from there. One reload at a time: requests during another wait for it, then
    /// share one more load (of the newest file).
    pub(super) fn start_reload(
        &mut self,
        via: &'static str,
        reply: Option<oneshot::Sender<Reply>>,
    ) {
        if self.stopping {
            if let Some(r) = reply {
                let _ = r.send(Reply::Error {
                    message: "carpd is stopping: reload refused".to_string(),
                });
            }
            return;
        }
        if !self.reloads.is_empty() {
            let queued = self.queued_reload.get_or_insert((via, Vec::new()));
            queued.1.extend(reply);
            return;
        }
        self.load_in_background(via, reply.into_iter().collect());
    }

    fn load_in_background(&mut self, via: &'static str, replies: Vec<oneshot::Sender<Reply>>) {
        let settings = self.settings.clone();
        let kernel = self.kernel.clone();
        let (tx, rx) = oneshot::channel();
        // A plain thread, not the runtime's blocking pool: reading Vault passwords starts a
        // small runtime of its own, which a runtime thread may not do.
        let spawned = std::thread::Builder::new()
            .name("carpd-reload".into())
            .spawn(move || {
                let _ = tx.send(load(&settings, kernel.as_ref()));
            });
        if let Err(e) = spawned {
            let result = Err(StartError::Secrets(vec![format!(
                "cannot start the reload thread: {e}"
            )]));
            self.finish_reload(Loading {
                via,
                replies,
                result,
            });
            return;
        }
        self.reloads.spawn(async move {
            let result = rx.await.unwrap_or_else(|_| {
                Err(StartError::Secrets(vec![
                    "loading the configuration panicked".to_string(),
                ]))
            });
            Loading {
                via,
                replies,
                result,
            }
        });
    }

    /// Swaps in a loaded configuration, or keeps the running one and says why.
    pub(super) fn finish_reload(&mut self, done: Loading) {
        let Loading {
            via,
            replies,
            result,
        } = done;
        let message = match result {
            Ok(loaded) => Ok(self.swap_in(via, loaded)),
            Err(e) => {
                let message =
                    format!("reload refused, the running configuration stays in force: {e}");
                tracing::error!(via = %via, "{message}");
                self.records.last_reload = Some((Instant::now(), false, message.clone()));
                self.note(Note::Reloaded { ok: false });
                Err(message)
            }
        };
        for r in replies {
            let _ = r.send(match &message {
                Ok(message) => Reply::Reloaded {
                    message: message.clone(),
                },
                Err(message) => Reply::Error {
                    message: message.clone(),
                },
            });
        }
        if let Some((via, replies)) = self.queued_reload.take() {
            self.load_in_background(via, replies);
        }
    }

    fn swap_in(&mut self, via: &'static str, loaded: Loaded) -> String {
        let now = Instant::now();
        let groups = loaded.config.groups.len();
        let changed = failover::changed_ips(&self.loaded.config, &loaded.config);
        self.loaded = loaded;
        let kept_agent = self.vault.as_ref().map(|(k, a)| (k.clone(), a.clone()));
        self.sync_vault_agent();
        // The same agent: have it re-read the secretsmith file (rotation).
        if let (Some((old, agent)), Some((new, _))) = (kept_agent, &self.vault)
            && old == *new
        {
            self.aux.spawn(async move {
                if let Err(e) = agent.reload().await {
                    tracing::error!("Vault settings not reloaded: {e}");
                }
            });
        }
        let readiness = self.readiness_settings();
        if let Some(f) = self.failover.as_mut() {
            f.set_agent(self.vault.as_ref().map(|(_, a)| a.clone()));
            f.set_passwords_from_local_copy(self.loaded.desired.from_local_copy.clone());
            if let Err(e) = f.reconfigure(
                &self.loaded.config,
                readiness,
                self.settings.policy,
                self.settings.ovh_client.clone(),
            ) {
                tracing::error!("the new OVH settings cannot be used; the old client stays: {e}");
            }
        } else {
            self.sync_failover();
        }
        let config = &self.loaded.config;
        self.drive(Input::Reconfigure {
            timing: config.daemon,
            duties: self.loaded.duties.clone(),
            ips: failover::ips_of(config),
            changed: changed.clone(),
            policy: failover::policy_of(config),
        });
        if !changed.is_empty() {
            let list: Vec<String> = changed.iter().map(ToString::to_string).collect();
            tracing::info!(ips = %list.join(","), "failover IPs changed by the reload: their running jobs stop at a safe point, then they are claimed under the new settings");
        }
        tracing::info!(via = %via, config = %self.settings.config_path.display(), groups, "configuration reloaded");
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
        message
    }
}
