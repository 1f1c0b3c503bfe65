//! The handler of composed routes: method check, parameter safety, then the
//! coordinator, then the page as an HTTP response.

use std::fmt::Write as _;

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use tokio::time::Instant;

use super::guard::Identity;
use super::{error_response, X_MOSAIC_COMPLETE};
use crate::coordinator::{self, RequestHeaders};
use crate::gateway::runtime::RouteRuntime;
use crate::template::RawParams;

/// What the access log says about a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLog {
    /// Every section live or fresh from cache.
    pub complete: bool,
    /// `name:source:error` for each section that was not, comma-separated.
    pub degraded: String,
}

/// Serves a request matched to a composed route.
pub async fn serve(
    req: &HttpRequest,
    route: &RouteRuntime,
    raw: RawParams<'_>,
    identity: Option<&Identity<'_>>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
) -> (HttpResponse, Option<PageLog>) {
    match serve_page(req, route, raw, identity, per_request, arrived).await {
        Ok(served) => served,
        Err(refused) => (refused, None),
    }
}

async fn serve_page(
    req: &HttpRequest,
    route: &RouteRuntime,
    raw: RawParams<'_>,
    identity: Option<&Identity<'_>>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
) -> Result<(HttpResponse, Option<PageLog>), HttpResponse> {
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
    let (page, replies) = coordinator::compose(
        route,
        &params,
        RequestHeaders { client: req.headers(), identity },
        per_request,
        arrived,
    )
    .await;
    route.responses.duration.record(arrived.elapsed());
    // Built only when the access log will be written.
    let log = crate::telemetry::access::enabled().then(|| {
        let mut degraded = String::new();
        for (section, reply) in route.sections.iter().zip(&replies) {
            if reply.is_complete() {
                continue;
            }
            if !degraded.is_empty() {
                degraded.push(',');
            }
            let error = reply.error.map_or("-", |e| e.as_str());
            let _ = write!(degraded, "{}:{}:{}", section.name, reply.source.as_str(), error);
        }
        PageLog { complete: page.complete, degraded }
    });
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let response = HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((
            X_MOSAIC_COMPLETE.clone(),
            HeaderValue::from_static(if page.complete { "true" } else { "false" }),
        ))
        .body(page.body);
    Ok((response, log))
}
