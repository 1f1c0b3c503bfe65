//! Composed sections served by services behind the real RabbitMQ
//! (SPEC.md, "Messaging backends"): the page, each error kind, and every
//! resilience rule of an HTTP backend, unchanged.

mod support;

use std::time::Duration;

use support::amqp::{amqp_section, unique, AmqpAnswer, AmqpService};
use support::*;

/// A page with one AMQP section (`inventory`, on `queue`) and one HTTP one.
fn shop(queue: &str, product: &str, inventory_extra: &str) -> String {
    shop_at(&amqp_section(), queue, product, inventory_extra)
}

/// [`shop`] with its own `[amqp]`.
fn shop_at(amqp: &str, queue: &str, product: &str, inventory_extra: &str) -> String {
    format!(
        "{LISTEN_ANY}{amqp}
[defaults]
timeout = \"200ms\"
retries = 0
{}
[backends.inventory]
amqp = {{ queue = \"{queue}\" }}
{inventory_extra}

[[routes]]
path = \"/p/{{id}}\"
deadline = \"1s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"inventory\", backend = \"inventory\", path = \"/inventory/{{id}}?w=1\" }},
]
",
        backend("catalog", &[product.to_string()], ""),
    )
}

/// The inventory section's meta and body from one page of `/p/1`.
async fn inventory(
    gw: &mosaic::gateway::RunningGateway,
) -> (u16, serde_json::Value, serde_json::Value) {
    let page = get(gw.addr, "/p/1").await;
    (page.status, page.meta("inventory"), page.json()["inventory"].clone())
}

/// A counter's value in the admin `/metrics` text (0 when absent).
async fn metric(gw: &mosaic::gateway::RunningGateway, line_start: &str) -> f64 {
    let text = String::from_utf8(get(gw.admin_addr, "/metrics").await.body).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[actix_rt::test]
async fn an_amqp_section_is_live_and_carries_the_request() {
    let queue = unique("live");
    let service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":7}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let gw = start_ready_gateway(&shop(&queue, &product.address(), "")).await;
    let page = get(gw.addr, "/p/42").await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert_eq!(page.json()["inventory"], serde_json::json!({"stock": 7}));
    assert_eq!(page.meta("inventory")["source"], "live");
    assert_eq!(page.json()["_mosaic"]["complete"], true);
    let request = &service.requests()[0];
    assert_eq!(request.header("method"), Some("GET"));
    assert_eq!(request.header("path"), Some("/inventory/42?w=1"));
    let request_id = request.header("x-request-id").expect("x-request-id header");
    assert_eq!(request.message_id.as_deref(), Some(request_id));
    assert_eq!(page.header("x-request-id"), Some(request_id));
    assert!(request.header("traceparent").is_some_and(|t| t.starts_with("00-")));
    let reply_to = request.reply_to.as_deref().unwrap_or_default();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "direct reply-to: {reply_to}");
    let expiration: u64 = request.expiration.as_deref().and_then(|e| e.parse().ok()).unwrap();
    assert!((1..=200).contains(&expiration), "expiration = the attempt's time left: {expiration}");
    let status = admin(gw.admin_addr, "GET", "/admin/backends", None, None).await.json();
    let inventory = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "inventory")
        .cloned()
        .unwrap();
    assert_eq!(
        inventory["instances"],
        serde_json::json!(["127.0.0.1:5672/%2f"]),
        "the broker, no credentials"
    );
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_page_of_one_amqp_and_six_http_sections_is_complete() {
    let queue = unique("seven");
    let _service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":3}"#));
    let fakes: Vec<FakeBackend> =
        (0..6).map(|i| FakeBackend::start(Reply::ok(&format!("{{\"n\":{i}}}")))).collect();
    let mut toml = format!(
        "{LISTEN_ANY}{}\n[backends.inventory]\namqp = {{ queue = \"{queue}\" }}\n",
        amqp_section()
    );
    let mut sections =
        vec!["{ name = \"inventory\", backend = \"inventory\", path = \"/inventory/{id}\" }"
            .to_string()];
    for (i, fake) in fakes.iter().enumerate() {
        toml += &backend(&format!("s{i}"), &[fake.address()], "");
        sections.push(format!("{{ name = \"s{i}\", backend = \"s{i}\", path = \"/s/{{id}}\" }}"));
    }
    toml += &format!(
        "\n[[routes]]\npath = \"/p/{{id}}\"\ndeadline = \"1s\"\nsections = [{}]\n",
        sections.join(", ")
    );
    let gw = start_ready_gateway(&toml).await;
    let page = get(gw.addr, "/p/9").await;
    assert_eq!(page.status, 200);
    let json = page.json();
    assert_eq!(json["_mosaic"]["complete"], true, "{json}");
    assert_eq!(json["inventory"]["stock"], 3);
    for i in 0..6 {
        assert_eq!(json[format!("s{i}")]["n"], i);
    }
    gw.stop(false).await;
}

#[actix_rt::test]
async fn each_error_kind_of_an_amqp_section() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let cases = [
        ("timeout", Some(AmqpAnswer::Silent)),
        ("status_5xx", Some(AmqpAnswer::status(503, "{}"))),
        ("invalid_body", Some(AmqpAnswer::status(200, "<html>"))),
        ("invalid_body", Some(AmqpAnswer::status(700, "{}"))),
        ("no_instances", None),
    ];
    for (error, answer) in cases {
        let queue = unique("errors");
        let _service = answer.map(|answer| AmqpService::start(&queue, answer));
        let gw = start_ready_gateway(&shop(&queue, &product.address(), "")).await;
        let started = std::time::Instant::now();
        let (status, meta, body) = inventory(&gw).await;
        assert_eq!((status, meta["error"].as_str()), (200, Some(error)), "{meta}");
        assert_eq!(meta["source"], "none");
        assert!(body.is_null());
        if error == "no_instances" {
            assert!(
                started.elapsed() < Duration::from_millis(150),
                "returned at once, not a timeout"
            );
        }
        gw.stop(false).await;
    }
    // A 4xx is an answer: live, no body, no error.
    let queue = unique("errors");
    let _service = AmqpService::start(&queue, AmqpAnswer::status(404, "{}"));
    let gw = start_ready_gateway(&shop(&queue, &product.address(), "")).await;
    let (_, meta, body) = inventory(&gw).await;
    assert_eq!((meta["source"].as_str(), meta["status"].as_u64()), (Some("live"), Some(404)));
    assert!(body.is_null() && meta["error"].is_null(), "{meta}");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_cut_broker_connection_is_connect_at_once_and_calls_work_again_after() {
    let relay = support::amqp::BrokerRelay::start().await;
    let queue = unique("cut");
    let _service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":1}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let toml = shop_at(
        &support::amqp::amqp_section_at(&relay.url),
        &queue,
        &product.address(),
        "breaker = { threshold = 1000 }",
    );
    let gw = start_ready_gateway(&toml).await;
    assert_eq!(inventory(&gw).await.1["source"], "live");
    let port = relay.port();
    let up = format!("mosaic_amqp_up{{broker=\"127.0.0.1:{port}/%2f\"}}");
    assert_eq!(metric(&gw, &up).await, 1.0);
    relay.cut();
    // While it is down: every page within its deadline, the section `connect`.
    let mut saw_connect = false;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let (status, meta, _) = inventory(&gw).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_millis(1000), "within the deadline");
        if meta["error"] == "connect" {
            assert!(started.elapsed() < Duration::from_millis(100), "connect fails at once");
            saw_connect = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_connect, "the cut is seen as connect");
    assert_eq!(
        get(gw.admin_addr, "/readyz").await.status,
        503,
        "not ready while the broker is down"
    );
    assert_eq!(metric(&gw, &up).await, 0.0, "the metric says the broker is down");
    relay.restore();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, meta, _) = inventory(&gw).await;
        assert_eq!(status, 200);
        if meta["source"] == "live" {
            break;
        }
        assert!(std::time::Instant::now() < until, "calls work again without a restart: {meta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(gw.admin_addr, "/readyz").await.status, 200);
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_dead_amqp_service_is_served_stale_from_cache() {
    let queue = unique("stale");
    let service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":5}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let cache = "cache = { ttl = \"100ms\", stale_if_error = \"1m\" }";
    let gw = start_ready_gateway(&shop(&queue, &product.address(), cache)).await;
    assert_eq!(inventory(&gw).await.1["source"], "live");
    service.kill();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (status, meta, body) = inventory(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(
        (meta["source"].as_str(), meta["error"].as_str()),
        (Some("stale"), Some("no_instances")),
        "{meta}"
    );
    assert_eq!(body["stock"], 5);
    gw.stop(false).await;
}

#[actix_rt::test]
async fn an_open_breaker_stops_publishing() {
    let queue = unique("breaker");
    let service = AmqpService::start(&queue, AmqpAnswer::status(500, "{}"));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let breaker = "breaker = { threshold = 3, backoff = { kind = \"constant\", delay = \"30s\" } }";
    let gw = start_ready_gateway(&shop(&queue, &product.address(), breaker)).await;
    for _ in 0..3 {
        assert_eq!(inventory(&gw).await.1["error"], "status_5xx");
    }
    for _ in 0..5 {
        assert_eq!(inventory(&gw).await.1["error"], "circuit_open");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(service.calls(), 3, "nothing published while the breaker is open");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_late_reply_is_dropped_counted_and_never_answers_another_call() {
    let queue = unique("late");
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    // The first request is answered after its timeout (200 ms), while the
    // second one waits for its own answer.
    let service = AmqpService::scripted(&queue, move |_| {
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => AmqpAnswer::after(Duration::from_millis(300), r#"{"call":1}"#),
            _ => AmqpAnswer::after(Duration::from_millis(150), r#"{"call":2}"#),
        }
    });
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    // Its own broker address, so its own counter (tests share a process).
    let relay = support::amqp::BrokerRelay::start().await;
    let amqp = support::amqp::amqp_section_at(&relay.url);
    let gw = start_ready_gateway(&shop_at(&amqp, &queue, &product.address(), "")).await;
    let port = relay.port();
    let late = format!("mosaic_amqp_late_replies_total{{broker=\"127.0.0.1:{port}/%2f\"}}");
    let before = metric(&gw, &late).await;
    let (_, first, _) = inventory(&gw).await;
    assert_eq!(first["error"], "timeout");
    let (_, second, body) = inventory(&gw).await;
    assert_eq!(second["source"], "live", "{second}");
    assert_eq!(body["call"], 2, "the late reply to the first call never answers the second");
    assert!(eventually(Duration::from_secs(2), || service.calls() == 2).await);
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while metric(&gw, &late).await < before + 1.0 {
        assert!(std::time::Instant::now() < until, "the late reply is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop(false).await;
}

#[actix_rt::test]
async fn twenty_concurrent_cold_requests_publish_one_message() {
    let queue = unique("shared");
    let service =
        AmqpService::start(&queue, AmqpAnswer::after(Duration::from_millis(100), r#"{"stock":2}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let cache = "cache = { ttl = \"10s\" }";
    let gw = start_ready_gateway(&shop(&queue, &product.address(), cache)).await;
    let pages = futures_util::future::join_all((0..20).map(|_| inventory(&gw))).await;
    for (status, meta, body) in pages {
        assert_eq!(status, 200);
        assert_eq!(body["stock"], 2, "{meta}");
    }
    assert_eq!(service.calls(), 1, "one call shared by the twenty");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_timed_out_get_is_retried_with_a_new_correlation_id() {
    let queue = unique("retry");
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let service = AmqpService::scripted(&queue, move |_| {
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => AmqpAnswer::Silent,
            _ => AmqpAnswer::ok(r#"{"stock":4}"#),
        }
    });
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let gw =
        start_ready_gateway(&shop(&queue, &product.address(), "timeout = \"100ms\"\nretries = 1"))
            .await;
    let (_, meta, body) = inventory(&gw).await;
    assert_eq!(
        (meta["source"].as_str(), body["stock"].as_u64()),
        (Some("live"), Some(4)),
        "{meta}"
    );
    let ids: Vec<_> = service.requests().into_iter().map(|r| r.correlation_id).collect();
    assert_eq!(ids.len(), 2);
    assert_ne!(ids[0], ids[1], "each attempt has its own correlation id");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_broker_that_stops_answering_never_holds_a_page_past_its_deadline() {
    let relay = support::amqp::BrokerRelay::start().await;
    let queue = unique("frozen");
    let _service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":1}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let amqp = support::amqp::amqp_section_at(&relay.url);
    let gw = start_ready_gateway(&shop_at(&amqp, &queue, &product.address(), "")).await;
    assert_eq!(inventory(&gw).await.1["source"], "live");
    relay.freeze();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, meta, _) = inventory(&gw).await;
        assert_eq!(status, 200);
        assert_eq!(meta["error"], "timeout", "{meta}");
        assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
    }
    relay.restore();
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_reload_keeps_an_unchanged_broker_and_moves_to_a_new_one() {
    let queue = unique("reload");
    let _service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":9}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let (gw, file) = start_gateway_from_file(&shop(&queue, &product.address(), "")).await;
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while get(gw.admin_addr, "/readyz").await.status != 200 {
        assert!(std::time::Instant::now() < until, "ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(inventory(&gw).await.1["source"], "live");
    // Unchanged: the same connection goes on serving.
    let reload = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reload.status, 200, "{}", String::from_utf8_lossy(&reload.body));
    assert_eq!(inventory(&gw).await.1["source"], "live", "nothing to reconnect");
    // A new broker address: a new connection, and the old one's cut no
    // longer matters.
    let relay = support::amqp::BrokerRelay::start().await;
    let moved =
        shop_at(&support::amqp::amqp_section_at(&relay.url), &queue, &product.address(), "");
    std::fs::write(file.path(), moved).unwrap();
    let reload = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reload.status, 200, "{}", String::from_utf8_lossy(&reload.body));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, meta, body) = inventory(&gw).await;
        if meta["source"] == "live" {
            assert_eq!(body["stock"], 9);
            break;
        }
        assert!(std::time::Instant::now() < until, "live through the new broker: {meta}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.cut();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while inventory(&gw).await.1["error"] != "connect" {
        assert!(std::time::Instant::now() < until, "the page now goes through the relay");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_restarted_backend_actor_reopens_its_channel() {
    use mosaic::backend::actor::Crash;
    let queue = unique("crash");
    let _service = AmqpService::start(&queue, AmqpAnswer::ok(r#"{"stock":6}"#));
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let gw = start_ready_gateway(&shop(&queue, &product.address(), "")).await;
    assert_eq!(inventory(&gw).await.1["source"], "live");
    let handle = gw.gateway().backend("inventory").expect("backend");
    let _ = handle.actor.send(Crash).await;
    // While it restarts the old channel is not used (no call waits for
    // replies nobody reads): `connect` at once, then live on the new one.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let started = std::time::Instant::now();
        let (_, meta, _) = inventory(&gw).await;
        assert_ne!(meta["error"], "timeout", "{meta}");
        assert!(started.elapsed() < Duration::from_millis(150));
        if meta["source"] == "live"
            && handle.restarts.load(std::sync::atomic::Ordering::Relaxed) == 1
        {
            break;
        }
        assert!(std::time::Instant::now() < until, "live again after the restart: {meta}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.stop(false).await;
}
