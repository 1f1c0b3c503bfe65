//! The admin listener: metrics, health and the admin API, on its own port
//! (loopback by default) so that operators' calls never compete with, or
//! get exposed next to, public traffic.
//!
//! - [`metrics`]: the Prometheus recorder behind `/metrics`.
//! - [`dashboard`]: `GET /dashboard`, the live page.
//! - [`events`]: `GET /admin/events`, the page's snapshot stream, computed
//!   by [`snapshot`] from mosaic's own counters ([`crate::counters`]).
//! - [`exposition`]: the `/metrics` text of those counters.

mod cache;
pub mod chaos_hooks;
pub mod dashboard;
pub mod events;
pub mod exposition;
pub mod metrics;
pub mod snapshot;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::backend::actor::{ForceBreaker, GetStatus};
use crate::backend::breaker::ForcedMode;
use crate::config::AdminConfig;
use crate::gateway::{Gateway, ReloadError};

/// How often the Prometheus recorder's histograms are maintained.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a graceful stop waits for admin connections. Admin calls are
/// short, but a dashboard's event stream never ends by itself: without
/// this, a stop would wait out actix's 30 s default for it.
const SHUTDOWN_GRACE_SECS: u64 = 1;

struct AdminState {
    gateway: Arc<Gateway>,
    metrics: Option<PrometheusHandle>,
    /// The dashboard's event streams.
    events: Arc<events::EventsHub>,
}

impl AdminState {
    /// The token in force: read from the current config, so a reload can
    /// rotate it.
    fn authorized(&self, req: &HttpRequest) -> bool {
        authorized(req, &self.gateway.runtime().config.admin.token)
    }
}

/// Starts the admin listener on one worker.
pub fn start(
    gateway: Arc<Gateway>,
    config: &AdminConfig,
    metrics: Option<PrometheusHandle>,
    reuse_port: bool,
) -> io::Result<(SocketAddr, ServerHandle)> {
    if let Some(handle) = metrics.clone() {
        actix_rt::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        });
    }
    let events = Arc::new(events::EventsHub::default());
    let state = web::Data::new(AdminState { gateway, metrics, events });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(render_metrics))
            .route("/dashboard", web::get().to(dashboard::page))
            .route("/admin/events", web::get().to(event_stream))
            .route("/admin/backends", web::get().to(backends))
            .route("/admin/backends/{name}/breaker", web::post().to(force_breaker))
            .route("/admin/reload", web::post().to(reload))
            .configure(cache::configure)
            .configure(chaos_hooks::configure)
    })
    .workers(1)
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .disable_signals()
    // The admin port is shared too on a rolling restart: the new process
    // must answer `/readyz` before the old one stops.
    .listen(crate::gateway::listener::bind(config.listen, reuse_port)?)?;
    let addr = server.addrs().first().copied().unwrap_or(config.listen);
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok((addr, handle))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    let runtime = state.gateway.runtime();
    let missing: Vec<&str> = runtime
        .backends
        .iter()
        .filter(|(_, h)| !h.backend.has_instances())
        .map(|(name, _)| name.as_str())
        .collect();
    // With `[amqp]`, the broker connection is needed too.
    let broker_down = runtime.broker.as_ref().is_some_and(|broker| !broker.is_up());
    if missing.is_empty() && !broker_down {
        HttpResponse::Ok().json(serde_json::json!({ "ready": true }))
    } else {
        let mut body = serde_json::json!({ "ready": false, "backends_without_instances": missing });
        if broker_down {
            body["broker_down"] = serde_json::Value::Bool(true);
        }
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn render_metrics(state: web::Data<AdminState>) -> HttpResponse {
    match &state.metrics {
        Some(handle) => {
            // The recorder's families, then mosaic's own counters.
            let mut text = handle.render();
            exposition::Families::of(&state.gateway.runtime()).write(&mut text);
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4"))
                .body(text)
        }
        None => HttpResponse::ServiceUnavailable().body("metrics recorder not installed\n"),
    }
}

/// Constant-time comparison of the bearer token.
fn authorized(req: &HttpRequest, token: &Option<String>) -> bool {
    let Some(expected) = token else { return true };
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
        .json(serde_json::json!({ "error": "unauthorized" }))
}

async fn backends(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    let runtime = state.gateway.runtime();
    let mut list = Vec::with_capacity(runtime.backends.len());
    for handle in runtime.backends.values() {
        // Ask the owner; if it is restarting, read the shared state directly.
        let status = match handle.actor.send(GetStatus).await {
            Ok(Ok(status)) => status,
            _ => handle.backend.status(),
        };
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "actor_restarts".into(),
                handle.restarts.load(std::sync::atomic::Ordering::Relaxed).into(),
            );
        }
        list.push(value);
    }
    HttpResponse::Ok().json(serde_json::json!({ "backends": list }))
}

/// `GET /admin/events`: the dashboard's snapshot stream.
async fn event_stream(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    state.events.connect(&state.gateway)
}

#[derive(Deserialize)]
struct BreakerBody {
    state: String,
}

async fn force_breaker(
    req: HttpRequest,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    body: web::Json<BreakerBody>,
) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    let mode =
        match body.state.as_str() {
            "open" => ForcedMode::Open,
            "closed" => ForcedMode::Closed,
            "auto" => ForcedMode::Auto,
            other => return HttpResponse::BadRequest().json(serde_json::json!({
                "error": format!("state must be \"open\", \"closed\" or \"auto\", not {other:?}")
            })),
        };
    let Some(handle) = state.gateway.backend(&name) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "error": "no such backend" }));
    };
    match handle.actor.send(ForceBreaker(mode)).await {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(serde_json::json!({ "backend": *name, "state": body.state }))
        }
        _ => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "error": "backend actor restarting, try again" })),
    }
}

/// Re-reads the config file: 200 with what changed, or 400 with every error
/// (nothing changed).
async fn reload(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    match state.gateway.reload().await {
        Ok(report) => {
            HttpResponse::Ok().json(serde_json::json!({ "reloaded": true, "changes": report }))
        }
        Err(ReloadError::Invalid(errors)) => {
            let list: Vec<_> = errors
                .errors
                .iter()
                .map(|e| serde_json::json!({ "path": e.path, "message": e.message, "error": e.to_string() }))
                .collect();
            HttpResponse::BadRequest()
                .json(serde_json::json!({ "reloaded": false, "errors": list }))
        }
        Err(error @ ReloadError::NoFile) => HttpResponse::Conflict().json(
            serde_json::json!({ "reloaded": false, "errors": [{ "error": error.to_string() }] }),
        ),
    }
}
