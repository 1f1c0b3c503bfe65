//! The handler of composed routes: method check, parameter safety, then the
//! coordinator, then the page as an HTTP response.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use tokio::time::Instant;

use super::{error_response, X_MOSAIC_COMPLETE};
use crate::coordinator;
use crate::runtime::RouteRuntime;
use crate::template::RawParams;

/// Serves a request matched to a composed route.
pub async fn serve(
    req: &HttpRequest,
    route: &RouteRuntime,
    raw: RawParams<'_>,
    request_id: &HeaderValue,
    arrived: Instant,
) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response =
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let params = match raw.decode() {
        Ok(params) => params,
        Err(e) => {
            return error_response(StatusCode::BAD_REQUEST, "bad_request", Some(&e.to_string()))
        }
    };
    let page = coordinator::compose(route, &params, req.headers(), request_id, arrived).await;
    route.duration.record(arrived.elapsed().as_secs_f64());
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::BAD_GATEWAY);
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .insert_header((
            X_MOSAIC_COMPLETE.clone(),
            HeaderValue::from_static(if page.complete { "true" } else { "false" }),
        ))
        .body(page.body)
}
