//! Proxy routes (`[[proxy]]`): prefix matching and rewrite, any method with
//! bodies streamed both ways, `max_body`, header hygiene, error answers and
//! retries — everything checked against what a real backend received.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mosaic::gateway::RunningGateway;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One `cart` backend on `instances`, proxied at `/api/cart/` → `/cart/`.
fn proxy_config(instances: &[String], backend_extra: &str) -> String {
    format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"2s\"
retries = 0
{}
[[proxy]]
prefix = \"/api/cart/\"
backend = \"cart\"
rewrite = \"/cart/\"
",
        backend("cart", instances, backend_extra),
    )
}

/// Same, with `server.max_body`.
fn proxy_config_max_body(instances: &[String], backend_extra: &str, max_body: &str) -> String {
    proxy_config(instances, backend_extra).replacen(
        "workers = 1",
        &format!("workers = 1\nmax_body = \"{max_body}\""),
        1,
    )
}

async fn one_cart(reply: Reply, backend_extra: &str) -> (FakeBackend, RunningGateway) {
    let cart = FakeBackend::start(reply);
    let gw = start_gateway(&proxy_config(&[cart.address()], backend_extra)).await;
    (cart, gw)
}

/// A raw HTTP/1.1 exchange: writes `bytes`, reads one response (by
/// `content-length`, or until the server closes), within 5 s.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok());
                if let Some(len) = len {
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("response within 5s");
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

/// Sends `chunks` as a chunked request body (no content-length) with awc.
async fn post_chunked(addr: SocketAddr, path: &str, chunks: Vec<Vec<u8>>) -> (u16, Vec<u8>) {
    let stream = futures_util::stream::iter(
        chunks.into_iter().map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c))),
    );
    let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let mut resp = client
        .post(format!("http://{addr}{path}"))
        .send_stream(stream)
        .await
        .expect("gateway answers");
    let body = resp.body().limit(64 * 1024 * 1024).await.expect("body").to_vec();
    (resp.status().as_u16(), body)
}

fn error_body(answer: &Answer) -> (String, String) {
    let json = answer.json();
    (
        json["error"].as_str().unwrap_or_default().to_string(),
        json["backend"].as_str().unwrap_or_default().to_string(),
    )
}

/// Deterministic, incompressible-looking payload of `len` bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed).collect()
}

// ---------------------------------------------------------------------------
// Matching and rewriting

/// `/api/cart/` matches `/api/cart/x` at a segment boundary and the prefix is
/// replaced by `rewrite`, the query string kept; `/api/cartoon` is not the
/// cart's: mosaic answers 404 itself and the backend sees nothing.
#[actix_rt::test]
async fn prefix_matches_at_segment_boundary_and_rewrites() {
    let (cart, gw) = one_cart(Reply::ok(r#"{"ok":true}"#), "").await;

    let a = get(gw.addr, "/api/cart/items?a=1").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json(), serde_json::json!({"ok": true}));
    let b = get(gw.addr, "/api/cart/x").await;
    assert_eq!(b.status, 200);
    let targets: Vec<String> = cart.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, vec!["/cart/items?a=1", "/cart/x"]);

    for path in ["/api/cartoon", "/api/cartoon/x", "/api/carts?x=1", "/api"] {
        let miss = get(gw.addr, path).await;
        assert_eq!(miss.status, 404, "{path}");
        assert_eq!(miss.json()["error"], "not_found", "{path}");
    }
    assert_eq!(cart.calls(), 2, "no unmatched path reached the backend");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// Methods, status and body pass through

/// Any method passes through with its exact body, and the service's status
/// and body come back unchanged (4xx and 5xx included).
#[actix_rt::test]
async fn any_method_and_body_pass_through_and_status_comes_back() {
    let cart = FakeBackend::scripted(|r| {
        let status = match r.method.as_str() {
            "POST" => 201,
            "PUT" => 200,
            "DELETE" => 204,
            "PATCH" => 409,
            _ => 503,
        };
        if status == 204 {
            return Reply::Raw { status, content_type: "text/plain", body: Vec::new() };
        }
        let body = format!(r#"{{"method":"{}","len":{}}}"#, r.method, r.body.len());
        Reply::Raw { status, content_type: "application/x-cart", body: body.into_bytes() }
    });
    let gw = start_gateway(&proxy_config(&[cart.address()], "")).await;

    let cases = [
        ("POST", 201, b"{\"sku\":\"a\",\"qty\":1}".to_vec()),
        ("PUT", 200, b"qty=2&note=\xff\x00binary".to_vec()),
        ("DELETE", 204, b"{\"why\":\"gone\"}".to_vec()),
        ("PATCH", 409, b"[1,2,3]".to_vec()),
        ("OPTIONS", 503, Vec::new()),
    ];
    for (method, status, body) in &cases {
        let sent = if body.is_empty() { None } else { Some(body.clone()) };
        let answer = request(gw.addr, method, "/api/cart/items/7", &[], sent).await;
        assert_eq!(answer.status, *status, "{method}");
        if *status == 204 {
            assert!(answer.body.is_empty());
        } else {
            assert_eq!(
                String::from_utf8_lossy(&answer.body),
                format!(r#"{{"method":"{method}","len":{}}}"#, body.len()),
                "{method}: body unchanged"
            );
            assert_eq!(answer.header("content-type"), Some("application/x-cart"), "{method}");
        }
    }
    let seen = cart.requests();
    assert_eq!(seen.len(), cases.len(), "one backend call per request, none retried");
    for ((method, _, body), got) in cases.iter().zip(&seen) {
        assert_eq!(got.method, *method);
        assert_eq!(got.target, "/cart/items/7");
        assert_eq!(&got.body, body, "{method}: exact body");
    }
    gw.stop(false).await;
}

/// A 5xx is relayed as it is, and counts against the breaker: after
/// `threshold` 500s the next request is refused with 503 `circuit_open`
/// without a call.
#[actix_rt::test]
async fn server_errors_pass_through_and_open_the_breaker() {
    let extra = "breaker = { threshold = 2, backoff = { kind = \"constant\", delay = \"10s\" } }";
    let (cart, gw) = one_cart(Reply::Json(500, r#"{"boom":1}"#.into()), extra).await;
    for _ in 0..2 {
        let a = get(gw.addr, "/api/cart/x").await;
        assert_eq!(a.status, 500);
        assert_eq!(a.json(), serde_json::json!({"boom": 1}), "5xx body unchanged");
    }
    let refused = get(gw.addr, "/api/cart/x").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json(), serde_json::json!({"error": "circuit_open", "backend": "cart"}));
    assert_eq!(cart.calls(), 2, "no third call while the breaker is open");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// Streaming

/// A 5 MiB request body (under an 8 MiB `max_body`) arrives byte for byte.
#[actix_rt::test]
async fn large_request_body_arrives_intact() {
    let cart = FakeBackend::start(Reply::ok(r#"{"stored":true}"#));
    let gw =
        start_gateway(&proxy_config_max_body(&[cart.address()], "timeout = \"10s\"", "8MiB")).await;
    let body = payload(5 * 1024 * 1024, 7);
    let answer = request(gw.addr, "PUT", "/api/cart/blob", &[], Some(body.clone())).await;
    assert_eq!(answer.status, 200);
    let seen = cart.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len());
    assert!(seen[0].body == body, "request body changed in transit");
    gw.stop(false).await;
}

/// A response body of several MiB comes back byte for byte (streamed, not
/// cut at `max_body`, which limits request bodies).
#[actix_rt::test]
async fn large_response_body_comes_back_intact() {
    let body = payload(6 * 1024 * 1024 + 123, 3);
    let cart = FakeBackend::start(Reply::Raw {
        status: 200,
        content_type: "application/octet-stream",
        body: body.clone(),
    });
    let gw = start_gateway(&proxy_config(&[cart.address()], "timeout = \"10s\"")).await;
    let answer = get(gw.addr, "/api/cart/export").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/octet-stream"));
    assert_eq!(answer.body.len(), body.len());
    assert!(answer.body == body, "response body changed in transit");
    gw.stop(false).await;
}

/// A chunked request body (no Content-Length) is streamed to the service
/// and arrives intact.
#[actix_rt::test]
async fn chunked_request_body_arrives_intact() {
    let cart = FakeBackend::start(Reply::ok(r#"{"ok":true}"#));
    let gw =
        start_gateway(&proxy_config_max_body(&[cart.address()], "timeout = \"10s\"", "8MiB")).await;
    let chunks: Vec<Vec<u8>> = (0..40u8).map(|i| payload(50_000 + i as usize * 997, i)).collect();
    let whole: Vec<u8> = chunks.concat();
    let (status, _) = post_chunked(gw.addr, "/api/cart/upload", chunks).await;
    assert_eq!(status, 200);
    let seen = cart.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].header("content-length").is_none(), "no invented content-length");
    assert_eq!(seen[0].body.len(), whole.len());
    assert!(seen[0].body == whole, "chunked body changed in transit");

    // The same over a raw connection, with odd chunk sizes and a chunk extension.
    let mut raw_req =
        b"POST /api/cart/raw HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw_req.extend_from_slice(b"3;ext=1\r\nabc\r\n1\r\nd\r\n0\r\n\r\n");
    let (status, _, _) = raw_exchange(gw.addr, &raw_req).await;
    assert_eq!(status, 200);
    let seen = cart.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body, b"abcd");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// max_body

/// A request announcing a Content-Length over `max_body` gets 413 at once,
/// and the backend sees nothing.
#[actix_rt::test]
async fn declared_body_over_max_body_is_413() {
    let cart = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&proxy_config_max_body(&[cart.address()], "", "1KiB")).await;
    // Only the head is sent: mosaic must answer from Content-Length alone.
    let (status, _, body) = raw_exchange(
        gw.addr,
        b"POST /api/cart/x HTTP/1.1\r\nHost: shop\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(json["error"], "too_large");
    // Exactly at the limit is fine.
    let ok = request(gw.addr, "POST", "/api/cart/x", &[], Some(vec![b'a'; 1024])).await;
    assert_eq!(ok.status, 200);
    let seen = cart.requests();
    assert_eq!(seen.len(), 1, "only the request within max_body reached the backend");
    assert_eq!(seen[0].body.len(), 1024);
    gw.stop(false).await;
}

/// A chunked body that grows past `max_body` while streaming gets 413 too,
/// and the backend never receives a complete request.
#[actix_rt::test]
async fn chunked_body_growing_past_max_body_is_413() {
    let cart = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&proxy_config_max_body(&[cart.address()], "", "1KiB")).await;
    let mut raw_req =
        b"POST /api/cart/x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        raw_req.extend_from_slice(b"200\r\n");
        raw_req.extend_from_slice(&[b'z'; 0x200]);
        raw_req.extend_from_slice(b"\r\n");
    }
    raw_req.extend_from_slice(b"0\r\n\r\n");
    let (status, _, _) = raw_exchange(gw.addr, &raw_req).await;
    assert_eq!(status, 413);

    // And through awc's streaming client.
    let (status, _) = post_chunked(gw.addr, "/api/cart/y", vec![vec![b'q'; 700]; 3]).await;
    assert_eq!(status, 413);
    // Let the backend finish reading whatever reached it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cart.calls(), 0, "no complete request reached the backend");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// Headers

/// Hop-by-hop headers (and those named in `Connection`) are dropped, end to
/// end headers forwarded, and `X-Forwarded-For` (appended), `-Proto` and
/// `-Host` (the client's Host) set.
#[actix_rt::test]
async fn hop_by_hop_dropped_and_forwarded_headers_set() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    let req = "GET /api/cart/x?q=1 HTTP/1.1\r\n\
               Host: shop.example:8443\r\n\
               Connection: X-Secret\r\n\
               X-Secret: do-not-forward\r\n\
               Keep-Alive: timeout=5\r\n\
               TE: trailers\r\n\
               Upgrade: websocket\r\n\
               Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
               Authorization: Bearer user-token\r\n\
               X-Foo: bar\r\n\
               X-Forwarded-For: 203.0.113.7\r\n\
               \r\n";
    let (status, _, _) = raw_exchange(gw.addr, req.as_bytes()).await;
    assert_eq!(status, 200);
    let seen = cart.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    for dropped in ["x-secret", "keep-alive", "te", "upgrade", "proxy-authorization"] {
        assert!(r.header(dropped).is_none(), "{dropped} was forwarded: {:?}", r.headers);
    }
    if let Some(connection) = r.header("connection") {
        assert!(!connection.to_ascii_lowercase().contains("x-secret"), "{connection}");
        assert!(!connection.to_ascii_lowercase().contains("upgrade"), "{connection}");
    }
    assert_eq!(r.header("authorization"), Some("Bearer user-token"));
    assert_eq!(r.header("x-foo"), Some("bar"));
    assert_eq!(r.header("x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-forwarded-host"), Some("shop.example:8443"));
    assert_eq!(r.target, "/cart/x?q=1");
    gw.stop(false).await;
}

/// Without an incoming `X-Forwarded-For` the client's address is the whole
/// value, and the client cannot claim another scheme: mosaic sets
/// `X-Forwarded-Proto` from the connection it accepted (plain HTTP).
#[actix_rt::test]
async fn forwarded_headers_are_not_spoofable() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    let a = request(
        gw.addr,
        "GET",
        "/api/cart/x",
        &[("x-forwarded-proto", "https"), ("forwarded", "proto=https;host=evil.example")],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = cart.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"), "{:?}", seen[0].headers);
    assert_eq!(seen[0].header("x-forwarded-host"), Some(gw.addr.to_string().as_str()));
    gw.stop(false).await;
}

/// `X-Request-Id` is kept when the client sent one, generated otherwise; the
/// service receives it and the client gets the same value back.
#[actix_rt::test]
async fn request_id_is_forwarded_and_echoed() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    let kept =
        request(gw.addr, "GET", "/api/cart/x", &[("x-request-id", "req-abc-123")], None).await;
    assert_eq!(kept.header("x-request-id"), Some("req-abc-123"));
    let made = get(gw.addr, "/api/cart/x").await;
    let made_id = made.header("x-request-id").expect("generated id echoed").to_string();
    assert!(!made_id.is_empty() && made_id != "req-abc-123");
    let seen = cart.requests();
    assert_eq!(seen[0].header("x-request-id"), Some("req-abc-123"));
    assert_eq!(seen[1].header("x-request-id"), Some(made_id.as_str()));
    // Errors answered by mosaic itself carry it too.
    let miss = request(gw.addr, "GET", "/nowhere", &[("x-request-id", "r-404")], None).await;
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("x-request-id"), Some("r-404"));
    gw.stop(false).await;
}

/// The service's response headers come back as it sent them (repeated
/// ones repeated, values untouched), less hop-by-hop ones (RFC 9110's and
/// those its `Connection` lists); its `Date` is kept and not doubled, and its
/// `X-Request-Id` gives way to mosaic's.
#[actix_rt::test]
async fn response_headers_pass_through_without_hop_by_hop() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = "HTTP/1.1 200 OK\r\n\
                                      Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n\
                                      Connection: keep-alive, X-Hop\r\n\
                                      X-Hop: secret\r\n\
                                      Keep-Alive: timeout=5\r\n\
                                      Proxy-Connection: keep-alive\r\n\
                                      Set-Cookie: a=1\r\n\
                                      Set-Cookie: b=2\r\n\
                                      X-Request-Id: from-service\r\n\
                                      Content-Type: application/json\r\n\
                                      X-Custom: Value  With,Spaces\r\n\
                                      Content-Length: 2\r\n\
                                      \r\n{}";
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    let gw = start_gateway(&proxy_config(&[address], "")).await;
    let req = "GET /api/cart/x HTTP/1.1\r\nHost: shop\r\nX-Request-Id: client-id\r\n\r\n";
    for _ in 0..2 {
        let (status, headers, body) = raw_exchange(gw.addr, req.as_bytes()).await;
        assert_eq!(status, 200);
        assert_eq!(body, b"{}");
        let all = |name: &str| -> Vec<&str> {
            headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
        };
        assert_eq!(all("date"), ["Mon, 01 Jan 2024 00:00:00 GMT"], "{headers:?}");
        assert_eq!(all("set-cookie"), ["a=1", "b=2"], "{headers:?}");
        assert_eq!(all("x-request-id"), ["client-id"], "{headers:?}");
        assert_eq!(all("content-type"), ["application/json"], "{headers:?}");
        assert_eq!(all("x-custom"), ["Value  With,Spaces"], "{headers:?}");
        assert_eq!(all("content-length"), ["2"], "{headers:?}");
        for dropped in ["x-hop", "keep-alive", "proxy-connection"] {
            assert!(all(dropped).is_empty(), "{dropped} came back: {headers:?}");
        }
        for connection in all("connection") {
            assert!(!connection.to_ascii_lowercase().contains("x-hop"), "{headers:?}");
        }
    }
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// Errors

/// A breaker forced open by the operator refuses at once: 503
/// `{"error":"circuit_open","backend":"cart"}`, no call.
#[actix_rt::test]
async fn forced_open_breaker_is_503_circuit_open() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    let forced = request(
        gw.admin_addr,
        "POST",
        "/admin/backends/cart/breaker",
        &[("content-type", "application/json")],
        Some(br#"{"state":"open"}"#.to_vec()),
    )
    .await;
    assert_eq!(forced.status, 200, "{}", String::from_utf8_lossy(&forced.body));
    for method in ["GET", "POST"] {
        let a = request(gw.addr, method, "/api/cart/x", &[], Some(b"{}".to_vec())).await;
        assert_eq!(a.status, 503, "{method}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(error_body(&a), ("circuit_open".into(), "cart".into()));
    }
    assert_eq!(cart.calls(), 0);
    gw.stop(false).await;
}

/// With `max_in_flight = 1` and one request held by a slow service, a
/// concurrent request is refused at once with 503 `rejected`.
#[actix_rt::test]
async fn full_bulkhead_is_503_rejected() {
    let slow = Reply::Delay(Duration::from_millis(700), Box::new(Reply::ok(r#"{"slow":1}"#)));
    let (cart, gw) = one_cart(slow, "max_in_flight = 1").await;
    let addr = gw.addr;
    let held = actix_rt::spawn(async move { get(addr, "/api/cart/slow").await });
    assert!(eventually(Duration::from_secs(2), || cart.calls() == 1).await, "first call made");
    let refused = get(gw.addr, "/api/cart/other").await;
    assert_eq!(refused.status, 503);
    assert_eq!(error_body(&refused), ("rejected".into(), "cart".into()));
    assert!(refused.elapsed < Duration::from_millis(500), "refused at once: {:?}", refused.elapsed);
    let held = held.await.expect("held request");
    assert_eq!(held.status, 200);
    assert_eq!(cart.calls(), 1);
    // The slot is given back once the body was relayed.
    let after = get(gw.addr, "/api/cart/again").await;
    assert_eq!(after.status, 200);
    gw.stop(false).await;
}

/// A backend with no instance: 503 `no_instances`.
#[actix_rt::test]
async fn no_instances_is_503() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    gw.gateway()
        .backend("cart")
        .expect("backend")
        .actor
        .send(mosaic::backend::actor::SetInstances(vec![]))
        .await
        .expect("mailbox")
        .expect("handled");
    let a = get(gw.addr, "/api/cart/x").await;
    assert_eq!(a.status, 503);
    assert_eq!(error_body(&a), ("no_instances".into(), "cart".into()));
    assert_eq!(cart.calls(), 0);
    gw.stop(false).await;
}

/// A service that refuses connections: 502 `connect`.
#[actix_rt::test]
async fn dead_backend_is_502_connect() {
    let dead = FakeBackend::start(Reply::ok("{}")).kill();
    let gw = start_gateway(&proxy_config(&[dead.to_string()], "")).await;
    for method in ["GET", "POST"] {
        let a = request(gw.addr, method, "/api/cart/x", &[], Some(b"{}".to_vec())).await;
        assert_eq!(a.status, 502, "{method}");
        assert_eq!(error_body(&a), ("connect".into(), "cart".into()));
    }
    gw.stop(false).await;
}

/// A service slower than `timeout` to send its response headers: 504
/// `timeout`, answered close to the timeout.
#[actix_rt::test]
async fn slow_backend_is_504_timeout() {
    let slow = Reply::Delay(Duration::from_secs(3), Box::new(Reply::ok("{}")));
    let (_cart, gw) = one_cart(slow, "timeout = \"200ms\"").await;
    let a = get(gw.addr, "/api/cart/x").await;
    assert_eq!(a.status, 504);
    assert_eq!(error_body(&a), ("timeout".into(), "cart".into()));
    assert!(a.elapsed < Duration::from_millis(1000), "answered after {:?}", a.elapsed);

    let hang = FakeBackend::start(Reply::Hang);
    let gw2 = start_gateway(&proxy_config(&[hang.address()], "timeout = \"200ms\"")).await;
    let b = request(gw2.addr, "POST", "/api/cart/x", &[], Some(b"{}".to_vec())).await;
    assert_eq!(b.status, 504);
    assert_eq!(error_body(&b), ("timeout".into(), "cart".into()));
    gw.stop(false).await;
    gw2.stop(false).await;
}

// ---------------------------------------------------------------------------
// Retries

/// With one dead and one live instance and `retries = 1`, every GET
/// succeeds: a failed attempt is retried on the other instance.
#[actix_rt::test]
async fn idempotent_requests_are_retried_on_another_instance() {
    let dead = FakeBackend::start(Reply::ok("{}")).kill();
    let live = FakeBackend::start(Reply::ok(r#"{"live":true}"#));
    let extra = "retries = 1\nbreaker = { threshold = 100 }";
    let gw = start_gateway(&proxy_config(&[dead.to_string(), live.address()], extra)).await;
    for i in 0..6 {
        let a = get(gw.addr, &format!("/api/cart/item/{i}")).await;
        assert_eq!(a.status, 200, "GET {i}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json(), serde_json::json!({"live": true}));
    }
    assert_eq!(live.calls(), 6, "each GET reached the live instance exactly once");
    gw.stop(false).await;
}

/// A POST with a body is never retried: when it went to the dead instance
/// the client gets 502 and the live instance never sees it.
#[actix_rt::test]
async fn requests_with_bodies_are_never_retried() {
    let dead = FakeBackend::start(Reply::ok("{}")).kill();
    let live = FakeBackend::start(Reply::Json(201, r#"{"created":true}"#.into()));
    let extra = "retries = 1\nbreaker = { threshold = 100 }";
    let gw = start_gateway(&proxy_config(&[dead.to_string(), live.address()], extra)).await;
    let (mut created, mut failed) = (0, 0);
    for i in 0..8 {
        let body = format!(r#"{{"order":{i}}}"#).into_bytes();
        let a = request(gw.addr, "POST", "/api/cart/orders", &[], Some(body)).await;
        match a.status {
            201 => created += 1,
            502 => {
                assert_eq!(error_body(&a), ("connect".into(), "cart".into()));
                failed += 1;
            }
            other => panic!("POST {i}: unexpected {other}"),
        }
    }
    assert!(failed > 0, "round robin sent some POSTs to the dead instance");
    assert!(created > 0, "round robin sent some POSTs to the live instance");
    let posts = live.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, created, "no failed POST was retried on the live instance");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// Client faults are not backend faults

/// A client that breaks off its upload (announces a body, sends part of it,
/// then stops sending) is the client's fault: it must not count against the
/// backend's breaker, so well-behaved clients keep being served.
#[actix_rt::test]
async fn aborted_uploads_do_not_open_the_breaker() {
    let extra = "breaker = { threshold = 2, backoff = { kind = \"constant\", delay = \"10s\" } }";
    let (cart, gw) = one_cart(Reply::ok("{}"), extra).await;
    for _ in 0..3 {
        let mut stream = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
        stream
            .write_all(
                b"POST /api/cart/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
            )
            .await
            .expect("write");
        stream.shutdown().await.expect("half-close");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut out)).await;
    }
    let a = get(gw.addr, "/api/cart/x").await;
    assert_eq!(
        a.status,
        200,
        "breaker opened by client faults: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(cart.requests().iter().filter(|r| r.method == "POST").count(), 0);
    gw.stop(false).await;
}

/// A client uploading slowly (a chunked body spread over longer than the
/// backend's `timeout`) to a fast service still gets the service's answer:
/// `timeout` bounds the wait for the response headers, not the client's
/// upload, and a slow client must not count against the backend's breaker.
#[actix_rt::test]
async fn slow_upload_is_not_a_backend_timeout() {
    let (cart, gw) = one_cart(Reply::ok(r#"{"ok":true}"#), "timeout = \"300ms\"").await;
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /api/cart/slow HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    for i in 0..4u8 {
        stream
            .write_all(format!("1\r\n{}\r\n", (b'a' + i) as char).as_bytes())
            .await
            .expect("chunk");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stream.write_all(b"0\r\n\r\n").await.expect("end");
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut out))
        .await
        .expect("answer")
        .expect("read");
    let answer = String::from_utf8_lossy(&out[..n]).to_string();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = cart.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"abcd");
    gw.stop(false).await;
}

/// The client's own `Forwarded` and `X-Forwarded-Host` claims never reach
/// the service; mosaic's view replaces them.
#[actix_rt::test]
async fn client_forwarding_claims_are_replaced() {
    let (cart, gw) = one_cart(Reply::ok("{}"), "").await;
    let raw_request = b"GET /api/cart/x HTTP/1.1\r\nHost: shop.example\r\nForwarded: for=6.6.6.6;host=evil\r\nX-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n";
    let (status, _, _) = raw_exchange(gw.addr, raw_request).await;
    assert_eq!(status, 200);
    let seen = &cart.requests()[0];
    assert_eq!(seen.header("forwarded"), None);
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    gw.stop(false).await;
}

/// HEAD passes through: the service's status and headers, no body.
#[actix_rt::test]
async fn head_passes_through() {
    let (cart, gw) = one_cart(Reply::ok(r#"{"items":[1,2,3]}"#), "").await;
    let answer = request(gw.addr, "HEAD", "/api/cart/items", &[], None).await;
    assert_eq!(answer.status, 200);
    assert!(answer.body.is_empty());
    assert_eq!(cart.requests()[0].method, "HEAD");
    gw.stop(false).await;
}

/// A client that stops sending its request body for `server.client_timeout`
/// gets 408, and the backend's breaker does not count it.
#[actix_rt::test]
async fn stalled_upload_is_408_and_not_a_backend_fault() {
    let cart = FakeBackend::start(Reply::ok("{}"));
    let toml = proxy_config(
        &[cart.address()],
        "breaker = { threshold = 1, backoff = { kind = \"constant\", delay = \"10s\" } }",
    )
    .replacen("workers = 1", "workers = 1\nclient_timeout = \"1s\"", 1);
    let gw = start_gateway(&toml).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    stream
        .write_all(b"POST /api/cart/items HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await
        .expect("write");
    let mut out = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut out))
        .await
        .expect("answered within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&out[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Threshold 1: had the stall counted, the breaker would now be open.
    let next = request(gw.addr, "GET", "/api/cart/items", &[], None).await;
    assert_eq!(next.status, 200);
    gw.stop(false).await;
}
