//! The `daemon:` section of carpd.yaml: how often `carpd run` looks at the kernel, and how it
//! folds bursts of events together.
//!
//! Durations are written as humantime strings (`5s`, `250ms`, `1m 30s`) or as a plain number
//! of seconds. Both settings have defaults that suit a router; the section is optional.

use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::error::{Pos, Problems};

/// Periodic kernel re-read when nothing else happens: a missed or lost devd event is noticed
/// within this time.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Events for one group closer together than this share one reconcile (after the first,
/// which runs at once).
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(100);

/// How long `carpd run` may take to stop: a claim inside its open window (the IP released
/// from the other vMAC, not yet bound here) is finished first. Well inside rc(8)'s
/// shutdown timeout (`rcshutdown_timeout`, 90 s by default).
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(20);

const STOP_GRACE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(80));
const RESYNC_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
const COALESCE_RANGE: (Duration, Duration) = (Duration::ZERO, Duration::from_secs(10));

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub resync_interval: Option<Spanned<RawDuration>>,
    pub coalesce: Option<Spanned<RawDuration>>,
    pub stop_grace: Option<Spanned<RawDuration>>,
}

/// A duration as written: seconds, or a humantime string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// The checked `daemon:` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    pub resync_interval: Duration,
    pub coalesce: Duration,
    /// On SIGTERM: the longest wait for open claims to finish.
    pub stop_grace: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            coalesce: DEFAULT_COALESCE,
            stop_grace: DEFAULT_STOP_GRACE,
        }
    }
}

pub fn validate_daemon(raw: Option<&RawDaemon>, p: &mut Problems) -> DaemonConfig {
    let mut out = DaemonConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(v) = &raw.resync_interval
        && let Some(d) = duration(p, "daemon.resync_interval", v, RESYNC_RANGE)
    {
        out.resync_interval = d;
    }
    if let Some(v) = &raw.coalesce
        && let Some(d) = duration(p, "daemon.coalesce", v, COALESCE_RANGE)
    {
        out.coalesce = d;
    }
    if let Some(v) = &raw.stop_grace
        && let Some(d) = duration(p, "daemon.stop_grace", v, STOP_GRACE_RANGE)
    {
        out.stop_grace = d;
    }
    out
}

/// Checks a duration key against its range; shared by the sections that take durations.
pub(crate) fn duration(
    p: &mut Problems,
    key: &str,
    v: &Spanned<RawDuration>,
    (min, max): (Duration, Duration),
) -> Option<Duration> {
    let parsed = match &v.value {
        RawDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
        RawDuration::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            format!("{t:?} is not a duration ({e}): write e.g. 5s, 250ms or 1m 30s, or a number of seconds")
        }),
    };
    match parsed {
        Ok(d) if d >= min && d <= max => Some(d),
        Ok(d) => {
            p.add(
                Pos::of(v),
                key,
                format!(
                    "{} is out of range: allowed {} to {}",
                    humantime::format_duration(d),
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
            None
        }
        Err(msg) => {
            p.add(Pos::of(v), key, msg);
            None
        }
    }
}
