//! The OVH side of carpd: an API client and the failover operations built on it.
//!
//! - [`endpoint`]: the endpoint table (ovh-eu, ..., or a custom URL).
//! - [`sign`]: the `$1$` request signature and python-ovh's JSON body encoding.
//! - [`credentials`]: application keys or OAuth2 service accounts, held as secrets;
//!   [`conf`]: python-ovh's ovh.conf files and `OVH_*` variables.
//! - [`policy`]: pure timing rules (retry backoff, task polling, rate limiting).
//! - [`error`]: typed errors keeping what OVH said and the query id.
//! - [`client`]: HTTP (reqwest on rustls/ring), signing, time sync, tokens, retries.
//! - [`api`]: the narrow [`api::FailoverApi`] trait of the calls failover needs.
//! - [`plan`]: pure "observed binding -> next step" decisions.
//! - [`failover`]: locate, claim by virtual MAC, claim by IP move.
//! - [`rights`]: the calls a claim makes, matched against the credential's access rules.
//!
//! Nothing here knows about CARP or carpd.yaml: callers pass targets and a "still MASTER?"
//! check. The OVH simulator used by tests lives in carpd-testkit (`carpd_testkit::ovh`).

pub mod api;
pub mod client;
pub mod conf;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod failover;
pub mod plan;
pub mod policy;
pub mod rights;
pub mod sign;

pub use api::FailoverApi;
pub use client::{Client, ClientOptions};
pub use credentials::{Auth, CredentialSource, Credentials, FieldNames, FixedCredentials};
pub use endpoint::Endpoint;
pub use error::{ApiError, ErrorKind, OvhError};
