//! `breaker = { ... }`: the circuit breaker policy and its backoff,
//! validated into [`BreakerConfig`].
//!
//! Keys that belong to the other policy (`threshold` with `success_rate`)
//! or another backoff kind (`delay` with `exponential`) are errors rather
//! than silently ignored: they show the author expects a behaviour they
//! would not get.

use std::time::Duration;

use super::fields::{at_least_one, duration, positive_duration, required};
use super::model::*;
use super::raw::{RawBackoff, RawBreaker};
use super::sink::{key_path, Sink};
use super::units::{format_duration, show};

/// Validates a breaker table; absent means every default.
pub(crate) fn breaker(
    path: &str,
    raw: Option<&RawBreaker>,
    sink: &mut Sink,
) -> Option<BreakerConfig> {
    let fallback = RawBreaker::default();
    let raw = raw.unwrap_or(&fallback);
    let other_policy = |sink: &mut Sink, key: &str, present: bool, policy: &str| {
        if present {
            sink.push(
                key_path(path, key),
                format!("only used with policy = {policy:?}: remove it, or set that policy"),
            );
        }
    };
    let policy = match raw.policy.as_deref().unwrap_or("consecutive_failures") {
        "consecutive_failures" => {
            other_policy(
                sink,
                "required_success_rate",
                raw.required_success_rate.is_some(),
                "success_rate",
            );
            other_policy(sink, "minimum_calls", raw.minimum_calls.is_some(), "success_rate");
            other_policy(sink, "window", raw.window.is_some(), "success_rate");
            at_least_one(
                sink,
                &key_path(path, "threshold"),
                raw.threshold,
                DEFAULT_BREAKER_THRESHOLD,
            )
            .map(|threshold| BreakerPolicy::ConsecutiveFailures { threshold })
        }
        "success_rate" => {
            other_policy(sink, "threshold", raw.threshold.is_some(), "consecutive_failures");
            success_rate(path, raw, sink)
        }
        other => {
            sink.push(
                key_path(path, "policy"),
                format!(
                    "unknown policy {other:?} (use \"consecutive_failures\" or \"success_rate\")"
                ),
            );
            None
        }
    };
    let backoff = match &raw.backoff {
        Some(backoff) => self::backoff(&key_path(path, "backoff"), backoff, sink),
        None => Some(DEFAULT_BACKOFF),
    };
    let half_open_calls = at_least_one(
        sink,
        &key_path(path, "half_open_calls"),
        raw.half_open_calls,
        DEFAULT_HALF_OPEN_CALLS,
    );
    Some(BreakerConfig { policy: policy?, backoff: backoff?, half_open_calls: half_open_calls? })
}

fn success_rate(path: &str, raw: &RawBreaker, sink: &mut Sink) -> Option<BreakerPolicy> {
    let rate_path = key_path(path, "required_success_rate");
    let rate = required(sink, &rate_path, raw.required_success_rate, "required_success_rate = 0.8");
    let rate = rate.filter(|r| {
        let ok = *r > 0.0 && *r <= 1.0;
        if !ok {
            sink.push(&rate_path, format!("invalid rate {r}: must be more than 0 and at most 1"));
        }
        ok
    });
    let calls_path = key_path(path, "minimum_calls");
    let calls = required(sink, &calls_path, raw.minimum_calls, "minimum_calls = 20")
        .and_then(|c| at_least_one(sink, &calls_path, Some(c), 1));
    let window_path = key_path(path, "window");
    let window_value = required(sink, &window_path, raw.window.as_ref(), "window = \"10s\"");
    let window = window_value.and_then(|w| duration(sink, &window_path, w));
    let window = window.filter(|w| {
        let ok = *w >= Duration::from_secs(1) && w.subsec_nanos() == 0;
        if !ok {
            sink.push(
                &window_path,
                format!(
                    "invalid window {}: must be whole seconds, at least \"1s\" (the breaker counts in whole seconds and would truncate it)",
                    window_value.map_or_else(|| format_duration(*w), show)
                ),
            );
        }
        ok
    });
    Some(BreakerPolicy::SuccessRate {
        required_success_rate: rate?,
        minimum_calls: calls?,
        window: window?,
    })
}

fn backoff(path: &str, raw: &RawBackoff, sink: &mut Sink) -> Option<Backoff> {
    let kind_path = key_path(path, "kind");
    let kind = required(sink, &kind_path, raw.kind.as_deref(), "kind = \"exponential\"")?;
    let not_for = |sink: &mut Sink, key: &str, present: bool| {
        if present {
            sink.push(key_path(path, key), format!("not used by kind = {kind:?}: remove it"));
        }
    };
    let positive = |sink: &mut Sink, key: &str, value: Option<&toml::Value>, example: &str| {
        let at = key_path(path, key);
        required(sink, &at, value, example).and_then(|v| positive_duration(sink, &at, v))
    };
    match kind {
        "constant" => {
            not_for(sink, "start", raw.start.is_some());
            not_for(sink, "max", raw.max.is_some());
            let delay = positive(sink, "delay", raw.delay.as_ref(), "delay = \"2s\"");
            Some(Backoff::Constant { delay: delay? })
        }
        "exponential" | "equal_jittered" | "full_jittered" => {
            not_for(sink, "delay", raw.delay.is_some());
            let start = positive(sink, "start", raw.start.as_ref(), "start = \"1s\"");
            let max = positive(sink, "max", raw.max.as_ref(), "max = \"30s\"");
            let (start, max) = (start?, max?);
            if max < start {
                sink.push(key_path(path, "max"), "must be at least start");
                return None;
            }
            Some(match kind {
                "exponential" => Backoff::Exponential { start, max },
                "equal_jittered" => Backoff::EqualJittered { start, max },
                _ => Backoff::FullJittered { start, max },
            })
        }
        other => {
            sink.push(
                kind_path,
                format!("unknown backoff kind {other:?} (use \"constant\", \"exponential\", \"equal_jittered\" or \"full_jittered\")"),
            );
            None
        }
    }
}
