//! The dashboard's figures: readings of cumulative counters taken once a
//! second, a minute of them kept, and the snapshot computed from them by
//! differencing (rates, error rate, percentiles over the last 10 s).
//!
//! Plain code with no actor or server in it, so the bench can time one
//! snapshot for many backends. The counters are those `/metrics` shows,
//! loaded directly: each backend's own atomics (answered, failed,
//! refused) and mosaic's [`crate::counters`] (latency, cache lookups,
//! responses, sources). A reading is taken off the request path; nothing
//! is counted twice, nothing is rendered or parsed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::BackendSeries;
use crate::counters::{ResponseSeries, SourceCounts, LATENCY_BUCKETS};
use crate::page::Source;

/// Cumulative latency counts of one backend: one per [`LATENCY_BUCKETS`]
/// bound, then `+Inf`.
type Buckets = [u64; LATENCY_BUCKETS.len() + 1];

/// How far back rates, error rates and percentiles look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Readings kept: a minute of per-second points for the charts, plus one
/// to difference the first against.
pub const KEPT_READINGS: usize = 61;

/// What a backend shows right now (read at once, not differenced), and
/// the series its cumulative counters are read from.
#[derive(Debug, Clone)]
pub struct BackendNow<'a> {
    /// Backend name.
    pub name: String,
    /// `closed`, `open` or `half_open`, as callers see it (forcing included).
    pub breaker: &'static str,
    /// `auto`, `open` or `closed`: whether an operator forced it.
    pub forced: &'static str,
    /// `host:port` of each instance.
    pub instances: Vec<String>,
    /// Calls in flight.
    pub in_flight: usize,
    /// Whether the backend has a response cache.
    pub cached: bool,
    /// Attempts answered (2xx-4xx), cumulative.
    pub successes: u64,
    /// Attempts failed upstream, cumulative.
    pub failures: u64,
    /// Calls refused (breaker, bulkhead, no instance), cumulative.
    pub rejections: u64,
    /// Its latency histogram and cache lookups.
    pub series: &'a BackendSeries,
}

/// A composed route's shape: its path template and sections, and the
/// series its counters are read from.
#[derive(Debug, Clone)]
pub struct RouteShape<'a> {
    /// The path template (the `route` label).
    pub route: &'a str,
    /// Its responses and complete pages.
    pub responses: &'a ResponseSeries,
    /// Its sections, in config order.
    pub sections: Vec<SectionShape<'a>>,
}

/// One section of a [`RouteShape`].
#[derive(Debug, Clone)]
pub struct SectionShape<'a> {
    /// Section name.
    pub name: &'a str,
    /// Its backend.
    pub backend: &'a str,
    /// Its answers by source.
    pub sources: &'a SourceCounts,
}

/// One backend's cumulative counters at one instant.
#[derive(Debug, Clone, Default)]
struct BackendCounters {
    successes: u64,
    failures: u64,
    rejections: u64,
    cache_hits: u64,
    cache_misses: u64,
    latency: Buckets,
}

/// One route's cumulative counters at one instant.
#[derive(Debug, Clone, Default)]
struct RouteCounters {
    responses: u64,
    /// Pages with every section live or fresh from cache.
    complete: u64,
    /// Per section, in [`Source::ALL`] order.
    sections: Vec<[u64; 5]>,
}

/// Every counter at one instant, keyed by name (a reload may add or drop
/// backends and routes between two readings).
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    backends: Vec<(String, BackendCounters)>,
    routes: Vec<(String, RouteCounters)>,
}

impl Reading {
    /// The backend's counters; `hint` is where it was in the list asked
    /// for, which is where it is unless a reload changed the backends.
    fn backend(&self, hint: usize, name: &str) -> Option<&BackendCounters> {
        match self.backends.get(hint) {
            Some((n, counters)) if n == name => Some(counters),
            _ => self.backends.iter().find(|(n, _)| n == name).map(|(_, c)| c),
        }
    }

    /// The route's counters (`hint` as for [`Reading::backend`]).
    fn route(&self, hint: usize, route: &str) -> Option<&RouteCounters> {
        match self.routes.get(hint) {
            Some((r, counters)) if r == route => Some(counters),
            _ => self.routes.iter().find(|(r, _)| r == route).map(|(_, c)| c),
        }
    }
}

/// The last minute of readings.
#[derive(Debug, Default)]
pub struct History {
    readings: VecDeque<Reading>,
}

/// `GET /admin/events`' JSON: one `snapshot` event.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// The seconds the rates were computed over (up to [`WINDOW`]; 0 on
    /// the first snapshot, when there is nothing to difference yet).
    pub window_s: f64,
    /// Every backend, in name order.
    pub backends: Vec<BackendFigures>,
    /// Every composed route, in config order.
    pub routes: Vec<RouteFigures>,
}

/// A backend's tile.
#[derive(Debug, Serialize)]
pub struct BackendFigures {
    /// Backend name.
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// `auto`, `open` or `closed`.
    pub forced: &'static str,
    /// `host:port` of each instance.
    pub instances: Vec<String>,
    /// Attempts per second (answered or failed).
    pub requests_per_s: Option<f64>,
    /// Calls refused per second (breaker, bulkhead, no instance).
    pub rejected_per_s: Option<f64>,
    /// Failed attempts over all attempts; `None` without attempts.
    pub error_rate: Option<f64>,
    /// Median attempt latency (ms), from the histogram buckets.
    pub p50_ms: Option<f64>,
    /// 99th percentile attempt latency (ms).
    pub p99_ms: Option<f64>,
    /// Calls in flight now.
    pub in_flight: usize,
    /// Fresh cache hits over lookups; `None` without a cache or lookups.
    pub cache_hit_ratio: Option<f64>,
    /// Per-second points of the last minute, oldest first.
    pub last_minute: LastMinute,
}

/// A backend's chart.
#[derive(Debug, Serialize, Default)]
pub struct LastMinute {
    /// Attempts per second.
    pub requests_per_s: Vec<f64>,
    /// Failed attempts per second.
    pub errors_per_s: Vec<f64>,
}

/// A route's row.
#[derive(Debug, Serialize)]
pub struct RouteFigures {
    /// The path template.
    pub route: String,
    /// Responses per second.
    pub pages_per_s: Option<f64>,
    /// Share of responses that were complete pages (every section live or
    /// fresh from cache), from `mosaic_pages_complete_total`.
    pub complete_share: Option<f64>,
    /// Each section's mix of sources.
    pub sections: Vec<SectionFigures>,
}

/// One section's stacked bar.
#[derive(Debug, Serialize)]
pub struct SectionFigures {
    /// Section name.
    pub name: String,
    /// Its backend.
    pub backend: String,
    /// Share of each source (`live`, `cache`, `stale`, `default`, `none`)
    /// over the window; `None` without pages.
    pub sources: Option<SourceShares>,
}

/// Shares of each source, adding up to 1.
#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
pub struct SourceShares {
    /// Live answers.
    pub live: f64,
    /// Fresh cache hits.
    pub cache: f64,
    /// Stale copies served on failure.
    pub stale: f64,
    /// The configured default.
    pub default: f64,
    /// Nothing (`null`).
    pub none: f64,
}

impl History {
    /// Takes a reading at `at` and returns the snapshot it makes with the
    /// readings before it.
    pub fn record(&mut self, at: Instant, now: &[BackendNow], routes: &[RouteShape]) -> Snapshot {
        let reading = read(at, now, routes);
        if self.readings.len() == KEPT_READINGS {
            self.readings.pop_front();
        }
        self.readings.push_back(reading);
        self.snapshot(now, routes)
    }

    fn snapshot(&self, now: &[BackendNow], routes: &[RouteShape]) -> Snapshot {
        let Some(newest) = self.readings.back() else {
            return Snapshot { window_s: 0.0, backends: Vec::new(), routes: Vec::new() };
        };
        // The oldest reading within the window (the newest itself when
        // there is no other: nothing to difference, figures unknown).
        let base = self
            .readings
            .iter()
            .find(|r| newest.at.duration_since(r.at) <= WINDOW + Duration::from_millis(500))
            .unwrap_or(newest);
        let span = newest.at.duration_since(base.at).as_secs_f64();
        let backends = now
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                let current = newest.backend(i, &backend.name);
                let before = base.backend(i, &backend.name);
                self.backend_figures(i, backend, current, before, span)
            })
            .collect();
        let routes = routes
            .iter()
            .enumerate()
            .map(|(i, shape)| {
                let (current, before) = (newest.route(i, shape.route), base.route(i, shape.route));
                route_figures(shape, current, before, span)
            })
            .collect();
        Snapshot { window_s: span, backends, routes }
    }

    fn backend_figures(
        &self,
        index: usize,
        now: &BackendNow,
        current: Option<&BackendCounters>,
        before: Option<&BackendCounters>,
        span: f64,
    ) -> BackendFigures {
        let delta = match (current, before) {
            (Some(c), Some(b)) if span > 0.0 => Some(difference(c, b)),
            _ => None,
        };
        let attempts = delta.as_ref().map(|d| d.successes + d.failures);
        let latency = delta.as_ref().filter(|d| d.latency[LATENCY_BUCKETS.len()] > 0);
        let lookups = delta.as_ref().map(|d| d.cache_hits + d.cache_misses).filter(|n| *n > 0);
        BackendFigures {
            name: now.name.clone(),
            breaker: now.breaker,
            forced: now.forced,
            instances: now.instances.clone(),
            requests_per_s: attempts.map(|n| n as f64 / span),
            rejected_per_s: delta.as_ref().map(|d| d.rejections as f64 / span),
            error_rate: delta
                .as_ref()
                .zip(attempts.filter(|n| *n > 0))
                .map(|(d, n)| d.failures as f64 / n as f64),
            p50_ms: latency.and_then(|d| quantile(&d.latency, 0.5)).map(|s| s * 1000.0),
            p99_ms: latency.and_then(|d| quantile(&d.latency, 0.99)).map(|s| s * 1000.0),
            in_flight: now.in_flight,
            cache_hit_ratio: delta
                .as_ref()
                .filter(|_| now.cached)
                .zip(lookups)
                .map(|(d, n)| d.cache_hits as f64 / n as f64),
            last_minute: self.last_minute(index, &now.name),
        }
    }

    /// Per-second attempts and failures between consecutive readings.
    fn last_minute(&self, index: usize, name: &str) -> LastMinute {
        let mut chart = LastMinute::default();
        let mut previous: Option<(&Reading, &BackendCounters)> = None;
        for reading in &self.readings {
            let Some(counters) = reading.backend(index, name) else {
                previous = None;
                continue;
            };
            if let Some((before, old)) = previous {
                let seconds = reading.at.duration_since(before.at).as_secs_f64();
                if seconds > 0.0 {
                    let attempts = (counters.successes + counters.failures)
                        .saturating_sub(old.successes + old.failures);
                    let failures = counters.failures.saturating_sub(old.failures);
                    chart.requests_per_s.push(round(attempts as f64 / seconds));
                    chart.errors_per_s.push(round(failures as f64 / seconds));
                }
            }
            previous = Some((reading, counters));
        }
        chart
    }
}

fn read(at: Instant, now: &[BackendNow], routes: &[RouteShape]) -> Reading {
    let backends = now
        .iter()
        .map(|b| {
            let counters = BackendCounters {
                successes: b.successes,
                failures: b.failures,
                rejections: b.rejections,
                cache_hits: b.series.cache_hits.get(),
                cache_misses: b.series.cache_misses.get(),
                latency: b.series.latency.read().cumulative,
            };
            (b.name.clone(), counters)
        })
        .collect();
    let routes = routes
        .iter()
        .map(|shape| {
            let counters = RouteCounters {
                responses: shape.responses.statuses.total(),
                complete: shape.responses.complete_pages(),
                sections: shape.sections.iter().map(|s| s.sources.read()).collect(),
            };
            (shape.route.to_string(), counters)
        })
        .collect();
    Reading { at, backends, routes }
}

/// Counters between two readings (a counter that went backwards, as a
/// rebuilt backend's do, counts as no change).
fn difference(current: &BackendCounters, before: &BackendCounters) -> BackendCounters {
    let latency = std::array::from_fn(|i| current.latency[i].saturating_sub(before.latency[i]));
    BackendCounters {
        successes: current.successes.saturating_sub(before.successes),
        failures: current.failures.saturating_sub(before.failures),
        rejections: current.rejections.saturating_sub(before.rejections),
        cache_hits: current.cache_hits.saturating_sub(before.cache_hits),
        cache_misses: current.cache_misses.saturating_sub(before.cache_misses),
        latency,
    }
}

fn route_figures(
    shape: &RouteShape,
    current: Option<&RouteCounters>,
    before: Option<&RouteCounters>,
    span: f64,
) -> RouteFigures {
    let pair = current.zip(before).filter(|_| span > 0.0);
    let shares: Vec<Option<SourceShares>> = (0..shape.sections.len())
        .map(|i| {
            let (c, b) = pair?;
            let (c, b) = (c.sections.get(i)?, b.sections.get(i)?);
            let counts: [u64; 5] = std::array::from_fn(|k| c[k].saturating_sub(b[k]));
            source_shares(counts)
        })
        .collect();
    // Complete pages over responses (a 404 page or a 405 is a response
    // too, and not complete).
    let complete_share = pair.and_then(|(c, b)| {
        let responses = c.responses.saturating_sub(b.responses);
        let complete = c.complete.saturating_sub(b.complete).min(responses);
        (responses > 0).then(|| round(complete as f64 / responses as f64))
    });
    RouteFigures {
        route: shape.route.to_string(),
        pages_per_s: pair.map(|(c, b)| c.responses.saturating_sub(b.responses) as f64 / span),
        complete_share,
        sections: shape
            .sections
            .iter()
            .zip(shares)
            .map(|(section, sources)| SectionFigures {
                name: section.name.to_string(),
                backend: section.backend.to_string(),
                sources,
            })
            .collect(),
    }
}

fn source_shares(counts: [u64; 5]) -> Option<SourceShares> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let share = |source: Source| {
        let i = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
        round(counts[i] as f64 / total as f64)
    };
    Some(SourceShares {
        live: share(Source::Live),
        cache: share(Source::Cache),
        stale: share(Source::Stale),
        default: share(Source::Default),
        none: share(Source::None),
    })
}

/// The `q` quantile (seconds) of a histogram's bucket counts, interpolated
/// linearly within its bucket as Prometheus' `histogram_quantile` does; a
/// rank in the `+Inf` bucket gives the highest finite bound.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total = *buckets.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (i, &count) in buckets.iter().enumerate() {
        let Some(&upper) = LATENCY_BUCKETS.get(i) else {
            return LATENCY_BUCKETS.last().copied();
        };
        if count as f64 >= rank && count > below {
            let within = (rank - below as f64) / (count - below) as f64;
            return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
        }
        below = count;
        lower = upper;
    }
    LATENCY_BUCKETS.last().copied()
}

/// Three decimals are plenty on a dashboard and keep the JSON short.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
