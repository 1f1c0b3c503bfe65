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
//! gateway + [`banner`].

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
pub use spawn::{spawn_service, DemoError, DemoServices, ServiceInfo};

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

/// What `mosaic demo` prints once everything is up: URLs to try, and each
/// service's port and PID with how to kill one and watch the page degrade.
pub fn banner(gateway: SocketAddr, admin: SocketAddr, services: &DemoServices) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "mosaic demo shop is up.\n\nTry:");
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
        ("metrics", format!("curl -s http://{admin}/metrics")),
        ("backends and breakers", format!("curl -s http://{admin}/admin/backends | jq")),
    ];
    for (what, command) in tries {
        let _ = writeln!(out, "  # {what}\n  {command}");
    }
    let _ = writeln!(out, "\nServices:");
    for info in services.services() {
        let pid = info.pid.map_or_else(|| "stopped".to_owned(), |p| format!("pid {p}"));
        let _ = writeln!(out, "  {:<16} 127.0.0.1:{:<6} {pid}", info.name, info.port);
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

/// Points the config's demo backends (named after the services) at the
/// services' real addresses, so any base port works.
pub fn point_config_at(config: &mut crate::config::Config, services: &DemoServices) {
    for service in Service::ALL {
        let name = service.to_string();
        let (Some(backend), Some(addr)) = (config.backends.get_mut(&name), services.addr(&name))
        else {
            continue;
        };
        std::sync::Arc::make_mut(backend).instances =
            crate::config::InstanceSource::Static(vec![addr.to_string()]);
    }
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
}
