//! Several real `mosaic run` processes around one real Redis: replicas
//! share what one fetched, a replica restarted while the pricing service is
//! down serves the price from its first request (the shared tier), and a rolling restart with
//! `server.reuse_port` (start the new process on the same addresses, wait
//! for it, SIGTERM the old one) fails no request under steady load.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::process::{http, write_config, MosaicProcess};
use support::redis::{page_with_shared_tier, unique_prefix, SHARED_REDIS};
use support::{FakeBackend, Reply};

fn shop(
    listen: &str,
    admin: &str,
    prefix: &str,
    product: &FakeBackend,
    price: &FakeBackend,
) -> String {
    let head = format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 1\nreuse_port = true\nshutdown_grace = \"5s\"\n\n[admin]\nlisten = \"{admin}\"\n"
    );
    let cache = "ttl = \"60s\", stale_if_error = \"1h\"";
    page_with_shared_tier(&head, SHARED_REDIS, prefix, product, price, cache)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn page(addr: &str, path: &str) -> serde_json::Value {
    let (status, body) = http(addr, "GET", path);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until the shared tier of the process behind `admin` is connected.
fn wait_redis(admin: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !http(admin, "GET", "/admin/redis").1.contains("\"up\":true") {
        assert!(Instant::now() < until, "Redis not connected within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Replica A fetches the price; replica B, which never called the service,
/// serves it from the shared tier. The service dies and `ttl` passes: B
/// serves its own stale copy, and A, killed and started again, serves the
/// shared one from its very first request, `stale` with an age counted from
/// the original fetch.
#[test]
fn replicas_share_what_one_fetched_and_a_restarted_one_starts_warm() {
    let prefix = unique_prefix("restart");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999}"#));
    let dir = tempfile::tempdir().unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let text = |listen: &str, admin: &str| {
        shop(listen, admin, &prefix, &product, &price).replace("ttl = \"60s\"", "ttl = \"1s\"")
    };
    let config_a = write_config(&dir, &text(&port(), &port()));
    let dir_b = tempfile::tempdir().unwrap();
    let config_b = write_config(&dir_b, &text(&port(), &port()));

    let mut a = MosaicProcess::start(&config_a, &[]);
    let b = MosaicProcess::start(&config_b, &[]);
    wait_redis(&a.admin);
    wait_redis(&b.admin);
    let live = page(&a.addr, "/products/42");
    let fetched = Instant::now();
    assert_eq!(live["_mosaic"]["sections"]["price"]["source"], "live");
    // The write is off the response path: wait until it has been made.
    let until = Instant::now() + Duration::from_secs(5);
    while !http(&a.admin, "GET", "/admin/redis").1.contains("\"writes_in_flight\":0") {
        assert!(Instant::now() < until);
        std::thread::sleep(Duration::from_millis(10));
    }
    let shared = page(&b.addr, "/products/42");
    assert_eq!(shared["_mosaic"]["sections"]["price"]["source"], "cache", "{shared}");
    assert_eq!(shared["_mosaic"]["sections"]["price"]["tier"], "shared");
    assert_eq!(shared["price"]["amount"], 1999);
    assert_eq!(price.calls(), 1, "B made no call");

    price.kill();
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(fetched.elapsed()));
    let own = page(&b.addr, "/products/42");
    assert_eq!(own["_mosaic"]["sections"]["price"]["source"], "stale", "{own}");
    assert_eq!(own["_mosaic"]["sections"]["price"]["tier"], "local");

    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5));
    let restarted = MosaicProcess::start(&config_a, &[]);
    wait_redis(&restarted.admin);
    let warm = page(&restarted.addr, "/products/42");
    let meta = &warm["_mosaic"]["sections"]["price"];
    assert_eq!(meta["source"], "stale", "{warm}");
    assert_eq!(meta["tier"], "shared");
    assert_eq!(meta["error"], "connect");
    assert_eq!(warm["price"]["amount"], 1999);
    let age = meta["age_ms"].as_u64().unwrap();
    let since = u64::try_from(fetched.elapsed().as_millis()).unwrap();
    assert!((1000..=since + 5).contains(&age), "age {age} ms, {since} ms since A's fetch");
}

/// One GET on a new connection; `Err` for anything but a whole 200.
fn try_page(addr: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /products/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    if text.starts_with("HTTP/1.1 200") && text.contains("\"_mosaic\"") {
        Ok(())
    } else {
        Err(format!("answer: {text:?}"))
    }
}

/// A rolling restart under steady load: start the new process on the same
/// addresses (`reuse_port`), wait until it answers, SIGTERM the old one.
/// No request fails and no connection is refused or reset.
#[test]
fn a_rolling_restart_fails_no_request() {
    // Without it Linux resets the connections still queued on the old
    // process's socket when it closes (README, "Rolling restarts").
    let migrate = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").unwrap_or_default();
    assert_eq!(
        migrate.trim(),
        "1",
        "net.ipv4.tcp_migrate_req must be 1 for restarts that drop nothing: `sysctl -w net.ipv4.tcp_migrate_req=1` (.ci/run sets it)"
    );
    let prefix = unique_prefix("rolling");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let config = write_config(&dir, &shop(&listen, &admin, &prefix, &product, &price));
    let mut old = MosaicProcess::start(&config, &[]);
    assert_eq!(old.addr, listen);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, served, listen) = (stop.clone(), served.clone(), listen.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match try_page(&listen) {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(why) => failures.push(why),
                    }
                }
                failures
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let new = MosaicProcess::start(&config, &[]);
    assert_eq!(new.addr, listen, "the new process listens on the same address");
    // Ready: the admin port is shared too, so ask until an answer is 200.
    let until = Instant::now() + Duration::from_secs(10);
    while http(&admin, "GET", "/readyz").0 != 200 {
        assert!(Instant::now() < until, "the new process never became ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before_term = served.load(Ordering::Relaxed);
    old.signal("TERM");
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0), "the old process drains and exits");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let total = served.load(Ordering::Relaxed);
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        total,
        &failures[..failures.len().min(5)]
    );
    assert!(
        before_term > 50 && total > before_term + 20,
        "load ran throughout: {before_term} then {total}"
    );
    // Only the new process is left, and it serves.
    assert_eq!(page(&new.addr, "/products/1")["_mosaic"]["complete"], true);
}
