//! Micro-benchmarks of the request path, each against the obvious baseline.
//!
//! - `state_access`: what a section call does to reach its backend's state:
//!   reading the shared `Arc` state directly (mosaic's design) against an
//!   actor round trip on the same arbiter and across arbiters (the design
//!   the issue asked us to measure against).
//! - `breaker`: a breaker permit + record, the per-attempt resilience cost.
//! - `page`: assembling a 7-section, ~10 KB page by concatenation.
//! - `template`: matching `/products/{id}` and rendering two service paths.
//!
//! Run: `cargo bench --bench hot_paths`. Results and dates: BENCHMARKS.md.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use mosaic::backend::actor::{BackendActor, GetStatus};
use mosaic::backend::Backend;
use mosaic::config::{BackendConfig, Backoff, BreakerConfig, BreakerPolicy, InstanceSource};
use mosaic::page::{assemble, SectionLabel, SectionReply, Source};
use mosaic::template::{PathTemplate, RouteTemplate};

fn backend_config() -> Arc<BackendConfig> {
    Arc::new(BackendConfig {
        name: "bench".into(),
        instances: InstanceSource::Static(vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()]),
        timeout: Duration::from_millis(300),
        max_in_flight: 512,
        retries: 1,
        breaker: BreakerConfig {
            policy: BreakerPolicy::ConsecutiveFailures { threshold: 5 },
            backoff: Backoff::Exponential {
                start: Duration::from_secs(1),
                max: Duration::from_secs(30),
            },
            half_open_calls: 1,
        },
        cache: None,
        default: None,
    })
}

/// Same per-call work in each case: pick an instance and read the breaker.
fn touch(backend: &Backend) -> usize {
    let list = backend.balancer.snapshot();
    let index = backend.balancer.pick(&list, None).unwrap_or(0);
    index + backend.breaker.effective_state() as usize
}

fn state_access(c: &mut Criterion) {
    let backend = Backend::new(backend_config(), 1 << 20);
    let mut group = c.benchmark_group("state_access");
    group.bench_function("arc_direct", |b| b.iter(|| touch(&backend)));

    for (name, cross) in [("actor_same_arbiter", false), ("actor_cross_arbiter", true)] {
        let backend = backend.clone();
        group.bench_function(name, move |b| {
            b.iter_custom(|iters| {
                let backend = backend.clone();
                System::new().block_on(async move {
                    let restarts = Arc::new(AtomicU64::new(0));
                    let arbiter = Arbiter::new();
                    let addr = if cross {
                        BackendActor::start_supervised(backend, restarts, &arbiter.handle())
                    } else {
                        BackendActor::start_supervised(backend, restarts, &Arbiter::current())
                    };
                    let started = Instant::now();
                    for _ in 0..iters {
                        let _ = addr.send(GetStatus).await;
                    }
                    let elapsed = started.elapsed();
                    arbiter.stop();
                    elapsed
                })
            })
        });
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let backend = Backend::new(backend_config(), 1 << 20);
    c.bench_function("breaker_permit_record", |b| {
        b.iter(|| {
            if let Some(permit) = backend.breaker.try_acquire() {
                backend.breaker.record(permit, false);
            }
        })
    });
}

fn page(c: &mut Criterion) {
    let sizes = [1950usize, 91, 3916, 581, 1078, 338, 1600];
    let names = ["product", "price", "reviews", "cart", "orders", "inventory", "recommendations"];
    let labels: Vec<_> =
        names.iter().enumerate().map(|(i, n)| SectionLabel::new(n, i == 0)).collect();
    let replies: Vec<_> = sizes
        .iter()
        .map(|n| SectionReply {
            source: Source::Live,
            status: Some(200),
            body: Some(Bytes::from(format!(
                "{{\"pad\":\"{}\"}}",
                "x".repeat(n.saturating_sub(10))
            ))),
            error: None,
            age: None,
            elapsed: Duration::from_millis(3),
        })
        .collect();
    c.bench_function("page_assemble_7_sections", |b| {
        b.iter(|| assemble(&labels, &replies, Duration::from_millis(4)))
    });
    c.bench_function("json_check_10kb", |b| {
        b.iter(|| {
            replies
                .iter()
                .all(|r| r.body.as_ref().is_some_and(|b| mosaic::backend::client::is_json(b)))
        })
    });
}

fn template(c: &mut Criterion) {
    let route = RouteTemplate::parse("/products/{id}").unwrap_or_else(|e| panic!("{e}"));
    let product =
        PathTemplate::parse("/products/{id}", route.params()).unwrap_or_else(|e| panic!("{e}"));
    let orders = PathTemplate::parse("/orders?product={id}", route.params())
        .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("template_match_and_render", |b| {
        b.iter(|| {
            let raw = route.match_path("/products/42").unwrap_or_default();
            let params = raw.decode().unwrap_or_default();
            (product.render(&params), orders.render(&params))
        })
    });
}

criterion_group!(benches, state_access, breaker, page, template);
criterion_main!(benches);
