//! A composed page labels every section with where it came from:
//! `live`, `cache`, `stale`, `default` and `none`.

mod support;

use std::time::Duration;

use support::*;

fn page_config(product: &FakeBackend, price: &FakeBackend, recs: &FakeBackend) -> String {
    format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"200ms\"
retries = 0
{}{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"400ms\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"price\", backend = \"pricing\", path = \"/prices/{{id}}\" }},
  {{ name = \"recommendations\", backend = \"recommendations\", path = \"/recommendations/{{id}}\" }},
]
",
        backend("catalog", &[product.address()], ""),
        backend(
            "pricing",
            &[price.address()],
            "cache = { ttl = \"300ms\", stale_if_error = \"1h\" }"
        ),
        backend("recommendations", &[recs.address()], "default = { items = [] }"),
    )
}

/// All live: bodies embedded unchanged, page complete, header says so.
#[actix_rt::test]
async fn healthy_page_is_live_and_complete() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42","name":"Lamp"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999,"currency":"EUR"}"#));
    let recs = FakeBackend::start(Reply::ok(r#"{"items":[1,2]}"#));
    let gw = start_gateway(&page_config(&product, &price, &recs)).await;

    let page = get(gw.addr, "/products/42").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("x-mosaic-complete"), Some("true"));
    assert_eq!(page.header("content-type"), Some("application/json"));
    let text = String::from_utf8_lossy(&page.body).to_string();
    assert!(
        text.contains(r#""product":{"id":"42","name":"Lamp"}"#),
        "body embedded unchanged: {text}"
    );
    let v = page.json();
    assert_eq!(v["price"]["amount"], 1999);
    assert_eq!(v["_mosaic"]["complete"], true);
    for section in ["product", "price", "recommendations"] {
        assert_eq!(page.meta(section)["source"], "live", "{section}");
        assert_eq!(page.meta(section)["status"], 200, "{section}");
    }
    assert_eq!(product.requests()[0].target, "/products/42");
    gw.stop(false).await;
}

/// A fresh cached section is served without a call; once expired and the
/// service fails, the stale copy is served and labelled with its age.
#[actix_rt::test]
async fn cache_then_stale() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999}"#));
    let recs = FakeBackend::start(Reply::ok(r#"{"items":[]}"#));
    let gw = start_gateway(&page_config(&product, &price, &recs)).await;

    assert_eq!(get(gw.addr, "/products/42").await.meta("price")["source"], "live");
    let cached = get(gw.addr, "/products/42").await;
    assert_eq!(cached.meta("price")["source"], "cache");
    assert_eq!(cached.json()["price"]["amount"], 1999);
    assert_eq!(price.calls(), 1, "fresh hit makes no call");
    assert_eq!(cached.json()["_mosaic"]["complete"], true);

    tokio::time::sleep(Duration::from_millis(350)).await;
    price.set(Reply::Json(503, "{}".into()));
    let stale = get(gw.addr, "/products/42").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.meta("price")["source"], "stale");
    assert_eq!(stale.meta("price")["error"], "status_5xx");
    assert!(stale.meta("price")["age_ms"].as_u64().unwrap_or(0) >= 300);
    assert_eq!(stale.json()["price"]["amount"], 1999);
    assert_eq!(stale.json()["_mosaic"]["complete"], false);
    assert_eq!(stale.header("x-mosaic-complete"), Some("false"));
    gw.stop(false).await;
}

/// A failing service with a default serves it, labelled; one without any
/// fallback is `null` with source `none`. The page stays 200.
#[actix_rt::test]
async fn default_and_none() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::Json(500, "{}".into()));
    let recs = FakeBackend::start(Reply::Json(502, "{}".into()));
    let gw = start_gateway(&page_config(&product, &price, &recs)).await;

    let page = get(gw.addr, "/products/42").await;
    assert_eq!(page.status, 200);
    let v = page.json();
    assert_eq!(v["recommendations"], serde_json::json!({ "items": [] }));
    assert_eq!(page.meta("recommendations")["source"], "default");
    assert_eq!(page.meta("recommendations")["error"], "status_5xx");
    assert!(v["price"].is_null());
    assert_eq!(page.meta("price")["source"], "none");
    assert_eq!(page.meta("price")["error"], "status_5xx");
    assert_eq!(v["_mosaic"]["complete"], false);
    gw.stop(false).await;
}
