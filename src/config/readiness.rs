//! The `readiness:` section of carpd.yaml: how often the daemon checks, while BACKUP (and
//! MASTER), that it could complete a failover now (credentials fresh, own vMAC present, OVH
//! reachable, clock sane), and whether being not ready demotes this node.
//!
//! Demotion while not ready goes through the demotion ledger (reason `not_ready`), like
//! maintenance, so it is removed exactly and survives a restart. It is off (0) by default:
//! demoting a node because a cloud API is slow is a policy a site must choose.

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::daemon::{RawDuration, duration};
use super::error::{Pos, Problems};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CLOCK_DELTA: Duration = Duration::from_secs(10);

/// Every check touches OVH and Vault: more often than every 5 s eats the API rate budget.
const INTERVAL_RANGE: (Duration, Duration) = (Duration::from_secs(5), Duration::from_secs(3600));
/// OVH refuses signatures whose timestamp is far off; beyond an hour the check means nothing.
const CLOCK_DELTA_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// 0 is off; the kernel caps advskew + demotion at 240.
const DEMOTION_MAX: u32 = 240;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReadiness {
    pub interval: Option<Spanned<RawDuration>>,
    pub max_clock_delta: Option<Spanned<RawDuration>>,
    pub demotion: Option<Spanned<i64>>,
}

/// The checked `readiness:` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessConfig {
    /// Period of the readiness checks.
    pub interval: Duration,
    /// A larger |local clock - OVH clock| counts as not ready.
    pub max_clock_delta: Duration,
    /// Added to `net.inet.carp.demotion` (through the ledger) while not ready; 0 = off.
    pub demotion: u32,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            interval: DEFAULT_INTERVAL,
            max_clock_delta: DEFAULT_MAX_CLOCK_DELTA,
            demotion: 0,
        }
    }
}

pub fn validate_readiness(raw: Option<&RawReadiness>, p: &mut Problems) -> ReadinessConfig {
    let mut out = ReadinessConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(v) = &raw.interval
        && let Some(d) = duration(p, "readiness.interval", v, INTERVAL_RANGE)
    {
        out.interval = d;
    }
    if let Some(v) = &raw.max_clock_delta
        && let Some(d) = duration(p, "readiness.max_clock_delta", v, CLOCK_DELTA_RANGE)
    {
        out.max_clock_delta = d;
    }
    if let Some(d) = &raw.demotion {
        match u32::try_from(d.value) {
            Ok(v) if v <= DEMOTION_MAX => out.demotion = v,
            _ => p.add(
                Pos::of(d),
                "readiness.demotion",
                format!(
                    "{} is out of range: allowed 0 (off, the default) to {DEMOTION_MAX}",
                    d.value
                ),
            ),
        }
    }
    out
}
