//! The gateway's own cumulative counters: latency histograms, responses by
//! status, section sources, cache lookups. They are the single source of
//! the families `/metrics` shows for them (written by
//! [`crate::admin::exposition`]) and of the dashboard's readings
//! ([`crate::admin::snapshot`]).
//!
//! Why not the `metrics` crate for these: its handles can be bumped but
//! not read back, so the dashboard had to render and re-parse the whole
//! exposition text every second (4 ms at 50 backends). Here each event is
//! one or two relaxed `fetch_add`s on plain atomics, and a reader loads
//! them. Nothing is locked, nothing queues: the storage is fixed when the
//! series is made.
//!
//! Series are owned by the runtime (per route label, per section, per
//! backend) behind `Arc`, so a reload hands the same `Arc` to the
//! route, section or backend of the same label in the new runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::page::Source;

/// Bucket bounds (seconds) of every latency histogram: fine below 250 ms,
/// the usual page deadline, so percentiles can resolve it.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// [`LATENCY_BUCKETS`] in nanoseconds, so recording compares integers.
const BOUNDS_NANOS: [u64; LATENCY_BUCKETS.len()] = {
    let mut out = [0u64; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < out.len() {
        // Rounded: 0.001 s is not exact in binary.
        out[i] = (LATENCY_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    out
};

/// A Prometheus-style histogram on [`LATENCY_BUCKETS`]: a count per bucket
/// (not cumulative, so a record touches one bucket) and the sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// One per bound, then the `+Inf` bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds (584 years before it wraps).
    sum_nanos: AtomicU64,
}

/// A histogram as read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramReading {
    /// Cumulative counts: index `i` counts observations `<=
    /// LATENCY_BUCKETS[i]`; the last is `+Inf`, the total count.
    pub cumulative: [u64; LATENCY_BUCKETS.len() + 1],
    /// Sum of observations, seconds.
    pub sum_seconds: f64,
}

impl HistogramReading {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.cumulative[LATENCY_BUCKETS.len()]
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // Most observations are in the first few buckets: a forward scan
        // ends sooner than a binary search would.
        let bucket = BOUNDS_NANOS.iter().position(|b| nanos <= *b).unwrap_or(BOUNDS_NANOS.len());
        if let Some(count) = self.buckets.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The cumulative counts and the sum now. Loads are not one atomic
    /// read, so a concurrent record may be in the buckets and not yet in
    /// the sum; the buckets agree with each other (the total is theirs).
    pub fn read(&self) -> HistogramReading {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut running = 0u64;
        for (out, count) in cumulative.iter_mut().zip(&self.buckets) {
            running = running.saturating_add(count.load(Ordering::Relaxed));
            *out = running;
        }
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramReading { cumulative, sum_seconds }
    }
}

/// Lowest status code counted; actix's `StatusCode` is 100-999.
const FIRST_STATUS: u16 = 100;
/// One slot per status code 100-999.
const STATUS_SLOTS: usize = 900;

/// Responses by status code: one slot per code, so any status is one
/// `fetch_add` with no lookup (7 KB per route label).
#[derive(Debug)]
pub struct StatusCounts {
    by_status: Box<[AtomicU64]>,
}

impl Default for StatusCounts {
    fn default() -> Self {
        Self { by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl StatusCounts {
    /// Counts one response with `status`.
    pub fn record(&self, status: u16) {
        if let Some(slot) = self.by_status.get(usize::from(status.wrapping_sub(FIRST_STATUS))) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each status with a count so far, in status order.
    pub fn nonzero(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        (FIRST_STATUS..).zip(self.by_status.iter()).filter_map(|(status, count)| {
            let count = count.load(Ordering::Relaxed);
            (count > 0).then_some((status, count))
        })
    }

    /// Responses of any status.
    pub fn total(&self) -> u64 {
        self.by_status.iter().map(|c| c.load(Ordering::Relaxed)).fold(0, u64::saturating_add)
    }
}

/// One route label's responses: by status, their duration, and (for a
/// composed route) how many were complete pages.
#[derive(Debug, Default)]
pub struct ResponseSeries {
    /// `mosaic_requests_total{route,status}`.
    pub statuses: StatusCounts,
    /// `mosaic_request_duration_seconds{route}`.
    pub duration: LatencyHistogram,
    /// `mosaic_pages_complete_total{route}`: pages with every section live
    /// or fresh from cache.
    pub complete: AtomicU64,
}

impl ResponseSeries {
    /// Counts one complete page.
    pub fn complete_page(&self) {
        self.complete.fetch_add(1, Ordering::Relaxed);
    }

    /// Complete pages so far.
    pub fn complete_pages(&self) -> u64 {
        self.complete.load(Ordering::Relaxed)
    }
}

/// One section's answers by [`Source`] (`mosaic_section_source_total`).
#[derive(Debug, Default)]
pub struct SourceCounts {
    /// In [`Source::ALL`] order.
    counts: [AtomicU64; Source::ALL.len()],
}

impl SourceCounts {
    /// Counts one answer from `source`.
    pub fn record(&self, source: Source) {
        self.counts[source_index(source)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now, in [`Source::ALL`] order.
    pub fn read(&self) -> [u64; Source::ALL.len()] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}

/// `source`'s place in [`Source::ALL`] (a match, not a search: this runs
/// once per section of every page).
fn source_index(source: Source) -> usize {
    match source {
        Source::Live => 0,
        Source::Cache => 1,
        Source::Stale => 2,
        Source::Default => 3,
        Source::None => 4,
    }
}

/// A cumulative event count.
#[derive(Debug, Default)]
pub struct EventCount(AtomicU64);

impl EventCount {
    /// Counts one event.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Events so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An observation lands in the first bucket whose bound holds it (a
    /// bound is inclusive, as Prometheus' `le`); readings are cumulative
    /// and the sum is in seconds.
    #[test]
    fn histogram_buckets_are_cumulative_with_inclusive_bounds() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(500)); // <= 0.001
        h.record(Duration::from_millis(1)); // exactly 0.001
        h.record(Duration::from_millis(7)); // <= 0.01
        h.record(Duration::from_secs(11)); // +Inf
        let r = h.read();
        assert_eq!(r.cumulative[0], 2);
        assert_eq!(r.cumulative[2], 2, "nothing in (0.0025, 0.005]");
        assert_eq!(r.cumulative[3], 3);
        assert_eq!(r.cumulative[LATENCY_BUCKETS.len() - 1], 3, "10 s bound");
        assert_eq!(r.count(), 4);
        assert!((r.sum_seconds - 11.0085).abs() < 1e-9, "{}", r.sum_seconds);
    }

    /// The integer bounds are the float bounds, exactly as `/metrics`
    /// prints them.
    #[test]
    fn nanosecond_bounds_match_the_seconds() {
        assert_eq!(BOUNDS_NANOS[0], 1_000_000);
        assert_eq!(BOUNDS_NANOS[1], 2_500_000);
        assert_eq!(BOUNDS_NANOS[16], 10_000_000_000);
        for (nanos, seconds) in BOUNDS_NANOS.iter().zip(LATENCY_BUCKETS) {
            assert_eq!(*nanos as f64 / 1e9, seconds);
        }
    }

    /// Every status code is counted apart, rare ones included.
    #[test]
    fn statuses_are_counted_each_on_its_own() {
        let s = StatusCounts::default();
        for status in [200, 200, 404, 599, 999, 100] {
            s.record(status);
        }
        s.record(1000); // not a status: ignored, not a panic
        s.record(42);
        let seen: Vec<_> = s.nonzero().collect();
        assert_eq!(seen, vec![(100, 1), (200, 2), (404, 1), (599, 1), (999, 1)]);
        assert_eq!(s.total(), 6);
    }

    /// Sources are counted in `Source::ALL` order.
    #[test]
    fn sources_in_their_listed_order() {
        let c = SourceCounts::default();
        for (i, source) in Source::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                c.record(source);
            }
        }
        assert_eq!(c.read(), [1, 2, 3, 4, 5]);
    }
}
