//! Carrying out a plan, one kernel call per action, stopping at the first failure.
//!
//! Each action is a single kernel operation (a group change is one get-merge-set), so a
//! failure leaves every earlier action complete and every later one untouched: the report says
//! exactly which, and running `carpd apply` again continues from there (the plan is
//! recomputed from the kernel, not remembered).

use crate::kernel::{Kernel, KernelError};

use super::{Action, Plan};

/// What happened to each action.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub done: Vec<Action>,
    pub failed: Option<(Action, KernelError)>,
    pub skipped: Vec<Action>,
}

impl ApplyReport {
    pub fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

/// Runs the plan's actions in order.
pub fn apply(k: &dyn Kernel, plan: &Plan) -> ApplyReport {
    let mut report = ApplyReport::default();
    let mut actions = plan.actions.iter();
    for a in actions.by_ref() {
        match a.run(k) {
            Ok(()) => report.done.push(a.clone()),
            Err(e) => {
                report.failed = Some((a.clone(), e));
                break;
            }
        }
    }
    report.skipped = actions.cloned().collect();
    report
}
