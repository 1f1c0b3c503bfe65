//! API keys, identity headers and local rate limits at the edge, over real
//! sockets against a real (fake) service (SPEC.md, "Edge security").

mod support;

use support::fake::{FakeBackend, Reply};
use support::{backend, request, start_gateway, LISTEN_ANY};

const KEY: &str = "mobile-key-0123456789abcdef";

fn config(service: &FakeBackend) -> String {
    format!(
        r#"{LISTEN_ANY}
{backends}
[auth]
[[auth.consumers]]
name = "mobile-app"
keys = ["{KEY}"]

[[routes]]
path = "/products/{{id}}"
deadline = "500ms"
auth = "key"
rate_limit = {{ requests = 1, per = "60s", burst = 2 }}
sections = [{{ name = "product", backend = "catalog", path = "/products/{{id}}", required = true, forward_headers = ["x-consumer", "x-api-key"] }}]

[[routes]]
path = "/open/{{id}}"
deadline = "500ms"
rate_limit = {{ requests = 1, per = "60s", burst = 1, by = "ip" }}
sections = [{{ name = "product", backend = "catalog", path = "/products/{{id}}", forward_headers = ["x-consumer"] }}]

[[proxy]]
prefix = "/api/"
backend = "catalog"
auth = "key"
"#,
        backends = backend("catalog", &[service.address()], "")
    )
}

#[actix_rt::test]
async fn keys_decide_consumers_see_only_mosaics_identity_and_limits_hold() {
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let gateway = start_gateway(&config(&service)).await;
    let addr = gateway.addr;

    // No key, a wrong key, two keys: 401 with the ApiKey challenge; the
    // service is never called.
    let missing = request(addr, "GET", "/products/1", &[], None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some(r#"ApiKey realm="mosaic""#));
    assert_eq!(missing.json()["error"], "unauthorized");
    let wrong =
        request(addr, "GET", "/products/1", &[("x-api-key", "guess-0123456789abcdef")], None).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(
        wrong.header("www-authenticate"),
        Some(r#"ApiKey realm="mosaic", error="invalid_token""#)
    );
    assert_eq!(service.calls(), 0);

    // The right key: x-consumer is mosaic's, whatever the client claimed.
    let page =
        request(addr, "GET", "/products/1", &[("x-api-key", KEY), ("x-consumer", "admin")], None)
            .await;
    assert_eq!(page.status, 200, "{:?}", String::from_utf8_lossy(&page.body));
    assert_eq!(page.header("ratelimit-policy"), Some("1;w=60"));
    assert_eq!(page.header("ratelimit"), Some("limit=1, remaining=2, reset=60"));
    let seen = service.requests().pop().expect("one call");
    assert_eq!(seen.header("x-consumer"), Some("mobile-app"));
    assert_eq!(seen.header("x-api-key"), Some(KEY), "a section that lists the key gets it");

    // burst = 2: three at once, then 429 with Retry-After.
    for _ in 0..2 {
        let ok = request(addr, "GET", "/products/2", &[("x-api-key", KEY)], None).await;
        assert_eq!(ok.status, 200);
    }
    let limited = request(addr, "GET", "/products/3", &[("x-api-key", KEY)], None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"], "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(limited.header("ratelimit-policy"), Some("1;w=60"));

    // An open route: a client's x-consumer is dropped, not passed on.
    let open = request(addr, "GET", "/open/1", &[("x-consumer", "admin")], None).await;
    assert_eq!(open.status, 200);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-consumer"), None);
    let second = request(addr, "GET", "/open/1", &[], None).await;
    assert_eq!(second.status, 200);
    let third = request(addr, "GET", "/open/1", &[("x-forwarded-for", "198.51.100.1")], None).await;
    assert_eq!(third.status, 429, "an untrusted peer's X-Forwarded-For does not change its IP");

    // A proxy route: the key it checked is not passed on; x-consumer is set.
    let calls = service.calls();
    let proxied =
        request(addr, "GET", "/api/cart", &[("x-api-key", KEY), ("x-consumer", "admin")], None)
            .await;
    assert_eq!(proxied.status, 200);
    assert_eq!(service.calls(), calls + 1);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-consumer"), Some("mobile-app"));
    assert_eq!(seen.header("x-api-key"), None);
    let refused = request(addr, "GET", "/api/cart", &[], None).await;
    assert_eq!(refused.status, 401);
    gateway.stop(false).await;
}
