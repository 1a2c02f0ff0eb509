//! The one way carpd opens a file that holds a secret (the secretsmith file, a token file,
//! ovh.conf, a CARP password file, a configuration with an inline password, the local copy of
//! a CARP password).
//!
//! Checking a path and then opening it is a race an unprivileged local user can win (swap in
//! a symlink to a file they control, or to one they want read). So the file is opened first —
//! `O_NOFOLLOW` (a symlink as the last component is refused), `O_CLOEXEC` (no child inherits
//! it), `O_NONBLOCK` (a FIFO planted there cannot hang carpd) — and every check is made on
//! the open descriptor with fstat(2): a regular file, owned by root or by carpd's own user,
//! no access for group or others unless `--allow-insecure-files`. The read is bounded.
//!
//! A module of its own, below every adapter: the Vault settings (vault), ovh.conf (ovh) and
//! the password sources (secrets) all read through it, and it depends on none of them.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// How strict the file checks are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretPolicy {
    /// Accept secret files that are not root-only (tests and labs; `--allow-insecure-files`).
    pub allow_insecure_files: bool,
}

/// Why a secret file was refused or could not be read. Its message names the file's role,
/// the path and the fix; never anything read from the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} {}{reason}", path.display())]
pub struct SecretFileError {
    /// The file's role ("password file of group 2@vmx1").
    pub what: String,
    pub path: PathBuf,
    pub reason: Reason,
}

/// What was wrong with a secret file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The last component is a symbolic link (refused by `O_NOFOLLOW`).
    Symlink,
    /// open(2), fstat(2) or read(2) failed: the error's kind and words (an `io::Error` is
    /// neither `Clone` nor `Eq`, which the callers' errors are).
    Unreadable(std::io::ErrorKind, String),
    /// Not a regular file, or owner or mode wrong ([`owner_mode_problem`]'s words).
    Unsafe(String),
    /// fstat says it is bigger than carpd reads for it.
    TooLarge { size: u64, limit: usize },
    /// It grew past the limit while being read.
    Longer { limit: usize },
}

impl Reason {
    fn unreadable(e: &std::io::Error) -> Reason {
        Reason::Unreadable(e.kind(), e.to_string())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Symlink => write!(
                f,
                " is a symbolic link: carpd opens files that hold secrets only directly (a link can be swapped). Fix: point the setting at the file itself"
            ),
            Reason::Unreadable(_, e) => write!(f, ": cannot read: {e}"),
            Reason::Unsafe(problem) => write!(f, " {problem}"),
            Reason::TooLarge { size, limit } => write!(
                f,
                " is {size} bytes long, more than the {limit} bytes carpd reads for it: check the path"
            ),
            Reason::Longer { limit } => write!(f, " is longer than {limit} bytes: check the path"),
        }
    }
}

impl SecretFileError {
    fn new(path: &Path, what: &str, reason: Reason) -> SecretFileError {
        SecretFileError {
            what: what.to_string(),
            path: path.to_path_buf(),
            reason,
        }
    }
}

/// Opens `path` for reading and checks it on the descriptor. `what` names the file's role in
/// messages ("password file of group 2@vmx1").
pub fn open_private(
    path: &Path,
    what: &str,
    policy: SecretPolicy,
) -> Result<File, SecretFileError> {
    let fail = |reason| SecretFileError::new(path, what, reason);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // O_NOFOLLOW on a symlink: ELOOP on Linux, EMLINK on FreeBSD.
            if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EMLINK)) {
                fail(Reason::Symlink)
            } else {
                fail(Reason::unreadable(&e))
            }
        })?;
    let meta = file.metadata().map_err(|e| fail(Reason::unreadable(&e)))?;
    let problem = owner_mode_problem(
        meta.is_file(),
        meta.uid(),
        meta.mode(),
        own_uid(),
        policy.allow_insecure_files,
    );
    match problem {
        None => Ok(file),
        Some(p) => Err(fail(Reason::Unsafe(p))),
    }
}

/// Opens `path` like [`open_private`] and reads at most `limit` bytes; a longer file is
/// refused (a wrong path must not make carpd read megabytes into memory). The bytes are wiped
/// when dropped.
pub fn read_private(
    path: &Path,
    what: &str,
    policy: SecretPolicy,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    let fail = |reason| SecretFileError::new(path, what, reason);
    let file = open_private(path, what, policy)?;
    // Refused on its size first, without reading; the bounded read below still holds a
    // file that grows meanwhile.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > limit as u64 {
        return Err(fail(Reason::TooLarge { size, limit }));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(Reason::unreadable(&e)))?;
    if bytes.len() > limit {
        return Err(fail(Reason::Longer { limit }));
    }
    Ok(bytes)
}

fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The rule, on what fstat said (pure, so every case is tested without root). `None`: fine.
pub fn owner_mode_problem(
    regular: bool,
    uid: u32,
    mode: u32,
    own_uid: u32,
    allow_insecure: bool,
) -> Option<String> {
    if !regular {
        return Some("is not a regular file".into());
    }
    if allow_insecure {
        return None;
    }
    if uid != 0 && uid != own_uid {
        return Some(format!(
            "is owned by uid {uid}, neither root nor carpd's user (uid {own_uid}): it holds a secret, so carpd only trusts files its own user or root owns. Fix: chown root:wheel on it (or pass --allow-insecure-files in a lab)"
        ));
    }
    let perm = mode & 0o777;
    if perm & 0o077 != 0 {
        return Some(format!(
            "has mode {perm:04o}: it holds a secret and must not be accessible to group or others. Fix: chmod 0400 on it, or chmod 0600 (or pass --allow-insecure-files in a lab)"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn strict() -> SecretPolicy {
        SecretPolicy::default()
    }

    #[test]
    fn the_rule_on_owner_and_mode() {
        assert_eq!(owner_mode_problem(true, 0, 0o100400, 0, false), None);
        assert_eq!(owner_mode_problem(true, 1000, 0o100600, 1000, false), None);
        assert_eq!(owner_mode_problem(true, 0, 0o100600, 1000, false), None);
        let other = owner_mode_problem(true, 1001, 0o100400, 1000, false).unwrap();
        assert!(
            other.contains("uid 1001") && other.contains("chown"),
            "{other}"
        );
        for mode in [0o640, 0o604, 0o440, 0o404, 0o660, 0o602] {
            let p = owner_mode_problem(true, 0, mode, 0, false).unwrap();
            assert!(p.contains("chmod 0400"), "{mode:o}: {p}");
            assert_eq!(owner_mode_problem(true, 0, mode, 0, true), None);
        }
        assert!(
            owner_mode_problem(false, 0, 0o600, 0, true)
                .unwrap()
                .contains("not a regular file")
        );
    }

    #[test]
    fn a_symlink_is_refused_even_to_a_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "s3cret").unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o400)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let err = read_private(&link, "token file", strict(), 100).unwrap_err();
        assert_eq!(err.reason, Reason::Symlink);
        let e = err.to_string();
        assert!(e.contains("symbolic link") && !e.contains("s3cret"), "{e}");
        assert_eq!(
            &*read_private(&good, "token file", strict(), 100).unwrap(),
            b"s3cret"
        );
    }

    #[test]
    fn open_access_and_other_files_are_refused_on_the_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "s3cret").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&f, "token file", strict(), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0644"), "{e}");
        // A directory and a FIFO: refused at once (no hang on the FIFO).
        let e = read_private(dir.path(), "token file", strict(), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_private(&fifo, "token file", strict(), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn another_users_file_is_refused_when_carpd_runs_as_root() {
        if own_uid() != 0 {
            // The pure rule above covers this case; changing ownership needs root.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "s3cret").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        std::os::unix::fs::chown(&f, Some(4242), None).unwrap();
        let e = read_private(&f, "token file", strict(), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("uid 4242"), "{e}");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x".repeat(101)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        let e = read_private(&f, "token file", strict(), 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is 101 bytes long"), "{e}");
        assert_eq!(
            read_private(&f, "token file", strict(), 101).unwrap().len(),
            101
        );
    }
}
