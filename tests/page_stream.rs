//! Streamed pages (SPEC.md "Streaming to the client"): a composed route
//! asked with `Accept: text/event-stream` answers one `section` event per
//! section as each is final, then the `page` event, read here from a raw
//! socket so that arrival times, chunks and framing are the client's own.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// product (required), price, recommendations; `price_extra` and
/// `recs_extra` go into those backends' tables.
fn stream_config(
    product: &FakeBackend,
    price: &FakeBackend,
    recs: &FakeBackend,
    price_extra: &str,
    timeout: &str,
    deadline: &str,
) -> String {
    format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"{timeout}\"
retries = 0
{}{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"{deadline}\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"price\", backend = \"pricing\", path = \"/prices/{{id}}\" }},
  {{ name = \"recommendations\", backend = \"recommendations\", path = \"/recommendations/{{id}}\" }},
]
",
        backend("catalog", &[product.address()], ""),
        backend("pricing", &[price.address()], price_extra),
        backend("recommendations", &[recs.address()], ""),
    )
}

/// One server-sent event as the client got it.
#[derive(Debug, Clone)]
struct Event {
    /// `event:`.
    name: String,
    /// The `data:` lines joined with LF, as a browser joins them.
    data: String,
    /// From sending the request to the chunk that completed the event.
    at: Duration,
}

impl Event {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }
}

/// What a stream request got: the head, each chunk with its arrival time,
/// the events, and whether the last chunk came.
#[derive(Debug)]
struct Streamed {
    status: u16,
    headers: Vec<(String, String)>,
    head_at: Duration,
    chunks: Vec<(Vec<u8>, Duration)>,
    events: Vec<Event>,
    /// The body when not chunked (a JSON page).
    body: Vec<u8>,
    ended: bool,
}

impl Streamed {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn section(&self, name: &str) -> &Event {
        self.events
            .iter()
            .find(|e| e.name == "section" && e.json()["name"] == name)
            .unwrap_or_else(|| panic!("no section event for {name}: {:#?}", self.events))
    }

    fn names(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| match e.name.as_str() {
                "section" => e.json()["name"].as_str().unwrap_or("?").to_string(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// A raw HTTP/1.1 client on one connection.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: Vec::new() }
    }

    async fn fill(&mut self, within: Duration, started: Instant) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Sends a GET with `accept` and reads the answer to its end (or
    /// `within`), timing every chunk.
    async fn get(&mut self, path: &str, accept: &str, within: Duration) -> Streamed {
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: mosaic.test\r\naccept: {accept}\r\n\r\n");
        let started = Instant::now();
        self.stream.write_all(request.as_bytes()).await.expect("send");
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            assert!(self.fill(within, started).await, "no response head: {:?}", self.buf);
        };
        let head_at = started.elapsed();
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).expect("status line");
        let status: u16 = status.parse().expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut out = Streamed {
            status,
            headers,
            head_at,
            chunks: Vec::new(),
            events: Vec::new(),
            body: Vec::new(),
            ended: false,
        };
        if let Some(len) = out.header("content-length") {
            let len: usize = len.parse().expect("length");
            while self.buf.len() < len {
                assert!(self.fill(within, started).await, "short body");
            }
            out.body = self.buf.drain(..len).collect();
            out.ended = true;
            return out;
        }
        assert_eq!(out.header("transfer-encoding"), Some("chunked"), "{out:?}");
        let mut data = Vec::new();
        // One chunk at a time: size line, bytes, CRLF; a read when the
        // buffer holds no whole chunk.
        loop {
            if let Some(line_end) = find(&self.buf, b"\r\n") {
                let size = std::str::from_utf8(&self.buf[..line_end]).expect("size");
                let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
                if self.buf.len() >= line_end + 2 + size + 2 {
                    let bytes: Vec<u8> = self.buf[line_end + 2..line_end + 2 + size].to_vec();
                    self.buf.drain(..line_end + 2 + size + 2);
                    if size == 0 {
                        out.ended = true;
                        break;
                    }
                    let at = started.elapsed();
                    data.extend_from_slice(&bytes);
                    out.chunks.push((bytes, at));
                    while let Some(end) = find(&data, b"\n\n") {
                        let text = String::from_utf8(data[..end].to_vec()).expect("utf8");
                        data.drain(..end + 2);
                        out.events.push(parse_event(&text, at));
                    }
                    continue;
                }
            }
            if !self.fill(within, started).await {
                break;
            }
        }
        out
    }
}

fn parse_event(text: &str, at: Duration) -> Event {
    let mut name = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if let Some(value) = line.strip_prefix("event: ") {
            name = value.to_string();
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push(value);
        } else {
            panic!("unexpected line {line:?} in event {text:?}");
        }
    }
    Event { name, data: data.join("\n"), at }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

const SSE: &str = "text/event-stream";

/// The fast sections reach the client while the slow one is still being
/// waited for: each event is flushed the moment its section is final, in
/// finishing order, and the page event comes last.
#[actix_rt::test]
async fn events_arrive_in_finishing_order_before_the_slow_section_answers() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::Delay(
        Duration::from_millis(300),
        Box::new(Reply::ok(r#"{"amount":1999}"#)),
    ));
    let recs = FakeBackend::start(Reply::Delay(
        Duration::from_millis(40),
        Box::new(Reply::ok(r#"{"items":[1]}"#)),
    ));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "1s", "2s")).await;
    // Warm the connections to the back ends.
    let _ = get(gw.addr, "/products/1").await;

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    assert_eq!(got.header("cache-control"), Some("no-store"));
    assert!(got.header("content-length").is_none());
    assert!(got.header("x-request-id").is_some());
    assert!(got.header("x-mosaic-complete").is_none(), "not known when the head is sent");
    assert!(got.ended, "the stream ends with its last chunk");
    assert_eq!(got.names(), ["product", "recommendations", "price", "page"]);

    let fast = got.section("recommendations").at;
    let slow = got.section("price").at;
    assert!(got.head_at < Duration::from_millis(150), "head at {:?}", got.head_at);
    assert!(got.section("product").at < Duration::from_millis(150), "{got:#?}");
    assert!(fast < Duration::from_millis(200), "fast section at {fast:?}, long before 300 ms");
    assert!(slow >= Duration::from_millis(300), "slow section at {slow:?}");
    assert_eq!(got.section("price").json()["meta"]["source"], "live");
    assert_eq!(got.section("price").json()["body"]["amount"], 1999);
    assert_eq!(got.section("product").json()["meta"]["status"], 200);

    let page = got.events.last().expect("page event").json();
    assert_eq!(page["_mosaic"]["complete"], true);
    assert_eq!(page["_mosaic"]["sections"]["price"]["source"], "live");
    assert!(page["_mosaic"]["elapsed_ms"].as_u64().expect("elapsed") >= 300);
    gw.stop(false).await;
}

/// An optional section that never answers still gets its event, labelled
/// as the page would label it, and the page event comes by the deadline.
#[actix_rt::test]
async fn a_hung_optional_section_gets_its_event_and_the_page_by_the_deadline() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::Hang);
    let recs = FakeBackend::start(Reply::ok(r#"{"items":[]}"#));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "5s", "400ms")).await;

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.status, 200);
    assert!(got.ended);
    assert_eq!(got.names().last().map(String::as_str), Some("page"));
    let price = got.section("price");
    let event = price.json();
    assert_eq!(event["body"], serde_json::Value::Null);
    assert_eq!(event["meta"]["source"], "none");
    assert_eq!(event["meta"]["error"], "deadline");
    let page_at = got.events.last().expect("page").at;
    assert!(price.at >= Duration::from_millis(400), "cut at the deadline: {:?}", price.at);
    assert!(page_at < Duration::from_millis(700), "page event by the deadline: {page_at:?}");
    let page = got.events.last().expect("page").json();
    assert_eq!(page["_mosaic"]["complete"], false);
    assert_eq!(page["_mosaic"]["sections"]["price"], event["meta"], "same meta as the page");
    gw.stop(false).await;
}

/// A required section that fails gives the ordinary JSON page (502 for a
/// fault, 504 for time, the service's 4xx), not a stream.
#[actix_rt::test]
async fn a_failed_required_section_answers_the_json_page_not_a_stream() {
    let product = FakeBackend::scripted(|req| match req.target.as_str() {
        "/products/broken" => Reply::Json(500, "{}".into()),
        "/products/slow" => Reply::Hang,
        _ => Reply::Json(404, r#"{"error":"no such product"}"#.into()),
    });
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1}"#));
    let recs = FakeBackend::start(Reply::ok(r#"{"items":[]}"#));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "300ms", "400ms")).await;

    let mut client = Client::connect(gw.addr).await;
    for (path, status, complete) in [
        ("/products/broken", 502, "false"),
        ("/products/slow", 504, "false"),
        // A 4xx is an answer: the page takes it and stays complete.
        ("/products/9", 404, "true"),
    ] {
        let got = client.get(path, SSE, Duration::from_secs(5)).await;
        assert_eq!(got.status, status, "{path}");
        assert_eq!(got.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(got.header("x-mosaic-complete"), Some(complete), "{path}");
        let page: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON page");
        assert_eq!(page["price"]["amount"], 1, "{path}: the whole page");
        assert!(page["_mosaic"]["sections"]["product"].is_object(), "{path}");
    }
    gw.stop(false).await;
}

/// Bodies are embedded in their events unchanged: spacing, escapes,
/// non-ASCII, and line breaks (carried on continuation `data:` lines, so
/// the joined data holds the body byte for byte).
#[actix_rt::test]
async fn events_carry_bodies_byte_for_byte() {
    let product_body = "{ \"id\" : \"42\",\t\"name\": \"L\\u00e4mpe \\\"x\\\" ü\" }";
    let price_body = "{\n  \"amount\": 1999,\n  \"tags\": [\n    \"a\"\n  ]\n}\n";
    let product = FakeBackend::start(Reply::ok(product_body));
    let price = FakeBackend::start(Reply::ok(price_body));
    let recs = FakeBackend::start(Reply::ok("[]"));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "1s", "2s")).await;

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.status, 200);
    for (name, body) in
        [("product", product_body), ("price", price_body), ("recommendations", "[]")]
    {
        let data = &got.section(name).data;
        let prefix = format!("{{\"name\":\"{name}\",\"body\":");
        assert!(data.starts_with(&prefix), "{data:?}");
        let embedded = &data[prefix.len()..prefix.len() + body.len()];
        assert_eq!(embedded, body, "{name} byte for byte");
        assert!(data[prefix.len() + body.len()..].starts_with(",\"meta\":{"), "{data:?}");
    }
    // The JSON page embeds the same bytes.
    let page = get(gw.addr, "/products/42").await;
    assert!(String::from_utf8_lossy(&page.body).contains(price_body));
    gw.stop(false).await;
}

/// Fresh cache hits need no call: they are the first events, sent at once,
/// even while a required section is still being fetched.
#[actix_rt::test]
async fn a_cache_hit_is_the_first_event() {
    let product = FakeBackend::start(Reply::Delay(
        Duration::from_millis(100),
        Box::new(Reply::ok(r#"{"id":"42"}"#)),
    ));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999}"#));
    let recs = FakeBackend::start(Reply::Delay(
        Duration::from_millis(50),
        Box::new(Reply::ok(r#"{"items":[]}"#)),
    ));
    let cached = "cache = { ttl = \"1h\" }";
    let gw = start_gateway(&stream_config(&product, &price, &recs, cached, "1s", "2s")).await;
    let warm = get(gw.addr, "/products/42").await;
    assert_eq!(warm.meta("price")["source"], "live");

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.names(), ["price", "recommendations", "product", "page"]);
    let first = got.events[0].json();
    assert_eq!(first["meta"]["source"], "cache");
    assert_eq!(first["body"]["amount"], 1999);
    assert_eq!(price.calls(), 1, "no call for the hit");
    // The head waited for the required section; the hit went out with it.
    assert!(got.head_at >= Duration::from_millis(100), "{:?}", got.head_at);
    assert_eq!(
        got.chunks[0].0,
        format!("event: section\ndata: {}\n\n", got.events[0].data).into_bytes()
    );
    gw.stop(false).await;
}

/// A route without required sections sends its head at once and the hit
/// as its first chunk, before any call answers.
#[actix_rt::test]
async fn without_required_sections_the_head_and_the_hits_go_out_at_once() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::Delay(
        Duration::from_millis(200),
        Box::new(Reply::ok(r#"{"amount":1}"#)),
    ));
    let gw = start_gateway(&format!(
        "{LISTEN_ANY}
[defaults]
retries = 0
{}{}
[[routes]]
path = \"/p/{{id}}\"
deadline = \"1s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\" }},
  {{ name = \"price\", backend = \"pricing\", path = \"/prices/{{id}}\" }},
]
",
        backend("catalog", &[product.address()], "cache = { ttl = \"1h\" }"),
        backend("pricing", &[price.address()], ""),
    ))
    .await;
    let _ = get(gw.addr, "/p/42").await;

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/p/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.names(), ["product", "price", "page"]);
    assert!(got.head_at < Duration::from_millis(100), "{:?}", got.head_at);
    assert!(got.chunks[0].1 < Duration::from_millis(100), "{:?}", got.chunks[0].1);
    assert!(got.section("price").at >= Duration::from_millis(200));
    gw.stop(false).await;
}

/// On the wire: chunked, one chunk per event, each readable from the
/// socket as soon as it is sent (the slow section's chunk comes alone, well
/// after the others), the last chunk ends the stream, and the connection
/// serves the next request.
#[actix_rt::test]
async fn the_stream_is_chunked_and_flushed_on_the_socket() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::Delay(
        Duration::from_millis(300),
        Box::new(Reply::ok(r#"{"amount":1999}"#)),
    ));
    let recs = FakeBackend::start(Reply::ok(r#"{"items":[]}"#));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "1s", "2s")).await;

    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.header("transfer-encoding"), Some("chunked"));
    assert!(got.ended, "terminated by the last chunk");
    assert_eq!(got.chunks.len(), 4, "one chunk per event: {:#?}", got.chunks);
    for (chunk, _) in &got.chunks {
        assert!(chunk.starts_with(b"event: ") && chunk.ends_with(b"\n\n"), "{chunk:?}");
    }
    let early: Vec<_> =
        got.chunks.iter().filter(|(_, at)| *at < Duration::from_millis(150)).collect();
    assert_eq!(early.len(), 2, "product and recommendations before price: {:#?}", got.chunks);
    // The connection is kept: the next request is answered on it.
    let next = client.get("/products/42", "application/json", Duration::from_secs(5)).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.header("content-type"), Some("application/json"));
    gw.stop(false).await;
}

/// `text/event-stream` anywhere in `Accept` asks for the stream; `q=0`,
/// wildcards and HEAD keep the JSON page.
#[actix_rt::test]
async fn accept_decides_between_the_stream_and_the_page() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1}"#));
    let recs = FakeBackend::start(Reply::ok("[]"));
    let gw = start_gateway(&stream_config(&product, &price, &recs, "", "1s", "2s")).await;
    let mut client = Client::connect(gw.addr).await;
    for (accept, streams) in [
        ("application/json, text/event-stream;q=0.5", true),
        ("Text/Event-Stream", true),
        ("text/html,text/event-stream ; q=1", true),
        ("text/event-stream;q=0", false),
        ("text/event-stream; q=0.000", false),
        ("*/*", false),
        ("text/*", false),
        ("application/json", false),
    ] {
        let got = client.get("/products/42", accept, Duration::from_secs(5)).await;
        let expected = if streams { "text/event-stream" } else { "application/json" };
        assert_eq!(got.header("content-type"), Some(expected), "{accept}");
    }
    let head = request(gw.addr, "HEAD", "/products/42", &[("accept", SSE)], None).await;
    assert_eq!(head.header("content-type"), Some("application/json"));
    gw.stop(false).await;
}

/// `stream = false` on a route: `Accept: text/event-stream` gets the JSON
/// page there.
#[actix_rt::test]
async fn a_route_with_stream_false_keeps_the_json_page() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1}"#));
    let recs = FakeBackend::start(Reply::ok("[]"));
    let config = stream_config(&product, &price, &recs, "", "1s", "2s").replacen(
        "deadline = \"2s\"",
        "deadline = \"2s\"\nstream = false",
        1,
    );
    let gw = start_gateway(&config).await;
    let mut client = Client::connect(gw.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("application/json"));
    let page: serde_json::Value = serde_json::from_slice(&got.body).expect("JSON page");
    assert_eq!(page["price"]["amount"], 1);
    gw.stop(false).await;
}

/// A section the shared tier (Redis) answers is an event like any other,
/// labelled `cache` from the `shared` tier: replica B streams what replica
/// A fetched, without calling the service.
#[actix_rt::test]
async fn a_shared_tier_hit_is_an_event() {
    use support::redis::{page_with_shared_tier, unique_prefix, wait_for_keys, SHARED_REDIS};
    let prefix = unique_prefix("stream");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999}"#));
    let config =
        page_with_shared_tier(LISTEN_ANY, SHARED_REDIS, &prefix, &product, &price, "ttl = \"1h\"");
    let a = start_gateway(&config).await;
    let b = start_gateway(&config).await;
    for gateway in [&a, &b] {
        let until = Instant::now() + Duration::from_secs(10);
        while get(gateway.admin_addr, "/admin/redis").await.json()["redis"]["usable"] != true {
            assert!(Instant::now() < until, "redis not usable within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(get(a.addr, "/products/42").await.meta("price")["source"], "live");
    wait_for_keys(SHARED_REDIS, &prefix, 1).await;

    let mut client = Client::connect(b.addr).await;
    let got = client.get("/products/42", SSE, Duration::from_secs(5)).await;
    assert_eq!(got.status, 200);
    let event = got.section("price").json();
    assert_eq!(event["meta"]["source"], "cache");
    assert_eq!(event["meta"]["tier"], "shared");
    assert_eq!(event["body"]["amount"], 1999);
    assert_eq!(price.calls(), 1, "B did not call the service");
    assert_eq!(got.names().last().map(String::as_str), Some("page"));
    a.stop(false).await;
    b.stop(false).await;
}
