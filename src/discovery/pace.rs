//! How often a watch may call its source: a token bucket for the happy
//! path and a jittered exponential backoff after failures.
//!
//! HashiCorp's blocking-query guidance: never sleep blindly between calls,
//! rate-limit instead (a token bucket with a burst of 2), and when the agent
//! fails degrade into polling at a reasonable rate (about every 15 s). So:
//!
//! - every call takes a token; the bucket holds [`BURST`] and refills one per
//!   [`REFILL_EVERY`]. A blocking query normally holds for `wait`, so the
//!   bucket only bites when answers come back at once (many changes in a
//!   row, or a server that ignores `wait`): two calls go out at once, then at
//!   most one per second. Changes are still followed within a second.
//! - after a failure the next call waits an "equal jitter" backoff: half of
//!   `FIRST_RETRY * 2^(failures-1)` plus a random share of the other half,
//!   capped at [`DEGRADED_INTERVAL`]. A dead agent therefore sees calls at
//!   about 0, 0.5-1, 1.5-3, 3.5-7 s (at most 4 in any first 5 s), then one
//!   every 7.5-15 s.
//!
//! Plain code over `tokio::time::Instant` values passed in, with the jitter
//! passed in too, so it is tested without sleeping and without randomness.

use std::time::Duration;

use tokio::time::Instant;

/// Calls that may go out back to back.
pub const BURST: f64 = 2.0;
/// One more call is allowed per this much time (the healthy-path rate cap).
pub const REFILL_EVERY: Duration = Duration::from_secs(1);
/// Backoff after the first failure (before jitter halves part of it).
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Backoff cap: how often a degraded watch polls the agent.
pub const DEGRADED_INTERVAL: Duration = Duration::from_secs(15);

/// The pacing knobs; [`Pacing::default`] is the constants above.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Bucket size.
    pub burst: f64,
    /// Refill period of one token.
    pub refill_every: Duration,
    /// First backoff.
    pub first_retry: Duration,
    /// Backoff cap.
    pub degraded_interval: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Self {
            burst: BURST,
            refill_every: REFILL_EVERY,
            first_retry: FIRST_RETRY,
            degraded_interval: DEGRADED_INTERVAL,
        }
    }
}

/// The pacing state of one watch.
#[derive(Debug, Clone)]
pub struct Pacer {
    pacing: Pacing,
    tokens: f64,
    refilled_at: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Pacer {
    /// A pacer with a full bucket.
    pub fn new(pacing: Pacing) -> Self {
        Self { tokens: pacing.burst, pacing, refilled_at: None, failures: 0, retry_at: None }
    }

    /// When the next call may go out (not before `now`); takes its token.
    pub fn next_call(&mut self, now: Instant) -> Instant {
        let mut at = self.retry_at.map_or(now, |retry| retry.max(now));
        self.refill(at);
        if self.tokens < 1.0 {
            at += self.pacing.refill_every.mul_f64(1.0 - self.tokens);
            self.refill(at);
        }
        self.tokens = (self.tokens - 1.0).max(0.0);
        at
    }

    /// The call that just ended succeeded: no backoff.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }

    /// The call that ended at `now` failed; `jitter` in `0..=1`.
    pub fn failed(&mut self, now: Instant, jitter: f64) {
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff(&self.pacing, self.failures, jitter));
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn refill(&mut self, now: Instant) {
        if let Some(last) = self.refilled_at {
            let earned = now.saturating_duration_since(last).as_secs_f64()
                / self.pacing.refill_every.as_secs_f64().max(f64::EPSILON);
            self.tokens = (self.tokens + earned).min(self.pacing.burst);
        }
        self.refilled_at = Some(now);
    }
}

/// The equal-jitter backoff after `failures` failures in a row.
pub fn backoff(pacing: &Pacing, failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = pacing.first_retry.saturating_mul(1 << doublings).min(pacing.degraded_interval);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Two calls at once, then one per refill period.
    #[test]
    fn bucket_allows_a_burst_of_two_then_the_refill_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Pacing::default());
        assert_eq!(pacer.next_call(start), start);
        assert_eq!(pacer.next_call(start), start);
        assert_eq!(pacer.next_call(start), start + REFILL_EVERY);
        assert_eq!(pacer.next_call(start + REFILL_EVERY), start + 2 * REFILL_EVERY);
        // A long blocking call refills the bucket.
        let later = start + Duration::from_secs(60);
        assert_eq!(pacer.next_call(later), later);
        assert_eq!(pacer.next_call(later), later);
    }

    /// The backoff doubles from the first retry and stops at the degraded interval.
    #[test]
    fn backoff_doubles_with_equal_jitter_up_to_the_cap() {
        let p = Pacing::default();
        assert_eq!(backoff(&p, 1, 0.0), secs(0.5));
        assert_eq!(backoff(&p, 1, 1.0), secs(1.0));
        assert_eq!(backoff(&p, 2, 0.0), secs(1.0));
        assert_eq!(backoff(&p, 3, 1.0), secs(4.0));
        assert_eq!(backoff(&p, 10, 0.0), DEGRADED_INTERVAL / 2);
        assert_eq!(backoff(&p, u32::MAX, 1.0), DEGRADED_INTERVAL);
    }

    /// A dead agent (every call fails at once) gets at most four calls in its
    /// first five seconds even with the shortest jitter, then one per
    /// 7.5-15 s; a success clears the backoff.
    #[test]
    fn a_dead_agent_sees_a_handful_of_calls() {
        let start = Instant::now();
        let mut pacer = Pacer::new(Pacing::default());
        let mut now = start;
        let mut calls = Vec::new();
        while now < start + Duration::from_secs(60) {
            now = pacer.next_call(now);
            calls.push(now - start);
            pacer.failed(now, 0.0);
        }
        let first_five = calls.iter().filter(|t| **t < Duration::from_secs(5)).count();
        assert!(first_five <= 4, "{calls:?}");
        let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().skip(4).all(|g| *g >= DEGRADED_INTERVAL / 2), "{gaps:?}");
        pacer.succeeded();
        assert_eq!(pacer.failures(), 0);
        let after = now + Duration::from_secs(30);
        assert_eq!(pacer.next_call(after), after);
    }
}
