//! Reading secrets from their sources, and the rule that files holding secrets are root-only.
//!
//! Today's sources: a root-only file and an inline string. Vault/OpenBao sources are parsed
//! by the configuration and are read once carpd has a Vault client; until then resolving
//! one is an error that says so. Values are returned as [`CarpKey`] (zeroized on drop,
//! redacted in `Debug`) and never appear in messages: errors name the source, not the value.

use std::fs;
use std::io::Read;
use std::path::Path;

use zeroize::Zeroize;

use crate::carp::{CarpKey, GroupId, KEY_LEN};
use crate::config::PasswordSource;

/// How strict the file checks are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SecretPolicy {
    /// Accept secret files that are not root-only (tests and labs; `--allow-insecure-files`).
    pub allow_insecure_files: bool,
}

/// Checks that a file holding secrets is owned by root and not readable or writable by group
/// or others. `what` names the file's role in the message.
pub fn check_private_file(path: &Path, what: &str, policy: SecretPolicy) -> Result<(), String> {
    let meta =
        fs::metadata(path).map_err(|e| format!("{what} {}: cannot read: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{what} {} is not a regular file", path.display()));
    }
    if policy.allow_insecure_files {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode() & 0o777;
        if meta.uid() != 0 {
            return Err(format!(
                "{what} {} is owned by uid {}, not root: it holds a secret, so carpd only trusts root-owned files. Fix: chown root:wheel {} (or pass --allow-insecure-files in a lab)",
                path.display(),
                meta.uid(),
                path.display()
            ));
        }
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {} has mode {mode:04o}: it holds a secret and must not be accessible to group or others. Fix: chmod 0400 {} (or pass --allow-insecure-files in a lab)",
                path.display(),
                path.display()
            ));
        }
    }
    Ok(())
}

/// Reads the CARP password of `group` from its source.
pub fn resolve_password(
    group: &GroupId,
    source: &PasswordSource,
    policy: SecretPolicy,
) -> Result<CarpKey, String> {
    match source {
        PasswordSource::Inline(k) => Ok(k.clone()),
        PasswordSource::File(path) => {
            check_private_file(path, &format!("password file of group {group}"), policy)?;
            let mut bytes = Vec::new();
            // Read at most one byte more than a key (plus a newline) so a wrong file (a
            // certificate, a log) cannot make carpd read megabytes into memory.
            let limit = (KEY_LEN + 3) as u64;
            fs::File::open(path)
                .and_then(|f| f.take(limit).read_to_end(&mut bytes))
                .map_err(|e| {
                    format!(
                        "password file {} of group {group}: cannot read: {e}",
                        path.display()
                    )
                })?;
            // One trailing newline is how editors and `echo` write files; it is not part of
            // the password.
            if bytes.ends_with(b"\n") {
                bytes.pop();
                if bytes.ends_with(b"\r") {
                    bytes.pop();
                }
            }
            if bytes.is_empty() {
                return Err(format!(
                    "password file {} of group {group} is empty: write the password into it, or remove password: from the group",
                    path.display()
                ));
            }
            if crate::carp::has_nul(&bytes) {
                wipe(&mut bytes);
                return Err(format!(
                    "password file {} of group {group} contains a NUL byte, which the kernel cannot store in a key",
                    path.display()
                ));
            }
            CarpKey::new(bytes).map_err(|n| {
                format!(
                    "password file {} of group {group} holds {}{n} bytes: CARP passwords are at most {KEY_LEN} bytes",
                    path.display(),
                    if n as u64 >= limit { "at least " } else { "" },
                )
            })
        }
        PasswordSource::Vault { path, field } => Err(format!(
            "password of group {group} comes from Vault ({path}, field {field}), but this carpd has no Vault client configured yet: use {{file: /path}} for now"
        )),
    }
}

/// Overwrites a buffer that held a secret.
pub fn wipe(buf: &mut Vec<u8>) {
    buf.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn group() -> GroupId {
        "2@vmx1".parse().unwrap()
    }

    #[test]
    fn file_password_strips_one_newline_and_checks_length() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        fs::write(&f, "s3cret\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).unwrap();
        let lax = SecretPolicy {
            allow_insecure_files: true,
        };
        let k = resolve_password(&group(), &PasswordSource::File(f.clone()), lax).unwrap();
        assert_eq!(k.expose(), b"s3cret");
        fs::write(&f, "x".repeat(64)).unwrap();
        let e = resolve_password(&group(), &PasswordSource::File(f.clone()), lax).unwrap_err();
        assert!(
            e.contains("at most 20 bytes") && e.contains("2@vmx1"),
            "{e}"
        );
        assert!(!e.contains("xxxx"), "the value must not appear: {e}");
    }

    #[test]
    fn open_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        fs::write(&f, "s3cret").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let strict = SecretPolicy::default();
        let e = resolve_password(&group(), &PasswordSource::File(f.clone()), strict).unwrap_err();
        // As root, ownership passes and the mode fails; as another user, ownership fails.
        assert!(e.contains("chmod 0400") || e.contains("chown root"), "{e}");
        assert!(!e.contains("s3cret"));
    }
}
