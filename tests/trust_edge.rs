//! What the edge must not trust: request smuggling through `Upgrade` and
//! `CONNECT`, slow uploads holding the bulkhead, path tricks on proxy
//! routes, pipelined bytes after `Connection: close`, spoofed `X-Real-IP`,
//! junk `Host` values, cache keys that collapse non-UTF-8 credentials, and a
//! reload that forgets a Consul backend's instances.
//!
//! Everything is checked on raw sockets against what a real service
//! recorded (`FakeBackend`, or `RawBackend` where header bytes must be
//! exact): the service is the one that must never see the hostile request.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic::gateway::RunningGateway;
use support::consul::{ConsulDouble, Instance};
use support::raw_wire::{describe, status_of, Next, RawBackend, RawConn, RawResponse};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the fake cart answers: marked, so its answers are told apart from
/// mosaic's own.
const CART_BODY: &str = r#"{"from":"cart"}"#;

/// `[server]` with extra keys (`LISTEN_ANY` plus `server_extra`), one `cart`
/// backend on `instances` with `backend_extra`, proxied at `/api/cart/` →
/// `/cart/`, and a page `/pages/{id}` with one optional `cart` section.
fn config(instances: &[String], server_extra: &str, backend_extra: &str) -> String {
    format!(
        "{}
[defaults]
timeout = \"2s\"
retries = 0
{}
[[routes]]
path = \"/pages/{{id}}\"
deadline = \"2s\"
sections = [ {{ name = \"cart\", backend = \"cart\", path = \"/cart/{{id}}\" }} ]

[[proxy]]
prefix = \"/api/cart/\"
backend = \"cart\"
rewrite = \"/cart/\"
",
        LISTEN_ANY.replacen("workers = 1", &format!("workers = 1\n{server_extra}"), 1),
        backend("cart", instances, backend_extra),
    )
}

async fn cart_gateway(server_extra: &str) -> (FakeBackend, RunningGateway) {
    let cart = FakeBackend::start(Reply::ok(CART_BODY));
    let gw = start_gateway(&config(&[cart.address()], server_extra, "")).await;
    (cart, gw)
}

fn targets(cart: &FakeBackend) -> Vec<String> {
    cart.requests().iter().map(|r| format!("{} {}", r.method, r.target)).collect()
}

// ---------------------------------------------------------------------------
// 1. Smuggling through `Upgrade` and `CONNECT`

/// A second request hidden after the first one's body.
const SMUGGLED: &[u8] = b"GET /admin/smuggled HTTP/1.1\r\nHost: x\r\nX-User-Id: admin\r\n\r\n";

/// Sends `first` (and `later`, 100 ms after, when given) on one connection
/// to a gateway proxying `/api/cart/` to a fake, and reads every answer
/// until the gateway closes or stays quiet for a second. Returns the fake
/// (to look at what it received) and the answers.
async fn smuggle(first: &[u8], later: Option<&[u8]>) -> (FakeBackend, Vec<RawResponse>, bool) {
    // client_timeout bounds how long today's gateway waits for the "rest"
    // of a body it wrongly reads until EOF.
    let (cart, gw) = cart_gateway("client_timeout = \"1s\"").await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(first).await;
    if let Some(later) = later {
        tokio::time::sleep(Duration::from_millis(100)).await;
        conn.send(later).await;
    }
    let (responses, closed) = conn.drain(Duration::from_secs(6), Duration::from_secs(1)).await;
    gw.stop(false).await;
    (cart, responses, closed)
}

/// The service got exactly the one request the client framed: `method
/// /cart/a` with exactly `body` and no `Upgrade`; nothing it ever recorded
/// is the smuggled request. The client got the service's answer first;
/// anything after it is mosaic's own refusal or 404, never the service's.
fn assert_not_smuggled(cart: &FakeBackend, responses: &[RawResponse], method: &str, body: &[u8]) {
    let seen = cart.requests();
    let answers: Vec<String> =
        responses.iter().map(|r| format!("{} {}", r.status, r.text())).collect();
    for r in &seen {
        assert!(
            !r.target.contains("smuggled"),
            "the smuggled request reached the service: {:?} (client got {answers:?})",
            targets(cart)
        );
    }
    assert_eq!(seen.len(), 1, "exactly one request at the service: {:?}", targets(cart));
    let r = &seen[0];
    assert_eq!((r.method.as_str(), r.target.as_str()), (method, "/cart/a"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(body),
        "the body is what Content-Length framed"
    );
    assert!(r.header("upgrade").is_none(), "Upgrade forwarded: {:?}", r.headers);
    assert!(!responses.is_empty(), "no answer at all");
    assert_eq!(responses[0].status, 200, "first answer: {answers:?}");
    assert_eq!(responses[0].text(), CART_BODY, "first answer: {answers:?}");
    for later in &responses[1..] {
        assert!(
            later.status >= 400 && !later.text().contains("\"from\""),
            "a later answer came from the service: {answers:?}"
        );
    }
}

/// `POST` with `Upgrade: websocket`, `Connection: Upgrade` and
/// `Content-Length: 5`: the body is the 5 bytes `hello`, and the request
/// written right after them is not part of it. actix-http reads an upgrade
/// request's body until EOF, ignoring Content-Length; mosaic then relays
/// those bytes to the service on a connection framed by Content-Length, so
/// the service parses them as a second request.
#[actix_rt::test]
async fn upgrade_with_content_length_cannot_smuggle_a_request() {
    let mut bytes = b"POST /api/cart/a HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nContent-Length: 5\r\n\r\nhello"
        .to_vec();
    bytes.extend_from_slice(SMUGGLED);
    let (cart, responses, _) = smuggle(&bytes, None).await;
    assert_not_smuggled(&cart, &responses, "POST", b"hello");
}

/// The same with `GET` (a GET may carry a body).
#[actix_rt::test]
async fn upgrade_get_with_content_length_cannot_smuggle_a_request() {
    let mut bytes = b"GET /api/cart/a HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nContent-Length: 5\r\n\r\nhello"
        .to_vec();
    bytes.extend_from_slice(SMUGGLED);
    let (cart, responses, _) = smuggle(&bytes, None).await;
    assert_not_smuggled(&cart, &responses, "GET", b"hello");
}

/// The same, the hidden request sent 100 ms after the body (a separate
/// read on the gateway's side).
#[actix_rt::test]
async fn upgrade_with_content_length_cannot_smuggle_a_later_request() {
    let bytes = b"POST /api/cart/a HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nContent-Length: 5\r\n\r\nhello";
    let (cart, responses, _) = smuggle(bytes, Some(SMUGGLED)).await;
    assert_not_smuggled(&cart, &responses, "POST", b"hello");
}

/// A bodiless `GET` with `Upgrade: websocket` (no `websocket = true` on the
/// route, so it is plain HTTP): the bytes after its head are the next
/// request on the connection, never relayed to the service.
#[actix_rt::test]
async fn upgrade_without_body_cannot_smuggle_a_request() {
    let mut bytes =
        b"GET /api/cart/a HTTP/1.1\r\nHost: shop\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            .to_vec();
    bytes.extend_from_slice(SMUGGLED);
    let (cart, responses, _) = smuggle(&bytes, None).await;
    assert_not_smuggled(&cart, &responses, "GET", b"");
}

/// `CONNECT` to a proxy path is refused (405 or 400) and never reaches the
/// service: actix-http treats everything after a CONNECT head as a tunnel.
#[actix_rt::test]
async fn connect_to_a_proxy_path_never_reaches_the_service() {
    let (cart, gw) = cart_gateway("client_timeout = \"1s\"").await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(b"CONNECT /api/cart/a HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let next = conn.next(Duration::from_secs(5)).await;
    // Give a relayed request time to arrive before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cart.calls(), 0, "CONNECT reached the service: {:?}", targets(&cart));
    match next {
        Next::Response(r) => {
            assert!(matches!(r.status, 400 | 405), "CONNECT answered {}: {}", r.status, r.text())
        }
        other => panic!("CONNECT: expected 405 or 400, got {}", describe(&other)),
    }
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 2. Slow uploads and the bulkhead

/// Sends a `POST` announcing 100 body bytes, then one byte every 500 ms,
/// until the gateway answers or closes (at most 8 s). `headed` is counted
/// up once the head is out, `answered` once an answer came. Returns the
/// status (`None`: closed without one) and when it came, from the start.
async fn drip_upload(
    addr: SocketAddr,
    headed: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
) -> (Option<u16>, Duration, String) {
    let started = Instant::now();
    let mut conn = RawConn::connect(addr).await;
    conn.send(
        b"POST /api/cart/up HTTP/1.1\r\nHost: shop\r\nContent-Type: application/octet-stream\r\n\
          Content-Length: 100\r\n\r\nx",
    )
    .await;
    headed.fetch_add(1, Ordering::SeqCst);
    while started.elapsed() < Duration::from_secs(8) {
        match conn.next(Duration::from_millis(500)).await {
            Next::Silent(_) => {
                conn.send(b"x").await;
            }
            Next::Response(r) => {
                answered.fetch_add(1, Ordering::SeqCst);
                return (Some(r.status), started.elapsed(), r.text());
            }
            closed @ Next::Closed(_) => {
                answered.fetch_add(1, Ordering::SeqCst);
                return (None, started.elapsed(), describe(&closed));
            }
        }
    }
    (None, started.elapsed(), "no answer within 8 s".into())
}

/// Eight clients dripping uploads (one byte per 500 ms) to a backend whose
/// bulkhead holds four do not starve it: while they drip, other clients'
/// proxied GETs and a page with a section on that backend are served (200,
/// section `live`), never 503 `rejected`. `server.body_timeout = "2s"`
/// bounds the whole body: each dripping upload gets 408 within 3.5 s of
/// starting, and the service never receives one as a complete request.
#[actix_rt::test]
async fn slow_uploads_do_not_exhaust_the_bulkhead() {
    let cart = FakeBackend::scripted(|r| {
        if r.method == "POST" {
            Reply::ok(r#"{"stored":true}"#)
        } else {
            Reply::ok(r#"{"items":[]}"#)
        }
    });
    let toml = config(
        &[cart.address()],
        "client_timeout = \"5s\"\nbody_timeout = \"2s\"",
        "max_in_flight = 4",
    );
    let gw = start_gateway(&toml).await;
    let headed = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let drips: Vec<_> = (0..8)
        .map(|_| actix_rt::spawn(drip_upload(gw.addr, headed.clone(), answered.clone())))
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || headed.load(Ordering::SeqCst) == 8).await,
        "the eight uploads started"
    );
    // Mid-drip: each has sent a byte or two more.
    tokio::time::sleep(Duration::from_millis(600)).await;

    for i in 0..4 {
        let a = get(gw.addr, &format!("/api/cart/items?n={i}")).await;
        assert_eq!(
            a.status,
            200,
            "GET {i} while uploads drip: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert_eq!(a.json(), serde_json::json!({"items": []}));
    }
    let page = get(gw.addr, "/pages/1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.meta("cart")["source"], "live", "{}", String::from_utf8_lossy(&page.body));
    assert!(page.meta("cart")["error"].is_null(), "{}", String::from_utf8_lossy(&page.body));
    assert_eq!(
        answered.load(Ordering::SeqCst),
        0,
        "the checks ran while every upload was still dripping"
    );

    for (i, drip) in drips.into_iter().enumerate() {
        let (status, after, what) = drip.await.expect("drip task");
        assert_eq!(status, Some(408), "upload {i}: {what} after {after:?}");
        assert!(after <= Duration::from_millis(3500), "upload {i}: 408 only after {after:?}");
    }
    let posts: Vec<String> = targets(&cart).into_iter().filter(|t| t.starts_with("POST")).collect();
    assert!(posts.is_empty(), "an incomplete upload reached the service whole: {posts:?}");
    // Stalled clients are not the backend's fault: it still serves.
    assert_eq!(get(gw.addr, "/api/cart/after").await.status, 200);
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 3. Path hygiene on proxy routes

/// `GET target` on its own connection (closed after the answer): the status.
async fn raw_status(addr: SocketAddr, target: &[u8]) -> Option<u16> {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n");
    status_of(addr, &request, Duration::from_secs(5)).await
}

/// Ways out of the prefix that a service (or a servlet container, or IIS)
/// decodes or normalises into `..` + `/`: an encoded slash or backslash
/// after dots, a path parameter after dots, a raw backslash, encoded dots.
/// Each gets 400 and the service never sees it. Dots inside names and
/// encoded slashes that are not part of a dot segment still pass, as sent.
#[actix_rt::test]
async fn proxy_paths_cannot_climb_out_of_the_prefix() {
    let (cart, gw) = cart_gateway("").await;
    let refused: &[&[u8]] = &[
        b"/api/cart/..%2fadmin",
        b"/api/cart/%2e%2e%2fadmin",
        b"/api/cart/..;/admin",
        b"/api/cart/..%5cadmin",
        b"/api/cart/..\\admin",
        b"/api/cart/%2E%2E%2Fadmin",
        b"/api/cart/.%2e/admin",
    ];
    let mut wrong = Vec::new();
    for target in refused {
        let status = raw_status(gw.addr, target).await;
        if status != Some(400) {
            wrong.push(format!("{}: {status:?}", String::from_utf8_lossy(target)));
        }
    }
    let seen = targets(&cart);
    assert!(wrong.is_empty() && seen.is_empty(), "not 400: {wrong:?}; service saw {seen:?}");

    for (target, expected) in [
        ("/api/cart/a.b", "/cart/a.b"),
        ("/api/cart/...x", "/cart/...x"),
        ("/api/cart/a%2fb", "/cart/a%2fb"),
    ] {
        assert_eq!(raw_status(gw.addr, target.as_bytes()).await, Some(200), "{target}");
        let last = cart.requests().last().expect("a call").target.clone();
        assert!(last.eq_ignore_ascii_case(expected), "{target}: service saw {last}");
    }
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 4. Connection: close

/// A request with `Connection: close` is the last one on its connection:
/// the bytes the client pipelined after it are not served. Exactly one
/// answer, then EOF; the service never sees `/cart/b`.
#[actix_rt::test]
async fn nothing_is_served_after_connection_close() {
    let (cart, gw) = cart_gateway("").await;
    let mut conn = RawConn::connect(gw.addr).await;
    conn.send(
        b"GET /api/cart/a HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n\
          GET /api/cart/b HTTP/1.1\r\nHost: shop\r\n\r\n",
    )
    .await;
    let first = conn.response(Duration::from_secs(5)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let after = conn.next(Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = targets(&cart);
    assert!(
        matches!(&after, Next::Closed(rest) if rest.is_empty()),
        "after the close: {} (service saw {seen:?})",
        describe(&after)
    );
    assert_eq!(seen, ["GET /cart/a"], "the pipelined request reached the service");
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 5. X-Real-IP

/// `X-Real-IP` is a claim about the client's address like
/// `X-Forwarded-For`: a client's own value never reaches the service (it
/// sees none, or mosaic's view, the socket peer 127.0.0.1).
#[actix_rt::test]
async fn client_x_real_ip_never_reaches_the_service() {
    let (cart, gw) = cart_gateway("").await;
    let a = request(gw.addr, "GET", "/api/cart/x", &[("x-real-ip", "6.6.6.6")], None).await;
    assert_eq!(a.status, 200);
    let raw = b"GET /api/cart/y HTTP/1.1\r\nHost: shop\r\nX-Real-IP: 6.6.6.6\r\n\
                X-Real-Ip: 7.7.7.7\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(gw.addr, raw, Duration::from_secs(5)).await, Some(200));
    let seen = cart.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        let values: Vec<&str> =
            r.headers.iter().filter(|(n, _)| n == "x-real-ip").map(|(_, v)| v.as_str()).collect();
        assert!(
            values.is_empty() || values == ["127.0.0.1"],
            "{}: the service saw x-real-ip {values:?}",
            r.target
        );
    }
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 6. Host validation

/// A `Host` that is not `host[:port]` (RFC 9110's uri-host: reg-name, IPv4
/// or a bracketed IP literal; port: digits up to 65535) is a malformed
/// request: 400, and the service sees nothing (it would be passed on as
/// `X-Forwarded-Host`, which services use to build links and redirects).
/// Valid ones pass, with `X-Forwarded-Host` equal to them.
#[actix_rt::test]
async fn junk_host_is_400_and_valid_hosts_pass() {
    let (cart, gw) = cart_gateway("").await;
    let mut wrong = Vec::new();
    for host in ["a b", "x/y", "evil@x", "[::1", "a:99999x", ""] {
        let raw = format!("GET /api/cart/h HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let status = status_of(gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
        if status != Some(400) {
            wrong.push(format!("Host {host:?}: {status:?}"));
        }
    }
    let seen: Vec<String> = cart
        .requests()
        .iter()
        .map(|r| format!("{} x-forwarded-host={:?}", r.target, r.header("x-forwarded-host")))
        .collect();
    assert!(wrong.is_empty() && seen.is_empty(), "not 400: {wrong:?}; service saw {seen:?}");

    for host in ["shop.example:8443", "[::1]:8080"] {
        let raw = format!("GET /api/cart/ok HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let status = status_of(gw.addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status, Some(200), "Host {host}");
        let last = cart.requests().last().cloned().expect("a call");
        assert_eq!(last.header("x-forwarded-host"), Some(host));
    }
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 7. Cache key on bytes

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The page `/me/{id}` with its `Authorization` as raw bytes (awc refuses
/// non-UTF-8 values); the JSON page.
async fn page_with_auth(addr: SocketAddr, auth: &[u8]) -> RawResponse {
    let mut raw = b"GET /me/1 HTTP/1.1\r\nHost: shop\r\nAuthorization: ".to_vec();
    raw.extend_from_slice(auth);
    raw.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    support::raw_wire::exchange(addr, &raw, Duration::from_secs(5)).await
}

/// The cache key holds a forwarded header's bytes, not a lossy text of
/// them: two credentials that differ only in non-UTF-8 bytes (`Bearer \xff`
/// and `Bearer \xfe`, both "Bearer \u{fffd}" when decoded lossily) are two
/// users. Each gets its own call and the answer made for its own value;
/// the same value again is a cache hit (the cache is really on).
#[actix_rt::test]
async fn cache_key_keeps_header_bytes_apart() {
    let svc = RawBackend::start(|r| {
        let auth = r.header("authorization").unwrap_or_default();
        (200, format!(r#"{{"auth":"{}"}}"#, hex(auth)).into_bytes())
    });
    let toml = format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"1s\"
retries = 0
{}
[[routes]]
path = \"/me/{{id}}\"
deadline = \"2s\"
sections = [ {{ name = \"cart\", backend = \"carts\", path = \"/cart/{{id}}\", forward_headers = [\"authorization\"] }} ]
",
        backend("carts", &[svc.address()], "cache = { ttl = \"60s\" }"),
    );
    let gw = start_gateway(&toml).await;
    let ff = page_with_auth(gw.addr, b"Bearer \xff").await;
    let fe = page_with_auth(gw.addr, b"Bearer \xfe").await;
    let again = page_with_auth(gw.addr, b"Bearer \xff").await;
    let got = |r: &RawResponse| {
        let json = r.json();
        (json["cart"]["auth"].clone(), json["_mosaic"]["sections"]["cart"]["source"].clone())
    };
    let seen: Vec<String> =
        svc.requests().iter().map(|r| hex(r.header("authorization").unwrap_or_default())).collect();
    assert_eq!(
        (got(&ff), got(&fe)),
        (
            (serde_json::json!(hex(b"Bearer \xff")), serde_json::json!("live")),
            (serde_json::json!(hex(b"Bearer \xfe")), serde_json::json!("live")),
        ),
        "each credential gets its own answer (service saw {seen:?})"
    );
    assert_eq!(seen, [hex(b"Bearer \xff"), hex(b"Bearer \xfe")], "one call per credential");
    assert_eq!(got(&again), (serde_json::json!(hex(b"Bearer \xff")), serde_json::json!("cache")));
    gw.stop(false).await;
}

// ---------------------------------------------------------------------------
// 8. Reload keeps Consul instances

/// A TCP relay in front of the Consul double that holds each chunk sent to
/// the agent for `delay` before passing it on (a slow agent): a new
/// watch's first answer then comes at least that late.
struct SlowRelay {
    addr: SocketAddr,
    delay_ms: Arc<AtomicUsize>,
}

impl SlowRelay {
    async fn start(target: SocketAddr) -> SlowRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let delay_ms = Arc::new(AtomicUsize::new(0));
        let delay = delay_ms.clone();
        actix_rt::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                actix_rt::spawn(async move {
                    let Ok(agent) = tokio::net::TcpStream::connect(target).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_agent, mut to_agent) = agent.into_split();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            let wait = delay.load(Ordering::SeqCst) as u64;
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            if to_agent.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_agent.shutdown().await;
                    };
                    let down = async move {
                        let _ = tokio::io::copy(&mut from_agent, &mut to_client).await;
                        let _ = to_client.shutdown().await;
                    };
                    futures_util::future::join(up, down).await;
                });
            }
        });
        SlowRelay { addr, delay_ms }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as usize, Ordering::SeqCst);
    }
}

/// A page `/products/{id}` with one optional section on the Consul backend
/// `backend` (service `reviews`), with the given blocking `wait` and the
/// backend's `timeout`.
fn consul_config(consul: &str, backend: &str, wait: &str, timeout: &str) -> String {
    format!(
        "{LISTEN_ANY}
[discovery.consul]
address = \"{consul}\"
wait = \"{wait}\"

[defaults]
timeout = \"500ms\"
retries = 0

[backends.{backend}]
consul = {{ service = \"reviews\" }}
timeout = \"{timeout}\"

[[routes]]
path = \"/products/{{id}}\"
deadline = \"1s\"
sections = [ {{ name = \"reviews\", backend = \"{backend}\", path = \"/reviews/{{id}}\" }} ]
"
    )
}

/// Starts a gateway from `before` (a file) and waits for live pages from
/// the one instance the double has.
async fn consul_gateway(before: &str) -> (RunningGateway, tempfile::NamedTempFile) {
    let (gw, file) = start_gateway_from_file(before).await;
    let until = Instant::now() + Duration::from_secs(6);
    loop {
        let page = get(gw.addr, "/products/1").await;
        if page.meta("reviews")["source"] == "live" {
            break;
        }
        assert!(Instant::now() < until, "never live: {}", String::from_utf8_lossy(&page.body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (gw, file)
}

/// Writes `after`, reloads, and at once (no wait after the reload's answer)
/// asks for pages and `/admin/backends`: every page has its section live
/// from `instance`, none `no_instances`, and the admin API lists it.
async fn reload_and_check(
    gw: &RunningGateway,
    file: &tempfile::NamedTempFile,
    after: &str,
    backend: &str,
    instance: &FakeBackend,
) {
    std::fs::write(file.path(), after).expect("write config");
    let reloaded = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    let addr = gw.addr;
    let pages = futures_util::future::join_all((0..4).map(|_| get(addr, "/products/1")));
    let (pages, list) =
        futures_util::future::join(pages, get(gw.admin_addr, "/admin/backends")).await;
    let list = list.json();
    let entry = list["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|b| b["name"] == backend).cloned())
        .unwrap_or_else(|| panic!("no {backend} in {list}"));
    for page in &pages {
        let meta = page.meta("reviews");
        assert_eq!(
            (page.status, meta["source"].as_str(), meta["error"].as_str()),
            (200, Some("live"), None),
            "right after the reload ({}): {}",
            reloaded.json()["changes"],
            String::from_utf8_lossy(&page.body)
        );
        assert_eq!(page.json()["reviews"], serde_json::json!({"from": "a"}));
    }
    assert_eq!(entry["instances"], serde_json::json!([instance.address()]), "{entry}");
}

/// Changing only a Consul backend's `timeout` and reloading does not leave
/// it without instances until its new watch answers: the pages right after
/// the reload's answer are live. The agent answers within 400 ms (through
/// [`SlowRelay`]), so "until the new watch answers" is a window the pages
/// cannot miss by luck.
#[actix_rt::test]
async fn reload_of_a_consul_backend_keeps_its_instances() {
    let consul = ConsulDouble::start();
    let relay = SlowRelay::start(consul.addr).await;
    let a = FakeBackend::start(Reply::ok(r#"{"from":"a"}"#));
    consul.register(Instance::new("a", "reviews", a.addr));
    let before = consul_config(&relay.url(), "reload_timeout", "1s", "500ms");
    let (gw, file) = consul_gateway(&before).await;
    relay.set_delay(Duration::from_millis(400));
    let after = consul_config(&relay.url(), "reload_timeout", "1s", "700ms");
    reload_and_check(&gw, &file, &after, "reload_timeout", &a).await;
    gw.stop(false).await;
}

/// The same when the reload changes `[discovery.consul] wait` (every
/// Consul backend is rebuilt then), the agent again taking 400 ms.
#[actix_rt::test]
async fn reload_of_consul_settings_keeps_instances() {
    let consul = ConsulDouble::start();
    let relay = SlowRelay::start(consul.addr).await;
    let a = FakeBackend::start(Reply::ok(r#"{"from":"a"}"#));
    consul.register(Instance::new("a", "reviews", a.addr));
    let before = consul_config(&relay.url(), "reload_wait", "1s", "500ms");
    let (gw, file) = consul_gateway(&before).await;
    relay.set_delay(Duration::from_millis(400));
    let after = consul_config(&relay.url(), "reload_wait", "2s", "500ms");
    reload_and_check(&gw, &file, &after, "reload_wait", &a).await;
    gw.stop(false).await;
}

/// The same with Consul down at the time of the reload (SPEC: Consul down
/// keeps the last known instances): no race with the new watch's first
/// answer, the instances must be carried over. Pages stay live for the
/// next 1.5 s too.
#[actix_rt::test]
async fn reload_while_consul_is_down_keeps_instances() {
    let mut consul = ConsulDouble::start();
    let a = FakeBackend::start(Reply::ok(r#"{"from":"a"}"#));
    consul.register(Instance::new("a", "reviews", a.addr));
    let before = consul_config(&consul.url(), "reload_down", "1s", "500ms");
    let (gw, file) = consul_gateway(&before).await;
    consul.stop();
    let after = consul_config(&consul.url(), "reload_down", "1s", "700ms");
    reload_and_check(&gw, &file, &after, "reload_down", &a).await;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let page = get(gw.addr, "/products/1").await;
        assert_eq!(
            page.meta("reviews")["source"],
            "live",
            "{}",
            String::from_utf8_lossy(&page.body)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.stop(false).await;
}
