//! The open-window marker: `claims.json` in the state directory names every failover IP a
//! claim has released (or is binding) and not yet bound here.
//!
//! Written when a claim enters its open window, removed when the window closes. It is left
//! behind only when carpd dies inside the window (`kill -9`, a crash) or its stop grace runs
//! out; the next start reads it and repairs those IPs before anything else
//! ([`crate::controller::machine::Input::Repair`]).
//!
//! Written through [`crate::statedir`] (the directory's owner and mode checked, an exclusive
//! temporary file, O_NOFOLLOW, a rename: atomic against a crash of carpd), without fsync: it
//! sits on the reaction path just before the first mutation, and a power loss reboots the
//! node anyway, after which the level-triggered start (MASTER here and the IP on no vMAC:
//! claim) repairs without it. It holds no secret.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The marker's file name inside the state directory.
pub const MARKER_FILE: &str = "claims.json";

/// Refuse to read a marker larger than this (it holds a few lines per failover IP).
const MAX_MARKER: u64 = 256 * 1024;

/// One IP inside its open window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The claim's phase when it was written (`release from …`, `bind`).
    pub phase: String,
    /// Seconds since the epoch.
    pub since: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    schema: String,
    open: BTreeMap<IpAddr, Entry>,
}

const SCHEMA: &str = "carpd.claims.v1";

/// The marker of one daemon.
#[derive(Debug)]
pub struct Marker {
    path: PathBuf,
    open: Mutex<BTreeMap<IpAddr, Entry>>,
}

impl Marker {
    pub fn new(state_dir: &Path) -> Marker {
        Marker {
            path: state_dir.join(MARKER_FILE),
            open: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What an earlier run left: IPs whose window it never closed. A missing file is an
    /// empty list; an unreadable one is an error naming the file (the caller logs it and
    /// falls back on the level-triggered start).
    pub fn load(&self) -> Result<BTreeMap<IpAddr, Entry>, String> {
        let bytes = match crate::statedir::read_bounded(&self.path, MAX_MARKER) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(BTreeMap::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let text = String::from_utf8_lossy(&bytes);
        if text.len() as u64 > MAX_MARKER {
            return Err(format!(
                "{}: larger than {MAX_MARKER} bytes; not a marker carpd wrote (remove it)",
                self.path.display()
            ));
        }
        let file: File = serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a claims marker ({e}); remove it if carpd did not write it",
                self.path.display()
            )
        })?;
        if file.schema != SCHEMA {
            return Err(format!(
                "{}: unknown schema {:?} (expected {SCHEMA})",
                self.path.display(),
                file.schema
            ));
        }
        Ok(file.open)
    }

    /// Keeps what [`Marker::load`] found until those IPs are repaired.
    pub fn adopt(&self, found: BTreeMap<IpAddr, Entry>) {
        self.lock().extend(found);
    }

    /// `ip` entered (or is still in) its open window in `phase`.
    pub fn open(&self, ip: IpAddr, phase: &str) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut open = self.lock();
        let changed = open.get(&ip).is_none_or(|e| e.phase != phase);
        if changed {
            open.insert(
                ip,
                Entry {
                    phase: phase.to_string(),
                    since,
                },
            );
            self.write(&open);
        }
    }

    /// `ip`'s window closed (bound here, found bound elsewhere, or no longer ours).
    pub fn close(&self, ip: IpAddr) {
        let mut open = self.lock();
        if open.remove(&ip).is_some() {
            self.write(&open);
        }
    }

    /// IPs currently marked open.
    pub fn snapshot(&self) -> BTreeMap<IpAddr, Entry> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<IpAddr, Entry>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rewrites the file (or removes it when nothing is open). A failure is logged: the
    /// marker helps the next start, it must never stop a claim.
    fn write(&self, open: &BTreeMap<IpAddr, Entry>) {
        let r = if open.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            self.replace(open)
        };
        if let Err(e) = r {
            tracing::warn!(
                path = %self.path.display(),
                "cannot update the open-claim marker ({e}); a crash now would not be repaired before the next start's normal checks"
            );
        }
    }

    fn replace(&self, open: &BTreeMap<IpAddr, Entry>) -> std::io::Result<()> {
        let file = File {
            schema: SCHEMA.to_string(),
            open: open.clone(),
        };
        let text = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        // The state directory may not exist before the first ledger or marker write; one
        // that another user could change is refused, as for the ledger.
        crate::statedir::ensure(dir).map_err(|p| {
            std::io::Error::other(format!("{}: {} ({})", dir.display(), p.detail, p.fix))
        })?;
        crate::statedir::write_atomic_unsynced(dir, MARKER_FILE, &text).map_err(|e| {
            std::io::Error::other(format!("{} {}: {}", e.op, e.path.display(), e.source))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_close_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        // The state directory is created on the first write.
        let m = Marker::new(&dir.path().join("db"));
        let ip: IpAddr = "51.68.252.230".parse().unwrap();
        assert!(m.load().unwrap().is_empty(), "no file: nothing open");
        m.open(ip, "release from 02:00:00:11:22:33");
        let again = Marker::new(&dir.path().join("db")).load().unwrap();
        assert_eq!(again[&ip].phase, "release from 02:00:00:11:22:33");
        m.open(ip, "bind");
        let again = Marker::new(&dir.path().join("db")).load().unwrap();
        assert_eq!(again[&ip].phase, "bind");
        m.close(ip);
        assert!(!m.path().exists(), "closed: the file is gone");
    }

    #[test]
    fn a_foreign_or_huge_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = Marker::new(dir.path());
        std::fs::write(m.path(), "{\"schema\":\"x\",\"open\":{}}").unwrap();
        assert!(m.load().unwrap_err().contains("claims.json"));
        std::fs::write(m.path(), "garbage").unwrap();
        assert!(m.load().unwrap_err().contains("not a claims marker"));
        std::fs::write(m.path(), vec![b' '; 300 * 1024]).unwrap();
        assert!(m.load().unwrap_err().contains("larger than"));
    }

    #[test]
    fn a_symlink_or_a_directory_others_may_change_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
        let m = Marker::new(&db);
        // A marker planted as a symlink is never followed.
        let elsewhere = dir.path().join("elsewhere.json");
        std::fs::write(&elsewhere, "{\"schema\":\"carpd.claims.v1\",\"open\":{}}").unwrap();
        std::os::unix::fs::symlink(&elsewhere, m.path()).unwrap();
        assert!(m.load().unwrap_err().contains("claims.json"));
        std::fs::remove_file(m.path()).unwrap();
        // A state directory others may write: nothing is written there.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o777)).unwrap();
        let ip: IpAddr = "51.68.252.230".parse().unwrap();
        m.open(ip, "bind");
        assert!(
            !m.path().exists(),
            "written into a world-writable directory"
        );
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o700)).unwrap();
        m.open(ip, "verify");
        assert!(m.path().exists());
    }
}
