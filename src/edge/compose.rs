//! The handler of composed routes: method check, parameter safety, then the
//! coordinator, then the page as an HTTP response (or, asked with `Accept:
//! text/event-stream`, as a stream of events: [`super::stream`]).

use std::fmt::Write as _;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use tokio::time::Instant;

use super::guard::Identity;
use super::proxy::relay::DeferredAccess;
use super::stream::{self, wants_event_stream, Opened};
use super::{error_response, X_MOSAIC_COMPLETE};
use crate::coordinator::{self, RequestHeaders};
use crate::gateway::runtime::{RouteRuntime, Runtime};
use crate::page::SectionReply;
use crate::telemetry::access;
use crate::template::RawParams;

/// What the access log says about a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLog {
    /// Every section live or fresh from cache.
    pub complete: bool,
    /// `name:source:error` for each section that was not, comma-separated.
    pub degraded: String,
}

impl PageLog {
    /// The access log's view of a page's replies.
    pub fn of(route: &RouteRuntime, replies: &[SectionReply], complete: bool) -> PageLog {
        let mut degraded = String::new();
        for (section, reply) in route.sections.iter().zip(replies) {
            if reply.is_complete() {
                continue;
            }
            if !degraded.is_empty() {
                degraded.push(',');
            }
            let error = reply.error.map_or("-", |e| e.as_str());
            let _ = write!(degraded, "{}:{}:{}", section.name, reply.source.as_str(), error);
        }
        PageLog { complete, degraded }
    }
}

/// Who asked, for a streamed page: its body outlives the handler, so it
/// keeps the runtime it composes from and writes its own access line.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The runtime the route was matched in.
    pub runtime: &'a Arc<Runtime>,
    /// `X-Request-Id`.
    pub request_id: &'a HeaderValue,
    /// W3C trace id.
    pub trace_id: &'a str,
    /// The consumer, when the route asked for a key.
    pub consumer: Option<&'a Arc<str>>,
}

/// A page's answer.
pub struct Served {
    /// The response: the JSON page, a refusal, or an event stream.
    pub response: HttpResponse,
    /// What the access line says about the page (JSON pages, when the log
    /// is on).
    pub log: Option<PageLog>,
    /// The body writes the access line when it ends (an event stream).
    pub logs_itself: bool,
}

/// Serves a request matched to a composed route.
pub async fn serve(
    req: &HttpRequest,
    route: &RouteRuntime,
    raw: RawParams<'_>,
    identity: Option<&Identity<'_>>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
    caller: Caller<'_>,
) -> Served {
    match serve_page(req, route, raw, identity, per_request, arrived, caller).await {
        Ok(served) => served,
        Err(refused) => Served { response: refused, log: None, logs_itself: false },
    }
}

async fn serve_page(
    req: &HttpRequest,
    route: &RouteRuntime,
    raw: RawParams<'_>,
    identity: Option<&Identity<'_>>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
    caller: Caller<'_>,
) -> Result<Served, HttpResponse> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response =
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Err(response);
    }
    let params = match raw.decode() {
        Ok(params) => params,
        Err(e) => {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                Some(&e.to_string()),
            ))
        }
    };
    let request_headers = RequestHeaders { client: req.headers(), identity };
    // A stream for a GET that asks for one; HEAD keeps the page's head.
    let streams =
        route.config.stream && req.method() == Method::GET && wants_event_stream(req.headers());
    let (page, replies) = if streams {
        let specs = coordinator::call_specs(route, &params, request_headers, per_request);
        let logs = access::enabled();
        let line = logs.then(|| DeferredAccess {
            request_id: caller.request_id.clone(),
            trace_id: caller.trace_id.into(),
            method: req.method().clone(),
            path: req.uri().path().into(),
            route: Arc::from(route.config.path.as_str()),
            arrived,
            consumer: caller.consumer.cloned(),
        });
        match stream::open(caller.runtime, route, specs, arrived, line).await {
            Opened::Stream(response) => {
                return Ok(Served { response, log: None, logs_itself: logs });
            }
            // A required section failed: the ordinary page.
            Opened::Page(page, replies) => (page, replies),
        }
    } else {
        coordinator::compose(route, &params, request_headers, per_request, arrived).await
    };
    route.responses.duration.record(arrived.elapsed());
    // Built only when the access log will be written.
    let log = access::enabled().then(|| PageLog::of(route, &replies, page.complete));
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::BAD_GATEWAY);
    // No `Vary: Accept` here although the same URL streams to `Accept:
    // text/event-stream`: the header costs the page ~400 instructions
    // (0.25 %, BENCHMARKS.md) and guards nothing in practice. A page carries
    // no freshness, and a cache that stored pages anyway would already mix
    // users' sections; the stream is `no-store`, so no cache hands a stream
    // to a JSON client.
    let response = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((
            X_MOSAIC_COMPLETE.clone(),
            HeaderValue::from_static(if page.complete { "true" } else { "false" }),
        ))
        .body(page.body);
    Ok(Served { response, log, logs_itself: false })
}
