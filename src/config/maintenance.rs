//! The `maintenance:` section of carpd.yaml: where the demotion ledger lives and how much
//! `carpd maintenance enter` demotes this node.
//!
//! The ledger (`<state_dir>/ledger.json`, see `controller::ledger`) records what carpd added
//! to `net.inet.carp.demotion`, so that `leave` removes exactly that and a reboot (which
//! resets the kernel's demotion) can be undone by re-applying it. The section is optional;
//! the defaults suit a FreeBSD router.

use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::error::{Pos, Problems};

/// Where the ledger lives unless `maintenance.state_dir` says otherwise (hier(7): /var/db
/// holds persistent, machine-specific state).
pub const DEFAULT_STATE_DIR: &str = "/var/db/carpd";

/// What `maintenance enter` adds: the most the kernel honours (effective advskew is clamped
/// to 240), so the node loses every election to a peer that preempts.
pub const DEFAULT_DEMOTION: u32 = 240;

/// Allowed `maintenance.demotion`: 0 would do nothing; more than 240 changes nothing either
/// (the kernel clamps advskew + demotion to 240) and would only confuse the arithmetic of
/// anyone reading the sysctl.
pub const DEMOTION_RANGE: (u32, u32) = (1, 240);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    pub state_dir: Option<Spanned<String>>,
    pub demotion: Option<Spanned<i64>>,
}

/// The checked `maintenance:` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// Holds `ledger.json` and its lock file.
    pub state_dir: PathBuf,
    /// Added to `net.inet.carp.demotion` by `carpd maintenance enter`.
    pub demotion: u32,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            demotion: DEFAULT_DEMOTION,
        }
    }
}

pub fn validate_maintenance(raw: Option<&RawMaintenance>, p: &mut Problems) -> MaintenanceConfig {
    let mut out = MaintenanceConfig::default();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(s) = &raw.state_dir {
        let path = PathBuf::from(s.value.trim());
        if !path.is_absolute() {
            p.add(
                Pos::of(s),
                "maintenance.state_dir",
                format!(
                    "'{}' must be an absolute path, e.g. {DEFAULT_STATE_DIR}",
                    s.value
                ),
            );
        } else {
            out.state_dir = path;
        }
    }
    if let Some(d) = &raw.demotion {
        let (min, max) = DEMOTION_RANGE;
        match u32::try_from(d.value) {
            Ok(v) if (min..=max).contains(&v) => out.demotion = v,
            _ => p.add(
                Pos::of(d),
                "maintenance.demotion",
                format!(
                    "{} is out of range: allowed {min}..{max} (default {DEFAULT_DEMOTION}; the kernel caps advskew + demotion at 240)",
                    d.value
                ),
            ),
        }
    }
    out
}
