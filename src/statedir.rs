//! carpd's state directory (`maintenance.state_dir`, default /var/db/carpd): the demotion
//! ledger and the local copies of CARP passwords live there, and carpd acts on what it reads
//! back (demotions it believes it added, a password to configure when Vault is down). So the
//! directory is trusted only when nobody else can change it, and files are written so that
//! nobody can redirect or half-replace them:
//!
//! - [`ensure`] creates it 0700 when missing, and refuses (a clear error, nothing written) a
//!   directory that is not one, is owned by another user than root or carpd's own, or is
//!   writable by group or others. [`check_existing`] applies the same rule before a read.
//! - [`write_atomic`] writes a temp file created exclusively (O_CREAT|O_EXCL|O_NOFOLLOW,
//!   0600, a name nobody can pre-create as a symlink), fsyncs it, renames it over the target
//!   and fsyncs the directory, so a power loss leaves the old file or the new, never a mix.
//! - [`read_bounded`] opens with O_NOFOLLOW and reads at most a limit.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the directory is not usable: what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirProblem {
    pub detail: String,
    pub fix: String,
}

fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The rule on what stat said about an existing path (pure; tested on every case).
pub fn dir_problem(
    dir: &Path,
    is_dir: bool,
    uid: u32,
    mode: u32,
    own_uid: u32,
) -> Option<DirProblem> {
    if !is_dir {
        return Some(DirProblem {
            detail: "exists but is not a directory".into(),
            fix: format!(
                "Move it away, or point maintenance.state_dir in carpd.yaml at a directory (default {})",
                crate::config::maintenance::DEFAULT_STATE_DIR
            ),
        });
    }
    if uid != 0 && uid != own_uid {
        return Some(DirProblem {
            detail: format!(
                "is owned by uid {uid}, neither root nor carpd's user (uid {own_uid}): its owner could change what carpd reads back"
            ),
            fix: format!("chown root {} (and chmod 0700)", dir.display()),
        });
    }
    let mode = mode & 0o777;
    if mode & 0o022 != 0 {
        return Some(DirProblem {
            detail: format!(
                "is writable by group or others (mode {mode:04o}): anyone could change what carpd believes it added to the kernel"
            ),
            fix: format!("chmod 0700 {}", dir.display()),
        });
    }
    None
}

/// Checks an existing directory; `Ok(false)` when it does not exist.
pub fn check_existing(dir: &Path) -> Result<bool, DirProblem> {
    match fs::metadata(dir) {
        Ok(m) => match dir_problem(dir, m.is_dir(), m.uid(), m.mode(), own_uid()) {
            None => Ok(true),
            Some(p) => Err(p),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(DirProblem {
            detail: format!("cannot be created: a part of the path is a file ({e})"),
            fix: "Point maintenance.state_dir in carpd.yaml at a directory path".into(),
        }),
        Err(e) => Err(DirProblem {
            detail: format!("cannot be examined: {e}"),
            fix: format!(
                "Run carpd as root, or create it: install -d -m 0700 -o root {}",
                dir.display()
            ),
        }),
    }
}

/// Creates the directory (0700, parents too) when missing; refuses one that breaks the rule.
pub fn ensure(dir: &Path) -> Result<(), DirProblem> {
    if check_existing(dir)? {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            let fix = if e.kind() == std::io::ErrorKind::PermissionDenied {
                format!(
                    "Run carpd as root, or create it: install -d -m 0700 -o root {}",
                    dir.display()
                )
            } else {
                format!(
                    "Create it (install -d -m 0700 -o root {}), or set maintenance.state_dir in carpd.yaml",
                    dir.display()
                )
            };
            DirProblem {
                detail: format!("cannot be created: {e}"),
                fix,
            }
        })?;
    // The umask may have taken bits away, never added: check what was made all the same.
    check_existing(dir).map(drop)
}

/// A failed file operation: the path, what was being done, the OS error.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// Replaces `dir/name` with `bytes` atomically and durably (mode 0600). The directory must
/// have been checked with [`ensure`].
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    replace(dir, name, bytes, true)
}

/// [`write_atomic`] without the two fsyncs: atomic against a crash of carpd (a reader sees
/// the old file or the new one), not against a power loss. For files on a latency path
/// whose loss a reboot makes harmless (the open-claim marker).
pub fn write_atomic_unsynced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FileError> {
    replace(dir, name, bytes, false)
}

fn replace(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> Result<(), FileError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let fail = |path: &Path, op, source| FileError {
        path: path.to_path_buf(),
        op,
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| fail(&tmp, "create", e))?;
    let written = f
        .write_all(bytes)
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) })
        .map_err(|e| fail(&tmp, "write", e));
    drop(f);
    let renamed =
        written.and_then(|()| fs::rename(&tmp, &path).map_err(|e| fail(&path, "replace", e)));
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if !durable {
        return Ok(());
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail(dir, "sync the directory", e))
}

/// Reads `path` (not through a symlink), at most `limit` + 1 bytes so the caller can tell a
/// file that is too long; `Ok(None)` when it does not exist.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, std::io::Error> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut b = Vec::new();
    f.take(limit + 1).read_to_end(&mut b)?;
    Ok(Some(b))
}

/// Opens (creating it 0600 when missing) a file in the directory that is written in place,
/// like a lock file: never through a symlink.
pub fn open_in_place(path: &Path) -> Result<fs::File, std::io::Error> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_rule_on_owner_and_mode() {
        let d = Path::new("/var/db/carpd");
        assert_eq!(dir_problem(d, true, 0, 0o40700, 0), None);
        assert_eq!(dir_problem(d, true, 1000, 0o40755, 1000), None);
        assert!(
            dir_problem(d, false, 0, 0o700, 0)
                .unwrap()
                .detail
                .contains("not a directory")
        );
        let p = dir_problem(d, true, 1001, 0o40700, 0).unwrap();
        assert!(
            p.detail.contains("uid 1001") && p.fix.contains("chown root"),
            "{p:?}"
        );
        for mode in [0o40770, 0o40702, 0o40777, 0o40720] {
            let p = dir_problem(d, true, 0, mode, 0).unwrap();
            assert!(p.fix.contains("chmod 0700"), "{mode:o}: {p:?}");
        }
    }

    #[test]
    fn created_0700_and_refused_when_others_can_write() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        ensure(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let p = ensure(&d).unwrap_err();
        assert!(p.detail.contains("mode 0777"), "{p:?}");
    }

    #[test]
    fn another_users_directory_is_refused_when_carpd_runs_as_root() {
        if own_uid() != 0 {
            return; // chown needs root; the pure rule above covers the case.
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("s");
        ensure(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(4242), None).unwrap();
        assert!(ensure(&d).unwrap_err().detail.contains("uid 4242"));
        assert!(check_existing(&d).is_err());
    }

    #[test]
    fn atomic_writes_never_follow_a_planted_symlink() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("s");
        ensure(&d).unwrap();
        write_atomic(&d, "f", b"one").unwrap();
        write_atomic(&d, "f", b"two").unwrap();
        assert_eq!(fs::read(d.join("f")).unwrap(), b"two");
        assert_eq!(
            fs::metadata(d.join("f")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temp file is left behind.
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        // A symlink in place of the file is replaced, not written through.
        let victim = t.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        fs::remove_file(d.join("f")).unwrap();
        std::os::unix::fs::symlink(&victim, d.join("f")).unwrap();
        assert!(
            read_bounded(&d.join("f"), 100).is_err(),
            "read through a symlink"
        );
        write_atomic(&d, "f", b"three").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(d.join("f")).unwrap(), b"three");
        assert_eq!(read_bounded(&d.join("f"), 100).unwrap().unwrap(), b"three");
        assert_eq!(read_bounded(&d.join("none"), 100).unwrap(), None);
        // A symlinked lock file is refused.
        std::os::unix::fs::symlink(&victim, d.join("lock")).unwrap();
        assert!(open_in_place(&d.join("lock")).is_err());
    }
}
