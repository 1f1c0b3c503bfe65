//! Proxy routes (`[[proxy]]`): any method, bodies streamed both ways.
//!
//! The backend's breaker, bulkhead and per-attempt timeout apply (the timeout
//! bounds the wait for the response headers). Hop-by-hop headers are dropped
//! and `X-Forwarded-*` set. Request bodies over `max_body` get 413, whether
//! announced by `Content-Length` or discovered while streaming. Only
//! idempotent requests without a body are retried on another instance.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::PayloadError;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::error_response;
use crate::backend::bulkhead::BulkheadSlot;
use crate::backend::client::{classify_send_error, worker_client};
use crate::backend::{Admission, FetchError};
use crate::runtime::ProxyRuntime;

/// Whether `path` falls under `prefix`, at a segment boundary:
/// `/api/cart/` matches `/api/cart` and `/api/cart/x`, never `/api/cartoon`.
pub fn matches(prefix: &str, path: &str) -> bool {
    let base = prefix.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The service path: the prefix replaced by `rewrite` (if any), query kept.
pub fn target_path(prefix: &str, rewrite: Option<&str>, path: &str, query: &str) -> String {
    let base = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(base).unwrap_or(path);
    let mut out = match rewrite {
        Some(rewrite) => format!("{}{}", rewrite.trim_end_matches('/'), rest),
        None => path.to_string(),
    };
    if out.is_empty() {
        out.push('/');
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// `.` or `..` segments, raw or percent-encoded: refused, so a prefix can
/// never be escaped on a backend that normalises paths.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>();
        decoded == b"." || decoded == b".."
    })
}

fn is_hop_by_hop(name: &HeaderName, connection_listed: &[String]) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || connection_listed.iter().any(|c| c == name.as_str())
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn proxy_error(status: StatusCode, error: FetchError, backend: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": error.as_str(), "backend": backend });
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.to_string())
}

fn status_for(error: FetchError) -> StatusCode {
    match error {
        FetchError::CircuitOpen | FetchError::Rejected | FetchError::NoInstances => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        FetchError::Timeout | FetchError::Deadline => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Forwards one request.
pub async fn forward(
    req: &HttpRequest,
    payload: web::Payload,
    proxy: &ProxyRuntime,
    per_request: &[(HeaderName, HeaderValue)],
    max_body: u64,
    client_timeout: Duration,
) -> HttpResponse {
    let backend = &proxy.backend;
    let name = backend.name();
    let path = req.uri().path();
    if has_dot_segment(path) {
        return error_response(StatusCode::BAD_REQUEST, "bad_request", Some("dot segment in path"));
    }
    let declared_len = match req.headers().get(header::CONTENT_LENGTH) {
        Some(v) => match v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    Some("bad content-length"),
                )
            }
        },
        None => None,
    };
    if declared_len.is_some_and(|n| n > max_body) {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None);
    }
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let has_body = chunked || declared_len.is_some_and(|n| n > 0);
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let target = target_path(
        &proxy.config.prefix,
        proxy.config.rewrite.as_deref(),
        path,
        req.uri().query().unwrap_or(""),
    );

    let Admission { instances, mut permit, slot } = match backend.admit() {
        Ok(admission) => admission,
        Err(error) => return proxy_error(status_for(error), error, name),
    };

    let listed = connection_listed(req.headers());
    let mut headers = HeaderMap::new();
    for (name, value) in req.headers() {
        // The client's own forwarding claims are not passed on: mosaic sets
        // X-Forwarded-* from what it saw (X-Forwarded-For is appended to).
        if name == header::HOST
            || name == header::CONTENT_LENGTH
            || matches!(name.as_str(), "forwarded" | "x-forwarded-host" | "x-forwarded-proto")
            || is_hop_by_hop(name, &listed)
        {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let forwarded_for = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) if !peer.is_empty() => format!("{previous}, {peer}"),
        Some(previous) => previous.to_string(),
        None => peer,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    // The scheme of the connection we accepted, never the client's own
    // `X-Forwarded-Proto` or `Forwarded` claim (which `connection_info` trusts).
    let scheme = if req.app_config().secure() { "https" } else { "http" };
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(scheme));
    if let Some(host) = req.headers().get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    for (name, value) in per_request {
        headers.insert(name.clone(), value.clone());
    }

    let client = worker_client();
    let timeout = backend.config().timeout;
    // A body is streamed once, so only a bodiless idempotent request can be repeated.
    let mut retries_left = backend.retry_budget(&instances, idempotent && !has_body);
    let mut payload = Some(payload);
    let body_fault = Rc::new(Cell::new(BodyFault::None));
    let progress = Rc::new(BodyProgress::new());
    let mut previous = None;
    loop {
        let Some(index) = backend.balancer.pick(&instances, previous) else {
            return proxy_error(StatusCode::SERVICE_UNAVAILABLE, FetchError::NoInstances, name);
        };
        let url = format!("{}{}", instances[index].base_url, target);
        let mut request = client.request(req.method().clone(), url);
        for (name, value) in &headers {
            request = request.append_header((name.clone(), value.clone()));
        }
        let started = Instant::now();
        let send = match (has_body, payload.take()) {
            (true, Some(body)) => {
                let limited = limit_body(body, max_body, body_fault.clone(), progress.clone());
                match declared_len {
                    Some(len) => request.send_body(SizedStream::new(len, limited)),
                    None => request.send_stream(limited),
                }
            }
            _ => request.send(),
        };
        let upload = has_body.then(|| progress.clone());
        let result = await_response(send, timeout, upload, client_timeout).await;
        if matches!(result, Err(Waited::ClientStalled)) {
            // The client stopped sending its body: its fault, record nothing.
            drop(permit);
            return error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout", None);
        }
        let outcome = match result {
            Err(_) => Err(FetchError::Timeout),
            Ok(Err(e)) => Err(classify_send_error(e)),
            Ok(Ok(response)) if response.status().is_server_error() => Ok((response, true)),
            Ok(Ok(response)) => Ok((response, false)),
        };
        // The client's fault, not the backend's: record nothing.
        match body_fault.get() {
            BodyFault::None => {}
            BodyFault::TooLarge => {
                drop(permit);
                return error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None);
            }
            BodyFault::Broken => {
                drop(permit);
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    Some("request body incomplete"),
                );
            }
        }
        let fault = match &outcome {
            Err(e) => e.is_upstream_fault(),
            Ok((_, server_error)) => *server_error,
        };
        backend.breaker.record(permit, fault);
        let retryable = match &outcome {
            Err(e) => e.is_retryable(),
            Ok((_, server_error)) => *server_error,
        };
        match &outcome {
            Err(error) => backend.stats.failed(*error, started.elapsed()),
            Ok((_, true)) => backend.stats.failed(FetchError::Status5xx, started.elapsed()),
            Ok((response, false)) => {
                backend.stats.answered(response.status().as_u16(), started.elapsed())
            }
        }
        if retryable {
            if let Some(next) = backend.permit_retry(&mut retries_left) {
                permit = next;
                previous = Some(index);
                continue;
            }
        }
        let (response, _) = match outcome {
            Ok(ok) => ok,
            Err(error) => return proxy_error(status_for(error), error, name),
        };
        return relay(response, slot);
    }
}

/// Streams the service's answer back, hop-by-hop headers dropped.
fn relay<S>(response: awc::ClientResponse<S>, slot: BulkheadSlot) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, PayloadError>> + Unpin + 'static,
{
    let status = response.status();
    let listed = connection_listed(response.headers());
    let length = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    let mut builder = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH || is_hop_by_hop(name, &listed) {
            continue;
        }
        builder.append_header((name.clone(), value.clone()));
    }
    // The bulkhead slot is held until the body has been relayed.
    let body = response.map(move |chunk| {
        let _hold = &slot;
        chunk
    });
    match length {
        Some(len) => builder.body(SizedStream::new(len, body)),
        None => builder.streaming(body),
    }
}

/// Why the client's request body could not be relayed (the client's fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFault {
    None,
    /// It grew past `max_body`.
    TooLarge,
    /// The client broke it off (or sent bad framing).
    Broken,
}

/// How far the client's request body has come: the backend's `timeout`
/// bounds the wait for response headers *after* the body was relayed, so a
/// slow client is never blamed on the backend.
struct BodyProgress {
    last_chunk: Cell<Instant>,
    done_at: Cell<Option<Instant>>,
}

impl BodyProgress {
    fn new() -> Self {
        Self { last_chunk: Cell::new(Instant::now()), done_at: Cell::new(None) }
    }
}

/// Why no response head arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    /// The backend took longer than `timeout` after the request was sent.
    Timeout,
    /// The client sent no body bytes for `client_timeout`.
    ClientStalled,
}

/// Waits for the response head: `timeout` counted from the end of the
/// request body (from the start without one); while the client is still
/// uploading, only its silence (`client_idle`) ends the wait.
async fn await_response<F: std::future::Future>(
    send: F,
    timeout: Duration,
    upload: Option<Rc<BodyProgress>>,
    client_idle: Duration,
) -> Result<F::Output, Waited> {
    let started = Instant::now();
    let mut send = std::pin::pin!(send);
    loop {
        let (limit, on_expiry) = match &upload {
            None => (started + timeout, Waited::Timeout),
            Some(p) => match p.done_at.get() {
                Some(done) => (done + timeout, Waited::Timeout),
                None => (p.last_chunk.get() + client_idle, Waited::ClientStalled),
            },
        };
        tokio::select! {
            out = &mut send => return Ok(out),
            _ = tokio::time::sleep_until(limit) => {
                // Progress may have moved the limit while we slept.
                let moved = match &upload {
                    None => false,
                    Some(p) => match (on_expiry, p.done_at.get()) {
                        (Waited::ClientStalled, Some(_)) => true,
                        (Waited::ClientStalled, None) => p.last_chunk.get() + client_idle > limit,
                        _ => false,
                    },
                };
                if !moved {
                    return Err(on_expiry);
                }
            }
        }
    }
}

fn limit_body(
    payload: web::Payload,
    max_body: u64,
    fault: Rc<Cell<BodyFault>>,
    progress: Rc<BodyProgress>,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, PayloadError>> + 'static {
    let mut seen: u64 = 0;
    let at_end = progress.clone();
    let end = futures_util::stream::poll_fn(move |_| {
        at_end.done_at.set(Some(Instant::now()));
        std::task::Poll::Ready(None)
    });
    payload
        .map(move |chunk| {
            progress.last_chunk.set(Instant::now());
            let chunk = chunk.map_err(|_| {
                fault.set(BodyFault::Broken);
                PayloadError::Incomplete(None)
            })?;
            seen += chunk.len() as u64;
            if seen > max_body {
                fault.set(BodyFault::TooLarge);
                return Err(PayloadError::Overflow);
            }
            Ok(chunk)
        })
        .chain(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_at_segment_boundary() {
        assert!(matches("/api/cart/", "/api/cart/x"));
        assert!(matches("/api/cart/", "/api/cart"));
        assert!(matches("/api/cart", "/api/cart/x/y"));
        assert!(!matches("/api/cart/", "/api/cartoon"));
        assert!(!matches("/api/cart", "/api/cartoon"));
        assert!(matches("/", "/anything"));
    }

    #[test]
    fn rewrite_replaces_prefix_and_keeps_query() {
        assert_eq!(
            target_path("/api/cart/", Some("/cart/"), "/api/cart/items", "a=1"),
            "/cart/items?a=1"
        );
        assert_eq!(target_path("/api/cart/", Some("/cart/"), "/api/cart", ""), "/cart");
        assert_eq!(target_path("/api/", None, "/api/x", ""), "/api/x");
        assert_eq!(target_path("/api/", Some("/"), "/api", ""), "/");
    }

    #[test]
    fn dot_segments_detected() {
        assert!(has_dot_segment("/api/cart/../admin"));
        assert!(has_dot_segment("/api/cart/%2e%2E/admin"));
        assert!(has_dot_segment("/api/./x"));
        assert!(!has_dot_segment("/api/cart/...x/a.b"));
    }
}
