//! The `kind` label of `carpd_ovh_errors_total` and `carpd_vault_errors_total`: one fixed,
//! lower-case name per error class of the OVH client and of the Vault client.
//!
//! The names come from the error types' own classification ([`crate::ovh::error::ErrorKind`],
//! [`crate::vault::Kind`]), never from message text, so the label set is closed and small,
//! and never carries a path, an endpoint or anything secret.

use crate::ovh::error::{ErrorKind, OvhError};
use crate::vault::VaultError;

/// Every value [`ovh_error_kind`] can return.
pub const OVH_KINDS: &[&str] = &[
    "invalid_signature",
    "query_time_out",
    "unauthorized",
    "not_granted",
    "invalid_credential",
    "invalid_key",
    "not_found",
    "conflict",
    "rate_limited",
    "server",
    "client",
    "connect",
    "network",
    "decode",
    "credentials",
    "oauth",
    "config",
];

/// Every value [`vault_error_kind`] can return.
pub const VAULT_KINDS: &[&str] = &[
    "settings",
    "unreachable",
    "tls",
    "login_rejected",
    "denied",
    "not_found",
    "deleted",
    "missing_field",
    "not_renewable",
    "server",
    "protocol",
];

/// The metric kind of an OVH error: the API error class for an answer from OVH; `connect`
/// when no connection was made, `network` when it broke during the request; `decode` for an
/// answer carpd could not read; `credentials`, `oauth`, `config` for local problems.
pub fn ovh_error_kind(e: &OvhError) -> &'static str {
    match e {
        OvhError::Api(a) => match a.kind() {
            ErrorKind::InvalidSignature => "invalid_signature",
            ErrorKind::QueryTimeOut => "query_time_out",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotGranted => "not_granted",
            ErrorKind::InvalidCredential => "invalid_credential",
            ErrorKind::InvalidKey => "invalid_key",
            ErrorKind::IamDenied => "iam_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Server => "server",
            ErrorKind::Client => "client",
        },
        OvhError::Network { connect: true, .. } => "connect",
        OvhError::Network { connect: false, .. } => "network",
        OvhError::Decode { .. } => "decode",
        OvhError::Credentials(_) => "credentials",
        OvhError::OAuth { .. } => "oauth",
        OvhError::Config(_) => "config",
    }
}

/// The metric kind of a Vault error: its [`Kind`] in snake case.
pub fn vault_error_kind(e: &VaultError) -> &'static str {
    e.kind().label()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovh::error::{ApiError, ErrorBody};
    use crate::vault::{Kind, SettingsError};

    fn api(status: u16, code: Option<&str>) -> OvhError {
        OvhError::Api(Box::new(ApiError {
            method: "POST".into(),
            endpoint: "ovh-eu".into(),
            path: "/dedicated/server/ns1.eu/virtualMac".into(),
            status,
            body: ErrorBody {
                error_code: code.map(str::to_string),
                ..ErrorBody::default()
            },
            query_id: None,
            retry_after: None,
        }))
    }

    #[test]
    fn ovh_kinds_follow_the_client_classification() {
        let net = |connect| OvhError::Network {
            method: "GET".into(),
            endpoint: "ovh-eu".into(),
            path: "/auth/time".into(),
            detail: "refused".into(),
            connect,
        };
        let table = [
            (api(400, Some("INVALID_SIGNATURE")), "invalid_signature"),
            (api(400, Some("QUERY_TIME_OUT")), "query_time_out"),
            (api(401, None), "unauthorized"),
            (api(403, Some("NOT_GRANTED_CALL")), "not_granted"),
            (api(403, Some("INVALID_CREDENTIAL")), "invalid_credential"),
            (api(403, Some("INVALID_KEY")), "invalid_key"),
            (api(404, None), "not_found"),
            (api(409, None), "conflict"),
            (api(429, None), "rate_limited"),
            (api(503, None), "server"),
            (api(400, None), "client"),
            (net(true), "connect"),
            (net(false), "network"),
            (
                OvhError::Decode {
                    method: "GET".into(),
                    endpoint: "ovh-eu".into(),
                    path: "/x".into(),
                    query_id: None,
                    detail: "d".into(),
                },
                "decode",
            ),
            (
                OvhError::Credentials(crate::ovh::credentials::CredentialError::Source("s".into())),
                "credentials",
            ),
            (
                OvhError::OAuth {
                    url: "u".into(),
                    detail: "d".into(),
                },
                "oauth",
            ),
            (OvhError::Config("c".into()), "config"),
        ];
        let mut seen = Vec::new();
        for (e, want) in &table {
            let got = ovh_error_kind(e);
            assert_eq!(got, *want, "{e}");
            assert!(OVH_KINDS.contains(&got), "{got} missing from OVH_KINDS");
            seen.push(got);
        }
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            OVH_KINDS.len(),
            "OVH_KINDS lists a kind never returned"
        );
        assert!(OVH_KINDS.len() <= super::super::MAX_KINDS);
    }

    #[test]
    fn vault_kinds_cover_every_class() {
        let all = [
            Kind::Settings,
            Kind::Unreachable,
            Kind::Tls,
            Kind::LoginRejected,
            Kind::Denied,
            Kind::NotFound,
            Kind::Deleted,
            Kind::MissingField,
            Kind::NotRenewable,
            Kind::Server,
            Kind::Protocol,
        ];
        let mut seen: Vec<&str> = all
            .iter()
            .map(|k| {
                vault_error_kind(&VaultError::Api {
                    kind: *k,
                    server: "https://vault:8200".into(),
                    op: "read".into(),
                    reason: "r".into(),
                    fix: "f".into(),
                })
            })
            .collect();
        let settings = VaultError::Settings(SettingsError {
            source: "environment".into(),
            pos: None,
            key: String::new(),
            message: "m".into(),
        });
        assert_eq!(vault_error_kind(&settings), "settings");
        assert_eq!(seen[4], "denied");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), all.len(), "two classes share a kind");
        let mut listed = VAULT_KINDS.to_vec();
        listed.sort();
        assert_eq!(seen, listed);
        assert!(VAULT_KINDS.len() <= super::super::MAX_KINDS);
    }
}
