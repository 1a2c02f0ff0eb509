//! carpd: a controller for FreeBSD kernel CARP (carp(4)).
//!
//! Everything lives in this library; `src/main.rs` only parses the command line and calls in.
//! Module map (see DESIGN.md in the repository for the why):
//! - [`carp`]: vocabulary shared by all modules (vhid, group id, state, key, sysctls).
//! - [`config`]: carpd.yaml schema, loading and validation with precise messages.
//! - [`kernel`]: the `Kernel` trait and its backends (netlink, ioctl, simulated).
//! - [`plan`]: the pure diff between configuration and kernel, and its executor.
//! - [`observe`]: the status model and its human and JSON renderings.
//! - [`ovh`]: the OVH API client and failover operations.
//! - [`sim`]: simulators of external systems (the OVH API) for tests, the lab and benches.
//! - [`cli`]: clap definitions and one module per subcommand.

pub mod carp;
pub mod cli;
pub mod config;
pub mod devd;
pub mod kernel;
pub mod observe;
pub mod ovh;
pub mod plan;
pub mod secrets;
pub mod sim;
