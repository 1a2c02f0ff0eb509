//! Reading secrets from their sources, and the rule that files holding secrets are root-only.
//!
//! Sources: a root-only file, an inline string, and a kv-v2 secret in Vault/OpenBao. File and
//! inline sources resolve synchronously ([`resolve_password`]); Vault sources go through a
//! [`Resolver`], which opens one Vault session (on its own small runtime) the first time a
//! group needs it, for CLI commands. The daemon reads through its async
//! [`crate::vault::session::Session`] and [`vault_password`]. Values are returned as
//! [`CarpKey`] (zeroized on drop, redacted in `Debug`) and never appear in messages: errors
//! name the source, not the value.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use zeroize::Zeroize;

use crate::carp::{CarpKey, GroupId, KEY_LEN};
use crate::config::{Config, PasswordSource, VaultConfig};
use crate::vault::blocking::{Access, BlockingSession};
use crate::vault::check::carp_key_problem;
use crate::vault::client::VaultStore;
use crate::vault::session::Session;
use crate::vault::{Kind, SecretPath, SecretStore};

pub mod copy;

use crate::secret_file as file;
pub use crate::secret_file::SecretPolicy;

/// Checks that a file holding secrets is a regular file owned by root (or carpd's user) and
/// not accessible to group or others, by opening it the one safe way ([`file::open_private`]).
/// `what` names the file's role in the message.
pub fn check_private_file(
    path: &Path,
    what: &str,
    policy: SecretPolicy,
) -> Result<(), file::SecretFileError> {
    file::open_private(path, what, policy).map(drop)
}

/// The one rule for inline passwords, applied by `check`, `plan`, `apply`, `run` and reload
/// alike (they all resolve passwords through [`crate::plan::gather::desired`]): a
/// configuration file that holds a password itself must be as private as a password file
/// (`--allow-insecure-files` overrides, as for every secret file).
pub fn inline_password_problem(config: &Config, policy: SecretPolicy) -> Option<String> {
    let g = config
        .groups
        .iter()
        .find(|g| matches!(g.password, Some(PasswordSource::Inline(_))))?;
    check_private_file(
        &config.file,
        &format!(
            "configuration file (it holds the inline password of {}, {})",
            g.id, g.key
        ),
        policy,
    )
    .err()
    .map(|e| e.to_string())
}

/// Why a group's CARP password could not be had. Every message names the group and the
/// source, never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password file was refused (owner, mode, a link) or could not be opened.
    #[error(transparent)]
    File(#[from] file::SecretFileError),
    /// The source holds something that is not a CARP password (empty, a NUL byte, too long),
    /// or could not be read to the end.
    #[error("{0}")]
    Invalid(String),
    /// Vault could not give it. `down`: Vault was unreachable or sealed, the case a local
    /// copy may stand in for.
    #[error("{message}")]
    Vault { message: String, down: bool },
}

/// Reads the CARP password of `group` from its source.
pub fn resolve_password(
    group: &GroupId,
    source: &PasswordSource,
    policy: SecretPolicy,
) -> Result<CarpKey, PasswordError> {
    match source {
        PasswordSource::Inline(k) => Ok(k.clone()),
        PasswordSource::File(path) => {
            let f = file::open_private(path, &format!("password file of group {group}"), policy)?;
            let mut bytes = Vec::new();
            // Read at most one byte more than a key (plus a newline) so a wrong file (a
            // certificate, a log) cannot make carpd read megabytes into memory.
            let limit = (KEY_LEN + 3) as u64;
            f.take(limit).read_to_end(&mut bytes).map_err(|e| {
                PasswordError::Invalid(format!(
                    "password file {} of group {group}: cannot read: {e}",
                    path.display()
                ))
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
                return Err(PasswordError::Invalid(format!(
                    "password file {} of group {group} is empty: write the password into it, or remove password: from the group",
                    path.display()
                )));
            }
            if crate::carp::has_nul(&bytes) {
                wipe(&mut bytes);
                return Err(PasswordError::Invalid(format!(
                    "password file {} of group {group} contains a NUL byte, which the kernel cannot store in a key",
                    path.display()
                )));
            }
            CarpKey::new(bytes).map_err(|n| {
                PasswordError::Invalid(format!(
                    "password file {} of group {group} holds {}{n} bytes: CARP passwords are at most {KEY_LEN} bytes",
                    path.display(),
                    if n as u64 >= limit { "at least " } else { "" },
                ))
            })
        }
        PasswordSource::Vault { path, field } => Err(PasswordError::Invalid(format!(
            "password of group {group} comes from Vault ({path}, field {field}): it is read through a Vault session (a Resolver), not here"
        ))),
    }
}

/// Reads a group's password from Vault through an async session (the daemon's path).
pub async fn vault_password<S: SecretStore>(
    session: &mut Session<S>,
    group: &GroupId,
    path: &str,
    field: &str,
) -> Result<CarpKey, PasswordError> {
    let p: SecretPath = path
        .parse()
        .map_err(|e| PasswordError::Invalid(format!("password of group {group}: {e}")))?;
    let (value, stale) = session
        .field(&p, field)
        .await
        .map_err(|e| PasswordError::Vault {
            message: format!("password of group {group}: {e}"),
            down: matches!(e.kind(), Kind::Unreachable | Kind::Server),
        })?;
    if let Some(e) = stale {
        tracing::warn!(%group, "using the cached CARP password: {e}");
    }
    key_from_vault(group, &p, field, value.expose_secret().as_bytes())
}

fn key_from_vault(
    group: &GroupId,
    path: &SecretPath,
    field: &str,
    bytes: &[u8],
) -> Result<CarpKey, PasswordError> {
    carp_key_problem(bytes).map_err(|why| {
        PasswordError::Invalid(format!(
            "password of group {group}: Vault secret {path} field {field} {why}"
        ))
    })?;
    CarpKey::new(bytes.to_vec()).map_err(|n| {
        PasswordError::Invalid(format!(
            "password of group {group}: Vault secret {path} field {field} is {n} bytes long"
        ))
    })
}

/// Resolves group passwords from every source for synchronous callers, opening one Vault
/// session the first time a password comes from Vault and reusing it (and its cache) after.
pub struct Resolver<S = VaultStore> {
    policy: SecretPolicy,
    open: Box<dyn Fn() -> Result<BlockingSession<S>, String>>,
    session: Option<BlockingSession<S>>,
    /// Where Vault passwords are copied to, and taken from when Vault is down.
    copies: Option<copy::LocalCopies>,
    /// Groups whose password came from the local copy, with why (no secret in it).
    pub from_copy: Vec<(GroupId, String)>,
}

impl Resolver<VaultStore> {
    /// `vault` is carpd.yaml's `vault:` section (validation guarantees it exists when a
    /// password comes from Vault).
    pub fn new(policy: SecretPolicy, vault: Option<&VaultConfig>) -> Resolver<VaultStore> {
        let access = vault.map(|v| Access::from_config(v, policy));
        Resolver {
            policy,
            open: Box::new(move || {
                match &access {
                None => Err(
                    "carpd.yaml has no vault: section: add `vault: { secretsmith: /usr/local/etc/secrets/carp-secretsmith.yaml }`"
                        .into(),
                ),
                Some(a) => BlockingSession::open(a)
                    .map_err(|e| format!("cannot start the Vault client's runtime: {e}")),
            }
            }),
            session: None,
            copies: None,
            from_copy: Vec::new(),
        }
    }
}

impl<S: SecretStore> Resolver<S> {
    /// A resolver over a given session (tests, the fake store).
    pub fn with_session(policy: SecretPolicy, session: BlockingSession<S>) -> Resolver<S> {
        Resolver {
            policy,
            open: Box::new(|| Err("no second session".into())),
            session: Some(session),
            copies: None,
            from_copy: Vec::new(),
        }
    }

    /// Keeps a local copy of every password read from Vault, and uses it when Vault is
    /// unreachable or sealed (src/secrets/copy.rs).
    pub fn with_copies(mut self, copies: copy::LocalCopies) -> Resolver<S> {
        self.copies = Some(copies);
        self
    }

    /// The group's password from its source.
    pub fn password(
        &mut self,
        group: &GroupId,
        source: &PasswordSource,
    ) -> Result<CarpKey, PasswordError> {
        let PasswordSource::Vault { path, field } = source else {
            return resolve_password(group, source, self.policy);
        };
        let source = format!("{path}#{field}");
        let read = self.vault_read(group, path, field);
        let Some(copies) = &self.copies else {
            return read;
        };
        match read {
            Ok(key) => {
                if let Err(e) = copies.save(group, &source, &key) {
                    tracing::warn!(%group, "{e}; CARP cannot come up from it while Vault is down");
                }
                Ok(key)
            }
            Err(PasswordError::Vault {
                message: e,
                down: true,
            }) => match copies.load(group, &source, self.policy) {
                Ok(Some(c)) => {
                    let age = c
                        .written
                        .and_then(|w| w.elapsed().ok())
                        .map(|d| {
                            format!(
                                ", written {} ago",
                                humantime::format_duration(Duration::from_secs(d.as_secs()))
                            )
                        })
                        .unwrap_or_default();
                    let why = format!(
                        "Vault is unreachable or sealed ({e}): configured from the local copy {}{age}",
                        copies.path(group).display()
                    );
                    tracing::warn!(%group, "password of group {group}: {why}");
                    self.from_copy.push((group.clone(), why));
                    Ok(c.key)
                }
                Ok(None) => Err(PasswordError::Vault {
                    message: format!(
                        "{e}; no local copy of it to fall back on ({} is written after the first successful read)",
                        copies.path(group).display()
                    ),
                    down: true,
                }),
                Err(copy_err) => Err(PasswordError::Vault {
                    message: format!("{e}; the local copy cannot be used: {copy_err}"),
                    down: true,
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Reads from Vault; the error says whether Vault was unreachable or sealed (the cases a
    /// local copy may stand in for).
    fn vault_read(
        &mut self,
        group: &GroupId,
        path: &str,
        field: &str,
    ) -> Result<CarpKey, PasswordError> {
        let not_down = |message: String| PasswordError::Vault {
            message: format!("password of group {group}: {message}"),
            down: false,
        };
        if self.session.is_none() {
            let s = (self.open)().map_err(not_down)?;
            self.session = Some(s);
        }
        let s = self.session.as_mut().expect("opened above");
        let p = path
            .parse::<SecretPath>()
            .map_err(|e| not_down(e.to_string()))?;
        let (value, stale) =
            s.run(async |s| s.field(&p, field).await)
                .map_err(|e| PasswordError::Vault {
                    message: format!("password of group {group}: {e}"),
                    down: matches!(e.kind(), Kind::Unreachable | Kind::Server),
                })?;
        if let Some(e) = stale {
            tracing::warn!(%group, "using the cached CARP password: {e}");
        }
        key_from_vault(group, &p, field, value.expose_secret().as_bytes())
    }
}

/// Overwrites a buffer that held a secret.
pub fn wipe(buf: &mut Vec<u8>) {
    buf.zeroize();
}

/// Keeps this process's memory (tokens, OVH keys, CARP passwords) out of core files and away
/// from debuggers of the same user: the core-file size limit goes to 0 (soft and hard, so no
/// child can raise it back; setrlimit(2)), and the process is made non-dumpable — Linux
/// prctl(PR_SET_DUMPABLE, 0), FreeBSD procctl(PROC_TRACE_CTL_DISABLE), which also refuse
/// ptrace attaches from the same uid. Called at the start of every command (`cli::run`);
/// the first failure is returned, after every step was tried.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; no other preconditions.
    let limit = if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    };
    limit.and(make_non_dumpable())
}

#[cfg(target_os = "linux")]
fn make_non_dumpable() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument; no memory is passed.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(target_os = "freebsd")]
fn make_non_dumpable() -> std::io::Result<()> {
    let mut arg: libc::c_int = libc::PROC_TRACE_CTL_DISABLE;
    // SAFETY: procctl reads one c_int through the pointer, which outlives the call.
    let r = unsafe {
        libc::procctl(
            libc::P_PID,
            0,
            libc::PROC_TRACE_CTL,
            (&raw mut arg).cast::<libc::c_void>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn make_non_dumpable() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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
        assert!(matches!(e, PasswordError::Invalid(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("at most 20 bytes") && e.contains("2@vmx1"),
            "{e}"
        );
        assert!(!e.contains("xxxx"), "the value must not appear: {e}");
    }

    #[test]
    fn vault_passwords_go_through_the_session_and_are_checked() {
        use std::collections::BTreeMap;
        use std::time::Duration;

        use crate::vault::fake::{FakeState, FakeStore};
        use crate::vault::secretsmith::{LoadOptions, parse};

        let mut secrets = BTreeMap::new();
        secrets.insert(
            "ops/carp/2".to_string(),
            BTreeMap::from([
                ("password".to_string(), "HUNTER2".to_string()),
                ("long".to_string(), "L".repeat(21)),
            ]),
        );
        let store = FakeStore::new(FakeState {
            secrets,
            tokens: vec!["TOK".into()],
            ..FakeState::default()
        });
        let loader = Box::new(|| {
            let env = |_: &str| None;
            let opts = LoadOptions {
                approle_mount: "approle",
                policy: SecretPolicy::default(),
                env: &env,
            };
            parse(
                "vault:\n  server: {url: 'https://v'}\n  auth: {token: TOK}\n",
                Path::new("/s.yaml"),
                &opts,
                &|_| Err("no".into()),
            )
        });
        let session = Session::new(store.clone(), loader, Duration::from_secs(60));
        let mut r = Resolver::with_session(
            SecretPolicy::default(),
            BlockingSession::with(session).unwrap(),
        );
        let src = |field: &str| PasswordSource::Vault {
            path: "ops/carp/2".into(),
            field: field.into(),
        };
        let k = r.password(&group(), &src("password")).unwrap();
        assert_eq!(k.expose(), b"HUNTER2");
        let e = r.password(&group(), &src("long")).unwrap_err().to_string();
        assert!(
            e.contains("2@vmx1") && e.contains("at most 20 bytes"),
            "{e}"
        );
        assert!(!e.contains("LLLL"), "{e}");
        let e = r.password(&group(), &src("nope")).unwrap_err().to_string();
        assert!(e.contains("no field nope") && !e.contains("HUNTER2"), "{e}");
        // One login, one read: the other fields came from the cache.
        assert_eq!(
            store.state.lock().unwrap().calls,
            ["login", "read ops/carp/2"]
        );
    }

    #[test]
    fn core_dumps_are_off_and_the_process_is_not_dumpable() {
        // nextest runs each test in its own process: this changes only that process.
        forbid_core_dumps().unwrap();
        let mut lim = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) }, 0);
        assert_eq!((lim.rlim_cur, lim.rlim_max), (0, 0));
        #[cfg(target_os = "linux")]
        // SAFETY: PR_GET_DUMPABLE takes no pointer.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) }, 0);
    }

    #[test]
    fn open_files_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        fs::write(&f, "s3cret").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let strict = SecretPolicy::default();
        let e = resolve_password(&group(), &PasswordSource::File(f.clone()), strict).unwrap_err();
        assert!(matches!(e, PasswordError::File(_)), "{e:?}");
        let e = e.to_string();
        // As root, ownership passes and the mode fails; as another user, ownership fails.
        assert!(e.contains("chmod 0400") || e.contains("chown root"), "{e}");
        assert!(!e.contains("s3cret"));
    }
}
