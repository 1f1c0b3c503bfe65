//! Micro-benchmarks of the request path, each against the obvious baseline.
//!
//! - `state_access`: what a section call does to reach its backend's state:
//!   reading the shared `Arc` state directly (mosaic's design) against an
//!   actor round trip on the same arbiter and across arbiters (the design
//!   the issue asked us to measure against).
//! - `breaker`: a breaker permit + record, the per-attempt resilience cost.
//! - `page`: assembling a 7-section, ~10 KB page by concatenation.
//! - `template`: matching `/products/{id}` and rendering two service paths.
//! - `cache_lookup`: a fresh hit in a 10,000-entry section cache, key
//!   building included.
//! - `bookkeeping`: the resilience bookkeeping per page (target ≤ 5 µs). The real
//!   coordinator and call procedure (breaker admit/record, bulkhead, per-
//!   attempt and deadline timers, section labels, metrics with the Prometheus
//!   recorder installed, template rendering) composing the 7-section bench
//!   page over a transport whose answers are ready at once, against the same
//!   seven answers awaited and concatenated with none of it. The difference
//!   of the two is the bookkeeping's cost per page.
//!
//! Run: `cargo bench --bench hot_paths`. Results and dates: BENCHMARKS.md.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use mosaic::backend::actor::{BackendActor, GetStatus};
use mosaic::backend::balancer::Balancer;
use mosaic::backend::breaker::Breaker;
use mosaic::backend::client::Reply;
use mosaic::backend::{Backend, FetchError, Transport};
use mosaic::config::{BackendConfig, Backoff, BreakerConfig, BreakerPolicy, InstanceSource};
use mosaic::coordinator::compose_via;
use mosaic::gateway::runtime::Runtime;
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
        amqp: None,
    })
}

/// What a call reads of its backend's shared state: the instances (to pick
/// one) and the breaker.
struct Shared {
    balancer: Balancer,
    breaker: Breaker,
}

/// Same per-call work in each case: pick an instance and read the breaker.
fn touch(shared: &Shared) -> usize {
    let list = shared.balancer.snapshot();
    let index = shared.balancer.pick(&list, None).unwrap_or(0);
    index + shared.breaker.effective_state() as usize
}

fn state_access(c: &mut Criterion) {
    let config = backend_config();
    let shared = Arc::new(Shared {
        balancer: Balancer::new(&["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()]),
        breaker: Breaker::new("bench", &config.breaker),
    });
    let mut group = c.benchmark_group("state_access");
    group.bench_function("arc_direct", |b| b.iter(|| touch(&shared)));

    for (name, cross) in [("actor_same_arbiter", false), ("actor_cross_arbiter", true)] {
        group.bench_function(name, move |b| {
            b.iter_custom(|iters| {
                let (_, control) =
                    Backend::new(backend_config(), 1 << 20, None, None, None, Default::default());
                System::new().block_on(async move {
                    let restarts = Arc::new(AtomicU64::new(0));
                    let arbiter = Arbiter::new();
                    let addr = if cross {
                        BackendActor::start_supervised(control, restarts, &arbiter.handle())
                    } else {
                        BackendActor::start_supervised(control, restarts, &Arbiter::current())
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
    let breaker = Breaker::new("bench", &backend_config().breaker);
    c.bench_function("breaker_permit_record", |b| {
        b.iter(|| {
            if let Some(permit) = breaker.try_acquire() {
                breaker.record(permit, false);
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
            tier: None,
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
    // The same check on realistic bodies: the demo shop's product, price,
    // reviews, inventory and recommendations (objects, short keys, numbers,
    // prose), about 8 KB. The padded bodies above are one long string, the
    // check's best case.
    use mosaic::demo::data;
    let shop: Vec<Vec<u8>> = [
        data::product(42),
        data::price(42),
        data::reviews(42),
        data::inventory(42),
        data::recommendations(42),
    ]
    .iter()
    .map(|v| serde_json::to_vec(v).unwrap_or_default())
    .collect();
    c.bench_function("json_check_demo_bodies", |b| {
        b.iter(|| shop.iter().all(|body| mosaic::backend::client::is_json(body)))
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

/// A transport whose answer is ready at once: the bench section's body.
#[derive(Clone)]
struct ReadyAnswer(Bytes);

impl Transport for ReadyAnswer {
    fn get<'a>(
        &'a self,
        _address: &'a str,
        _path: &'a str,
        _headers: &'a [(HeaderName, HeaderValue)],
        _max_body: usize,
        _until: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Result<Reply, FetchError>> + 'a {
        std::future::ready(Ok(Reply { status: 200, body: self.0.clone() }))
    }
}

/// The benchmark page of `../shared/bench/mosaic-bench.toml`: seven
/// backends, breakers at their usual policy, no cache.
const BENCH_PAGE: &str = r#"
[defaults]
timeout = "1s"
max_in_flight = 4096
retries = 1
[backends.catalog]
instances = ["127.0.0.1:7101"]
[backends.pricing]
instances = ["127.0.0.1:7102"]
[backends.reviews]
instances = ["127.0.0.1:7103"]
[backends.cart]
instances = ["127.0.0.1:7104"]
[backends.orders]
instances = ["127.0.0.1:7105"]
[backends.inventory]
instances = ["127.0.0.1:7106"]
[backends.recommendations]
instances = ["127.0.0.1:7107"]
[[routes]]
path = "/products/{id}"
deadline = "1s"
sections = [
  { name = "product", backend = "catalog", path = "/products/{id}", required = true },
  { name = "price", backend = "pricing", path = "/prices/{id}" },
  { name = "reviews", backend = "reviews", path = "/reviews/{id}" },
  { name = "cart", backend = "cart", path = "/cart", forward_headers = ["authorization"] },
  { name = "orders", backend = "orders", path = "/orders?product={id}", forward_headers = ["authorization"] },
  { name = "inventory", backend = "inventory", path = "/inventory/{id}" },
  { name = "recommendations", backend = "recommendations", path = "/recommendations/{id}" },
]
"#;

fn bookkeeping(c: &mut Criterion) {
    let _ = mosaic::admin::metrics::install();
    let config = Arc::new(mosaic::config::parse_str(BENCH_PAGE).unwrap_or_else(|e| panic!("{e}")));
    let system = System::new();
    let runtime = system.block_on(async { Runtime::build(config, &Arbiter::current(), None) });
    let route = &runtime.routes[0];
    let answer = ReadyAnswer(Bytes::from(format!("{{\"pad\":\"{}\"}}", "x".repeat(1400))));
    let per_request = [
        (HeaderName::from_static("x-request-id"), HeaderValue::from_static("0123456789abcdef")),
        (
            HeaderName::from_static("traceparent"),
            HeaderValue::from_static("00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"),
        ),
    ];
    let request_headers = HeaderMap::new();
    let mut group = c.benchmark_group("bookkeeping");
    group.bench_function("page_with_bookkeeping", |b| {
        b.iter(|| {
            system.block_on(async {
                let raw = route.config.template.match_path("/products/42").unwrap_or_default();
                let params = raw.decode().unwrap_or_default();
                let arrived = tokio::time::Instant::now();
                let (page, _) = compose_via(
                    route,
                    &params,
                    mosaic::coordinator::RequestHeaders::plain(&request_headers),
                    &per_request,
                    arrived,
                    &answer,
                )
                .await;
                page.body.len()
            })
        })
    });
    group.bench_function("page_without_bookkeeping", |b| {
        b.iter(|| {
            system.block_on(async {
                let raw = route.config.template.match_path("/products/42").unwrap_or_default();
                let params = raw.decode().unwrap_or_default();
                let headers: &[(HeaderName, HeaderValue)] = &per_request;
                let calls = route.sections.iter().map(|section| {
                    let path = section.template.render(&params);
                    let answer = &answer;
                    async move {
                        answer
                            .get(
                                "127.0.0.1:7101",
                                &path,
                                headers,
                                1 << 20,
                                tokio::time::Instant::now(),
                            )
                            .await
                    }
                });
                let answers = futures_util::future::join_all(calls).await;
                let mut body = Vec::with_capacity(16 * 1024);
                body.push(b'{');
                for (section, answer) in route.sections.iter().zip(answers) {
                    body.extend_from_slice(section.name.as_bytes());
                    if let Ok(fetched) = answer {
                        body.extend_from_slice(&fetched.body);
                    }
                }
                body.push(b'}');
                body.len()
            })
        })
    });
    group.finish();
}

/// A fresh cache hit, as a cached section makes it: the key built from the
/// rendered path and forwarded headers, then the lookup, in a cache of
/// 10,000 entries.
fn cache_lookup(c: &mut Criterion) {
    use mosaic::backend::cache::{Lookup, ResponseCache};
    use mosaic::config::CacheConfig;
    let cache = ResponseCache::new(&CacheConfig {
        ttl: Duration::from_secs(3600),
        stale_if_error: Duration::from_secs(3600),
        max_entries: 10_000,
        shared: false,
    });
    let body = Bytes::from_static(br#"{"product_id":"42","amount":14999,"currency":"EUR"}"#);
    let key = |id: u32| -> Arc<[u8]> { format!("/prices/{id}").into_bytes().into() };
    for id in 0..10_000 {
        cache.insert(key(id), 200, body.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build();
    let Ok(rt) = rt else { return };
    let _guard = rt.enter();
    c.bench_function("cache_lookup_hit", |b| {
        let mut id = 0u32;
        b.iter(|| {
            id = (id + 7919) % 10_000;
            let key = key(id);
            matches!(cache.lookup(&key), Lookup::Fresh(_))
        })
    });
}

criterion_group!(benches, state_access, breaker, page, template, bookkeeping, cache_lookup);
criterion_main!(benches);
