//! The YAML shape of carpd.yaml, exactly as written, with source positions.
//!
//! Only serde lives here: every field that validation may complain about is wrapped in
//! `Spanned` so the complaint can name its line and column. Unknown keys are refused at parse
//! time (`deny_unknown_fields`): a typo must not silently leave a setting at its default.
//! Turning this into the checked [`super::Config`] is `validate.rs`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node: Option<Spanned<String>>,
    #[serde(default)]
    pub carp: Option<RawCarp>,
    #[serde(default)]
    pub groups: Vec<RawGroup>,
    pub daemon: Option<super::daemon::RawDaemon>,
    pub vault: Option<Spanned<RawVault>>,
    pub ovh: Option<super::ovh::RawOvh>,
    #[serde(default)]
    pub failover_ips: Vec<super::ovh::RawFailoverIp>,
    pub metrics: Option<super::metrics::RawMetrics>,
    pub readiness: Option<super::readiness::RawReadiness>,
    pub maintenance: Option<super::maintenance::RawMaintenance>,
}

/// `vault:`: how carpd reaches Vault/OpenBao. Every key is optional; `vault: {}` means the
/// VAULT_ADDR/VAULT_TOKEN environment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    pub secretsmith: Option<Spanned<String>>,
    pub approle_mount: Option<Spanned<String>>,
    pub cache_max_age: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<i64>>,
    pub proxy: Option<Spanned<String>>,
}

/// `net.inet.carp.*` knobs; omitted keys are left alone.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCarp {
    pub allow: Option<Spanned<bool>>,
    /// Not a sysctl: whether `carpd run` writes allow=1 at start (see daemon::boot).
    pub allow_at_start: Option<Spanned<bool>>,
    pub preempt: Option<Spanned<bool>>,
    pub log: Option<Spanned<i64>>,
    pub dscp: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub interface: Spanned<String>,
    pub vhid: Spanned<i64>,
    pub advbase: Option<Spanned<i64>>,
    pub advskew: Option<Spanned<i64>>,
    pub password: Option<Spanned<RawPassword>>,
    pub peer: Option<Spanned<String>>,
    pub peer6: Option<Spanned<String>>,
    #[serde(default)]
    pub addresses: Vec<Spanned<String>>,
}

/// `password:` is a string (inline, discouraged) or a map naming the source. The map's keys
/// are checked by hand in validation, which gives better messages than an untagged enum's
/// "data did not match any variant".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPassword {
    Inline(String),
    Source(BTreeMap<String, String>),
}
