//! `carpd reload`: ask the running daemon to re-read its configuration and say whether it
//! took it. (`service carpd reload` sends SIGHUP after `carpd check` instead; both end in the
//! same reload, which keeps the running configuration when the new one is invalid.)

use std::io::Write;
use std::time::Duration;

use crate::control::{self, Reply, Request};

use super::{Context, eprint_error};

/// A reload reads secrets (files today, Vault later) and applies kernel changes.
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(ctx: &Context, out: &mut dyn Write) -> bool {
    match control::request(&ctx.control_socket, &Request::Reload, TIMEOUT) {
        Ok(Reply::Reloaded { message }) => {
            let _ = writeln!(out, "{message}");
            true
        }
        Ok(Reply::Error { message }) => {
            eprint_error(message);
            false
        }
        Ok(other) => {
            eprint_error(format!("unexpected reply from the daemon: {other:?}"));
            false
        }
        Err(e) => {
            eprint_error(format!("{e}; nothing reloaded"));
            false
        }
    }
}
