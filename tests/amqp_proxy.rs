//! Proxy routes whose backend is behind the real RabbitMQ (SPEC.md,
//! "Messaging backends"): request/reply carrying the whole request, and
//! one-way publishing with publisher confirms, never published twice.

mod support;

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use support::amqp::{amqp_section, connect, declare, unique, AmqpAnswer, AmqpService};
use support::*;

/// `/api/...` proxied to a backend on `amqp` (an inline table).
fn proxied(amqp: &str, extra: &str) -> String {
    proxied_at(&amqp_section(), amqp, extra)
}

/// [`proxied`] with its own `[amqp]`.
fn proxied_at(broker: &str, amqp: &str, extra: &str) -> String {
    format!(
        "{LISTEN_ANY}{broker}
[backends.svc]
amqp = {amqp}
timeout = \"300ms\"
retries = 3
{extra}

[[proxy]]
prefix = \"/api\"
backend = \"svc\"
rewrite = \"/v1\"
"
    )
}

#[actix_rt::test]
async fn a_proxied_request_goes_whole_in_the_message_and_the_reply_is_the_response() {
    let queue = unique("rpc");
    let service = AmqpService::start(&queue, AmqpAnswer::status(201, r#"{"created":true}"#));
    let gw = start_ready_gateway(&proxied(&format!("{{ queue = \"{queue}\" }}"), "")).await;
    let answer = request(
        gw.addr,
        "POST",
        "/api/items?x=1",
        &[("content-type", "application/json"), ("x-custom", "yes"), ("connection", "keep-alive")],
        Some(br#"{"sku":"a"}"#.to_vec()),
    )
    .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.json(), serde_json::json!({"created": true}));
    let request_id = answer.header("x-request-id").unwrap().to_string();
    let received = &service.requests()[0];
    assert_eq!(received.header("method"), Some("POST"));
    assert_eq!(received.header("path"), Some("/v1/items?x=1"), "rewritten, query kept");
    assert_eq!(received.header("x-custom"), Some("yes"), "end-to-end headers go along");
    assert_eq!(received.header("connection"), None, "hop-by-hop ones do not");
    assert_eq!(received.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(received.message_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
    assert_eq!(received.body, br#"{"sku":"a"}"#);
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_post_is_never_published_twice_even_when_its_reply_times_out() {
    let queue = unique("once");
    let service = AmqpService::start(&queue, AmqpAnswer::Silent);
    let gw = start_ready_gateway(&proxied(&format!("{{ queue = \"{queue}\" }}"), "")).await;
    let answer = request(gw.addr, "POST", "/api/orders", &[], Some(b"{}".to_vec())).await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"], "timeout");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(service.calls(), 1, "retries = 3, yet one message for one POST");
    // A 5xx reply to a POST is the answer, not a reason to publish again.
    let queue = unique("once");
    let service = AmqpService::start(&queue, AmqpAnswer::status(503, r#"{"busy":true}"#));
    let gw2 = start_ready_gateway(&proxied(&format!("{{ queue = \"{queue}\" }}"), "")).await;
    let answer = request(gw2.addr, "POST", "/api/orders", &[], Some(b"{}".to_vec())).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json(), serde_json::json!({"busy": true}));
    assert_eq!(service.calls(), 1);
    gw.stop(false).await;
    gw2.stop(false).await;
}

#[actix_rt::test]
async fn a_one_way_publish_is_persistent_and_answered_202_once_confirmed() {
    let queue = unique("oneway");
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    let target = format!("{{ queue = \"{queue}\", reply = false }}");
    let gw = start_ready_gateway(&proxied(&target, "")).await;
    let answer = request(
        gw.addr,
        "POST",
        "/api/events",
        &[("content-type", "application/json")],
        Some(br#"{"event":"placed"}"#.to_vec()),
    )
    .await;
    assert_eq!(answer.status, 202);
    let request_id = answer.header("x-request-id").unwrap().to_string();
    assert_eq!(answer.json(), serde_json::json!({"accepted": true, "message_id": request_id}));
    // Confirmed means enqueued: the message is there the moment 202 is.
    assert_eq!(declare(&channel, &queue).await, 1, "one message, already in the queue");
    let message = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the message");
    assert_eq!(message.delivery.data, br#"{"event":"placed"}"#);
    let properties = &message.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(properties.message_id().as_ref().map(|m| m.as_str()), Some(request_id.as_str()));
    assert!(properties.reply_to().is_none(), "nobody waits for a reply");
    let path = properties.headers().as_ref().and_then(|h| h.inner().get("path").cloned());
    assert!(matches!(path, Some(AMQPValue::LongString(p)) if p.as_bytes() == b"/v1/events"));
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_one_way_publish_nobody_takes_or_the_broker_refuses_is_503_never_repeated() {
    let unbound = unique("unbound");
    let gw =
        start_ready_gateway(&proxied(&format!("{{ queue = \"{unbound}\", reply = false }}"), ""))
            .await;
    let answer = request(gw.addr, "POST", "/api/events", &[], Some(b"{}".to_vec())).await;
    assert_eq!((answer.status, answer.json()["error"].as_str()), (503, Some("no_instances")));
    gw.stop(false).await;
    // A queue that rejects every publish: the broker nacks.
    let full = unique("full");
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(0));
    arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let options = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(full.as_str().into(), options, arguments).await.unwrap();
    let gw = start_ready_gateway(&proxied(&format!("{{ queue = \"{full}\", reply = false }}"), ""))
        .await;
    let answer = request(gw.addr, "POST", "/api/events", &[], Some(b"{}".to_vec())).await;
    assert_eq!((answer.status, answer.json()["error"].as_str()), (503, Some("nacked")));
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_header_name_amqp_cannot_carry_is_refused_before_anything_is_published() {
    let queue = unique("longname");
    let service = AmqpService::start(&queue, AmqpAnswer::ok("{}"));
    let gw = start_ready_gateway(&proxied(&format!("{{ queue = \"{queue}\" }}"), "")).await;
    let name = "x".repeat(300);
    let answer = request(gw.addr, "GET", "/api/a", &[(name.as_str(), "v")], None).await;
    assert_eq!(answer.status, 431);
    let ok = request(gw.addr, "GET", "/api/a", &[], None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(service.calls(), 1, "only the good request was published");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_one_way_publish_without_a_confirm_in_time_is_504() {
    let relay = support::amqp::BrokerRelay::start().await;
    let queue = unique("noconfirm");
    let connection = connect().await;
    let channel = connection.create_channel().await.unwrap();
    declare(&channel, &queue).await;
    let broker = support::amqp::amqp_section_at(&relay.url);
    let gw = start_ready_gateway(&proxied_at(
        &broker,
        &format!("{{ queue = \"{queue}\", reply = false }}"),
        "",
    ))
    .await;
    relay.freeze();
    let started = std::time::Instant::now();
    let answer = request(gw.addr, "POST", "/api/events", &[], Some(b"{}".to_vec())).await;
    assert_eq!((answer.status, answer.json()["error"].as_str()), (504, Some("timeout")));
    assert!(started.elapsed() < Duration::from_millis(1000), "bounded by the timeout");
    relay.restore();
    gw.stop(false).await;
}

#[actix_rt::test]
async fn a_client_header_named_path_or_method_never_passes_for_mosaics() {
    let queue = unique("spoof");
    let service = AmqpService::start(&queue, AmqpAnswer::ok("{}"));
    let gw = start_ready_gateway(&proxied(&format!("{{ queue = \"{queue}\" }}"), "")).await;
    let raw_request =
        b"GET /api/items HTTP/1.1\r\nHost: gw\r\nPath: /admin/drop\r\nMethod: DELETE\r\n\
Accept: a/b\r\nAccept: c/d\r\nConnection: close\r\n\r\n";
    let answer = raw(gw.addr, raw_request, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let received = &service.requests()[0];
    assert_eq!(received.header("path"), Some("/v1/items"), "the route's path, not the client's");
    assert_eq!(received.header("method"), Some("GET"));
    assert_eq!(received.header("accept"), Some("a/b, c/d"), "repeats joined, none lost");
    gw.stop(false).await;
}
