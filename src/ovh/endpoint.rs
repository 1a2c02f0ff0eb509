//! Where the OVH API lives: the named endpoints python-ovh knows, or a custom base URL.
//!
//! The base URL is what request URLs start with (`https://eu.api.ovh.com/1.0`), exactly as
//! signed; it never ends with a slash. OAuth2 token URLs exist for the three OVHcloud regions
//! only (ovh-eu, ovh-ca, ovh-us); a custom endpoint has none unless one is named
//! (`ovh.token_url`): carpd never invents where to send a service account's secret.

use std::fmt;

/// The named endpoints: (name, base URL, OAuth2 token URL).
const NAMED: &[(&str, &str, Option<&str>)] = &[
    (
        "ovh-eu",
        "https://eu.api.ovh.com/1.0",
        Some("https://www.ovh.com/auth/oauth2/token"),
    ),
    (
        "ovh-ca",
        "https://ca.api.ovh.com/1.0",
        Some("https://ca.ovh.com/auth/oauth2/token"),
    ),
    (
        "ovh-us",
        "https://api.us.ovhcloud.com/1.0",
        Some("https://us.ovhcloud.com/auth/oauth2/token"),
    ),
    ("kimsufi-eu", "https://eu.api.kimsufi.com/1.0", None),
    ("kimsufi-ca", "https://ca.api.kimsufi.com/1.0", None),
    ("soyoustart-eu", "https://eu.api.soyoustart.com/1.0", None),
    ("soyoustart-ca", "https://ca.api.soyoustart.com/1.0", None),
];

/// An API endpoint: a name for messages, the base URL, and the OAuth2 token URL if any.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    name: String,
    base: String,
    token_url: Option<String>,
}

impl Endpoint {
    /// A named endpoint (`ovh-eu`, ...) or an `http://` / `https://` base URL.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let s = s.trim();
        if let Some((name, base, token)) = NAMED.iter().find(|(n, _, _)| *n == s) {
            return Ok(Endpoint {
                name: (*name).to_string(),
                base: (*base).to_string(),
                token_url: token.map(str::to_string),
            });
        }
        if s.starts_with("https://") || s.starts_with("http://") {
            let base = s.trim_end_matches('/').to_string();
            let rest = base.split_once("://").map(|(_, r)| r).unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') || base.contains(['?', '#', ' ']) {
                return Err(format!(
                    "'{}' is not a usable API base URL: expected e.g. https://eu.api.ovh.com/1.0",
                    s.escape_default()
                ));
            }
            // A custom endpoint (simulator, proxy) has no OAuth2 token URL unless one is
            // named (`with_token_url`): a guess would send the client secret elsewhere.
            return Ok(Endpoint {
                name: base.clone(),
                base,
                token_url: None,
            });
        }
        Err(format!(
            "unknown OVH endpoint '{}': use one of {} or a base URL (https://...)",
            s.escape_default(),
            Self::names().join(", ")
        ))
    }

    /// The names python-ovh accepts, in table order.
    pub fn names() -> Vec<&'static str> {
        NAMED.iter().map(|(n, _, _)| *n).collect()
    }

    pub fn with_token_url(mut self, url: impl Into<String>) -> Endpoint {
        self.token_url = Some(url.into());
        self
    }

    /// `ovh-eu`, or the base URL of a custom endpoint.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base URL requests start with, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token_url(&self) -> Option<&str> {
        self.token_url.as_deref()
    }

    /// The full URL of an API path (`/dedicated/server/...`), as it is sent and signed.
    ///
    /// python-ovh drops the `/1.0` suffix for paths that start with `/v1` or `/v2`.
    pub fn url(&self, path: &str) -> String {
        if (path.starts_with("/v1/") || path.starts_with("/v2/"))
            && let Some(root) = self.base.strip_suffix("/1.0")
        {
            return format!("{root}{path}");
        }
        format!("{}{path}", self.base)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name == self.base {
            f.write_str(&self.base)
        } else {
            write!(f, "{} ({})", self.name, self.base)
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_endpoints_and_urls() {
        let eu = Endpoint::parse("ovh-eu").unwrap();
        assert_eq!(eu.url("/auth/time"), "https://eu.api.ovh.com/1.0/auth/time");
        assert_eq!(eu.url("/v1/call"), "https://eu.api.ovh.com/v1/call");
        assert_eq!(eu.url("/v2/call"), "https://eu.api.ovh.com/v2/call");
        assert_eq!(
            eu.token_url(),
            Some("https://www.ovh.com/auth/oauth2/token")
        );
        for n in Endpoint::names() {
            let e = Endpoint::parse(n).unwrap();
            assert!(e.base().starts_with("https://") && e.base().ends_with("/1.0"));
        }
        assert_eq!(Endpoint::parse("kimsufi-ca").unwrap().token_url(), None);
        assert_eq!(
            Endpoint::parse("soyoustart-eu").unwrap().base(),
            "https://eu.api.soyoustart.com/1.0"
        );
    }

    #[test]
    fn custom_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/1.0/").unwrap();
        assert_eq!(e.base(), "http://127.0.0.1:8080/1.0");
        assert_eq!(e.token_url(), None);
        let e = e.with_token_url("http://127.0.0.1:8080/auth/oauth2/token");
        assert_eq!(
            e.token_url(),
            Some("http://127.0.0.1:8080/auth/oauth2/token")
        );
        assert!(
            Endpoint::parse("ovh-fr")
                .unwrap_err()
                .contains("ovh-eu, ovh-ca")
        );
        assert!(Endpoint::parse("https://").is_err());
        assert!(Endpoint::parse("https://x/1.0?a=b").is_err());
    }
}
