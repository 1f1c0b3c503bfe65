//! `rate_limit = { policy = "redis" }`: one limit across replicas, held in
//! a real Redis, and local limits taking over when Redis dies (SPEC.md,
//! "Edge security": "Redis down: local limits apply, requests never wait
//! on it").

mod support;

use std::time::{Duration, Instant};

use support::process::{http, write_config, MosaicProcess};
use support::redis::{unique_prefix, RedisServer};
use support::{get, request, start_gateway, FakeBackend, Reply, LISTEN_ANY};

/// A proxy route limited to one request a minute with a burst of `burst`,
/// per client IP, in the Redis at `redis`.
fn limited(head: &str, redis: &str, prefix: &str, service: &FakeBackend, burst: u32) -> String {
    format!(
        r#"{head}
[redis]
url = "{redis}"
prefix = "{prefix}"
timeout = "1s"
{backends}
[[proxy]]
prefix = "/api/"
backend = "catalog"
rate_limit = {{ requests = 1, per = "60s", burst = {burst}, by = "ip", policy = "redis" }}
"#,
        backends = support::backend("catalog", &[service.address()], "")
    )
}

fn redis_up(body: &str) -> bool {
    body.contains("\"up\":true")
}

/// Two `mosaic run` processes, one Redis: requests alternating between them
/// draw from one bucket, so together they get `burst + 1`, not twice that.
#[test]
fn two_processes_share_one_limit_through_redis() {
    let redis = RedisServer::start();
    let service = FakeBackend::start(Reply::ok(r#"{"ok":true}"#));
    let prefix = unique_prefix("limit");
    let head =
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n[admin]\nlisten = \"127.0.0.1:0\"\n";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(&dir, &limited(head, &redis.url(), &prefix, &service, 4));
    let replicas = [MosaicProcess::start(&config, &[]), MosaicProcess::start(&config, &[])];
    for replica in &replicas {
        let until = Instant::now() + Duration::from_secs(10);
        while !redis_up(&http(&replica.admin, "GET", "/admin/redis").1) {
            assert!(Instant::now() < until, "Redis not connected within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let statuses: Vec<u16> =
        (0..10).map(|i| http(&replicas[i % 2].addr, "GET", "/api/item").0).collect();
    let passed = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((passed, limited), (5, 5), "burst 4 + 1 across both replicas: {statuses:?}");
    assert_eq!(&statuses[..5], [200; 5], "{statuses:?}");
    assert_eq!(service.calls(), 5);
}

/// Redis decides while it is up; killed, each replica's own limit takes
/// over at once (no request waits for the dead Redis); back, Redis decides
/// again without a restart.
#[actix_rt::test]
async fn with_redis_killed_local_limits_take_over_and_no_request_waits() {
    let mut redis = RedisServer::start();
    let service = FakeBackend::start(Reply::ok(r#"{"ok":true}"#));
    let toml = limited(LISTEN_ANY, &redis.url(), &unique_prefix("fallback"), &service, 2);
    let gateway = start_gateway(&toml).await;
    let addr = gateway.addr;
    let until = Instant::now() + Duration::from_secs(10);
    while !redis_up(&String::from_utf8_lossy(&get(gateway.admin_addr, "/admin/redis").await.body)) {
        assert!(Instant::now() < until, "Redis not connected within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = || async move { request(addr, "GET", "/api/item", &[], None).await };

    // Redis's bucket: three, then 429.
    for _ in 0..3 {
        assert_eq!(status().await.status, 200);
    }
    let refused = status().await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("ratelimit-policy"), Some("1;w=60"));
    let retry: u64 = refused.header("retry-after").expect("Retry-After").parse().expect("secs");
    assert!((1..=60).contains(&retry), "{retry}");

    // Redis dies. The local limit (its own full bucket) decides: three
    // more, then 429; and no answer waits for Redis's one-second timeout.
    redis.kill();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let answer = status().await;
        assert!(
            answer.elapsed < Duration::from_millis(900),
            "a request waited on the dead Redis: {:?}",
            answer.elapsed
        );
        statuses.push(answer.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);

    // Redis is back (empty): once reconnected, its bucket decides again,
    // although the local one is spent.
    redis.restart();
    let until = Instant::now() + Duration::from_secs(15);
    while !redis_up(&String::from_utf8_lossy(&get(gateway.admin_addr, "/admin/redis").await.body)) {
        assert!(Instant::now() < until, "Redis not reconnected within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The tier's breaker may still be open for up to a second after the
    // failures above: wait for Redis to decide (a 200 the local bucket
    // could not give).
    let until = Instant::now() + Duration::from_secs(5);
    while status().await.status != 200 {
        assert!(Instant::now() < until, "Redis does not decide again after it came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.stop(false).await;
}

/// A Redis that stops answering (SIGSTOP) is worse than a dead one: each
/// command waits its whole `timeout`. The tier's breaker bounds that to
/// the first three requests; after them, no request waits at all.
#[actix_rt::test]
async fn a_hung_redis_costs_at_most_three_requests_their_timeout() {
    let redis = RedisServer::start();
    let service = FakeBackend::start(Reply::ok(r#"{"ok":true}"#));
    let toml = limited(LISTEN_ANY, &redis.url(), &unique_prefix("hung"), &service, 100)
        .replace("timeout = \"1s\"", "timeout = \"300ms\"\n\n[defaults]\ntimeout = \"2s\"");
    let gateway = start_gateway(&toml).await;
    let addr = gateway.addr;
    let until = Instant::now() + Duration::from_secs(10);
    while !redis_up(&String::from_utf8_lossy(&get(gateway.admin_addr, "/admin/redis").await.body)) {
        assert!(Instant::now() < until, "Redis not connected within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(request(addr, "GET", "/api/item", &[], None).await.status, 200);

    redis.pause(true);
    let mut slow = 0;
    for _ in 0..12 {
        let answer = request(addr, "GET", "/api/item", &[], None).await;
        assert_eq!(answer.status, 200, "the local limit (burst 100) lets it through");
        assert!(answer.elapsed < Duration::from_secs(1), "waited {:?}", answer.elapsed);
        if answer.elapsed >= Duration::from_millis(250) {
            slow += 1;
        }
    }
    assert!(slow <= 3, "{slow} requests waited for the hung Redis");
    redis.pause(false);
    gateway.stop(false).await;
}
