//! The controller: `carpd run`'s decisions, pure (no I/O, the clock as an input) — all but
//! the ledger's store, the one place the demotion ledger's file and kernel I/O live.
//!
//! - [`machine`]: the one decision core, `handle(input, now) -> effects`, built from:
//! - [`core`]: what carpd believes about each CARP group (only from kernel readings),
//!   coalescing, transitions, when to read again;
//! - [`claims`]: the scheduler of cloud work per failover IP: one writer, generations,
//!   hold-down, re-checks, reload in place, stop, repair;
//! - [`duties`]: what the configuration makes carpd responsible for (data);
//! - [`readiness`]: pure "could this node complete a failover now?";
//! - [`ledger`]: the demotion ledger: what carpd added to `net.inet.carp.demotion` and why
//!   (maintenance, not ready), written before the kernel is touched, re-applied after a
//!   reboot, removed exactly.
//!
//! The daemon that carries the effects out lives in [`crate::daemon`].

pub mod claims;
pub mod core;
pub mod duties;
pub mod ledger;
pub mod machine;
pub mod readiness;

pub use core::{Core, Outcome, Reading, Transition, Trigger, Work};
pub use duties::{Duties, GroupDuties};
pub use machine::{Controller, Effect, Env, Input};

#[cfg(test)]
mod tests;
