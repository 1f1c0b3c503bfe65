//! The edge: the public actix-web listener.
//!
//! Every request gets its `X-Request-Id`, is matched against the current
//! [`Runtime`] (composed routes first, in file order, then proxy prefixes,
//! longest first) and handed to [`page`] or [`proxy`]. Routing is ours rather
//! than actix-web's so that a reload can swap routes without rebuilding the
//! `App`, and so that path parameters are decoded exactly once, by us.

pub mod page;
pub mod proxy;
pub mod request_id;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::Arbiter;
use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::admin;
use crate::config::Config;
use crate::coordinator::X_REQUEST_ID;
use crate::runtime::{BackendHandle, Runtime};

/// `X-Mosaic-Complete: true|false` on every page.
pub static X_MOSAIC_COMPLETE: HeaderName = HeaderName::from_static("x-mosaic-complete");

/// Shared by the edge workers and the admin listener.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    control: Arbiter,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the runtime for `config`, with the backend actors on their own arbiter.
    pub fn new(config: Config) -> Arc<Self> {
        let control = Arbiter::new();
        let runtime = Runtime::build(Arc::new(config), &control.handle(), None);
        Arc::new(Self { runtime: ArcSwap::from_pointee(runtime), control })
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// A backend and its actor, by name.
    pub fn backend(&self, name: &str) -> Option<BackendHandle> {
        self.runtime.load().backends.get(name).cloned()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.control.stop();
    }
}

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

/// Starts the edge and admin listeners. Must run inside an actix system.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    let metrics = admin::metrics::install();
    let server_config = config.server.clone();
    let admin_config = config.admin.clone();
    let gateway = Gateway::new(config);
    let data = web::Data::from(gateway.clone());
    let limits = web::Data::new(EdgeLimits {
        max_body: server_config.max_body,
        client_timeout: server_config.client_timeout,
    });
    let edge = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(limits.clone())
            .default_service(web::to(dispatch))
    })
    .workers(server_config.workers.max(1))
    .client_request_timeout(server_config.client_timeout)
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

/// The size of the request line and headers as sent (near enough: names,
/// values and separators).
fn header_bytes(req: &HttpRequest) -> usize {
    let line = req.uri().to_string().len() + 16;
    req.headers().iter().fold(line, |sum, (n, v)| sum + n.as_str().len() + v.len() + 4)
}

/// `server.max_body` and `server.client_timeout`, for the proxy.
#[derive(Debug, Clone, Copy)]
struct EdgeLimits {
    max_body: u64,
    client_timeout: std::time::Duration,
}

async fn dispatch(
    req: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
    limits: web::Data<EdgeLimits>,
) -> HttpResponse {
    let arrived = Instant::now();
    let request_id = request_id::request_id(req.headers());
    if header_bytes(&req) > MAX_HEADER_BYTES {
        let mut response =
            error_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", None);
        response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
        return response;
    }
    let runtime = gateway.runtime.load_full();
    let path = req.uri().path();
    let matched_route = runtime
        .routes
        .iter()
        .find_map(|route| route.config.template.match_path(path).map(|raw| (route, raw)));
    let (counters, mut response) = if let Some((route, raw)) = matched_route {
        (&route.requests, page::serve(&req, route, raw, &request_id, arrived).await)
    } else if let Some(proxy) =
        runtime.proxies.iter().find(|p| proxy::matches(&p.config.prefix, path))
    {
        let response = proxy::forward(
            &req,
            payload,
            proxy,
            &request_id,
            limits.max_body,
            limits.client_timeout,
        )
        .await;
        proxy.duration.record(arrived.elapsed().as_secs_f64());
        (&proxy.requests, response)
    } else {
        (&runtime.unmatched, error_response(StatusCode::NOT_FOUND, "not_found", None))
    };
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id);
    counters.record(response.status().as_u16());
    response
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

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the one shutdown path.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
