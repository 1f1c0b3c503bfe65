//! One dashboard snapshot for 50 backends and 20 routes (target < 1 ms),
//! and for the demo's 7 backends and 1 route,
//! against its baseline, the `/metrics` render it reads from.
//!
//! - `render`: the Prometheus text for those series (what a scrape costs).
//! - `snapshot_from_text`: reading that text back, taking a reading into a
//!   full minute of history, computing every figure, encoding the frame.
//! - `snapshot`: both, i.e. what the sampler does once a second.
//!
//! The series are registered through mosaic's own `BackendStats` and the
//! same label sets the runtime registers, on a local recorder with the
//! shipped buckets, with counts in them.
//!
//! Run: `cargo bench --bench dashboard_snapshot`. Results: BENCHMARKS.md.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use mosaic::admin::events::encode;
use mosaic::admin::exposition::Exposition;
use mosaic::admin::metrics::LATENCY_BUCKETS;
use mosaic::admin::snapshot::{BackendNow, History, RouteShape, KEPT_READINGS};
use mosaic::backend::{BackendStats, FetchError};
use mosaic::page::Source;

/// (backends, routes, sections per route): the target's size, and the demo's.
const SIZES: [(usize, usize, usize); 2] = [(50, 20, 7), (7, 1, 7)];

struct Fixture {
    recorder: PrometheusRecorder,
    now: Vec<BackendNow>,
    routes: Vec<RouteShape>,
    // Kept alive: the handles own the series.
    _stats: Vec<BackendStats>,
}

fn fixture(backends: usize, routes: usize, sections_per_route: usize) -> Fixture {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".to_string()), LATENCY_BUCKETS)
        .map(|b| b.build_recorder())
        .unwrap_or_else(|e| panic!("recorder: {e}"));
    let names: Vec<String> = (0..backends).map(|i| format!("backend-{i:02}")).collect();
    let routes: Vec<RouteShape> = (0..routes)
        .map(|r| RouteShape {
            route: format!("/route-{r:02}/{{id}}"),
            sections: (0..sections_per_route)
                .map(|s| {
                    (format!("section-{s}"), names[(r * sections_per_route + s) % backends].clone())
                })
                .collect(),
        })
        .collect();
    let stats = metrics::with_local_recorder(&recorder, || {
        let stats: Vec<BackendStats> = names
            .iter()
            .map(|name| {
                let stats = BackendStats::new(name);
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
        for route in &routes {
            for status in ["200", "404", "502"] {
                metrics::counter!("mosaic_requests_total", "route" => route.route.clone(), "status" => status)
                    .increment(100);
            }
            metrics::histogram!("mosaic_request_duration_seconds", "route" => route.route.clone())
                .record(0.01);
            for (section, _) in &route.sections {
                for source in Source::ALL {
                    metrics::counter!(
                        "mosaic_section_source_total",
                        "route" => route.route.clone(),
                        "section" => section.clone(),
                        "source" => source.as_str()
                    )
                    .increment(10);
                }
            }
        }
        stats
    });
    let now = names
        .iter()
        .map(|name| BackendNow {
            name: name.clone(),
            breaker: "closed",
            forced: "auto",
            instances: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
            in_flight: 3,
            cached: true,
            successes: 200,
            failures: 1,
            rejections: 1,
        })
        .collect();
    Fixture { recorder, now, routes, _stats: stats }
}

/// A history with a full minute in it, and the instant after its last reading.
fn full_history(f: &Fixture, text: &str) -> (History, Instant) {
    let mut history = History::default();
    let start = Instant::now();
    let exposition = Exposition::parse(text);
    for second in 0..KEPT_READINGS as u64 {
        history.record(start + Duration::from_secs(second), &f.now, &f.routes, Some(&exposition));
    }
    (history, start + Duration::from_secs(KEPT_READINGS as u64))
}

fn snapshot(c: &mut Criterion) {
    for (backends, routes, sections) in SIZES {
        let f = fixture(backends, routes, sections);
        let handle = f.recorder.handle();
        let text = handle.render();
        let mut group =
            c.benchmark_group(format!("dashboard_snapshot_{backends}_backends_{routes}_routes"));
        group.bench_function("render", |b| b.iter(|| handle.render()));
        let (mut history, mut at) = full_history(&f, &text);
        group.bench_function("snapshot_from_text", |b| {
            b.iter(|| {
                at += Duration::from_secs(1);
                let exposition = Exposition::parse(&text);
                encode(&history.record(at, &f.now, &f.routes, Some(&exposition)))
            })
        });
        group.bench_function("snapshot", |b| {
            b.iter(|| {
                at += Duration::from_secs(1);
                let exposition = Exposition::parse(&handle.render());
                encode(&history.record(at, &f.now, &f.routes, Some(&exposition)))
            })
        });
        group.finish();
        let last = history.record(
            at + Duration::from_secs(1),
            &f.now,
            &f.routes,
            Some(&Exposition::parse(&text)),
        );
        eprintln!(
            "{backends} backends, {routes} routes: frame {} bytes, exposition text {} bytes",
            encode(&last).len(),
            text.len()
        );
    }
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
