//! `carpd status [--json]`: the kernel's CARP state. Works without a configuration file; when
//! one loads, its node name is shown and groups are marked managed or not. When a daemon
//! answers on the control socket, its view (history, devd, last reconcile) is added.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use crate::control::{self, ClientError, Reply, Request};
use crate::observe::status::{collect, to_json, to_text};

use super::{Context, eprint_error};

pub fn run(ctx: &Context, json: bool, out: &mut dyn Write) -> bool {
    let config = if ctx.config_path.exists() {
        match ctx.load_config() {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("carpd: warning: configuration ignored for status:\n{e}");
                None
            }
        }
    } else {
        None
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let managed: Option<BTreeSet<_>> = config
        .as_ref()
        .map(|c| c.groups.iter().map(|g| g.id.clone()).collect());
    let mut s = collect(
        k.as_ref(),
        config.as_ref().map(|c| c.node.as_str()),
        managed.as_ref(),
    );
    match control::request(
        &ctx.control_socket,
        &Request::Status,
        Duration::from_secs(2),
    ) {
        Ok(Reply::Status { daemon }) => s.daemon = Some(*daemon),
        // Refused (not root) or busy: the kernel's view is still right.
        Ok(Reply::Error { message }) => eprintln!(
            "carpd: warning: the daemon did not answer: {message}; showing the kernel's view only"
        ),
        Ok(other) => s
            .errors
            .push(format!("unexpected reply from the daemon: {other:?}")),
        Err(ClientError::NotRunning { .. }) => {}
        // Not an error of the system: this user may not see the daemon's view.
        Err(e @ ClientError::PermissionDenied { .. }) => {
            eprintln!("carpd: warning: {e}; showing the kernel's view only")
        }
        Err(e) => s.errors.push(e.to_string()),
    }
    let text = if json { to_json(&s) } else { to_text(&s) };
    if out.write_all(text.as_bytes()).is_err() {
        return false;
    }
    s.errors.is_empty()
}
