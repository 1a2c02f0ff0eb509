//! `carpd plan` and `carpd apply [--dry-run]`: compute the minimal diff between configuration
//! and kernel, print it, and (apply) carry it out, printing what changed.

use std::io::Write;

use crate::plan::apply::apply;
use crate::plan::diff;
use crate::plan::gather::{NotApplicable, desired_for, observe};

use super::{Context, eprint_error};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    DryRun,
    Apply,
}

pub fn run(ctx: &Context, mode: Mode, out: &mut dyn Write) -> bool {
    let config = match ctx.load_config() {
        Ok(c) => c,
        Err(e) => {
            eprint_error(format!("invalid configuration, nothing done:\n{e}"));
            return false;
        }
    };
    let k = match ctx.open_kernel() {
        Ok(k) => k,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let want = match desired_for(&config, k.as_ref(), ctx.policy) {
        Ok(d) => d,
        Err(NotApplicable::Kernel(e)) => {
            eprint_error(e);
            return false;
        }
        Err(NotApplicable::Fit(list)) => {
            eprint_error(format!(
                "the configuration does not fit this kernel, nothing done:\n{}",
                list.join("\n")
            ));
            return false;
        }
        Err(NotApplicable::Secrets(errors)) => {
            eprint_error(format!(
                "cannot read the passwords, nothing done:\n{}",
                errors.join("\n")
            ));
            return false;
        }
    };
    let have = match observe(k.as_ref(), &want) {
        Ok(o) => o,
        Err(e) => {
            eprint_error(e);
            return false;
        }
    };
    let plan = diff(&want, &have);
    for n in &plan.notes {
        let _ = writeln!(out, "note: {n}");
    }
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "no changes: the kernel matches {}",
            config.file.display()
        );
        return true;
    }
    if mode != Mode::Apply {
        let _ = writeln!(
            out,
            "{} change(s) to make the kernel ({}) match {}:",
            plan.actions.len(),
            k.info().name,
            config.file.display()
        );
        for a in &plan.actions {
            let _ = writeln!(out, "  {a}");
        }
        if mode == Mode::DryRun {
            let _ = writeln!(out, "dry run: nothing changed");
        }
        return true;
    }
    let report = apply(k.as_ref(), &plan);
    for a in &report.done {
        let _ = writeln!(out, "changed: {a}");
    }
    if let Some((a, e)) = &report.failed {
        eprint_error(format!("{a} failed: {e}"));
        for s in &report.skipped {
            let _ = writeln!(out, "not done: {s}");
        }
        let _ = writeln!(
            out,
            "{} of {} change(s) applied; the rest were not attempted. Fix the error and run carpd apply again.",
            report.done.len(),
            plan.actions.len()
        );
        return false;
    }
    let _ = writeln!(out, "{} change(s) applied", report.done.len());
    true
}
