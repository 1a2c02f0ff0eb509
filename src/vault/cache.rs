//! The read cache: the last good fields of each secret, with the time they were read.
//!
//! Pure: the clock is an argument. A value younger than `max_age` is served without a round
//! trip (a failover must not wait for Vault when credentials are fresh). When a read fails,
//! the last good value is kept only while it is younger than `max_age`, and the answer says
//! it is stale and why; past that age the error is returned and the value dropped. Values
//! are [`Fields`] behind an `Arc`: the last holder to drop them zeroizes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::VaultError;
use super::store::{Fields, SecretPath};

/// Fields as served, with their age and, when the last read failed, why.
#[derive(Clone, Debug)]
pub struct Cached {
    pub fields: Arc<Fields>,
    /// How long ago Vault returned these fields.
    pub age: Duration,
    /// `Some`: the latest read failed with this error and these are the last good fields.
    pub stale: Option<VaultError>,
}

struct Entry {
    fields: Arc<Fields>,
    fetched: Instant,
}

/// Per-path cache of the last good read.
pub struct ReadCache {
    max_age: Duration,
    entries: HashMap<SecretPath, Entry>,
}

impl ReadCache {
    /// `max_age` zero disables caching: every read goes to Vault and failures are not masked.
    pub fn new(max_age: Duration) -> ReadCache {
        ReadCache {
            max_age,
            entries: HashMap::new(),
        }
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The cached fields if younger than `max_age`.
    pub fn fresh(&self, path: &SecretPath, now: Instant) -> Option<Cached> {
        let e = self.entries.get(path)?;
        let age = now.saturating_duration_since(e.fetched);
        (age < self.max_age).then(|| Cached {
            fields: e.fields.clone(),
            age,
            stale: None,
        })
    }

    /// Records a good read and returns it.
    pub fn store(&mut self, path: &SecretPath, fields: Fields, now: Instant) -> Cached {
        let fields = Arc::new(fields);
        if self.max_age > Duration::ZERO {
            self.entries.insert(
                path.clone(),
                Entry {
                    fields: fields.clone(),
                    fetched: now,
                },
            );
        }
        Cached {
            fields,
            age: Duration::ZERO,
            stale: None,
        }
    }

    /// After a failed read: the last good fields flagged stale if still within `max_age`,
    /// else the error (and the old value is dropped).
    pub fn fallback(
        &mut self,
        path: &SecretPath,
        now: Instant,
        err: VaultError,
    ) -> Result<Cached, VaultError> {
        match self.fresh(path, now) {
            Some(mut c) => {
                c.stale = Some(err);
                Ok(c)
            }
            None => {
                self.entries.remove(path);
                Err(err)
            }
        }
    }

    /// Drops every value (configuration reload).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::{ExposeSecret, SecretString};

    use super::*;
    use crate::vault::error::Kind;

    fn fields(v: &str) -> Fields {
        let mut m = BTreeMap::new();
        m.insert("password".into(), SecretString::from(v));
        Fields::new(m)
    }

    fn err() -> VaultError {
        VaultError::Api {
            kind: Kind::Unreachable,
            server: "https://v".into(),
            op: "read ops/x".into(),
            reason: "down".into(),
            fix: "start it".into(),
        }
    }

    #[test]
    fn fresh_values_are_served_and_failures_fall_back_within_max_age_only() {
        let t0 = Instant::now();
        let p: SecretPath = "ops/x".parse().unwrap();
        let mut c = ReadCache::new(Duration::from_secs(60));
        assert!(c.fresh(&p, t0).is_none());
        c.store(&p, fields("one"), t0);
        let hit = c.fresh(&p, t0 + Duration::from_secs(59)).unwrap();
        assert_eq!(hit.fields.get("password").unwrap().expose_secret(), "one");
        assert!(c.fresh(&p, t0 + Duration::from_secs(60)).is_none());

        let stale = c.fallback(&p, t0 + Duration::from_secs(30), err()).unwrap();
        assert_eq!(stale.age, Duration::from_secs(30));
        assert_eq!(stale.stale.unwrap().kind(), Kind::Unreachable);

        let e = c
            .fallback(&p, t0 + Duration::from_secs(61), err())
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Unreachable);
        // Dropped: even an earlier clock finds nothing now.
        assert!(c.fresh(&p, t0).is_none());
    }

    #[test]
    fn zero_max_age_caches_nothing() {
        let t0 = Instant::now();
        let p: SecretPath = "ops/x".parse().unwrap();
        let mut c = ReadCache::new(Duration::ZERO);
        c.store(&p, fields("one"), t0);
        assert!(c.fresh(&p, t0).is_none());
        assert!(c.fallback(&p, t0, err()).is_err());
    }
}
