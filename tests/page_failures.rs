//! Every error kind a section can report, and the page status rules.

mod support;

use std::time::Duration;

use support::*;

/// One required `product` section and one optional `extra` section.
fn two_sections(product: &str, extra: &str, backend_extra: &str, deadline: &str) -> String {
    format!(
        "{LISTEN_ANY}
[server.limits]
[defaults]
timeout = \"150ms\"
retries = 0
{}{}
[[routes]]
path = \"/p/{{id}}\"
deadline = \"{deadline}\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"extra\", backend = \"extra\", path = \"/extra/{{id}}\" }},
]
",
        backend("catalog", &[product.to_string()], ""),
        backend("extra", &[extra.to_string()], backend_extra),
    )
    .replace("[server.limits]\n", "")
}

async fn extra_error(reply: Reply, backend_extra: &str) -> (u16, serde_json::Value) {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let extra = FakeBackend::start(reply);
    let gw =
        start_gateway(&two_sections(&product.address(), &extra.address(), backend_extra, "1s"))
            .await;
    let page = get(gw.addr, "/p/1").await;
    let meta = page.meta("extra");
    assert!(page.json()["extra"].is_null(), "failed optional section is null");
    gw.stop(false).await;
    (page.status, meta)
}

#[actix_rt::test]
async fn timeout_is_reported() {
    let (status, meta) =
        extra_error(Reply::Delay(Duration::from_millis(600), Box::new(Reply::ok("{}"))), "").await;
    assert_eq!(status, 200);
    assert_eq!(meta["error"], "timeout");
    assert_eq!(meta["source"], "none");
}

#[actix_rt::test]
async fn connect_is_reported() {
    let dead = FakeBackend::start(Reply::ok("{}")).kill();
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let gw = start_gateway(&two_sections(&product.address(), &dead.to_string(), "", "1s")).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.meta("extra")["error"], "connect");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn reset_is_a_connect_error() {
    let (_, meta) = extra_error(Reply::Reset, "").await;
    assert_eq!(meta["error"], "connect");
}

#[actix_rt::test]
async fn status_5xx_is_reported() {
    let (_, meta) = extra_error(Reply::Json(503, "{}".into()), "").await;
    assert_eq!(meta["error"], "status_5xx");
}

#[actix_rt::test]
async fn non_json_is_invalid_body() {
    let reply =
        Reply::Raw { status: 200, content_type: "text/html", body: b"<html>oops</html>".to_vec() };
    let (_, meta) = extra_error(reply, "").await;
    assert_eq!(meta["error"], "invalid_body");
}

#[actix_rt::test]
async fn oversized_body_is_too_large() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let big = format!("{{\"blob\":\"{}\"}}", "x".repeat(4096));
    let extra = FakeBackend::start(Reply::Json(200, big));
    let toml = two_sections(&product.address(), &extra.address(), "", "1s")
        .replace("workers = 1", "workers = 1\nmax_body = \"1KiB\"");
    let gw = start_gateway(&toml).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.meta("extra")["error"], "too_large");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn optional_4xx_is_null_live_and_complete() {
    let (status, meta) = extra_error(Reply::Json(404, r#"{"error":"nope"}"#.into()), "").await;
    assert_eq!(status, 200);
    assert_eq!(meta["source"], "live");
    assert_eq!(meta["status"], 404);
    assert!(meta.get("error").is_none(), "a 4xx is an answer, not a fault: {meta}");
}

#[actix_rt::test]
async fn required_4xx_passes_through() {
    let product = FakeBackend::start(Reply::Json(404, r#"{"error":"no such product"}"#.into()));
    let extra = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&two_sections(&product.address(), &extra.address(), "", "1s")).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 404);
    assert_eq!(page.meta("product")["status"], 404);
    assert!(page.json()["_mosaic"].is_object(), "same envelope");
    gw.stop(false).await;
}

#[actix_rt::test]
async fn required_failure_is_502_or_504() {
    let extra = FakeBackend::start(Reply::ok("{}"));
    let failing = FakeBackend::start(Reply::Json(500, "{}".into()));
    let gw = start_gateway(&two_sections(&failing.address(), &extra.address(), "", "1s")).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 502);
    assert_eq!(page.meta("product")["error"], "status_5xx");
    assert_eq!(page.json()["extra"], serde_json::json!({}), "other sections still served");
    gw.stop(false).await;

    let slow = FakeBackend::start(Reply::Hang);
    let gw = start_gateway(&two_sections(&slow.address(), &extra.address(), "", "1s")).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 504);
    assert_eq!(page.meta("product")["error"], "timeout");
    gw.stop(false).await;
}

/// A hanging service cannot hold the page past its deadline: the section is
/// cut with `deadline` and the page answers within deadline + 50 ms.
#[actix_rt::test]
async fn deadline_holds_with_a_hanging_backend() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let extra = FakeBackend::start(Reply::Hang);
    let toml = two_sections(&product.address(), &extra.address(), "timeout = \"5s\"", "250ms");
    let gw = start_gateway(&toml).await;
    // Warm the connection pool so the measurement is about the deadline.
    let _ = get(gw.addr, "/p/1").await;
    for _ in 0..3 {
        let page = get(gw.addr, "/p/1").await;
        assert_eq!(page.status, 200);
        assert_eq!(page.meta("extra")["error"], "deadline");
        assert!(page.elapsed >= Duration::from_millis(240), "{:?}", page.elapsed);
        assert!(page.elapsed <= Duration::from_millis(300), "answered after {:?}", page.elapsed);
    }
    gw.stop(false).await;
}

/// A body dripped slower than the deadline is cut too.
#[actix_rt::test]
async fn deadline_holds_with_a_slow_body() {
    let product = FakeBackend::start(Reply::Drip {
        body: r#"{"id":"1","pad":"xxxxxxxx"}"#.into(),
        every: Duration::from_millis(50),
    });
    let extra = FakeBackend::start(Reply::ok("{}"));
    let toml = two_sections(&product.address(), &extra.address(), "", "250ms")
        .replace("timeout = \"150ms\"", "timeout = \"5s\"");
    let gw = start_gateway(&toml).await;
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 504);
    assert_eq!(page.meta("product")["error"], "deadline");
    assert!(page.elapsed <= Duration::from_millis(300), "answered after {:?}", page.elapsed);
    gw.stop(false).await;
}

#[actix_rt::test]
async fn no_instances_is_reported() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let extra = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&two_sections(&product.address(), &extra.address(), "", "1s")).await;
    let handle = gw.gateway().backend("extra").expect("backend");
    handle
        .actor
        .send(mosaic::backend::actor::SetInstances(vec![]))
        .await
        .expect("mailbox")
        .expect("handled");
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.meta("extra")["error"], "no_instances");
    assert_eq!(extra.calls(), 0);
    gw.stop(false).await;
}

#[actix_rt::test]
async fn composed_routes_answer_get_and_head_only() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let extra = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&two_sections(&product.address(), &extra.address(), "", "1s")).await;
    let post = request(gw.addr, "POST", "/p/1", &[], Some(b"{}".to_vec())).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = request(gw.addr, "HEAD", "/p/1", &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let missing = get(gw.addr, "/nothing/here").await;
    assert_eq!(missing.status, 404);
    gw.stop(false).await;
}

/// Request headers over 32 KiB get 431; malformed requests get 400.
#[actix_rt::test]
async fn edge_limits() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let extra = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&two_sections(&product.address(), &extra.address(), "", "1s")).await;
    let big = "a".repeat(40 * 1024);
    let answer = request(gw.addr, "GET", "/p/1", &[("x-big", big.as_str())], None).await;
    assert_eq!(answer.status, 431);
    assert_eq!(product.calls(), 0);
    let malformed =
        raw(gw.addr, b"GET /p/1 HTTP/1.1\r\nHost localhost\r\n\r\n", Duration::from_secs(2)).await;
    assert!(malformed.starts_with("HTTP/1.1 400"), "{malformed}");
    let fine = get(gw.addr, "/p/1").await;
    assert_eq!(fine.status, 200);
    gw.stop(false).await;
}
