//! The request coordinator: asks every section's backend at once and
//! collects the replies until the route's deadline.
//!
//! Each section is bounded twice: its attempts never run past the deadline
//! (see `Backend::attempt`), and the coordinator cuts any section still
//! pending at the deadline and serves its fallback. So the page is ready by
//! the deadline whatever a backend does (hangs, drips, resets). The cut is
//! one timer for the whole page ([`join_until`]), not one per section: every
//! tokio timer is a lock on the time driver to register and another to
//! clear, on every page.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use futures_util::future::{maybe_done, MaybeDone};
use tokio::time::Instant;

use crate::backend::{CacheStep, CallSpec, FetchError, Network, Transport};
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
    let specs: Vec<CallSpec> = route
        .sections
        .iter()
        .map(|section| call_spec(section, params, request_headers, per_request))
        .collect();
    // Kept for the sections the deadline cuts: their fallback may be a
    // stale cache entry under this key.
    let keys: Vec<Option<Arc<str>>> = specs.iter().map(|spec| spec.cache_key.clone()).collect();
    let asked = Instant::now();
    // Sections served from fresh cache are answered here and now; only the
    // others become futures.
    let mut replies: Vec<Option<SectionReply>> = Vec::with_capacity(specs.len());
    let mut calls = Vec::new();
    for (section, spec) in route.sections.iter().zip(specs) {
        match section.backend.consult_cache(&spec, asked) {
            CacheStep::Served(reply) => replies.push(Some(reply)),
            CacheStep::Call { stale } => {
                calls.push((replies.len(), section, spec, stale));
                replies.push(None);
            }
        }
    }
    let slots: Vec<usize> = calls.iter().map(|(slot, ..)| *slot).collect();
    let answers = join_until(
        calls.into_iter().map(|(_, section, spec, stale)| {
            section.backend.fetch_uncached(spec, stale, asked, deadline, transport)
        }),
        deadline,
    )
    .await;
    for (slot, answer) in slots.into_iter().zip(answers) {
        replies[slot] = answer;
    }
    let replies: Vec<SectionReply> = replies
        .into_iter()
        .zip(route.sections.iter().zip(keys))
        .map(|(reply, (section, key))| match reply {
            Some(reply) => reply,
            None => section.backend.fallback_for_key(
                FetchError::Deadline,
                key.as_deref(),
                asked.elapsed(),
            ),
        })
        .collect();
    for (section, reply) in route.sections.iter().zip(&replies) {
        if let Some(i) = Source::ALL.iter().position(|s| *s == reply.source) {
            section.source_counters[i].increment(1);
        }
    }
    let page = page::assemble(&route.labels, &replies, arrived.elapsed());
    (page, replies)
}

/// What a section asks its backend: the rendered path, the forwarded and
/// per-request headers, and the cache key.
fn call_spec(
    section: &SectionRuntime,
    params: &Params<'_>,
    request_headers: &HeaderMap,
    per_request: &[(HeaderName, HeaderValue)],
) -> CallSpec {
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
    CallSpec { path, headers, cache_key }
}

/// Runs `futures` together until all are done or `deadline` passes; the
/// outputs in order, `None` for each future the deadline cut (dropped).
///
/// Like `join_all`, every future is polled when any is woken, and a future
/// that completes in the same poll as the deadline fires still counts. Each
/// future is boxed on its own (the crate has no `unsafe` to pin them in one
/// slice); that is cheaper than the per-section timers it replaces.
pub async fn join_until<F: Future>(
    futures: impl Iterator<Item = F>,
    deadline: Instant,
) -> Vec<Option<F::Output>> {
    let mut running: Vec<MaybeDone<Pin<Box<F>>>> =
        futures.map(|future| maybe_done(Box::pin(future))).collect();
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    poll_fn(|cx| {
        let mut all_done = true;
        for future in running.iter_mut() {
            all_done &= Pin::new(future).poll(cx).is_ready();
        }
        if all_done || expiry.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    running.iter_mut().map(|future| Pin::new(future).take_output()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::join_until;
    use tokio::time::{sleep, Instant};

    #[tokio::test(start_paused = true)]
    async fn all_done_before_the_deadline_returns_at_once_in_order() {
        let started = Instant::now();
        let delays = [30u64, 10, 20];
        let outputs = join_until(
            delays.iter().map(|&ms| async move {
                sleep(Duration::from_millis(ms)).await;
                ms
            }),
            started + Duration::from_secs(5),
        )
        .await;
        assert_eq!(outputs, vec![Some(30), Some(10), Some(20)]);
        // It waited for the slowest, not for the deadline.
        assert_eq!(started.elapsed(), Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_only_what_is_still_pending() {
        let started = Instant::now();
        let delays = [10u64, 500, 40];
        let outputs = join_until(
            delays.iter().map(|&ms| async move {
                sleep(Duration::from_millis(ms)).await;
                ms
            }),
            started + Duration::from_millis(100),
        )
        .await;
        assert_eq!(outputs, vec![Some(10), None, Some(40)]);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_ready_when_the_deadline_fires_still_counts() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        let outputs = join_until([sleep(Duration::from_millis(50))].into_iter(), deadline).await;
        assert_eq!(outputs, vec![Some(())]);
    }
}
