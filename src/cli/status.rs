//! `carpd status [--json]`: the kernel's CARP state. Works without a configuration file; when
//! one loads, its node name is shown and groups are marked managed or not.

use std::collections::BTreeSet;
use std::io::Write;

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
    let s = collect(
        k.as_ref(),
        config.as_ref().map(|c| c.node.as_str()),
        managed.as_ref(),
    );
    let text = if json { to_json(&s) } else { to_text(&s) };
    if out.write_all(text.as_bytes()).is_err() {
        return false;
    }
    s.errors.is_empty()
}
