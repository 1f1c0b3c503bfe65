//! Proxy routes (`[[proxy]]`): any method, bodies streamed both ways.
//!
//! A request is checked before anything is sent ([`path`] and [`headers`]
//! rules, its declared length), its body's first bytes are read before it
//! takes a place in the backend's bulkhead (`edge::request_body`), then the
//! backend's breaker, bulkhead and per-attempt timeout apply (the timeout
//! bounds the wait for the response headers and each wait for more of a
//! streamed body). Only idempotent requests without a body are retried on
//! another instance. The answer goes back through [`relay`].

mod amqp;
pub mod headers;
pub mod path;
pub mod relay;

pub use path::{has_dot_segment, matches, target_path};

use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use tokio::time::Instant;

use super::client_headers::ClientHeaders;
use super::error_response;
use super::guard::Identity;
use super::request_body::{BodyLimits, ClientPayload, RequestBody, ADMISSION_PREFIX};
use crate::backend::breaker::BreakerPermit;
use crate::backend::call::{Attempts, Called, Judged};
use crate::backend::client;
use crate::backend::client::forward::{
    ForwardError, Incoming, IncomingBody, Limits, Outgoing, RequestBody as Framing,
};
use crate::backend::{Admission, Backend, FetchError, Outcome};
use crate::config::ServerConfig;
use crate::gateway::runtime::ProxyRuntime;
use crate::http1::fields::parse_content_length;
use relay::{DeferredAccess, OpenCall};

/// The proxied request, as the edge read it.
#[derive(Debug)]
pub struct ProxyRequest<'a> {
    /// The client's request.
    pub req: &'a HttpRequest,
    /// The headers the edge read from it.
    pub client: &'a ClientHeaders<'a>,
    /// Headers set per request (request id, trace context).
    pub per_request: &'a [(HeaderName, HeaderValue)],
    /// The request's `X-Request-Id`.
    pub request_id: &'a HeaderValue,
    /// Its trace context (the trace id is read from it only for a line
    /// logged later).
    pub trace: &'a crate::edge::trace::TraceContext,
    /// When it arrived.
    pub arrived: Instant,
    /// The caller as the gate saw it, when a gate ran.
    pub identity: Option<&'a Identity<'a>>,
    /// The consumer's name, for the access line.
    pub consumer: Option<Arc<str>>,
}

/// A proxied request's answer.
#[derive(Debug)]
pub struct Proxied {
    /// What goes to the client.
    pub response: HttpResponse,
    /// The answer's body streams after its head and writes the access line
    /// itself when it ends (the edge must not).
    pub logs_itself: bool,
}

impl From<HttpResponse> for Proxied {
    fn from(response: HttpResponse) -> Self {
        Proxied { response, logs_itself: false }
    }
}

/// The JSON error answered for a backend that could not be asked.
pub(crate) fn proxy_error(status: StatusCode, error: FetchError, backend: &str) -> HttpResponse {
    let body = serde_json::json!({ "error": error.as_str(), "backend": backend });
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(body.to_string())
}

fn status_for(error: FetchError) -> StatusCode {
    match error {
        FetchError::CircuitOpen
        | FetchError::Rejected
        | FetchError::NoInstances
        | FetchError::Nacked => StatusCode::SERVICE_UNAVAILABLE,
        FetchError::Timeout | FetchError::Deadline => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// The answer to a client's own fault; `None` for an upstream one.
fn client_fault(error: ForwardError) -> Result<HttpResponse, FetchError> {
    match error {
        ForwardError::ClientStalled => {
            Ok(error_response(StatusCode::REQUEST_TIMEOUT, "request_timeout", None))
        }
        ForwardError::ClientTooLarge => {
            Ok(error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None))
        }
        ForwardError::ClientBroken => Ok(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("request body incomplete or longer than declared"),
        )),
        ForwardError::Upstream(error) => Err(error),
    }
}

/// Why a request is refused before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// CONNECT would turn the connection into a tunnel; TRACE echoes the
    /// request (cookies included) back. Neither goes to a service.
    Method,
    /// A path that could climb out of the prefix.
    DotSegment,
    /// A `Host` that is not `host[:port]`.
    BadHost,
    /// A `Content-Length` that is not digits.
    BadLength,
    /// A declared body over `max_body`.
    TooLarge,
}

impl Refusal {
    fn response(self) -> HttpResponse {
        let bad_request =
            |detail| error_response(StatusCode::BAD_REQUEST, "bad_request", Some(detail));
        match self {
            Refusal::Method => {
                error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None)
            }
            Refusal::DotSegment => bad_request("dot segment in path"),
            Refusal::BadHost => bad_request("bad host"),
            Refusal::BadLength => bad_request("bad content-length"),
            Refusal::TooLarge => error_response(StatusCode::PAYLOAD_TOO_LARGE, "too_large", None),
        }
    }
}

/// What is wrong with a request before anything is sent, if anything; else
/// its declared body length.
fn check(request: &ProxyRequest<'_>, max_body: u64) -> Result<Option<u64>, Refusal> {
    let req = request.req;
    if matches!(*req.method(), Method::CONNECT | Method::TRACE) {
        return Err(Refusal::Method);
    }
    if has_dot_segment(req.uri().path()) {
        return Err(Refusal::DotSegment);
    }
    if request.client.host.is_some_and(|host| !headers::is_valid_host(host.as_bytes())) {
        return Err(Refusal::BadHost);
    }
    let declared = match request.client.content_length {
        None => None,
        Some(value) => Some(parse_content_length(value.as_bytes()).ok_or(Refusal::BadLength)?),
    };
    if declared.is_some_and(|n| n > max_body) {
        return Err(Refusal::TooLarge);
    }
    Ok(declared)
}

/// Forwards one request to `proxy`'s backend.
pub async fn forward(
    request: &ProxyRequest<'_>,
    payload: ClientPayload,
    proxy: &ProxyRuntime,
    server: &ServerConfig,
) -> Proxied {
    let req = request.req;
    let backend = &proxy.backend;
    let declared = match check(request, server.max_body) {
        Ok(declared) => declared,
        Err(refusal) => return refusal.response().into(),
    };
    if let Some(link) = backend.amqp() {
        // Behind the broker (boxed: an HTTP request's future stays as small).
        return Box::pin(amqp::forward(request, payload, proxy, server, declared, link))
            .await
            .into();
    }
    let (framing, body) = match request_body(request, payload, declared, server).await {
        Ok(body) => body,
        Err(refused) => return refused.into(),
    };
    let Admission { instances, permit, slot } = match backend.admit() {
        Ok(admission) => admission,
        Err(error) => return proxy_error(status_for(error), error, backend.name()).into(),
    };
    let target = target_path(
        &proxy.config.prefix,
        proxy.config.rewrite.as_deref(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
    );
    let header_lines =
        headers::outgoing_header_lines(req, request.client, request.per_request, request.identity);
    let outgoing = Outgoing {
        method: req.method().as_str(),
        target: &target,
        header_lines: &header_lines,
        body: framing,
    };
    // A body is streamed once, so only a bodiless idempotent request can be
    // repeated (on another instance, or on a new connection when a pooled
    // one turns out to be closed).
    let idempotent = matches!(outgoing.method, "GET" | "HEAD" | "OPTIONS");
    let repeatable = idempotent && body.is_none();
    let limits = Limits { timeout: backend.config().timeout };
    let mut attempts = ProxiedAttempts { outgoing: &outgoing, body, limits, repeatable };
    // The first attempt starts when the request arrived (one clock read
    // less per request); a retry reads the clock again.
    let called = backend.call(&instances, permit, &mut attempts, request.arrived).await;
    let Called { output: incoming, permit, started } = match called {
        Ok(attempted) => attempted,
        Err(error) => {
            return client_fault(error)
                .unwrap_or_else(|error| proxy_error(status_for(error), error, backend.name()))
                .into()
        }
    };
    let head_elapsed = incoming.answered_at.saturating_duration_since(started.into_std());
    let streams = matches!(incoming.body, IncomingBody::Stream(..));
    let held = if streams {
        permit.map(|permit| backend.hold(permit))
    } else {
        settle_now(backend, permit, incoming.status, head_elapsed);
        None
    };
    let access = (streams && crate::telemetry::access::enabled()).then(|| DeferredAccess {
        request_id: request.request_id.clone(),
        trace_id: request.trace.trace_id().into(),
        method: req.method().clone(),
        path: req.uri().path().into(),
        route: Arc::from(proxy.config.prefix.as_str()),
        arrived: request.arrived,
        consumer: request.consumer.clone(),
    });
    let logs_itself = access.is_some();
    let call = OpenCall {
        permit: held,
        backend: backend.clone(),
        slot,
        started: started.into_std(),
        head_elapsed,
        access,
    };
    let head_request = *req.method() == Method::HEAD;
    Proxied { response: relay::relay(incoming, head_request, call), logs_itself }
}

/// How the request body is framed towards the service, and the body with
/// its first bytes read: before admission, so a slow upload holds no slot
/// while it trickles in.
async fn request_body(
    request: &ProxyRequest<'_>,
    payload: ClientPayload,
    declared: Option<u64>,
    server: &ServerConfig,
) -> Result<(Framing, Option<RequestBody<ClientPayload>>), HttpResponse> {
    // A body of no declared length (HTTP/2 allows one) is relayed chunked.
    let chunked =
        request.client.transfer_encoding || payload.undeclared_h2_body(request.req, declared);
    let framing = match (chunked, declared) {
        (true, _) => Framing::Chunked,
        (false, Some(n)) if n > 0 => Framing::Length(n),
        _ => return Ok((Framing::None, None)),
    };
    let limits = BodyLimits {
        declared: declared.filter(|_| !chunked),
        max_body: server.max_body,
        idle: server.client_timeout,
        deadline: request.arrived + server.body_timeout,
    };
    let mut body = RequestBody::new(payload, limits);
    match body.prefetch(ADMISSION_PREFIX).await {
        Ok(()) => Ok((framing, Some(body))),
        Err(error) => Err(client_fault(error).unwrap_or_else(|_| unreachable_upstream())),
    }
}

/// A client fault is all `RequestBody` reports; an upstream error cannot
/// come from it.
fn unreachable_upstream() -> HttpResponse {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
}

/// An answer whose body has arrived whole: its attempt is settled at once.
fn settle_now(
    backend: &Backend,
    permit: Option<BreakerPermit<'_>>,
    status: u16,
    elapsed: std::time::Duration,
) {
    if let Some(permit) = permit {
        backend.record(permit, Outcome::Answered(status), elapsed);
    }
}

/// A proxied request, attempt by attempt: the answer of an attempt is
/// handed back unsettled (its body still streams: its end decides what the
/// breaker hears), except a 5xx to a request that could be repeated, which
/// is a fault worth another instance.
struct ProxiedAttempts<'a> {
    outgoing: &'a Outgoing<'a>,
    /// Streamed once: only a bodiless request is repeatable.
    body: Option<RequestBody<ClientPayload>>,
    limits: Limits,
    repeatable: bool,
}

impl Attempts for ProxiedAttempts<'_> {
    type Output = Incoming;
    type Error = ForwardError;

    fn repeatable(&self) -> bool {
        self.repeatable
    }

    fn attempt<'s>(
        &'s mut self,
        address: &'s str,
        started: Instant,
    ) -> impl std::future::Future<Output = Result<Incoming, ForwardError>> + 's {
        let body = self.body.take();
        client::forward::forward(
            address,
            self.outgoing,
            body,
            self.limits,
            self.repeatable,
            started,
        )
    }

    fn judge(
        &self,
        result: Result<Incoming, ForwardError>,
        started: Instant,
    ) -> Judged<Incoming, ForwardError> {
        match result {
            Ok(incoming) if !(500..600).contains(&incoming.status) || !self.repeatable => {
                Judged::Unsettled(incoming)
            }
            Ok(incoming) => Judged::Fault {
                outcome: Outcome::Answered(incoming.status),
                elapsed: incoming.answered_at.saturating_duration_since(started.into_std()),
                retryable: true,
                last: Ok(incoming),
            },
            Err(ForwardError::Upstream(fetch)) => Judged::Fault {
                outcome: Outcome::Failed(fetch),
                elapsed: started.elapsed(),
                retryable: fetch.is_retryable(),
                last: Err(ForwardError::Upstream(fetch)),
            },
            // The client's fault, not the backend's: record nothing.
            Err(client_error) => Judged::NotTheBackends(client_error),
        }
    }
}
