//! `carpd hook <vhid@ifname> <TYPE>`: the devd action (devd/carpd.conf).
//!
//! devd runs actions synchronously through /bin/sh, so a slow hook delays every later event,
//! including the next CARP transition. The hook therefore only ever does something quick:
//! - a daemon answers on the control socket: nudge it (it reads the kernel itself) and exit;
//! - no daemon: start a detached `carpd reconcile <group>` and exit without waiting for it;
//! - a group the configuration does not name (vhid 1 added for something else): log, exit 0;
//! - malformed arguments: say what devd should have passed, exit 2.
//!
//! The one-shot child gets an empty environment and no inherited output: nothing secret can
//! leak into it, and a caller reading the hook's output is not kept waiting by it.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::ValueEnum;

use crate::carp::{CarpState, GroupId};
use crate::control::{self, ClientError, Reply, Request};
use crate::daemon::duties_of;

use super::{Context, EXIT_FAILURE, EXIT_USAGE, eprint_error};

/// How long the hook waits for the daemon's answer before doing the work itself. The daemon
/// answers a nudge before reading the kernel, in well under a millisecond.
const NUDGE_TIMEOUT: Duration = Duration::from_millis(500);

pub fn run(ctx: &Context, group: &str, state: &str) -> ExitCode {
    let parsed = group
        .parse::<GroupId>()
        .map_err(|e| format!("hook: first argument: {e} (devd's $subsystem)"))
        .and_then(|g| {
            state
                .parse::<CarpState>()
                .map(|s| (g, s))
                .map_err(|e| format!("hook: second argument: {e} (devd's $type)"))
        });
    let (group, state) = match parsed {
        Ok(p) => p,
        Err(msg) => {
            if ctx.syslog {
                tracing::error!("{msg}; usage: carpd hook <vhid@ifname> <MASTER|BACKUP|INIT>");
            }
            eprint_error(format!(
                "{msg}\nusage: carpd hook <vhid@ifname> <MASTER|BACKUP|INIT>, as in devd/carpd.conf"
            ));
            return ExitCode::from(EXIT_USAGE);
        }
    };

    let request = Request::Nudge {
        group: group.clone(),
        state: Some(state),
    };
    match control::request(&ctx.control_socket, &request, NUDGE_TIMEOUT) {
        Ok(Reply::Nudged { known: true }) => {
            tracing::debug!(%group, %state, "nudged the daemon");
            return ExitCode::SUCCESS;
        }
        Ok(Reply::Nudged { known: false }) => {
            tracing::info!(%group, %state, "not in the configuration: nothing to do (the daemon still records it)");
            return ExitCode::SUCCESS;
        }
        Ok(Reply::Error { message }) => {
            tracing::error!(%group, %state, "the daemon refused the nudge: {message}");
            return ExitCode::from(EXIT_FAILURE);
        }
        Ok(other) => {
            tracing::error!(%group, %state, "unexpected reply from the daemon: {other:?}");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(ClientError::NotRunning { .. }) => {}
        Err(e @ ClientError::PermissionDenied { .. }) => {
            tracing::error!(%group, %state, "{e}");
            return ExitCode::from(EXIT_FAILURE);
        }
        // A stuck or confused daemon must not cost the failover: do it ourselves.
        Err(e) => tracing::warn!(%group, %state, "{e}; reconciling without it"),
    }

    let config = match ctx.load_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(%group, %state, "cannot reconcile, the configuration is invalid:\n{e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if !duties_of(&config).contains_key(&group) {
        tracing::info!(%group, %state, "not in the configuration: nothing to do");
        return ExitCode::SUCCESS;
    }
    match spawn_one_shot(ctx, &group) {
        Ok(pid) => {
            tracing::info!(%group, %state, pid, "no daemon running: started a one-shot reconcile");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(%group, %state, "cannot start a one-shot reconcile: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Starts `carpd reconcile <group>` with this invocation's options, detached: its own
/// process group (devd's signals do not reach it), no inherited stdio, an empty environment.
/// Not waited for: when the hook exits, init adopts and reaps it.
fn spawn_one_shot(ctx: &Context, group: &GroupId) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    for (flag, value) in one_shot_args(ctx) {
        cmd.arg(flag);
        if let Some(v) = value {
            cmd.arg(v);
        }
    }
    cmd.arg("reconcile")
        .arg(group.to_string())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// The global options the child needs to act like this process.
fn one_shot_args(ctx: &Context) -> Vec<(&'static str, Option<PathBuf>)> {
    let name = |v: Option<clap::builder::PossibleValue>| {
        v.map(|p| PathBuf::from(p.get_name())).unwrap_or_default()
    };
    let mut args = vec![
        ("--config", Some(ctx.config_path.clone())),
        (
            "--kernel",
            Some(name(ctx.kernel_choice.to_possible_value())),
        ),
        ("--control-socket", Some(ctx.control_socket.clone())),
        ("--log-level", Some(PathBuf::from(&ctx.log_level))),
        (
            "--log-target",
            Some(name(ctx.log_target.to_possible_value())),
        ),
    ];
    if let Some(p) = &ctx.sim_state {
        args.push(("--sim-state", Some(p.clone())));
    }
    if let Some(p) = &ctx.syslog_socket {
        args.push(("--syslog-socket", Some(p.clone())));
    }
    if ctx.policy.allow_insecure_files {
        args.push(("--allow-insecure-files", None));
    }
    args
}
