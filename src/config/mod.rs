//! carpd.yaml: the checked configuration model, and loading it from a file.
//!
//! Layers, ripgrep-style: `raw.rs` is the YAML shape (serde only), `validate.rs` turns it into
//! the types below or a list of every problem with its line, column and key path. `load` is the
//! only function here that touches the file system; `parse` works on a string so tests and the
//! fuzzer drive the whole pipeline without files.
//!
//! Sections with rules of their own live in submodules: `ovh.rs` (ovh: and failover_ips:),
//! `daemon.rs`, `maintenance.rs`, `metrics.rs`, `readiness.rs`; `error.rs` is the problem list.
//! Unknown keys are refused everywhere (a typo is an error, not a silently ignored setting).
//! The module depends on nothing of carpd's but the vocabulary (`carp`) and the OVH types its
//! settings are parsed into (`tests/architecture.rs`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::carp::{CarpKey, GroupId, Sysctl};

pub mod daemon;
pub mod error;
pub mod maintenance;
pub mod metrics;
pub mod ovh;
pub mod raw;
pub mod readiness;
pub mod validate;

pub use daemon::DaemonConfig;
pub use error::{ConfigError, Pos, Problem};
pub use maintenance::MaintenanceConfig;
pub use metrics::MetricsConfig;
pub use readiness::ReadinessConfig;

/// Where carpd looks when neither `-c` nor `CARPD_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/usr/local/etc/carpd.yaml";

/// Largest configuration file carpd reads; a bigger one is certainly a mistake.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub node: String,
    /// Sysctls to enforce, in a stable order; knobs not listed are left alone.
    pub sysctls: Vec<(Sysctl, i64)>,
    /// `carp.allow_at_start`: `carpd run` writes `net.inet.carp.allow=1` once the demotion
    /// ledger and the configuration are applied (the boot order; default true).
    pub allow_at_start: bool,
    pub groups: Vec<GroupConfig>,
    /// How `carpd run` paces its kernel reads (`daemon:`).
    pub daemon: DaemonConfig,
    /// How to reach Vault/OpenBao (`vault:`); required when a secret comes from Vault.
    pub vault: Option<VaultConfig>,
    /// The `ovh:` section, if any.
    pub ovh: Option<ovh::OvhConfig>,
    /// Failover IPs to keep on the MASTER (see `ovh.rs`).
    pub failover_ips: Vec<ovh::FailoverIp>,
    /// Prometheus metrics outputs (`metrics:`); both off by default.
    pub metrics: MetricsConfig,
    /// Readiness checks and the optional demotion while not ready (`readiness:`).
    pub readiness: ReadinessConfig,
    /// The demotion ledger's directory and the maintenance demotion (`maintenance:`).
    pub maintenance: MaintenanceConfig,
    /// Things that work but deserve attention (inline passwords, ...).
    pub warnings: Vec<Problem>,
}

/// One CARP group carpd manages.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub id: GroupId,
    pub advbase: u32,
    pub advskew: u32,
    pub password: Option<PasswordSource>,
    /// Unicast IPv4 peer; `None` is multicast.
    pub peer: Option<Ipv4Addr>,
    /// Unicast IPv6 peer; `None` is multicast.
    pub peer6: Option<Ipv6Addr>,
    /// Sorted, at least one.
    pub addresses: Vec<IpNet>,
    /// Where the group starts in the file, for later messages.
    pub pos: Pos,
    /// Where `peer` (or else `peer6`) is written, for messages about unicast.
    pub peer_pos: Option<Pos>,
    /// Key path of the group, e.g. `groups[0]`.
    pub key: String,
}

/// AppRole's default mount, as in secretsmith (`vault.approle_mount`).
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// carpd.yaml's `vault:` section, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// The secretsmith file; `None` means the VAULT_ADDR/VAULT_TOKEN environment.
    pub secretsmith: Option<PathBuf>,
    /// AppRole auth mount (default `approle`).
    pub approle_mount: String,
    /// How long a secret read from Vault may be served without asking again, and kept when
    /// a later read fails (default 300 s; 0 disables the cache).
    pub cache_max_age: Duration,
    /// Time limit of one request to Vault (default 10 s).
    pub timeout: Duration,
    /// The HTTP proxy to reach Vault through (`vault.proxy`); `None`: direct. Proxies from
    /// the environment (HTTPS_PROXY…) are never used (src/remote.rs).
    pub proxy: Option<String>,
    pub pos: Pos,
}

impl VaultConfig {
    pub const DEFAULT_CACHE_MAX_AGE: Duration = Duration::from_secs(300);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// Where a group's CARP password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A root-only file holding the password (one trailing newline is ignored).
    File(PathBuf),
    /// A kv-v2 secret in Vault/OpenBao: `mount/path`, and the field holding the password.
    Vault { path: String, field: String },
    /// Written in carpd.yaml itself (discouraged; the file must then be root-only).
    Inline(CarpKey),
}

impl fmt::Debug for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::File(p) => write!(f, "File({})", p.display()),
            PasswordSource::Vault { path, field } => write!(f, "Vault({path}#{field})"),
            PasswordSource::Inline(_) => f.write_str("Inline([redacted])"),
        }
    }
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::File(p) => write!(f, "file {}", p.display()),
            PasswordSource::Vault { path, field } => write!(f, "vault {path} field {field}"),
            PasswordSource::Inline(_) => f.write_str("inline in the configuration file"),
        }
    }
}

/// Reads and validates `path`. The only file-system access of this module.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |message: String| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            pos: Pos::default(),
            key: String::new(),
            message,
            detail: String::new(),
        }],
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            fail(
                "cannot read the configuration: no such file. Create it (see carpd.yaml(5) and the README), or point -c/--config or CARPD_CONFIG at another file"
                    .into(),
            )
        } else {
            fail(format!("cannot read the configuration: {e}"))
        }
    })?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(fail(format!(
            "is {} bytes long; carpd refuses configuration files over {MAX_FILE_SIZE} bytes",
            meta.len()
        )));
    }
    let bytes =
        std::fs::read(path).map_err(|e| fail(format!("cannot read the configuration: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "is not valid UTF-8 (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `file` is only used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let raw = validate::parse_yaml(text, file)?;
    validate::validate(raw, file)
}

#[cfg(test)]
mod tests;
