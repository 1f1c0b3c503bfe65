//! The config files shipped with mosaic validate and say what we think they
//! say, so they cannot go stale as the config layer changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mosaic::config::{parse_str_with_env, BreakerPolicy, Config, InstanceSource};

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
    assert_eq!(config.proxies.len(), 1);
    assert_eq!(config.proxies[0].prefix, "/api/cart/");
    assert_eq!(config.proxies[0].backend, "cart");
    assert_eq!(config.proxies[0].rewrite.as_deref(), Some("/cart/"));
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
}

#[test]
fn demo_config_is_the_spec_shop() {
    let config = load(&manifest_path("config/demo.toml"));
    assert_product_page(&config);
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
