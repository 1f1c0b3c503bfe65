//! A thin Consul HTTP API client and the blocking-query watch over it.
//!
//! Why not a crate: `consul` is blocking (`reqwest::blocking`) and
//! unmaintained; `rs-consul` has a 5 s default timeout that kills blocking
//! queries, no connection pooling, drops `Meta`/`Checks` and has no agent
//! register; the others are dead or lack `health/service`. mosaic needs three
//! endpoints, and `awc` is already its HTTP client, so this is ~150 lines
//! over `awc` on the backend actor's arbiter (awc is `!Send`, which is fine
//! there). TLS to the agent is not built in (mosaic builds awc without TLS):
//! use the local agent over loopback, as Consul recommends.
//!
//! Endpoints (developer.hashicorp.com/consul/api-docs):
//! - `GET /v1/health/service/:service?passing=true[&tag][&dc][&index&wait]`,
//!   the ACL token as `X-Consul-Token`;
//! - `PUT /v1/agent/service/register` and `PUT /v1/agent/service/deregister/:id`
//!   (used by `mosaic demo --consul`).
//!
//! Blocking-query rules ("features/blocking"): `index` is the last
//! `X-Consul-Index`; if it goes backwards it is reset to 0 (the next call
//! does not block and fetches the current state); it is never used below 1
//! otherwise. The HTTP timeout exceeds `wait + wait/16` (Consul adds up to
//! wait/16 of jitter) by [`HTTP_TIMEOUT_MARGIN`]. Calls are paced by
//! [`super::pace`].

use std::collections::BTreeMap;
use std::time::Duration;

use awc::error::SendRequestError;
use futures_util::future::LocalBoxFuture;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::pace::{Pacer, Pacing};
use super::{Event, Watch};
use crate::config::ConsulConfig;

/// How much longer than `wait + wait/16` a blocking call may take.
pub const HTTP_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);
/// Timeout of agent calls that do not block (register, deregister).
pub const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest health answer read (a few thousand instances fit).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error body goes into the error message.
const ERROR_BODY_CHARS: usize = 200;
const CONSUL_INDEX: &str = "x-consul-index";
const CONSUL_TOKEN: &str = "x-consul-token";

/// Why a call to the agent failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    /// Connection refused, reset, or broken answer.
    #[error("consul unreachable: {0}")]
    Unreachable(String),
    /// No answer within the HTTP timeout.
    #[error("consul timed out after {0:?}")]
    Timeout(Duration),
    /// The ACL token is missing, wrong or lacks `service:read`/`node:read`.
    #[error("consul refused the ACL token (403): {0}")]
    Forbidden(String),
    /// Any other non-2xx answer (e.g. 500 "No cluster leader").
    #[error("consul answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A 2xx answer that is not the documented JSON.
    #[error("consul answered garbage: {0}")]
    InvalidBody(String),
    /// A health answer without a numeric `X-Consul-Index`.
    #[error("consul answer has no valid X-Consul-Index")]
    MissingIndex,
}

/// One entry of `/v1/health/service/:service` (only what mosaic reads;
/// other fields are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    /// The node the instance runs on.
    pub node: HealthNode,
    /// The service instance.
    pub service: HealthService,
    /// Node and service checks.
    #[serde(default)]
    pub checks: Option<Vec<HealthCheck>>,
}

/// `Node` of a health entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthNode {
    /// The node's address: the instance's when `Service.Address` is empty.
    #[serde(default)]
    pub address: Option<String>,
}

/// `Service` of a health entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthService {
    /// The instance's address; empty means the node's.
    #[serde(default)]
    pub address: Option<String>,
    /// The instance's port.
    pub port: u16,
}

/// One check of a health entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// `passing`, `warning` or `critical`.
    pub status: String,
}

/// `PUT /v1/agent/service/register` body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Unique per agent.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name backends follow.
    pub name: String,
    /// Tags (`tag = "..."` filters on them).
    pub tags: Vec<String>,
    /// The instance's address (empty: the agent's).
    pub address: String,
    /// The instance's port.
    pub port: u16,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Its health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<HttpCheck>,
}

/// An HTTP health check run by the agent.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HttpCheck {
    /// The URL the agent GETs; 2xx is passing.
    #[serde(rename = "HTTP")]
    pub http: String,
    /// How often, e.g. `"2s"`.
    pub interval: String,
    /// Per-check timeout, e.g. `"1s"`.
    pub timeout: String,
    /// Initial status (Consul's default is `critical` until the first run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The index to send next, given the one in use and the `X-Consul-Index`
/// just answered: 0 (a non-blocking refetch) when it went backwards, else
/// the answer, never below 1.
pub fn next_index(previous: u64, answered: u64) -> u64 {
    if answered < previous {
        0
    } else {
        answered.max(1)
    }
}

/// `host:port` of an entry: `Service.Address`, or `Node.Address` when that
/// is empty; IPv6 hosts in brackets. `None` without an address or port.
pub fn instance_address(entry: &HealthEntry) -> Option<String> {
    let host = non_empty(&entry.service.address).or_else(|| non_empty(&entry.node.address))?;
    if entry.service.port == 0 {
        return None;
    }
    let port = entry.service.port;
    if host.contains(':') && !host.starts_with('[') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

fn non_empty(address: &Option<String>) -> Option<&str> {
    address.as_deref().map(str::trim).filter(|a| !a.is_empty())
}

/// The instances whose checks all pass, sorted and without duplicates.
/// (`passing=true` already asks the agent for that; this keeps mosaic
/// right even if a proxy or an old agent ignores it.)
pub fn healthy_instances(entries: &[HealthEntry]) -> Vec<String> {
    let mut list: Vec<String> = entries
        .iter()
        .filter(|e| e.checks.iter().flatten().all(|c| c.status == "passing"))
        .filter_map(instance_address)
        .collect();
    list.sort();
    list.dedup();
    list
}

/// `wait` as Consul parses it (`"30s"`, `"1500ms"`).
pub fn format_wait(wait: Duration) -> String {
    if wait.subsec_millis() == 0 {
        format!("{}s", wait.as_secs())
    } else {
        format!("{}ms", wait.as_millis())
    }
}

/// A client of one agent.
#[derive(Clone)]
pub struct ConsulClient {
    http: awc::Client,
    base: String,
    token: Option<String>,
    datacenter: Option<String>,
    wait: Duration,
    http_timeout: Duration,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("ConsulClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl ConsulClient {
    /// A client for `[discovery.consul]`. Must be used on the thread that built it.
    pub fn new(config: &ConsulConfig) -> Self {
        let http_timeout = config.wait + config.wait / 16 + HTTP_TIMEOUT_MARGIN;
        Self {
            http: awc::Client::builder().timeout(http_timeout).disable_redirects().finish(),
            base: config.address.trim_end_matches('/').to_string(),
            token: config.token.clone(),
            datacenter: config.datacenter.clone(),
            wait: config.wait,
            http_timeout,
        }
    }

    /// The health query URL; blocking when `index > 0`.
    pub fn health_url(&self, service: &str, tag: Option<&str>, index: u64) -> String {
        let encode = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut url = format!("{}/v1/health/service/{}?passing=true", self.base, encode(service));
        if let Some(tag) = tag {
            url.push_str(&format!("&tag={}", encode(tag)));
        }
        if let Some(dc) = &self.datacenter {
            url.push_str(&format!("&dc={}", encode(dc)));
        }
        if index > 0 {
            url.push_str(&format!("&index={index}&wait={}", format_wait(self.wait)));
        }
        url
    }

    /// The service's instances with all checks passing, and `X-Consul-Index`.
    pub async fn healthy(
        &self,
        service: &str,
        tag: Option<&str>,
        index: u64,
    ) -> Result<(Vec<HealthEntry>, u64), ConsulError> {
        let request = self.with_token(self.http.get(self.health_url(service, tag, index)));
        let mut response = request.send().await.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let body = response
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| ConsulError::Unreachable(format!("reading the answer: {e}")))?;
        check_status(status, &body)?;
        let answered = response
            .headers()
            .get(CONSUL_INDEX)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(ConsulError::MissingIndex)?;
        let entries = serde_json::from_slice(&body)
            .map_err(|e| ConsulError::InvalidBody(format!("{e}: {}", snippet(&body))))?;
        Ok((entries, answered))
    }

    /// Registers a service instance with the agent.
    pub async fn register(&self, registration: &ServiceRegistration) -> Result<(), ConsulError> {
        let url = format!("{}/v1/agent/service/register", self.base);
        let request = self.with_token(self.http.put(url).timeout(AGENT_CALL_TIMEOUT));
        self.agent_call(request.send_json(registration)).await
    }

    /// Deregisters the instance `id` from the agent.
    pub async fn deregister(&self, id: &str) -> Result<(), ConsulError> {
        let id = utf8_percent_encode(id, NON_ALPHANUMERIC);
        let url = format!("{}/v1/agent/service/deregister/{id}", self.base);
        let request = self.with_token(self.http.put(url).timeout(AGENT_CALL_TIMEOUT));
        self.agent_call(request.send()).await
    }

    async fn agent_call(&self, sent: awc::SendClientRequest) -> Result<(), ConsulError> {
        let mut response = sent.await.map_err(|e| self.send_error(e))?;
        let status = response.status().as_u16();
        let body = response.body().limit(64 * 1024).await.unwrap_or_default();
        check_status(status, &body)
    }

    fn with_token(&self, request: awc::ClientRequest) -> awc::ClientRequest {
        match &self.token {
            Some(token) => request.insert_header((CONSUL_TOKEN, token.as_str())),
            None => request,
        }
    }

    fn send_error(&self, error: SendRequestError) -> ConsulError {
        match error {
            SendRequestError::Timeout => ConsulError::Timeout(self.http_timeout),
            other => ConsulError::Unreachable(other.to_string()),
        }
    }
}

fn check_status(status: u16, body: &[u8]) -> Result<(), ConsulError> {
    match status {
        200..=299 => Ok(()),
        403 => Err(ConsulError::Forbidden(snippet(body))),
        _ => Err(ConsulError::Status { status, body: snippet(body) }),
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).trim().chars().take(ERROR_BODY_CHARS).collect()
}

/// Follows one service's healthy instances with blocking queries.
#[derive(Debug)]
pub struct ConsulWatch {
    client: ConsulClient,
    service: String,
    tag: Option<String>,
    index: u64,
    pacer: Pacer,
}

impl ConsulWatch {
    /// A watch of `service` (only instances tagged `tag`, when set), paced
    /// by the defaults of [`super::pace`].
    pub fn new(config: &ConsulConfig, service: &str, tag: Option<&str>) -> Self {
        Self {
            client: ConsulClient::new(config),
            service: service.to_string(),
            tag: tag.map(str::to_string),
            index: 0,
            pacer: Pacer::new(Pacing::default()),
        }
    }

    /// Other pacing (tests).
    pub fn with_pacing(mut self, pacing: Pacing) -> Self {
        self.pacer = Pacer::new(pacing);
        self
    }

    async fn call(&mut self) -> Event {
        tokio::time::sleep_until(self.pacer.next_call(Instant::now())).await;
        match self.client.healthy(&self.service, self.tag.as_deref(), self.index).await {
            Ok((entries, answered)) => {
                self.index = next_index(self.index, answered);
                self.pacer.succeeded();
                Event::Healthy { instances: healthy_instances(&entries), index: self.index }
            }
            Err(error) => {
                self.pacer.failed(Instant::now(), fastrand::f64());
                Event::Failed { error: error.to_string(), index: self.index }
            }
        }
    }
}

impl Watch for ConsulWatch {
    fn next(&mut self) -> LocalBoxFuture<'_, Event> {
        Box::pin(self.call())
    }
}

#[cfg(test)]
mod tests;
