//! The config files shipped with mosaic validate and say what we think they
//! say, so they cannot go stale as the config layer changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mosaic::config::{
    parse_str_with_env, AmqpTarget, AuthKind, BreakerPolicy, Config, InstanceSource,
};
use sha2::Digest;

/// Validates a file with an empty environment: shipped files must not need
/// any variable to be set.
fn load(path: &Path) -> Config {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_str_with_env(&text, &|_| None).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()))
}

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

const SHOP: [&str; 7] =
    ["cart", "catalog", "inventory", "orders", "pricing", "recommendations", "reviews"];

/// The product page of SPEC.md, section by section.
fn assert_product_page(config: &Config) {
    assert_eq!(config.routes.len(), 1);
    let route = &config.routes[0];
    assert_eq!(route.path, "/products/{id}");
    let sections: Vec<(&str, &str, &str, bool)> = route
        .sections
        .iter()
        .map(|s| (s.name.as_str(), s.backend.as_str(), s.path.as_str(), s.required))
        .collect();
    assert_eq!(
        sections,
        [
            ("product", "catalog", "/products/{id}", true),
            ("price", "pricing", "/prices/{id}", false),
            ("reviews", "reviews", "/reviews/{id}", false),
            ("cart", "cart", "/cart", false),
            ("orders", "orders", "/orders?product={id}", false),
            ("inventory", "inventory", "/inventory/{id}", false),
            ("recommendations", "recommendations", "/recommendations/{id}", false),
        ]
    );
    assert_eq!(route.sections[3].forward_headers, ["authorization"]);
    assert_eq!(config.proxies[0].prefix, "/api/cart/");
    assert_eq!(config.proxies[0].backend, "cart");
    assert_eq!(config.proxies[0].rewrite.as_deref(), Some("/cart/"));
    for name in SHOP {
        assert!(config.backends.contains_key(name), "{name}");
    }
}

/// The shop and nothing else: the cart proxy, the key-protected orders
/// proxy, the seven backends.
fn assert_only_the_shop(config: &Config) {
    assert_eq!(config.proxies.len(), 3);
    let orders = &config.proxies[1];
    assert_eq!((orders.prefix.as_str(), orders.backend.as_str()), ("/api/orders", "orders"));
    assert_eq!(orders.access.auth, AuthKind::Key);
    assert!(orders.access.rate_limit.is_some());
    let auth = config.auth.as_ref().expect("[auth]");
    assert_eq!(auth.consumers.len(), 1);
    assert_eq!(auth.consumers[0].name, "demo-app");
    let digest: [u8; 32] = sha2::Sha256::digest(mosaic::demo::DEMO_KEY.as_bytes()).into();
    assert_eq!(auth.consumers[0].key_digests, [digest], "the banner prints the demo's key");
    // The JWT route: the banner prints a token signed with the demo's secret.
    let me = &config.proxies[2];
    assert_eq!((me.prefix.as_str(), me.access.auth), ("/api/me/cart", AuthKind::Jwt));
    let jwt = auth.jwt.as_ref().expect("[auth.jwt]");
    assert_eq!(jwt.claims_to_headers, [("sub".to_string(), "x-user-id".to_string())]);
    assert!(mosaic::demo::demo_token(config).is_some(), "an HS256 secret the demo signs with");
    assert_eq!(config.backends.keys().map(String::as_str).collect::<Vec<_>>(), SHOP);
}

#[test]
fn reference_config_validates() {
    let config = load(&manifest_path("config/mosaic.toml"));
    assert_product_page(&config);
    assert!(config.consul.is_some());
    assert_eq!(
        config.backends["reviews"].instances,
        InstanceSource::Consul { service: "reviews".into(), tag: Some("v2".into()) }
    );
    assert!(matches!(
        config.backends["recommendations"].breaker.policy,
        BreakerPolicy::SuccessRate { .. }
    ));
    assert_eq!(config.admin.token, None);
    // The reference also shows a one-way AMQP backend behind a proxy route.
    let broker = config.amqp.as_ref().expect("[amqp]");
    assert_eq!(broker.broker, "127.0.0.1:5672/%2f");
    let events = config.backends["order-events"].amqp.as_ref().expect("amqp");
    assert_eq!(
        (events.exchange.as_str(), events.routing_key.as_str(), events.reply),
        ("orders", "order.placed", false)
    );
    assert!(config.proxies.iter().any(|p| p.backend == "order-events"));
    // And the shared cache tier, with the SPEC's defaults.
    let redis = config.redis.as_ref().expect("[redis]");
    assert_eq!(redis.address, "127.0.0.1:6379/0");
    assert_eq!((redis.timeout, redis.prefix.as_str()), (Duration::from_millis(25), "mosaic:"));
    assert!(config.backends["pricing"].cache.is_some_and(|c| c.shared));
    assert!(!config.server.reuse_port);
}

#[test]
fn demo_config_is_the_spec_shop() {
    let config = load(&manifest_path("config/demo.toml"));
    assert_product_page(&config);
    assert_only_the_shop(&config);
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(config.routes[0].deadline, Duration::from_millis(250));
    for (i, name) in
        ["catalog", "pricing", "reviews", "cart", "orders", "inventory", "recommendations"]
            .iter()
            .enumerate()
    {
        let expected = InstanceSource::Static(vec![format!("127.0.0.1:{}", 7001 + i)]);
        assert_eq!(config.backends[*name].instances, expected, "{name}");
    }
    let pricing = config.backends["pricing"].cache.expect("pricing is cached");
    assert_eq!(
        (pricing.ttl, pricing.stale_if_error),
        (Duration::from_secs(60), Duration::from_secs(3600))
    );
    let reviews = &config.backends["reviews"].breaker;
    assert_eq!(reviews.policy, BreakerPolicy::ConsecutiveFailures { threshold: 3 });
    assert_eq!(
        config.backends["recommendations"].default.as_deref(),
        Some(&br#"{"items":[]}"#[..])
    );
    assert_eq!(config.backends["catalog"].timeout, Duration::from_millis(300));
}

/// demo-amqp.toml is demo.toml with inventory behind the local RabbitMQ:
/// the same page, the same other backends, inventory on the queue
/// `mosaic demo-service --amqp` consumes by default.
#[test]
fn demo_amqp_config_is_the_shop_with_inventory_behind_the_broker() {
    let config = load(&manifest_path("config/demo-amqp.toml"));
    let http = load(&manifest_path("config/demo.toml"));
    assert_product_page(&config);
    let broker = config.amqp.as_ref().expect("[amqp]");
    assert_eq!(broker.broker, "127.0.0.1:5672/%2f");
    assert_eq!(broker.url, "amqp://guest:guest@127.0.0.1:5672/%2f");
    let inventory = &config.backends["inventory"];
    assert_eq!(
        inventory.amqp,
        Some(AmqpTarget {
            exchange: String::new(),
            routing_key: mosaic::demo::amqp::DEFAULT_QUEUE.into(),
            reply: true
        })
    );
    assert_eq!(inventory.instances, InstanceSource::Static(vec!["127.0.0.1:5672/%2f".into()]));
    assert_eq!(inventory.timeout, http.backends["inventory"].timeout);
    assert_eq!(inventory.cache, http.backends["inventory"].cache);
    assert_eq!(inventory.default, http.backends["inventory"].default);
    for name in SHOP.iter().filter(|n| **n != "inventory") {
        assert_eq!(config.backends[*name], http.backends[*name], "{name} as in demo.toml");
    }
    assert_eq!(
        (config.server.listen, config.admin.listen),
        (http.server.listen, http.admin.listen)
    );
}

/// `mosaic check` accepts every shipped config (with no MOSAIC_* variable
/// set), as an operator would run it.
#[test]
fn mosaic_check_accepts_the_shipped_configs() {
    for file in ["config/mosaic.toml", "config/demo.toml", "config/demo-amqp.toml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .args(["check", "--config"])
            .arg(manifest_path(file))
            .env_remove("MOSAIC_AMQP_URL")
            .env_remove("MOSAIC_REDIS_URL")
            .env_remove("MOSAIC_ADMIN_TOKEN")
            .env_remove("CONSUL_HTTP_TOKEN")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("valid"), "{file}: {stdout}");
    }
}

#[test]
fn bench_config_validates_when_present() {
    let path = manifest_path("../shared/bench/mosaic-bench.toml");
    if !path.exists() {
        eprintln!("skipped: {} is absent", path.display());
        return;
    }
    let config = load(&path);
    assert_product_page(&config);
    assert_eq!(config.server.workers, 1);
}
