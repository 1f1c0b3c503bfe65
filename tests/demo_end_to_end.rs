//! `mosaic demo` end to end: the real binary starts the seven services as
//! processes and the gateway; the page is complete; after one service is
//! SIGKILLed the next page is still 200 with that section labelled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM first so the demo kills its services; SIGKILL if it lingers.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn http_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    http_get_with(addr, path, "")
}

/// GET with extra header lines (each ending in CRLF).
fn http_get_with(addr: &str, path: &str, lines: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).expect("connect gateway");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n{lines}\r\n")
        .expect("send");
    let mut raw = String::new();
    if let Err(e) = stream.read_to_string(&mut raw) {
        panic!("GET {path} from {addr}: {e} after {raw:?}");
    }
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// A started `mosaic demo`, with what its banner said.
struct Started {
    demo: Demo,
    gateway: String,
    admin: String,
    reviews_pid: String,
    /// The JWT the banner prints for `/api/me/cart`.
    token: String,
    /// The banner's lines after "Inject faults" that were asked for.
    extra: Vec<String>,
}

/// Starts `mosaic demo` on port 0 with `args`, reads its banner and, after
/// it, `extra_lines` more lines.
fn start_demo(args: &[&str], extra_lines: usize) -> Started {
    let child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--base-port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosaic demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    let mut gateway = None;
    let mut admin = None;
    let mut reviews_pid = None;
    let mut token = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        if let Some(rest) = line.trim().strip_prefix("curl -s http://") {
            if gateway.is_none() && rest.contains("/products/42") {
                gateway = rest.split('/').next().map(str::to_string);
            }
            if rest.ends_with("/metrics") {
                admin = rest.split('/').next().map(str::to_string);
            }
        }
        if line.contains("/api/me/cart") {
            let bearer = line.split("Authorization: Bearer ").nth(1);
            token = bearer.and_then(|rest| rest.split('\'').next()).map(str::to_string);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"reviews") && words.get(2) == Some(&"pid") {
            reviews_pid = words.get(3).map(|p| p.to_string());
        }
        if line.starts_with("Inject faults") {
            break;
        }
    }
    let extra = lines.by_ref().take(extra_lines).map_while(Result::ok).collect();
    // Keep reading so the demo never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Started {
        demo,
        gateway: gateway.expect("banner names the gateway"),
        admin: admin.expect("banner names the admin listener"),
        reviews_pid: reviews_pid.expect("banner names the reviews pid"),
        token: token.expect("banner prints a JWT for /api/me/cart"),
        extra,
    }
}

#[test]
fn demo_serves_a_complete_page_and_survives_a_killed_service() {
    let Started { demo, gateway, reviews_pid, token, .. } = start_demo(&[], 0);

    let (status, page) = http_get(&gateway, "/products/42");
    assert_eq!(status, 200);
    assert_eq!(page["_mosaic"]["complete"], true, "{page}");
    assert_eq!(page["product"]["id"], "42");
    for section in ["product", "price", "reviews", "cart", "orders", "inventory", "recommendations"]
    {
        assert!(!page[section].is_null(), "{section} present");
    }

    // The key-protected orders proxy of the banner: 401 without the key,
    // 200 with it, 429 once its burst is spent.
    let (status, body) = http_get(&gateway, "/api/orders?product=42");
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let key = format!("x-api-key: {}\r\n", mosaic::demo::DEMO_KEY);
    let statuses: Vec<u16> =
        (0..6).map(|_| http_get_with(&gateway, "/api/orders?product=42", &key).0).collect();
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "2/s with a burst of 3 refuses some of 6 at once: {statuses:?}"
    );

    // The JWT route of the banner: 401 without the token (a spoofed
    // x-user-id changes nothing), the token's user's cart with it.
    let (status, body) = http_get_with(&gateway, "/api/me/cart", "x-user-id: bob\r\n");
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let bearer = format!("Authorization: Bearer {token}\r\nx-user-id: bob\r\n");
    let (status, cart) = http_get_with(&gateway, "/api/me/cart", &bearer);
    assert_eq!(status, 200, "{cart}");
    assert_eq!(cart["user"], mosaic::demo::DEMO_JWT_USER, "{cart}");

    let killed = Command::new("kill").args(["-9", &reviews_pid]).status().expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    let (status, page) = http_get(&gateway, "/products/42");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["_mosaic"]["complete"], false);
    assert!(page["reviews"].is_null());
    assert_eq!(page["_mosaic"]["sections"]["reviews"]["source"], "none");
    assert_eq!(page["_mosaic"]["sections"]["reviews"]["error"], "connect");
    assert_eq!(page["_mosaic"]["sections"]["product"]["source"], "live");
    drop(demo);
}

/// `mosaic demo --redis URL`: the cached pricing section goes through the
/// shared tier (the machine's Redis), and the banner says how to look at it.
#[test]
fn demo_with_redis_uses_the_shared_tier() {
    let started = start_demo(&["--redis", "redis://127.0.0.1:6379/0"], 2);
    let banner = started.extra.join("\n");
    assert!(banner.contains("Shared cache") && banner.contains("mosaic-demo:"), "{banner}");
    let until = Instant::now() + Duration::from_secs(10);
    while !http_get(&started.admin, "/admin/redis").1["redis"]["up"].as_bool().unwrap_or(false) {
        assert!(Instant::now() < until, "the demo never connected to Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, first) = http_get(&started.gateway, "/products/42");
    assert_eq!(status, 200, "{first}");
    // Live, or (when an earlier demo filled Redis) from the shared tier.
    let price = &first["_mosaic"]["sections"]["price"];
    assert!(price["source"] == "live" || price["tier"] == "shared", "{price}");
    let (_, second) = http_get(&started.gateway, "/products/42");
    assert_eq!(second["_mosaic"]["sections"]["price"]["source"], "cache");
    assert_eq!(second["_mosaic"]["sections"]["price"]["tier"], "local");
    drop(started.demo);
}
