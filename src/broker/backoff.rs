//! How long to wait before the next connection (or channel) attempt:
//! "equal jitter" exponential backoff from [`FIRST_DELAY`], capped at
//! [`MAX_BACKOFF`] (SPEC.md: "reconnected with backoff (capped at 5 s)").
//! The jitter spreads the reconnects of many replicas after a broker restart.
//! Plain arithmetic with the random share passed in, so it is tested
//! without randomness.

use std::time::Duration;

/// The wait after the first failure, before jitter.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The wait after `failures` failures in a row (0: a connection that was
/// up and dropped, retried after about [`FIRST_DELAY`]); `random` in [0, 1).
pub fn delay(failures: u32, random: f64) -> Duration {
    let doubled = FIRST_DELAY.saturating_mul(1u32 << failures.min(16));
    let capped = doubled.min(MAX_BACKOFF);
    capped / 2 + capped.mul_f64(random.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_and_never_exceeds_the_cap() {
        assert_eq!(delay(0, 0.0), Duration::from_millis(50));
        let top = delay(0, 0.999_999);
        assert!(top > Duration::from_micros(99_900) && top < Duration::from_millis(100), "{top:?}");
        assert_eq!(delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(delay(3, 0.0), Duration::from_millis(400));
        for failures in [6, 10, 40, u32::MAX] {
            assert!(delay(failures, 0.999_999) <= MAX_BACKOFF, "{failures}");
            assert!(delay(failures, 0.0) >= MAX_BACKOFF / 2, "{failures}");
        }
    }
}
