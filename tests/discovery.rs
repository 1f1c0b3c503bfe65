//! Consul discovery end to end: a real gateway, real fake services, and
//! the Consul API double (`support/consul.rs`). Each test uses its own
//! backend name, because metrics are process-wide.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mosaic::backend::actor::Crash;
use support::consul::{ConsulDouble, Instance, Mode};
use support::*;

/// A page with one optional section on a Consul backend named `backend`
/// that follows the service `reviews`; blocking queries wait 1 s.
fn config(consul: &str, backend: &str, token: Option<&str>) -> String {
    let token = token.map(|t| format!("token = \"{t}\"")).unwrap_or_default();
    format!(
        "{LISTEN_ANY}
[discovery.consul]
address = \"{consul}\"
wait = \"1s\"
{token}

[defaults]
timeout = \"500ms\"
retries = 0

[backends.{backend}]
consul = {{ service = \"reviews\" }}

[[routes]]
path = \"/products/{{id}}\"
deadline = \"1s\"
sections = [ {{ name = \"reviews\", backend = \"{backend}\", path = \"/reviews/{{id}}\" }} ]
"
    )
}

/// A fake reviews instance that says who it is.
fn instance(name: &str) -> FakeBackend {
    FakeBackend::start(Reply::ok(&format!(r#"{{"from":"{name}"}}"#)))
}

/// Who served `n` pages (`none` when the section had no body).
async fn served_by(gw: &mosaic::gateway::RunningGateway, n: usize) -> BTreeSet<String> {
    let mut who = BTreeSet::new();
    for _ in 0..n {
        let page = get(gw.addr, "/products/1").await;
        who.insert(page.json()["reviews"]["from"].as_str().unwrap_or("none").to_string());
    }
    who
}

/// Waits (bounded) until `n` pages are all served by exactly `expected`.
async fn until_served_by(
    gw: &mosaic::gateway::RunningGateway,
    expected: &[&str],
    within: Duration,
) {
    let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    let until = Instant::now() + within;
    let mut last = BTreeSet::new();
    while Instant::now() < until {
        last = served_by(gw, 8).await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pages served by {last:?}, expected {want:?} within {within:?}");
}

/// This backend's `/admin/backends` entry.
async fn admin_entry(gw: &mosaic::gateway::RunningGateway, backend: &str) -> serde_json::Value {
    let list = get(gw.admin_addr, "/admin/backends").await.json();
    list["backends"]
        .as_array()
        .and_then(|l| l.iter().find(|b| b["name"] == backend).cloned())
        .unwrap_or_else(|| panic!("no {backend} in {list}"))
}

const WITHIN: Duration = Duration::from_secs(6);

/// One instance → live page; a second registered → calls spread over both;
/// the first deregistered → every call moves to the second.
#[actix_rt::test]
async fn follows_registrations_and_deregistrations() {
    let consul = ConsulDouble::start();
    let (a, b) = (instance("a"), instance("b"));
    consul.register(Instance::new("a", "reviews", a.addr));
    let gw = start_gateway(&config(&consul.url(), "follow", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    assert_eq!(get(gw.addr, "/products/1").await.meta("reviews")["source"], "live");

    consul.register(Instance::new("b", "reviews", b.addr));
    until_served_by(&gw, &["a", "b"], WITHIN).await;
    consul.deregister("a");
    until_served_by(&gw, &["b"], WITHIN).await;
    let entry = admin_entry(&gw, "follow").await;
    assert_eq!(entry["instances"], serde_json::json!([b.address()]));
    assert_eq!(entry["discovery"]["kind"], "consul");
    assert_eq!(entry["discovery"]["state"], "ok");
    assert!(entry["discovery"]["index"].as_u64().unwrap_or(0) > 0, "{entry}");
    gw.stop(false).await;
}

/// A check turning critical takes its instance out; passing again, back in.
#[actix_rt::test]
async fn a_critical_check_stops_calls_to_that_instance() {
    let consul = ConsulDouble::start();
    let (a, b) = (instance("a"), instance("b"));
    consul.register(Instance::new("a", "reviews", a.addr));
    consul.register(Instance::new("b", "reviews", b.addr));
    let gw = start_gateway(&config(&consul.url(), "critical", None)).await;
    until_served_by(&gw, &["a", "b"], WITHIN).await;
    consul.set_check("a", "critical");
    until_served_by(&gw, &["b"], WITHIN).await;
    let calls_to_a = a.calls();
    served_by(&gw, 10).await;
    assert_eq!(a.calls(), calls_to_a, "no call reaches the critical instance");
    consul.set_check("a", "passing");
    until_served_by(&gw, &["a", "b"], WITHIN).await;
    gw.stop(false).await;
}

/// Consul stopped: pages keep coming from the last known set for the whole
/// outage, `/admin/backends` says degraded, the gauges say so; Consul back:
/// the watch recovers and follows changes again.
#[actix_rt::test]
async fn consul_down_keeps_the_last_known_instances() {
    let mut consul = ConsulDouble::start();
    let a = instance("a");
    consul.register(Instance::new("a", "reviews", a.addr));
    let gw = start_gateway(&config(&consul.url(), "outage", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;

    consul.stop();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(served_by(&gw, 3).await, BTreeSet::from(["a".to_string()]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entry = admin_entry(&gw, "outage").await;
    assert_eq!(entry["discovery"]["state"], "degraded", "{entry}");
    assert_eq!(entry["instances"], serde_json::json!([a.address()]));
    assert!(entry["discovery"]["last_error"].as_str().is_some_and(|e| e.contains("unreachable")));
    assert_eq!(get(gw.admin_addr, "/readyz").await.status, 200, "still has an instance");
    let metrics = String::from_utf8_lossy(&get(gw.admin_addr, "/metrics").await.body).to_string();
    assert!(metrics.contains("mosaic_discovery_up{backend=\"outage\"} 0"), "{metrics}");
    assert!(metrics.contains("mosaic_backend_instances{backend=\"outage\"} 1"), "{metrics}");

    consul.restart();
    let b = instance("b");
    consul.register(Instance::new("b", "reviews", b.addr));
    consul.deregister("a");
    // The backoff may have reached 4-8 s by now.
    until_served_by(&gw, &["b"], Duration::from_secs(15)).await;
    assert_eq!(admin_entry(&gw, "outage").await["discovery"]["state"], "ok");
    gw.stop(false).await;
}

/// 500s and garbage are failures like a dead agent: the last known set
/// stays, the state is degraded with the reason; then it recovers.
#[actix_rt::test]
async fn errors_and_garbage_keep_the_last_known_instances() {
    let consul = ConsulDouble::start();
    let a = instance("a");
    consul.register(Instance::new("a", "reviews", a.addr));
    let gw = start_gateway(&config(&consul.url(), "garbage", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    for (mode, error) in [(Mode::Garbage, "garbage"), (Mode::Error500, "500")] {
        consul.set_mode(mode);
        let until = Instant::now() + WITHIN;
        loop {
            let entry = admin_entry(&gw, "garbage").await;
            let last_error = entry["discovery"]["last_error"].as_str().unwrap_or("");
            if entry["discovery"]["state"] == "degraded" && last_error.contains(error) {
                break;
            }
            assert!(Instant::now() < until, "degraded with {error}: {entry}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(served_by(&gw, 4).await, BTreeSet::from(["a".to_string()]));
        consul.set_mode(Mode::Normal);
        let until = Instant::now() + Duration::from_secs(10);
        while admin_entry(&gw, "garbage").await["discovery"]["state"] != "ok" {
            assert!(Instant::now() < until, "recovers after {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    gw.stop(false).await;
}

/// The index going backwards (a snapshot restore) is noticed when the
/// blocking query returns; the watch resets to 0, refetches without
/// blocking, and follows later changes (with the old, higher index it would
/// block until the new index passed it and miss them).
#[actix_rt::test]
async fn an_index_going_backwards_is_reset() {
    let consul = ConsulDouble::start();
    let (a, b) = (instance("a"), instance("b"));
    consul.register(Instance::new("a", "reviews", a.addr));
    for _ in 0..20 {
        consul.set_check("a", "passing"); // push the index well up
    }
    let gw = start_gateway(&config(&consul.url(), "backwards", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    let high = consul.index();
    let calls_before = consul.health_requests().len();
    consul.force_index(2);
    // The blocking call in flight ends with the lower index: the watch must
    // start over with a call that carries no index.
    let until = Instant::now() + WITHIN;
    while !consul
        .health_requests()
        .iter()
        .skip(calls_before)
        .any(|(target, _)| !target.contains("index="))
    {
        assert!(
            Instant::now() < until,
            "no refetch after the reset: {:?}",
            consul.health_requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consul.register(Instance::new("b", "reviews", b.addr));
    consul.deregister("a");
    assert!(consul.index() < high, "still below the old index");
    until_served_by(&gw, &["b"], WITHIN).await;
    gw.stop(false).await;
}

/// The ACL token goes in `X-Consul-Token`; a wrong one is a degraded watch
/// (403 in the admin API), not a crash.
#[actix_rt::test]
async fn the_acl_token_is_sent_and_a_wrong_one_degrades() {
    let consul = ConsulDouble::with_token("s3cret");
    let a = instance("a");
    consul.register(Instance::new("a", "reviews", a.addr));
    let gw = start_gateway(&config(&consul.url(), "acl", Some("s3cret"))).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    let requests = consul.health_requests();
    assert!(requests.iter().all(|(_, token)| token.as_deref() == Some("s3cret")), "{requests:?}");
    assert!(requests.iter().all(|(t, _)| t.contains("passing=true")), "{requests:?}");
    gw.stop(false).await;

    let gw = start_gateway(&config(&consul.url(), "acl_wrong", Some("nope"))).await;
    let until = Instant::now() + WITHIN;
    loop {
        let entry = admin_entry(&gw, "acl_wrong").await;
        if entry["discovery"]["state"] == "degraded" {
            assert!(entry["discovery"]["last_error"].as_str().unwrap_or("").contains("403"));
            break;
        }
        assert!(Instant::now() < until, "{entry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(gw.admin_addr, "/healthz").await.status, 200);
    assert_eq!(get(gw.admin_addr, "/readyz").await.status, 503);
    assert_eq!(get(gw.addr, "/products/1").await.meta("reviews")["error"], "no_instances");
    gw.stop(false).await;
}

/// An empty `Service.Address` means the node's address.
#[actix_rt::test]
async fn an_empty_service_address_uses_the_node_address() {
    let consul = ConsulDouble::start();
    let a = instance("a");
    consul.register(Instance::new("a", "reviews", a.addr).on_node_address());
    let gw = start_gateway(&config(&consul.url(), "node_address", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    gw.stop(false).await;
}

/// A failing agent is not hammered: over 5 s it sees a handful of calls.
#[actix_rt::test]
async fn no_busy_loop_when_the_agent_fails() {
    let consul = ConsulDouble::start();
    consul.set_mode(Mode::Error500);
    let gw = start_gateway(&config(&consul.url(), "busy", None)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = consul.health_calls();
    assert!((1..=5).contains(&calls), "{calls} calls in 5 s");
    gw.stop(false).await;
}

/// Consul down at start-up: the backend has no instance (sections fail
/// `no_instances`, `/readyz` 503) until Consul answers; then 200 and live.
#[actix_rt::test]
async fn startup_with_consul_down_is_not_ready_until_it_answers() {
    let mut consul = ConsulDouble::start();
    let a = instance("a");
    consul.register(Instance::new("a", "reviews", a.addr));
    consul.stop();
    let gw = start_gateway(&config(&consul.url(), "startup", None)).await;
    let until = Instant::now() + WITHIN;
    while admin_entry(&gw, "startup").await["discovery"]["state"] != "degraded" {
        assert!(Instant::now() < until, "the failed first call is reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = get(gw.addr, "/products/1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.meta("reviews")["error"], "no_instances");
    assert_eq!(get(gw.admin_addr, "/readyz").await.status, 503);
    assert_eq!(admin_entry(&gw, "startup").await["discovery"]["state"], "degraded");

    consul.restart();
    let until = Instant::now() + Duration::from_secs(10);
    while get(gw.admin_addr, "/readyz").await.status != 200 {
        assert!(Instant::now() < until, "ready once Consul answers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_served_by(&gw, &["a"], WITHIN).await;
    gw.stop(false).await;
}

/// A panicking backend actor is restarted by its supervisor, keeps its
/// instances meanwhile, and its restarted watch follows changes.
#[actix_rt::test]
async fn a_crashed_actor_restarts_its_watch() {
    let consul = ConsulDouble::start();
    let (a, b) = (instance("a"), instance("b"));
    consul.register(Instance::new("a", "reviews", a.addr));
    let gw = start_gateway(&config(&consul.url(), "crash", None)).await;
    until_served_by(&gw, &["a"], WITHIN).await;
    let handle = gw.gateway().backend("crash").expect("backend");
    let _ = handle.actor.send(Crash).await;
    assert!(
        eventually(Duration::from_secs(2), || {
            handle.restarts.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await
    );
    assert_eq!(served_by(&gw, 4).await, BTreeSet::from(["a".to_string()]));
    consul.register(Instance::new("b", "reviews", b.addr));
    consul.deregister("a");
    until_served_by(&gw, &["b"], WITHIN).await;
    assert_eq!(admin_entry(&gw, "crash").await["actor_restarts"], 1);
    gw.stop(false).await;
}

/// A call in flight when its instance leaves finishes there (live); the
/// calls after the swap go to the new set.
#[actix_rt::test]
async fn calls_in_flight_finish_on_their_old_instance() {
    let consul = ConsulDouble::start();
    // The call takes 2 s and the swap has 1.5 s to be seen: margins a
    // loaded 2-core CI machine keeps (a 400 ms call and a 250 ms window
    // were missed once under a full parallel test run).
    let slow_a = FakeBackend::start(Reply::Delay(
        Duration::from_millis(2000),
        Box::new(Reply::ok(r#"{"from":"a"}"#)),
    ));
    let b = instance("b");
    consul.register(Instance::new("a", "reviews", slow_a.addr));
    let config = config(&consul.url(), "in_flight", None)
        .replace("timeout = \"500ms\"", "timeout = \"3s\"")
        .replace("deadline = \"1s\"", "deadline = \"4s\"");
    let gw = start_gateway(&config).await;
    assert!(
        eventually(WITHIN, || gw
            .gateway()
            .backend("in_flight")
            .is_some_and(|h| { h.backend.addresses() == [slow_a.address()] }))
        .await
    );
    let swap = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        consul.register(Instance::new("b", "reviews", b.addr));
        consul.deregister("a");
        let handle = gw.gateway().backend("in_flight").expect("backend");
        eventually(Duration::from_millis(1500), || handle.backend.addresses() == [b.address()])
            .await
    };
    let (page, swapped) = tokio::join!(get(gw.addr, "/products/1"), swap);
    assert!(swapped, "the set changed while the call was in flight");
    assert_eq!(page.meta("reviews")["source"], "live", "{}", page.json());
    assert_eq!(page.json()["reviews"]["from"], "a");
    assert_eq!(served_by(&gw, 4).await, BTreeSet::from(["b".to_string()]));
    gw.stop(false).await;
}
