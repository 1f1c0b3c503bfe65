//! The per-backend defences: breaker, bulkhead, shared calls, retries, and
//! the supervised actor that owns each backend.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

/// A page with one required section on `catalog` and one optional on `reviews`.
fn config(catalog: &[String], reviews: &[String], reviews_extra: &str, deadline: &str) -> String {
    format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"200ms\"
retries = 0
{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"{deadline}\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"reviews\", backend = \"reviews\", path = \"/reviews/{{id}}\" }},
]
",
        backend("catalog", catalog, ""),
        backend("reviews", reviews, reviews_extra),
    )
}

/// The breaker opens after `threshold` failures in a row, then no call
/// reaches the service (sections fall back with `circuit_open` at once);
/// after the backoff one trial call goes through and, on success, it closes.
#[actix_rt::test]
async fn breaker_opens_after_threshold_and_closes_after_backoff() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::Json(500, "{}".into()));
    let extra = "breaker = { threshold = 3, backoff = { kind = \"constant\", delay = \"400ms\" } }";
    let gw = start_gateway(&config(&[catalog.address()], &[reviews.address()], extra, "1s")).await;

    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/products/1").await.meta("reviews")["error"], "status_5xx");
    }
    assert_eq!(reviews.calls(), 3);
    for _ in 0..5 {
        let page = get(gw.addr, "/products/1").await;
        assert_eq!(page.status, 200);
        assert_eq!(page.meta("reviews")["error"], "circuit_open");
    }
    assert_eq!(reviews.calls(), 3, "an open breaker sends no call");

    reviews.set(Reply::ok(r#"{"rating":4.5}"#));
    tokio::time::sleep(Duration::from_millis(450)).await;
    let page = get(gw.addr, "/products/1").await;
    assert_eq!(page.meta("reviews")["source"], "live", "trial call after the backoff");
    assert_eq!(reviews.calls(), 4);
    let page = get(gw.addr, "/products/1").await;
    assert_eq!(page.meta("reviews")["source"], "live", "closed again");
    assert_eq!(reviews.calls(), 5);
    gw.stop(false).await;
}

/// 4xx answers are answers: however many, they never open the breaker.
#[actix_rt::test]
async fn client_errors_do_not_open_the_breaker() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::Json(404, "{}".into()));
    let extra = "breaker = { threshold = 2, backoff = { kind = \"constant\", delay = \"10s\" } }";
    let gw = start_gateway(&config(&[catalog.address()], &[reviews.address()], extra, "1s")).await;
    for _ in 0..6 {
        assert_eq!(get(gw.addr, "/products/1").await.meta("reviews")["status"], 404);
    }
    assert_eq!(reviews.calls(), 6);
    gw.stop(false).await;
}

/// More calls in flight than `max_in_flight` are rejected at once, without
/// waiting and without reaching the service.
#[actix_rt::test]
async fn bulkhead_rejects_excess_calls_at_once() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews =
        FakeBackend::start(Reply::Delay(Duration::from_millis(300), Box::new(Reply::ok("{}"))));
    let extra = "max_in_flight = 2\ntimeout = \"1s\"";
    let gw = start_gateway(&config(&[catalog.address()], &[reviews.address()], extra, "2s")).await;
    let pages = join_all(
        (0..5).map(|i| get(gw.addr, if i % 2 == 0 { "/products/1" } else { "/products/2" })),
    )
    .await;
    let rejected: Vec<_> =
        pages.iter().filter(|p| p.meta("reviews")["error"] == "rejected").collect();
    let live = pages.iter().filter(|p| p.meta("reviews")["source"] == "live").count();
    assert_eq!(live, 2, "two calls fit in the bulkhead");
    assert_eq!(rejected.len(), 3);
    for page in rejected {
        assert!(page.meta("reviews")["ms"].as_u64().unwrap_or(999) < 100, "rejected at once");
    }
    assert_eq!(reviews.calls(), 2);
    gw.stop(false).await;
}

/// Twenty concurrent requests for the same cold cacheable key make one call.
#[actix_rt::test]
async fn concurrent_cold_requests_share_one_call() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::Delay(
        Duration::from_millis(200),
        Box::new(Reply::ok(r#"{"rating":5}"#)),
    ));
    let extra = "cache = { ttl = \"10s\" }\ntimeout = \"1s\"";
    let toml = config(&[catalog.address()], &[reviews.address()], extra, "2s")
        .replace("workers = 1", "workers = 2");
    let gw = start_gateway(&toml).await;
    let pages = join_all((0..20).map(|_| get(gw.addr, "/products/7"))).await;
    for page in &pages {
        assert_eq!(page.meta("reviews")["source"], "live");
        assert_eq!(page.json()["reviews"]["rating"], 5);
    }
    assert_eq!(reviews.calls(), 1, "one shared call for twenty requests");
    assert_eq!(catalog.calls(), 20, "non-cached backends are called per request");
    let again = get(gw.addr, "/products/7").await;
    assert_eq!(again.meta("reviews")["source"], "cache");
    assert_eq!(reviews.calls(), 1);
    gw.stop(false).await;
}

/// The cache key includes forwarded headers: one user's cart is never
/// served to another.
#[actix_rt::test]
async fn cache_key_includes_forwarded_headers() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let cart = FakeBackend::scripted(|req| {
        Reply::Json(
            200,
            format!("{{\"user\":\"{}\"}}", req.header("authorization").unwrap_or("anon")),
        )
    });
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/p/{{id}}\"
deadline = \"1s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"cart\", backend = \"cart\", path = \"/cart\", forward_headers = [\"authorization\"] }},
]
",
        backend("catalog", &[catalog.address()], ""),
        backend("cart", &[cart.address()], "cache = { ttl = \"10s\" }"),
    );
    let gw = start_gateway(&toml).await;
    let alice = request(gw.addr, "GET", "/p/1", &[("authorization", "alice")], None).await;
    let bob = request(gw.addr, "GET", "/p/1", &[("authorization", "bob")], None).await;
    let alice_again = request(gw.addr, "GET", "/p/1", &[("authorization", "alice")], None).await;
    assert_eq!(alice.json()["cart"]["user"], "alice");
    assert_eq!(bob.json()["cart"]["user"], "bob");
    assert_eq!(alice_again.json()["cart"]["user"], "alice");
    assert_eq!(alice_again.meta("cart")["source"], "cache");
    assert_eq!(cart.calls(), 2);
    gw.stop(false).await;
}

/// A GET that fails with connect, timeout or 5xx is retried once on another
/// instance; every attempt counts, and the page is live.
#[actix_rt::test]
async fn failed_get_is_retried_on_another_instance() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let dead = FakeBackend::start(Reply::ok("{}")).kill();
    let broken = FakeBackend::start(Reply::Json(503, "{}".into()));
    let good = FakeBackend::start(Reply::ok(r#"{"rating":3}"#));
    let instances = [dead.to_string(), broken.address(), good.address()];
    let gw = start_gateway(&config(&[catalog.address()], &instances, "retries = 2", "1s")).await;
    for _ in 0..6 {
        let page = get(gw.addr, "/products/1").await;
        assert_eq!(page.meta("reviews")["source"], "live", "{}", page.json());
    }
    assert!(broken.calls() >= 1, "the 5xx instance was tried");
    assert_eq!(good.calls(), 6, "every page ended on the good instance");
    gw.stop(false).await;
}

/// A single instance is never retried (there is no other instance).
#[actix_rt::test]
async fn single_instance_is_not_retried() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let broken = FakeBackend::start(Reply::Json(503, "{}".into()));
    let gw = start_gateway(&config(&[catalog.address()], &[broken.address()], "retries = 3", "1s"))
        .await;
    let page = get(gw.addr, "/products/1").await;
    assert_eq!(page.meta("reviews")["error"], "status_5xx");
    assert_eq!(broken.calls(), 1);
    gw.stop(false).await;
}

/// A backend actor whose handler panics is restarted by its supervisor with
/// its configuration; pages keep being served throughout, and the restarted
/// actor handles messages again.
#[actix_rt::test]
async fn panicking_actor_is_restarted_and_pages_keep_flowing() {
    use mosaic::backend::actor::{ActorFailed, Crash, GetStatus, SetInstances};
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::ok(r#"{"rating":4}"#));
    let gw = start_gateway(&config(&[catalog.address()], &[reviews.address()], "", "1s")).await;
    let handle = gw.gateway().backend("reviews").expect("reviews");

    // Replace the instances, then crash: the restart puts the configured list back.
    handle.actor.send(SetInstances(vec![])).await.expect("mailbox").expect("ok");
    assert_eq!(get(gw.addr, "/products/1").await.meta("reviews")["error"], "no_instances");
    let crashed = handle.actor.send(Crash).await.expect("the panicking message is answered");
    assert_eq!(crashed, Err(ActorFailed));

    let mut restarted = false;
    for _ in 0..50 {
        if handle.restarts.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            restarted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarted, "supervisor restarted the actor");
    let status = handle.actor.send(GetStatus).await.expect("mailbox open").expect("handled");
    assert_eq!(status.instances, vec![reviews.address()], "configuration re-applied");
    let pages = join_all((0..10).map(|_| get(gw.addr, "/products/1"))).await;
    for page in pages {
        assert_eq!(page.status, 200);
        assert_eq!(page.meta("reviews")["source"], "live");
    }
    gw.stop(false).await;
}

/// `X-Request-Id` is kept when sent, made when not, forwarded to every
/// service and echoed back.
#[actix_rt::test]
async fn request_id_is_kept_forwarded_and_echoed() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&config(&[catalog.address()], &[reviews.address()], "", "1s")).await;
    let page = request(gw.addr, "GET", "/products/1", &[("x-request-id", "req-abc-1")], None).await;
    assert_eq!(page.header("x-request-id"), Some("req-abc-1"));
    assert_eq!(catalog.requests()[0].header("x-request-id"), Some("req-abc-1"));
    assert_eq!(reviews.requests()[0].header("x-request-id"), Some("req-abc-1"));

    let page = get(gw.addr, "/products/1").await;
    let made = page.header("x-request-id").expect("generated").to_string();
    assert_eq!(made.len(), 32);
    assert_eq!(catalog.requests()[1].header("x-request-id"), Some(made.as_str()));
    let missing = get(gw.addr, "/nope").await;
    assert!(missing.header("x-request-id").is_some(), "even a 404 carries an id");
    gw.stop(false).await;
}

/// A shared call is not cut short by the deadline of the request that
/// started it: a concurrent request with more time gets the live answer.
#[actix_rt::test]
async fn shared_call_outlives_a_short_leader_deadline() {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::Delay(
        Duration::from_millis(300),
        Box::new(Reply::ok(r#"{"rating":2}"#)),
    ));
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/quick/{{id}}\"
deadline = \"100ms\"
sections = [ {{ name = \"reviews\", backend = \"reviews\", path = \"/reviews/{{id}}\" }} ]

[[routes]]
path = \"/patient/{{id}}\"
deadline = \"2s\"
sections = [ {{ name = \"reviews\", backend = \"reviews\", path = \"/reviews/{{id}}\" }} ]
",
        backend("catalog", &[catalog.address()], ""),
        backend("reviews", &[reviews.address()], "cache = { ttl = \"10s\" }\ntimeout = \"1s\""),
    );
    let gw = start_gateway(&toml).await;
    let addr = gw.addr;
    let quick = actix_rt::spawn(async move { get(addr, "/quick/5").await });
    // The quick page's call is at the service: the patient page joins it.
    assert!(eventually(Duration::from_secs(2), || reviews.calls() == 1).await);
    let patient = get(gw.addr, "/patient/5").await;
    let quick = quick.await.expect("quick page");
    assert_eq!(quick.meta("reviews")["error"], "deadline");
    assert_eq!(patient.meta("reviews")["source"], "live", "{}", patient.json());
    assert_eq!(patient.json()["reviews"]["rating"], 2);
    assert_eq!(reviews.calls(), 1, "one shared call");
    gw.stop(false).await;
}
