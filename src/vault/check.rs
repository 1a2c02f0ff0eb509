//! `carpd secrets check` and `carpd check --online`: log in, read every configured secret,
//! report which expected fields are present or missing and what the token is — never a value.
//!
//! Callers describe what they expect as a list of [`Expect`] (label, path, field names), so a
//! new secret (the OVH credentials) is one more list entry.

use std::fmt;
use std::io::Write;

use secrecy::ExposeSecret;

use super::error::VaultError;
use super::session::Session;
use super::store::{SecretPath, SecretStore, TokenInfo};
use crate::carp::{KEY_LEN, has_nul};

/// A secret carpd will need, and the fields it must have.
#[derive(Clone, Debug)]
pub struct Expect {
    /// Where it is configured, e.g. `groups[0].password (2@vmx1)`.
    pub label: String,
    pub path: SecretPath,
    pub fields: Vec<String>,
    /// The fields are CARP passwords: also check they fit the kernel (1..=20 bytes, no NUL).
    pub carp_key: bool,
}

/// The outcome for one expected secret.
#[derive(Debug)]
pub struct Item {
    pub expect: Expect,
    /// Field names present in the secret (all of them, sorted), or why it could not be read.
    pub present: Result<Vec<String>, VaultError>,
    /// Problems with expected fields' values, described without the value.
    pub invalid: Vec<String>,
}

impl Item {
    pub fn missing(&self) -> Vec<&str> {
        match &self.present {
            Ok(p) => self
                .expect
                .fields
                .iter()
                .filter(|f| !p.contains(f))
                .map(String::as_str)
                .collect(),
            Err(_) => vec![],
        }
    }

    pub fn ok(&self) -> bool {
        self.present.is_ok() && self.missing().is_empty() && self.invalid.is_empty()
    }
}

/// Everything the check found.
#[derive(Debug)]
pub struct Report {
    pub server: String,
    /// Settings origin and auth method, e.g. `/usr/local/etc/secrets/x.yaml, approle (...)`.
    pub login: String,
    pub token: Result<TokenInfo, VaultError>,
    pub items: Vec<Item>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.token.is_ok() && self.items.iter().all(Item::ok)
    }

    /// One line per finding; problems start with `problem:`.
    pub fn render(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "Vault {} ({})", self.server, self.login)?;
        match &self.token {
            Ok(t) => writeln!(out, "ok: token: {}", TokenLine(t))?,
            Err(e) => writeln!(out, "problem: login: {e}")?,
        }
        for i in &self.items {
            let head = format!("{}: {}", i.expect.label, i.expect.path);
            match &i.present {
                Err(e) => writeln!(out, "problem: {head}: {e}")?,
                Ok(present) => {
                    let missing = i.missing();
                    for why in &i.invalid {
                        writeln!(out, "problem: {head}: {why}")?;
                    }
                    if missing.is_empty() && i.invalid.is_empty() {
                        writeln!(
                            out,
                            "ok: {head}: fields present: {}",
                            i.expect.fields.join(", ")
                        )?;
                    } else if !missing.is_empty() {
                        writeln!(
                            out,
                            "problem: {head}: missing field(s): {} (the secret has: {}). Fix: add them to the secret, or name the right field in carpd.yaml",
                            missing.join(", "),
                            if present.is_empty() {
                                "no fields".to_string()
                            } else {
                                present.join(", ")
                            }
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

struct TokenLine<'a>(&'a TokenInfo);

impl fmt::Display for TokenLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.ttl {
            Some(ttl) => write!(f, "ttl {}s", ttl.as_secs())?,
            None => f.write_str("no expiry")?,
        }
        f.write_str(if self.0.renewable {
            ", renewable"
        } else {
            ", not renewable"
        })?;
        write!(f, ", policies: {}", self.0.policies.join(", "))
    }
}

/// Why these bytes cannot be a CARP key, without showing them.
pub fn carp_key_problem(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        Err("is empty: a CARP password needs at least one byte".into())
    } else if bytes.len() > KEY_LEN {
        Err(format!(
            "is {} bytes long: CARP passwords are at most {KEY_LEN} bytes",
            bytes.len()
        ))
    } else if has_nul(bytes) {
        Err("contains a NUL byte, which the kernel cannot store in a key".into())
    } else {
        Ok(())
    }
}

/// Logs in and reads every expected secret (bypassing the cache).
pub async fn check<S: SecretStore>(session: &mut Session<S>, expect: &[Expect]) -> Report {
    let token = session.lookup().await;
    let login = match session.settings() {
        Some(s) => format!("settings: {}, login: {}", s.origin, s.auth.describe()),
        None => "settings not loaded".into(),
    };
    let mut items = Vec::new();
    for e in expect {
        let mut invalid = Vec::new();
        let present = if let Err(err) = &token {
            Err(err.clone())
        } else {
            match session.refresh(&e.path).await {
                Ok(c) => match c.stale {
                    Some(err) => Err(err),
                    None => {
                        if e.carp_key {
                            for f in &e.fields {
                                if let Some(v) = c.fields.get(f)
                                    && let Err(why) = carp_key_problem(v.expose_secret().as_bytes())
                                {
                                    invalid.push(format!("field {f} {why}"));
                                }
                            }
                        }
                        Ok(c.fields.names().map(str::to_string).collect())
                    }
                },
                Err(err) => Err(err),
            }
        };
        items.push(Item {
            expect: e.clone(),
            present,
            invalid,
        });
    }
    Report {
        server: session.server(),
        login,
        token,
        items,
    }
}
