//! When to try connecting to devd again: capped exponential backoff, reset by a healthy
//! connection.
//!
//! The delays are carpd's one retry policy ([`crate::backoff`]); this file adds what is
//! devd's own: when a connection counts as healthy. Pure: no clock, no sleeping. Callers pass durations as values (how long the last
//! connection lasted) and receive the delay to wait, so every rule is tested without time.
//!
//! Rules:
//! - A first attempt, and the first attempt after a connection that was healthy, go at once:
//!   events are being missed while disconnected.
//! - Each failure in a row doubles the delay, from `initial` up to `max`.
//! - A connection counts as healthy once it has lasted `stable_after`. One that devd closes
//!   sooner counts as a failure, so a devd that accepts and closes at once (its client limit
//!   is reached) meets a growing delay instead of a reconnect loop.
//! - No jitter: there is one devd and one carpd per host, no herd to spread.
//!
//! Invariant: [`Backoff::delay`] is zero or within `max(initial, 1 ms) ..= max(max, initial)`,
//! so a misconfigured zero `initial` can never turn the reconnect loop into a busy loop.

use std::time::Duration;

/// The smallest delay between two failed attempts (the shared policy's floor).
#[cfg(test)]
const FLOOR: Duration = crate::backoff::FLOOR;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// The cap.
    pub max: Duration,
    /// How long a connection must last to reset the delay.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    /// 100 ms doubling to 5 s; a connection is healthy after 10 s.
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
        }
    }
}

/// The state of the reconnect loop: how many failures in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Backoff {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// How long to wait before the next connection attempt.
    pub fn delay(&self) -> Duration {
        crate::backoff::Backoff::doubling(self.policy.initial, self.policy.max).delay(self.failures)
    }

    /// A connection attempt failed.
    pub fn connect_failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// A connection ended after lasting `connected_for`.
    pub fn disconnected(&mut self, connected_for: Duration) {
        if connected_for >= self.policy.stable_after {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// Failures in a row so far (0 after a healthy connection).
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn doubles_from_initial_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy::default());
        let mut seen = vec![b.delay()];
        for _ in 0..9 {
            b.connect_failed();
            seen.push(b.delay());
        }
        assert_eq!(
            seen,
            [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(MS)
        );
    }

    #[test]
    fn a_healthy_connection_resets_and_the_next_attempt_is_immediate() {
        let mut b = Backoff::new(BackoffPolicy::default());
        for _ in 0..5 {
            b.connect_failed();
        }
        assert_eq!(b.delay(), MS(1600));
        b.disconnected(Duration::from_secs(10));
        assert_eq!((b.failures(), b.delay()), (0, Duration::ZERO));
    }

    #[test]
    fn a_short_lived_connection_counts_as_a_failure() {
        let mut b = Backoff::new(BackoffPolicy::default());
        // devd at its client limit accepts and closes at once: the delay must grow.
        b.disconnected(MS(3));
        assert_eq!(b.delay(), MS(100));
        b.disconnected(MS(3));
        assert_eq!(b.delay(), MS(200));
        b.connect_failed();
        assert_eq!(b.delay(), MS(400));
    }

    #[test]
    fn never_overflows_and_never_spins() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            stable_after: Duration::ZERO,
        });
        b.connect_failed();
        assert_eq!(
            b.delay(),
            FLOOR,
            "a zero initial delay must not become a busy loop"
        );

        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
            stable_after: Duration::MAX,
        });
        for _ in 0..100 {
            b.connect_failed();
        }
        assert_eq!(b.delay(), Duration::MAX);
        b.failures = u32::MAX;
        b.connect_failed();
        assert_eq!(b.failures(), u32::MAX);
        assert_eq!(b.delay(), Duration::MAX);
    }

    #[test]
    fn a_cap_below_initial_is_raised_to_initial() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: MS(300),
            max: MS(100),
            stable_after: MS(1),
        });
        b.connect_failed();
        b.connect_failed();
        assert_eq!(b.delay(), MS(300));
    }
}
