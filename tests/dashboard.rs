//! The live dashboard, as an operator meets it.
//!
//! In a real headless Chromium (Debian's, through chromedriver), against a
//! real gateway in front of the seven demo services as processes: every
//! backend has a tile; a killed service's tile turns open within 3 s and
//! closed again once it is back; "Force open" on the page sends the next
//! page's section to `circuit_open`; with a token the page asks for it,
//! says so when it is wrong and works with the right one; an unreachable
//! admin API shows a banner and the page reconnects. Any JavaScript error
//! in the console fails the test.
//!
//! Without a browser, `/admin/events` itself: a snapshot at once on
//! connect, the token when one is set, 503 past the stream limit, figures
//! that follow the load applied.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use browser::Browser;
use mosaic::admin::events::MAX_STREAMS;
use mosaic::demo::DemoServices;
use mosaic::gateway::RunningGateway;
use serde_json::Value;
use support::{FakeBackend, Reply, LISTEN_ANY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKENDS: [&str; 7] =
    ["catalog", "pricing", "reviews", "cart", "orders", "inventory", "recommendations"];

/// The demo services as processes and a gateway in front of them, from
/// the shipped demo config (listeners on port 0, `token` for the admin API).
async fn demo_gateway(token: Option<&str>) -> (RunningGateway, DemoServices) {
    let services =
        DemoServices::start(env!("CARGO_BIN_EXE_mosaic"), 0).await.expect("demo services start");
    let mut config =
        mosaic::config::parse_str_with_env(include_str!("../config/demo.toml"), &|_| None)
            .expect("shipped demo config");
    config.server.listen = "127.0.0.1:0".parse().expect("addr");
    config.server.workers = 1;
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.token = token.map(str::to_string);
    mosaic::demo::point_config_at(&mut config, &services);
    let gateway = mosaic::gateway::start(config).await.expect("gateway starts");
    (gateway, services)
}

/// Pages requested in the background, one every 20 ms, for at most a
/// minute: what turns a dead service into an open breaker.
struct Load(actix_rt::task::JoinHandle<()>);

impl Load {
    fn start(gateway: SocketAddr) -> Load {
        Load(actix_rt::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                let _ = support::get(gateway, "/products/42").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn tile(name: &str) -> String {
    format!(".tile[data-backend=\"{name}\"]")
}

fn tile_is(name: &str, state: &str) -> String {
    format!(
        "return !!document.querySelector('{}.breaker-{state}');",
        tile(name).replace('\'', "\\'")
    )
}

async fn open_dashboard(browser: &Browser, admin: SocketAddr) {
    browser.client.goto(&format!("http://{admin}/dashboard")).await.expect("open the dashboard");
}

async fn all_tiles_shown(browser: &Browser) {
    let shown = browser
        .until(Duration::from_secs(10), "return document.querySelectorAll('.tile').length === 7;")
        .await;
    assert!(
        shown.is_some(),
        "seven tiles within 10 s: {}",
        browser.eval("return document.body.innerText;").await
    );
}

/// Every backend has a tile, closed; killing reviews under load turns its
/// tile open within 3 s; once the service is back and the breaker's 2 s
/// backoff has passed, the tile is closed again.
#[actix_rt::test]
async fn a_killed_service_turns_its_tile_open_and_back() {
    let (gateway, mut services) = demo_gateway(None).await;
    let _load = Load::start(gateway.addr);
    let browser = Browser::start().await;
    open_dashboard(&browser, gateway.admin_addr).await;
    all_tiles_shown(&browser).await;
    for name in BACKENDS {
        let closed = browser.until(Duration::from_secs(3), &tile_is(name, "closed")).await;
        assert!(closed.is_some(), "{name} tile closed");
    }
    let word = browser
        .eval(&format!("return document.querySelector('{} .state').textContent;", tile("catalog")))
        .await;
    assert_eq!(word, "closed");

    services.kill("reviews").await.expect("kill reviews");
    let killed = Instant::now();
    let opened = browser.until(Duration::from_secs(6), &tile_is("reviews", "open")).await;
    assert!(opened.is_some(), "reviews tile never turned open");
    assert!(killed.elapsed() <= Duration::from_secs(3), "tile open after {:?}", killed.elapsed());
    let word = browser
        .eval(&format!("return document.querySelector('{} .state').textContent;", tile("reviews")))
        .await;
    assert_eq!(word, "open");
    let closed = browser.until(Duration::from_millis(10), &tile_is("catalog", "closed")).await;
    assert!(closed.is_some(), "the other tiles stay closed");

    services.restart("reviews").await.expect("restart reviews");
    let closed = browser.until(Duration::from_secs(12), &tile_is("reviews", "closed")).await;
    assert!(closed.is_some(), "reviews tile closed again after the backoff");
    browser.assert_no_console_errors().await;
    browser.close().await;
    gateway.stop(false).await;
}

/// "Force open" on reviews' tile: the next page's reviews section is
/// `circuit_open` and the tile says "open (forced)"; "Automatic" hands it
/// back and the next page has reviews live again.
#[actix_rt::test]
async fn force_open_on_the_page_opens_the_breaker() {
    let (gateway, _services) = demo_gateway(None).await;
    let browser = Browser::start().await;
    open_dashboard(&browser, gateway.admin_addr).await;
    all_tiles_shown(&browser).await;

    browser.click(&format!("{} button[data-action=\"open\"]", tile("reviews"))).await;
    let done = browser
        .until(
            Duration::from_secs(5),
            "return document.getElementById('action-result').textContent === 'reviews: breaker forced open';",
        )
        .await;
    assert!(
        done.is_some(),
        "{}",
        browser.eval("return document.getElementById('action-result').textContent;").await
    );
    let page = support::get(gateway.addr, "/products/42").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.meta("reviews")["error"], "circuit_open", "{}", page.meta("reviews"));
    let forced = browser
        .until(
            Duration::from_secs(3),
            &format!(
                "return document.querySelector('{} .state').textContent === 'open (forced)';",
                tile("reviews")
            ),
        )
        .await;
    assert!(forced.is_some(), "tile says open (forced)");

    browser.click(&format!("{} button[data-action=\"auto\"]", tile("reviews"))).await;
    let done = browser
        .until(
            Duration::from_secs(5),
            "return document.getElementById('action-result').textContent === 'reviews: breaker back to automatic';",
        )
        .await;
    assert!(done.is_some(), "automatic acknowledged");
    let page = support::get(gateway.addr, "/products/42").await;
    assert_eq!(page.meta("reviews")["source"], "live", "{}", page.meta("reviews"));
    assert!(browser.until(Duration::from_secs(3), &tile_is("reviews", "closed")).await.is_some());

    // Reload through the page: the file-less test gateway answers 409, and
    // the page says why rather than failing silently.
    browser.click("#reload").await;
    let said = browser
        .until(Duration::from_secs(5), "return document.getElementById('action-result').textContent.startsWith('reload refused');")
        .await;
    assert!(
        said.is_some(),
        "{}",
        browser.eval("return document.getElementById('action-result').textContent;").await
    );
    browser.assert_no_console_errors().await;

    // The console check itself can fail: an uncaught error is reported.
    browser
        .eval("setTimeout(() => { throw new Error('planted by the test'); }); return null;")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors = browser.console_errors().await;
    assert!(errors.iter().any(|e| e.contains("planted by the test")), "{errors:?}");
    browser.close().await;
    gateway.stop(false).await;
}

/// With an admin token the page asks for it; a wrong one is refused in so
/// many words; the right one shows the tiles, and the page's actions carry
/// it. The token never appears in the URL.
#[actix_rt::test]
async fn with_a_token_the_page_asks_for_it() {
    let (gateway, _services) = demo_gateway(Some("s3cret-token")).await;
    let browser = Browser::start().await;
    open_dashboard(&browser, gateway.admin_addr).await;
    let asked = browser
        .until(
            Duration::from_secs(5),
            "return document.getElementById('token-form').classList.contains('shown');",
        )
        .await;
    assert!(asked.is_some(), "the page asks for the token");
    let message =
        browser.eval("return document.getElementById('token-message').textContent;").await;
    assert!(message.as_str().unwrap_or_default().contains("needs its token"), "{message}");
    assert_eq!(browser.eval("return document.querySelectorAll('.tile').length;").await, 0);

    browser.type_into("#token-input", "wrong-token").await;
    browser.click("#token-submit").await;
    let refused = browser
        .until(
            Duration::from_secs(5),
            "const m = document.getElementById('token-message'); return m.classList.contains('wrong') && m.textContent.startsWith('Wrong token');",
        )
        .await;
    assert!(refused.is_some(), "a wrong token is called wrong");
    assert_eq!(browser.eval("return document.querySelectorAll('.tile').length;").await, 0);

    browser.type_into("#token-input", "s3cret-token").await;
    browser.click("#token-submit").await;
    all_tiles_shown(&browser).await;
    let hidden = browser
        .eval("return document.getElementById('token-form').classList.contains('shown');")
        .await;
    assert_eq!(hidden, false);
    let status = browser
        .until(
            Duration::from_secs(3),
            "return document.getElementById('status').textContent.includes('token accepted');",
        )
        .await;
    assert!(status.is_some(), "the page says the token was accepted");

    browser.click(&format!("{} button[data-action=\"open\"]", tile("orders"))).await;
    let done = browser
        .until(Duration::from_secs(5), "return document.getElementById('action-result').textContent === 'orders: breaker forced open';")
        .await;
    assert!(
        done.is_some(),
        "{}",
        browser.eval("return document.getElementById('action-result').textContent;").await
    );
    assert!(browser.until(Duration::from_secs(3), &tile_is("orders", "open")).await.is_some());
    let url = browser.client.current_url().await.expect("url");
    assert!(!url.as_str().contains("s3cret"), "{url}");
    browser.assert_no_console_errors().await;
    browser.close().await;
    gateway.stop(false).await;
}

/// The admin API going away (a relay in front of it cut) puts up a banner;
/// when it is back the page reconnects by itself and the banner goes.
#[actix_rt::test]
async fn an_unreachable_admin_api_shows_a_banner_then_reconnects() {
    let (gateway, _services) = demo_gateway(None).await;
    let relay = mosaic::chaos::relay::BrokerRelay::start(gateway.admin_addr).await.expect("relay");
    let browser = Browser::start().await;
    open_dashboard(&browser, relay.addr).await;
    all_tiles_shown(&browser).await;

    relay.cut();
    let banner = browser
        .until(
            Duration::from_secs(8),
            "return document.getElementById('banner').classList.contains('shown');",
        )
        .await;
    assert!(banner.is_some(), "a banner within 8 s of the cut");
    let text = browser.eval("return document.getElementById('banner').textContent;").await;
    assert!(text.as_str().unwrap_or_default().starts_with("Admin API unreachable"), "{text}");

    relay.restore();
    let back = browser
        .until(
            Duration::from_secs(15),
            "return !document.getElementById('banner').classList.contains('shown') && document.getElementById('status').textContent.startsWith('live');",
        )
        .await;
    assert!(back.is_some(), "reconnected after the relay came back");
    browser.assert_no_console_errors().await;
    browser.close().await;
    gateway.stop(false).await;
}

// --- /admin/events without a browser ---------------------------------------

/// An open `/admin/events` stream, read raw.
struct EventStream {
    stream: TcpStream,
    buffered: Vec<u8>,
}

/// Opens `GET /admin/events`; returns the status and head, and the stream
/// when the answer is 200.
async fn events(admin: SocketAddr, token: Option<&str>) -> (u16, String, Option<EventStream>) {
    let mut stream = TcpStream::connect(admin).await.expect("connect admin");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET /admin/events HTTP/1.1\r\nHost: admin\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut buffered = Vec::new();
    let head_end = loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("head within 5 s")
            .expect("read");
        assert!(n > 0, "closed before the head");
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffered[..head_end]).to_string();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("status");
    buffered.drain(..head_end + 4);
    let open = (status == 200).then_some(EventStream { stream, buffered });
    (status, head, open)
}

impl EventStream {
    /// The next `snapshot` event's JSON, within `within`.
    async fn next(&mut self, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let text = String::from_utf8_lossy(&self.buffered).to_string();
            if let Some(start) = text.find("event: snapshot\ndata: ") {
                let data = &text[start + "event: snapshot\ndata: ".len()..];
                if let Some(end) = data.find("\n\n") {
                    let json = serde_json::from_str(&data[..end]).expect("snapshot is JSON");
                    let consumed = start + "event: snapshot\ndata: ".len() + end + 2;
                    self.buffered.drain(..consumed);
                    return json;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
                .await
                .expect("a snapshot in time")
                .expect("read");
            assert!(n > 0, "stream closed");
            self.buffered.extend_from_slice(&chunk[..n]);
        }
    }
}

fn one_section_gateway(backend: &str, route: &str, fake: &FakeBackend) -> String {
    format!(
        "{LISTEN_ANY}{}\n[[routes]]\npath = \"{route}\"\ndeadline = \"1s\"\nsections = [{{ name = \"main\", backend = \"{backend}\", path = \"/x/{{id}}\" }}]\n",
        support::backend(backend, &[fake.address()], "timeout = \"500ms\"")
    )
}

/// The first snapshot comes at once on connect, with every backend's state
/// and every route; the stream is `text/event-stream`.
#[actix_rt::test]
async fn a_snapshot_comes_at_once_on_connect() {
    let fake = FakeBackend::start(Reply::ok("{}"));
    let gateway =
        support::start_gateway(&one_section_gateway("dash_first", "/dash-first/{id}", &fake)).await;
    let connected = Instant::now();
    let (status, head, stream) = events(gateway.admin_addr, None).await;
    assert_eq!(status, 200, "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let snapshot = stream.expect("stream").next(Duration::from_millis(900)).await;
    assert!(
        connected.elapsed() < Duration::from_secs(1),
        "first snapshot after {:?}",
        connected.elapsed()
    );
    let backend = &snapshot["backends"][0];
    assert_eq!(backend["name"], "dash_first");
    assert_eq!(backend["breaker"], "closed");
    assert_eq!(backend["forced"], "auto");
    assert_eq!(backend["instances"], serde_json::json!([fake.address()]));
    assert_eq!(backend["in_flight"], 0);
    assert_eq!(snapshot["routes"][0]["route"], "/dash-first/{id}");
    assert_eq!(snapshot["routes"][0]["sections"][0]["backend"], "dash_first");
    gateway.stop(false).await;
}

/// With a token set, the stream needs it: none or a wrong one is 401, the
/// right one streams. `/dashboard` itself needs none.
#[actix_rt::test]
async fn the_event_stream_needs_the_token_when_one_is_set() {
    let fake = FakeBackend::start(Reply::ok("{}"));
    let admin = "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t0ken\"\n";
    let toml = one_section_gateway("dash_token", "/dash-token/{id}", &fake).replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"\n",
        admin.trim_start(),
        1,
    );
    let gateway = support::start_gateway(&toml).await;
    assert_eq!(events(gateway.admin_addr, None).await.0, 401);
    assert_eq!(events(gateway.admin_addr, Some("wrong")).await.0, 401);
    let (status, _, stream) = events(gateway.admin_addr, Some("t0ken")).await;
    assert_eq!(status, 200);
    let snapshot = stream.expect("stream").next(Duration::from_secs(2)).await;
    assert_eq!(snapshot["backends"][0]["name"], "dash_token");
    let page = support::get(gateway.admin_addr, "/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap_or_default().starts_with("text/html"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("/admin/events") && !html.contains("t0ken"));
    for outside in ["<script src", "stylesheet", "href=\"http", "src=\"http", "url(", "@import"] {
        assert!(!html.contains(outside), "the page loads nothing from elsewhere ({outside})");
    }
    gateway.stop(false).await;
}

/// At most MAX_STREAMS streams at once: the next is 503; when one goes
/// away, its place is free again.
#[actix_rt::test]
async fn streams_past_the_limit_are_refused() {
    let fake = FakeBackend::start(Reply::ok("{}"));
    let gateway =
        support::start_gateway(&one_section_gateway("dash_limit", "/dash-limit/{id}", &fake)).await;
    let mut open = Vec::new();
    for _ in 0..MAX_STREAMS {
        let (status, head, stream) = events(gateway.admin_addr, None).await;
        assert_eq!(status, 200, "{head}");
        open.push(stream.expect("stream"));
    }
    let (status, head, _) = events(gateway.admin_addr, None).await;
    assert_eq!(status, 503, "{head}");
    // Read a frame from each so they are really flowing, then drop one.
    for stream in &mut open {
        stream.next(Duration::from_secs(3)).await;
    }
    drop(open.pop());
    // The server notices the closed socket on its next write (≤ 1 s).
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, stream) = events(gateway.admin_addr, None).await;
        if status == 200 {
            drop(stream);
            break;
        }
        assert!(Instant::now() < until, "the freed place was never given out again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    gateway.stop(false).await;
}

/// Figures follow the load: requests/s, latency percentiles, pages/s, the
/// section's mix and the complete share appear once pages are served, and
/// the error rate once the service fails.
#[actix_rt::test]
async fn figures_move_when_load_is_applied() {
    let fake = FakeBackend::start(Reply::Delay(
        Duration::from_millis(3),
        Box::new(Reply::ok("{\"a\":1}")),
    ));
    let gateway =
        support::start_gateway(&one_section_gateway("dash_load", "/dash-load/{id}", &fake)).await;
    let (_, _, stream) = events(gateway.admin_addr, None).await;
    let mut stream = stream.expect("stream");
    let first = stream.next(Duration::from_secs(2)).await;
    assert_eq!(first["backends"][0]["requests_per_s"], Value::Null, "nothing to difference yet");

    for i in 0..60 {
        let page = support::get(gateway.addr, &format!("/dash-load/{i}")).await;
        assert_eq!(page.status, 200);
    }
    let mut moved = None;
    for _ in 0..5 {
        let snapshot = stream.next(Duration::from_secs(2)).await;
        if snapshot["backends"][0]["requests_per_s"].as_f64().unwrap_or(0.0) > 0.0 {
            moved = Some(snapshot);
            break;
        }
    }
    let snapshot = moved.expect("requests/s moved within 5 snapshots");
    let backend = &snapshot["backends"][0];
    assert_eq!(backend["error_rate"], 0.0);
    let p50 = backend["p50_ms"].as_f64().expect("p50");
    let p99 = backend["p99_ms"].as_f64().expect("p99");
    assert!(p50 >= 1.0 && p99 >= p50 && p99 <= 500.0, "p50 {p50} p99 {p99}");
    let chart = backend["last_minute"]["requests_per_s"].as_array().expect("chart");
    assert!(chart.iter().any(|v| v.as_f64().unwrap_or(0.0) > 0.0), "{chart:?}");
    let route = &snapshot["routes"][0];
    assert!(route["pages_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{route}");
    assert_eq!(route["complete_share"], 1.0);
    assert_eq!(route["sections"][0]["sources"]["live"], 1.0);

    fake.set(Reply::Json(500, "{}".into()));
    for i in 0..4 {
        let _ = support::get(gateway.addr, &format!("/dash-load/{i}")).await;
    }
    let mut failing = None;
    for _ in 0..5 {
        let snapshot = stream.next(Duration::from_secs(2)).await;
        if snapshot["backends"][0]["error_rate"].as_f64().unwrap_or(0.0) > 0.0 {
            failing = Some(snapshot);
            break;
        }
    }
    let snapshot = failing.expect("the error rate moved");
    assert!(snapshot["routes"][0]["sections"][0]["sources"]["none"].as_f64().unwrap_or(0.0) > 0.0);
    // The window still holds the 60 complete pages: the share is what the
    // page counter says, between them and the failed ones, never 1.
    let share = snapshot["routes"][0]["complete_share"].as_f64().expect("complete share");
    assert!((60.0 / 64.0 - 0.01..1.0).contains(&share), "{share}");
    gateway.stop(false).await;
}

/// A graceful stop does not wait for open event streams (they never end
/// by themselves): the admin listener gives them 1 s.
#[actix_rt::test]
async fn a_graceful_stop_does_not_wait_for_event_streams() {
    let fake = FakeBackend::start(Reply::ok("{}"));
    let gateway =
        support::start_gateway(&one_section_gateway("dash_stop", "/dash-stop/{id}", &fake)).await;
    let (status, _, stream) = events(gateway.admin_addr, None).await;
    assert_eq!(status, 200);
    let mut stream = stream.expect("stream");
    stream.next(Duration::from_secs(2)).await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), gateway.stop(true))
        .await
        .expect("stopped within 10 s");
    assert!(stopping.elapsed() < Duration::from_secs(4), "stop took {:?}", stopping.elapsed());
}
