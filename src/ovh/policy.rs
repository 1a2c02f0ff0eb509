//! The pure timing rules of the OVH client: retry backoff, task polling, rate limiting.
//!
//! No clock and no sleeping here: callers pass "now" (an `Instant`) and random numbers in,
//! and get durations out, so every rule is tested without time passing.
//!
//! - [`RetryPolicy`]: exponential backoff with "equal jitter" (half fixed, half random) for
//!   429, 5xx and network errors, bounded by a deadline; a server's `Retry-After` is a floor.
//! - [`PollPolicy`]: how long to wait before asking about a task again. Without an
//!   expectation the interval grows with the time already waited (a fraction of it), so the
//!   overshoot past a task's end is a bounded fraction of the task's duration, starting small
//!   for fast tasks and capped for slow ones. With a learned duration ([`smooth`]) the first
//!   poll goes just before the expected end and the next ones follow closely, then back off:
//!   a task of the usual length costs one or two polls and is seen done within a few percent.
//!   Rounds whose one read serves every claim of a failover ([`PollPolicy::next_shared`])
//!   close in tighter (2 ms floor instead of 10 ms; 5% growth instead of 10% while nothing
//!   is learned): they cost one request for all. A learned time keeps how precisely it is
//!   known ([`Expect`]): after the first, coarsely polled tasks, polls start from the low end
//!   of their bracket, once.
//! - [`RateLimiter`]: a token bucket. With `burst` tokens and `per_minute` refill, any window
//!   of 60 s sees at most `burst + per_minute` requests; the default (20 + 40) keeps carpd
//!   within OVH's suggested 60 requests per minute per key. Claims never wait for it: they
//!   take their tokens even into debt ([`RateLimiter::take`]), and background checks, which
//!   wait for tokens and skip rounds when the headroom is low, pay that debt back.
//! - A failover's own budget (issue 21): claims draw on a second bucket, `ovh.failover_requests_per_minute`
//!   (default 120, twice OVH's guidance, for the seconds a failover lasts), and wait only when
//!   it is empty; the steady bucket above stays for checks and readiness.
//! - [`Cooldown`]: any 429 pauses every request of the client (claims too) until its
//!   `Retry-After`, then lets them out one at a time, spaced, for a calm period: no burst
//!   when the pause ends, however many claims were waiting.

use std::time::{Duration, Instant};

/// Retries of one request (or of one step of an operation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Growth per retry.
    pub factor: f64,
    /// Cap of one delay.
    pub max: Duration,
    /// Most attempts in total (first try included).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 200 ms, doubling, capped at 10 s, 6 attempts.
    fn default() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            factor: 2.0,
            max: Duration::from_secs(10),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 for the first retry), given a uniform random
    /// number `rand01` in [0, 1) and the server's `Retry-After`, or `None` when no retry is
    /// allowed: out of attempts, or the retry would start after `remaining` runs out.
    pub fn delay(
        &self,
        retry: u32,
        rand01: f64,
        retry_after: Option<Duration>,
        remaining: Duration,
    ) -> Option<Duration> {
        if retry == 0 || retry >= self.max_attempts {
            return None;
        }
        let backoff = crate::backoff::Backoff {
            initial: self.initial,
            max: self.max,
            factor: self.factor,
        };
        let d = backoff.jittered(retry, rand01, retry_after);
        (d < remaining).then_some(d)
    }
}

/// Intervals between polls of one task.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PollPolicy {
    /// Shortest interval (the first polls).
    pub min: Duration,
    /// Longest interval.
    pub max: Duration,
    /// Interval as a fraction of the time waited so far.
    pub ratio: f64,
    /// How long a 404 on a task we just created is only "not visible yet"; past it, each
    /// 404 is checked against the binding (the step's effect seen means the task is done).
    /// A 404 never ends a claim before its deadline.
    pub fresh_404: Duration,
    /// With a learned duration `e` known within `spread` ([`Expect`]): the first poll at
    /// `first * e - spread`, then every `step * e` (at least `min / 10`, or `min / 50` for
    /// shared rounds) until `(1 + 5 * step) * e + spread`, then the ratio rule.
    pub first: f64,
    pub step: f64,
}

impl Default for PollPolicy {
    /// Unknown duration: 100 ms, growing at 10% of the time waited, capped at 5 s. Learned
    /// duration: first poll at it, then every 3%. Fresh-task 404s for 5 s.
    fn default() -> PollPolicy {
        PollPolicy {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
            ratio: 0.1,
            fresh_404: Duration::from_secs(5),
            first: 1.0,
            step: 0.03,
        }
    }
}

impl PollPolicy {
    /// The wait before the next poll, `waited` after the task was created.
    pub fn next(&self, waited: Duration) -> Duration {
        let by_ratio = waited.mul_f64(self.ratio.clamp(0.0, 10.0));
        by_ratio.clamp(self.min, self.max.max(self.min))
    }

    /// The wait before the next poll when such tasks took `expect` lately.
    pub fn next_expecting(&self, waited: Duration, expect: Option<Expect>) -> Duration {
        // Close polls near the end: a tenth of `min` is their floor (`min` itself is sized
        // for the unknown start of a task; 10 ms keeps a short task's overshoot within a few
        // percent, issue 21).
        self.next_with_floor(waited, expect, self.min / 10)
    }

    /// [`PollPolicy::next_expecting`] for a round whose one read serves every claim of a
    /// failover (the shared polls of `failover::run`): close rounds may come as often as
    /// every 2 ms (a fiftieth of `min`), since a round costs one request however many claims
    /// it serves; the step is still 3% of the expected time when that is longer.
    ///
    /// With nothing expected (the first failover after a start), the rounds grow by half
    /// the ratio (5% of the time waited): the first DELETE's task is seen within 5% of its
    /// end, not 10%, and that delay is part of the first failover's outage. It costs more
    /// rounds only for tasks longer than `min / (ratio / 2)` (2 s), once.
    pub fn next_shared(&self, waited: Duration, expect: Option<Expect>) -> Duration {
        if expect.is_none_or(|e| e.took.is_zero()) {
            let by_ratio = waited.mul_f64((self.ratio / 2.0).clamp(0.0, 10.0));
            return by_ratio.clamp(self.min, self.max.max(self.min));
        }
        self.next_with_floor(waited, expect, self.min / 50)
    }

    fn next_with_floor(
        &self,
        waited: Duration,
        expect: Option<Expect>,
        floor: Duration,
    ) -> Duration {
        let Some(Expect { took: e, spread }) = expect.filter(|e| !e.took.is_zero()) else {
            return self.next(waited);
        };
        // A coarse expectation is polled from the start of its bracket, so the first round
        // is never late by up to half the bracket (one round more, once: its answer is a
        // close bracket, which replaces it, [`learn_from`]).
        let first = e.mul_f64(self.first.clamp(0.0, 1.0)).saturating_sub(spread);
        if waited < first {
            return first - waited;
        }
        let step = self.step.clamp(0.0, 1.0);
        // Past the expectation the task is unusual (or was learned too short): back off by
        // the ratio rule, from the close floor, not from `min` (which is sized for a task's
        // unknown start: 100 ms past a 200 ms task is half the task again).
        if waited > e.mul_f64(1.0 + 5.0 * step) + spread {
            let by_ratio = waited.mul_f64(self.ratio.clamp(0.0, 10.0));
            return by_ratio.clamp(floor, self.max.max(floor));
        }
        e.mul_f64(step).clamp(floor, self.max.max(floor))
    }
}

/// What one task says about the duration of its kind: between the last poll that saw it
/// pending and the one that saw it done, the middle; when the first poll already saw it
/// done, 95% of that (the task may be shorter: probe earlier next time). Learning the raw
/// "seen done" time would only ever grow, by the polling overshoot, claim after claim.
/// A middle between two close polls (at most a tenth of the duration apart) is *precise*:
/// it replaces what was learned ([`learn_from`]); the coarse brackets of the first tasks,
/// polled while nothing was known, are off by up to half their width: they nudge the
/// learned time and keep that half width as its spread.
pub fn sample(last_pending: Option<Duration>, done: Duration) -> Sample {
    match last_pending {
        // The whole half bracket, even when failed reads widened it (a 5xx storm while
        // polling): the next task's close rounds must reach the bracket's top, where the
        // coarse first tasks put the end more often than not (their middle lies low: the
        // last round that saw them pending may have been sent a little earlier).
        Some(p) if p <= done => Sample {
            took: p + (done - p) / 2,
            precise: (done - p) <= done / 10,
            spread: (done - p) / 2,
        },
        _ => Sample {
            took: done.mul_f64(0.95),
            precise: false,
            spread: Duration::ZERO,
        },
    }
}

/// One task's evidence about its kind's duration ([`sample`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub took: Duration,
    /// Bracketed by two close polls.
    pub precise: bool,
    /// Half the bracket: the task ended within this of `took`.
    pub spread: Duration,
}

/// What carpd expects of a kind of task: about `took`, within `spread` either side. The
/// spread is zero once two close polls have bracketed one (or for an expectation taken
/// from a task just seen, [`Expect::exactly`]); after the first, coarsely polled tasks it
/// is half their bracket, and polls start from its low end ([`PollPolicy::next_expecting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub took: Duration,
    pub spread: Duration,
}

impl Expect {
    pub fn exactly(took: Duration) -> Expect {
        Expect {
            took,
            spread: Duration::ZERO,
        }
    }

    /// The latest the task is expected to end.
    pub fn latest(&self) -> Duration {
        self.took + self.spread
    }
}

impl From<Duration> for Expect {
    fn from(took: Duration) -> Expect {
        Expect::exactly(took)
    }
}

/// The expectation after `s`: a precise sample is taken as is; others are smoothed
/// ([`smooth`]) and keep the narrower of the two spreads.
pub fn learn_from(old: Option<Expect>, s: Sample) -> Expect {
    if s.precise {
        return Expect::exactly(s.took);
    }
    Expect {
        took: smooth(old.map(|o| o.took), s.took),
        spread: old.map_or(s.spread, |o| o.spread.min(s.spread)),
    }
}

/// The learned duration after one more task's [`sample`]: down at once, up by a quarter of
/// the difference. A task faster than learned moves the first poll earlier right away; one
/// slow outlier cannot push the next claim's first poll far past a task of the usual length
/// (a first poll too late is waiting time added to a failover; one too early costs a poll).
pub fn smooth(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        Some(o) if sample > o => o + (sample - o) / 4,
        _ => sample,
    }
}

/// Token bucket settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Default for RateLimit {
    /// 20 at once, 40 per minute sustained: at most 60 in any minute.
    fn default() -> RateLimit {
        RateLimit::per_minute(DEFAULT_PER_MINUTE)
    }
}

/// OVH's guidance (python-ovh issue 81): under about 60 requests a minute per consumer key.
pub const DEFAULT_PER_MINUTE: u32 = 60;
/// Default of `ovh.failover_requests_per_minute`.
pub const DEFAULT_FAILOVER_PER_MINUTE: u32 = 120;

impl RateLimit {
    /// A failover's budget of `n` a minute: all of it at once, refilled over a minute.
    pub fn failover(n: u32) -> RateLimit {
        RateLimit {
            burst: n.max(1),
            per_minute: n.max(1),
        }
    }

    /// A budget of at most `n` requests in any minute: a third as burst, the rest as refill.
    pub fn per_minute(n: u32) -> RateLimit {
        let burst = (n / 3).max(1);
        RateLimit {
            burst,
            per_minute: n.saturating_sub(burst),
        }
    }
}

/// A token bucket driven by the caller's clock.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    tokens: f64,
    at: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            tokens: f64::from(limit.burst.max(1)),
            at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            let rate = f64::from(self.limit.per_minute) / 60.0;
            self.tokens = (self.tokens + dt * rate).min(f64::from(self.limit.burst.max(1)));
        }
        self.at = Some(now);
    }

    /// Tokens available at `now` (fractional), without taking any.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes a token at `now` whatever the bucket holds (a claim's request): the bucket may
    /// go into debt, down to minus one burst, which later requests pay back.
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        let floor = -f64::from(self.limit.burst.max(1));
        self.tokens = (self.tokens - 1.0).max(floor);
    }

    /// Takes a token at `now`, or says how long to wait for one (and takes nothing).
    pub fn acquire(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let rate = f64::from(self.limit.per_minute) / 60.0;
        if rate <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }
}

/// A 429 without `Retry-After` pauses for this long.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// After a pause, requests stay spaced for this long.
pub const CALM: Duration = Duration::from_secs(10);

/// What a 429 does to the whole client: a pause until `Retry-After`, then spaced requests.
#[derive(Clone, Debug)]
pub struct Cooldown {
    spacing: Duration,
    /// The next free slot while calming down.
    next: Option<Instant>,
    /// Spacing ends here.
    calm_until: Option<Instant>,
    /// Counts 429s: a request that waited for its slot while a newer 429 arrived takes a
    /// new slot (it must not go out inside the newer pause).
    epoch: u64,
}

impl Cooldown {
    /// `spacing`: the gap between requests after a pause (60 s / the failover budget).
    pub fn new(spacing: Duration) -> Cooldown {
        Cooldown {
            spacing,
            next: None,
            calm_until: None,
            epoch: 0,
        }
    }

    /// OVH answered 429 at `now`, asking for `retry_after` (absent: [`DEFAULT_PAUSE`]).
    pub fn rate_limited(&mut self, now: Instant, retry_after: Option<Duration>) {
        let resume = now + retry_after.unwrap_or(DEFAULT_PAUSE);
        self.next = Some(self.next.map_or(resume, |n| n.max(resume)));
        self.calm_until = Some(resume + CALM);
        self.epoch += 1;
    }

    /// How many 429s were seen: compare before and after waiting for a slot.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When a request asking at `now` may go (its slot is taken): `None` at once. Before the
    /// pause ends and while calming down, slots are `spacing` apart.
    pub fn slot(&mut self, now: Instant) -> Option<Instant> {
        let calm = self.calm_until?;
        let next = self.next.unwrap_or(now);
        if now >= calm && next <= now {
            self.calm_until = None;
            self.next = None;
            return None;
        }
        let at = next.max(now);
        self.next = Some(at + self.spacing);
        (at > now).then_some(at)
    }

    /// Whether requests are paused or spaced now.
    pub fn active(&self, now: Instant) -> bool {
        self.calm_until.is_some_and(|c| now < c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_pauses_everything_then_spaces_requests() {
        let t0 = Instant::now();
        let gap = Duration::from_millis(500);
        let mut c = Cooldown::new(gap);
        assert_eq!(c.slot(t0), None);
        c.rate_limited(t0, Some(Duration::from_secs(2)));
        assert!(c.active(t0));
        // Twenty requests waiting for the pause: none before Retry-After, then one per gap.
        let slots: Vec<Instant> = (0..20).map(|_| c.slot(t0).unwrap()).collect();
        assert_eq!(slots[0], t0 + Duration::from_secs(2));
        for w in slots.windows(2) {
            assert_eq!(w[1] - w[0], gap);
        }
        // A second 429 during the pause only extends it, and tells those who hold a slot
        // (the epoch changed) to take a new one.
        let before = c.epoch();
        c.rate_limited(t0 + Duration::from_secs(1), Some(Duration::from_secs(1)));
        assert_ne!(c.epoch(), before);
        assert!(c.slot(t0 + Duration::from_secs(1)).unwrap() >= slots[19] + gap);
        // Without Retry-After: the default pause.
        let mut c = Cooldown::new(gap);
        c.rate_limited(t0, None);
        assert_eq!(c.slot(t0), Some(t0 + DEFAULT_PAUSE));
        // Calm again: requests go at once.
        let later = t0 + DEFAULT_PAUSE + CALM + Duration::from_secs(1);
        assert_eq!(c.slot(later), None);
        assert!(!c.active(later));
    }

    #[test]
    fn backoff_grows_with_jitter_and_respects_the_deadline() {
        let p = RetryPolicy::default();
        let long = Duration::from_secs(60);
        assert_eq!(p.delay(0, 0.5, None, long), None);
        assert_eq!(
            p.delay(1, 0.0, None, long),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.delay(1, 1.0, None, long),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            p.delay(2, 0.0, None, long),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            p.delay(3, 1.0, None, long),
            Some(Duration::from_millis(800))
        );
        // Capped at max.
        let big = RetryPolicy {
            max_attempts: 100,
            ..p
        };
        assert_eq!(
            big.delay(30, 1.0, None, long),
            Some(Duration::from_secs(10))
        );
        // Out of attempts, or past the deadline.
        assert_eq!(p.delay(6, 0.5, None, long), None);
        assert_eq!(p.delay(1, 1.0, None, Duration::from_millis(150)), None);
        // Retry-After is a floor.
        assert_eq!(
            p.delay(1, 0.0, Some(Duration::from_secs(2)), long),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn poll_interval_is_a_fraction_of_the_wait() {
        let p = PollPolicy::default();
        assert_eq!(p.next(Duration::ZERO), Duration::from_millis(100));
        assert_eq!(p.next(Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(p.next(Duration::from_secs(600)), Duration::from_secs(5));
        // Simulated: a task of T seconds is seen done within T * (1 + ratio) + min.
        for t_ms in [10u64, 300, 2_000, 45_000, 120_000] {
            let task = Duration::from_millis(t_ms);
            let mut waited = Duration::ZERO;
            let mut polls = 0;
            while waited < task {
                waited += p.next(waited);
                polls += 1;
            }
            let over = waited - task;
            assert!(
                over <= task.mul_f64(p.ratio) + p.min,
                "task {t_ms} ms: overshoot {over:?}"
            );
            assert!(polls < 80, "task {t_ms} ms: {polls} polls");
        }
    }

    #[test]
    fn learned_durations_put_the_first_poll_near_the_end() {
        let p = PollPolicy::default();
        let e = Duration::from_secs(10);
        // First poll at the expected end, then 3% steps up to 115%.
        assert_eq!(
            p.next_expecting(Duration::ZERO, Some(e.into())),
            Duration::from_secs(10)
        );
        assert_eq!(
            p.next_expecting(Duration::from_millis(9_800), Some(e.into())),
            Duration::from_millis(200)
        );
        assert_eq!(
            p.next_expecting(Duration::from_millis(10_000), Some(e.into())),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.next_expecting(Duration::from_millis(10_100), Some(e.into())),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.next_expecting(Duration::from_millis(12_000), Some(e.into())),
            Duration::from_millis(1_200)
        );
        // Far past it: the ratio rule.
        assert_eq!(
            p.next_expecting(Duration::from_secs(30), Some(e.into())),
            p.next(Duration::from_secs(30))
        );
        assert_eq!(p.next_expecting(Duration::ZERO, None), p.min);
        // A task of about the learned length costs at most 2 polls (3 when it runs a little
        // longer than learned) and is seen done within 5%.
        for t_ms in [2_000u64, 5_000, 20_000, 60_000] {
            let task = Duration::from_millis(t_ms);
            for (learned, most) in [(task, 2), (task.mul_f64(1.04), 2), (task.mul_f64(0.99), 3)] {
                let mut waited = Duration::ZERO;
                let mut polls = 0;
                while waited < task {
                    waited += p.next_expecting(waited, Some(learned.into()));
                    polls += 1;
                }
                assert!(
                    polls <= most,
                    "{t_ms} ms learned {learned:?}: {polls} polls"
                );
                assert!(waited <= task.mul_f64(1.05), "{t_ms}: {waited:?}");
            }
        }
        assert_eq!(smooth(None, e), e);
        assert_eq!(
            sample(Some(Duration::from_secs(9)), Duration::from_secs(11)).took,
            e
        );
        assert_eq!(sample(None, e).took, Duration::from_millis(9_500));
        // Two close polls bracket it precisely: taken as is, up or down.
        let close = sample(Some(Duration::from_millis(195)), Duration::from_millis(205));
        assert!(close.precise);
        assert_eq!(
            learn_from(Some(Duration::from_millis(150).into()), close),
            Expect::exactly(Duration::from_millis(200))
        );
        // A coarse bracket (the first tasks' 100 ms polls) only nudges it up.
        let coarse = sample(Some(Duration::from_millis(100)), Duration::from_millis(200));
        assert!(!coarse.precise);
        assert_eq!(
            learn_from(Some(Duration::from_millis(100).into()), coarse).took,
            Duration::from_micros(112_500)
        );
        // Learning converges to a series of equal tasks from above and below, each seen
        // within 5% once learned.
        let task = Duration::from_millis(800);
        for start in [Duration::from_millis(1000), Duration::from_millis(500)] {
            let mut learned = Some(Expect::exactly(start));
            for round in 0..12 {
                let (mut waited, mut pending) = (Duration::ZERO, None);
                loop {
                    waited += p.next_expecting(waited, learned);
                    if waited >= task {
                        break;
                    }
                    pending = Some(waited);
                }
                if round >= 6 {
                    assert!(
                        waited <= task.mul_f64(1.05),
                        "{start:?} {round}: {waited:?}"
                    );
                }
                learned = Some(learn_from(learned, sample(pending, waited)));
            }
        }
        assert_eq!(
            smooth(Some(e), Duration::from_secs(50)),
            Duration::from_secs(20)
        );
        assert_eq!(
            smooth(Some(e), Duration::from_secs(4)),
            Duration::from_secs(4)
        );
    }

    /// The first tasks of a kind are polled coarsely (nothing known: rounds 100 ms apart),
    /// so what they teach may lie half a bracket past the truth. The next task is polled
    /// from the bracket's start and seen done within 5%; its close bracket replaces the
    /// coarse one, and the task after that is polled from the learned time again.
    #[test]
    fn a_coarse_first_bracket_is_polled_from_its_start_once() {
        let p = PollPolicy::default();
        let task = Duration::from_millis(210);
        let run = |learned: Option<Expect>| {
            let (mut waited, mut pending, mut rounds) = (Duration::ZERO, None, 0u32);
            loop {
                waited += p.next_shared(waited, learned);
                rounds += 1;
                if waited >= task {
                    return (waited, pending, rounds);
                }
                pending = Some(waited);
            }
        };
        let (done, pending, _) = run(None);
        let cold = learn_from(None, sample(pending, done));
        // Rounds at 100, 200 (pending), 300 (done): 250 ms, give or take 50.
        assert_eq!(cold.took, Duration::from_millis(250));
        assert_eq!(cold.spread, Duration::from_millis(50));
        // Polled from the middle, the next task would be seen 19% late.
        let (late, _, _) = run(Some(Expect::exactly(cold.took)));
        assert!(late > task.mul_f64(1.15), "{late:?}");
        // From the bracket's start: within 5%, and the answer is precise.
        let (done, pending, rounds) = run(Some(cold));
        assert!(done <= task.mul_f64(1.05), "{done:?}");
        assert!(rounds <= 4, "{rounds} rounds");
        let warm = learn_from(Some(cold), sample(pending, done));
        assert_eq!(warm.spread, Duration::ZERO);
        // Learned precisely: the first round at the learned time, done within two.
        let (done, _, rounds) = run(Some(warm));
        assert!(
            done <= task.mul_f64(1.05) && rounds <= 2,
            "{done:?} {rounds}"
        );
        // A middle that lies low (the bracket's start read early): the close rounds still
        // reach the bracket's top, and see the task end within 5%.
        let low = learn_from(
            None,
            sample(Some(Duration::from_millis(77)), Duration::from_millis(213)),
        );
        assert!(low.took < task.mul_f64(0.7), "{low:?}");
        let (done, _, _) = run(Some(low));
        assert!(done <= task.mul_f64(1.05), "{done:?}");
        // A coarse sample after a precise one keeps the precision.
        let again = learn_from(Some(warm), sample(Some(Duration::from_millis(100)), done));
        assert_eq!(again.spread, Duration::ZERO);
    }

    #[test]
    fn shared_rounds_close_in_tighter_than_one_claims_polls() {
        let p = PollPolicy::default();
        let e = Duration::from_millis(200);
        // The first round at the expected end, like a claim's own first poll.
        assert_eq!(p.next_shared(Duration::ZERO, Some(e.into())), e);
        // Near the end: 3% of the task (6 ms), not the 10 ms floor of one claim's polls.
        assert_eq!(
            p.next_shared(Duration::from_millis(200), Some(e.into())),
            Duration::from_millis(6)
        );
        assert_eq!(
            p.next_expecting(Duration::from_millis(200), Some(e.into())),
            Duration::from_millis(10)
        );
        // Never under 2 ms, however short the task; nothing expected: the same as polls.
        assert_eq!(
            p.next_shared(
                Duration::from_millis(20),
                Some(Duration::from_millis(20).into())
            ),
            Duration::from_millis(2)
        );
        assert_eq!(p.next_shared(Duration::ZERO, None), p.next(Duration::ZERO));
        // Nothing expected: rounds grow by 5% of the time waited (one claim's polls: 10%).
        let waited = Duration::from_secs(4);
        assert_eq!(p.next_shared(waited, None), Duration::from_millis(200));
        assert_eq!(p.next(waited), Duration::from_millis(400));
    }

    #[test]
    fn claims_take_tokens_into_debt_and_checks_pay_it_back() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::per_minute(60));
        assert_eq!(RateLimit::per_minute(60), RateLimit::default());
        for _ in 0..50 {
            rl.take(t0);
        }
        // Debt is floored at minus one burst.
        assert_eq!(rl.available(t0), -20.0);
        // A background request waits until the debt is paid back.
        let w = rl.acquire(t0).unwrap_err();
        assert!(w > Duration::from_secs(30), "{w:?}");
        assert_eq!(RateLimit::per_minute(0).burst, 1);
    }

    #[test]
    fn token_bucket_never_exceeds_sixty_a_minute() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(RateLimit::default());
        // Greedy client: asks every 10 ms for 3 minutes, counts grants per sliding minute.
        let mut grants = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(180) {
            if rl.acquire(now).is_ok() {
                grants.push(now);
            }
            now += Duration::from_millis(10);
        }
        for (i, g) in grants.iter().enumerate() {
            let in_window = grants[i..]
                .iter()
                .take_while(|x| **x < *g + Duration::from_secs(60))
                .count();
            assert!(in_window <= 60, "{in_window} requests in a minute");
        }
        assert!(grants.len() >= 20 + 2 * 40, "{}", grants.len());
        // When empty, the wait is the time to the next token.
        let mut rl = RateLimiter::new(RateLimit {
            burst: 1,
            per_minute: 60,
        });
        assert!(rl.acquire(t0).is_ok());
        let wait = rl.acquire(t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(rl.acquire(t0 + Duration::from_secs(1)).is_ok());
    }
}
