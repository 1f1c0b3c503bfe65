//! The edge: the public actix-web listener.
//!
//! Every request gets its `X-Request-Id`, is matched against the current
//! [`Runtime`] (composed routes first, in file order, then proxy prefixes,
//! longest first) and handed to [`page`] or [`proxy`]. Routing is ours rather
//! than actix-web's so that a reload can swap routes without rebuilding the
//! `App`, and so that path parameters are decoded exactly once, by us.

pub mod client_headers;
pub mod compose;
pub mod guard;
pub mod proxy;
pub mod request_body;
pub mod request_id;
pub mod stream;
pub mod tls;
pub mod trace;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::telemetry;
use client_headers::ClientHeaders;
use request_id::X_REQUEST_ID;

/// `X-Mosaic-Complete: true|false` on every page.
pub static X_MOSAIC_COMPLETE: HeaderName = HeaderName::from_static("x-mosaic-complete");

use crate::gateway::Gateway;

/// The edge listener, bound and running: its address, a handle to stop it,
/// and the task that ends when it has stopped.
pub struct EdgeListener {
    /// Where it listens (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Stops it.
    pub handle: ServerHandle,
    /// Ends when the listener has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Binds the edge listener and starts serving `gateway`'s routes on it,
/// over HTTPS (HTTP/1.1 and h2) when `[server.tls]` is set. Must run inside
/// an actix system.
pub fn listen(gateway: Arc<Gateway>, server: &ServerConfig) -> io::Result<EdgeListener> {
    let tls = match (&server.tls, gateway.cert_store()) {
        (Some(tls), Some(store)) => Some(
            tls::server_config(tls, store.clone())
                .map_err(|e| io::Error::other(format!("server.tls: {e}")))?,
        ),
        _ => None,
    };
    let data = web::Data::from(gateway);
    let edge = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(dispatch))
    })
    .workers(server.workers.max(1))
    // A streamed page writes each event as it is ready: with Nagle's
    // algorithm an event behind one still unacknowledged waits for the
    // client's delayed ACK (40-200 ms). nginx's `tcp_nodelay on`, too.
    .tcp_nodelay(true)
    .client_request_timeout(server.client_timeout)
    .keep_alive(server.keep_alive)
    .shutdown_timeout(server.shutdown_grace.as_secs().max(1))
    .disable_signals();
    let socket = crate::gateway::listener::bind(server.listen, server.reuse_port)?;
    let edge = match tls {
        // A handshake must finish within client_timeout, like a request head.
        Some(tls) => {
            edge.tls_handshake_timeout(server.client_timeout).listen_rustls_0_23(socket, tls)?
        }
        None => edge.listen(socket)?,
    };
    let addr = edge.addrs().first().copied().unwrap_or(server.listen);
    let edge = edge.run();
    let handle = edge.handle();
    let done = tokio::task::spawn_local(async move {
        if let Err(e) = edge.await {
            tracing::error!(error = %e, "edge listener failed");
        }
    });
    Ok(EdgeListener { addr, handle, done })
}

/// SPEC.md's limit on request headers (actix-http itself stops at 128 KiB).
const MAX_HEADER_BYTES: usize = 32 * 1024;

async fn dispatch(
    req: HttpRequest,
    payload: request_body::ClientPayload,
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
    let target = match runtime
        .routes
        .iter()
        .find_map(|route| route.config.template.match_path(path).map(|raw| (route, raw)))
    {
        Some((route, raw)) => Target::Page(route, raw),
        None => match runtime.proxies.iter().find(|p| proxy::matches(&p.config.prefix, path)) {
            Some(proxy) => Target::Proxy(proxy),
            None => Target::Unmatched,
        },
    };
    // The gate, when the file asks anything of callers: a refusal is the
    // answer, counted under the route it was for.
    let admission = match (&runtime.gate, &target) {
        (Some(gate), Target::Page(route, _)) => {
            Some(gate.admit(&req, &client, &route.config.access, route.limiter.as_deref()).await)
        }
        (Some(gate), Target::Proxy(proxy)) => {
            Some(gate.admit(&req, &client, &proxy.config.access, proxy.limiter.as_deref()).await)
        }
        _ => None,
    };
    let (admission, refusal) = match admission {
        None => (None, None),
        Some(Ok(admission)) => (Some(admission), None),
        Some(Err(refusal)) => (None, Some(refusal.into_response())),
    };
    let identity = admission.as_ref().map(|a| &a.identity);
    let consumer = admission.as_ref().and_then(|a| a.caller.as_ref());
    let mut logs_itself = false;
    // `elapsed`: when already read (one clock read serves the proxy
    // duration metric and the access line).
    let (route_label, counters, mut response, page_log, elapsed) = match (target, refusal) {
        (Target::Page(route, _), Some(refusal)) => {
            (route.config.path.as_str(), &route.responses, refusal, None, None)
        }
        (Target::Proxy(proxy), Some(refusal)) => {
            (proxy.config.prefix.as_str(), &proxy.responses, refusal, None, None)
        }
        (Target::Page(route, raw), None) => {
            let caller = compose::Caller {
                runtime: &runtime,
                request_id: &request_id,
                trace_id: trace.trace_id(),
                consumer,
            };
            let served =
                compose::serve(&req, route, raw, identity, &per_request, arrived, caller).await;
            logs_itself = served.logs_itself;
            (route.config.path.as_str(), &route.responses, served.response, served.log, None)
        }
        (Target::Proxy(proxy), None) => {
            let request = proxy::ProxyRequest {
                req: &req,
                client: &client,
                per_request: &per_request,
                request_id: &request_id,
                trace: &trace,
                arrived,
                identity,
                consumer: consumer.cloned(),
            };
            let proxied = proxy::forward(&request, payload, proxy, server).await;
            let elapsed = arrived.elapsed();
            proxy.responses.duration.record(elapsed);
            logs_itself = proxied.logs_itself;
            (proxy.config.prefix.as_str(), &proxy.responses, proxied.response, None, Some(elapsed))
        }
        (Target::Unmatched, _) => {
            let response = error_response(StatusCode::NOT_FOUND, "not_found", None);
            ("unmatched", &runtime.unmatched, response, None, None)
        }
    };
    if let Some(limit) = admission.as_ref().and_then(|a| a.limit.clone()) {
        limit.apply(&mut response);
    }
    response.headers_mut().insert(X_REQUEST_ID.clone(), request_id.clone());
    let status = response.status().as_u16();
    counters.statuses.record(status);
    if telemetry::access::enabled() && !logs_itself {
        let elapsed = elapsed.unwrap_or_else(|| arrived.elapsed());
        let line = AccessDetails { route: route_label, status, elapsed, page: page_log, consumer };
        access_log(&req, &request_id, trace.trace_id(), line);
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
    line: AccessDetails<'_>,
) {
    telemetry::access::write(&telemetry::access::AccessLine {
        request_id: request_id.to_str().unwrap_or("-"),
        trace_id,
        method: req.method().as_str(),
        path: req.uri().path(),
        route: line.route,
        status: line.status,
        elapsed: line.elapsed,
        page: line.page.as_ref().map(|p| (p.complete, p.degraded.as_str())),
        body_error: None,
        consumer: line.consumer.map(|c| &**c),
    });
}

/// What the edge's access line says beyond the request itself.
struct AccessDetails<'a> {
    route: &'a str,
    status: u16,
    elapsed: std::time::Duration,
    page: Option<compose::PageLog>,
    consumer: Option<&'a Arc<str>>,
}

/// What a request matched.
enum Target<'r> {
    /// A composed route, with its raw path parameters.
    Page(&'r crate::gateway::runtime::RouteRuntime, crate::template::RawParams<'r>),
    /// A proxy route.
    Proxy(&'r crate::gateway::runtime::ProxyRuntime),
    /// Nothing.
    Unmatched,
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
