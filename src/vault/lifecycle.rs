//! When to renew the token, when to log in again, when to re-read the secretsmith file.
//!
//! Pure: no I/O, the clock is an argument. The session asks [`Lifecycle::step`] what to do,
//! does it, and reports the outcome back. The rules:
//!
//! - no token: log in; if the last login was *refused* (not merely unreachable), re-read the
//!   secretsmith file first — Salt rotates the secret_id under a running daemon;
//! - a token that never expires (root, some token-method tokens) is used as is;
//! - at 2/3 of its TTL a token is renewed if it is renewable and renewal still extends it;
//!   otherwise (not renewable, renewal refused, or renewal has stopped extending because the
//!   token nears its max TTL) carpd logs in again. 2/3 leaves a third of the TTL (100 s of the
//!   production 300 s) for retries before the token expires.

use std::time::{Duration, Instant};

use super::error::Kind;
use super::store::TokenInfo;
use crate::remote::later;

/// What the session should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The token is good; look again at `next` (`None`: it never expires).
    Use {
        next: Option<Instant>,
    },
    Renew,
    Login,
    /// Re-read the secretsmith file, then log in.
    ReloadAndLogin,
}

#[derive(Clone, Debug)]
struct Token {
    obtained: Instant,
    ttl: Option<Duration>,
    /// TTL the last login gave: renewals that give much less mean the max TTL is near.
    login_ttl: Option<Duration>,
    renewable: bool,
    /// Renewal failed or stopped extending: log in at the next step.
    exhausted: bool,
}

/// The token's state as the policy sees it.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    token: Option<Token>,
    login_refused: bool,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle::default()
    }

    /// What to do at `now`.
    pub fn step(&self, now: Instant) -> Step {
        let Some(t) = &self.token else {
            return if self.login_refused {
                Step::ReloadAndLogin
            } else {
                Step::Login
            };
        };
        let Some(ttl) = t.ttl else {
            return Step::Use { next: None };
        };
        // Two thirds, without multiplying first (a TTL from the server can be any size).
        let due = later(t.obtained, ttl - ttl / 3);
        if now < due {
            return Step::Use { next: Some(due) };
        }
        if t.renewable && !t.exhausted && now < later(t.obtained, ttl) {
            Step::Renew
        } else {
            Step::Login
        }
    }

    /// When the token expires (`None`: no token, or it never expires).
    pub fn expires_at(&self) -> Option<Instant> {
        let t = self.token.as_ref()?;
        Some(later(t.obtained, t.ttl?))
    }

    /// True when a token is held and, as far as the clock says, still valid.
    pub fn has_token(&self, now: Instant) -> bool {
        match &self.token {
            None => false,
            Some(t) => t.ttl.is_none_or(|ttl| now < later(t.obtained, ttl)),
        }
    }

    pub fn logged_in(&mut self, now: Instant, info: &TokenInfo) {
        self.login_refused = false;
        self.token = Some(Token {
            obtained: now,
            ttl: info.ttl,
            login_ttl: info.ttl,
            renewable: info.renewable,
            exhausted: false,
        });
    }

    pub fn renewed(&mut self, now: Instant, info: &TokenInfo) {
        if let Some(t) = &mut self.token {
            t.obtained = now;
            t.ttl = info.ttl;
            t.renewable = info.renewable;
            // Under half the login TTL: the max TTL is near, further renewals would come
            // ever closer together. Log in at the next due time instead.
            t.exhausted = match (info.ttl, t.login_ttl) {
                (Some(new), Some(login)) => new < login / 2,
                _ => false,
            };
        }
    }

    pub fn renew_failed(&mut self) {
        if let Some(t) = &mut self.token {
            t.exhausted = true;
        }
    }

    /// A login failed; a refusal (as opposed to an unreachable server) makes the next login
    /// re-read the secretsmith file first.
    pub fn login_failed(&mut self, kind: Kind) {
        self.token = None;
        if kind == Kind::LoginRejected {
            self.login_refused = true;
        }
    }

    /// The server refused the token on a request although the clock says it is valid
    /// (revoked, or the server restarted): drop it.
    pub fn token_rejected(&mut self) {
        self.token = None;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn info(ttl: u64, renewable: bool) -> TokenInfo {
        TokenInfo {
            ttl: Some(Duration::from_secs(ttl)),
            renewable,
            policies: vec![],
        }
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn renews_at_two_thirds_of_the_production_ttl() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        assert_eq!(l.step(t0), Step::Login);
        l.logged_in(t0, &info(300, true));
        assert_eq!(
            l.step(t0 + s(199)),
            Step::Use {
                next: Some(t0 + s(200))
            }
        );
        assert_eq!(l.step(t0 + s(200)), Step::Renew);
        l.renewed(t0 + s(200), &info(300, true));
        assert_eq!(
            l.step(t0 + s(399)),
            Step::Use {
                next: Some(t0 + s(400))
            }
        );
        assert_eq!(l.expires_at(), Some(t0 + s(500)));
    }

    #[test]
    fn not_renewable_means_login_again() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.logged_in(t0, &info(3, false));
        assert_eq!(l.step(t0 + s(2)), Step::Login);
    }

    #[test]
    fn a_failed_renewal_means_login_again() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.logged_in(t0, &info(300, true));
        assert_eq!(l.step(t0 + s(250)), Step::Renew);
        l.renew_failed();
        assert_eq!(l.step(t0 + s(250)), Step::Login);
    }

    #[test]
    fn renewals_that_stop_extending_lead_to_a_login() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.logged_in(t0, &info(300, true));
        l.renewed(t0 + s(200), &info(200, true)); // capped by max TTL, still >= half
        assert_eq!(l.step(t0 + s(334)), Step::Renew);
        l.renewed(t0 + s(334), &info(66, true)); // under half: near the max TTL
        assert_eq!(l.step(t0 + s(378)), Step::Login);
    }

    #[test]
    fn an_expired_token_is_never_renewed() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.logged_in(t0, &info(3, true));
        assert!(l.has_token(t0 + s(2)));
        assert!(!l.has_token(t0 + s(3)));
        assert_eq!(l.step(t0 + s(10)), Step::Login);
    }

    #[test]
    fn a_refused_login_rereads_the_file_an_unreachable_one_does_not() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.login_failed(Kind::Unreachable);
        assert_eq!(l.step(t0), Step::Login);
        l.login_failed(Kind::LoginRejected);
        assert_eq!(l.step(t0), Step::ReloadAndLogin);
        l.logged_in(t0, &info(300, true));
        assert!(matches!(l.step(t0), Step::Use { .. }));
    }

    #[test]
    fn tokens_without_ttl_are_used_forever() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.logged_in(
            t0,
            &TokenInfo {
                ttl: None,
                renewable: false,
                policies: vec![],
            },
        );
        assert_eq!(l.step(t0 + s(1_000_000)), Step::Use { next: None });
        l.token_rejected();
        assert_eq!(l.step(t0), Step::Login);
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Advance(u64),
        Login(Option<u64>, bool),
        Renewed(Option<u64>, bool),
        RenewFailed,
        LoginFailed(bool),
        Rejected,
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u64..400).prop_map(Ev::Advance),
            (prop::option::of(1u64..600), any::<bool>()).prop_map(|(t, r)| Ev::Login(t, r)),
            (prop::option::of(0u64..600), any::<bool>()).prop_map(|(t, r)| Ev::Renewed(t, r)),
            Just(Ev::RenewFailed),
            any::<bool>().prop_map(Ev::LoginFailed),
            Just(Ev::Rejected),
        ]
    }

    proptest! {
        /// Whatever happened before: never renew a token that is expired or not renewable,
        /// never "use" a token past its renewal point, always log in without a token.
        #[test]
        fn the_policy_never_renews_a_dead_token(events in prop::collection::vec(ev(), 0..40)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut l = Lifecycle::new();
            let mut renewable = false;
            for e in events {
                match e {
                    Ev::Advance(n) => now += s(n),
                    Ev::Login(ttl, r) => {
                        renewable = r;
                        l.logged_in(now, &TokenInfo { ttl: ttl.map(s), renewable: r, policies: vec![] });
                    }
                    Ev::Renewed(ttl, r) => {
                        if l.token.is_some() {
                            renewable = r;
                        }
                        l.renewed(now, &TokenInfo { ttl: ttl.map(s), renewable: r, policies: vec![] });
                    }
                    Ev::RenewFailed => l.renew_failed(),
                    Ev::LoginFailed(refused) => l.login_failed(if refused { Kind::LoginRejected } else { Kind::Unreachable }),
                    Ev::Rejected => l.token_rejected(),
                }
                match l.step(now) {
                    Step::Renew => {
                        prop_assert!(renewable);
                        prop_assert!(l.has_token(now));
                    }
                    Step::Use { next: Some(at) } => {
                        prop_assert!(at > now);
                        prop_assert!(l.has_token(now));
                    }
                    Step::Use { next: None } => prop_assert!(l.expires_at().is_none() && l.token.is_some()),
                    Step::Login | Step::ReloadAndLogin => {}
                }
                if l.token.is_none() {
                    prop_assert!(matches!(l.step(now), Step::Login | Step::ReloadAndLogin));
                }
            }
        }
    }
}
