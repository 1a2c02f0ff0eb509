//! The control socket between the daemon and the CLI / devd hook (`/var/run/carpd.sock`).
//!
//! - [`protocol`]: versioned JSON lines, pure encode/decode;
//! - [`server`]: the daemon's listener (peer check, limits, timeouts);
//! - [`client`]: the blocking one-shot client used by `carpd status`, `reload` and `hook`.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{ClientError, DEFAULT_SOCKET, request};
pub use protocol::{Reply, Request};
pub use server::{ControlServer, Incoming};
