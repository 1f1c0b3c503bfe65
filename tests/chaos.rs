//! Chaos tests: the demo services and the gateway as real processes
//! (`mosaic demo-service`, `mosaic run --config FILE`), real SIGKILLs and
//! restarts, injected hangs, latency and 5xx, and a panicking backend
//! actor, with clients measuring what they get.
//!
//! Tests run one at a time (a lock), so their timing bounds measure the
//! gateway rather than each other. Load is moderate (tens of requests per
//! second) so a 2-core CI machine is not saturated; timing assertions are
//! only the required bounds (deadline + 50 ms, backoff + 1 s), everything
//! else is counts and states.

use std::time::Duration;

use mosaic::chaos::experiment::{self, Options};
use mosaic::chaos::lab::{
    GatewayProcess, Lab, ADMIN_TOKEN, DEADLINE, PRICING_TTL, REVIEWS_BACKOFF, REVIEWS_THRESHOLD,
};
use mosaic::chaos::load::{self, inspect, quantile, LoadSpec, Sample};
use mosaic::chaos::plan::{plan, plan_with, Fault};
use mosaic::chaos::report::{self, LATENCY_SLACK};
use mosaic::chaos::{section_index, Source};
use mosaic::demo::Service;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_mosaic");
/// One chaos test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Client-side bound on a page: the deadline plus scheduling noise.
const BUDGET: Duration = Duration::from_millis(300);

async fn lab(hooks: bool) -> (Lab, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = Lab::start(EXE.as_ref(), dir.path(), hooks, 2, None).await.expect("lab starts");
    (lab, dir)
}

/// Moderate load: 8 keep-alive clients, 50 requests per second in all.
fn moderate(products: u32) -> LoadSpec {
    LoadSpec {
        clients: 8,
        rate: 50.0,
        products,
        timeout: Duration::from_secs(2),
        max_duration: Duration::from_secs(30),
    }
}

/// One page on a fresh connection: status, body, client wall time.
async fn page(lab: &Lab, id: u32) -> (u16, Value, Duration) {
    let client = awc::Client::builder().timeout(Duration::from_secs(3)).finish();
    let started = Instant::now();
    let mut res = client
        .get(format!("http://{}/products/{id}", lab.gateway.addr))
        .insert_header(("authorization", "Bearer chaos-test"))
        .send()
        .await
        .expect("the gateway answers");
    let body = res.body().await.expect("a body");
    let value = serde_json::from_slice(&body).expect("a JSON envelope");
    (res.status().as_u16(), value, started.elapsed())
}

fn source(page: &Value, section: &str) -> String {
    page["_mosaic"]["sections"][section]["source"].as_str().unwrap_or("?").to_owned()
}

/// Asserts every sample is a 200 with an honestly labelled page, no
/// connection error, and a p99 within the budget.
fn assert_whole_and_on_time(samples: &[Sample], what: &str) {
    assert!(samples.len() >= 100, "{what}: only {} samples", samples.len());
    for s in samples {
        assert_eq!(s.status, 200, "{what}: {s:?}");
        assert!(s.problem.is_none(), "{what}: {s:?}");
    }
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let p99 = quantile(&mut latencies, 0.99);
    assert!(p99 <= DEADLINE + LATENCY_SLACK, "{what}: p99 {p99:?} over {BUDGET:?}");
}

/// Optional services dead (SIGKILL), hung and slow under steady load:
/// every answer is a 200 with valid, labelled JSON, no connection errors,
/// p99 within the deadline + 50 ms; pricing is served from cache then
/// `stale` for the whole outage; after restarts the pages heal by themselves.
#[actix_rt::test]
async fn dead_hung_and_slow_services_still_give_whole_pages_on_time() {
    let _serial = SERIAL.lock().await;
    let (mut lab, _dir) = lab(false).await;
    let products = 10;
    // Warm pricing's cache for every product the load asks for.
    for id in 1..=products {
        let (status, body, _) = page(&lab, id).await;
        assert_eq!((status, body["_mosaic"]["complete"].as_bool()), (200, Some(true)), "{body}");
    }
    let epoch = Instant::now();
    let load = load::start(lab.gateway.addr, &moderate(products), epoch);
    for victim in ["pricing", "reviews", "recommendations", "inventory"] {
        lab.services.kill(victim).await.expect("kill");
    }
    let killed = epoch.elapsed();
    sleep(Duration::from_secs(3)).await;
    lab.set_fault(Service::Orders, json!({ "hang": true })).await.expect("hang orders");
    lab.set_fault(Service::Cart, json!({ "latency_ms": 400 })).await.expect("slow cart");
    let hung = epoch.elapsed();
    sleep(Duration::from_secs(3)).await;
    let outage: Vec<Sample> = load.snapshot().into_iter().filter(|s| s.at >= killed).collect();
    assert_whole_and_on_time(&outage, "services dead, hung, slow");

    let price = section_index(Service::Pricing);
    for s in &outage {
        // Fresh copies may still be served until the ttl runs out; from then
        // on, the whole outage is `stale` (a body, labelled, never `none`).
        let expected: &[Source] = if s.at >= killed + PRICING_TTL + Duration::from_millis(100) {
            &[Source::Stale]
        } else {
            &[Source::Cache, Source::Stale]
        };
        assert!(expected.contains(&s.sources[price]), "price at {:?}: {s:?}", s.at);
        assert_eq!(s.sources[section_index(Service::Reviews)], Source::None, "{s:?}");
        assert_eq!(s.sources[section_index(Service::Inventory)], Source::None, "{s:?}");
        assert_eq!(s.sources[section_index(Service::Recommendations)], Source::Default, "{s:?}");
        if s.at >= hung + Duration::from_millis(50) {
            assert_eq!(s.sources[section_index(Service::Cart)], Source::None, "{s:?}");
        }
    }
    assert!(outage.iter().any(|s| s.sources[price] == Source::Stale), "pricing went stale");

    // Heal: restart and clear; every section live again by itself.
    for victim in ["pricing", "reviews", "recommendations", "inventory"] {
        lab.services.restart(victim).await.expect("restart");
    }
    lab.clear_fault(Service::Orders).await.expect("clear");
    lab.clear_fault(Service::Cart).await.expect("clear");
    let healed = epoch.elapsed();
    sleep(Duration::from_secs(4)).await;
    let samples = load.finish().await;
    let late: Vec<&Sample> =
        samples.iter().filter(|s| s.at >= healed + Duration::from_secs(3)).collect();
    assert!(late.len() >= 20, "{} late samples", late.len());
    assert_mostly_complete(&late, "after the heal");
    for backend in lab.backends().await.expect("admin") {
        assert_eq!(backend["breaker"], "closed", "{backend}");
    }
}

/// At least 95% of `samples` are complete (every section live or cache):
/// a loaded CI machine may cut a rare call at the deadline, which is
/// labelled and fine; a section that stayed down would fail this.
fn assert_mostly_complete(samples: &[&Sample], what: &str) {
    let complete = samples
        .iter()
        .filter(|s| s.sources.iter().all(|x| matches!(x, Source::Live | Source::Cache)))
        .count();
    assert!(
        complete * 100 >= samples.len() * 95,
        "{what}: {complete} of {} complete",
        samples.len()
    );
}

/// The reviews breaker (threshold 3, constant 2 s backoff): opens after
/// exactly 3 failed calls, sends the service nothing while open (counted by
/// the service itself), lets one probe through after the backoff, and the
/// section is live again within backoff + 1 s of a heal and of a restart.
#[actix_rt::test]
async fn breaker_opens_at_threshold_stops_calling_probes_and_heals() {
    let _serial = SERIAL.lock().await;
    let (mut lab, _dir) = lab(false).await;
    let (_, first, _) = page(&lab, 1).await;
    assert_eq!(source(&first, "reviews"), "live");
    let before = lab.service_requests(Service::Reviews).await.expect("stats");

    lab.set_fault(Service::Reviews, json!({ "error_rate": 1.0 })).await.expect("5xx");
    let failing = Instant::now();
    let mut errors = Vec::new();
    for id in 1..=12 {
        let (status, body, _) = page(&lab, id).await;
        assert_eq!(status, 200, "{body}");
        errors.push(body["_mosaic"]["sections"]["reviews"]["error"].as_str().map(str::to_owned));
    }
    let opened_within = failing.elapsed();
    assert!(opened_within < REVIEWS_BACKOFF, "12 pages took {opened_within:?}");
    let calls = lab.service_requests(Service::Reviews).await.expect("stats") - before;
    assert_eq!(calls, REVIEWS_THRESHOLD, "calls that reached reviews: {errors:?}");
    let n = REVIEWS_THRESHOLD as usize;
    assert!(errors[..n].iter().all(|e| e.as_deref() == Some("status_5xx")), "{errors:?}");
    assert!(errors[n..].iter().all(|e| e.as_deref() == Some("circuit_open")), "{errors:?}");
    assert_eq!(lab.backend("reviews").await.expect("admin")["breaker"], "open");

    // While open: nothing reaches the service; after the backoff, one probe.
    let mut probe_at = None;
    while failing.elapsed() < REVIEWS_BACKOFF * 2 {
        page(&lab, 1).await;
        let calls = lab.service_requests(Service::Reviews).await.expect("stats") - before;
        if calls > REVIEWS_THRESHOLD {
            assert_eq!(calls, REVIEWS_THRESHOLD + 1, "one probe at a time");
            probe_at = Some(failing.elapsed());
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let probe_at = probe_at.expect("a probe after the backoff");
    assert!(probe_at >= REVIEWS_BACKOFF - Duration::from_millis(100), "probe at {probe_at:?}");

    // Heal: live again within backoff + 1 s.
    lab.clear_fault(Service::Reviews).await.expect("clear");
    let healed = Instant::now();
    let live = until_live(&lab, "reviews", REVIEWS_BACKOFF + Duration::from_secs(1)).await;
    assert!(live, "reviews live within backoff + 1 s of the heal ({:?})", healed.elapsed());
    assert_eq!(lab.backend("reviews").await.expect("admin")["breaker"], "closed");

    // SIGKILL: the breaker opens on connect failures; after the restart the
    // section is live again within backoff + 1 s.
    lab.services.kill("reviews").await.expect("kill");
    for id in 1..=REVIEWS_THRESHOLD as u32 + 2 {
        let (status, body, elapsed) = page(&lab, id).await;
        assert_eq!(status, 200, "{body}");
        assert!(elapsed <= BUDGET, "{elapsed:?}");
        assert_eq!(source(&body, "reviews"), "none", "{body}");
    }
    assert_eq!(lab.backend("reviews").await.expect("admin")["breaker"], "open");
    lab.services.restart("reviews").await.expect("restart");
    let restarted = Instant::now();
    let live = until_live(&lab, "reviews", REVIEWS_BACKOFF + Duration::from_secs(1)).await;
    assert!(live, "reviews live within backoff + 1 s of the restart ({:?})", restarted.elapsed());
}

/// Asks for pages every 50 ms until `section` is live or `within` passes.
async fn until_live(lab: &Lab, section: &str, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let (_, body, _) = page(lab, 1).await;
        if source(&body, section) == "live" {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The admin crash hook makes every backend actor panic (twice) under load:
/// each is restarted by its supervisor, and pages keep flowing, all 200 and
/// complete, none hanging. The hook needs the token, and does not exist
/// without `MOSAIC_CHAOS_HOOKS=1`.
#[actix_rt::test]
async fn crashed_backend_actors_restart_and_pages_keep_flowing() {
    let _serial = SERIAL.lock().await;
    let (lab, _dir) = lab(true).await;
    let epoch = Instant::now();
    let load = load::start(lab.gateway.addr, &moderate(10), epoch);
    sleep(Duration::from_millis(800)).await;
    for _ in 0..2 {
        for service in Service::ALL {
            assert_eq!(lab.crash(service.name()).await.expect("crash"), 202, "{service}");
        }
        sleep(Duration::from_millis(400)).await;
    }
    sleep(Duration::from_secs(2)).await;
    let samples = load.finish().await;
    assert_whole_and_on_time(&samples, "actors crashing");
    // None hanging: a hang would show as the client's 2 s timeout (status 0,
    // rejected above) or as a page far past the deadline.
    let slowest = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    assert!(slowest < Duration::from_secs(1), "a page took {slowest:?}");
    assert_mostly_complete(&samples.iter().collect::<Vec<_>>(), "actors crashing");
    for backend in lab.backends().await.expect("admin") {
        assert!(backend["actor_restarts"].as_u64() >= Some(2), "{backend}");
    }

    // Token-protected.
    let url = format!("http://{}/admin/backends/reviews/crash", lab.gateway.admin_addr);
    let (status, _) = mosaic::chaos::lab::call("POST", &url, None, None).await.expect("call");
    assert_eq!(status, 401);
    // Absent without the environment variable.
    let plain = GatewayProcess::start(EXE.as_ref(), &lab.config_path, false, None)
        .await
        .expect("second gateway");
    let url = format!("http://{}/admin/backends/reviews/crash", plain.admin_addr);
    let (status, _) =
        mosaic::chaos::lab::call("POST", &url, Some(ADMIN_TOKEN), None).await.expect("call");
    assert_eq!(status, 404);
}

/// The required catalog killed: every page is a 502 (or 504) with the
/// envelope, on time, never a hang; hung: 504 then 502 once the breaker
/// opens; after the restart or heal, pages are 200 again by themselves.
#[actix_rt::test]
async fn a_dead_or_hung_required_service_fails_fast_and_recovers() {
    let _serial = SERIAL.lock().await;
    let (mut lab, _dir) = lab(false).await;
    assert_eq!(page(&lab, 1).await.0, 200);

    lab.services.kill("catalog").await.expect("kill");
    let mut statuses = Vec::new();
    for id in 1..=10 {
        let (status, body, elapsed) = page(&lab, id).await;
        assert!(elapsed <= BUDGET, "{elapsed:?}");
        assert!(body["product"].is_null(), "{body}");
        assert_eq!(source(&body, "product"), "none");
        assert!(inspect(body.to_string().as_bytes(), None).is_ok(), "{body}");
        statuses.push(status);
    }
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    lab.services.restart("catalog").await.expect("restart");
    assert!(until_ok(&lab, Duration::from_secs(3)).await, "200 within backoff + 1 s");

    lab.set_fault(Service::Catalog, json!({ "hang": true })).await.expect("hang");
    let mut statuses = Vec::new();
    for id in 1..=10 {
        let (status, _, elapsed) = page(&lab, id).await;
        assert!(elapsed <= BUDGET, "hung catalog: {elapsed:?}");
        statuses.push(status);
    }
    assert_eq!(statuses[0], 504, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 502 || *s == 504), "{statuses:?}");
    assert!(statuses.contains(&502), "breaker opened: {statuses:?}");
    lab.clear_fault(Service::Catalog).await.expect("heal");
    assert!(until_ok(&lab, Duration::from_secs(3)).await, "200 within backoff + 1 s");
}

async fn until_ok(lab: &Lab, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if page(lab, 1).await.0 == 200 {
            return true;
        }
        sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The experiment itself, short: one seeded round under load, and its own
/// assertions pass (what `cargo run --example chaos` checks).
#[actix_rt::test]
async fn a_short_experiment_passes_its_own_assertions() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let duration = Duration::from_secs(15);
    // The first seed whose plan kills a service in so short a run.
    let seed = (0..10_000)
        .find(|seed| plan(*seed, duration).first().is_some_and(|r| r.fault == Fault::Kill))
        .expect("some seed kills a service");
    let options = Options {
        exe: EXE.into(),
        out: dir.path().to_owned(),
        duration,
        seed,
        clients: 16,
        rate: 60.0,
        workers: 2,
        broker: None,
    };
    let outcome = experiment::run(options, &mut |_| {}).await.expect("experiment runs");
    assert!(outcome.events.iter().any(|e| e.what == "restart"), "{:?}", outcome.events);
    let report = report::analyse(&outcome);
    assert!(report.passed(), "{}", report.text);
    let svg = mosaic::chaos::svg::render(&outcome, &report);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

/// The broker every AMQP chaos test uses.
const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Inventory behind RabbitMQ, under load: its process SIGKILLed, then
/// restarted; then the gateway's broker connection cut, then restored.
/// Every page all along is a 200, honestly labelled, within the deadline;
/// the inventory section is `none` while it is down and live again after
/// each heal, without restarting the gateway.
#[actix_rt::test]
async fn amqp_inventory_killed_and_broker_cut_still_give_whole_pages_on_time() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let lab = Lab::start_with_broker(EXE.as_ref(), dir.path(), false, 2, None, Some(BROKER))
        .await
        .expect("lab with a broker starts");
    let mut lab = lab;
    assert!(
        until_live(&lab, "inventory", Duration::from_secs(10)).await,
        "inventory live through the broker"
    );
    let epoch = Instant::now();
    let load = load::start(lab.gateway.addr, &moderate(10), epoch);
    let inventory = section_index(Service::Inventory);
    sleep(Duration::from_millis(500)).await;

    lab.services.kill("inventory").await.expect("kill");
    let killed = epoch.elapsed();
    sleep(Duration::from_secs(2)).await;
    let dead: Vec<Sample> = load
        .snapshot()
        .into_iter()
        .filter(|s| s.at >= killed + Duration::from_millis(100))
        .collect();
    lab.services.restart("inventory").await.expect("restart");
    assert!(
        until_live(&lab, "inventory", Duration::from_secs(5)).await,
        "live again after the restart"
    );

    lab.cut_broker().expect("cut");
    let cut = epoch.elapsed();
    sleep(Duration::from_secs(2)).await;
    let cut_off: Vec<Sample> =
        load.snapshot().into_iter().filter(|s| s.at >= cut + Duration::from_millis(100)).collect();
    lab.restore_broker().expect("restore");
    let restored = Instant::now();
    assert!(
        until_live(&lab, "inventory", Duration::from_secs(8)).await,
        "the gateway reconnects by itself"
    );
    let reconnect = restored.elapsed();
    let samples = load.finish().await;

    assert_whole_and_on_time(&samples, "inventory killed, broker cut");
    for (what, window) in [("inventory killed", &dead), ("broker cut", &cut_off)] {
        let during: Vec<&Sample> =
            window.iter().filter(|s| s.at < cut.max(killed) + Duration::from_secs(2)).collect();
        assert!(during.len() >= 20, "{what}: {} samples", during.len());
        for s in during {
            assert_eq!(s.sources[inventory], Source::None, "{what}: {s:?}");
        }
    }
    assert!(reconnect < Duration::from_secs(8), "reconnected in {reconnect:?}");
}

/// A short experiment with a broker: its plan cuts the broker connection,
/// and the run passes its own assertions.
#[actix_rt::test]
async fn a_short_broker_experiment_passes_its_own_assertions() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let duration = Duration::from_secs(15);
    let seed = (0..10_000)
        .find(|seed| {
            plan_with(*seed, duration, true).first().is_some_and(|r| r.fault == Fault::BrokerCut)
        })
        .expect("some seed cuts the broker first");
    let options = Options {
        exe: EXE.into(),
        out: dir.path().to_owned(),
        duration,
        seed,
        clients: 16,
        rate: 60.0,
        workers: 2,
        broker: Some(BROKER.into()),
    };
    let outcome = experiment::run(options, &mut |_| {}).await.expect("experiment runs");
    let whats: Vec<&str> = outcome.events.iter().map(|e| e.what).collect();
    assert!(whats.contains(&"broker-cut") && whats.contains(&"broker-back"), "{whats:?}");
    let report = report::analyse(&outcome);
    assert!(report.passed(), "{}", report.text);
}
