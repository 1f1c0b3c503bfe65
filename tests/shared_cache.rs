//! The shared cache tier against real Redis (SPEC.md, "Shared cache
//! (Redis)"): replicas (gateways started in this process, each with its
//! own local cache) share what they fetched, per-user answers never cross
//! users, garbage is a miss, purge reaches both tiers, and a Redis that is
//! down, killed, paused or back never costs a page more than its timeout.
//! The machine's Redis with a key prefix per test, or a `redis-server` of
//! the test's own where the test kills, pauses or counts it.

mod support;

use std::time::{Duration, Instant};

use support::redis::{
    command_calls, keys_under, page_with_shared_tier, run, unique_prefix, wait_for_keys,
    RedisServer, SHARED_REDIS,
};
use support::*;

/// SHA-256 of no bytes: the header part of a key for a call that forwards
/// no header.
const NO_HEADERS: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn replica_config(redis: &str, prefix: &str, product: &FakeBackend, price: &FakeBackend) -> String {
    let cache = "ttl = \"400ms\", stale_if_error = \"1h\"";
    page_with_shared_tier(LISTEN_ANY, redis, prefix, product, price, cache)
}

/// Waits until the gateway's shared tier is connected (`/admin/redis`).
async fn wait_redis_up(gateway: &mosaic::gateway::RunningGateway, up: bool) -> serde_json::Value {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get(gateway.admin_addr, "/admin/redis").await.json()["redis"].clone();
        if status["up"] == up && status["usable"] == up {
            return status;
        }
        assert!(Instant::now() < until, "redis up={up} not seen within 10 s: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replica A fetches the price; replica B, which never called the pricing
/// service, serves it from the shared tier (and then from its own local
/// copy); after `ttl`, with the service dead, replica C serves it `stale`
/// from the shared tier with an age counted from A's fetch.
#[actix_rt::test]
async fn a_replica_serves_what_another_fetched() {
    let prefix = unique_prefix("replicas");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":1999}"#));
    let config = replica_config(SHARED_REDIS, &prefix, &product, &price);
    let a = start_gateway(&config).await;
    let b = start_gateway(&config).await;
    wait_redis_up(&a, true).await;
    wait_redis_up(&b, true).await;

    let live = get(a.addr, "/products/42").await;
    assert_eq!(live.meta("price")["source"], "live");
    assert!(live.meta("price").get("tier").is_none(), "a live section has no tier");
    let keys = wait_for_keys(SHARED_REDIS, &prefix, 1).await;
    assert_eq!(keys.len(), 1, "one key for one call: {keys:?}");
    let key = String::from_utf8(keys[0].0.clone()).unwrap();
    assert_eq!(key, format!("{prefix}pricing|/prices/42|{NO_HEADERS}"));

    let shared = get(b.addr, "/products/42").await;
    assert_eq!(shared.status, 200);
    assert_eq!(shared.meta("price")["source"], "cache");
    assert_eq!(shared.meta("price")["tier"], "shared");
    assert_eq!(shared.json()["price"]["amount"], 1999);
    assert!(shared.meta("price")["age_ms"].as_u64().unwrap() < 400);
    assert_eq!(shared.json()["_mosaic"]["complete"], true);
    assert_eq!(price.calls(), 1, "B served A's answer without a call");

    // B copied it into its local tier: Redis is not needed for the next one.
    run(SHARED_REDIS, &[b"DEL", key.as_bytes()]).await;
    let local = get(b.addr, "/products/42").await;
    assert_eq!(local.meta("price")["source"], "cache");
    assert_eq!(local.meta("price")["tier"], "local");
    // Put it back (A writes again on its next live call) for replica C.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get(a.addr, "/products/42").await.meta("price")["source"], "live");
    let refetched = Instant::now();
    wait_for_keys(SHARED_REDIS, &prefix, 1).await;

    price.kill();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let c = start_gateway(&config).await;
    wait_redis_up(&c, true).await;
    let stale = get(c.addr, "/products/42").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.meta("price")["source"], "stale", "{:?}", stale.meta("price"));
    assert_eq!(stale.meta("price")["tier"], "shared");
    assert_eq!(stale.meta("price")["error"], "connect");
    assert_eq!(stale.json()["price"]["amount"], 1999);
    let age = stale.meta("price")["age_ms"].as_u64().unwrap();
    let bound = u64::try_from(refetched.elapsed().as_millis()).unwrap() + 5;
    assert!((450..=bound).contains(&age), "age {age} ms is counted from A's fetch (≤ {bound})");
    for gateway in [a, b, c] {
        gateway.stop(false).await;
    }
}

/// A cart forwarded with each user's `authorization` is cached per user in
/// Redis: bob never gets alice's cart through another replica, and no key
/// or value in Redis holds a token.
#[actix_rt::test]
async fn per_user_answers_never_cross_users_through_redis() {
    let prefix = unique_prefix("per-user");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"42"}"#));
    let cart = FakeBackend::scripted(|request| match request.header("authorization") {
        Some("Bearer alice-secret-token") => Reply::ok(r#"{"user":"alice","items":[1]}"#),
        Some("Bearer bob-secret-token") => Reply::ok(r#"{"user":"bob","items":[2,3]}"#),
        _ => Reply::Json(401, "{}".into()),
    });
    let config = format!(
        "{LISTEN_ANY}
[redis]
url = \"{SHARED_REDIS}\"
prefix = \"{prefix}\"
timeout = \"200ms\"
{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"600ms\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"cart\", backend = \"cart\", path = \"/cart\", forward_headers = [\"authorization\"] }},
]
",
        backend("catalog", &[product.address()], ""),
        backend("cart", &[cart.address()], "cache = { ttl = \"60s\" }"),
    );
    let a = start_gateway(&config).await;
    let b = start_gateway(&config).await;
    wait_redis_up(&a, true).await;
    wait_redis_up(&b, true).await;
    let as_user = |token: &'static str| [("authorization", token)];

    let alice =
        request(a.addr, "GET", "/products/42", &as_user("Bearer alice-secret-token"), None).await;
    assert_eq!(alice.json()["cart"]["user"], "alice");
    wait_for_keys(SHARED_REDIS, &prefix, 1).await;
    let bob =
        request(b.addr, "GET", "/products/42", &as_user("Bearer bob-secret-token"), None).await;
    assert_eq!(bob.json()["cart"]["user"], "bob", "never alice's cart");
    assert_eq!(bob.meta("cart")["source"], "live");
    let alice_on_b =
        request(b.addr, "GET", "/products/42", &as_user("Bearer alice-secret-token"), None).await;
    assert_eq!(alice_on_b.json()["cart"]["user"], "alice");
    assert_eq!(alice_on_b.meta("cart")["tier"], "shared");
    let anonymous = get(b.addr, "/products/42").await;
    assert!(anonymous.json()["cart"].is_null(), "no token, no cart: {}", anonymous.json());

    let stored = wait_for_keys(SHARED_REDIS, &prefix, 2).await;
    assert_eq!(stored.len(), 2, "one key per user: {stored:?}");
    for (key, value) in &stored {
        for bytes in [Some(key), value.as_ref()].into_iter().flatten() {
            let text = String::from_utf8_lossy(bytes);
            assert!(
                !text.contains("secret-token") && !text.contains("Bearer"),
                "a token in Redis: {text}"
            );
        }
    }
    assert_eq!(cart.calls(), 3, "alice, bob, and the anonymous 401");
    a.stop(false).await;
    b.stop(false).await;
}

/// Someone wrote a plain string, then a list, where mosaic keeps a price:
/// each is a miss (the service is called, the page is right) and a counted
/// `garbage` error; the next answer replaces the string.
#[actix_rt::test]
async fn garbage_in_a_key_is_a_counted_miss() {
    let prefix = unique_prefix("garbage");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let gateway = start_gateway(&replica_config(SHARED_REDIS, &prefix, &product, &price)).await;
    wait_redis_up(&gateway, true).await;
    let string_key = format!("{prefix}pricing|/prices/1|{NO_HEADERS}");
    let list_key = format!("{prefix}pricing|/prices/2|{NO_HEADERS}");
    run(SHARED_REDIS, &[b"SET", string_key.as_bytes(), b"1999"]).await;
    run(SHARED_REDIS, &[b"RPUSH", list_key.as_bytes(), b"x"]).await;
    let mut versioned = vec![9u8];
    versioned.extend_from_slice(&[0; 10]);
    versioned.extend_from_slice(b"{\"amount\":0}");
    let version_key = format!("{prefix}pricing|/prices/3|{NO_HEADERS}");
    run(SHARED_REDIS, &[b"SET", version_key.as_bytes(), &versioned]).await;

    for id in ["1", "2", "3"] {
        let page = get(gateway.addr, &format!("/products/{id}")).await;
        assert_eq!(page.status, 200);
        assert_eq!(page.meta("price")["source"], "live", "{id}");
        assert_eq!(page.json()["price"]["amount"], 5);
    }
    let status = get(gateway.admin_addr, "/admin/redis").await.json()["redis"].clone();
    assert_eq!(status["errors"]["garbage"], 2, "the string and the other version: {status}");
    assert_eq!(status["up"], true);
    // The string was overwritten by the live answer: a new replica hits it.
    let other = start_gateway(&replica_config(SHARED_REDIS, &prefix, &product, &price)).await;
    wait_redis_up(&other, true).await;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let page = get(other.addr, "/products/1").await;
        if page.meta("price")["tier"] == "shared" {
            break;
        }
        assert!(Instant::now() < until, "the garbage was never replaced: {}", page.json());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.stop(false).await;
    other.stop(false).await;
}

/// `DELETE /admin/cache/pricing?path=...` drops that path (every header
/// variant) from both tiers; without `path`, everything of the backend.
#[actix_rt::test]
async fn purge_reaches_both_tiers() {
    let prefix = unique_prefix("purge");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let gateway = start_gateway(&replica_config(SHARED_REDIS, &prefix, &product, &price)).await;
    wait_redis_up(&gateway, true).await;
    for id in ["1", "2", "3"] {
        get(gateway.addr, &format!("/products/{id}")).await;
    }
    assert_eq!(wait_for_keys(SHARED_REDIS, &prefix, 3).await.len(), 3);

    let purged =
        admin(gateway.admin_addr, "DELETE", "/admin/cache/pricing?path=/prices/2", None, None)
            .await;
    assert_eq!(purged.status, 200, "{}", String::from_utf8_lossy(&purged.body));
    assert_eq!(purged.json()["local"], 1);
    assert_eq!(purged.json()["shared"], 1);
    let left: Vec<String> = keys_under(SHARED_REDIS, &prefix)
        .await
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|k| !k.contains("/prices/2|")), "{left:?}");
    let calls = price.calls();
    assert_eq!(get(gateway.addr, "/products/2").await.meta("price")["source"], "live");
    assert_eq!(get(gateway.addr, "/products/1").await.meta("price")["source"], "cache");
    assert_eq!(price.calls(), calls + 1);

    wait_for_keys(SHARED_REDIS, &prefix, 3).await;
    let all = admin(gateway.admin_addr, "DELETE", "/admin/cache/pricing", None, None).await;
    assert_eq!(all.status, 200);
    assert_eq!(all.json()["local"], 3);
    assert_eq!(all.json()["shared"], 3);
    assert!(keys_under(SHARED_REDIS, &prefix).await.is_empty());

    assert_eq!(
        admin(gateway.admin_addr, "DELETE", "/admin/cache/nope", None, None).await.status,
        404
    );
    assert_eq!(
        admin(gateway.admin_addr, "DELETE", "/admin/cache/catalog", None, None).await.status,
        409
    );
    assert_eq!(
        admin(gateway.admin_addr, "DELETE", "/admin/cache/pricing?path=prices", None, None)
            .await
            .status,
        400
    );
    gateway.stop(false).await;
}

/// Twenty concurrent cold requests for one price, with the shared tier in
/// front of the call: still one call to the service.
#[actix_rt::test]
async fn concurrent_cold_requests_stay_one_call() {
    let prefix = unique_prefix("one-call");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"7"}"#));
    let price = FakeBackend::start(Reply::Delay(
        Duration::from_millis(100),
        Box::new(Reply::ok(r#"{"amount":5}"#)),
    ));
    let gateway = start_gateway(&replica_config(SHARED_REDIS, &prefix, &product, &price)).await;
    wait_redis_up(&gateway, true).await;
    let addr = gateway.addr;
    let pages: Vec<_> =
        (0..20).map(|_| actix_rt::spawn(async move { get(addr, "/products/7").await })).collect();
    for page in pages {
        let page = page.await.unwrap();
        assert_eq!(page.json()["price"]["amount"], 5);
    }
    assert_eq!(price.calls(), 1, "one call for twenty requests");
    gateway.stop(false).await;
}

/// `[redis]` pointing at nothing: pages are whole and quick, the local
/// tier works, `/admin/redis` says it is down.
#[actix_rt::test]
async fn a_redis_that_is_not_there_costs_nothing() {
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/0", nothing.local_addr().unwrap());
    drop(nothing);
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let gateway = start_gateway(&replica_config(&url, "mosaic:", &product, &price)).await;
    let first = get(gateway.addr, "/products/1").await;
    assert_eq!(first.json()["_mosaic"]["complete"], true);
    let second = get(gateway.addr, "/products/1").await;
    assert_eq!(second.meta("price")["source"], "cache");
    assert_eq!(second.meta("price")["tier"], "local");
    assert!(second.elapsed < Duration::from_millis(150), "{:?}", second.elapsed);
    let status = wait_redis_up(&gateway, false).await;
    assert_eq!(status["connects"], 0);
    assert_eq!(
        get(gateway.admin_addr, "/readyz").await.status,
        200,
        "Redis is not needed to serve"
    );
    gateway.stop(false).await;
}

/// A page whose two cached sections both miss locally costs one `MGET`,
/// not one per section.
#[actix_rt::test]
async fn one_round_trip_per_page() {
    let redis = RedisServer::start();
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let stock = FakeBackend::start(Reply::ok(r#"{"count":3}"#));
    let config = format!(
        "{LISTEN_ANY}
[redis]
url = \"{}\"
timeout = \"200ms\"
{}{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"600ms\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\" }},
  {{ name = \"price\", backend = \"pricing\", path = \"/prices/{{id}}\" }},
  {{ name = \"stock\", backend = \"stock\", path = \"/stock/{{id}}\" }},
]
",
        redis.url(),
        backend("catalog", &[product.address()], ""),
        backend("pricing", &[price.address()], "cache = { ttl = \"60s\" }"),
        backend("stock", &[stock.address()], "cache = { ttl = \"60s\" }"),
    );
    let gateway = start_gateway(&config).await;
    wait_redis_up(&gateway, true).await;
    for id in 1..=3 {
        let page = get(gateway.addr, &format!("/products/{id}")).await;
        assert_eq!(page.json()["_mosaic"]["complete"], true);
    }
    assert_eq!(command_calls(&redis.url(), "mget").await, 3, "one MGET per page");
    assert_eq!(command_calls(&redis.url(), "get").await, 0);
    // Local hits do not ask Redis at all.
    for id in 1..=3 {
        assert_eq!(
            get(gateway.addr, &format!("/products/{id}")).await.meta("stock")["tier"],
            "local"
        );
    }
    assert_eq!(command_calls(&redis.url(), "mget").await, 3);
    gateway.stop(false).await;
}

/// Redis killed under load: every page is 200 within its deadline (+50 ms),
/// the local tier goes on, `/admin/redis` says down; restarted, it is used
/// again without restarting mosaic.
#[actix_rt::test]
async fn redis_killed_under_load_then_back() {
    let mut redis = RedisServer::start();
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let config = replica_config(&redis.url(), "mosaic:", &product, &price);
    let gateway = start_gateway(&config).await;
    wait_redis_up(&gateway, true).await;
    let addr = gateway.addr;

    let load = actix_rt::spawn(async move {
        let until = Instant::now() + Duration::from_millis(1500);
        let mut worst = Duration::ZERO;
        let mut pages = 0u32;
        let mut id = 0u32;
        while Instant::now() < until {
            id += 1;
            // New ids miss locally (they ask Redis); repeated ones hit locally.
            let path = format!("/products/{}", id % 40);
            let page = get(addr, &path).await;
            assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
            assert_eq!(page.json()["_mosaic"]["complete"], true);
            worst = worst.max(page.elapsed);
            pages += 1;
        }
        (pages, worst)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let (pages, worst) = load.await.unwrap();
    assert!(pages > 20, "{pages} pages");
    assert!(worst <= Duration::from_millis(650), "slowest page {worst:?} (deadline 600 ms)");
    wait_redis_up(&gateway, false).await;
    assert_eq!(get(gateway.addr, "/products/1").await.meta("price")["tier"], "local");
    let label = redis.url().trim_start_matches("redis://").to_string();
    let gauge = format!("mosaic_redis_up{{redis=\"{label}\"}}");
    let metrics = String::from_utf8(get(gateway.admin_addr, "/metrics").await.body).unwrap();
    assert!(metrics.contains(&format!("{gauge} 0")), "{gauge} 0 not in /metrics");

    redis.restart();
    wait_redis_up(&gateway, true).await;
    let metrics = String::from_utf8(get(gateway.admin_addr, "/metrics").await.body).unwrap();
    assert!(metrics.contains(&format!("{gauge} 1")), "{gauge} 1 not in /metrics");
    assert_eq!(get(gateway.addr, "/products/777").await.meta("price")["source"], "live");
    wait_for_keys(&redis.url(), "mosaic:", 1).await;
    let other = start_gateway(&config).await;
    wait_redis_up(&other, true).await;
    assert_eq!(get(other.addr, "/products/777").await.meta("price")["tier"], "shared");
    gateway.stop(false).await;
    other.stop(false).await;
}

/// A Redis that stops answering (SIGSTOP) costs a page at most `timeout`,
/// then nothing once the tier's breaker opens; answering again, it is
/// used again.
#[actix_rt::test]
async fn a_paused_redis_opens_the_tiers_breaker() {
    let redis = RedisServer::start();
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let gateway = start_gateway(&replica_config(&redis.url(), "mosaic:", &product, &price)).await;
    wait_redis_up(&gateway, true).await;
    redis.pause(true);
    let mut slowest = Duration::ZERO;
    for id in 0..3 {
        let page = get(gateway.addr, &format!("/products/{id}")).await;
        assert_eq!(page.json()["_mosaic"]["complete"], true);
        slowest = slowest.max(page.elapsed);
    }
    assert!(slowest >= Duration::from_millis(200), "each waited its 200 ms timeout: {slowest:?}");
    assert!(slowest < Duration::from_millis(450), "{slowest:?}");
    // Three timeouts in a row: the breaker is open, pages no longer wait.
    let status = get(gateway.admin_addr, "/admin/redis").await.json()["redis"].clone();
    assert_eq!(status["usable"], false, "{status}");
    assert!(status["errors"]["timeout"].as_u64().unwrap() >= 3, "{status}");
    let quick = get(gateway.addr, "/products/99").await;
    assert_eq!(quick.meta("price")["source"], "live");
    assert!(quick.elapsed < Duration::from_millis(150), "{:?}", quick.elapsed);
    redis.pause(false);
    wait_redis_up(&gateway, true).await;
    gateway.stop(false).await;
}

/// Something on the Redis port that is not Redis (it answers every read
/// with junk, or accepts and never answers): pages stay whole and on time,
/// the tier is never taken as connected, no page waits on it.
#[actix_rt::test]
async fn a_redis_port_that_answers_junk_or_nothing_is_never_trusted() {
    use std::io::{Read, Write};
    for junk in [Some(&b"HTTP/1.1 200 OK\r\n\r\n$99999999999\r\n<html>"[..]), None] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}/0", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        if let Some(junk) = junk {
                            let _ = stream.write_all(junk);
                        }
                    }
                });
            }
        });
        let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
        let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
        let gateway = start_gateway(&replica_config(&url, "mosaic:", &product, &price)).await;
        for id in 0..5 {
            let page = get(gateway.addr, &format!("/products/{id}")).await;
            assert_eq!(page.json()["_mosaic"]["complete"], true);
            assert!(page.elapsed < Duration::from_millis(650), "{:?}", page.elapsed);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = get(gateway.admin_addr, "/admin/redis").await.json()["redis"].clone();
        assert_eq!(status["up"], false, "junk={}: {status}", junk.is_some());
        assert_eq!(status["connects"], 0, "{status}");
        gateway.stop(false).await;
    }
}

/// A reload that removes `[redis]` rebuilds the cached backends without the
/// shared tier (no `tier` in their meta); one that adds it back gives it to
/// them again; an unchanged `[redis]` keeps the cache as it was.
#[actix_rt::test]
async fn reloads_add_and_remove_the_shared_tier() {
    let prefix = unique_prefix("reload");
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let price = FakeBackend::start(Reply::ok(r#"{"amount":5}"#));
    let with = replica_config(SHARED_REDIS, &prefix, &product, &price);
    let redis_table =
        format!("[redis]\nurl = \"{SHARED_REDIS}\"\nprefix = \"{prefix}\"\ntimeout = \"200ms\"\n");
    assert!(with.contains(&redis_table));
    let without = with.replace(&redis_table, "");
    let (gateway, file) = start_gateway_from_file(&with).await;
    wait_redis_up(&gateway, true).await;
    let tier_of_second_page = |id: u32| async move {
        get(gateway.addr, &format!("/products/{id}")).await;
        get(gateway.addr, &format!("/products/{id}")).await.meta("price").get("tier").cloned()
    };
    assert_eq!(tier_of_second_page(1).await, Some("local".into()));
    let reload = || async { admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await };
    std::fs::write(file.path(), &with).unwrap();
    assert_eq!(reload().await.status, 200);
    let kept = get(gateway.addr, "/products/1").await;
    assert_eq!(kept.meta("price")["source"], "cache", "unchanged [redis]: the cache is kept");

    std::fs::write(file.path(), &without).unwrap();
    assert_eq!(reload().await.status, 200);
    assert_eq!(
        get(gateway.admin_addr, "/admin/redis").await.json()["redis"],
        serde_json::Value::Null
    );
    assert_eq!(tier_of_second_page(2).await, None, "no shared tier, no tier label");

    std::fs::write(file.path(), &with).unwrap();
    assert_eq!(reload().await.status, 200);
    wait_redis_up(&gateway, true).await;
    assert_eq!(tier_of_second_page(3).await, Some("local".into()));
    gateway.stop(false).await;
}
