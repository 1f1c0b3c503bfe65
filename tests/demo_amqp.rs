//! The demo inventory service over AMQP, against the real RabbitMQ on
//! 127.0.0.1:5672 (`MOSAIC_TEST_AMQP_URL` to use another): the test plays
//! the gateway with a plain lapin client (direct reply-to, mandatory
//! publishes, publisher confirms) and checks what SPEC.md's "Messaging
//! backends" asks of a service behind the broker: the same answers as over
//! HTTP, an integer `status`, the `correlation_id` back, faults as the
//! module doc of `demo::amqp` maps them, and a queue that vanishes with the
//! process.
//!
//! Each test has its own queue (pid + counter), so they run in parallel;
//! every wait is bounded, and every process is killed on drop.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer};
use mosaic::demo::{spawn_service, Service};
use serde_json::{json, Value};
use tokio::process::Child;
use tokio::time::timeout;

const EXE: &str = env!("CARGO_BIN_EXE_mosaic");
const REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Bound on any one broker step or reply we expect to come.
const WAIT: Duration = Duration::from_secs(5);

fn broker_url() -> String {
    std::env::var("MOSAIC_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A queue name no other test (or run) uses.
fn unique_queue() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("test.inventory.{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `mosaic demo-service --service inventory --amqp URL --queue Q FLAGS`,
/// started and announced (its consumer registered): the child and its HTTP port.
async fn start_amqp_inventory(queue: &str, flags: &[&str]) -> (Child, u16) {
    let url = broker_url();
    let mut args = vec!["--amqp", url.as_str(), "--queue", queue];
    args.extend_from_slice(flags);
    spawn_service(Path::new(EXE), Service::Inventory, 0, &args).await.unwrap()
}

/// The gateway's side: one channel consuming direct reply-to, with confirms.
struct Requester {
    _connection: Connection,
    channel: Channel,
    replies: Consumer,
    next_id: u32,
}

impl Requester {
    async fn connect() -> Requester {
        let uri = mosaic::config::parse_amqp_uri(&broker_url()).unwrap();
        let connect = Connection::connect_uri(uri, ConnectionProperties::default());
        let connection = timeout(WAIT, connect).await.unwrap().unwrap();
        let channel = timeout(WAIT, connection.create_channel()).await.unwrap().unwrap();
        // Direct reply-to: consume (no_ack) before the first publish, on the
        // channel that publishes.
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let replies = channel.basic_consume(
            REPLY_TO.into(),
            "replies".into(),
            options,
            FieldTable::default(),
        );
        let replies = timeout(WAIT, replies).await.unwrap().unwrap();
        timeout(WAIT, channel.confirm_select(ConfirmSelectOptions::default()))
            .await
            .unwrap()
            .unwrap();
        Requester { _connection: connection, channel, replies, next_id: 0 }
    }

    /// Publishes (mandatory, confirmed) a request to `queue`; its correlation id
    /// and the broker's confirmation.
    async fn publish(
        &mut self,
        queue: &str,
        properties: BasicProperties,
    ) -> (String, Confirmation) {
        self.next_id += 1;
        let id = format!("call-{}", self.next_id);
        let properties = properties.with_correlation_id(id.as_str().into());
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let sent = self.channel.basic_publish("".into(), queue.into(), options, b"", properties);
        let confirm = timeout(WAIT, sent).await.unwrap().unwrap();
        (id, timeout(WAIT, confirm).await.unwrap().unwrap())
    }

    /// A request for `method path` with a reply address, and its reply
    /// within `within` (`None`: none came).
    async fn call(
        &mut self,
        queue: &str,
        method: &str,
        path: &str,
        within: Duration,
    ) -> Option<Delivery> {
        let properties = request(method, path).with_reply_to(REPLY_TO.into());
        let (id, confirmation) = self.publish(queue, properties).await;
        assert!(matches!(confirmation, Confirmation::Ack(None)), "routed: {confirmation:?}");
        self.reply(&id, within).await
    }

    /// The reply carrying `correlation_id`, skipping others, within `within`.
    async fn reply(&mut self, correlation_id: &str, within: Duration) -> Option<Delivery> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.replies.next()).await.ok()??;
            let delivery = next.unwrap();
            let id = delivery.properties.correlation_id().as_ref().map(ShortString::as_str);
            if id == Some(correlation_id) {
                return Some(delivery);
            }
        }
    }
}

/// Request properties as the gateway sends them: a headers table of strings.
fn request(method: &str, path: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    for (key, value) in [("method", method), ("path", path), ("x-request-id", "req-7")] {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(LongString::from(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )),
    );
    BasicProperties::default().with_headers(headers)
}

/// The reply's integer `status` header.
fn status(reply: &Delivery) -> i64 {
    let headers = reply.properties.headers().as_ref().expect("reply headers");
    match headers.inner().get("status") {
        Some(AMQPValue::LongInt(n)) => i64::from(*n),
        other => panic!("status is not a LongInt: {other:?}"),
    }
}

fn json_body(reply: &Delivery) -> Value {
    serde_json::from_slice(&reply.data).unwrap()
}

/// `GET http://127.0.0.1:{port}{path}` (bounded): status and body bytes.
async fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let client = awc::Client::builder().timeout(WAIT).finish();
    let mut res = client.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
    (res.status().as_u16(), res.body().await.unwrap().to_vec())
}

async fn set_faults(port: u16, faults: Value) {
    let client = awc::Client::builder().timeout(WAIT).finish();
    let res = client.put(format!("http://127.0.0.1:{port}/_fault")).send_json(&faults).await;
    assert_eq!(res.unwrap().status().as_u16(), 200, "PUT /_fault {faults}");
}

/// Over AMQP the service answers what its HTTP twin answers: the same JSON
/// for /inventory/42 with status 200, JSON 404s, the request id echoed,
/// the correlation id back. The queue is there as soon as the service says
/// it listens (the first publish is routed), and as the spec wants it.
#[actix_rt::test]
async fn answers_like_the_http_service() {
    let queue = unique_queue();
    let (_amqp, _) = start_amqp_inventory(&queue, &[]).await;
    let (_http, http_port) =
        spawn_service(Path::new(EXE), Service::Inventory, 0, &[]).await.unwrap();
    let mut gateway = Requester::connect().await;

    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);
    assert_eq!(
        reply.properties.content_type().as_ref().map(ShortString::as_str),
        Some("application/json")
    );
    let (http_status, http_body) = http_get(http_port, "/inventory/42").await;
    assert_eq!((http_status, &http_body[..]), (200, &reply.data[..]), "same JSON as HTTP");
    let echoed =
        reply.properties.headers().as_ref().and_then(|h| h.inner().get("x-request-id").cloned());
    assert_eq!(echoed, Some(AMQPValue::LongString(LongString::from("req-7"))));

    for (method, path) in [("GET", "/inventory/0"), ("GET", "/inventory/abc"), ("GET", "/nope")] {
        let reply = gateway.call(&queue, method, path, WAIT).await.expect("a reply");
        assert_eq!(status(&reply), 404, "{method} {path}");
        assert!(json_body(&reply)["error"].is_string(), "{method} {path}");
        let (http_status, http_body) = http_get(http_port, path).await;
        assert_eq!((http_status, http_body), (404, reply.data.clone()), "{path} as over HTTP");
    }
    // Another method on a GET route: whatever actix-web answers over HTTP.
    let reply = gateway.call(&queue, "POST", "/inventory/42", WAIT).await.expect("a reply");
    let client = awc::Client::builder().timeout(WAIT).finish();
    let res =
        client.post(format!("http://127.0.0.1:{http_port}/inventory/42")).send().await.unwrap();
    assert_eq!(status(&reply), i64::from(res.status().as_u16()));
}

/// Requests nobody can answer (no reply_to, no correlation id) are dropped
/// and do not stop the service; one that is no request gets a 400.
#[actix_rt::test]
async fn drops_what_it_cannot_answer() {
    let queue = unique_queue();
    let (_amqp, _) = start_amqp_inventory(&queue, &[]).await;
    let mut gateway = Requester::connect().await;
    let (id, _) = gateway.publish(&queue, request("GET", "/inventory/1")).await;
    assert!(gateway.reply(&id, Duration::from_millis(300)).await.is_none());
    let no_id = request("GET", "/inventory/1").with_reply_to(REPLY_TO.into());
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let sent = gateway.channel.basic_publish("".into(), queue.as_str().into(), options, b"", no_id);
    timeout(WAIT, timeout(WAIT, sent).await.unwrap().unwrap()).await.unwrap().unwrap();

    let no_path = BasicProperties::default().with_reply_to(REPLY_TO.into());
    let (id, _) = gateway.publish(&queue, no_path).await;
    let reply = gateway.reply(&id, WAIT).await.expect("a 400");
    assert_eq!(status(&reply), 400);
    assert_eq!(json_body(&reply)["error"], "invalid_request");
    let reply = gateway.call(&queue, "GET", "/inventory/1", WAIT).await.expect("still serving");
    assert_eq!(status(&reply), 200);
}

/// `/_fault` on the HTTP port steers AMQP requests: error_rate 1 is a 503
/// (the HTTP fault's status), non_json a 200 that is not JSON, latency a
/// later reply, hang no reply at all; DELETE heals.
#[actix_rt::test]
async fn faults_apply_to_amqp_requests() {
    let queue = unique_queue();
    let (_amqp, port) = start_amqp_inventory(&queue, &[]).await;
    let mut gateway = Requester::connect().await;

    set_faults(port, json!({"error_rate": 1.0})).await;
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 503);
    assert_eq!(json_body(&reply)["error"], "injected_fault");

    set_faults(port, json!({"non_json": true})).await;
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);
    assert!(serde_json::from_slice::<Value>(&reply.data).is_err());

    set_faults(port, json!({"latency_ms": 300})).await;
    let started = Instant::now();
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());

    set_faults(port, json!({"hang": true})).await;
    assert!(gateway
        .call(&queue, "GET", "/inventory/42", Duration::from_millis(700))
        .await
        .is_none());
    let (status_code, _) = http_get(port, "/health").await;
    assert_eq!(status_code, 200, "health is never faulted");

    let client = awc::Client::builder().timeout(WAIT).finish();
    let res = client.delete(format!("http://127.0.0.1:{port}/_fault")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let started = Instant::now();
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("healed");
    assert_eq!(status(&reply), 200);
    assert!(started.elapsed() < Duration::from_millis(300), "{:?}", started.elapsed());
    let (_, stats) = http_get(port, "/_stats").await;
    let stats: Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["requests"], 5, "AMQP data requests are counted");
}

/// `--latency` on the command line applies over AMQP from the start.
#[actix_rt::test]
async fn latency_flag_delays_replies() {
    let queue = unique_queue();
    let (_amqp, _) = start_amqp_inventory(&queue, &["--latency", "250ms"]).await;
    let mut gateway = Requester::connect().await;
    let started = Instant::now();
    let reply = gateway.call(&queue, "GET", "/inventory/3", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

/// SIGKILL: the auto-delete queue goes with its consumer, so a mandatory
/// publish to it comes back returned (what the gateway maps to
/// `no_instances`), rather than waiting in a queue nobody reads.
#[actix_rt::test]
async fn killed_service_makes_publishes_come_back() {
    let queue = unique_queue();
    let (mut amqp, _) = start_amqp_inventory(&queue, &[]).await;
    let mut gateway = Requester::connect().await;
    let (_, routed) = gateway.publish(&queue, request("GET", "/inventory/1")).await;
    assert!(matches!(routed, Confirmation::Ack(None)), "{routed:?}");

    timeout(WAIT, amqp.kill()).await.unwrap().unwrap();
    // The broker notices the closed socket at once, but drops the queue on
    // its own schedule: poll, bounded.
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, confirmation) = gateway.publish(&queue, request("GET", "/inventory/1")).await;
        match confirmation {
            Confirmation::Ack(Some(returned)) => {
                assert_eq!(returned.routing_key.as_str(), queue);
                break;
            }
            other => assert!(Instant::now() < deadline, "still routed after {WAIT:?}: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Losing the consumer (here: the queue deleted under it, so the broker
/// cancels it) ends the process with a non-zero status and the reason on
/// stderr, for a supervisor to restart it.
#[actix_rt::test]
async fn exits_when_the_consumer_is_lost() {
    let queue = unique_queue();
    let (mut amqp, _) = start_amqp_inventory(&queue, &[]).await;
    let gateway = Requester::connect().await;
    let deleted =
        gateway.channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
    timeout(WAIT, deleted).await.unwrap().unwrap();
    let status = timeout(WAIT, amqp.wait()).await.expect("the service exits").unwrap();
    assert!(!status.success(), "{status}");
}

/// `DemoServices` with inventory behind the broker: inventory says which
/// queue it consumes, answers through it, and a restart (same HTTP port)
/// declares the queue again after a kill took it away.
#[actix_rt::test]
async fn demo_services_serve_inventory_through_the_broker() {
    let queue = unique_queue();
    let amqp = mosaic::demo::AmqpInventory::new(&broker_url(), &queue).unwrap();
    let mut demo = mosaic::demo::DemoServices::start_with(EXE, 0, Some(amqp)).await.unwrap();
    let infos = demo.services();
    let inventory = infos.iter().find(|s| s.name == "inventory").unwrap();
    assert_eq!(inventory.amqp_queue.as_deref(), Some(queue.as_str()));
    assert!(infos.iter().filter(|s| s.name != "inventory").all(|s| s.amqp_queue.is_none()));
    let mut gateway = Requester::connect().await;
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);

    let port = demo.port("inventory");
    demo.kill("inventory").await.unwrap();
    demo.restart("inventory").await.unwrap();
    assert_eq!(demo.port("inventory"), port, "restarted on its port");
    let reply = gateway.call(&queue, "GET", "/inventory/7", WAIT).await.expect("served again");
    assert_eq!(status(&reply), 200);

    let banner = mosaic::demo::banner(
        "127.0.0.1:8080".parse().unwrap(),
        "127.0.0.1:9901".parse().unwrap(),
        &demo,
        None,
    );
    let pid = demo.pid("inventory").unwrap();
    assert!(banner.contains("served through RabbitMQ"), "{banner}");
    assert!(banner.contains(&format!("kill -9 {pid}")), "{banner}");
    assert!(banner.contains(&format!("via RabbitMQ queue {queue}")), "{banner}");
}

/// `mosaic demo` as a process, stopped with SIGTERM (so it stops its
/// services) and SIGKILLed only if it lingers.
struct DemoProcess(std::process::Child);

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.0.id().to_string()).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

/// `mosaic demo --amqp URL --amqp-queue Q`: the banner says inventory is
/// behind RabbitMQ, the gateway's inventory backend is the broker (no HTTP
/// address), and a request published to Q is answered.
#[actix_rt::test]
async fn demo_command_serves_inventory_through_the_broker() {
    use std::io::BufRead as _;
    let queue = unique_queue();
    let child = std::process::Command::new(EXE)
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--base-port", "0"])
        .args(["--amqp", &broker_url(), "--amqp-queue", &queue])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut demo = DemoProcess(child);
    let stdout = demo.0.stdout.take().unwrap();
    // Blocking reads belong on a blocking thread; the banner ends with the
    // fault hint, the rest is drained so the demo never blocks on its pipe.
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            let done = line.starts_with("Inject faults");
            banner.push(line);
            if done {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        banner
    });
    let banner = timeout(Duration::from_secs(30), banner).await.expect("banner in time").unwrap();
    let text = banner.join("\n");
    assert!(text.contains("Inventory is served through RabbitMQ"), "{text}");
    assert!(text.contains(&format!("via RabbitMQ queue {queue}")), "{text}");
    let admin = banner
        .iter()
        .find_map(|l| {
            l.trim().strip_prefix("curl -s http://")?.strip_suffix("/admin/backends | jq")
        })
        .expect("banner names the admin listener")
        .to_owned();

    let client = awc::Client::builder().timeout(WAIT).finish();
    let mut res = client.get(format!("http://{admin}/admin/backends")).send().await.unwrap();
    let backends: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
    let inventory = backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "inventory")
        .expect("inventory backend")
        .clone();
    assert_eq!(inventory["instances"], json!(["127.0.0.1:5672/%2f"]), "{inventory}");

    let mut gateway = Requester::connect().await;
    let reply = gateway.call(&queue, "GET", "/inventory/42", WAIT).await.expect("a reply");
    assert_eq!(status(&reply), 200);

    // The page: complete, inventory live through the broker.
    let edge = banner
        .iter()
        .find_map(|l| l.trim().strip_prefix("curl -s http://")?.strip_suffix("/products/42 | jq"))
        .expect("banner names the page")
        .to_owned();
    let page = |client: awc::Client| {
        let url = format!("http://{edge}/products/42");
        async move {
            let mut res = client.get(url).send().await.unwrap();
            let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
            (res.status().as_u16(), body)
        }
    };
    let (code, body) = page(client.clone()).await;
    assert_eq!(code, 200);
    assert_eq!(body["_mosaic"]["complete"], true, "{body}");
    assert_eq!(body["_mosaic"]["sections"]["inventory"]["source"], "live");
    assert_eq!(body["inventory"]["product_id"], "42");

    // Kill the inventory process: the next page is 200, inventory labelled.
    let pid: i32 = banner
        .iter()
        .find(|l| l.trim_start().starts_with("inventory "))
        .and_then(|l| l.split("pid ").nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("banner gives inventory's pid");
    std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = page(client).await;
    assert_eq!(code, 200, "{body}");
    let inventory = &body["_mosaic"]["sections"]["inventory"];
    assert_ne!(inventory["source"], "live", "{body}");
    assert!(inventory["error"].is_string(), "labelled with its error: {inventory}");
}
