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
use std::path::Path;

use zeroize::Zeroizing;

/// How strict the file checks are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretPolicy {
    /// Accept secret files that are not root-only (tests and labs; `--allow-insecure-files`).
    pub allow_insecure_files: bool,
}

/// Opens `path` for reading and checks it on the descriptor. `what` names the file's role in
/// messages ("password file of group 2@vmx1").
pub fn open_private(path: &Path, what: &str, policy: SecretPolicy) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, what, &e))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    let problem = owner_mode_problem(
        meta.is_file(),
        meta.uid(),
        meta.mode(),
        own_uid(),
        policy.allow_insecure_files,
    );
    match problem {
        None => Ok(file),
        Some(p) => Err(format!("{what} {} {p}", path.display())),
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
) -> Result<Zeroizing<Vec<u8>>, String> {
    let file = open_private(path, what, policy)?;
    // Refused on its size first, without reading; the bounded read below still holds a
    // file that grows meanwhile.
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if size > limit as u64 {
        return Err(format!(
            "{what} {} is {size} bytes long, more than the {limit} bytes carpd reads for it: check the path",
            path.display()
        ));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    if bytes.len() > limit {
        return Err(format!(
            "{what} {} is longer than {limit} bytes: check the path",
            path.display()
        ));
    }
    Ok(bytes)
}

fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn open_error(path: &Path, what: &str, e: &std::io::Error) -> String {
    // O_NOFOLLOW on a symlink: ELOOP on Linux, EMLINK on FreeBSD.
    if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::EMLINK)) {
        return format!(
            "{what} {} is a symbolic link: carpd opens files that hold secrets only directly (a link can be swapped). Fix: point the setting at the file itself",
            path.display()
        );
    }
    format!("{what} {}: cannot read: {e}", path.display())
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
        let e = read_private(&link, "token file", strict(), 100).unwrap_err();
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
        let e = read_private(&f, "token file", strict(), 100).unwrap_err();
        assert!(e.contains("mode 0644"), "{e}");
        // A directory and a FIFO: refused at once (no hang on the FIFO).
        let e = read_private(dir.path(), "token file", strict(), 100).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_private(&fifo, "token file", strict(), 100).unwrap_err();
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
        let e = read_private(&f, "token file", strict(), 100).unwrap_err();
        assert!(e.contains("uid 4242"), "{e}");
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x".repeat(101)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        let e = read_private(&f, "token file", strict(), 100).unwrap_err();
        assert!(e.contains("is 101 bytes long"), "{e}");
        assert_eq!(
            read_private(&f, "token file", strict(), 101).unwrap().len(),
            101
        );
    }
}
