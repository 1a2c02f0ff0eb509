//! `carpd secrets check`: log in to Vault/OpenBao as the daemon would, read every secret the
//! configuration needs, and report field names present or missing and the token's TTL and
//! policies — never a value. Exit 1 on any problem. `carpd check --online` runs the same check.

use std::io::Write;

use crate::config::{Config, PasswordSource};
use crate::vault::blocking::{Access, BlockingSession};
use crate::vault::check::{Expect, check};

use super::Context;

/// The secrets the configuration reads from Vault, with the fields each must have.
/// (The OVH credentials join this list when the `ovh:` section arrives.)
pub fn expected(config: &Config) -> Vec<Expect> {
    let mut out = Vec::new();
    for g in &config.groups {
        if let Some(PasswordSource::Vault { path, field }) = &g.password
            && let Ok(p) = path.parse()
        {
            out.push(Expect {
                label: format!("{}.password ({})", g.key, g.id),
                path: p,
                fields: vec![field.clone()],
                carp_key: true,
            });
        }
    }
    out
}

/// Runs the check and prints its report; returns the problem lines (without the
/// `problem: ` prefix) and prints the others.
pub fn check_vault(ctx: &Context, config: &Config, out: &mut dyn Write) -> Vec<String> {
    let expect = expected(config);
    let Some(v) = &config.vault else {
        if expect.is_empty() {
            let _ = writeln!(
                out,
                "note: no vault: section in {}: no secret comes from Vault",
                config.file.display()
            );
        }
        // With Vault passwords, validation has already refused a missing section.
        return Vec::new();
    };
    let access = Access::from_config(v, ctx.policy);
    let mut session = match BlockingSession::open(&access) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot start the Vault client's runtime: {e}")],
    };
    let report = session.run(async |s| check(s, &expect).await);
    let mut text = Vec::new();
    let _ = report.render(&mut text);
    let mut problems = Vec::new();
    for line in String::from_utf8_lossy(&text).lines() {
        match line.strip_prefix("problem: ") {
            Some(p) => problems.push(p.to_string()),
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    problems
}

pub fn run(ctx: &Context, out: &mut dyn Write) -> bool {
    let config = match ctx.load_config() {
        Ok(c) => c,
        Err(e) => {
            for p in &e.problems {
                let _ = writeln!(out, "{p}");
            }
            let _ = writeln!(out, "{} problem(s) found", e.problems.len());
            return false;
        }
    };
    let problems = check_vault(ctx, &config, out);
    for p in &problems {
        let _ = writeln!(out, "problem: {p}");
    }
    if problems.is_empty() {
        let _ = writeln!(out, "secrets OK");
        true
    } else {
        let _ = writeln!(out, "{} problem(s) found", problems.len());
        false
    }
}
