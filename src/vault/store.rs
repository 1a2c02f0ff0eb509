//! The narrow interface carpd has with Vault/OpenBao, and the values crossing it.
//!
//! [`SecretStore`] is all the daemon and the CLI need: log in (the token stays inside the
//! store), renew, look the token up, read one kv-v2 secret. The real implementation is
//! [`super::client::VaultStore`], the in-memory one `super::fake::FakeStore` (unit tests). Secret paths
//! are written as in secretsmith: the first segment is the kv-v2 mount
//! (`apps/network/carp-hyper-001-switch` = mount `apps`, path `network/carp-hyper-001-switch`).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use super::error::VaultError;
use super::secretsmith::Settings;

/// A kv-v2 secret's location: mount and path inside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath {
    mount: String,
    path: String,
}

impl SecretPath {
    pub fn mount(&self) -> &str {
        &self.mount
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The HTTP path a policy must allow: `<mount>/data/<path>`.
    pub fn policy_path(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }
}

impl FromStr for SecretPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().trim_matches('/');
        match t.split_once('/') {
            Some((mount, path)) if !path.split('/').any(str::is_empty) && !mount.is_empty() => {
                Ok(SecretPath {
                    mount: mount.to_string(),
                    path: path.to_string(),
                })
            }
            _ => Err(format!(
                "'{}' is not <mount>/<path> of a kv-v2 secret, e.g. apps/network/carp-hyper-001-switch",
                s.escape_default()
            )),
        }
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.mount, self.path)
    }
}

/// The fields of one secret. Values are zeroized when dropped; `Debug` shows names only.
#[derive(Clone, Default)]
pub struct Fields(BTreeMap<String, SecretString>);

impl Fields {
    pub fn new(map: BTreeMap<String, SecretString>) -> Fields {
        Fields(map)
    }
    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }
    /// Every field, for consumers that take a map (OVH credentials).
    pub fn as_map(&self) -> &BTreeMap<String, SecretString> {
        &self.0
    }
    /// Field names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()?;
        f.write_str(" [values redacted]")
    }
}

/// What Vault says about the current token (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    /// Time to live as of the answer; `None` means it never expires (root tokens).
    pub ttl: Option<Duration>,
    pub renewable: bool,
    pub policies: Vec<String>,
}

/// One external system, one trait: everything carpd asks Vault/OpenBao.
///
/// Futures are `Send` so the daemon may run them on any runtime.
pub trait SecretStore: Send {
    /// The server URL, for messages (empty before the first login).
    fn server(&self) -> &str;

    /// Logs in with `settings` (reconnecting first if its server part changed); the new
    /// token replaces the old one inside the store.
    fn login(
        &mut self,
        settings: &Settings,
    ) -> impl Future<Output = Result<TokenInfo, VaultError>> + Send;

    /// Renews the current token.
    fn renew(&mut self) -> impl Future<Output = Result<TokenInfo, VaultError>> + Send;

    /// Looks the current token up (TTL, policies).
    fn lookup(&mut self) -> impl Future<Output = Result<TokenInfo, VaultError>> + Send;

    /// Reads the latest version of a kv-v2 secret.
    fn read(
        &mut self,
        path: &SecretPath,
    ) -> impl Future<Output = Result<Fields, VaultError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_segment_is_the_mount() {
        let p: SecretPath = "apps/network/carp-hyper-001-switch".parse().unwrap();
        assert_eq!(p.mount(), "apps");
        assert_eq!(p.path(), "network/carp-hyper-001-switch");
        assert_eq!(p.policy_path(), "apps/data/network/carp-hyper-001-switch");
        assert_eq!(p.to_string(), "apps/network/carp-hyper-001-switch");
        let p: SecretPath = "/ops/secrets/network/carp/2/".parse().unwrap();
        assert_eq!((p.mount(), p.path()), ("ops", "secrets/network/carp/2"));
        for bad in ["", "apps", "apps/", "/x", "a//b", "a/b//c"] {
            assert!(bad.parse::<SecretPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fields_debug_shows_names_only() {
        let mut m = BTreeMap::new();
        m.insert("password".to_string(), SecretString::from("HUNTER2"));
        let f = Fields::new(m);
        let d = format!("{f:?}");
        assert!(d.contains("password") && !d.contains("HUNTER2"), "{d}");
    }
}
