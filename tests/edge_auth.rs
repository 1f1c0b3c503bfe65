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

/// One raw request, closed after its answer (`Connection: close`).
async fn raw_get(addr: std::net::SocketAddr, target: &str, lines: &[&[u8]]) -> String {
    let mut bytes =
        format!("GET {target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n").into_bytes();
    for line in lines {
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    support::raw(addr, &bytes, std::time::Duration::from_secs(5)).await
}

fn status_of(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

#[actix_rt::test]
async fn hostile_identity_headers_and_keys_over_raw_sockets() {
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let gateway = start_gateway(&config(&service)).await;
    let addr = gateway.addr;
    let key_line = format!("x-api-key: {KEY}");

    // x-consumer twice, in odd case, beside a valid key: the service sees
    // one x-consumer, mosaic's.
    let answer = raw_get(
        addr,
        "/api/cart",
        &[key_line.as_bytes(), b"X-Consumer: admin", b"x-CONSUMER: root"],
    )
    .await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    let seen = service.requests().pop().expect("call");
    let consumers: Vec<&str> =
        seen.headers.iter().filter(|(n, _)| n == "x-consumer").map(|(_, v)| v.as_str()).collect();
    assert_eq!(consumers, ["mobile-app"]);

    // On an open route the client's copies are dropped, however spelled.
    let answer = raw_get(addr, "/api/open", &[b"X-CONSUMER: admin"]).await;
    assert_eq!(status_of(&answer), "401", "the proxy asks for a key: {answer}");
    let calls = service.calls();
    let answer = raw_get(addr, "/open/7", &[b"X-Consumer: admin", b"x-consumer: root"]).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(service.calls(), calls + 1);
    assert_eq!(service.requests().pop().expect("call").header("x-consumer"), None);

    // Refusals that never reach the service: the valid key twice (two
    // lines: which one counts? neither), a 4 KiB key, a key of non-ASCII
    // bytes, a key in the query string, a key in another header.
    let calls = service.calls();
    let long_key = format!("x-api-key: {}", "k".repeat(4096));
    let bearer = format!("authorization: Bearer {KEY}");
    let cases: [(Vec<&[u8]>, &str); 5] = [
        (vec![key_line.as_bytes(), key_line.as_bytes()], "error=\"invalid_token\""),
        (vec![long_key.as_bytes()], "error=\"invalid_token\""),
        (vec![b"x-api-key: \xff\xfe\xfd\xfc-0123456789abcdef"], "error=\"invalid_token\""),
        (vec![b"x-api-key:"], "ApiKey realm"),
        (vec![bearer.as_bytes()], "ApiKey realm"),
    ];
    for (lines, challenge) in &cases {
        let answer = raw_get(addr, "/api/cart", lines).await;
        assert_eq!(status_of(&answer), "401", "{lines:?}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("www-authenticate: apikey realm=\"mosaic\""));
        assert!(answer.contains(challenge), "{lines:?}: {answer}");
    }
    for query in [format!("/api/cart?x-api-key={KEY}"), format!("/api/cart?api_key={KEY}")] {
        let answer = raw_get(addr, &query, &[]).await;
        assert_eq!(status_of(&answer), "401", "a key in the query string is not a key: {answer}");
    }
    assert_eq!(service.calls(), calls, "no refused request reached the service");

    // After all that, the gateway still serves the right key.
    let answer = raw_get(addr, "/api/cart", &[key_line.as_bytes()]).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    gateway.stop(false).await;
}

fn trusted_config(service: &FakeBackend) -> String {
    let listen = LISTEN_ANY.replace(
        "workers = 1",
        "workers = 1\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]",
    );
    format!(
        r#"{listen}
{backends}
[[routes]]
path = "/open/{{id}}"
deadline = "500ms"
rate_limit = {{ requests = 1, per = "60s", burst = 0, by = "ip" }}
sections = [{{ name = "product", backend = "catalog", path = "/products/{{id}}" }}]

[[proxy]]
prefix = "/api/"
backend = "catalog"
"#,
        backends = backend("catalog", &[service.address()], "")
    )
}

#[actix_rt::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_named() {
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let toml = trusted_config(&service);
    assert!(toml.contains("trusted_proxies"), "{toml}");
    let gateway = start_gateway(&toml).await;
    let addr = gateway.addr;
    let from = |xff: &'static str| async move {
        request(addr, "GET", "/open/1", &[("x-forwarded-for", xff)], None).await.status
    };

    // The peer (127.0.0.1) is trusted: each forwarded client has its own
    // bucket (one request per minute, no burst).
    assert_eq!(from("203.0.113.7").await, 200);
    assert_eq!(from("203.0.113.7").await, 429);
    assert_eq!(from("203.0.113.8").await, 200, "another client, another bucket");
    // A trusted hop on the right is skipped; the client cannot hide behind
    // addresses it writes on the left.
    assert_eq!(from("203.0.113.9, 10.1.2.3").await, 200);
    assert_eq!(from("203.0.113.9").await, 429, "the same client as the line above");
    assert_eq!(from("198.51.100.1, 203.0.113.7").await, 429, "the rightmost untrusted hop counts");
    // Junk from the client side: not believed, the last trusted view (the
    // peer) stands, and that is one bucket for all such requests.
    assert_eq!(from("not-an-address").await, 200);
    assert_eq!(from("also junk").await, 429);

    // The service is told the resolved client in X-Real-IP.
    let proxied = request(addr, "GET", "/api/x", &[("x-forwarded-for", "192.0.2.44")], None).await;
    assert_eq!(proxied.status, 200);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-real-ip"), Some("192.0.2.44"));
    gateway.stop(false).await;
}

#[actix_rt::test]
async fn a_reload_keeps_buckets_whose_limit_did_not_change() {
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let toml = config(&service);
    let (gateway, file) = support::start_gateway_from_file(&toml).await;
    let addr = gateway.addr;
    let open = || async move { request(addr, "GET", "/open/1", &[], None).await.status };
    assert_eq!(open().await, 200);
    assert_eq!(open().await, 200);
    assert_eq!(open().await, 429);

    // The same file again: still limited (a reload is not a refill).
    let reload = support::admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reload.status, 200, "{:?}", String::from_utf8_lossy(&reload.body));
    assert_eq!(open().await, 429, "the bucket survived the reload");

    // A changed limit is a new limit, with a fresh bucket.
    let changed = toml.replace(
        r#"rate_limit = { requests = 1, per = "60s", burst = 1, by = "ip" }"#,
        r#"rate_limit = { requests = 1, per = "60s", burst = 3, by = "ip" }"#,
    );
    assert_ne!(changed, toml);
    std::fs::write(file.path(), changed).expect("write");
    let reload = support::admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reload.status, 200, "{:?}", String::from_utf8_lossy(&reload.body));
    assert_eq!(open().await, 200, "a new limit starts full");
    gateway.stop(false).await;
}
