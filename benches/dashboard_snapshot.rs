//! One dashboard snapshot for 50 backends and 20 routes (target < 1 ms),
//! and for the demo's 7 backends and 1 route.
//!
//! - `snapshot`: what `/admin/events`' sampler does once a second: load
//!   every counter (`mosaic::counters`, each backend's atomics) into a
//!   reading, take it into a full minute of history, compute every figure,
//!   encode the SSE frame.
//! - `metrics_text`: the `/metrics` text of the same counters (what a
//!   scrape appends to the recorder's render).
//!
//! The counters are moved through mosaic's own `BackendStats` and series,
//! as the request path moves them.
//!
//! Run: `cargo bench --bench dashboard_snapshot`. Results: BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use mosaic::admin::events::encode;
use mosaic::admin::exposition::Families;
use mosaic::admin::snapshot::{BackendNow, History, RouteShape, SectionShape, KEPT_READINGS};
use mosaic::backend::{BackendSeries, BackendStats, FetchError};
use mosaic::counters::{ResponseSeries, SourceCounts};
use mosaic::page::Source;

/// (backends, routes, sections per route): the target's size, and the demo's.
const SIZES: [(usize, usize, usize); 2] = [(50, 20, 7), (7, 1, 7)];

/// A route's label, its responses, and each section's name and sources.
type RouteSeries = (String, ResponseSeries, Vec<(String, SourceCounts)>);

struct Fixture {
    names: Vec<String>,
    stats: Vec<BackendStats>,
    routes: Vec<RouteSeries>,
}

fn fixture(backends: usize, routes: usize, sections_per_route: usize) -> Fixture {
    let names: Vec<String> = (0..backends).map(|i| format!("backend-{i:02}")).collect();
    let stats = names
        .iter()
        .map(|name| {
            let stats = BackendStats::new(name, Arc::new(BackendSeries::default()));
            for i in 0..200u64 {
                stats.answered(200, Duration::from_micros(300 + i * 97));
                stats.cache_miss();
            }
            stats.failed(FetchError::Timeout, Duration::from_millis(300));
            stats.rejected(FetchError::CircuitOpen);
            stats.cache_hit();
            stats
        })
        .collect();
    let routes = (0..routes)
        .map(|r| {
            let responses = ResponseSeries::default();
            for status in [200, 404, 502] {
                (0..100).for_each(|_| responses.statuses.record(status));
            }
            responses.duration.record(Duration::from_millis(10));
            let sections = (0..sections_per_route)
                .map(|s| {
                    let sources = SourceCounts::default();
                    for source in Source::ALL {
                        (0..10).for_each(|_| sources.record(source));
                    }
                    (format!("section-{s}"), sources)
                })
                .collect();
            (format!("/route-{r:02}/{{id}}"), responses, sections)
        })
        .collect();
    Fixture { names, stats, routes }
}

impl Fixture {
    /// What the sampler builds from the runtime before each reading.
    fn now(&self) -> Vec<BackendNow<'_>> {
        self.names
            .iter()
            .zip(&self.stats)
            .map(|(name, stats)| BackendNow {
                name: name.clone(),
                breaker: "closed",
                forced: "auto",
                instances: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
                in_flight: 3,
                cached: true,
                successes: stats.successes(),
                failures: stats.failures(),
                rejections: stats.rejections(),
                series: stats.series(),
            })
            .collect()
    }

    fn shapes(&self) -> Vec<RouteShape<'_>> {
        self.routes
            .iter()
            .enumerate()
            .map(|(r, (route, responses, sections))| RouteShape {
                route,
                responses,
                sections: sections
                    .iter()
                    .enumerate()
                    .map(|(s, (name, sources))| SectionShape {
                        name,
                        backend: &self.names[(r * sections.len() + s) % self.names.len()],
                        sources,
                    })
                    .collect(),
            })
            .collect()
    }

    fn families(&self) -> Families<'_> {
        let mut families = Families::default();
        for (route, responses, sections) in &self.routes {
            families.responses.push((route, responses));
            families.pages.push((route, responses));
            for (section, sources) in sections {
                families.sections.push((route, section, sources));
            }
        }
        families.backends =
            self.names.iter().zip(&self.stats).map(|(n, s)| (n.as_str(), &**s.series())).collect();
        families
    }
}

fn snapshot(c: &mut Criterion) {
    for (backends, routes, sections) in SIZES {
        let f = fixture(backends, routes, sections);
        let mut group =
            c.benchmark_group(format!("dashboard_snapshot_{backends}_backends_{routes}_routes"));
        // A full minute of history first, as a dashboard open for a minute has.
        let mut history = History::default();
        let start = Instant::now();
        for second in 0..KEPT_READINGS as u64 {
            history.record(start + Duration::from_secs(second), &f.now(), &f.shapes());
        }
        let mut at = start + Duration::from_secs(KEPT_READINGS as u64);
        group.bench_function("snapshot", |b| {
            b.iter(|| {
                at += Duration::from_secs(1);
                encode(&history.record(at, &f.now(), &f.shapes()))
            })
        });
        let families = f.families();
        group.bench_function("metrics_text", |b| {
            b.iter(|| {
                let mut text = String::with_capacity(64 * 1024);
                families.write(&mut text);
                text
            })
        });
        group.finish();
        let frame = encode(&history.record(at + Duration::from_secs(1), &f.now(), &f.shapes()));
        let mut text = String::new();
        families.write(&mut text);
        eprintln!(
            "{backends} backends, {routes} routes: frame {} bytes, metrics text {} bytes",
            frame.len(),
            text.len()
        );
    }
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
