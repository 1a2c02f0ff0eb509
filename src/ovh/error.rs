//! Errors of the OVH client: typed, classified, and saying what, where and the fix.
//!
//! An API error keeps everything OVH said (HTTP status, `class` or `errorCode`, message,
//! details) and the `X-Ovh-QueryID` that OVH support asks for, plus the method, endpoint and
//! path of the call. [`ErrorKind`] is the one place where OVH's codes become decisions
//! (retry, resync the clock, re-read credentials, re-plan); nothing decides from message text.
//! No error ever holds a secret: requests are described by method and path only.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::credentials::CredentialError;

/// What an API error means for the caller (reference table "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 INVALID_SIGNATURE: keys, URL or body differ from what was signed. Permanent.
    InvalidSignature,
    /// 400 QUERY_TIME_OUT: clock skew. Resync the time delta and retry once.
    QueryTimeOut,
    /// 401: unsigned or unauthenticated call. Permanent.
    Unauthorized,
    /// 403 NOT_GRANTED_CALL: the consumer key's rules do not cover this call. Permanent.
    NotGranted,
    /// 403 NOT_CREDENTIAL / INVALID_CREDENTIAL: consumer key unknown, expired or revoked.
    /// Re-read credentials once (rotation), then permanent.
    InvalidCredential,
    /// 403 INVALID_KEY: application key wrong or wrong region. Permanent.
    InvalidKey,
    /// 403 with `details.unauthorizedActionsByIAM` (OAuth2 service accounts): an IAM policy
    /// does not grant the action. Permanent.
    IamDenied,
    /// 404.
    NotFound,
    /// 409: conflicting state (a pending task). Re-read state and decide.
    Conflict,
    /// 429: slow down and retry.
    RateLimited,
    /// 5xx: transient.
    Server,
    /// Any other 4xx.
    Client,
}

impl ErrorKind {
    /// Worth retrying the same request after a delay.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::RateLimited | ErrorKind::Server)
    }

    /// A refusal that no retry, re-read or re-plan can change: the operator must act
    /// (credentials, access rules, IAM policy). Reported once, never re-planned.
    /// (`InvalidCredential` gets its one credential re-read in the client first, and
    /// `InvalidSignature` its one clock re-sync.)
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidSignature
                | ErrorKind::Unauthorized
                | ErrorKind::NotGranted
                | ErrorKind::InvalidCredential
                | ErrorKind::InvalidKey
                | ErrorKind::IamDenied
        )
    }
}

/// Most IAM action names kept from one refusal, and the longest name.
const IAM_MAX: usize = 16;
const IAM_NAME_MAX: usize = 128;

/// OVH's two error body shapes, merged; unknown fields are kept in `details`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ErrorBody {
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default, rename = "errorCode")]
    pub error_code: Option<String>,
    #[serde(default, rename = "httpCode")]
    pub http_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// Decodes an error body; anything that is not one of OVH's shapes becomes a message with
    /// the (truncated) text, so a proxy's HTML error page still says something.
    ///
    /// Bounded: the message keeps at most [`MESSAGE_MAX`] characters and codes at most
    /// [`CODE_MAX`], so an error quoted in a log line or in `carpd status` stays a line,
    /// whatever the server sent.
    pub fn decode(bytes: &[u8]) -> ErrorBody {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(mut b) if b.class.is_some() || b.error_code.is_some() || b.message.is_some() => {
                for code in [&mut b.class, &mut b.error_code, &mut b.http_code]
                    .into_iter()
                    .flatten()
                {
                    cut(code, CODE_MAX);
                }
                if let Some(m) = &mut b.message {
                    cut(m, MESSAGE_MAX);
                }
                b
            }
            _ => {
                let text = String::from_utf8_lossy(bytes);
                let text = crate::remote::untrusted(text.trim(), 200);
                ErrorBody {
                    message: (!text.is_empty()).then_some(text),
                    ..ErrorBody::default()
                }
            }
        }
    }
}

/// Longest error message kept from an answer (OVH's are one sentence).
pub const MESSAGE_MAX: usize = 500;
/// Longest class or error code kept (OVH's are like `Client::Forbidden`).
pub const CODE_MAX: usize = 64;

/// Cuts `s` to `max` characters, marking the cut, and escapes control characters: the text
/// comes from the server and ends up in log lines (src/remote.rs).
fn cut(s: &mut String, max: usize) {
    *s = crate::remote::untrusted(s, max);
}

/// An HTTP error answer from the API.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub method: String,
    /// Endpoint name (`ovh-eu`) or base URL.
    pub endpoint: String,
    /// Path with query string, as sent after the base URL.
    pub path: String,
    pub status: u16,
    pub body: ErrorBody,
    pub query_id: Option<String>,
    /// `Retry-After` of a 429/503, when given in seconds.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        let code = self.body.error_code.as_deref().unwrap_or("");
        let class = self.body.class.as_deref().unwrap_or("");
        match (self.status, code) {
            (_, "INVALID_SIGNATURE") => ErrorKind::InvalidSignature,
            (_, "QUERY_TIME_OUT") => ErrorKind::QueryTimeOut,
            (_, "NOT_GRANTED_CALL") => ErrorKind::NotGranted,
            (_, "NOT_CREDENTIAL" | "INVALID_CREDENTIAL") => ErrorKind::InvalidCredential,
            (_, "INVALID_KEY") => ErrorKind::InvalidKey,
            (403, _) if !self.iam_actions().is_empty() => ErrorKind::IamDenied,
            (429, _) => ErrorKind::RateLimited,
            (500..=599, _) => ErrorKind::Server,
            (401, _) => ErrorKind::Unauthorized,
            (404, _) => ErrorKind::NotFound,
            (409, _) => ErrorKind::Conflict,
            _ if class == "Client::NotFound" => ErrorKind::NotFound,
            _ if class == "Client::Conflict" => ErrorKind::Conflict,
            _ => ErrorKind::Client,
        }
    }

    /// The IAM actions OVH says are missing (`details.unauthorizedActionsByIAM`, a string of
    /// comma- or space-separated names, or a list). Only names made of the characters OVH's
    /// action names use are kept, at most [`IAM_MAX`]: the answer is untrusted text that ends
    /// up in logs.
    pub fn iam_actions(&self) -> Vec<String> {
        let Some(v) = self
            .body
            .details
            .as_ref()
            .and_then(|d| d.get("unauthorizedActionsByIAM"))
        else {
            return Vec::new();
        };
        let mut names: Vec<&str> = Vec::new();
        match v {
            serde_json::Value::String(s) => names.extend(s.split([',', ' '])),
            serde_json::Value::Array(a) => names.extend(a.iter().filter_map(|x| x.as_str())),
            _ => {}
        }
        let mut out: Vec<String> = Vec::new();
        for n in names.into_iter().map(str::trim) {
            let ok = !n.is_empty()
                && n.len() <= IAM_NAME_MAX
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":/_-.*".contains(&b));
            if ok && !out.iter().any(|o| o == n) && out.len() < IAM_MAX {
                out.push(n.to_string());
            }
        }
        out
    }

    /// The access rule a consumer key needs for this call: the path with MACs, IPs and task
    /// ids replaced by `*` (service names stay: rules should name the server).
    pub fn access_rule(&self) -> String {
        let path = self.path.split('?').next().unwrap_or("");
        let generic: Vec<&str> = path
            .split('/')
            .map(|seg| {
                let is_id = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
                let is_mac = seg.matches(':').count() == 5;
                let is_ip = seg.parse::<std::net::IpAddr>().is_ok() || seg.contains("%2F");
                if is_id || is_mac || is_ip { "*" } else { seg }
            })
            .collect();
        format!("{} {}", self.method, generic.join("/"))
    }

    fn fix(&self) -> String {
        match self.kind() {
            ErrorKind::InvalidSignature => "the request was not signed with the key pair OVH has: check application_secret and consumer_key belong to this application key".into(),
            ErrorKind::QueryTimeOut => "the clock is too far from OVH's: carpd resyncs with /auth/time; check NTP if it persists".into(),
            ErrorKind::Unauthorized => "the call was not authenticated: configure ovh credentials".into(),
            ErrorKind::NotGranted => format!(
                "the consumer key's access rules do not allow this call: add the rule `{}` (or create a new consumer key with it)",
                self.access_rule()
            ),
            ErrorKind::InvalidCredential => "the consumer key is unknown, not validated, expired or revoked: create and validate a new one and update the secret".into(),
            ErrorKind::InvalidKey => "the application key is wrong or belongs to another region: check ovh.endpoint and application_key".into(),
            ErrorKind::IamDenied => format!(
                "the service account's IAM policy does not grant {}: add {} to its policy (carpd needs {} for virtual MACs, {} for IP moves)",
                self.iam_actions().join(", "),
                if self.iam_actions().len() == 1 { "it" } else { "them" },
                crate::ovh::rights::IAM_ACTIONS_VMAC.join(", "),
                crate::ovh::rights::IAM_ACTIONS_MOVE.join(", ")
            ),
            ErrorKind::NotFound => "check the service name, MAC and IP in carpd.yaml against the OVH manager".into(),
            ErrorKind::Conflict => "another operation is pending on this object: carpd re-reads the state and retries".into(),
            ErrorKind::RateLimited => "too many requests: carpd backs off; lower the request rate if it persists".into(),
            ErrorKind::Server => "OVH had a transient failure: carpd retries within its deadline".into(),
            ErrorKind::Client => "OVH refused the request as shown".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OVH API {} {} on {}: HTTP {}",
            self.method, self.path, self.endpoint, self.status
        )?;
        if let Some(c) = self
            .body
            .error_code
            .as_deref()
            .or(self.body.class.as_deref())
        {
            write!(f, " {c}")?;
        }
        if let Some(m) = &self.body.message {
            write!(f, ": {m}")?;
        }
        match &self.query_id {
            Some(q) => write!(f, " (query id {q})")?,
            None => write!(f, " (no query id)")?,
        }
        write!(f, ". Fix: {}", self.fix())
    }
}

impl std::error::Error for ApiError {}

/// Every way an OVH call can fail.
#[derive(Clone, Debug, thiserror::Error)]
pub enum OvhError {
    #[error("{0}")]
    Api(Box<ApiError>),
    #[error(
        "OVH API {method} {path} on {endpoint}: {detail}. Fix: check network access to the endpoint (DNS, firewall, proxy)"
    )]
    Network {
        method: String,
        endpoint: String,
        path: String,
        detail: String,
        /// The connection was never made, so the request certainly did not run.
        connect: bool,
    },
    #[error(
        "OVH API {method} {path} on {endpoint}: unexpected answer{}: {detail}",
        query_id.as_deref().map(|q| format!(" (query id {q})")).unwrap_or_default()
    )]
    Decode {
        method: String,
        endpoint: String,
        path: String,
        query_id: Option<String>,
        detail: String,
    },
    #[error("{0}")]
    Credentials(#[from] CredentialError),
    #[error(
        "OVH OAuth2 token request to {url} failed: {detail}. Fix: check client_id/client_secret of the service account"
    )]
    OAuth { url: String, detail: String },
    #[error("{0}")]
    Config(String),
}

impl OvhError {
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            OvhError::Api(a) => Some(a),
            _ => None,
        }
    }

    pub fn kind(&self) -> Option<ErrorKind> {
        self.api().map(ApiError::kind)
    }

    /// Transient: a 429, a 5xx or a network failure.
    pub fn is_transient(&self) -> bool {
        match self {
            OvhError::Api(a) => a.kind().is_transient(),
            OvhError::Network { .. } => true,
            _ => false,
        }
    }

    /// A refusal only the operator can fix ([`ErrorKind::is_permanent`]): reported once,
    /// never retried or re-planned.
    pub fn is_permanent(&self) -> bool {
        self.kind().is_some_and(ErrorKind::is_permanent)
    }

    /// A 4xx answer (the request reached OVH and was refused).
    pub fn is_client_error(&self) -> bool {
        self.api()
            .is_some_and(|a| (400..500).contains(&a.status) && a.status != 429)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str, path: &str, method: &str) -> ApiError {
        ApiError {
            method: method.into(),
            endpoint: "ovh-eu".into(),
            path: path.into(),
            status,
            body: ErrorBody::decode(body.as_bytes()),
            query_id: Some("EU.ext-3.abc".into()),
            retry_after: None,
        }
    }

    #[test]
    fn classification_and_messages() {
        let e = err(
            403,
            r#"{"errorCode":"NOT_GRANTED_CALL","httpCode":"403 Forbidden","message":"This call has not been granted"}"#,
            "/dedicated/server/ns1.eu/virtualMac/02:00:00:aa:bb:cc/virtualAddress/51.68.252.230",
            "DELETE",
        );
        assert_eq!(e.kind(), ErrorKind::NotGranted);
        let s = e.to_string();
        assert!(
            s.contains("DELETE /dedicated/server/ns1.eu/virtualMac/*/virtualAddress/*")
                && s.contains("EU.ext-3.abc")
                && s.contains("ovh-eu"),
            "{s}"
        );
        let e = err(
            404,
            r#"{"class":"Client::NotFound","message":"The requested object (taskId = 5) does not exist","details":{"x":1}}"#,
            "/dedicated/server/ns1.eu/task/5",
            "GET",
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.body.details.is_some());
        assert_eq!(e.access_rule(), "GET /dedicated/server/ns1.eu/task/*");
        assert_eq!(
            err(400, r#"{"errorCode":"QUERY_TIME_OUT"}"#, "/x", "GET").kind(),
            ErrorKind::QueryTimeOut
        );
        assert_eq!(err(503, "<html>", "/x", "GET").kind(), ErrorKind::Server);
        assert_eq!(
            err(503, "<html>", "/x", "GET").body.message.as_deref(),
            Some("<html>")
        );
        assert_eq!(
            err(
                409,
                r#"{"class":"Client::Conflict","message":"m"}"#,
                "/x",
                "POST"
            )
            .kind(),
            ErrorKind::Conflict
        );
        assert_eq!(err(429, "", "/x", "GET").kind(), ErrorKind::RateLimited);
        assert_eq!(err(400, "{}", "/x", "POST").kind(), ErrorKind::Client);
    }

    #[test]
    fn decoded_error_bodies_are_bounded_whatever_the_server_sends() {
        let huge = "é".repeat(100_000);
        let body = format!(r#"{{"class":"{huge}","errorCode":"{huge}","message":"{huge}"}}"#);
        let b = ErrorBody::decode(body.as_bytes());
        assert_eq!(b.message.as_ref().unwrap().chars().count(), MESSAGE_MAX + 1);
        assert!(b.message.as_ref().unwrap().ends_with('…'));
        assert_eq!(b.class.as_ref().unwrap().chars().count(), CODE_MAX + 1);
        assert_eq!(b.error_code.as_ref().unwrap().chars().count(), CODE_MAX + 1);
        let e = err(500, &body, "/ip", "GET");
        assert!(
            e.to_string().len() < 4 * (MESSAGE_MAX + 2 * CODE_MAX) + 1000,
            "{}",
            e.to_string().len()
        );
        // A short message is kept as it is.
        let b = ErrorBody::decode(br#"{"message":"The requested object (ip) does not exist"}"#);
        assert_eq!(
            b.message.as_deref(),
            Some("The requested object (ip) does not exist")
        );
    }

    proptest::proptest! {
        #[test]
        fn error_decoder_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let b = ErrorBody::decode(&bytes);
            let e = ApiError { method: "GET".into(), endpoint: "e".into(), path: "/p".into(), status: 400, body: b, query_id: None, retry_after: None };
            let _ = e.to_string();
        }
    }
}
