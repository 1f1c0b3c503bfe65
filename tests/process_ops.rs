//! `mosaic run` as a real process: graceful SIGTERM, SIGHUP reload, the JSON
//! access log, refusing a bad file, and a real Prometheus scraping it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::process::{http, write_config, MosaicProcess as Gateway};
use support::{backend, FakeBackend, Reply, LISTEN_ANY};

fn page_config(addr: &str, deadline: &str) -> String {
    format!(
        "{LISTEN_ANY}{}
[[routes]]
path = \"/slow/{{id}}\"
deadline = \"{deadline}\"
sections = [ {{ name = \"item\", backend = \"slow\", path = \"/items/{{id}}\", required = true }} ]
",
        backend("slow", &[addr.to_string()], "timeout = \"5s\"\nretries = 0"),
    )
    .replace("workers = 1", "workers = 1\nshutdown_grace = \"5s\"")
}

/// SIGTERM while a slow request is in flight: the request completes with
/// 200, new connections are refused, and the process exits 0.
#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let svc = FakeBackend::start(Reply::Delay(
        Duration::from_millis(800),
        Box::new(Reply::ok(r#"{"v":1}"#)),
    ));
    let dir = tempfile::tempdir().expect("dir");
    let mut gw = Gateway::start(&write_config(&dir, &page_config(&svc.address(), "3s")), &[]);
    let addr = gw.addr.clone();
    let slow = std::thread::spawn(move || http(&addr, "GET", "/slow/1"));
    std::thread::sleep(Duration::from_millis(200));
    gw.signal("TERM");
    let (status, body) = slow.join().expect("request thread");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.wait_exit(Duration::from_secs(8)), Some(0));
    assert!(TcpStream::connect(&gw.addr).is_err(), "listener closed");
}

/// SIGHUP re-reads the file: a route added to it is served without a restart.
#[test]
fn sighup_reloads_the_config_file() {
    let svc = FakeBackend::start(Reply::ok(r#"{"v":1}"#));
    let dir = tempfile::tempdir().expect("dir");
    let first = page_config(&svc.address(), "1s");
    let path = write_config(&dir, &first);
    let gw = Gateway::start(&path, &[]);
    assert_eq!(http(&gw.addr, "GET", "/new/1").0, 404);
    std::fs::write(&path, first.replace("/slow/{id}", "/new/{id}")).expect("rewrite");
    gw.signal("HUP");
    let until = Instant::now() + Duration::from_secs(5);
    while http(&gw.addr, "GET", "/new/1").0 != 200 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(http(&gw.addr, "GET", "/new/1").0, 200);
    assert_eq!(http(&gw.addr, "GET", "/slow/1").0, 404, "the old route is gone");
}

/// `--log-format json` writes one JSON access line per request with the
/// request id, route, status, elapsed time, completeness and degraded sections.
#[test]
fn json_access_log_line_per_request() {
    let svc = FakeBackend::start(Reply::Json(500, "{}".into()));
    let dir = tempfile::tempdir().expect("dir");
    let toml = page_config(&svc.address(), "1s").replace("required = true", "required = false");
    let gw = Gateway::start(&write_config(&dir, &toml), &["--log-format", "json"]);
    let mut stream = TcpStream::connect(&gw.addr).expect("connect");
    write!(
        stream,
        "GET /slow/7 HTTP/1.1\r\nHost: t\r\nX-Request-Id: log-me-1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let lines = gw.stderr_lines(Duration::from_secs(5), |l| l.contains("log-me-1"));
    let line = lines
        .iter()
        .find(|l| l.contains("log-me-1"))
        .unwrap_or_else(|| panic!("no access line in {lines:#?}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(v["target"], "mosaic::access");
    assert_eq!(v["request_id"], "log-me-1");
    assert_eq!(v["route"], "/slow/{id}");
    assert_eq!(v["path"], "/slow/7");
    assert_eq!(v["status"], 200);
    assert_eq!(v["complete"], false);
    assert_eq!(v["degraded"], "item:none:status_5xx");
    assert!(v["elapsed_ms"].as_f64().is_some());
    assert_eq!(v["trace_id"].as_str().map(str::len), Some(32));
}

/// A proxied body that stalls after its head: the access line is written
/// when the body gives up (the backend's `timeout` after the last bytes),
/// with its status and `body_error`, and only then.
#[test]
fn a_stalled_proxied_body_is_logged_when_it_ends() {
    use support::hostile::{Action, Hostile};
    let svc = Hostile::start(|_| {
        vec![
            Action::Write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec()),
            Action::Hang,
        ]
    });
    let dir = tempfile::tempdir().expect("dir");
    let toml = format!(
        "{LISTEN_ANY}{}\n[[proxy]]\nprefix = \"/api/\"\nbackend = \"stall\"\n",
        backend("stall", &[svc.address()], "timeout = \"300ms\"\nretries = 0")
    );
    let gw = Gateway::start(&write_config(&dir, &toml), &["--log-format", "json"]);
    let mut stream = TcpStream::connect(&gw.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /api/x HTTP/1.1\r\nHost: t\r\nX-Request-Id: stalled-1\r\n\r\n")
        .expect("send");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(raw.ends_with(b"\r\n\r\n0123456789"), "{}", String::from_utf8_lossy(&raw));
    let lines = gw.stderr_lines(Duration::from_secs(5), |l| l.contains("stalled-1"));
    let line = lines
        .iter()
        .find(|l| l.contains("stalled-1") && l.contains("mosaic::access"))
        .unwrap_or_else(|| panic!("no access line in {lines:#?}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!((v["status"].as_u64(), v["body_error"].as_str()), (Some(200), Some("timeout")));
    assert!(v["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 300.0), "{v}");
}

/// A streamed page writes its one access line when the stream ends, not
/// when its head goes out: `elapsed_ms` to the page event, completeness and
/// degraded sections as for a JSON page.
#[test]
fn a_streamed_page_is_logged_once_when_its_stream_ends() {
    let item = FakeBackend::start(Reply::ok("{}"));
    let late = FakeBackend::start(Reply::Delay(
        Duration::from_millis(300),
        Box::new(Reply::Json(500, "{}".into())),
    ));
    let dir = tempfile::tempdir().expect("dir");
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/items/{{id}}\"
deadline = \"2s\"
sections = [
  {{ name = \"item\", backend = \"item\", path = \"/items/{{id}}\", required = true }},
  {{ name = \"late\", backend = \"late\", path = \"/late/{{id}}\" }},
]
",
        backend("item", &[item.address()], "retries = 0"),
        backend("late", &[late.address()], "retries = 0\ntimeout = \"1s\""),
    );
    let gw = Gateway::start(&write_config(&dir, &toml), &["--log-format", "json"]);
    let mut stream = TcpStream::connect(&gw.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "GET /items/7 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\
         X-Request-Id: streamed-1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    assert!(raw.contains("event: page"), "{raw}");
    // Well past the access log's flush interval: a second line would show.
    let lines = gw.stderr_lines(Duration::from_secs(2), |_| false);
    let access: Vec<&String> =
        lines.iter().filter(|l| l.contains("streamed-1") && l.contains("mosaic::access")).collect();
    assert_eq!(access.len(), 1, "one access line: {lines:#?}");
    let v: serde_json::Value = serde_json::from_str(access[0]).expect("a JSON line");
    assert_eq!(v["route"], "/items/{id}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["complete"], false);
    assert_eq!(v["degraded"], "late:none:status_5xx");
    assert!(v["elapsed_ms"].as_f64().is_some_and(|ms| ms >= 300.0), "to the page event: {v}");
}

/// A client that leaves a stream before its page event: the stream still
/// ends by the deadline (a closed peer looks half-closed until a write
/// fails), and its line is written once, then: either as a page or, when a
/// write failed first, with `body_error: client_closed`.
#[test]
fn a_stream_the_client_leaves_ends_by_the_deadline_and_is_logged_once() {
    let item = FakeBackend::start(Reply::ok("{}"));
    let hung = FakeBackend::start(Reply::Hang);
    let dir = tempfile::tempdir().expect("dir");
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/items/{{id}}\"
deadline = \"3s\"
sections = [
  {{ name = \"item\", backend = \"item\", path = \"/items/{{id}}\", required = true }},
  {{ name = \"hung\", backend = \"hung\", path = \"/hung/{{id}}\" }},
]
",
        backend("item", &[item.address()], "retries = 0"),
        backend("hung", &[hung.address()], "retries = 0\ntimeout = \"5s\""),
    );
    let gw = Gateway::start(&write_config(&dir, &toml), &["--log-format", "json"]);
    let mut stream = TcpStream::connect(&gw.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(
        stream,
        "GET /items/7 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\
         X-Request-Id: left-1\r\n\r\n"
    )
    .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"name\":\"item\"") {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    let lines = gw.stderr_lines(Duration::from_secs(5), |_| false);
    let access: Vec<&String> =
        lines.iter().filter(|l| l.contains("left-1") && l.contains("mosaic::access")).collect();
    assert_eq!(access.len(), 1, "one access line: {lines:#?}");
    let v: serde_json::Value = serde_json::from_str(access[0]).expect("a JSON line");
    assert_eq!(v["status"], 200);
    let as_page = v["degraded"] == "hung:none:deadline";
    let cut_short = v["body_error"] == "client_closed";
    assert!(as_page || cut_short, "{v}");
    assert!(v["elapsed_ms"].as_f64().is_some_and(|ms| ms < 3_500.0), "by the deadline: {v}");
}

/// `mosaic run` refuses an invalid file, naming the TOML path, exit 1.
#[test]
fn run_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = write_config(&dir, &page_config("127.0.0.1:9", "soon"));
    let out = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].deadline: invalid duration \"soon\""), "{stderr}");
}

fn promtool() -> Option<&'static str> {
    let found =
        Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        // CI installs Debian's prometheus package (.ci/run); a laptop may not have it.
        assert!(std::env::var("CI").is_err(), "promtool missing in CI");
        eprintln!("skipping: promtool not installed (apt-get install prometheus)");
        return None;
    }
    Some("promtool")
}

/// `promtool check metrics` accepts mosaic's `/metrics` output.
#[test]
fn promtool_accepts_the_metrics() {
    let Some(promtool) = promtool() else { return };
    let svc = FakeBackend::start(Reply::ok(r#"{"v":1}"#));
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&write_config(&dir, &page_config(&svc.address(), "1s")), &[]);
    for _ in 0..3 {
        assert_eq!(http(&gw.addr, "GET", "/slow/1").0, 200);
    }
    let (status, metrics) = http(&gw.admin, "GET", "/metrics");
    assert_eq!(status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check.stdin.take().expect("stdin").write_all(metrics.as_bytes()).expect("feed");
    let out = check.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real Prometheus server scrapes mosaic and a breaker-state series can
/// be queried back from it.
#[test]
fn prometheus_scrapes_and_queries_breaker_state() {
    if promtool().is_none() {
        return;
    }
    let svc = FakeBackend::start(Reply::ok(r#"{"v":1}"#));
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&write_config(&dir, &page_config(&svc.address(), "1s")), &[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mosaic\n    static_configs:\n      - targets: ['{}']\n",
            gw.admin
        ),
    )
    .expect("prometheus config");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _guard = Kill(&mut prometheus);
    let query = "/api/v1/query?query=mosaic_breaker_state%7Bbackend%3D%22slow%22%7D";
    let until = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < until {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = write!(s, "GET {query} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n");
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            last = raw;
            if last.contains("\"backend\":\"slow\"") && last.contains("\"value\"") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(last.contains("\"__name__\":\"mosaic_breaker_state\""), "no series: {last}");
    assert!(last.contains("\"backend\":\"slow\""), "{last}");
    assert!(last.contains(",\"0\"]"), "breaker closed = 0: {last}");
}

/// Resident size of a process, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Raises this process's open-file soft limit to at least `wanted` (up to the
/// hard limit); the gateway child inherits it.
fn raise_open_files(wanted: u64) -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
    limit.rlim_cur
}

/// Idle keep-alive clients cost the gateway little memory: each connection
/// asks for a composed page, reads it, and stays open. An edge gateway holds
/// thousands of these (mobile clients between taps); the budget is the
/// target of 64 MiB for 10,000 (about 5.5 KiB each over the base).
/// Stock actix-http keeps 16 KiB of buffers per connection (12 KiB resident).
#[test]
fn idle_keep_alive_connections_hold_little_memory() {
    const CONNECTIONS: usize = 2000;
    const BUDGET_PER_CONNECTION: u64 = 6 * 1024;
    let limit = raise_open_files(2 * CONNECTIONS as u64 + 256);
    assert!(limit >= CONNECTIONS as u64 + 256, "open-file limit {limit} too low for the test");
    let svc = FakeBackend::start(Reply::ok(r#"{"v":1}"#));
    let dir = tempfile::tempdir().expect("dir");
    let gw = Gateway::start(&write_config(&dir, &page_config(&svc.address(), "2s")), &[]);
    let page = |stream: &mut TcpStream, n: usize| {
        // One write: `write!` on a socket is several sends, and Nagle with
        // delayed ACKs would hold each request back 40 ms.
        let request = format!("GET /slow/{n} HTTP/1.1\r\nHost: t\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the head and the whole Content-Length body are in.
        loop {
            let n = stream.read(&mut buf).expect("read");
            assert!(n > 0, "closed before the answer");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("content-length");
                if body.len() >= length {
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    return;
                }
            }
        }
    };
    // Warm up the worker (allocator caches, pools) before the baseline.
    let mut warm = TcpStream::connect(&gw.addr).expect("connect");
    for n in 0..50 {
        page(&mut warm, n);
    }
    let before = rss_bytes(gw.child.id());
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(&gw.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        page(&mut stream, n);
        idle.push(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_bytes(gw.child.id());
    let per_connection = after.saturating_sub(before) / CONNECTIONS as u64;
    eprintln!("{per_connection} bytes resident per idle connection ({before} -> {after})");
    assert!(
        per_connection <= BUDGET_PER_CONNECTION,
        "{per_connection} bytes resident per idle connection (before {before}, after {after})"
    );
    // They really are open and usable: the last one serves another page.
    if let Some(last) = idle.last_mut() {
        page(last, 1);
    }
}
