//! Validation rules end to end: each test feeds a small file through
//! `parse_str_with_env` and pins the exact paths and messages reported.

use std::time::Duration;

use super::*;

/// A valid file that each test breaks in one place.
const BASE: &str = r#"
[backends.catalog]
instances = ["127.0.0.1:7001"]

[backends.reviews]
instances = ["127.0.0.1:7003"]

[[routes]]
path = "/products/{id}"
deadline = "250ms"
sections = [
  { name = "product", backend = "catalog", path = "/products/{id}", required = true },
  { name = "reviews", backend = "reviews", path = "/reviews/{id}" },
]
"#;

fn env(name: &str) -> Option<String> {
    (name == "SET").then(|| "value".to_string())
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_str_with_env(text, &env)
}

/// The errors of a file, as `mosaic check` prints them.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// The paths of the errors of a file.
fn paths(text: &str) -> Vec<String> {
    parse(text).err().map(|e| e.errors.into_iter().map(|e| e.path).collect()).unwrap_or_default()
}

#[test]
fn defaults_fill_every_absent_key() {
    let config = parse(BASE).unwrap();
    assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
    assert!(config.server.workers >= 1, "workers = 0 resolves to the core count");
    assert_eq!(config.server.max_body, DEFAULT_MAX_BODY);
    assert_eq!(config.server.client_timeout, DEFAULT_CLIENT_TIMEOUT);
    assert_eq!(config.server.keep_alive, DEFAULT_KEEP_ALIVE);
    assert_eq!(config.admin.token, None);
    assert!(config.consul.is_none());
    let reviews = &config.backends["reviews"];
    assert_eq!(reviews.timeout, DEFAULT_TIMEOUT);
    assert_eq!(reviews.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(reviews.retries, DEFAULT_RETRIES);
    assert_eq!(reviews.breaker.policy, BreakerPolicy::ConsecutiveFailures { threshold: 5 });
    assert_eq!(reviews.breaker.backoff, DEFAULT_BACKOFF);
    assert_eq!(reviews.cache, None);
    let route = &config.routes[0];
    assert_eq!(route.deadline, Duration::from_millis(250));
    assert!(route.sections[0].required && !route.sections[1].required);
}

#[test]
fn defaults_merge_into_backends_and_backends_win() {
    let text = format!(
        "{BASE}\n[defaults]\ntimeout = \"1s\"\ncache = {{ ttl = \"5s\" }}\n\
         [defaults.breaker]\nthreshold = 7\nbackoff = {{ kind = \"exponential\", start = \"2s\", max = \"1m\" }}"
    )
    .replace(
        "[backends.reviews]\n",
        "[backends.reviews]\ntimeout = \"100ms\"\ncache = { max_entries = 5 }\n\
         breaker = { backoff = { kind = \"constant\", delay = \"3s\" } }\n",
    );
    let config = parse(&text).unwrap();
    let (catalog, reviews) = (&config.backends["catalog"], &config.backends["reviews"]);
    assert_eq!(catalog.timeout, Duration::from_secs(1));
    assert_eq!(reviews.timeout, Duration::from_millis(100));
    let cache = reviews.cache.unwrap();
    assert_eq!((cache.ttl, cache.max_entries), (Duration::from_secs(5), 5));
    assert_eq!(reviews.breaker.policy, BreakerPolicy::ConsecutiveFailures { threshold: 7 });
    assert_eq!(reviews.breaker.backoff, Backoff::Constant { delay: Duration::from_secs(3) });
}

#[test]
fn an_inherited_bad_value_is_reported_once_where_it_was_written() {
    let text = format!("{BASE}\n[defaults]\ntimeout = \"fast\"");
    assert_eq!(
        errors(&text),
        ["defaults.timeout: invalid duration \"fast\" (use a number and a unit: \"250ms\", \"5s\", \"1m\")"]
    );
}

#[test]
fn env_variables_expand_and_unset_ones_are_errors() {
    let text = format!("{BASE}\n[admin]\ntoken = \"${{SET}}\"");
    assert_eq!(parse(&text).unwrap().admin.token.as_deref(), Some("value"));
    let text = format!("{BASE}\n[admin]\ntoken = \"${{UNSET:-}}\"");
    assert_eq!(parse(&text).unwrap().admin.token, None);
    let text = format!("{BASE}\n[admin]\ntoken = \"${{UNSET}}\"");
    assert_eq!(
        errors(&text),
        ["admin.token: environment variable UNSET is not set (set it, or write ${UNSET:-default})"]
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let errors = errors("[server]\nlisten = = 1");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("TOML syntax error at line 2, column 10"), "{errors:?}");
}

#[test]
fn unknown_keys_are_errors_at_every_level() {
    let text = BASE.replace("deadline", "deadlin").replace("required = true", "requird = true")
        + "\n[sever]\n[discovery.consull]";
    assert_eq!(
        paths(&text),
        [
            "sever",
            "discovery.consull",
            "routes[0].deadlin",
            // Still required: the typo does not count as the key.
            "routes[0].deadline",
            "routes[0].sections[0].requird",
        ]
    );
}

#[test]
fn backends_need_exactly_one_instance_source() {
    let both = BASE.replace(
        "[backends.reviews]\n",
        "[discovery.consul]\naddress = \"http://c:8500\"\n[backends.reviews]\nconsul = { service = \"r\" }\n",
    );
    assert_eq!(errors(&both), ["backends.reviews: set either instances or consul, not both"]);
    let neither = BASE.replace("instances = [\"127.0.0.1:7003\"]", "");
    assert_eq!(paths(&neither), ["backends.reviews"]);
    let consul = BASE.replace("instances = [\"127.0.0.1:7003\"]", "consul = { service = \"r\" }");
    assert_eq!(
        errors(&consul),
        ["backends.reviews.consul: needs a [discovery.consul] section (add one with address = \"http://127.0.0.1:8500\")"]
    );
    let empty = BASE.replace("[\"127.0.0.1:7003\"]", "[]");
    assert_eq!(paths(&empty), ["backends.reviews.instances"]);
    let bad = BASE.replace("[\"127.0.0.1:7003\"]", "[\"ok:1\", \"h:65536\", \"h\"]");
    assert_eq!(paths(&bad), ["backends.reviews.instances[1]", "backends.reviews.instances[2]"]);
}

#[test]
fn consul_discovery_is_checked() {
    let text = BASE
        .replace("instances = [\"127.0.0.1:7003\"]", "consul = { service = \"r\", tag = \"v2\" }")
        + "\n[discovery.consul]\naddress = \"127.0.0.1:8500\"\nwait = \"11m\"\ntoken = \"\"";
    assert_eq!(paths(&text), ["discovery.consul.address", "discovery.consul.wait"]);
    let ok = text.replace("\"127.0.0.1:8500\"", "\"http://127.0.0.1:8500/\"").replace("11m", "5m");
    let config = parse(&ok).unwrap();
    let consul = config.consul.unwrap();
    assert_eq!(
        (consul.address.as_str(), consul.token, consul.wait),
        ("http://127.0.0.1:8500", None, Duration::from_secs(300))
    );
    assert_eq!(
        config.backends["reviews"].instances,
        InstanceSource::Consul { service: "r".into(), tag: Some("v2".into()) }
    );
    // The agent client has no TLS: https is refused up front, not at run time.
    let tls = ok.replace("http://127.0.0.1:8500/", "https://127.0.0.1:8501");
    assert_eq!(paths(&tls), ["discovery.consul.address"]);
}

#[test]
fn breaker_keys_of_the_other_policy_or_kind_are_errors() {
    let breaker = |b: &str| {
        BASE.replace("[backends.reviews]\n", &format!("[backends.reviews]\nbreaker = {b}\n"))
    };
    assert_eq!(
        paths(&breaker("{ policy = \"success_rate\", threshold = 3, required_success_rate = 0.8, minimum_calls = 5, window = \"10s\" }")),
        ["backends.reviews.breaker.threshold"]
    );
    assert_eq!(paths(&breaker("{ window = \"10s\" }")), ["backends.reviews.breaker.window"]);
    assert_eq!(
        paths(&breaker("{ backoff = { kind = \"exponential\", delay = \"1s\", start = \"2s\", max = \"1s\" } }")),
        ["backends.reviews.breaker.backoff.delay", "backends.reviews.breaker.backoff.max"]
    );
    assert_eq!(paths(&breaker("{ policy = \"often\" }")), ["backends.reviews.breaker.policy"]);
    assert_eq!(
        paths(&breaker("{ backoff = { kind = \"linear\" } }")),
        ["backends.reviews.breaker.backoff.kind"]
    );
    assert_eq!(
        paths(&breaker("{ half_open_calls = 0, threshold = 0 }")),
        ["backends.reviews.breaker.threshold", "backends.reviews.breaker.half_open_calls"]
    );
    let ok = breaker("{ policy = \"success_rate\", required_success_rate = 1, minimum_calls = 5, window = \"1m\", backoff = { kind = \"equal_jittered\", start = \"1s\", max = \"1s\" } }");
    let b = &parse(&ok).unwrap().backends["reviews"].breaker;
    assert_eq!(
        b.policy,
        BreakerPolicy::SuccessRate {
            required_success_rate: 1.0,
            minimum_calls: 5,
            window: Duration::from_secs(60)
        }
    );
}

#[test]
fn success_rate_window_must_be_whole_seconds() {
    let text = BASE.replace(
        "[backends.reviews]\n",
        "[backends.reviews]\nbreaker = { policy = \"success_rate\", required_success_rate = 1.5, minimum_calls = 0, window = \"1500ms\" }\n",
    );
    assert_eq!(
        errors(&text),
        [
            "backends.reviews.breaker.required_success_rate: invalid rate 1.5: must be more than 0 and at most 1",
            "backends.reviews.breaker.minimum_calls: invalid value 0: must be at least 1",
            "backends.reviews.breaker.window: invalid window \"1500ms\": must be whole seconds, at least \"1s\" (the breaker counts in whole seconds and would truncate it)",
        ]
    );
}

#[test]
fn cache_and_default_response() {
    let text = BASE.replace(
        "[backends.reviews]\n",
        "[backends.reviews]\ncache = { ttl = \"60s\", stale_if_error = \"1h\" }\n\
         default = { items = [], at = 1979-05-27T07:32:00Z, n = 1.5, ok = true }\n",
    );
    let config = parse(&text).unwrap();
    let reviews = &config.backends["reviews"];
    let cache = reviews.cache.unwrap();
    assert_eq!(cache.stale_if_error, Duration::from_secs(3600));
    assert_eq!(cache.max_entries, DEFAULT_CACHE_MAX_ENTRIES);
    assert_eq!(
        reviews.default.as_deref(),
        Some(&br#"{"at":"1979-05-27T07:32:00Z","items":[],"n":1.5,"ok":true}"#[..])
    );
    let scalar = BASE.replace("[backends.reviews]\n", "[backends.reviews]\ndefault = \"none\"\n");
    assert_eq!(
        parse(&scalar).unwrap().backends["reviews"].default.as_deref(),
        Some(&b"\"none\""[..])
    );
    let bad = BASE.replace(
        "[backends.reviews]\n",
        "[backends.reviews]\ncache = { ttl = \"0s\", max_entries = 0 }\n",
    );
    assert_eq!(paths(&bad), ["backends.reviews.cache.ttl", "backends.reviews.cache.max_entries"]);
}

#[test]
fn sections_are_checked_one_by_one() {
    let text = BASE.replace(
        "{ name = \"reviews\", backend = \"reviews\", path = \"/reviews/{id}\" },",
        "{ name = \"reviews\", backend = \"reviewz\", path = \"/reviews/{sku}\" },\n\
         { name = \"product\", backend = \"catalog\", path = \"/p\", forward_headers = [\"X-User\", \"x-user\"] },\n\
         { name = \"a b\", backend = \"catalog\", path = \"/p\", forward_headers = [\"bad:header\"] },",
    );
    assert_eq!(
        errors(&text),
        [
            "routes[0].sections[1].backend: no backend named \"reviewz\" (known: catalog, reviews)",
            "routes[0].sections[1].path: invalid service path \"/reviews/{sku}\": parameter {sku} is not declared in the route path (the route declares: {id})",
            "routes[0].sections[2].name: duplicate section name \"product\": each member of the page needs its own",
            "routes[0].sections[2].forward_headers[1]: header \"x-user\" is listed twice",
            "routes[0].sections[3].name: invalid section name \"a b\": use letters, digits, '_' and '-'",
            "routes[0].sections[3].forward_headers[0]: invalid header name \"bad:header\" (e.g. \"authorization\", \"x-user-id\")",
        ]
    );
    let lower = BASE.replace("required = true", "forward_headers = [\"Authorization\"]");
    assert_eq!(parse(&lower).unwrap().routes[0].sections[0].forward_headers, ["authorization"]);
}

#[test]
fn routes_and_proxies_are_checked() {
    let text = format!(
        "{BASE}\n[[routes]]\npath = \"/products/{{sku}}\"\ndeadline = \"1s\"\nsections = []\n\
         [[routes]]\npath = \"products\"\ndeadline = \"1s\"\nsections = [{{ name = \"_mosaic\", backend = \"catalog\", path = \"/x\" }}]\n\
         [[proxy]]\nprefix = \"/products/{{id}}\"\nbackend = \"catalog\"\n\
         [[proxy]]\nprefix = \"/products/{{id}}\"\nbackend = \"nope\"\nrewrite = \"x\""
    );
    assert_eq!(
        paths(&text),
        [
            "routes[1].path",
            "routes[1].sections",
            "routes[2].path",
            "routes[2].sections[0].name",
            "proxy[1].prefix",
            "proxy[1].backend",
            "proxy[1].rewrite",
        ]
    );
}

#[test]
fn server_and_admin_are_checked() {
    let text = format!(
        "{BASE}\n[server]\nlisten = \"0.0.0.0:80\"\nmax_body = \"64KiB\"\n\
         [admin]\nlisten = \"0.0.0.0:80\"\ntoken = \"t\""
    );
    assert_eq!(paths(&text), ["admin.listen"]);
    let text = format!(
        "{BASE}\n[server]\nworkers = -1\nmax_body = 0\nclient_timeout = \"0s\"\nkeep_alive = \"soon\""
    );
    assert_eq!(
        paths(&text),
        ["server.workers", "server.max_body", "server.client_timeout", "server.keep_alive"]
    );
    let keep = format!("{BASE}\n[server]\nkeep_alive = \"2m\"");
    assert_eq!(parse(&keep).unwrap().server.keep_alive, Duration::from_secs(120));
    let ok = format!("{BASE}\n[server]\nworkers = 3\nmax_body = 65536\nshutdown_grace = \"0s\"");
    let server = parse(&ok).unwrap().server;
    assert_eq!(
        (server.workers, server.max_body, server.shutdown_grace),
        (3, 65536, Duration::ZERO)
    );
}

#[test]
fn many_mistakes_are_all_reported() {
    let text = BASE
        .replace("deadline = \"250ms\"", "deadline = \"soon\"")
        .replace("backend = \"reviews\"", "backend = \"reviewz\"")
        .replace(
            "instances = [\"127.0.0.1:7001\"]",
            "instances = [\"${CATALOG_HOST}:7001\"]\ntimeot = \"1s\"",
        );
    assert_eq!(
        paths(&text),
        [
            "backends.catalog.instances[0]",
            "backends.catalog.timeot",
            "routes[0].deadline",
            "routes[0].sections[1].backend",
        ]
    );
}

/// The AMQP part of BASE's shop: a broker, an RPC backend and a one-way one.
const AMQP: &str = r#"
[amqp]
url = "amqp://guest:secret@127.0.0.1:5672/%2f"

[backends.inventory]
amqp = { queue = "inventory.rpc" }

[backends.events]
amqp = { exchange = "orders", routing_key = "order.placed", reply = false }

[[proxy]]
prefix = "/api/events"
backend = "events"
"#;

#[test]
fn amqp_backends_reach_the_broker() {
    let config = parse(&format!("{BASE}{AMQP}")).unwrap();
    let broker = config.amqp.as_ref().unwrap();
    assert_eq!(broker.broker, "127.0.0.1:5672/%2f", "host:port/vhost, the IP kept as written");
    assert!(!format!("{broker:?}").contains("secret"), "credentials never in Debug");
    let inventory = &config.backends["inventory"];
    let target = inventory.amqp.as_ref().unwrap();
    assert_eq!((target.exchange.as_str(), target.routing_key.as_str()), ("", "inventory.rpc"));
    assert!(target.reply);
    assert_eq!(inventory.instances, InstanceSource::Static(vec!["127.0.0.1:5672/%2f".into()]));
    let events = config.backends["events"].amqp.as_ref().unwrap();
    assert_eq!((events.exchange.as_str(), events.routing_key.as_str()), ("orders", "order.placed"));
    assert!(!events.reply);
    let uri = parse_amqp_uri(&broker.url).unwrap();
    assert_eq!(uri.authority.host, "127.0.0.1", "lapin alone would say localhost");
}

#[test]
fn amqp_mistakes_name_their_paths() {
    let without_broker = format!("{BASE}{}", AMQP.replace("[amqp]\nurl", "[x]\nurl"));
    assert!(
        errors(&without_broker)
            .iter()
            .any(|e| e.starts_with("backends.inventory.amqp: needs an [amqp] section")),
        "{:?}",
        errors(&without_broker)
    );
    let both = BASE.replace(
        "[backends.reviews]\ninstances = [\"127.0.0.1:7003\"]",
        "[backends.reviews]\ninstances = [\"127.0.0.1:7003\"]\namqp = { queue = \"q\" }",
    );
    let both = format!("{both}[amqp]\nurl = \"amqp://127.0.0.1\"\n");
    assert_eq!(paths(&both), ["backends.reviews"]);
    let bad_url = format!(
        "{BASE}{}",
        AMQP.replace("amqp://guest:secret@127.0.0.1:5672/%2f", "http://guest:secret@h")
    );
    let reported = errors(&bad_url);
    assert_eq!(paths(&bad_url), ["amqp.url"], "the backends are not reported again: {reported:?}");
    assert!(!reported[0].contains("secret"), "the password is not echoed: {reported:?}");
    let nowhere =
        format!("{BASE}{}", AMQP.replace("{ queue = \"inventory.rpc\" }", "{ reply = true }"));
    assert_eq!(paths(&nowhere), ["backends.inventory.amqp"]);
    let two_keys = format!(
        "{BASE}{}",
        AMQP.replace("{ queue = \"inventory.rpc\" }", "{ queue = \"a\", routing_key = \"b\" }")
    );
    assert_eq!(paths(&two_keys), ["backends.inventory.amqp"]);
    let unknown = format!(
        "{BASE}{}",
        AMQP.replace("{ queue = \"inventory.rpc\" }", "{ queue = \"a\", durable = true }")
    );
    assert_eq!(paths(&unknown), ["backends.inventory.amqp.durable"]);
    let inherited = format!("[defaults]\namqp = {{ queue = \"q\" }}\n{BASE}");
    assert_eq!(paths(&inherited), ["defaults.amqp"]);
    let one_way_section = format!(
        "{BASE}{AMQP}{}",
        "\n[[routes]]\npath = \"/o/{id}\"\ndeadline = \"1s\"\nsections = [{ name = \"e\", backend = \"events\", path = \"/e/{id}\" }]\n"
    );
    let reported = errors(&one_way_section);
    assert_eq!(paths(&one_way_section), ["routes[1].sections[0].backend"], "{reported:?}");
    assert!(reported[0].contains("one-way"), "{reported:?}");
}

#[test]
fn the_shared_cache_tier_is_checked() {
    let cached = BASE.replace(
        "instances = [\"127.0.0.1:7003\"]",
        "instances = [\"127.0.0.1:7003\"]\ncache = { ttl = \"60s\" }",
    );
    let config =
        parse(&format!("{cached}\n[redis]\nurl = \"redis://:pw@10.0.0.9:6380/3\"\n")).unwrap();
    let redis = config.redis.expect("[redis]");
    assert_eq!(redis.address, "10.0.0.9:6380/3");
    assert_eq!(redis.timeout, DEFAULT_REDIS_TIMEOUT);
    assert_eq!(redis.prefix, "mosaic:");
    assert!(!format!("{redis:?}").contains("pw"), "the password is never shown");
    assert!(config.backends["reviews"].cache.is_some_and(|c| c.shared), "shared by default");
    let opted_out =
        cached.replace("cache = { ttl = \"60s\" }", "cache = { ttl = \"60s\", shared = false }");
    assert!(parse(&opted_out).unwrap().backends["reviews"].cache.is_some_and(|c| !c.shared));

    let bad = format!(
        "{BASE}\n[redis]\nurl = \"redis://:hunter2@host:port/0\"\ntimeout = \"0ms\"\nconnect_timeout = \"2m\"\nprefix = \"\"\n"
    );
    let found = errors(&bad);
    assert_eq!(
        paths(&bad),
        ["redis.url", "redis.timeout", "redis.connect_timeout", "redis.prefix"],
        "{found:?}"
    );
    assert!(found.iter().all(|e| !e.contains("hunter2")), "{found:?}");
    assert_eq!(
        paths(&format!("{BASE}\n[redis]\ntimeout = \"5s\"\n")),
        ["redis.url", "redis.timeout"]
    );
    assert_eq!(
        paths(&format!("{BASE}\n[redis]\nurl = \"http://127.0.0.1:6379\"\n")),
        ["redis.url"]
    );
    assert_eq!(
        paths(&format!("{BASE}\n[redis]\nurl = \"redis://127.0.0.1\"\nttl = \"1s\"\n")),
        ["redis.ttl"]
    );
    let not_bool =
        cached.replace("cache = { ttl = \"60s\" }", "cache = { ttl = \"60s\", shared = \"yes\" }");
    assert_eq!(paths(&not_bool), ["backends.reviews.cache.shared"]);
    assert_eq!(paths(&format!("[server]\nreuse_port = 1\n{BASE}")), ["server.reuse_port"]);
    assert!(parse(&format!("[server]\nreuse_port = true\n{BASE}")).unwrap().server.reuse_port);
}

#[test]
fn an_admin_listener_beyond_loopback_needs_a_token() {
    let open = format!("[admin]\nlisten = \"0.0.0.0:9901\"\n{BASE}");
    assert_eq!(paths(&open), ["admin.token"]);
    assert!(errors(&open)[0].contains("beyond loopback"), "{:?}", errors(&open));
    let empty = format!("[admin]\nlisten = \"10.0.0.5:9901\"\ntoken = \"\"\n{BASE}");
    assert_eq!(paths(&empty), ["admin.token"], "an empty token is no token");
    let with_token = format!("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n{BASE}");
    let admin = parse(&with_token).unwrap().admin;
    assert!(!format!("{admin:?}").contains("s3cret"), "the token is never shown");
    for loopback in ["127.0.0.1:9901", "[::1]:9901", "127.0.0.2:0"] {
        assert!(parse(&format!("[admin]\nlisten = \"{loopback}\"\n{BASE}")).is_ok(), "{loopback}");
    }
}

/// `BASE` with `[auth]` and its consumers prepended and `extra` keys in its route.
fn with_auth(auth: &str, route_keys: &str) -> String {
    BASE.replacen("deadline = \"250ms\"", &format!("deadline = \"250ms\"\n{route_keys}"), 1)
        + "\n"
        + auth
}

const CONSUMERS: &str = r#"
[auth]
[[auth.consumers]]
name = "mobile-app"
keys = ["mobile-key-0123456789"]
rate_limit = { requests = 100, per = "1s", burst = 20 }
"#;

#[test]
fn consumers_keep_digests_and_routes_their_access() {
    let text = with_auth(
        CONSUMERS,
        r#"auth = "key"
rate_limit = { requests = 50, per = "1s", burst = 10, by = "ip" }"#,
    );
    let config = parse(&text).unwrap();
    let auth = config.auth.as_ref().unwrap();
    assert_eq!(auth.key_header, "x-api-key");
    assert_eq!(auth.default, AuthKind::None);
    let consumer = &auth.consumers[0];
    assert_eq!(consumer.name, "mobile-app");
    let digest: [u8; 32] = sha2::Sha256::digest(b"mobile-key-0123456789").into();
    assert_eq!(consumer.key_digests, [digest]);
    assert!(!format!("{consumer:?}").contains("mobile-key"), "no key in Debug");
    let route = &config.routes[0].access;
    assert_eq!(route.auth, AuthKind::Key);
    let limit = route.rate_limit.unwrap();
    assert_eq!((limit.requests, limit.per, limit.burst), (50, Duration::from_secs(1), 10));
    assert_eq!((limit.by, limit.policy), (LimitBy::Ip, LimitPolicy::Local));
    // Without [auth] nothing changes: every route is open.
    assert_eq!(parse(BASE).unwrap().routes[0].access, AccessConfig::OPEN);
    // With [redis] (wherever it is in the file), a limit can live there.
    let shared = with_auth(
        "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n",
        r#"rate_limit = { requests = 5, per = "1s", policy = "redis" }"#,
    );
    let config = parse(&shared).unwrap();
    assert_eq!(config.routes[0].access.rate_limit.unwrap().policy, LimitPolicy::Redis);
}

use sha2::Digest as _;

#[test]
fn auth_mistakes_are_named_by_path() {
    let two_with_one_key = r#"
[auth]
key_header = "host"
[[auth.consumers]]
name = "a"
keys = ["same-key-0123456789"]
[[auth.consumers]]
name = "a"
keys = ["same-key-0123456789", "short"]
key_sha256 = ["zz"]
rate_limit = { requests = 0, per = "1s", by = "ip" }
"#;
    let mut reported_paths = paths(&with_auth(two_with_one_key, ""));
    reported_paths.sort();
    assert_eq!(
        reported_paths,
        [
            "auth.consumers[1].key_sha256[0]",
            "auth.consumers[1].keys[0]",
            "auth.consumers[1].keys[1]",
            "auth.consumers[1].name",
            "auth.consumers[1].rate_limit.by",
            "auth.consumers[1].rate_limit.requests",
            "auth.key_header",
        ]
    );
    let reported = errors(&with_auth(two_with_one_key, ""));
    assert!(reported.iter().all(|e| !e.contains("same-key")), "no key is quoted: {reported:?}");
    assert!(reported.iter().any(|e| e.contains("the same key as auth.consumers[0].keys[0]")));
    // A route asking for keys nobody holds, unknown words, redis without [redis].
    assert_eq!(
        errors(&with_auth("", r#"auth = "key""#)),
        ["routes[0].auth: auth = \"key\" needs [[auth.consumers]] with keys"]
    );
    let mut route_paths = paths(&with_auth(
        CONSUMERS,
        r#"auth = "keys"
scopes = ["orders:read"]
rate_limit = { requests = 5, per = "0s", policy = "redis", by = "user" }"#,
    ));
    route_paths.sort();
    assert_eq!(
        route_paths,
        [
            "routes[0].auth",
            "routes[0].rate_limit.by",
            "routes[0].rate_limit.per",
            "routes[0].rate_limit.policy",
        ]
    );
    assert_eq!(
        errors(&with_auth(CONSUMERS, r#"scopes = ["orders:read"]"#)),
        ["routes[0].scopes: scopes need auth = \"jwt\" (an API key carries no scopes)"]
    );
    assert_eq!(paths(&with_auth("[auth]\n[auth.jwt]\nsecret = \"x\"\n", "")), ["auth.jwt.secret"]);
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// `[auth]` with `[auth.jwt]` holding `jwt` (and consumers).
fn with_jwt(jwt: &str, route_keys: &str) -> String {
    with_auth(&format!("{CONSUMERS}\n[auth.jwt]\n{jwt}\n"), route_keys)
}

#[test]
fn jwt_settings_are_read_with_their_defaults() {
    let text = with_jwt(
        &format!("secret = \"{SECRET}\"\nclaims_to_headers = {{ sub = \"X-User-Id\" }}"),
        "auth = \"jwt\"\nscopes = [\"orders:read\"]",
    );
    let config = parse(&text).unwrap();
    let jwt = config.auth.as_ref().unwrap().jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithms, [jsonwebtoken::Algorithm::HS256]);
    assert_eq!(jwt.leeway, Duration::from_secs(30));
    assert_eq!(jwt.consumer_claim, "sub");
    assert_eq!(jwt.claims_to_headers, [("sub".to_string(), "x-user-id".to_string())]);
    assert!(jwt.audiences.is_empty(), "optional with a secret");
    assert!(!format!("{jwt:?}").contains(SECRET), "the secret is never shown");
    assert_eq!(config.routes[0].access.auth, AuthKind::Jwt);
    assert_eq!(config.routes[0].access.scopes, ["orders:read"]);
    let url = with_jwt(
        "jwks_url = \"http://127.0.0.1:8900/keys?v=1\"\naudiences = [\"shop\"]\nalgorithms = [\"RS256\", \"ES256\"]\nrefresh = \"1m\"",
        "auth = \"key_or_jwt\"",
    );
    let config = parse(&url).unwrap();
    let jwt = config.auth.as_ref().unwrap().jwt.as_ref().unwrap();
    assert_eq!(
        jwt.keys,
        JwtKeys::Url {
            url: "http://127.0.0.1:8900/keys?v=1".into(),
            address: "127.0.0.1:8900".into(),
            target: "/keys?v=1".into()
        }
    );
    assert_eq!(jwt.refresh, Duration::from_secs(60));
}

#[test]
fn jwt_mistakes_are_named_by_path() {
    let url = "jwks_url = \"http://127.0.0.1:8900/jwks.json\"\naudiences = [\"shop\"]";
    let cases: &[(String, &str, &str)] = &[
        (String::new(), "", "auth.jwt"),
        (format!("{url}\nsecret = \"{SECRET}\""), "", "auth.jwt.secret"),
        ("secret = \"short\"".into(), "", "auth.jwt.secret"),
        (format!("{url}\nalgorithms = [\"none\"]"), "", "auth.jwt.algorithms[0]"),
        (format!("{url}\nalgorithms = [\"RS257\"]"), "", "auth.jwt.algorithms[0]"),
        (format!("{url}\nalgorithms = [\"RS256\", \"HS256\"]"), "", "auth.jwt.algorithms[1]"),
        (format!("secret = \"{SECRET}\"\nalgorithms = [\"RS256\"]"), "", "auth.jwt.algorithms[0]"),
        (format!("secret = \"{SECRET}\"\nalgorithms = [\"HS512\"]"), "", "auth.jwt.algorithms[0]"),
        (format!("{url}\nalgorithms = []"), "", "auth.jwt.algorithms"),
        ("jwks_url = \"http://127.0.0.1:8900/jwks.json\"".into(), "", "auth.jwt.audiences"),
        (
            "jwks_url = \"https://id.example.com/jwks\"\naudiences = [\"a\"]\njwks_ca = \"/nonexistent/ca.pem\"".into(),
            "",
            "auth.jwt.jwks_ca",
        ),
        (
            "jwks_url = \"http://id.example.com/jwks\"\naudiences = [\"a\"]\njwks_ca = \"/etc/hostname\"".into(),
            "",
            "auth.jwt.jwks_ca",
        ),
        ("jwks_url = \"https://user:pw@id.example.com/jwks\"\naudiences = [\"a\"]".into(), "", "auth.jwt.jwks_url"),
        ("jwks_url = \"ftp://x/y\"\naudiences = [\"a\"]".into(), "", "auth.jwt.jwks_url"),
        (
            "jwks_file = \"/nonexistent/jwks.json\"\naudiences = [\"a\"]".into(),
            "",
            "auth.jwt.jwks_file",
        ),
        (format!("{url}\nleeway = \"-5s\""), "", "auth.jwt.leeway"),
        (format!("{url}\nleeway = \"1500ms\""), "", "auth.jwt.leeway"),
        (format!("{url}\nleeway = \"1h\""), "", "auth.jwt.leeway"),
        (format!("{url}\nrefresh = \"0s\""), "", "auth.jwt.refresh"),
        (format!("secret = \"{SECRET}\"\nrefresh = \"1m\""), "", "auth.jwt.refresh"),
        (format!("{url}\nconsumer_claim = \"\""), "", "auth.jwt.consumer_claim"),
        (
            format!("{url}\nclaims_to_headers = {{ sub = \"x user\" }}"),
            "",
            "auth.jwt.claims_to_headers.sub",
        ),
        (
            format!("{url}\nclaims_to_headers = {{ sub = \"Authorization\" }}"),
            "",
            "auth.jwt.claims_to_headers.sub",
        ),
        (
            format!("{url}\nclaims_to_headers = {{ sub = \"x-api-key\" }}"),
            "",
            "auth.jwt.claims_to_headers.sub",
        ),
        (
            format!("{url}\nclaims_to_headers = {{ sub = \"x-consumer\" }}"),
            "",
            "auth.jwt.claims_to_headers.sub",
        ),
        (
            format!("{url}\nclaims_to_headers = {{ a = \"x-u\", b = \"X-U\" }}"),
            "",
            "auth.jwt.claims_to_headers.b",
        ),
        (format!("{url}\nissuer = \"\""), "", "auth.jwt.issuer"),
        (format!("{url}\nkid = \"x\""), "", "auth.jwt.kid"),
        // An API key carries no scopes: key_or_jwt routes cannot ask for any.
        (url.into(), "auth = \"key_or_jwt\"\nscopes = [\"a\"]", "routes[0].scopes"),
    ];
    for (jwt, route, path) in cases {
        assert_eq!(paths(&with_jwt(jwt, route)), [*path], "{jwt} / {route}");
    }
    // No [auth.jwt]: a route or the default asking for tokens is refused.
    assert_eq!(
        errors(&with_auth(CONSUMERS, "auth = \"jwt\"")),
        ["routes[0].auth: auth = \"jwt\" needs [auth.jwt] to verify tokens"]
    );
    assert_eq!(paths(&with_auth("[auth]\ndefault = \"key_or_jwt\"\n[[auth.consumers]]\nname = \"a\"\nkeys = [\"mobile-key-0123456789\"]", "")), ["auth.default", "routes[0].auth"]);
    // The secret is never quoted, even when refused.
    let reported = errors(&with_jwt("secret = \"secret-but-short\"", ""));
    assert!(reported.iter().all(|e| !e.contains("secret-but-short")), "{reported:?}");
}

#[test]
fn a_jwks_file_must_hold_a_key_for_the_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    let rsa = r#"{"keys":[{"kty":"RSA","kid":"r1","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}]}"#;
    std::fs::write(&file, rsa).unwrap();
    let jwt = |algorithms: &str| {
        format!(
            "jwks_file = {:?}\naudiences = [\"shop\"]\nalgorithms = {algorithms}",
            file.display().to_string()
        )
    };
    assert!(parse(&with_jwt(&jwt("[\"RS256\"]"), "auth = \"jwt\"")).is_ok());
    assert_eq!(paths(&with_jwt(&jwt("[\"ES256\"]"), "")), ["auth.jwt.jwks_file"]);
    std::fs::write(&file, "not json").unwrap();
    assert_eq!(paths(&with_jwt(&jwt("[\"RS256\"]"), "")), ["auth.jwt.jwks_file"]);
}

#[test]
fn trusted_proxies_are_addresses_or_blocks() {
    let text = format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"fd00::/8\"]\n{BASE}"
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.server.trusted_proxies.len(), 3);
    assert!(config.server.trusted_proxies[0].contains("10.9.8.7".parse().unwrap()));
    let text = format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n{BASE}");
    assert_eq!(paths(&text), ["server.trusted_proxies[1]"]);
}

/// `[server.tls]` with a pair written to `dir`, `extra` lines added.
fn tls_file(dir: &std::path::Path, cert: &str, key: &str, extra: &str) -> String {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    format!(
        "[server]\n[server.tls]\ncert = {:?}\nkey = {:?}\n{extra}\n{BASE}",
        cert_path.display().to_string(),
        key_path.display().to_string()
    )
}

fn test_pair() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (made.cert.pem(), made.signing_key.serialize_pem())
}

#[test]
fn server_tls_loads_a_matching_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_pair();
    let config = parse(&tls_file(dir.path(), &cert, &key, "")).unwrap();
    let tls = config.server.tls.expect("tls");
    assert_eq!(tls.min_version, TlsVersion::Tls12, "default");
    assert_eq!(tls.certified.cert.len(), 1);
    let config = parse(&tls_file(dir.path(), &cert, &key, "min_version = \"1.3\"")).unwrap();
    assert_eq!(config.server.tls.expect("tls").min_version, TlsVersion::Tls13);
    assert!(parse(BASE).unwrap().server.tls.is_none(), "plain HTTP without [server.tls]");
}

#[test]
fn server_tls_refusals_name_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_pair();
    let (_, other_key) = test_pair();
    let text = tls_file(dir.path(), &cert, &key, "min_version = \"1.1\"");
    assert_eq!(paths(&text), ["server.tls.min_version"]);
    // A key that is not the certificate's.
    let mismatched = errors(&tls_file(dir.path(), &cert, &other_key, ""));
    assert_eq!(mismatched.len(), 1, "{mismatched:?}");
    assert!(
        mismatched[0].starts_with("server.tls.key") && mismatched[0].contains("does not belong")
    );
    // Not PEM, or the wrong kind of PEM.
    assert_eq!(paths(&tls_file(dir.path(), "hello", &key, "")), ["server.tls.cert"]);
    assert_eq!(paths(&tls_file(dir.path(), &cert, &cert, "")), ["server.tls.key"]);
    // Missing keys and unreadable files.
    assert_eq!(
        paths(&format!("[server]\n[server.tls]\n{BASE}")),
        ["server.tls.cert", "server.tls.key"]
    );
    let missing = format!(
        "[server]\n[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n{BASE}"
    );
    let said = errors(&missing);
    assert_eq!(paths(&missing), ["server.tls.cert", "server.tls.key"]);
    assert!(said[0].contains("cannot read"), "{said:?}");
    let misspelt = paths(&format!("[server]\n[server.tls]\ncrt = \"x\"\n{BASE}"));
    assert_eq!(misspelt, ["server.tls.crt", "server.tls.cert", "server.tls.key"]);
}

#[test]
fn stream_is_on_by_default_and_a_route_can_opt_out() {
    assert!(parse(BASE).unwrap().routes[0].stream);
    let off = BASE.replacen("deadline = \"250ms\"", "deadline = \"250ms\"\nstream = false", 1);
    assert!(!parse(&off).unwrap().routes[0].stream);
    let wrong = BASE.replacen("deadline = \"250ms\"", "deadline = \"250ms\"\nstream = \"no\"", 1);
    assert_eq!(paths(&wrong), ["routes[0].stream"]);
}
