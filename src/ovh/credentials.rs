//! OVH credentials: what they are, where they come from, and how they stay secret.
//!
//! Two kinds: classic application keys (AK, AS, CK; requests are signed) and OAuth2 service
//! accounts (client id and secret; requests carry a bearer token). Secret parts live in
//! `secrecy::SecretString` (zeroized on drop, redacted in `Debug`); nothing here prints them.
//!
//! Sources:
//! - [`Credentials::from_fields`]: a flat map of named fields, the shape of a Vault/OpenBao
//!   kv-v2 secret. Field names are configurable ([`FieldNames`]); the Vault module calls this.
//! - [`super::conf`]: python-ovh's `ovh.conf` files and `OVH_*` environment variables.
//!
//! A [`CredentialSource`] can be asked again for fresh credentials: the client does that once
//! when OVH says the consumer key is no longer valid (rotation), then gives up.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use secrecy::{ExposeSecret, SecretString};

/// The authentication material.
pub enum Auth {
    /// Application key (not secret: it names the application), application secret, consumer
    /// key.
    Classic {
        application_key: String,
        application_secret: SecretString,
        consumer_key: SecretString,
    },
    /// An OAuth2 service account (client credentials grant).
    OAuth2 {
        client_id: String,
        client_secret: SecretString,
    },
}

impl Clone for Auth {
    fn clone(&self) -> Auth {
        match self {
            Auth::Classic {
                application_key,
                application_secret,
                consumer_key,
            } => Auth::Classic {
                application_key: application_key.clone(),
                application_secret: application_secret.clone(),
                consumer_key: consumer_key.clone(),
            },
            Auth::OAuth2 {
                client_id,
                client_secret,
            } => Auth::OAuth2 {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            },
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Classic {
                application_key, ..
            } => f
                .debug_struct("Classic")
                .field("application_key", application_key)
                .field("application_secret", &"[redacted]")
                .field("consumer_key", &"[redacted]")
                .finish(),
            Auth::OAuth2 { client_id, .. } => f
                .debug_struct("OAuth2")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

/// Credentials, with the endpoint their source names (if it names one) and a description of
/// the source for messages (`/etc/ovh.conf [ovh-eu]`, `vault apps/network/x`).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub auth: Auth,
    pub endpoint: Option<String>,
    pub source: String,
}

/// Field names in a flat secret (Vault kv-v2). Defaults follow python-ovh's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldNames {
    pub application_key: String,
    pub application_secret: String,
    pub consumer_key: String,
    pub client_id: String,
    pub client_secret: String,
    /// Optional field naming the endpoint (`ovh-eu` or a URL).
    pub endpoint: String,
}

impl Default for FieldNames {
    fn default() -> FieldNames {
        FieldNames {
            application_key: "application_key".into(),
            application_secret: "application_secret".into(),
            consumer_key: "consumer_key".into(),
            client_id: "client_id".into(),
            client_secret: "client_secret".into(),
            endpoint: "endpoint".into(),
        }
    }
}

/// Why credentials could not be had. Messages name the source and the field, never a value.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CredentialError {
    #[error(
        "OVH credentials from {origin}: field '{field}' is missing or empty. Fix: add it to the secret (or set fields: in carpd.yaml if it is named differently)"
    )]
    MissingField { origin: String, field: String },
    #[error(
        "OVH credentials from {origin} have both application keys ({ak}) and OAuth2 client credentials ({id}): keep one kind"
    )]
    Ambiguous {
        origin: String,
        ak: String,
        id: String,
    },
    #[error("OVH credentials from {origin}: none found. Expected {expected}")]
    Empty { origin: String, expected: String },
    #[error("OVH credentials: {0}")]
    Source(String),
    /// ovh.conf refused or unreadable.
    #[error("OVH credentials: {0}")]
    File(#[from] crate::secret_file::SecretFileError),
}

impl Credentials {
    /// Builds credentials from a flat map of fields (a Vault kv-v2 secret's data).
    ///
    /// Application keys win when all three classic fields are present; otherwise the OAuth2
    /// pair is used; a partial classic set names the missing field. Having both complete sets
    /// is refused: which one is meant would be a guess.
    pub fn from_fields(
        fields: &BTreeMap<String, SecretString>,
        names: &FieldNames,
        source: impl Into<String>,
    ) -> Result<Credentials, CredentialError> {
        let source = source.into();
        let get = |name: &str| {
            fields
                .get(name)
                .map(|v| v.expose_secret().trim())
                .filter(|v| !v.is_empty())
        };
        let classic = [
            &names.application_key,
            &names.application_secret,
            &names.consumer_key,
        ]
        .map(|n| get(n));
        let oauth = [&names.client_id, &names.client_secret].map(|n| get(n));
        let endpoint = get(&names.endpoint).map(str::to_string);
        let has_classic = classic.iter().any(Option::is_some);
        let has_oauth = oauth.iter().any(Option::is_some);
        if classic.iter().all(Option::is_some) && oauth.iter().all(Option::is_some) {
            return Err(CredentialError::Ambiguous {
                origin: source,
                ak: names.application_key.clone(),
                id: names.client_id.clone(),
            });
        }
        if has_classic || !has_oauth {
            if !has_classic {
                return Err(CredentialError::Empty {
                    origin: source,
                    expected: format!(
                        "{}, {}, {} (application keys) or {}, {} (OAuth2 service account)",
                        names.application_key,
                        names.application_secret,
                        names.consumer_key,
                        names.client_id,
                        names.client_secret
                    ),
                });
            }
            let missing = [
                &names.application_key,
                &names.application_secret,
                &names.consumer_key,
            ]
            .into_iter()
            .zip(classic)
            .find(|(_, v)| v.is_none());
            if let Some((field, _)) = missing {
                return Err(CredentialError::MissingField {
                    origin: source,
                    field: field.clone(),
                });
            }
            let [ak, as_, ck] = classic.map(|v| v.unwrap_or_default());
            return Ok(Credentials {
                auth: Auth::Classic {
                    application_key: ak.to_string(),
                    application_secret: SecretString::from(as_),
                    consumer_key: SecretString::from(ck),
                },
                endpoint,
                source,
            });
        }
        let missing = [&names.client_id, &names.client_secret]
            .into_iter()
            .zip(oauth)
            .find(|(_, v)| v.is_none());
        if let Some((field, _)) = missing {
            return Err(CredentialError::MissingField {
                origin: source,
                field: field.clone(),
            });
        }
        let [id, secret] = oauth.map(|v| v.unwrap_or_default());
        Ok(Credentials {
            auth: Auth::OAuth2 {
                client_id: id.to_string(),
                client_secret: SecretString::from(secret),
            },
            endpoint,
            source,
        })
    }

    /// Classic credentials from plain values (tests, the simulator's fixtures).
    pub fn classic(ak: &str, as_: &str, ck: &str) -> Credentials {
        Credentials {
            auth: Auth::Classic {
                application_key: ak.into(),
                application_secret: SecretString::from(as_),
                consumer_key: SecretString::from(ck),
            },
            endpoint: None,
            source: "inline".into(),
        }
    }

    /// OAuth2 credentials from plain values (tests).
    pub fn oauth2(id: &str, secret: &str) -> Credentials {
        Credentials {
            auth: Auth::OAuth2 {
                client_id: id.into(),
                client_secret: SecretString::from(secret),
            },
            endpoint: None,
            source: "inline".into(),
        }
    }
}

/// A boxed future, so that credential sources can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere credentials can be read (again): a file, Vault, a fixed value.
pub trait CredentialSource: Send + Sync {
    /// Reads the credentials now (not from a cache).
    fn load(&self) -> BoxFuture<'_, Result<Credentials, CredentialError>>;
    /// Names the source in messages (`/etc/ovh.conf`, `vault apps/network/x`).
    fn describe(&self) -> String;
}

/// Credentials that never change (tests, benches, one-shot CLI runs).
pub struct FixedCredentials(pub Credentials);

impl CredentialSource for FixedCredentials {
    fn load(&self) -> BoxFuture<'_, Result<Credentials, CredentialError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
    fn describe(&self) -> String {
        self.0.source.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
            .collect()
    }

    #[test]
    fn from_fields_default_and_custom_names() {
        let c = Credentials::from_fields(
            &map(&[
                ("application_key", "AK1"),
                ("application_secret", "SECRET-AS"),
                ("consumer_key", "SECRET-CK"),
                ("endpoint", "ovh-ca"),
            ]),
            &FieldNames::default(),
            "vault apps/x",
        )
        .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("ovh-ca"));
        let dbg = format!("{c:?}");
        assert!(dbg.contains("AK1") && dbg.contains("[redacted]"), "{dbg}");
        assert!(!dbg.contains("SECRET"), "{dbg}");

        let names = FieldNames {
            application_key: "ak".into(),
            application_secret: "as".into(),
            consumer_key: "ck".into(),
            ..FieldNames::default()
        };
        let e = Credentials::from_fields(
            &map(&[("ak", "AK1"), ("as", "SECRET-AS")]),
            &names,
            "vault apps/x",
        )
        .unwrap_err();
        assert_eq!(
            e,
            CredentialError::MissingField {
                origin: "vault apps/x".into(),
                field: "ck".into()
            }
        );
        assert!(e.to_string().contains("'ck'"));
    }

    #[test]
    fn oauth_and_ambiguity() {
        let c = Credentials::from_fields(
            &map(&[("client_id", "id1"), ("client_secret", "SECRET-CS")]),
            &FieldNames::default(),
            "s",
        )
        .unwrap();
        assert!(matches!(c.auth, Auth::OAuth2 { .. }));
        assert!(!format!("{c:?}").contains("SECRET"));
        let e = Credentials::from_fields(
            &map(&[
                ("client_id", "id1"),
                ("client_secret", "SECRET-CS"),
                ("application_key", "AK1"),
                ("application_secret", "SECRET-AS"),
                ("consumer_key", "SECRET-CK"),
            ]),
            &FieldNames::default(),
            "s",
        )
        .unwrap_err();
        assert!(matches!(e, CredentialError::Ambiguous { .. }));
        let e = Credentials::from_fields(&map(&[]), &FieldNames::default(), "s").unwrap_err();
        assert!(matches!(e, CredentialError::Empty { .. }), "{e}");
        let e = Credentials::from_fields(&map(&[("client_id", "x")]), &FieldNames::default(), "s")
            .unwrap_err();
        assert!(e.to_string().contains("client_secret"), "{e}");
    }
}
