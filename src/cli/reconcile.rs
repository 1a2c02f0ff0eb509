//! `carpd reconcile <group>...`: one reconcile of the named groups, now, without a daemon —
//! what the devd hook starts when no daemon runs. With a running daemon it nudges it instead:
//! the daemon is the only writer while it runs.
//!
//! One-shots are serialized by a lock file next to the control socket, so a MASTER event
//! followed at once by a BACKUP event runs two reconciles one after the other, each reading
//! the kernel as it is then: the later one always sees the latest state.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::carp::CarpState;
use crate::carp::GroupId;
use crate::control::{self, ClientError, Reply, Request};
use crate::controller::duties::failover_ips;
use crate::daemon::duties_of;

use super::{Context, eprint_error};

/// Reports a failure where someone will see it: the one-shot started by the hook has no
/// stderr, so with syslog logging the error must go to syslog too.
fn fail(ctx: &Context, msg: impl std::fmt::Display) -> bool {
    if ctx.syslog {
        tracing::error!("one-shot reconcile: {msg}");
    }
    eprint_error(msg);
    false
}

pub fn run(ctx: &Context, groups: &[String], out: &mut dyn Write) -> bool {
    let mut ids = Vec::new();
    for g in groups {
        match g.parse::<GroupId>() {
            Ok(id) => ids.push(id),
            Err(e) => return fail(ctx, e),
        }
    }

    if let Some(ok) = nudge_daemon(ctx, &ids, out) {
        return ok;
    }

    let lock_path = ctx.control_socket.with_extension("lock");
    let lock = match OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
    {
        Ok(f) => f,
        Err(e) => {
            return fail(
                ctx,
                format!("cannot open the lock file {}: {e}", lock_path.display()),
            );
        }
    };
    if let Err(e) = lock.lock() {
        return fail(ctx, format!("cannot lock {}: {e}", lock_path.display()));
    }

    let config = match ctx.load_config() {
        Ok(c) => c,
        Err(e) => {
            return fail(ctx, format!("invalid configuration, nothing done:\n{e}"));
        }
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            return fail(ctx, e);
        }
    };
    let duties = duties_of(&config);
    let mut ok = true;
    for id in &ids {
        match k.group(&id.ifname, id.vhid) {
            Ok(Some(g)) => {
                // This one-shot only reports: claims are the daemon's (one writer per IP).
                let ips = failover_ips(id, &duties);
                let what = if g.state == CarpState::Master && !ips.is_empty() {
                    let list: Vec<String> = ips.iter().map(ToString::to_string).collect();
                    format!(
                        "failover IP(s) {} follow this group: `carpd run` claims them",
                        list.join(", ")
                    )
                } else {
                    "nothing to do".to_string()
                };
                tracing::info!(group = %id, state = %g.state, managed = duties.contains_key(id), "one-shot reconcile: {what}");
                let _ = writeln!(out, "{id}: {}; {what}", g.state);
            }
            Ok(None) => {
                tracing::warn!(group = %id, "one-shot reconcile: no such group in the kernel");
                let _ = writeln!(out, "{id}: no such group in the kernel");
            }
            Err(e) => ok = fail(ctx, format!("{id}: {e}")),
        }
    }
    ok
}

/// Nudges a running daemon for every group; `None` when no daemon answers.
fn nudge_daemon(ctx: &Context, ids: &[GroupId], out: &mut dyn Write) -> Option<bool> {
    for id in ids {
        let req = Request::Nudge {
            group: id.clone(),
            state: None,
        };
        match control::request(&ctx.control_socket, &req, Duration::from_secs(2)) {
            Ok(Reply::Nudged { .. }) => {
                let _ = writeln!(out, "{id}: nudged the running daemon");
            }
            Ok(Reply::Error { message }) => {
                eprint_error(message);
                return Some(false);
            }
            Ok(other) => {
                eprint_error(format!("unexpected reply from the daemon: {other:?}"));
                return Some(false);
            }
            Err(ClientError::NotRunning { .. }) => return None,
            Err(e) => {
                tracing::warn!("{e}; reconciling without the daemon");
                return None;
            }
        }
    }
    Some(true)
}
