//! The local copy of each CARP password read from Vault, so CARP comes up when Vault/OpenBao
//! is sealed or unreachable at boot (issue 17, item 5): both routers boot together after a
//! power cut, and the Vault that would give them their passwords may well be behind them.
//!
//! After every successful Vault read of a group's password, carpd writes
//! `<state_dir>/carp-password.<vhid>@<if>` (0600, in the 0700 state directory, atomically:
//! src/statedir.rs). When a later read fails because Vault is unreachable or answers 5xx
//! (sealed, standby), the copy is used, with a warning naming the group and the copy's age;
//! any other refusal (denied, not found, deleted, login rejected) stands: those say the
//! secret or the access changed, and an old copy must not hide it.
//!
//! The copy records the source (`<mount>/<path>#<field>`) it was read from and is used only
//! for that same source, so a group pointed at another secret never gets the old password.
//! It is read through the one secret-file function (src/secret_file.rs): owner root or
//! carpd's user, no access for group or others, not a symlink, bounded.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::file::open_private;
use crate::carp::{CarpKey, GroupId, KEY_LEN};
use crate::secret_file::SecretPolicy;

const SCHEMA: &str = "carpd.password-copy.v1";
/// Largest copy read (a 20-byte key in base64 and a source path).
const MAX_COPY: u64 = 4096;

#[derive(Serialize, Deserialize)]
struct CopyFile {
    schema: String,
    source: String,
    /// The key, base64 (a key may hold any byte but NUL).
    key: String,
}

impl Drop for CopyFile {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The copies kept in a state directory.
#[derive(Clone, Debug)]
pub struct LocalCopies {
    dir: PathBuf,
}

/// A password taken from its local copy: the key, and when the copy was written.
pub struct FromCopy {
    pub key: CarpKey,
    pub written: Option<SystemTime>,
}

impl LocalCopies {
    pub fn new(dir: impl Into<PathBuf>) -> LocalCopies {
        LocalCopies { dir: dir.into() }
    }

    /// `<dir>/carp-password.<vhid>@<if>`.
    pub fn path(&self, group: &GroupId) -> PathBuf {
        self.dir.join(file_name(group))
    }

    /// Keeps `key`, read from `source`, as the group's copy. Errors name the file, never
    /// the key.
    pub fn save(&self, group: &GroupId, source: &str, key: &CarpKey) -> Result<(), String> {
        crate::statedir::ensure(&self.dir).map_err(|p| {
            format!(
                "state directory {} {}. Fix: {}",
                self.dir.display(),
                p.detail,
                p.fix
            )
        })?;
        let file = CopyFile {
            schema: SCHEMA.into(),
            source: source.into(),
            key: base64::engine::general_purpose::STANDARD.encode(key.expose()),
        };
        let bytes = Zeroizing::new(
            serde_json::to_vec(&file).map_err(|e| format!("cannot encode the copy: {e}"))?,
        );
        crate::statedir::write_atomic(&self.dir, &file_name(group), &bytes).map_err(|e| {
            format!(
                "cannot keep the local copy of the password of group {group}: {} {}: {}",
                e.op,
                e.path.display(),
                e.source
            )
        })
    }

    /// The group's copy, when there is one for `source`. A copy for another source is
    /// ignored (`Ok(None)`); a copy that cannot be trusted or read is an error.
    pub fn load(
        &self,
        group: &GroupId,
        source: &str,
        policy: SecretPolicy,
    ) -> Result<Option<FromCopy>, String> {
        let path = self.path(group);
        if !path_exists(&path) {
            return Ok(None);
        }
        crate::statedir::check_existing(&self.dir).map_err(|p| {
            format!(
                "state directory {} {}. Fix: {}",
                self.dir.display(),
                p.detail,
                p.fix
            )
        })?;
        let what = format!("local copy of the password of group {group}");
        let f = open_private(&path, &what, policy).map_err(|e| e.to_string())?;
        let written = f.metadata().and_then(|m| m.modified()).ok();
        let mut bytes = Zeroizing::new(Vec::new());
        use std::io::Read;
        f.take(MAX_COPY + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
        let bad = |why: &str| {
            format!(
                "{what} {} {why}: delete it; carpd writes it again after the next Vault read",
                path.display()
            )
        };
        if bytes.len() as u64 > MAX_COPY {
            return Err(bad("is too long"));
        }
        let file: CopyFile =
            serde_json::from_slice(&bytes).map_err(|_| bad("is not a copy carpd wrote"))?;
        if file.schema != SCHEMA {
            return Err(bad("has an unknown schema"));
        }
        if file.source != source {
            return Ok(None);
        }
        let key = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&file.key)
                .map_err(|_| bad("holds no valid key"))?,
        );
        if key.is_empty() || key.len() > KEY_LEN || crate::carp::has_nul(&key) {
            return Err(bad("holds no valid key"));
        }
        let key = CarpKey::new(key.to_vec()).map_err(|_| bad("holds no valid key"))?;
        Ok(Some(FromCopy { key, written }))
    }
}

fn file_name(group: &GroupId) -> String {
    format!("carp-password.{group}")
}

fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn group() -> GroupId {
        "2@vmx1".parse().unwrap()
    }

    #[test]
    fn a_copy_round_trips_private_and_only_for_its_source() {
        let t = tempfile::tempdir().unwrap();
        let c = LocalCopies::new(t.path().join("db"));
        let key = CarpKey::new(b"c0py-Secret".to_vec()).unwrap();
        c.save(&group(), "ops/carp/2#password", &key).unwrap();
        let p = c.path(&group());
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(t.path().join("db"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains("c0py-Secret"),
            "stored encoded, not greppable: {text}"
        );
        let strict = SecretPolicy::default();
        let got = c
            .load(&group(), "ops/carp/2#password", strict)
            .unwrap()
            .unwrap();
        assert_eq!(got.key.expose(), b"c0py-Secret");
        assert!(got.written.is_some());
        assert!(
            c.load(&group(), "ops/carp/other#password", strict)
                .unwrap()
                .is_none()
        );
        let other: GroupId = "3@vmx1".parse().unwrap();
        assert!(
            c.load(&other, "ops/carp/2#password", strict)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_copy_others_can_read_or_a_garbled_one_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let c = LocalCopies::new(t.path().join("db"));
        let key = CarpKey::new(b"c0py-Secret".to_vec()).unwrap();
        c.save(&group(), "s#f", &key).unwrap();
        let p = c.path(&group());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = c
            .load(&group(), "s#f", SecretPolicy::default())
            .err()
            .unwrap();
        assert!(e.contains("mode 0644") && !e.contains("c0py"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(
            &p,
            "{\"schema\":\"carpd.password-copy.v1\",\"source\":\"s#f\",\"key\":\"!!\"}",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = c
            .load(&group(), "s#f", SecretPolicy::default())
            .err()
            .unwrap();
        assert!(e.contains("no valid key") && e.contains("delete it"), "{e}");
    }
}
