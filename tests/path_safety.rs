//! Path parameters can never change the shape of a service request: hostile
//! ids sent on raw TCP (nothing normalises them) either reach the services
//! as one encoded segment / one query value, or are refused with 400 before
//! any service is called. Proxy routes refuse dot segments the same way.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mosaic::gateway::RunningGateway;
use percent_encoding::percent_decode_str;
use support::*;

/// `/products/{id}` composed from `catalog` (`/products/{id}`) and `orders`
/// (`/orders?product={id}`), plus a proxy route `/api/cart/` → `cart`.
async fn setup() -> (FakeBackend, FakeBackend, FakeBackend, RunningGateway) {
    let catalog = FakeBackend::start(Reply::ok(r#"{"id":"x"}"#));
    let orders = FakeBackend::start(Reply::ok(r#"{"orders":[]}"#));
    let cart = FakeBackend::start(Reply::ok(r#"{"cart":[]}"#));
    let toml = format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"1s\"
retries = 0
{}{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"2s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"orders\", backend = \"orders\", path = \"/orders?product={{id}}\" }},
]

[[proxy]]
prefix = \"/api/cart/\"
backend = \"cart\"
rewrite = \"/cart/\"
",
        backend("catalog", &[catalog.address()], ""),
        backend("orders", &[orders.address()], ""),
        backend("cart", &[cart.address()], ""),
    );
    let gw = start_gateway(&toml).await;
    (catalog, orders, cart, gw)
}

/// Sends `GET {target}` on a raw connection (closed by the server after the
/// answer) and returns the status, or `None` when the server just closed.
async fn raw_get(addr: SocketAddr, target: &str) -> (Option<u16>, String) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    let answer = raw(addr, request.as_bytes(), Duration::from_secs(3)).await;
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok());
    (status, answer)
}

/// Unreserved characters and `%XX` only: nothing that can end a segment, a
/// query value or a request line.
fn strictly_encoded(value: &str) -> bool {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(|b| b.is_ascii_hexdigit());
                if !hex(i + 1) || !hex(i + 2) {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

/// Hostile ids that must be forwarded, encoded into one segment / one value.
const FORWARDED: &[&str] = &[
    "1%2F..%2Fadmin",
    "1%2f..%2fadmin",
    "%3Fadmin=1",
    "%23frag",
    "%0D%0AX-Injected:%201",
    "%0AX-Injected:%202",
    "%25",
    "%2525",
    "1%26admin%3Dtrue",
    "1&admin=true",
    "%2B",
    "a+b",
    "1;x=y",
    "%00",
    "%20",
    "...",
    "%2e%2e%2e",
    "..%2F..",
    "%C3%A9t%C3%A9",
];

/// Ids that must be refused with 400 before any service is called.
const REFUSED: &[&str] =
    &["..", ".", "%2e%2e", "%2E%2E", "%2E", "%2e", ".%2e", "%2E.", "%zz", "abc%4", "%"];

/// Each hostile id that decodes to something ordinary reaches each service
/// exactly once, as `/products/<one strictly encoded segment>` and
/// `/orders?product=<one strictly encoded value>`, and decodes back to the
/// same bytes: no added segment, query parameter, fragment or header line.
#[actix_rt::test]
async fn hostile_ids_stay_inside_one_segment_and_one_query_value() {
    let (catalog, orders, _cart, gw) = setup().await;
    for (n, id) in FORWARDED.iter().enumerate() {
        let (status, answer) = raw_get(gw.addr, &format!("/products/{id}")).await;
        assert_eq!(status, Some(200), "{id}: {answer}");
        let product_calls = catalog.requests();
        let order_calls = orders.requests();
        assert_eq!(product_calls.len(), n + 1, "{id}: exactly one catalog call");
        assert_eq!(order_calls.len(), n + 1, "{id}: exactly one orders call");
        let expected: Vec<u8> = percent_decode_str(id).collect();

        let target = &product_calls[n].target;
        let segment = target
            .strip_prefix("/products/")
            .unwrap_or_else(|| panic!("{id}: catalog saw {target}"));
        assert_eq!(target.matches('/').count(), 2, "{id}: catalog saw {target}");
        assert!(strictly_encoded(segment), "{id}: catalog saw {target}");
        assert_eq!(percent_decode_str(segment).collect::<Vec<u8>>(), expected, "{id}: {target}");

        let target = &order_calls[n].target;
        let value = target
            .strip_prefix("/orders?product=")
            .unwrap_or_else(|| panic!("{id}: orders saw {target}"));
        assert_eq!(target.matches('/').count(), 1, "{id}: orders saw {target}");
        assert_eq!(target.matches('?').count(), 1, "{id}: orders saw {target}");
        assert_eq!(target.matches('=').count(), 1, "{id}: orders saw {target}");
        assert!(!target.contains(['&', '#', '+']), "{id}: orders saw {target}");
        assert!(strictly_encoded(value), "{id}: orders saw {target}");
        assert_eq!(percent_decode_str(value).collect::<Vec<u8>>(), expected, "{id}: {target}");
    }
    for r in catalog.requests().iter().chain(orders.requests().iter()) {
        assert!(r.header("x-injected").is_none(), "header injected: {r:?}");
    }
    gw.stop(false).await;
}

/// Dot segments (raw or encoded) and malformed escapes are refused with 400
/// — never 500 — and no service is called.
#[actix_rt::test]
async fn dot_segments_and_malformed_escapes_are_400() {
    let (catalog, orders, _cart, gw) = setup().await;
    for id in REFUSED {
        let (status, answer) = raw_get(gw.addr, &format!("/products/{id}")).await;
        assert_eq!(status, Some(400), "{id}: {answer}");
        assert!(answer.contains("\"error\""), "{id}: JSON error body: {answer}");
    }
    assert_eq!(catalog.calls(), 0);
    assert_eq!(orders.calls(), 0);
    gw.stop(false).await;
}

/// A raw CR or LF inside the request line is a malformed request: 400 (or
/// the connection closed), and nothing reaches a service — no header can be
/// smuggled into the service request.
#[actix_rt::test]
async fn raw_crlf_in_the_request_line_never_reaches_a_service() {
    let (catalog, orders, cart, gw) = setup().await;
    let attempts: &[&[u8]] = &[
        b"GET /products/1\r\nX-Injected: 1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET /products/1\rX-Injected:1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET /products/1\nX-Injected:1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET /products/1 X-Injected: 1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET /api/cart/1\r\nX-Injected: 1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        b"GET /api/cart/1\rX-Injected:1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    ];
    for bytes in attempts {
        let answer = raw(gw.addr, bytes, Duration::from_secs(3)).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{:?}: {answer}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(catalog.calls() + orders.calls() + cart.calls(), 0);
    gw.stop(false).await;
}

/// An empty id does not match `/products/{id}`: 404, not 500, no call.
#[actix_rt::test]
async fn empty_id_is_404() {
    let (catalog, orders, _cart, gw) = setup().await;
    for target in ["/products/", "/products", "/products//"] {
        let (status, answer) = raw_get(gw.addr, target).await;
        assert_eq!(status, Some(404), "{target}: {answer}");
    }
    assert_eq!(catalog.calls() + orders.calls(), 0);
    gw.stop(false).await;
}

/// A proxy route cannot be escaped with dot segments, raw or encoded: 400,
/// the backend is never called. Dots that are not whole segments pass.
#[actix_rt::test]
async fn proxy_dot_segments_are_400() {
    let (_catalog, _orders, cart, gw) = setup().await;
    for target in [
        "/api/cart/../admin",
        "/api/cart/%2e%2e/admin",
        "/api/cart/%2E%2E/admin",
        "/api/cart/.%2e/admin",
        "/api/cart/./admin",
        "/api/cart/%2e/admin",
        "/api/cart/x/../../admin",
        "/api/cart/..",
        "/api/cart/x/..?a=1",
    ] {
        let (status, answer) = raw_get(gw.addr, target).await;
        assert_eq!(status, Some(400), "{target}: {answer}");
    }
    assert_eq!(cart.calls(), 0, "no dot segment reached the backend");
    let (status, answer) = raw_get(gw.addr, "/api/cart/a..b/.x/...").await;
    assert_eq!(status, Some(200), "{answer}");
    assert_eq!(cart.requests()[0].target, "/cart/a..b/.x/...");
    gw.stop(false).await;
}
