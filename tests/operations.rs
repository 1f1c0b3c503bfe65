//! Operating mosaic: metrics, the admin API and its token, forced breakers,
//! hot reload, trace context.

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use support::*;

fn config(name: &str, backend_addr: &str, extra: &str) -> String {
    format!(
        "{LISTEN_ANY}{extra}{}
[[routes]]
path = \"/{name}/{{id}}\"
deadline = \"1s\"
sections = [
  {{ name = \"item\", backend = \"{name}\", path = \"/items/{{id}}\", required = true }},
]
",
        backend(name, &[backend_addr.to_string()], "retries = 0"),
    )
}

/// The SPEC metric names are exported with their labels and move with traffic.
#[actix_rt::test]
async fn metrics_are_exported_and_move() {
    let svc = FakeBackend::start(Reply::ok(r#"{"a":1}"#));
    let gw = start_gateway(&config("metered", &svc.address(), "")).await;
    let scrape =
        || async { String::from_utf8(get(gw.admin_addr, "/metrics").await.body).expect("utf8") };
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/metered/1").await.status, 200);
    }
    let text = scrape().await;
    for needle in [
        r#"mosaic_requests_total{route="/metered/{id}",status="200"} 3"#,
        r#"mosaic_backend_requests_total{backend="metered",outcome="success"} 3"#,
        r#"mosaic_section_source_total{route="/metered/{id}",section="item",source="live"} 3"#,
        r#"mosaic_breaker_state{backend="metered"} 0"#,
        r#"mosaic_backend_instances{backend="metered"} 1"#,
        r#"mosaic_request_duration_seconds_bucket{route="/metered/{id}",le="0.25"}"#,
        r#"mosaic_backend_duration_seconds_bucket{backend="metered",le="0.25"}"#,
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    svc.set(Reply::Json(500, "{}".into()));
    assert_eq!(get(gw.addr, "/metered/1").await.status, 502);
    let text = scrape().await;
    assert!(
        text.contains(r#"mosaic_backend_requests_total{backend="metered",outcome="status_5xx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"mosaic_requests_total{route="/metered/{id}",status="502"} 1"#),
        "{text}"
    );
    gw.stop(false).await;
}

/// A reload carries every counter over by label: a route that stays, and
/// a backend that stays even when its configuration changed and it was
/// rebuilt, go on counting where they were in `/metrics`; a route the
/// reload removed is no longer exported.
#[actix_rt::test]
async fn reload_carries_counters_over_in_metrics() {
    let svc = FakeBackend::start(Reply::ok(r#"{"a":1}"#));
    let gone = "
[[routes]]
path = \"/gone/{id}\"
deadline = \"1s\"
sections = [ { name = \"item\", backend = \"carry\", path = \"/items/{id}\" } ]
";
    let first = format!("{}{gone}", config("carry", &svc.address(), ""));
    let (gw, file) = start_gateway_from_file(&first).await;
    let scrape =
        || async { String::from_utf8(get(gw.admin_addr, "/metrics").await.body).expect("utf8") };
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/carry/1").await.status, 200);
    }
    assert_eq!(get(gw.addr, "/gone/1").await.status, 200);
    assert_eq!(get(gw.addr, "/nowhere").await.status, 404);
    let before = scrape().await;
    assert!(before.contains(r#"mosaic_requests_total{route="/gone/{id}",status="200"} 1"#));

    // The backend's retries change: it is rebuilt, under the same name.
    let second = config("carry", &svc.address(), "").replace("retries = 0", "retries = 1");
    std::fs::write(file.path(), &second).expect("write");
    let reloaded = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    assert_eq!(reloaded.json()["changes"]["changed"][0], "carry", "{}", reloaded.json());
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/carry/1").await.status, 200);
    }
    assert_eq!(get(gw.addr, "/nowhere").await.status, 404);

    let text = scrape().await;
    for needle in [
        r#"mosaic_requests_total{route="/carry/{id}",status="200"} 5"#,
        r#"mosaic_requests_total{route="unmatched",status="404"} 2"#,
        r#"mosaic_request_duration_seconds_count{route="/carry/{id}"} 5"#,
        r#"mosaic_pages_complete_total{route="/carry/{id}"} 5"#,
        r#"mosaic_section_source_total{route="/carry/{id}",section="item",source="live"} 5"#,
        // 3 + 1 attempts before the reload (both routes), 2 after.
        r#"mosaic_backend_duration_seconds_count{backend="carry"} 6"#,
        r#"mosaic_backend_duration_seconds_bucket{backend="carry",le="+Inf"} 6"#,
        r#"mosaic_cache_misses_total{backend="carry"} 0"#,
    ] {
        assert!(text.contains(needle), "missing {needle}\n{text}");
    }
    assert!(!text.contains(r#"route="/gone/{id}""#), "a removed route is not exported\n{text}");
    // The recorder's own families are still there, once each.
    assert_eq!(text.matches("# TYPE mosaic_breaker_state gauge").count(), 1, "{text}");
    assert_eq!(text.matches("# TYPE mosaic_requests_total counter").count(), 1, "{text}");
    gw.stop(false).await;
}

/// `/admin/*` needs the bearer token when one is set; health and metrics do not.
#[actix_rt::test]
async fn admin_token_is_enforced() {
    let svc = FakeBackend::start(Reply::ok("{}"));
    let toml = config("guarded", &svc.address(), "").replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"s3cret\"",
    );
    let gw = start_gateway(&toml).await;
    assert_eq!(admin(gw.admin_addr, "GET", "/admin/backends", None, None).await.status, 401);
    assert_eq!(
        admin(gw.admin_addr, "GET", "/admin/backends", Some("wrong"), None).await.status,
        401
    );
    assert_eq!(
        admin(gw.admin_addr, "GET", "/admin/backends", Some("s3cre"), None).await.status,
        401
    );
    let ok = admin(gw.admin_addr, "GET", "/admin/backends", Some("s3cret"), None).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["backends"][0]["name"], "guarded");
    let body = r#"{"state":"open"}"#;
    let path = "/admin/backends/guarded/breaker";
    assert_eq!(admin(gw.admin_addr, "POST", path, None, Some(body)).await.status, 401);
    assert_eq!(admin(gw.admin_addr, "POST", "/admin/reload", None, None).await.status, 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(gw.admin_addr, open).await.status, 200, "{open}");
    }
    gw.stop(false).await;
}

/// An operator forces a breaker open: pages show `circuit_open` and the
/// service gets no call; `auto` gives it back to its policy.
#[actix_rt::test]
async fn forced_breaker_shows_in_pages() {
    let product = FakeBackend::start(Reply::ok(r#"{"id":"1"}"#));
    let reviews = FakeBackend::start(Reply::ok(r#"{"r":1}"#));
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/p/{{id}}\"
deadline = \"1s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"reviews\", backend = \"reviews\", path = \"/reviews/{{id}}\" }},
]
",
        backend("catalog", &[product.address()], ""),
        backend("reviews", &[reviews.address()], ""),
    );
    let gw = start_gateway(&toml).await;
    let path = "/admin/backends/reviews/breaker";
    let forced = admin(gw.admin_addr, "POST", path, None, Some(r#"{"state":"open"}"#)).await;
    assert_eq!(forced.status, 200);
    let page = get(gw.addr, "/p/1").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.meta("reviews")["error"], "circuit_open");
    assert_eq!(reviews.calls(), 0);
    let listing = admin(gw.admin_addr, "GET", "/admin/backends", None, None).await.json();
    let entry = listing["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == "reviews").cloned());
    assert_eq!(entry.expect("reviews listed")["breaker"], "open");
    let bad = admin(gw.admin_addr, "POST", path, None, Some(r#"{"state":"ajar"}"#)).await;
    assert_eq!(bad.status, 400);
    let missing = admin(
        gw.admin_addr,
        "POST",
        "/admin/backends/nope/breaker",
        None,
        Some(r#"{"state":"open"}"#),
    )
    .await;
    assert_eq!(missing.status, 404);
    admin(gw.admin_addr, "POST", path, None, Some(r#"{"state":"auto"}"#)).await;
    assert_eq!(get(gw.addr, "/p/1").await.meta("reviews")["source"], "live");
    gw.stop(false).await;
}

/// A reload adds a route; an invalid file changes nothing and answers 400
/// with the TOML path of each error; the listen address cannot change.
#[actix_rt::test]
async fn reload_adds_routes_and_refuses_invalid_files() {
    let svc = FakeBackend::start(Reply::ok(r#"{"v":1}"#));
    let first = config("shop", &svc.address(), "");
    let (gw, file) = start_gateway_from_file(&first).await;
    assert_eq!(get(gw.addr, "/extra/1").await.status, 404);

    let with_extra = format!(
        "{first}
[[routes]]
path = \"/extra/{{id}}\"
deadline = \"1s\"
sections = [ {{ name = \"item\", backend = \"shop\", path = \"/items/{{id}}\" }} ]
"
    );
    std::fs::write(file.path(), &with_extra).expect("write");
    let reloaded = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    assert_eq!(reloaded.json()["changes"]["kept"][0], "shop");
    assert_eq!(get(gw.addr, "/extra/1").await.status, 200);

    let broken = with_extra.replace("deadline = \"1s\"", "deadline = \"soon\"");
    std::fs::write(file.path(), broken).expect("write");
    let refused = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(refused.status, 400);
    let errors = refused.json()["errors"].clone();
    assert_eq!(errors[0]["path"], "routes[0].deadline", "{errors}");
    assert_eq!(errors[1]["path"], "routes[1].deadline", "{errors}");
    assert_eq!(get(gw.addr, "/extra/1").await.status, 200, "old config still serving");
    assert_eq!(get(gw.addr, "/shop/1").await.status, 200);

    let moved = with_extra
        .replace("[server]\nlisten = \"127.0.0.1:0\"", "[server]\nlisten = \"127.0.0.1:1\"");
    std::fs::write(file.path(), moved).expect("write");
    let refused = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["errors"][0]["path"], "server.listen");
    gw.stop(false).await;
}

/// A reload keeps an unchanged backend as it was (its open breaker stays
/// open, its cache stays warm); a changed one starts fresh; a removed one
/// disappears from the admin API.
#[actix_rt::test]
async fn reload_keeps_unchanged_backends() {
    let a = FakeBackend::start(Reply::ok(r#"{"a":1}"#));
    let b = FakeBackend::start(Reply::ok(r#"{"b":1}"#));
    let toml = format!(
        "{LISTEN_ANY}{}{}
[[routes]]
path = \"/k/{{id}}\"
deadline = \"1s\"
sections = [ {{ name = \"a\", backend = \"keep\", path = \"/a/{{id}}\" }} ]
",
        backend("keep", &[a.address()], "cache = { ttl = \"1h\" }"),
        backend("gone", &[b.address()], ""),
    );
    let (gw, file) = start_gateway_from_file(&toml).await;
    assert_eq!(get(gw.addr, "/k/1").await.meta("a")["source"], "live");
    let before = gw.gateway().backend("keep").expect("keep").backend;
    std::fs::write(file.path(), toml.replace(&backend("gone", &[b.address()], ""), ""))
        .expect("write");
    let reloaded = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200);
    assert_eq!(reloaded.json()["changes"]["removed"][0], "gone");
    let after = gw.gateway().backend("keep").expect("keep").backend;
    assert!(std::sync::Arc::ptr_eq(&before, &after), "same backend state");
    assert_eq!(get(gw.addr, "/k/1").await.meta("a")["source"], "cache", "cache survived");
    assert_eq!(a.calls(), 1);
    assert!(gw.gateway().backend("gone").is_none());
    gw.stop(false).await;
}

/// Reloading while requests flow loses none of them.
#[actix_rt::test]
async fn reload_under_load_loses_no_request() {
    let svc = FakeBackend::start(Reply::Delay(
        Duration::from_millis(20),
        Box::new(Reply::ok(r#"{"v":1}"#)),
    ));
    let toml = config("busy", &svc.address(), "").replace("workers = 1", "workers = 2");
    let (gw, file) = start_gateway_from_file(&toml).await;
    let addr = gw.addr;
    let load = async move {
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let batch = join_all(
                (0..10).map(|i| get(addr, if i % 2 == 0 { "/busy/1" } else { "/busy/2" })),
            )
            .await;
            statuses.extend(batch.into_iter().map(|a| a.status));
        }
        statuses
    };
    let reloads = async {
        for i in 0..10 {
            tokio::time::sleep(Duration::from_millis(25)).await;
            // Alternate between two valid files so every reload changes something.
            let text = if i % 2 == 0 {
                toml.replace("deadline = \"1s\"", "deadline = \"2s\"")
            } else {
                toml.clone()
            };
            std::fs::write(file.path(), text).expect("write");
            assert_eq!(admin(gw.admin_addr, "POST", "/admin/reload", None, None).await.status, 200);
        }
    };
    let (statuses, ()) = tokio::join!(load, reloads);
    assert_eq!(statuses.len(), 200);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(svc.calls(), 200);
    gw.stop(false).await;
}

/// Services get a W3C `traceparent`: the caller's trace continued, or a new one.
#[actix_rt::test]
async fn traceparent_is_propagated_or_started() {
    let svc = FakeBackend::start(Reply::ok("{}"));
    let gw = start_gateway(&config("traced", &svc.address(), "")).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    request(gw.addr, "GET", "/traced/1", &[("traceparent", incoming), ("tracestate", "k=v")], None)
        .await;
    get(gw.addr, "/traced/2").await;
    let seen = svc.requests();
    let first = seen[0].header("traceparent").expect("traceparent sent");
    assert!(first.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{first}");
    assert_ne!(first, incoming);
    assert_eq!(seen[0].header("tracestate"), Some("k=v"));
    let second = seen[1].header("traceparent").expect("generated");
    assert_eq!(second.len(), 55);
    assert!(!second.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    gw.stop(false).await;
}

/// A request in flight on a backend that a reload removes still completes;
/// new requests see the new configuration.
#[actix_rt::test]
async fn removed_backend_finishes_its_requests_in_flight() {
    // Slower than the reload, faster than the default 300 ms timeout.
    let svc = FakeBackend::start(Reply::Delay(
        Duration::from_millis(250),
        Box::new(Reply::ok(r#"{"v":1}"#)),
    ));
    let other = FakeBackend::start(Reply::ok(r#"{"w":2}"#));
    let toml = config("leaving", &svc.address(), "");
    let (gw, file) = start_gateway_from_file(&toml).await;
    let addr = gw.addr;
    let in_flight = actix_rt::spawn(async move { get(addr, "/leaving/1").await });
    assert!(eventually(Duration::from_secs(2), || svc.calls() == 1).await, "in flight");
    std::fs::write(file.path(), config("arriving", &other.address(), "")).expect("write");
    let reloaded = admin(gw.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.json()["changes"]["removed"][0], "leaving");
    let page = in_flight.await.expect("request task");
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["item"]["v"], 1);
    assert_eq!(get(gw.addr, "/leaving/1").await.status, 404);
    assert_eq!(get(gw.addr, "/arriving/1").await.status, 200);
    gw.stop(false).await;
}
