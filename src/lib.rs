//! carpd: a controller for FreeBSD kernel CARP (carp(4)).
//!
//! Everything lives in this library; `src/main.rs` only parses the command line and calls in.
//! Module map (see DESIGN.md in the repository for the why):
//! - [`carp`]: vocabulary shared by all modules (vhid, group id, state, key, sysctls).
//! - [`config`]: carpd.yaml schema, loading and validation with precise messages.
//! - [`kernel`]: the `Kernel` trait and its backends (netlink, ioctl, simulated).
//! - [`plan`]: the pure diff between configuration and kernel, and its executor.
//! - [`devd`]: devd's CARP events: strict parser, reconnecting client, fake devd.
//! - [`controller`]: `carpd run`: the pure reconcile core and its executor.
//! - [`control`]: the control socket between the daemon and the CLI / devd hook.
//! - [`observe`]: the status model and its human and JSON renderings.
//! - [`secret_file`]: the one opener of files that hold secrets (O_NOFOLLOW, fstat checks).
//! - [`secrets`]: CARP passwords from their sources (file, inline, Vault).
//! - [`vault`]: secretsmith settings, Vault/OpenBao login, kv-v2 reads, token lifecycle.
//! - [`ovh`]: the OVH API client and failover operations.
//! - [`cli`]: clap definitions and one module per subcommand.
//! - [`statedir`]: the state directory's rule and its atomic, no-symlink file writes.
//! - [`remote`]: rules for every HTTP client: no redirects, no environment proxies, server
//!   text escaped.

pub mod backoff;
pub mod carp;
pub mod cli;
pub mod config;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod devd;
pub mod kernel;
pub mod observe;
pub mod ovh;
pub mod plan;
pub mod remote;
pub mod secret_file;
pub mod secrets;
pub mod statedir;
pub mod vault;
