//! The demo shop: seven small JSON services behind the 'Product details'
//! page, each its own OS process so chaos tests can `SIGKILL` one.
//!
//! - [`data`]: deterministic shop data generated from the product id or user.
//! - [`orders`]: order histories generated from the user name.
//! - [`cart`]: the cart service's bounded in-memory store.
//! - [`service`]: one service as an actix-web server (`mosaic demo-service`).
//! - [`amqp`]: one service as an AMQP RPC consumer (`demo-service --amqp`):
//!   connection, queue, consumer, replies.
//! - [`rpc`]: one AMQP request answered by the service's own app, and what
//!   each fault does to it.
//! - [`fault`]: injected faults (latency, errors, hang, reset, drip, non-JSON).
//! - [`spawn`]: [`DemoServices`], the seven services as child processes.
//! - [`consul`]: `mosaic demo --consul URL`: register them with a Consul
//!   agent and discover them through it.
//!
//! `mosaic demo` = [`DemoServices::start`] on [`DEFAULT_BASE_PORT`] + the
//! gateway + [`banner`]. `mosaic demo --amqp URL` = the same with inventory
//! behind RabbitMQ ([`DemoServices::start_with`], `config/demo-amqp.toml`,
//! [`route_inventory_through`]).

use std::fmt;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;

pub mod amqp;
pub mod cart;
pub mod consul;
pub mod data;
pub mod fault;
pub mod orders;
pub mod rpc;
pub mod service;
pub mod spawn;

pub use fault::Faults;
pub use spawn::{spawn_service, AmqpInventory, DemoError, DemoServices, ServiceInfo};

/// First port of the demo services (catalog); the others follow in
/// [`Service::ALL`] order, as in the shipped demo config.
pub const DEFAULT_BASE_PORT: u16 = 7001;

/// One of the demo shop's services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// `GET /products/{id}`: name, brand, description, images, attributes.
    Catalog,
    /// `GET /prices/{id}`: amount in cents, currency, discount.
    Pricing,
    /// `GET /reviews/{id}`: rating summary and ten reviews.
    Reviews,
    /// `/cart`, `/cart/items`: the caller's cart, keyed by `Authorization`.
    Cart,
    /// `GET /orders?product={id}`: the caller's order history.
    Orders,
    /// `GET /inventory/{id}`: stock per warehouse, shipping estimate.
    Inventory,
    /// `GET /recommendations/{id}`: eight related products.
    Recommendations,
}

impl Service {
    /// Every service, in port order (`base_port + index`).
    pub const ALL: [Service; 7] = [
        Service::Catalog,
        Service::Pricing,
        Service::Reviews,
        Service::Cart,
        Service::Orders,
        Service::Inventory,
        Service::Recommendations,
    ];

    /// The service's name, as in the config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Service::Catalog => "catalog",
            Service::Pricing => "pricing",
            Service::Reviews => "reviews",
            Service::Cart => "cart",
            Service::Orders => "orders",
            Service::Inventory => "inventory",
            Service::Recommendations => "recommendations",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Service::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            let names: Vec<_> = Service::ALL.iter().map(|s| s.name()).collect();
            format!("unknown demo service {name:?} (one of: {})", names.join(", "))
        })
    }
}

/// The demo consumer's API key (config/demo.toml), unless `MOSAIC_DEMO_KEY`
/// replaces it.
pub const DEMO_KEY: &str = "demo-key-0123456789abcdef";

/// The user the demo's printed JWT names.
pub const DEMO_JWT_USER: &str = "alice";

/// A token for the demo's JWT route (`/api/me/cart`), valid for a day:
/// HS256 with the config's `auth.jwt.secret`, `sub` = [`DEMO_JWT_USER`],
/// `iss` and `aud` as the config asks. `None` when the config verifies
/// tokens some other way (the demo cannot sign for a JWK set).
pub fn demo_token(config: &crate::config::Config) -> Option<String> {
    let jwt = config.auth.as_ref()?.jwt.as_ref()?;
    let crate::config::JwtKeys::Secret(secret) = &jwt.keys else { return None };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let mut claims = serde_json::json!({ "sub": DEMO_JWT_USER, "iat": now, "exp": now + 86_400 });
    if let Some(issuer) = &jwt.issuer {
        claims["iss"] = issuer.as_str().into();
    }
    if let Some(audience) = jwt.audiences.first() {
        claims["aud"] = audience.as_str().into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.expose()).ok()?;
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).ok()
}

/// What `mosaic demo` prints once everything is up: URLs to try, and each
/// service's port and PID with how to kill one and watch the page degrade.
/// `token`: a JWT for the demo's `/api/me/cart` ([`demo_token`]).
pub fn banner(
    gateway: SocketAddr,
    admin: SocketAddr,
    services: &DemoServices,
    token: Option<&str>,
) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "mosaic demo shop is up.\n");
    let _ = writeln!(out, "Dashboard (live breakers, rates, sources): http://{admin}/dashboard\n");
    let _ = writeln!(out, "Try:");
    let tries = [
        ("a composed page", format!("curl -s http://{gateway}/products/42 | jq")),
        (
            "the same page for a signed-in user",
            format!("curl -s -H 'Authorization: Bearer alice' http://{gateway}/products/42 | jq"),
        ),
        ("a missing product (404)", format!("curl -si http://{gateway}/products/999999")),
        (
            "add to cart through the proxy",
            format!(
                "curl -s -H 'Authorization: Bearer alice' -H 'Content-Type: application/json' \
                 -d '{{\"product_id\":\"42\",\"quantity\":1}}' http://{gateway}/api/cart/items | jq"
            ),
        ),
        (
            "the cart",
            format!(
                "curl -s -H 'Authorization: Bearer alice' http://{gateway}/api/cart/items | jq"
            ),
        ),
        (
            "orders through a key-protected proxy (no key: 401; over 2/s with a burst of 3: 429)",
            format!("curl -si -H 'x-api-key: {DEMO_KEY}' 'http://{gateway}/api/orders?product=42'"),
        ),
        ("metrics", format!("curl -s http://{admin}/metrics")),
        ("backends and breakers", format!("curl -s http://{admin}/admin/backends | jq")),
    ];
    let jwt = token.map(|token| {
        (
            "the cart of the user a signed JWT names (no token: 401; x-user-id from the token's sub)",
            format!("curl -s -H 'Authorization: Bearer {token}' http://{gateway}/api/me/cart | jq"),
        )
    });
    for (what, command) in tries.into_iter().chain(jwt) {
        let _ = writeln!(out, "  # {what}\n  {command}");
    }
    let _ = writeln!(out, "\nServices:");
    for info in services.services() {
        let pid = info.pid.map_or_else(|| "stopped".to_owned(), |p| format!("pid {p}"));
        let via = info.amqp_queue.as_ref().map_or_else(String::new, |queue| {
            format!("  via RabbitMQ queue {queue} (this port: /health, /_fault)")
        });
        let _ = writeln!(out, "  {:<16} 127.0.0.1:{:<6} {pid}{via}", info.name, info.port);
    }
    if let Some(amqp) = services.amqp() {
        let pid = services.pid("inventory").map_or_else(|| "PID".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "\nInventory is served through RabbitMQ (queue {} at {}): `kill -9 {pid}` takes \
             its auto-delete queue with it; reload the page and see \"inventory\": null. \
             `rabbitmqctl list_queues name consumers` shows the queue.",
            amqp.queue, amqp.broker
        );
    }
    if let Some(reviews) = services.services().into_iter().find(|s| s.name == "reviews") {
        if let Some(pid) = reviews.pid {
            let _ = writeln!(
                out,
                "\nBreak something: `kill -9 {pid}` stops reviews; reload the page and see \
                 \"reviews\": null with _mosaic.complete = false."
            );
        }
    }
    let _ = writeln!(
        out,
        "Inject faults: curl -s -X PUT -d '{{\"latency_ms\":400}}' http://127.0.0.1:{}/_fault \
         (DELETE /_fault to heal).",
        services.port("pricing").unwrap_or(DEFAULT_BASE_PORT + 1)
    );
    out
}

/// The key prefix of `mosaic demo --redis`.
pub const REDIS_PREFIX: &str = "mosaic-demo:";

/// What `mosaic demo --redis` adds to the banner: where the shared tier is
/// and how to look at it.
pub fn shared_tier_banner(admin: SocketAddr, redis: &crate::config::RedisConfig) -> String {
    format!(
        "Shared cache: the cached backends (pricing) also keep their answers in Redis at {} \
         (keys {prefix}*; `redis-cli --scan --pattern '{prefix}*'` lists them). A second replica \
         (`mosaic demo --redis URL --listen 127.0.0.1:8081 --admin 127.0.0.1:9902 --base-port 7101`) \
         serves the price from Redis on its first page: \"tier\": \"shared\". State: curl -s http://{admin}/admin/redis | jq; purge both tiers: \
         curl -s -X DELETE http://{admin}/admin/cache/pricing | jq",
        redis.address,
        prefix = redis.prefix,
    )
}

/// Points the config's demo backends (named after the services) at the
/// services' real addresses, so any base port works. Backends reached
/// through the broker keep the broker as their instance.
pub fn point_config_at(config: &mut crate::config::Config, services: &DemoServices) {
    for service in Service::ALL {
        let name = service.to_string();
        let (Some(backend), Some(addr)) = (config.backends.get_mut(&name), services.addr(&name))
        else {
            continue;
        };
        if backend.amqp.is_some() {
            continue;
        }
        std::sync::Arc::make_mut(backend).instances =
            crate::config::InstanceSource::Static(vec![addr.to_string()]);
    }
}

/// Why a config cannot serve inventory through the broker.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmqpDemoError {
    /// No `[amqp]` section to take the URL.
    #[error("the config has no [amqp] section; use config/demo-amqp.toml or add one")]
    NoBroker,
    /// `[backends.inventory]` is missing or reached over HTTP.
    #[error("the config's [backends.inventory] has no amqp = {{ queue = \"...\" }}; use config/demo-amqp.toml")]
    NotAmqp,
}

/// Points the config at `inventory`'s broker and queue: `[amqp]`'s url and
/// broker become `inventory.url`'s (the URL on the command line wins over
/// the file's), the inventory backend publishes to `inventory.queue` on the
/// default exchange, and its one instance is the broker, as the config
/// layer writes it.
pub fn route_inventory_through(
    config: &mut crate::config::Config,
    inventory: &AmqpInventory,
) -> Result<(), AmqpDemoError> {
    let broker = config.amqp.as_mut().ok_or(AmqpDemoError::NoBroker)?;
    let backend = config
        .backends
        .get_mut(Service::Inventory.name())
        .filter(|b| b.amqp.is_some())
        .ok_or(AmqpDemoError::NotAmqp)?;
    broker.url.clone_from(&inventory.url);
    broker.broker.clone_from(&inventory.broker);
    let backend = std::sync::Arc::make_mut(backend);
    if let Some(target) = backend.amqp.as_mut() {
        target.exchange.clear();
        target.routing_key.clone_from(&inventory.queue);
    }
    backend.instances = crate::config::InstanceSource::Static(vec![inventory.broker.clone()]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names round-trip, and a wrong name lists the right ones.
    #[test]
    fn service_names() {
        for s in Service::ALL {
            assert_eq!(s.name().parse::<Service>(), Ok(s));
        }
        let err = "review".parse::<Service>().err().unwrap_or_default();
        assert!(err.contains("reviews"), "{err}");
    }

    fn shipped(text: &str) -> crate::config::Config {
        crate::config::parse_str_with_env(text, &|_| None).expect("shipped config is valid")
    }

    /// The command line's broker and queue replace the file's: url, the
    /// credential-free broker name, the routing key and the instance.
    #[test]
    fn inventory_routed_through_the_given_broker() {
        let mut config = shipped(include_str!("../../config/demo-amqp.toml"));
        let inventory =
            AmqpInventory::new("amqp://shop:secret@10.0.0.7:5673/shop", "test.q").expect("valid");
        assert_eq!(route_inventory_through(&mut config, &inventory), Ok(()));
        let broker = config.amqp.as_ref().expect("[amqp]");
        assert_eq!(broker.url, "amqp://shop:secret@10.0.0.7:5673/shop");
        assert_eq!(broker.broker, "10.0.0.7:5673/shop");
        let backend = &config.backends["inventory"];
        let target = backend.amqp.as_ref().expect("amqp backend");
        assert_eq!((target.exchange.as_str(), target.routing_key.as_str()), ("", "test.q"));
        let expected = crate::config::InstanceSource::Static(vec!["10.0.0.7:5673/shop".into()]);
        assert_eq!(backend.instances, expected);
    }

    /// The HTTP shop has no broker to point inventory at: a clear refusal.
    #[test]
    fn http_config_cannot_route_inventory_through_a_broker() {
        let mut config = shipped(include_str!("../../config/demo.toml"));
        let inventory = AmqpInventory::new("amqp://127.0.0.1:5672/%2f", "q").expect("valid");
        assert_eq!(route_inventory_through(&mut config, &inventory), Err(AmqpDemoError::NoBroker));
    }

    /// A bad URL or queue fails before anything starts.
    #[test]
    fn bad_broker_flags_are_refused() {
        assert!(AmqpInventory::new("http://127.0.0.1:5672", "q").is_err());
        assert!(AmqpInventory::new("amqp://127.0.0.1:5672/%2f", "").is_err());
    }
}
