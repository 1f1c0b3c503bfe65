//! The index rules, the address fallback and the query shape.

use std::time::Duration;

use super::*;

fn entries(json: &str) -> Vec<HealthEntry> {
    match serde_json::from_str(json) {
        Ok(entries) => entries,
        Err(e) => panic!("{e}: {json}"),
    }
}

/// The documented safety rules: follow the index forwards, reset to 0 when
/// it goes backwards, never wait on an index below 1.
#[test]
fn index_rules() {
    assert_eq!(next_index(0, 0), 1, "an index of 0 is never used to block");
    assert_eq!(next_index(0, 42), 42, "first answer");
    assert_eq!(next_index(42, 42), 42, "no change (wait elapsed)");
    assert_eq!(next_index(42, 57), 57, "forwards");
    assert_eq!(next_index(57, 12), 0, "backwards: reset, refetch without blocking");
    assert_eq!(next_index(0, 12), 12, "after the reset");
    assert_eq!(next_index(12, 0), 0, "0 after a real index is backwards too");
}

/// `Service.Address` wins; empty means `Node.Address`; IPv6 gets brackets;
/// entries with a failing check are dropped; the list is sorted and unique.
#[test]
fn healthy_instances_use_service_then_node_address() {
    let list = entries(
        r#"[
        {"Node":{"ID":"n1","Node":"a","Address":"10.0.0.1","Datacenter":"dc1"},
         "Service":{"ID":"r1","Service":"reviews","Tags":["v2"],"Address":"10.1.0.1","Port":7003,"Meta":{}},
         "Checks":[{"CheckID":"serfHealth","Status":"passing"},{"CheckID":"service:r1","Status":"passing"}]},
        {"Node":{"ID":"n2","Node":"b","Address":"10.0.0.2","Datacenter":"dc1"},
         "Service":{"ID":"r2","Service":"reviews","Tags":null,"Address":"","Port":7003},
         "Checks":[]},
        {"Node":{"Node":"c","Address":"fe80::1"},
         "Service":{"ID":"r3","Service":"reviews","Address":"","Port":80}},
        {"Node":{"Node":"d","Address":"10.0.0.4"},
         "Service":{"ID":"r4","Service":"reviews","Address":"10.1.0.4","Port":7003},
         "Checks":[{"Status":"passing"},{"Status":"warning"}]},
        {"Node":{"Node":"e","Address":"10.0.0.2"},
         "Service":{"ID":"r5","Service":"reviews","Address":"","Port":7003}},
        {"Node":{"Node":"f","Address":""},
         "Service":{"ID":"r6","Service":"reviews","Address":"","Port":7003}}
    ]"#,
    );
    assert_eq!(healthy_instances(&list), ["10.0.0.2:7003", "10.1.0.1:7003", "[fe80::1]:80"]);
}

/// Garbage is an error, not an empty list (which would drop every instance).
#[test]
fn garbage_does_not_parse() {
    assert!(serde_json::from_str::<Vec<HealthEntry>>("<html>oops</html>").is_err());
    assert!(serde_json::from_str::<Vec<HealthEntry>>(r#"{"not":"a list"}"#).is_err());
    assert!(serde_json::from_str::<Vec<HealthEntry>>(r#"[{"Node":{}}]"#).is_err());
}

fn config(wait: Duration) -> ConsulConfig {
    ConsulConfig {
        address: "http://127.0.0.1:8500/".into(),
        token: Some("secret".into()),
        datacenter: Some("dc 2".into()),
        wait,
    }
}

/// `passing`, `tag`, `dc` always; `index` and `wait` only when blocking;
/// names percent-encoded.
#[actix_rt::test]
async fn health_url_shape() {
    let client = ConsulClient::new(&config(Duration::from_secs(30)));
    assert_eq!(
        client.health_url("reviews", Some("v2"), 0),
        "http://127.0.0.1:8500/v1/health/service/reviews?passing=true&tag=v2&dc=dc%202"
    );
    assert_eq!(
        client.health_url("a/b", None, 7),
        "http://127.0.0.1:8500/v1/health/service/a%2Fb?passing=true&dc=dc%202&index=7&wait=30s"
    );
    let client = ConsulClient::new(&config(Duration::from_millis(1500)));
    assert!(client.health_url("r", None, 1).ends_with("&wait=1500ms"));
    assert!(!format!("{client:?}").contains("secret"), "the token is never printed");
}

/// The registration body uses Consul's field names.
#[test]
fn registration_json() {
    let registration = ServiceRegistration {
        id: "reviews-1".into(),
        name: "reviews".into(),
        tags: vec!["demo".into()],
        address: "127.0.0.1".into(),
        port: 7003,
        meta: BTreeMap::new(),
        check: Some(HttpCheck {
            http: "http://127.0.0.1:7003/health".into(),
            interval: "2s".into(),
            timeout: "1s".into(),
            status: Some("passing".into()),
        }),
    };
    let json = serde_json::to_value(&registration).unwrap_or_default();
    assert_eq!(json["ID"], "reviews-1");
    assert_eq!(json["Name"], "reviews");
    assert_eq!(json["Port"], 7003);
    assert_eq!(json["Check"]["HTTP"], "http://127.0.0.1:7003/health");
    assert_eq!(json["Check"]["Interval"], "2s");
    assert_eq!(json["Check"]["Status"], "passing");
}
