//! python-ovh's configuration convention: `ovh.conf` INI files and `OVH_*` variables.
//!
//! Semantics, as python-ovh 1.x implements them (`ovh/config.py`):
//! - files are read in order `/etc/ovh.conf`, `~/.ovh.conf`, `./ovh.conf`; a missing file is
//!   skipped and a later file overrides keys of an earlier one (ConfigParser.read);
//! - the endpoint is `OVH_ENDPOINT`, else `endpoint` in section `[default]`;
//! - every other value (`application_key`, `application_secret`, `consumer_key`, `client_id`,
//!   `client_secret`) is `OVH_<NAME>` if set, else the key in the section named after the
//!   endpoint.
//!
//! INI parsing is the `configparser` crate, which mimics Python's ConfigParser, with inline
//! comments off (Python's default: a `#` inside a value is part of the value), `=` and `:` as
//! delimiters, indented continuation lines, and section names kept as written. Keys are
//! lowercased here, as Python's `optionxform` does. Pure: [`parse`] works on text; only
//! [`load_files`] touches the file system, and it applies the root-only rule for secret files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use configparser::ini::{Ini, IniDefault};
use secrecy::{ExposeSecret, SecretString};

use super::credentials::{CredentialError, Credentials, FieldNames};
use crate::secret_file::SecretPolicy;
use crate::secret_file::read_private;

/// Largest ovh.conf carpd reads.
const MAX_SIZE: u64 = 64 * 1024;

/// The merged content of one or more ovh.conf files: section -> key -> value. Values are
/// held as secrets (some are).
#[derive(Default)]
pub struct OvhConf {
    sections: BTreeMap<String, BTreeMap<String, SecretString>>,
    /// Files that were read, in order, for messages.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for OvhConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: BTreeMap<&String, Vec<&String>> = self
            .sections
            .iter()
            .map(|(s, kv)| (s, kv.keys().collect()))
            .collect();
        f.debug_struct("OvhConf")
            .field("files", &self.files)
            .field("keys", &keys)
            .finish()
    }
}

/// python-ovh's search path, with `~` expanded from `home`.
pub fn search_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/etc/ovh.conf")];
    if let Some(h) = home {
        v.push(h.join(".ovh.conf"));
    }
    v.push(PathBuf::from("./ovh.conf"));
    v
}

/// Parses one file's text into `conf`, overriding earlier values. The error names the line,
/// never a value.
pub fn parse_into(conf: &mut OvhConf, text: &str) -> Result<(), String> {
    let mut defaults = IniDefault::default();
    defaults.default_section = "DEFAULT".into();
    defaults.comment_symbols = vec![';', '#'];
    defaults.inline_comment_symbols = None;
    defaults.delimiters = vec!['=', ':'];
    defaults.case_sensitive = true;
    defaults.multiline = true;
    defaults.enable_inline_comments = false;
    let mut ini = Ini::new_from_defaults(defaults);
    let map = ini.read(text.to_string())?;
    for (section, kv) in map {
        let entry = conf.sections.entry(section).or_default();
        for (k, v) in kv {
            if let Some(v) = v {
                entry.insert(k.to_lowercase(), SecretString::from(v));
            }
        }
    }
    Ok(())
}

/// Parses one file's text.
pub fn parse(text: &str) -> Result<OvhConf, String> {
    let mut c = OvhConf::default();
    parse_into(&mut c, text)?;
    Ok(c)
}

/// Reads `paths` in order, skipping missing ones (python-ovh does), refusing files that are
/// not root-only unless `policy` allows it.
pub fn load_files(paths: &[PathBuf], policy: SecretPolicy) -> Result<OvhConf, CredentialError> {
    let mut conf = OvhConf::default();
    for p in paths {
        if !p.exists() {
            continue;
        }
        let bytes = read_private(p, "OVH credentials file", policy, MAX_SIZE as usize)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            CredentialError::Source(format!(
                "{} is not UTF-8 (byte {})",
                p.display(),
                e.valid_up_to()
            ))
        })?;
        parse_into(&mut conf, text).map_err(|e| {
            CredentialError::Source(format!(
                "{}: {e} (expected INI: [default] endpoint=ovh-eu, then [ovh-eu] application_key=...)",
                p.display()
            ))
        })?;
        conf.files.push(p.clone());
    }
    Ok(conf)
}

impl OvhConf {
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        let key = key.to_lowercase();
        self.sections
            .get(section)
            .and_then(|s| s.get(&key))
            .or_else(|| self.sections.get("DEFAULT").and_then(|s| s.get(&key)))
            .map(|v| v.expose_secret())
    }

    /// Resolves credentials the way python-ovh does. `env` looks up an environment variable
    /// (`std::env::var` in production, a map in tests); `endpoint` overrides everything
    /// (carpd.yaml's `ovh.endpoint`).
    pub fn credentials(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        endpoint: Option<&str>,
    ) -> Result<Credentials, CredentialError> {
        let endpoint = endpoint
            .map(str::to_string)
            .or_else(|| env("OVH_ENDPOINT"))
            .or_else(|| self.get("default", "endpoint").map(str::to_string));
        let source = if self.files.is_empty() {
            "OVH_* environment variables".to_string()
        } else {
            format!(
                "{}{}",
                self.files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                endpoint
                    .as_deref()
                    .map(|e| format!(" [{e}]"))
                    .unwrap_or_default()
            )
        };
        let Some(ep) = endpoint.clone() else {
            return Err(CredentialError::Source(format!(
                "{source}: no endpoint: set endpoint= in [default], OVH_ENDPOINT, or ovh.endpoint in carpd.yaml"
            )));
        };
        let names = FieldNames::default();
        let mut fields = BTreeMap::new();
        for name in [
            &names.application_key,
            &names.application_secret,
            &names.consumer_key,
            &names.client_id,
            &names.client_secret,
        ] {
            let var = format!("OVH_{}", name.to_uppercase());
            let v = env(&var).or_else(|| self.get(&ep, name).map(str::to_string));
            if let Some(v) = v {
                fields.insert(name.clone(), SecretString::from(v));
            }
        }
        let mut c = Credentials::from_fields(&fields, &names, source)?;
        c.endpoint = endpoint;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovh::credentials::Auth;

    const CONF: &str = "\
; python-ovh's example
[default]
endpoint=ovh-eu

[ovh-eu]
application_key=AK1
Application_Secret = as#notacomment
consumer_key: CK1

[ovh-ca]
client_id=id1
client_secret=cs1
";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn reads_like_python_ovh() {
        let conf = parse(CONF).unwrap();
        let c = conf.credentials(&no_env, None).unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("ovh-eu"));
        match &c.auth {
            Auth::Classic {
                application_key,
                application_secret,
                consumer_key,
            } => {
                assert_eq!(application_key, "AK1");
                assert_eq!(application_secret.expose_secret(), "as#notacomment");
                assert_eq!(consumer_key.expose_secret(), "CK1");
            }
            other => panic!("{other:?}"),
        }
        let c = conf.credentials(&no_env, Some("ovh-ca")).unwrap();
        assert!(matches!(c.auth, Auth::OAuth2 { .. }));
        // Environment overrides, endpoint first.
        let env = |k: &str| match k {
            "OVH_ENDPOINT" => Some("ovh-ca".to_string()),
            "OVH_CLIENT_SECRET" => Some("from-env".to_string()),
            _ => None,
        };
        let c = conf.credentials(&env, None).unwrap();
        match &c.auth {
            Auth::OAuth2 { client_secret, .. } => {
                assert_eq!(client_secret.expose_secret(), "from-env")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn later_files_override_and_missing_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, CONF).unwrap();
        std::fs::write(&b, "[ovh-eu]\nconsumer_key=CK2\n").unwrap();
        let lax = SecretPolicy {
            allow_insecure_files: true,
        };
        let conf = load_files(&[a, dir.path().join("missing"), b], lax).unwrap();
        assert_eq!(conf.files.len(), 2);
        assert_eq!(conf.get("ovh-eu", "consumer_key"), Some("CK2"));
        assert_eq!(conf.get("ovh-eu", "application_key"), Some("AK1"));
        assert!(!format!("{conf:?}").contains("CK2"));
    }

    /// A file that does not parse: the error names the file and the line, never the text
    /// (the file holds secrets). configparser's messages carry only the line number; this
    /// holds carpd's own wrapping to the same.
    #[test]
    fn a_malformed_file_is_an_error_naming_the_line_never_its_text() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ovh.conf");
        std::fs::write(
            &p,
            "[default]\nendpoint=ovh-eu\n[ovh-eu-SECRETY\napplication_secret=SECRETZ\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load_files(std::slice::from_ref(&p), SecretPolicy::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&p.display().to_string()) && e.contains("line 3"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn errors_name_what_is_missing() {
        let conf = parse("[default]\nendpoint=ovh-eu\n[ovh-eu]\napplication_key=AK\n").unwrap();
        let e = conf.credentials(&no_env, None).unwrap_err().to_string();
        assert!(e.contains("application_secret"), "{e}");
        let e = parse("").unwrap().credentials(&no_env, None).unwrap_err();
        assert!(e.to_string().contains("no endpoint"), "{e}");
        assert!(parse("[broken\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,300}") {
            if let Ok(c) = parse(&text) {
                let _ = c.credentials(&no_env, None);
            }
        }

        #[test]
        fn parser_never_panics_on_ini_like_text(
            lines in proptest::collection::vec(
                "(\\[[a-z -]{0,8}\\]?|[ \t]{0,3}[a-zA-Z_]{0,10}[ ]?[=:]?[ ]?[a-z#;=:\\]\\[]{0,10}|[;#].{0,5})",
                0..12)
        ) {
            let text = lines.join("\n");
            if let Ok(c) = parse(&text) {
                let _ = c.credentials(&no_env, Some("ovh-eu"));
            }
        }
    }
}
