//! devd: how carpd hears about CARP state changes.
//!
//! The kernel announces every CARP transition as one devctl line that devd republishes on its
//! sockets (reference/freebsd-carp.md §6). This module reads them:
//! - [`event`]: classifies one devd record (pure; strict CARP parse; never panics);
//! - [`backoff`]: the reconnect delay policy (pure; durations in, durations out);
//! - [`client`]: the async client of devd's SOCK_SEQPACKET socket: reads promptly, counts
//!   what it ignores, reconnects, and asks for a resync after every (re)connect;
//! - [`sys`]: the raw socket calls (the module's only `unsafe`); the listening side is
//!   compiled only for tests and `carpd-testkit`'s fake devd.
//!
//! Must not: treat an event as the truth. Events are hints; the controller reads the state of
//! each vhid from the kernel, and re-reads everything on `Connected` and `Lagged`.

pub mod backoff;
pub mod client;
pub mod event;
pub mod sys;

pub use backoff::{Backoff, BackoffPolicy};
pub use client::{
    CHANNEL_CAPACITY, ClientConfig, DEFAULT_SOCKET, DevdClient, DevdMessage, DevdStats,
    DevdStatsSnapshot, DisconnectReason, Stopped,
};
pub use event::{CarpEvent, Record, parse_record};
