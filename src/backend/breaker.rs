//! The circuit breaker of one backend: failsafe's state machine, built from
//! the TOML policy, plus what failsafe 1.3 lacks.
//!
//! - failsafe's exponential and jittered backoffs assert a start of at least
//!   one second; [`BackoffIter`] implements all four kinds without that limit.
//! - failsafe has no state getter: [`Observer`] (its `Instrument`) keeps the
//!   state in an atomic, with the time of the last transition.
//! - failsafe lets every call through when half-open: we cap concurrent
//!   trial calls at `half_open_calls`; the rest fall back as `circuit_open`.
//! - Operators can force the breaker open or closed (`ForcedMode`).
//!
//! Only the caller decides what a failure is (see `FetchError::is_upstream_fault`):
//! 4xx answers are recorded as successes, rejections are not recorded at all.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_ms;

use failsafe::failure_policy::{
    self, ConsecutiveFailures, FailurePolicy, SuccessRateOverTimeWindow,
};
use failsafe::{Instrument, StateMachine};

use crate::config::{Backoff, BreakerConfig, BreakerPolicy};

/// The breaker states, with the numbering of the `mosaic_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed = 0,
    /// Calls are refused until the backoff ends.
    Open = 1,
    /// Trial calls decide whether to close or reopen.
    HalfOpen = 2,
}

impl BreakerState {
    /// Name used by the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// An operator's override of the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForcedMode {
    /// The policy decides.
    Auto = 0,
    /// Every call is refused.
    Open = 1,
    /// Every call is let through.
    Closed = 2,
}

impl ForcedMode {
    /// Name used by the admin API (`{"state": ...}`).
    pub fn as_str(self) -> &'static str {
        match self {
            ForcedMode::Auto => "auto",
            ForcedMode::Open => "open",
            ForcedMode::Closed => "closed",
        }
    }
}

/// failsafe's `Instrument`: tracks the state and feeds metrics.
#[derive(Debug, Clone)]
pub struct Observer {
    shared: Arc<ObserverState>,
}

#[derive(Debug)]
struct ObserverState {
    backend: String,
    state: AtomicU8,
    /// Unix milliseconds of the last transition.
    since_ms: AtomicU64,
    opened: AtomicU64,
    gauge: metrics::Gauge,
}

impl Observer {
    fn new(backend: &str) -> Self {
        Self {
            shared: Arc::new(ObserverState {
                backend: backend.to_string(),
                state: AtomicU8::new(0),
                since_ms: AtomicU64::new(unix_ms()),
                opened: AtomicU64::new(0),
                gauge: metrics::gauge!("mosaic_breaker_state", "backend" => backend.to_string()),
            }),
        }
    }

    fn set(&self, state: BreakerState) {
        let previous = self.shared.state.swap(state as u8, Ordering::AcqRel);
        if previous != state as u8 {
            self.shared.since_ms.store(unix_ms(), Ordering::Relaxed);
            self.shared.gauge.set(state as u8 as f64);
            tracing::info!(backend = %self.shared.backend, state = state.as_str(), "breaker");
        }
    }
}

impl Instrument for Observer {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        self.set(BreakerState::Open);
    }

    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }

    fn on_closed(&self) {
        self.set(BreakerState::Closed);
    }
}

/// The open intervals, as failsafe wants them: an endless, cloneable iterator.
#[derive(Debug, Clone)]
pub struct BackoffIter {
    backoff: Backoff,
    attempt: u32,
}

impl BackoffIter {
    /// Starts the sequence for a configured backoff.
    pub fn new(backoff: Backoff) -> Self {
        Self { backoff, attempt: 0 }
    }
}

impl Iterator for BackoffIter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let exponential = |start: Duration, max: Duration, attempt: u32| {
            let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
            start.checked_mul(factor).unwrap_or(max).min(max)
        };
        let delay = match self.backoff {
            Backoff::Constant { delay } => delay,
            Backoff::Exponential { start, max } => exponential(start, max, self.attempt),
            Backoff::EqualJittered { start, max } => {
                let full = exponential(start, max, self.attempt);
                full / 2 + full.mul_f64(fastrand::f64() / 2.0)
            }
            Backoff::FullJittered { start, max } => {
                exponential(start, max, self.attempt).mul_f64(fastrand::f64())
            }
        };
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

/// Either failsafe policy, so one breaker type serves both.
#[derive(Debug)]
pub enum Policy {
    /// `policy = "consecutive_failures"`.
    Consecutive(ConsecutiveFailures<BackoffIter>),
    /// `policy = "success_rate"`.
    SuccessRate(SuccessRateOverTimeWindow<BackoffIter>),
}

impl FailurePolicy for Policy {
    fn record_success(&mut self) {
        match self {
            Policy::Consecutive(p) => p.record_success(),
            Policy::SuccessRate(p) => p.record_success(),
        }
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        match self {
            Policy::Consecutive(p) => p.mark_dead_on_failure(),
            Policy::SuccessRate(p) => p.mark_dead_on_failure(),
        }
    }

    fn revived(&mut self) {
        match self {
            Policy::Consecutive(p) => p.revived(),
            Policy::SuccessRate(p) => p.revived(),
        }
    }
}

/// One backend's breaker, shared by every worker.
pub struct Breaker {
    machine: StateMachine<Policy, Observer>,
    observer: Observer,
    half_open_calls: u32,
    trials_in_flight: AtomicU32,
    forced: AtomicU8,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("state", &self.state()).finish()
    }
}

/// Permission for one attempt. Report its outcome with [`Breaker::record`];
/// dropping it unreported (a cancelled call) records nothing.
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a Breaker,
    trial: bool,
}

impl Breaker {
    /// Builds the breaker for `backend` from its policy.
    pub fn new(backend: &str, config: &BreakerConfig) -> Self {
        let backoff = BackoffIter::new(config.backoff);
        let policy = match config.policy {
            BreakerPolicy::ConsecutiveFailures { threshold } => {
                Policy::Consecutive(failure_policy::consecutive_failures(threshold, backoff))
            }
            BreakerPolicy::SuccessRate { required_success_rate, minimum_calls, window } => {
                Policy::SuccessRate(failure_policy::success_rate_over_time_window(
                    required_success_rate.clamp(0.0, 1.0),
                    minimum_calls,
                    window,
                    backoff,
                ))
            }
        };
        let observer = Observer::new(backend);
        Self {
            machine: StateMachine::new(policy, observer.clone()),
            observer,
            half_open_calls: config.half_open_calls.max(1),
            trials_in_flight: AtomicU32::new(0),
            forced: AtomicU8::new(ForcedMode::Auto as u8),
        }
    }

    /// Asks to make one attempt; `None` means fall back with `circuit_open`.
    pub fn try_acquire(&self) -> Option<BreakerPermit<'_>> {
        match self.forced() {
            ForcedMode::Open => return None,
            ForcedMode::Closed => return Some(BreakerPermit { breaker: self, trial: false }),
            ForcedMode::Auto => {}
        }
        if !self.machine.is_call_permitted() {
            return None;
        }
        if self.state() != BreakerState::HalfOpen {
            return Some(BreakerPermit { breaker: self, trial: false });
        }
        let taken = self.trials_in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < self.half_open_calls).then_some(n + 1)
        });
        taken.ok().map(|_| BreakerPermit { breaker: self, trial: true })
    }

    /// Records the outcome of a permitted attempt.
    pub fn record(&self, permit: BreakerPermit<'_>, upstream_fault: bool) {
        if upstream_fault {
            self.machine.on_error();
        } else {
            self.machine.on_success();
        }
        drop(permit);
    }

    /// The state the policy is in (forced modes not applied).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.observer.shared.state.load(Ordering::Acquire))
    }

    /// The state as callers experience it, forced modes applied.
    pub fn effective_state(&self) -> BreakerState {
        match self.forced() {
            ForcedMode::Open => BreakerState::Open,
            ForcedMode::Closed => BreakerState::Closed,
            ForcedMode::Auto => self.state(),
        }
    }

    /// Unix milliseconds of the last state change.
    pub fn since_unix_ms(&self) -> u64 {
        self.observer.shared.since_ms.load(Ordering::Relaxed)
    }

    /// How many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.observer.shared.opened.load(Ordering::Relaxed)
    }

    /// The operator override in force.
    pub fn forced(&self) -> ForcedMode {
        match self.forced.load(Ordering::Acquire) {
            1 => ForcedMode::Open,
            2 => ForcedMode::Closed,
            _ => ForcedMode::Auto,
        }
    }

    /// Sets the operator override. Back to `Auto` starts closed and fresh.
    pub fn force(&self, mode: ForcedMode) {
        self.forced.store(mode as u8, Ordering::Release);
        if mode == ForcedMode::Auto {
            self.machine.reset();
        }
    }
}

impl BreakerPermit<'_> {
    /// Ends the borrow of the breaker for an outcome that is known only
    /// later (a streamed body): the detached permit must go back to this
    /// same breaker through [`Breaker::record_detached`] or
    /// [`Breaker::release_detached`] (`backend::HeldPermit` does that).
    pub(crate) fn detach(self) -> DetachedPermit {
        let detached = DetachedPermit { trial: self.trial };
        // Its `Drop` would release a trial slot that the detached permit
        // still holds.
        std::mem::forget(self);
        detached
    }
}

/// A [`BreakerPermit`] no longer tied to its breaker's lifetime.
#[derive(Debug)]
pub(crate) struct DetachedPermit {
    trial: bool,
}

impl Breaker {
    /// [`Breaker::record`] for a detached permit.
    pub(crate) fn record_detached(&self, permit: DetachedPermit, upstream_fault: bool) {
        self.record(BreakerPermit { breaker: self, trial: permit.trial }, upstream_fault);
    }

    /// Gives a detached permit back unrecorded (the call was abandoned).
    pub(crate) fn release_detached(&self, permit: DetachedPermit) {
        drop(BreakerPermit { breaker: self, trial: permit.trial });
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.trial {
            self.breaker.trials_in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests;
