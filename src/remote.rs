//! Rules every HTTP client of carpd follows toward a server (OVH API, its OAuth2 token
//! endpoint, Vault/OpenBao), in one place so that the clients cannot drift apart:
//!
//! - **No redirects.** A request carries credentials (an AppRole secret_id, a Vault token,
//!   OVH signatures, an OAuth2 client secret or bearer token). Following a 3xx would send
//!   them to whatever origin the answer names, so a redirect is refused before anything is
//!   sent there, and the error names the target ([`RedirectRefused`]).
//! - **rustls on ring, the system's trust store.** One reqwest (the version vaultrs builds
//!   on) for OVH and Vault; [`install_ring_provider`] before any client is built.
//! - **No proxy from the environment.** `HTTPS_PROXY` and friends are ignored; a proxy is used
//!   only when carpd.yaml's `proxy:` names one (checked by `config::validate::check_proxy`).
//! - **Server numbers are untrusted.** A TTL, `expires_in` or `Retry-After` becomes a
//!   [`Duration`] only through [`remote_secs`] (capped at [`MAX_REMOTE_DURATION`]) and is added
//!   to an instant only through [`later`]: no answer can overflow time arithmetic, which
//!   panics, and with `panic = "abort"` would stop the daemon.
//! - **Server text is untrusted.** What a server says (error messages, codes, a `Location`)
//!   goes into log lines and `carpd status` only through [`untrusted`]: control characters
//!   escaped (no line injection, no terminal escapes), length capped.

use std::fmt;
use std::time::{Duration, Instant};

/// Longest duration carpd takes from a server: a year. Longer TTLs and token lifetimes are
/// treated as a year (the token is renewed or fetched again then); a longer `Retry-After`
/// is longer than any request deadline anyway.
pub const MAX_REMOTE_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Seconds from a server as a duration, capped at [`MAX_REMOTE_DURATION`].
pub fn remote_secs(secs: u64) -> Duration {
    Duration::from_secs(secs).min(MAX_REMOTE_DURATION)
}

/// `at + d`, saturating: an instant the platform cannot represent becomes the latest one
/// that [`MAX_REMOTE_DURATION`] still reaches, or `at` itself.
pub fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(d.min(MAX_REMOTE_DURATION)))
        .unwrap_or(at)
}

/// A redirect carpd refused to follow. Built by each client's redirect policy, so that it is
/// the innermost source of the HTTP library's error and reaches the message.
#[derive(Debug)]
pub struct RedirectRefused {
    pub status: u16,
    /// Where the server wanted the request to go (escaped).
    pub target: String,
}

impl RedirectRefused {
    pub fn new(status: u16, target: &str) -> RedirectRefused {
        RedirectRefused {
            status,
            target: untrusted(target, 300),
        }
    }
}

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server answered HTTP {} redirecting to {}; carpd never follows redirects (the request carries credentials). Fix: point the URL at the final address",
            self.status, self.target
        )
    }
}

impl std::error::Error for RedirectRefused {}

/// The redirect policy of every client: refuse, naming the target.
pub fn no_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let e = RedirectRefused::new(attempt.status().as_u16(), attempt.url().as_str());
        attempt.error(e)
    })
}

/// rustls needs one process-wide crypto provider; carpd uses ring (aws-lc-sys does not build
/// for FreeBSD from Debian). Every client installs it before it is built; installing twice is
/// harmless: the first one stays.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Server text made safe for one log line: control characters (newlines, escape sequences)
/// are written as `\n`, `\u{1b}`…, and the result keeps at most `max` characters, escapes
/// counted (the cut is marked with `…`, so at most `max + 1` in all). Printable text,
/// including non-ASCII letters, is kept as it is.
pub fn untrusted(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    let mut kept = 0;
    for c in text.chars() {
        let escaped = c.is_control() || c == '\u{2028}' || c == '\u{2029}';
        let width = if escaped {
            c.escape_default().count()
        } else {
            1
        };
        if kept + width > max {
            out.push('…');
            break;
        }
        if escaped {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        kept += width;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untrusted_text_is_bounded_with_its_escapes_counted() {
        // Found by fuzzing: escapes made a cut message longer than its bound.
        let nasty = "\u{1b}".repeat(1000);
        let out = untrusted(&nasty, 500);
        assert!(out.chars().count() <= 501, "{}", out.chars().count());
        assert!(out.ends_with('…'));
        assert_eq!(untrusted("a\nb", 10), "a\\nb");
        assert_eq!(untrusted("abc", 3), "abc");
        assert_eq!(untrusted("abcd", 3), "abc…");
    }

    #[test]
    fn remote_numbers_are_capped_and_never_overflow() {
        assert_eq!(remote_secs(u64::MAX), MAX_REMOTE_DURATION);
        assert_eq!(remote_secs(30), Duration::from_secs(30));
        let now = Instant::now();
        assert!(later(now, Duration::MAX) > now);
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
    }

    #[test]
    fn untrusted_text_stays_one_line_and_bounded() {
        let s = untrusted("bad\nFAKE carpd[1]: MASTER\r\x1b[31mred\u{2028}x", 100);
        assert!(
            !s.contains('\n') && !s.contains('\r') && !s.contains('\x1b'),
            "{s}"
        );
        assert!(
            s.contains("bad\\nFAKE") && s.contains("\\u{1b}[31mred"),
            "{s}"
        );
        assert_eq!(untrusted("héllo", 100), "héllo");
        assert_eq!(untrusted("abcdef", 3), "abc…");
        assert_eq!(untrusted("abc", 3), "abc");
    }

    #[test]
    fn a_refused_redirect_names_the_escaped_target() {
        let e = RedirectRefused::new(307, "http://127.0.0.1:9/x\nforged");
        let m = e.to_string();
        assert!(
            m.contains("HTTP 307") && m.contains("http://127.0.0.1:9/x\\nforged"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }
}
