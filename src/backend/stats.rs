//! Counters and metric handles of one backend.
//!
//! Metric handles are registered once, when the backend is built, so the
//! request path only bumps atomics (no registry lookup per call). The
//! series the dashboard reads (latency, cache lookups) are mosaic's own
//! atomics in [`BackendSeries`], which outlives a rebuild of the backend
//! by a reload; the other outcome counters go through the `metrics`
//! recorder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use serde::Serialize;

use super::answer::Fetched;
use super::error::FetchError;
use crate::counters::{EventCount, LatencyHistogram};

/// A backend's series that `/metrics` and the dashboard read: one per
/// backend name, handed on by a reload to the backend that replaces it.
#[derive(Debug, Default)]
pub struct BackendSeries {
    /// `mosaic_backend_duration_seconds{backend}`: every attempt.
    pub latency: LatencyHistogram,
    /// `mosaic_cache_hits_total{backend}`.
    pub cache_hits: EventCount,
    /// `mosaic_cache_misses_total{backend}`.
    pub cache_misses: EventCount,
}

/// Counters of one backend.
#[derive(Debug)]
pub struct BackendStats {
    successes: AtomicU64,
    failures: AtomicU64,
    rejections: AtomicU64,
    outcome_success: Counter,
    outcome_client_error: Counter,
    outcome_error: [Counter; FetchError::ALL.len()],
    retries: Counter,
    series: Arc<BackendSeries>,
}

/// `GET /admin/backends` entry.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Backend name.
    pub name: String,
    /// `host:port` of each instance.
    pub instances: Vec<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// When the breaker last changed state (Unix ms).
    pub breaker_since_unix_ms: u64,
    /// Calls in flight.
    pub in_flight: usize,
    /// Attempts answered (2xx or 4xx).
    pub successes: u64,
    /// Attempts that failed upstream.
    pub failures: u64,
    /// Calls refused by breaker, bulkhead or lack of instances.
    pub rejections: u64,
    /// Cached entries.
    pub cache_entries: u64,
    /// Where the instances come from (`static`/`consul`) and the watch state.
    pub discovery: crate::discovery::DiscoveryInfo,
}

impl BackendStats {
    /// Registers the backend's metric series; `series` is its own
    /// counters (a predecessor's, when a reload rebuilt the backend).
    pub fn new(backend: &str, series: Arc<BackendSeries>) -> Self {
        let outcome = |name: &'static str| metrics::counter!("mosaic_backend_requests_total", "backend" => backend.to_string(), "outcome" => name);
        Self {
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
            outcome_success: outcome("success"),
            outcome_client_error: outcome("client_error"),
            outcome_error: FetchError::ALL.map(|e| outcome(e.as_str())),
            retries: metrics::counter!("mosaic_backend_retries_total", "backend" => backend.to_string()),
            series,
        }
    }

    /// Records one attempt.
    pub fn attempt(&self, result: &Result<Fetched, FetchError>, elapsed: Duration) {
        match result {
            Ok(fetched) => self.answered(fetched.status, elapsed),
            Err(error) => self.failed(*error, elapsed),
        }
    }

    /// Records an attempt the service answered without fault (2xx-4xx).
    pub fn answered(&self, status: u16, elapsed: Duration) {
        self.series.latency.record(elapsed);
        self.successes.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.outcome_client_error.increment(1);
        } else {
            self.outcome_success.increment(1);
        }
    }

    /// Records an attempt that failed upstream.
    pub fn failed(&self, error: FetchError, elapsed: Duration) {
        self.series.latency.record(elapsed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.error(error);
    }

    /// Records a call refused before any attempt.
    pub fn rejected(&self, error: FetchError) {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        self.error(error);
    }

    fn error(&self, error: FetchError) {
        if let Some(i) = FetchError::ALL.iter().position(|e| *e == error) {
            self.outcome_error[i].increment(1);
        }
    }

    /// Records a retry.
    pub fn retry(&self) {
        self.retries.increment(1);
    }

    /// Records a fresh cache hit.
    pub fn cache_hit(&self) {
        self.series.cache_hits.bump();
    }

    /// Records a cache miss (or stale entry).
    pub fn cache_miss(&self) {
        self.series.cache_misses.bump();
    }

    /// The series `/metrics` and the dashboard read.
    pub fn series(&self) -> &Arc<BackendSeries> {
        &self.series
    }

    /// Attempts answered.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Attempts failed upstream.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Calls refused.
    pub fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }
}
