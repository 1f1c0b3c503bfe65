//! The edge: the public actix-web listener.
//!
//! Every request gets its `X-Request-Id`, is matched against the current
//! [`Runtime`] (composed routes first, in file order, then proxy prefixes,
//! longest first) and handed to [`page`] or [`proxy`]. Routing is ours rather
//! than actix-web's so that a reload can swap routes without rebuilding the
//! `App`, and so that path parameters are decoded exactly once, by us.

pub mod client_headers;
pub mod compose;
pub mod proxy;
pub mod request_body;
pub mod request_id;
pub mod signals;
pub mod trace;

pub use signals::{serve_until_shutdown, shutdown_signal};

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::time::Instant;

use crate::admin;
use crate::config::{Config, ConfigErrors};
use crate::telemetry;
use client_headers::ClientHeaders;
use request_id::X_REQUEST_ID;

/// `X-Mosaic-Complete: true|false` on every page.
pub static X_MOSAIC_COMPLETE: HeaderName = HeaderName::from_static("x-mosaic-complete");

pub use crate::gateway::Gateway;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The config file is invalid.
    #[error("{path}: refusing to start:\n{errors}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Every error in it.
        errors: ConfigErrors,
    },
}

/// A started gateway: its addresses and how to stop it.
pub struct RunningGateway {
    /// Where the edge listens (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    gateway: Arc<Gateway>,
    edge: ServerHandle,
    admin: ServerHandle,
    edge_done: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// The shared gateway state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops both listeners; `graceful` lets requests in flight finish
    /// (within `server.shutdown_grace`).
    pub async fn stop(self, graceful: bool) {
        self.admin.stop(graceful).await;
        self.edge.stop(graceful).await;
        let _ = self.edge_done.await;
    }

    /// Waits until the edge listener stops.
    pub async fn wait(self) {
        let _ = self.edge_done.await;
    }
}

/// Starts the edge and admin listeners with a config that has no file
/// behind it (so it cannot be reloaded). Must run inside an actix system.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with(config, None).await
}

/// Reads `path` and starts the gateway from it; `POST /admin/reload` and
/// SIGHUP re-read the same file.
pub async fn start_from_file(path: &Path) -> Result<RunningGateway, StartError> {
    let config = crate::config::load_file(path)
        .map_err(|errors| StartError::Config { path: path.to_path_buf(), errors })?;
    start_with(config, Some(path.to_path_buf())).await
}

/// Starts the edge and admin listeners; `config_path` is where reloads read.
pub async fn start_with(
    config: Config,
    config_path: Option<PathBuf>,
) -> Result<RunningGateway, StartError> {
    let metrics = admin::metrics::install();
    let server_config = config.server.clone();
    let admin_config = config.admin.clone();
    let gateway = Gateway::new(config, config_path);
    let data = web::Data::from(gateway.clone());
    let edge = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(dispatch))
    })
    .workers(server_config.workers.max(1))
    .client_request_timeout(server_config.client_timeout)
    .keep_alive(server_config.keep_alive)
    .shutdown_timeout(server_config.shutdown_grace.as_secs().max(1))
    .disable_signals()
    .bind(server_config.listen)
    .map_err(|source| StartError::Bind { addr: server_config.listen, source })?;
    let addr = edge.addrs().first().copied().unwrap_or(server_config.listen);
    let edge = edge.run();
    let edge_handle = edge.handle();
    let edge_done = tokio::task::spawn_local(async move {
        if let Err(e) = edge.await {
            tracing::error!(error = %e, "edge listener failed");
        }
    });
    let (admin_addr, admin_handle) = match admin::start(gateway.clone(), &admin_config, metrics) {
        Ok(started) => started,
        Err(source) => {
            edge_handle.stop(false).await;
            return Err(StartError::Bind { addr: admin_config.listen, source });
        }
    };
    tracing::info!(%addr, %admin_addr, "mosaic listening");
    Ok(RunningGateway {
        addr,
        admin_addr,
        gateway,
        edge: edge_handle,
        admin: admin_handle,
        edge_done,
    })
}

/// SPEC.md's limit on request headers (actix-http itself stops at 128 KiB).
const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    let arrived = Instant::now();
    let client = ClientHeaders::of(&req);
    let request_id = request_id::request_id(client.request_id);
    if client.size > MAX_HEADER_BYTES {
        let mut response =
            error_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", None);
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        return response;
    }
    let trace = trace::trace_context(client.traceparent);
    let mut per_request = vec![
        (X_REQUEST_ID.clone(), request_id.clone()),
        (TRACEPARENT.clone(), trace.outgoing.clone()),
    ];
    if let Some(state) = client.tracestate {
        per_request.push((TRACESTATE.clone(), state.clone()));
    }
    let runtime = gateway.runtime();
    let server = &runtime.config.server;
    let path = req.uri().path();
    let matched_route = runtime
        .routes
        .iter()
        .find_map(|route| route.config.template.match_path(path).map(|raw| (route, raw)));
    let mut logs_itself = false;
    // `elapsed`: when already read (one clock read serves the proxy
    // duration metric and the access line).
    let (route_label, counters, mut response, page_log, elapsed) =
        if let Some((route, raw)) = matched_route {
            let (response, log) = compose::serve(&req, route, raw, &per_request, arrived).await;
            (route.config.path.as_str(), &route.requests, response, log, None)
        } else if let Some(proxy) =
            runtime.proxies.iter().find(|p| proxy::matches(&p.config.prefix, path))
        {
            let request = proxy::ProxyRequest {
                req: &req,
                client: &client,
                per_request: &per_request,
                request_id: &request_id,
                trace: &trace,
                arrived,
            };
            let proxied = proxy::forward(&request, payload, proxy, server).await;
            let elapsed = arrived.elapsed();
            proxy.duration.record(elapsed.as_secs_f64());
            logs_itself = proxied.logs_itself;
            (proxy.config.prefix.as_str(), &proxy.requests, proxied.response, None, Some(elapsed))
        } else {
            let response = error_response(StatusCode::NOT_FOUND, "not_found", None);
            ("unmatched", &runtime.unmatched, response, None, None)
        };
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    let status = response.status().as_u16();
    counters.record(status);
    if telemetry::access::enabled() && !logs_itself {
        let elapsed = elapsed.unwrap_or_else(|| arrived.elapsed());
        access_log(&req, &request_id, trace.trace_id(), route_label, status, elapsed, page_log);
    }
    response
}

/// `traceparent`, sent to every service.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`, passed on when the client sent one.
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// One line per request (see `telemetry::access`). For a proxied request
/// the elapsed time is to the response head; the body streams after.
fn access_log(
    req: &HttpRequest,
    request_id: &HeaderValue,
    trace_id: &str,
    route: &str,
    status: u16,
    elapsed: std::time::Duration,
    page: Option<compose::PageLog>,
) {
    telemetry::access::write(&telemetry::access::AccessLine {
        request_id: request_id.to_str().unwrap_or("-"),
        trace_id,
        method: req.method().as_str(),
        path: req.uri().path(),
        route,
        status,
        elapsed,
        page: page.as_ref().map(|p| (p.complete, p.degraded.as_str())),
        body_error: None,
    });
}

/// A JSON error answered by mosaic itself: `{"error": KIND, "detail": ...}`.
pub fn error_response(status: StatusCode, kind: &str, detail: Option<&str>) -> HttpResponse {
    let body = match detail {
        Some(detail) => serde_json::json!({ "error": kind, "detail": detail }),
        None => serde_json::json!({ "error": kind }),
    };
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.to_string())
}
