//! The demo shop's services as real processes of the `mosaic` binary, on
//! ports the OS picks: their JSON, their 404s, the cart per user, every fault
//! kind as a client sees it, and `DemoServices` killing and restarting them.
//!
//! Every process is killed on drop (the test's `Child` or `DemoServices`),
//! and every client call has a timeout, so a broken service fails a test
//! instead of hanging it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use mosaic::demo::{spawn_service, DemoServices, Service};
use serde_json::{json, Value};
use tokio::process::Child;

const EXE: &str = env!("CARGO_BIN_EXE_mosaic");

/// A client that gives up after `timeout`; a fresh one per test so no pooled
/// connection outlives a killed service.
fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder().timeout(timeout).finish()
}

/// One service on a free port, with `flags` on its command line.
async fn start(service: Service, flags: &[&str]) -> (Child, SocketAddr) {
    let (child, port) = spawn_service(Path::new(EXE), service, 0, flags).await.unwrap();
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `GET` with optional headers: status, content type, body.
async fn get(url: &str, headers: &[(&str, &str)]) -> (StatusCode, String, Vec<u8>) {
    let mut req = client(Duration::from_secs(5)).get(url);
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    let mut res = req.send().await.unwrap();
    let body = res.body().await.unwrap().to_vec();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (res.status(), content_type, body)
}

/// `GET` expecting JSON: status and parsed body.
async fn get_json(url: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let (status, content_type, body) = get(url, headers).await;
    assert_eq!(content_type, "application/json", "{url}");
    (status, serde_json::from_slice(&body).unwrap())
}

async fn set_faults(addr: SocketAddr, faults: Value) {
    let res = client(Duration::from_secs(5))
        .put(format!("http://{addr}/_fault"))
        .send_json(&faults)
        .await;
    assert_eq!(res.unwrap().status(), StatusCode::OK, "PUT /_fault {faults}");
}

/// Every service's data endpoint has the documented shape, unknown ids are
/// JSON 404s, `/health` answers, and `X-Request-Id` comes back.
#[actix_rt::test]
async fn every_service_answers_its_endpoints() {
    let demo = DemoServices::start(EXE, 0).await.unwrap();
    let url = |name: &str, path: &str| format!("http://{}{path}", demo.addr(name).unwrap());

    let (status, product) = get_json(&url("catalog", "/products/42"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(product["id"], "42");
    for key in ["name", "brand", "description", "images", "attributes", "category"] {
        assert!(!product[key].is_null(), "product.{key}");
    }
    let (_, price) = get_json(&url("pricing", "/prices/42"), &[]).await;
    assert_eq!(price["id"], "42");
    assert!(price["amount"].as_u64().unwrap() > 0);
    assert_eq!(price["currency"], "EUR");
    let (_, reviews) = get_json(&url("reviews", "/reviews/42"), &[]).await;
    assert_eq!(reviews["reviews"].as_array().unwrap().len(), 10);
    assert!(reviews["summary"]["average"].as_f64().unwrap() >= 1.0);
    let (_, stock) = get_json(&url("inventory", "/inventory/42"), &[]).await;
    assert!(stock["warehouses"].as_array().unwrap().len() > 1);
    assert!(stock["shipping"]["estimate_days"]["min"].is_u64());
    let (_, recs) = get_json(&url("recommendations", "/recommendations/42"), &[]).await;
    assert_eq!(recs["items"].as_array().unwrap().len(), 8);
    let (_, cart) = get_json(&url("cart", "/cart"), &[]).await;
    assert_eq!(cart["user"], "anonymous");
    let (_, orders) = get_json(&url("orders", "/orders?product=42"), &[]).await;
    assert_eq!(orders["orders"], json!([]), "anonymous users have no orders");

    for (name, path) in [
        ("catalog", "/products/0"),
        ("catalog", "/products/100001"),
        ("catalog", "/products/abc"),
        ("pricing", "/prices/042"),
        ("reviews", "/reviews/-1"),
        ("inventory", "/inventory/1e3"),
        ("recommendations", "/recommendations/999999999"),
        ("orders", "/orders?product=x"),
        ("catalog", "/nope"),
    ] {
        let (status, body) = get_json(&url(name, path), &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name} {path}");
        assert!(body["error"].is_string(), "{name} {path}");
    }

    for info in demo.services() {
        let (status, body) = get_json(&url(info.name, "/health"), &[]).await;
        assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})), "{}", info.name);
    }
    let mut res = client(Duration::from_secs(5))
        .get(url("catalog", "/products/7"))
        .insert_header(("x-request-id", "req-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers().get("x-request-id").unwrap(), "req-123");
    let _ = res.body().await;
}

/// Carts are per `Authorization` user: adds, lists, deletes; bad JSON is 400.
#[actix_rt::test]
async fn cart_is_per_user() {
    let (_child, addr) = start(Service::Cart, &[]).await;
    let items = format!("http://{addr}/cart/items");
    let add = |user: &'static str, body: Value| {
        let items = items.clone();
        async move {
            let mut res = client(Duration::from_secs(5))
                .post(items)
                .insert_header(("authorization", format!("Bearer {user}")))
                .send_json(&body)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&res.body().await.unwrap()).unwrap();
            (res.status(), body)
        }
    };
    let (status, cart) = add("alice", json!({"product_id": "42", "quantity": 2})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(cart["item_count"], 2);
    assert_eq!(add("alice", json!({"product_id": 7, "quantity": 1})).await.0, StatusCode::CREATED);
    assert_eq!(add("bob", json!({"product_id": "9"})).await.0, StatusCode::CREATED);
    assert_eq!(add("bob", json!({"product_id": "0"})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        add("bob", json!({"product_id": "9", "quantity": 0})).await.0,
        StatusCode::BAD_REQUEST
    );

    let bad = client(Duration::from_secs(5))
        .post(&items)
        .insert_header(("content-type", "application/json"))
        .send_body("{\"product_id\": 4")
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let (_, alice) = get_json(&items, &[("authorization", "Bearer alice")]).await;
    let ids: Vec<&str> = alice["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["product_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["42", "7"]);
    let (_, bob) =
        get_json(&format!("http://{addr}/cart/"), &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob["user"], "bob");
    assert_eq!(bob["items"].as_array().unwrap().len(), 1);
    let (_, anonymous) = get_json(&format!("http://{addr}/cart"), &[]).await;
    assert_eq!(anonymous["items"], json!([]));

    let delete = |path: String| async move {
        client(Duration::from_secs(5))
            .delete(path)
            .insert_header(("authorization", "Bearer alice"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(delete(format!("{items}/42")).await, StatusCode::OK);
    assert_eq!(delete(format!("{items}/42")).await, StatusCode::NOT_FOUND);
    let (_, alice) = get_json(&items, &[("authorization", "Bearer alice")]).await;
    assert_eq!(alice["items"].as_array().unwrap().len(), 1);
}

/// Order history depends on the user, and `product` filters it.
#[actix_rt::test]
async fn orders_follow_user_and_product() {
    let (_child, addr) = start(Service::Orders, &[]).await;
    let alice = [("authorization", "Bearer alice")];
    let (_, all) = get_json(&format!("http://{addr}/orders"), &alice).await;
    let orders = all["orders"].as_array().unwrap();
    assert!(!orders.is_empty());
    let first_product = orders[0]["items"][0]["product_id"].as_str().unwrap().to_owned();
    let (_, filtered) =
        get_json(&format!("http://{addr}/orders?product={first_product}"), &alice).await;
    let filtered = filtered["orders"].as_array().unwrap();
    assert!(!filtered.is_empty() && filtered.len() <= orders.len());
    for order in filtered {
        assert!(order["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["product_id"] == first_product));
    }
    let (_, bob) =
        get_json(&format!("http://{addr}/orders"), &[("authorization", "Bearer bob")]).await;
    assert_ne!(bob["orders"], all["orders"]);
}

/// `--latency` on the command line delays data, not `/health`; `PUT /_fault`
/// replaces it and `DELETE /_fault` heals.
#[actix_rt::test]
async fn latency_fault() {
    let (_child, addr) = start(Service::Pricing, &["--latency", "300ms"]).await;
    let started = Instant::now();
    get_json(&format!("http://{addr}/health"), &[]).await;
    assert!(started.elapsed() < Duration::from_millis(250), "health is never delayed");
    let started = Instant::now();
    let (status, _) = get_json(&format!("http://{addr}/prices/1"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let (_, faults) = get_json(&format!("http://{addr}/_fault"), &[]).await;
    assert_eq!(faults["latency_ms"], 300);
    let res = client(Duration::from_secs(5)).delete(format!("http://{addr}/_fault")).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    let started = Instant::now();
    get_json(&format!("http://{addr}/prices/1"), &[]).await;
    assert!(started.elapsed() < Duration::from_millis(250));
}

/// `error_rate = 1` answers every data request 503 with a JSON error.
#[actix_rt::test]
async fn error_rate_fault() {
    let (_child, addr) = start(Service::Reviews, &[]).await;
    set_faults(addr, json!({"error_rate": 1.0})).await;
    for _ in 0..5 {
        let (status, body) = get_json(&format!("http://{addr}/reviews/1"), &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"].is_string());
    }
    let (status, _) = get_json(&format!("http://{addr}/health"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Invalid settings are refused and change nothing.
    let res = client(Duration::from_secs(5))
        .put(format!("http://{addr}/_fault"))
        .send_json(&json!({"error_rate": 2}))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let (_, faults) = get_json(&format!("http://{addr}/_fault"), &[]).await;
    assert_eq!(faults["error_rate"], 1.0);
}

/// `non_json` answers 200 with a body that is not JSON.
#[actix_rt::test]
async fn non_json_fault() {
    let (_child, addr) = start(Service::Catalog, &["--non-json"]).await;
    let (status, content_type, body) = get(&format!("http://{addr}/products/1"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    assert!(serde_json::from_slice::<Value>(&body).is_err());
}

/// `reset` closes the connection mid-answer: the head of a chunked answer
/// comes, then the close, with no last chunk (read on a raw socket: awc
/// takes such a close for the end of the body).
#[actix_rt::test]
async fn reset_fault() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_child, addr) = start(Service::Inventory, &[]).await;
    set_faults(addr, json!({"reset": true})).await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /inventory/1 HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut seen))
            .await
            .expect("the service closes the connection")
            .unwrap();
        let seen = String::from_utf8_lossy(&seen).to_lowercase();
        assert!(seen.starts_with("http/1.1 200 ok\r\n"), "{seen}");
        assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");
        assert!(seen.ends_with("\r\n\r\n"), "nothing after the head: {seen}");
    }
    let (status, _) = get_json(&format!("http://{addr}/health"), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// `drip_ms` sends headers at once and the body slowly, in small chunks.
#[actix_rt::test]
async fn drip_fault() {
    let (_child, addr) = start(Service::Recommendations, &[]).await;
    set_faults(addr, json!({"drip_ms": 40, "drip_bytes": 256})).await;
    let started = Instant::now();
    let mut res = client(Duration::from_secs(5))
        .get(format!("http://{addr}/recommendations/1"))
        .send()
        .await
        .unwrap();
    let headers_after = started.elapsed();
    let body = res.body().limit(1 << 20).await.unwrap();
    let body_after = started.elapsed();
    let chunks = body.len().div_ceil(256) as u32;
    assert!(chunks >= 3, "body of {} bytes", body.len());
    assert!(headers_after < Duration::from_millis(200), "headers came after {headers_after:?}");
    assert!(body_after >= Duration::from_millis(40) * chunks, "body came after {body_after:?}");
    let items: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(items["items"].as_array().unwrap().len(), 8, "dripped body is complete");
}

/// `hang` never answers: a client with a short timeout gives up; the
/// service still answers `/health` and heals on `DELETE /_fault`.
#[actix_rt::test]
async fn hang_fault() {
    let (_child, addr) = start(Service::Orders, &["--hang"]).await;
    let started = Instant::now();
    let res = client(Duration::from_millis(300)).get(format!("http://{addr}/orders")).send().await;
    assert!(matches!(res, Err(awc::error::SendRequestError::Timeout)), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (status, _) = get_json(&format!("http://{addr}/health"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let res = client(Duration::from_secs(5)).delete(format!("http://{addr}/_fault")).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::OK);
    let (status, _) = get_json(&format!("http://{addr}/orders"), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// `kill` really kills (connection refused, no pid); `restart` brings the
/// service back on the same port with a new process.
#[actix_rt::test]
async fn kill_and_restart() {
    let mut demo = DemoServices::start(EXE, 0).await.unwrap();
    let addr = demo.addr("reviews").unwrap();
    let old_pid = demo.pid("reviews").unwrap();
    demo.kill("reviews").await.unwrap();
    assert_eq!(demo.pid("reviews"), None);
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused));
    // Killed and reaped: the process is gone, not a zombie.
    assert!(!Path::new(&format!("/proc/{old_pid}")).exists());
    // The others are unaffected.
    assert!(mosaic::demo::spawn::health_ok(demo.addr("catalog").unwrap()).await);

    demo.restart("reviews").await.unwrap();
    assert_eq!(demo.addr("reviews"), Some(addr));
    assert_ne!(demo.pid("reviews"), Some(old_pid));
    let (status, _) = get_json(&format!("http://{addr}/reviews/3"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(demo.kill("nope").await.is_err());

    let banner = mosaic::demo::banner(
        "127.0.0.1:8080".parse().unwrap(),
        "127.0.0.1:9901".parse().unwrap(),
        &demo,
        None,
    );
    assert!(banner.contains(&format!("kill -9 {}", demo.pid("reviews").unwrap())), "{banner}");
    assert!(banner.contains("curl -s http://127.0.0.1:8080/products/42"));
    assert!(banner.contains("http://127.0.0.1:9901/dashboard"), "{banner}");
}
