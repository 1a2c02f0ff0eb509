//! How the simulator authenticates a request, as OVH does. Pure: headers, URL, body and the
//! simulator's clock in; the verdict out.
//!
//! Classic keys: the application key must be known; `X-Ovh-Timestamp` and `X-Ovh-Signature`
//! present; the timestamp within `tolerance` of the server clock (else `QUERY_TIME_OUT`); the
//! signature recomputed over the exact URL and body received (a DELETE is verified with an
//! empty body, so a client that signed a DELETE body fails, as on OVH); the consumer key
//! known, validated for this application and not revoked; its access rules covering the call
//! (`NOT_GRANTED_CALL` otherwise; `GET /auth/currentCredential` needs no rule). OAuth2: a bearer token the simulator issued and that has
//! not expired. The tolerance of the live API is unverified; the default is configurable.

use std::time::Instant;

use carpd::ovh::sign::{signature, signatures_equal};

/// An application (AK, AS).
#[derive(Clone, Debug)]
pub struct Application {
    pub key: String,
    pub secret: String,
}

/// A consumer key with its rules (`("GET", "/dedicated/server/*")`; `*` matches anything).
#[derive(Clone, Debug)]
pub struct ConsumerKey {
    pub key: String,
    pub application_key: String,
    pub rules: Vec<(String, String)>,
    pub revoked: bool,
}

impl ConsumerKey {
    /// A consumer key allowed everything.
    pub fn full(key: &str, application_key: &str) -> ConsumerKey {
        ConsumerKey {
            key: key.into(),
            application_key: application_key.into(),
            rules: ["GET", "POST", "PUT", "DELETE"]
                .iter()
                .map(|m| (m.to_string(), "/*".to_string()))
                .collect(),
            revoked: false,
        }
    }
}

/// An authentication failure, in OVH's `errorCode` shape (or `class` for 401).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthError {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

const fn err(status: u16, code: &'static str, message: &'static str) -> AuthError {
    AuthError {
        status,
        code,
        message,
    }
}

/// `*` matches any run of characters (slashes included), as in OVH access rules: the one
/// matcher carpd itself checks its rights with, so the simulator refuses exactly what
/// readiness predicts.
pub use carpd::ovh::rights::rule_matches;

/// Reading its own credential needs no access rule: OVH's clients use
/// `GET /auth/currentCredential` to validate restricted keys (terraform-provider-ovh switched
/// to it for keys without `/me`, PR 29). Unverified on a live account beyond that.
pub const CURRENT_CREDENTIAL: &str = carpd::ovh::rights::CURRENT_CREDENTIAL;

/// What the simulator needs to check a request.
pub struct Request<'a> {
    pub method: &'a str,
    /// As reconstructed from Host and the request target: `http://127.0.0.1:port/1.0/...`.
    pub full_url: &'a str,
    /// The API path without `/1.0` and without the query string, for access rules.
    pub path: &'a str,
    pub body: &'a [u8],
    pub header: &'a dyn Fn(&str) -> Option<String>,
}

pub fn check_classic(
    r: &Request<'_>,
    apps: &[Application],
    cks: &[ConsumerKey],
    server_now: i64,
    tolerance_secs: i64,
) -> Result<(), AuthError> {
    let Some(ak) = (r.header)("X-Ovh-Application") else {
        return Err(err(401, "Client::Unauthorized", "You must login first"));
    };
    let Some(app) = apps.iter().find(|a| a.key == ak) else {
        return Err(err(403, "INVALID_KEY", "Invalid application key"));
    };
    let (Some(ts), Some(sig)) = ((r.header)("X-Ovh-Timestamp"), (r.header)("X-Ovh-Signature"))
    else {
        return Err(err(400, "INVALID_SIGNATURE", "Invalid signature"));
    };
    let Some(ck) = (r.header)("X-Ovh-Consumer") else {
        return Err(err(403, "NOT_CREDENTIAL", "This credential does not exist"));
    };
    let Ok(ts_n) = ts.trim().parse::<i64>() else {
        return Err(err(400, "QUERY_TIME_OUT", "Query out of time"));
    };
    if (ts_n - server_now).abs() > tolerance_secs {
        return Err(err(400, "QUERY_TIME_OUT", "Query out of time"));
    }
    let signed_body: &[u8] = if r.method == "DELETE" || r.method == "GET" {
        b""
    } else {
        r.body
    };
    let expected = signature(&app.secret, &ck, r.method, r.full_url, signed_body, ts_n);
    if !signatures_equal(&expected, &sig) || ts_n.to_string() != ts.trim() {
        return Err(err(400, "INVALID_SIGNATURE", "Invalid signature"));
    }
    let Some(c) = cks.iter().find(|c| c.key == ck && c.application_key == ak) else {
        return Err(err(
            403,
            "INVALID_CREDENTIAL",
            "This credential is not valid",
        ));
    };
    if c.revoked {
        return Err(err(
            403,
            "INVALID_CREDENTIAL",
            "This credential is not valid",
        ));
    }
    let own_credential = r.method == "GET" && r.path == CURRENT_CREDENTIAL;
    if !own_credential
        && !c
            .rules
            .iter()
            .any(|(m, p)| m == r.method && rule_matches(p, r.path))
    {
        return Err(err(
            403,
            "NOT_GRANTED_CALL",
            "This call has not been granted",
        ));
    }
    Ok(())
}

/// An issued OAuth2 token.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub expires: Instant,
}

pub fn check_bearer(
    authorization: &str,
    tokens: &[IssuedToken],
    now: Instant,
) -> Result<(), AuthError> {
    let t = authorization.strip_prefix("Bearer ").unwrap_or("");
    match tokens.iter().find(|x| x.token == t) {
        Some(x) if x.expires > now => Ok(()),
        _ => Err(err(401, "Client::Unauthorized", "Invalid or expired token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        assert!(rule_matches("/*", "/dedicated/server/x"));
        assert!(rule_matches(
            "/dedicated/server/ns1/virtualMac/*/virtualAddress/*",
            "/dedicated/server/ns1/virtualMac/02:00:00:aa:bb:cc/virtualAddress/1.2.3.4"
        ));
        assert!(!rule_matches(
            "/dedicated/server/ns1/virtualMac/*/virtualAddress",
            "/dedicated/server/ns1/virtualMac/02:00/virtualAddress/1.2.3.4"
        ));
        assert!(rule_matches("/ip", "/ip"));
        assert!(!rule_matches("/ip", "/ip/x"));
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        full_url: &'a str,
        header: &'a dyn Fn(&str) -> Option<String>,
    ) -> Request<'a> {
        Request {
            method,
            full_url,
            path,
            body: b"",
            header,
        }
    }

    #[test]
    fn rules_refuse_per_method_and_the_own_credential_is_always_readable() {
        let app = Application {
            key: "ak".into(),
            secret: "as".into(),
        };
        let ck = ConsumerKey {
            key: "ck".into(),
            application_key: "ak".into(),
            rules: vec![("DELETE".into(), "/dedicated/server/*".into())],
            revoked: false,
        };
        let check = |method: &str, path: &str| {
            let url = format!("http://h/1.0{path}");
            let sig = signature("as", "ck", method, &url, b"", 100);
            let header = move |name: &str| match name {
                "X-Ovh-Application" => Some("ak".to_string()),
                "X-Ovh-Consumer" => Some("ck".to_string()),
                "X-Ovh-Timestamp" => Some("100".to_string()),
                "X-Ovh-Signature" => Some(sig.clone()),
                _ => None,
            };
            check_classic(
                &request(method, path, &url, &header),
                std::slice::from_ref(&app),
                std::slice::from_ref(&ck),
                100,
                5,
            )
        };
        assert_eq!(
            check("DELETE", "/dedicated/server/ns1/virtualMac/x"),
            Ok(())
        );
        let e = check("POST", "/dedicated/server/ns1/virtualMac/x").unwrap_err();
        assert_eq!((e.status, e.code), (403, "NOT_GRANTED_CALL"));
        assert_eq!(check("GET", CURRENT_CREDENTIAL), Ok(()));
        assert_eq!(
            check("POST", CURRENT_CREDENTIAL).unwrap_err().code,
            "NOT_GRANTED_CALL"
        );
    }
}
