use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::config::{LimitBy, LimitPolicy};

fn limit(requests: u32, per: Duration, burst: u32) -> RateLimitConfig {
    RateLimitConfig { requests, per, burst, by: LimitBy::Consumer, policy: LimitPolicy::Local }
}

fn limiter(
    requests: u32,
    per: Duration,
    burst: u32,
) -> (Limiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (Limiter::with_clock(limit(requests, per, burst), clock.clone(), MAX_BUCKETS), clock)
}

fn consumer(name: &str) -> LimitKey {
    LimitKey::Consumer(name.into())
}

#[test]
fn a_fresh_bucket_lets_burst_plus_one_through_at_once_then_the_steady_rate() {
    let (limiter, clock) = limiter(100, Duration::from_secs(1), 20);
    let key = consumer("app");
    for i in 0..21 {
        assert!(matches!(limiter.check(&key), Verdict::Allowed { .. }), "request {i}");
    }
    assert_eq!(
        limiter.check(&key),
        Verdict::Limited { retry_after: Duration::from_millis(10) },
        "the 22nd waits one interval (1s / 100)"
    );
    clock.advance(Duration::from_millis(10));
    assert!(matches!(limiter.check(&key), Verdict::Allowed { remaining: 0, .. }));
    assert!(matches!(limiter.check(&key), Verdict::Limited { .. }));
}

#[test]
fn over_any_window_of_per_at_most_requests_plus_burst_pass() {
    let (limiter, clock) = limiter(100, Duration::from_secs(1), 20);
    let key = consumer("app");
    let mut passed = 0;
    // One request a millisecond for a second: ten times the rate.
    for _ in 0..1000 {
        if matches!(limiter.check(&key), Verdict::Allowed { .. }) {
            passed += 1;
        }
        clock.advance(Duration::from_millis(1));
    }
    assert_eq!(passed, 120, "burst + 1 at once, then one every 10 ms for 990 ms");
    // The next second, with the bucket drained: the steady rate only.
    let mut passed = 0;
    for _ in 0..1000 {
        if matches!(limiter.check(&key), Verdict::Allowed { .. }) {
            passed += 1;
        }
        clock.advance(Duration::from_millis(1));
    }
    assert_eq!(passed, 100);
}

#[test]
fn remaining_and_reset_count_down_and_refill() {
    let (limiter, clock) = limiter(10, Duration::from_secs(1), 4);
    let key = consumer("app");
    assert_eq!(
        limiter.check(&key),
        Verdict::Allowed { remaining: 4, reset: Duration::from_millis(100) }
    );
    assert_eq!(
        limiter.check(&key),
        Verdict::Allowed { remaining: 3, reset: Duration::from_millis(200) }
    );
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        limiter.check(&key),
        Verdict::Allowed { remaining: 4, reset: Duration::from_millis(100) },
        "an idle bucket is whole again"
    );
}

#[test]
fn keys_have_their_own_buckets() {
    let (limiter, _clock) = limiter(1, Duration::from_secs(60), 0);
    assert!(matches!(limiter.check(&consumer("a")), Verdict::Allowed { .. }));
    assert!(matches!(limiter.check(&consumer("a")), Verdict::Limited { .. }));
    assert!(matches!(limiter.check(&consumer("b")), Verdict::Allowed { .. }));
    let ip = |s: &str| LimitKey::ip(s.parse().unwrap());
    assert!(matches!(limiter.check(&ip("10.0.0.1")), Verdict::Allowed { .. }));
    assert!(matches!(limiter.check(&ip("10.0.0.2")), Verdict::Allowed { .. }));
    assert!(matches!(limiter.check(&ip("::ffff:10.0.0.2")), Verdict::Limited { .. }), "mapped");
    assert!(matches!(limiter.check(&ip("2001:db8:1:2::1")), Verdict::Allowed { .. }));
    assert!(
        matches!(limiter.check(&ip("2001:db8:1:2:ffff::9")), Verdict::Limited { .. }),
        "one IPv6 /64 is one client"
    );
    assert!(matches!(limiter.check(&ip("2001:db8:1:3::1")), Verdict::Allowed { .. }));
}

#[test]
fn a_flood_of_new_keys_stays_within_capacity_and_the_busy_key_stays_limited() {
    let clock = FakeRelativeClock::default();
    let limiter = Limiter::with_clock(limit(1, Duration::from_secs(60), 9), clock.clone(), 256);
    let busy = consumer("busy");
    for _ in 0..10 {
        assert!(matches!(limiter.check(&busy), Verdict::Allowed { .. }));
    }
    assert!(matches!(limiter.check(&busy), Verdict::Limited { .. }));
    for i in 0..100_000u32 {
        limiter.check(&LimitKey::ip(std::net::IpAddr::V4(i.into())));
        assert!(limiter.buckets() <= 256 + 16, "{} buckets", limiter.buckets());
    }
    assert!(
        matches!(limiter.check(&busy), Verdict::Limited { .. }),
        "the drained bucket was kept: the flood's one-request buckets went first"
    );
    // Buckets past their arrival time are dropped before any other.
    clock.advance(Duration::from_secs(3600));
    for i in 0..300u32 {
        limiter.check(&LimitKey::ip(std::net::IpAddr::V4((i + 1_000_000).into())));
    }
    assert!(limiter.buckets() <= 256 + 16);
}
