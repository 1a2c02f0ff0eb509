//! Vault/OpenBao: secretsmith settings, AppRole/token login, kv-v2 reads, the token lifecycle
//! and a read cache.
//!
//! One external system, one narrow trait: [`store::SecretStore`] (login, renew, look up the
//! token, read a kv-v2 secret), implemented for real by [`client::VaultStore`] (vaultrs over
//! rustls/ring) and in memory by `fake::FakeStore` (unit tests only). Everything that decides — when to
//! renew, when to log in again, when to re-read the secretsmith file, whether a cached value
//! may still be used — is pure ([`lifecycle`], [`cache`]) and driven by a clock passed in;
//! [`session::Session`] executes those decisions against a store, and [`agent`] runs a
//! session as the daemon's task that keeps the token alive.
//!
//! Secrets never leave as text: tokens stay inside the store, field values are
//! [`secrecy::SecretString`]s (zeroized on drop, `Debug` redacted), and every error names the
//! server, the path and the auth method, never a value.

pub mod agent;
pub mod blocking;
pub mod cache;
pub mod check;
pub mod client;
pub mod error;
// The in-memory store, for carpd's own unit tests: never in a router's build.
#[cfg(test)]
pub mod fake;
pub mod lifecycle;
pub mod pybool;
pub mod secretsmith;
pub mod session;
pub mod store;

pub use error::{Kind, SettingsError, VaultError};
pub use secretsmith::{Auth, Settings, Verify};
pub use store::{Fields, SecretPath, SecretStore, TokenInfo};
