//! The Prometheus recorder behind the `metrics` crate, installed once per
//! process, for the families mosaic does not count itself (breakers,
//! instances, outcomes, discovery, Redis, AMQP, reloads). The rest are
//! [`crate::counters`], written by [`super::exposition`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets (seconds) of every latency histogram, mosaic's own and any
/// the recorder would keep.
pub use crate::counters::LATENCY_BUCKETS;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (first call) and returns its handle. `None` when
/// another recorder was installed first (then `/metrics` says so).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_string()),
                    &LATENCY_BUCKETS,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

/// HELP text for every family the recorder exports (`promtool check
/// metrics` wants one per metric family; mosaic's own families write theirs).
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!("mosaic_redis_up", "1 while the shared cache tier's Redis connection is open.");
    describe_counter!(
        "mosaic_redis_errors_total",
        "Shared cache tier errors, by kind (timeout, connection, reply, garbage, overload)."
    );
    describe_gauge!("mosaic_amqp_up", "1 while the RabbitMQ connection is open.");
    describe_counter!("mosaic_amqp_connects_total", "RabbitMQ connections opened.");
    describe_counter!(
        "mosaic_amqp_late_replies_total",
        "AMQP replies that matched no waiting call (dropped)."
    );
    describe_counter!(
        "mosaic_backend_requests_total",
        "Backend calls by outcome: success, client_error or an error name (timeout, connect, status_5xx, circuit_open, rejected, ...)."
    );
    describe_gauge!(
        "mosaic_breaker_state",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open."
    );
    describe_gauge!("mosaic_backend_instances", "Instances a backend currently balances over.");
    describe_counter!(
        "mosaic_discovery_errors_total",
        "Failed discovery calls (agent down, error status, garbage), by backend."
    );
    describe_gauge!(
        "mosaic_discovery_up",
        "1 when the backend's discovery source answers, else 0."
    );
    describe_counter!(
        "mosaic_backend_retries_total",
        "Retries of idempotent calls on another instance."
    );
    describe_counter!(
        "mosaic_actor_restarts_total",
        "Backend actors restarted by their supervisor."
    );
    describe_counter!(
        "mosaic_config_reloads_total",
        "Config reloads by result: success or failure."
    );
}
