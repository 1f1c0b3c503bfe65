//! Each breaker policy opens, backs off and closes as configured.

use super::*;

fn breaker(threshold: u32, delay_ms: u64, half_open_calls: u32) -> Breaker {
    Breaker::new(
        "test",
        &BreakerConfig {
            policy: BreakerPolicy::ConsecutiveFailures { threshold },
            backoff: Backoff::Constant { delay: Duration::from_millis(delay_ms) },
            half_open_calls,
        },
    )
}

#[test]
fn opens_after_threshold_and_rejects() {
    let b = breaker(3, 10_000, 1);
    for _ in 0..2 {
        let p = b.try_acquire().expect("closed");
        b.record(p, true);
        assert_eq!(b.state(), BreakerState::Closed);
    }
    let p = b.try_acquire().expect("closed");
    b.record(p, true);
    assert_eq!(b.state(), BreakerState::Open);
    assert!(b.try_acquire().is_none());
}

#[test]
fn successes_reset_the_count() {
    let b = breaker(2, 10_000, 1);
    for fault in [true, false, true, false, true] {
        let p = b.try_acquire().expect("closed");
        b.record(p, fault);
    }
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn half_open_caps_trial_calls_and_closes_on_success() {
    let b = breaker(1, 20, 1);
    let p = b.try_acquire().expect("closed");
    b.record(p, true);
    assert!(b.try_acquire().is_none());
    std::thread::sleep(Duration::from_millis(30));
    let trial = b.try_acquire().expect("trial after backoff");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_none(), "only one trial call at a time");
    b.record(trial, false);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire().is_some());
}

/// A permit detached for a streamed body keeps its half-open trial slot
/// until it is recorded or given back.
#[test]
fn a_detached_trial_holds_its_slot_until_settled() {
    let b = breaker(1, 20, 1);
    let p = b.try_acquire().expect("closed");
    b.record(p, true);
    std::thread::sleep(Duration::from_millis(30));
    let trial = b.try_acquire().expect("trial").detach();
    assert!(b.try_acquire().is_none(), "the slot is still taken");
    b.release_detached(trial);
    assert_eq!(b.state(), BreakerState::HalfOpen, "given back, nothing recorded");
    let trial = b.try_acquire().expect("the slot is free again").detach();
    b.record_detached(trial, true);
    assert_eq!(b.state(), BreakerState::Open, "a fault recorded late still counts");
}

#[test]
fn failed_trial_reopens() {
    let b = breaker(1, 20, 2);
    let p = b.try_acquire().expect("closed");
    b.record(p, true);
    std::thread::sleep(Duration::from_millis(30));
    let trial = b.try_acquire().expect("trial");
    b.record(trial, true);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.times_opened(), 2);
}

/// The success-rate policy trips once a full window has passed with the
/// rate below the requirement (failsafe needs one whole window first).
#[test]
fn success_rate_policy_opens_below_the_rate() {
    let b = Breaker::new(
        "rate",
        &BreakerConfig {
            policy: BreakerPolicy::SuccessRate {
                required_success_rate: 0.9,
                minimum_calls: 5,
                window: Duration::from_secs(1),
            },
            backoff: Backoff::Constant { delay: Duration::from_secs(10) },
            half_open_calls: 1,
        },
    );
    for _ in 0..10 {
        let p = b.try_acquire().expect("closed");
        b.record(p, true);
    }
    assert_eq!(b.state(), BreakerState::Closed, "not before a full window");
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..10 {
        if let Some(p) = b.try_acquire() {
            b.record(p, true);
        }
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn forced_modes_override_the_policy() {
    let b = breaker(1, 10_000, 1);
    b.force(ForcedMode::Open);
    assert!(b.try_acquire().is_none());
    assert_eq!(b.effective_state(), BreakerState::Open);
    b.force(ForcedMode::Closed);
    let p = b.try_acquire().expect("forced closed");
    b.record(p, true);
    assert!(b.try_acquire().is_some());
    b.force(ForcedMode::Auto);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn backoffs_grow_and_cap_even_below_one_second() {
    let mut exp = BackoffIter::new(Backoff::Exponential {
        start: Duration::from_millis(100),
        max: Duration::from_millis(350),
    });
    let seq: Vec<_> = (0..4).map(|_| exp.next().unwrap_or_default().as_millis()).collect();
    assert_eq!(seq, vec![100, 200, 350, 350]);
    let mut jit = BackoffIter::new(Backoff::EqualJittered {
        start: Duration::from_millis(100),
        max: Duration::from_secs(1),
    });
    let first = jit.next().unwrap_or_default();
    assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
    let mut full = BackoffIter::new(Backoff::FullJittered {
        start: Duration::from_millis(100),
        max: Duration::from_secs(1),
    });
    assert!(full.next().unwrap_or_default() <= Duration::from_millis(100));
}
