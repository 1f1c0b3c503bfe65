//! The request coordinator: asks every section's backend at once and
//! collects the replies until the route's deadline.
//!
//! Each section is its own future, bounded twice: its attempts never run past
//! the deadline (see `Backend::attempt`), and the coordinator cuts any section
//! still pending at the deadline and serves its fallback. So the page is ready
//! by the deadline whatever a backend does (hangs, drips, resets).

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use futures_util::future::join_all;
use tokio::time::Instant;

use crate::backend::{CallSpec, FetchError, Network, Transport};
use crate::page::{self, Page, SectionReply, Source};
use crate::runtime::{RouteRuntime, SectionRuntime};
use crate::template::Params;

/// `X-Request-Id`, forwarded to every service.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Composes a page for a matched route. `per_request` headers (request id,
/// trace context) go to every service; the replies are returned too, for
/// the access log.
pub async fn compose(
    route: &RouteRuntime,
    params: &Params<'_>,
    request_headers: &HeaderMap,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
) -> (Page, Vec<SectionReply>) {
    compose_via(route, params, request_headers, per_request, arrived, &Network).await
}

/// [`compose`] over a given transport (see [`Transport`]).
pub async fn compose_via<T: Transport>(
    route: &RouteRuntime,
    params: &Params<'_>,
    request_headers: &HeaderMap,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
    transport: &T,
) -> (Page, Vec<SectionReply>) {
    let deadline = arrived + route.config.deadline;
    let replies =
        join_all(route.sections.iter().map(|section| {
            ask(section, params, request_headers, per_request, deadline, transport)
        }))
        .await;
    for (section, reply) in route.sections.iter().zip(&replies) {
        if let Some(i) = Source::ALL.iter().position(|s| *s == reply.source) {
            section.source_counters[i].increment(1);
        }
    }
    let page = page::assemble(&route.labels, &replies, arrived.elapsed());
    (page, replies)
}

async fn ask<T: Transport>(
    section: &SectionRuntime,
    params: &Params<'_>,
    request_headers: &HeaderMap,
    per_request: &[(HeaderName, HeaderValue)],
    deadline: Instant,
    transport: &T,
) -> SectionReply {
    let started = Instant::now();
    let path = section.template.render(params);
    let mut headers = Vec::with_capacity(per_request.len() + section.forward_headers.len());
    for name in &section.forward_headers {
        for value in request_headers.get_all(name) {
            headers.push((name.clone(), value.clone()));
        }
    }
    // The key covers the forwarded headers only: request id and trace
    // context change with every request and must not split the cache.
    let cache_key = section.backend.cache_key(&path, &headers);
    headers.extend_from_slice(per_request);
    let spec = CallSpec { path, headers, cache_key: cache_key.clone() };
    match tokio::time::timeout_at(deadline, section.backend.fetch_via(spec, deadline, transport))
        .await
    {
        Ok(reply) => reply,
        Err(_) => section.backend.fallback_for_key(
            FetchError::Deadline,
            cache_key.as_deref(),
            started.elapsed(),
        ),
    }
}
