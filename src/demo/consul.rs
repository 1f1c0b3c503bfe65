//! `mosaic demo --consul URL`: the demo services registered with a Consul
//! agent, and the gateway discovering them through it instead of static
//! lists.
//!
//! Each service is registered as `mosaic-demo-NAME-PORT` (service `NAME`,
//! tag [`DEMO_TAG`]) with an HTTP check on its `/health`, starting as
//! `passing` because [`DemoServices::start`] has just seen `/health` answer
//! (Consul would otherwise hold it `critical` until the first check runs).
//! The demo backends follow `NAME` with tag [`DEMO_TAG`], so other instances
//! of a `reviews` service in a shared agent are never picked up. On exit the
//! registrations are removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{DemoServices, Service};
use crate::config::{Config, ConsulConfig, InstanceSource, DEFAULT_CONSUL_WAIT};
use crate::discovery::consul::{ConsulClient, ConsulError, HttpCheck, ServiceRegistration};
use crate::gateway::Gateway;

/// The tag on every demo registration (and the demo backends' filter).
pub const DEMO_TAG: &str = "mosaic-demo";
/// How often the agent checks each service's `/health`.
pub const CHECK_INTERVAL: &str = "2s";
/// Timeout of one check.
pub const CHECK_TIMEOUT: &str = "1s";
/// How long the demo waits for the gateway to discover every service.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the demo could not use the agent.
#[derive(Debug, thiserror::Error)]
pub enum DemoConsulError {
    /// The `--consul` value is not an `http://` URL.
    #[error("--consul {0:?}: expected an http:// URL such as http://127.0.0.1:8500")]
    Address(String),
    /// A registration failed.
    #[error("registering {service} with consul: {source}")]
    Register {
        /// The service.
        service: Service,
        /// What the agent said.
        source: ConsulError,
    },
}

/// `[discovery.consul]` for the demo: `address`, the token from
/// `CONSUL_HTTP_TOKEN` (Consul's own variable) when set.
pub fn consul_config(address: &str) -> Result<ConsulConfig, DemoConsulError> {
    let address = address.trim_end_matches('/');
    let host = address.strip_prefix("http://").unwrap_or("");
    if host.is_empty() || host.contains('/') {
        return Err(DemoConsulError::Address(address.to_string()));
    }
    Ok(ConsulConfig {
        address: address.to_string(),
        token: std::env::var("CONSUL_HTTP_TOKEN").ok().filter(|t| !t.is_empty()),
        datacenter: None,
        wait: DEFAULT_CONSUL_WAIT,
    })
}

/// The demo's registrations; [`Registered::deregister`] removes them.
#[derive(Debug)]
pub struct Registered {
    client: ConsulClient,
    ids: Vec<String>,
}

impl Registered {
    /// Registration ids, in service order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Removes every registration (failures are logged: the agent may be gone).
    pub async fn deregister(self) {
        for id in &self.ids {
            if let Err(error) = self.client.deregister(id).await {
                tracing::warn!(%id, %error, "could not deregister demo service");
            }
        }
    }
}

/// Registers the running demo services with the agent and points the
/// config's demo backends at their Consul services. Must run on an actix
/// runtime (the client is awc).
pub async fn register_and_discover(
    config: &mut Config,
    services: &DemoServices,
    consul: ConsulConfig,
) -> Result<Registered, DemoConsulError> {
    let client = ConsulClient::new(&consul);
    let mut registered = Registered { client, ids: Vec::new() };
    for service in Service::ALL {
        let Some(port) = services.port(service.name()) else { continue };
        let id = format!("{DEMO_TAG}-{service}-{port}");
        let registration = ServiceRegistration {
            id: id.clone(),
            name: service.name().to_string(),
            tags: vec![DEMO_TAG.to_string()],
            address: "127.0.0.1".to_string(),
            port,
            meta: BTreeMap::from([("origin".to_string(), "mosaic demo".to_string())]),
            check: Some(HttpCheck {
                http: format!("http://127.0.0.1:{port}/health"),
                interval: CHECK_INTERVAL.to_string(),
                timeout: CHECK_TIMEOUT.to_string(),
                status: Some("passing".to_string()),
            }),
        };
        if let Err(source) = registered.client.register(&registration).await {
            registered.deregister().await;
            return Err(DemoConsulError::Register { service, source });
        }
        registered.ids.push(id);
    }
    for service in Service::ALL {
        if let Some(backend) = config.backends.get_mut(service.name()) {
            Arc::make_mut(backend).instances = InstanceSource::Consul {
                service: service.name().to_string(),
                tag: Some(DEMO_TAG.to_string()),
            };
        }
    }
    config.consul = Some(consul);
    Ok(registered)
}

/// Waits (at most [`DISCOVERY_TIMEOUT`]) until the gateway is ready: every
/// backend has an instance (and a channel, behind a broker); false if that
/// did not happen in time.
pub async fn wait_until_discovered(gateway: &Gateway) -> bool {
    let until = tokio::time::Instant::now() + DISCOVERY_TIMEOUT;
    while !gateway.runtime().ready() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only plain `http://host:port` agent addresses are accepted.
    #[test]
    fn agent_address() {
        assert!(consul_config("http://127.0.0.1:8500/").is_ok());
        for bad in ["127.0.0.1:8500", "https://consul:8501", "http://", "http://a/b"] {
            assert!(consul_config(bad).is_err(), "{bad}");
        }
    }
}
