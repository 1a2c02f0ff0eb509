//! The one retry policy of carpd: capped exponential backoff, with optional jitter and a
//! server's `Retry-After` as a floor. Every adapter that retries uses it — the devd
//! reconnect loop, the Vault agent, the OVH client and claim re-plans, the claim scheduler —
//! each with its own numbers, so "how long after n failures" has one answer and one test.
//!
//! Pure: no clock, no randomness of its own (callers pass a uniform sample), no sleeping.
//! Saturating everywhere: no input (failure count, factor, server hint) can overflow or
//! panic, and a zero `initial` can never produce a busy loop ([`FLOOR`]).

use std::time::Duration;

/// The smallest delay after a failure.
pub const FLOOR: Duration = Duration::from_millis(1);

/// Capped exponential backoff: `initial * factor^(failures-1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The cap of one delay.
    pub max: Duration,
    /// Growth per failure (values below 1 count as 1).
    pub factor: f64,
}

impl Backoff {
    /// Doubling from `initial` to `max`.
    pub const fn doubling(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            factor: 2.0,
        }
    }

    /// The delay after `failures` failures in a row; zero for none.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let initial = self.initial.max(FLOOR);
        let max = self.max.max(initial);
        let exp = self
            .factor
            .max(1.0)
            .powi(i32::try_from(failures - 1).unwrap_or(i32::MAX));
        let secs = initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= max.as_secs_f64() {
            return max;
        }
        Duration::from_secs_f64(secs).clamp(initial, max)
    }

    /// [`Backoff::delay`] with "equal jitter" (uniformly within its upper half, `rand01` in
    /// [0, 1)) so that clients sharing a server do not retry in step, and never shorter
    /// than the server's `retry_after`.
    pub fn jittered(&self, failures: u32, rand01: f64, retry_after: Option<Duration>) -> Duration {
        let d = self.delay(failures);
        let rand01 = if rand01.is_finite() {
            rand01.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = (d / 2 + d.mul_f64(0.5 * rand01)).min(d);
        retry_after.map_or(jittered, |ra| ra.max(jittered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_from_initial_to_the_cap() {
        let b = Backoff::doubling(100 * MS, Duration::from_secs(5));
        let got: Vec<u128> = (0..9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn a_zero_initial_is_floored_and_huge_counts_saturate() {
        let b = Backoff::doubling(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.delay(1), FLOOR);
        let b = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        let b = Backoff {
            factor: f64::INFINITY,
            ..b
        };
        assert_eq!(b.delay(3), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_the_upper_half_and_retry_after_is_a_floor() {
        let b = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.jittered(1, 0.0, None), 500 * MS);
        assert_eq!(b.jittered(1, 0.999_999, None).as_millis(), 999);
        assert_eq!(b.jittered(1, f64::NAN, None), 500 * MS);
        assert_eq!(
            b.jittered(1, 0.0, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_within_bounds(
            initial_ms in 0u64..u64::MAX / 2,
            max_ms in 0u64..u64::MAX / 2,
            factor in proptest::num::f64::ANY,
            failures in any::<u32>(),
            rand01 in proptest::num::f64::ANY,
        ) {
            let b = Backoff { initial: Duration::from_millis(initial_ms), max: Duration::from_millis(max_ms), factor };
            let d = b.delay(failures);
            if failures > 0 {
                let lo = b.initial.max(FLOOR);
                prop_assert!(d >= lo && d <= b.max.max(lo), "{d:?}");
            }
            let j = b.jittered(failures, rand01, None);
            prop_assert!(j <= d && j >= d / 2, "{j:?} vs {d:?}");
        }
    }
}
