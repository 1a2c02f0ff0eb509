//! The controller: `carpd run`'s decision logic and the executor that carries it out.
//!
//! - [`core`]: pure state machine: pending groups, coalescing, transitions, decisions;
//! - [`duties`]: the pure "actions for group X in state S" and the duties config gives;
//! - [`claims`]: pure scheduler of cloud work per failover IP: one writer, generations,
//!   hold-down, re-checks;
//! - [`cloud`]: runs that work against OVH (claims, checks) with the fence;
//! - [`failover`]: the daemon's failover IPs: scheduler + OVH jobs + status;
//! - [`readiness`]: pure "could this node complete a failover now?";
//! - [`ledger`]: the demotion ledger: what carpd added to `net.inet.carp.demotion` and why
//!   (maintenance, not ready), written before the kernel is touched, re-applied after a
//!   reboot, removed exactly;
//! - [`boot`]: the boot order: `net.inet.carp.allow=1` once the ledger and the configuration
//!   are applied;
//! - [`daemon`]: the executor: one tokio loop fed by devd, the control socket, signals and
//!   timers; it reads the kernel, applies the configuration and reports.

pub mod boot;
pub mod claims;
pub mod cloud;
pub mod core;
pub mod daemon;
pub mod duties;
pub mod failover;
pub mod ledger;
pub mod readiness;

pub use core::{Core, Decision, Outcome, Transition, Trigger, Work};
pub use duties::{Duties, GroupAction, GroupDuties, actions_for};

#[cfg(test)]
mod tests;
