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
use std::task::Poll;

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use futures_util::future::{maybe_done, MaybeDone};
use tokio::time::Instant;

use std::sync::Arc;

use crate::backend::cache::CachedResponse;
use crate::backend::{CacheStep, CallSpec, FetchError, Network, Transport};
use crate::edge::guard::Identity;
use crate::gateway::runtime::{RouteRuntime, SectionRuntime};
use crate::page::{self, Page, SectionReply, Tier};
use crate::template::Params;

/// Composes a page for a matched route. `per_request` headers (request id,
/// trace context) go to every service; the replies are returned too, for
/// the access log.
pub async fn compose(
    route: &RouteRuntime,
    params: &Params<'_>,
    request_headers: RequestHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
) -> (Page, Vec<SectionReply>) {
    compose_via(route, params, request_headers, per_request, arrived, &Network).await
}

/// The request headers sections may forward: the client's, with the
/// identity headers (`x-consumer`, ...) as the gate set them, when a gate
/// ran.
#[derive(Debug, Clone, Copy)]
pub struct RequestHeaders<'a> {
    /// The client's headers.
    pub client: &'a HeaderMap,
    /// The gate's identity headers, which replace the client's copies.
    pub identity: Option<&'a Identity<'a>>,
}

impl<'a> RequestHeaders<'a> {
    /// The client's headers, no gate.
    pub fn plain(client: &'a HeaderMap) -> Self {
        RequestHeaders { client, identity: None }
    }
}

/// [`compose`] over a given transport (see [`Transport`]).
pub async fn compose_via<T: Transport>(
    route: &RouteRuntime,
    params: &Params<'_>,
    request_headers: RequestHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
    arrived: Instant,
    transport: &T,
) -> (Page, Vec<SectionReply>) {
    // The specs are rendered one by one as the sections are asked: no list
    // of them on the page's path.
    let specs = route
        .sections
        .iter()
        .map(|section| call_spec(section, params, request_headers, per_request));
    let replies = collect(route, specs, arrived, transport, &NoEvents).await;
    (finish_page(route, &replies, arrived), replies)
}

/// The page of `replies`, counted when complete.
#[inline]
pub fn finish_page(route: &RouteRuntime, replies: &[SectionReply], arrived: Instant) -> Page {
    let page = page::assemble(&route.labels, replies, arrived.elapsed());
    if page.complete {
        route.responses.complete_page();
    }
    page
}

/// Told each section's final reply the moment it has it (a streamed page
/// sends it on as an event).
pub trait SectionEvents {
    /// Whether anyone listens: `false` compiles every report out (the
    /// plain page pays nothing for the stream).
    const LISTENS: bool;

    /// Section `slot` (config order) has its final reply: served from
    /// cache, answered, or cut by the deadline. Called once per section.
    fn section(&self, slot: usize, reply: &SectionReply);
}

/// No one listens: the plain JSON page.
#[derive(Debug, Clone, Copy)]
pub struct NoEvents;

impl SectionEvents for NoEvents {
    const LISTENS: bool = false;

    #[inline(always)]
    fn section(&self, _slot: usize, _reply: &SectionReply) {}
}

/// Every section's [`CallSpec`], in config order, owned: for a caller whose
/// work outlives the request's borrows (a streamed page).
pub fn call_specs(
    route: &RouteRuntime,
    params: &Params<'_>,
    request_headers: RequestHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
) -> Vec<CallSpec> {
    route
        .sections
        .iter()
        .map(|section| call_spec(section, params, request_headers, per_request))
        .collect()
}

/// Asks every section (`specs`: one per section, in config order) and
/// collects the replies until the deadline, telling `events` of each as it
/// is final; the replies in config order. Section sources are counted here;
/// the page (and its `complete` count) is the caller's.
pub async fn collect<T: Transport, E: SectionEvents>(
    route: &RouteRuntime,
    specs: impl Iterator<Item = CallSpec>,
    arrived: Instant,
    transport: &T,
    events: &E,
) -> Vec<SectionReply> {
    let deadline = arrived + route.config.deadline;
    let asked = Instant::now();
    // Sections served from fresh cache are answered here and now; only the
    // others become futures. `waiting` remembers, for each future, its slot
    // and the cache key its fallback is looked up under if the deadline
    // cuts it.
    let mut replies: Vec<Option<SectionReply>> = Vec::with_capacity(route.sections.len());
    // Sized up front: a future is large, and growing the list would copy
    // every one already in it.
    let mut waiting = Vec::with_capacity(route.sections.len());
    let mut calls = Vec::with_capacity(route.sections.len());
    // Sections that ask the shared tier first (none without `[redis]`: an
    // empty list does not allocate).
    let mut asks = Vec::new();
    for (section, spec) in route.sections.iter().zip(specs) {
        match section.backend.consult_cache(&spec, asked) {
            CacheStep::Served(reply) => {
                if E::LISTENS {
                    events.section(replies.len(), &reply);
                }
                replies.push(Some(reply));
            }
            CacheStep::Call { stale } => {
                waiting.push((replies.len(), section, spec.cache_key.clone()));
                calls.push(Box::pin(
                    section.backend.fetch_uncached(spec, stale, asked, deadline, transport),
                ));
                replies.push(None);
            }
            CacheStep::AskShared { stale } => {
                asks.push(SharedAsk { slot: replies.len(), section, spec, stale });
                replies.push(None);
            }
        }
    }
    let answered = |i: usize, reply: &SectionReply| {
        if E::LISTENS {
            if let Some((slot, _, _)) = waiting.get(i) {
                events.section(*slot, reply);
            }
        }
    };
    let answers = if asks.is_empty() {
        join_until_each(calls.into_iter(), deadline, answered).await
    } else {
        // The shared tier's round trip delays only the sections that wait
        // for it; the others are called meanwhile.
        let (answers, shared) = futures_util::future::join(
            join_until_each(calls.into_iter(), deadline, answered),
            shared_sections(asks, asked, deadline, transport, events),
        )
        .await;
        for (slot, reply) in shared {
            replies[slot] = Some(reply);
        }
        answers
    };
    for ((slot, section, key), answer) in waiting.into_iter().zip(answers) {
        replies[slot] = Some(answer.unwrap_or_else(|| {
            let reply = section.backend.fallback_for_key(
                FetchError::Deadline,
                key.as_deref(),
                None,
                asked.elapsed(),
            );
            if E::LISTENS {
                events.section(slot, &reply);
            }
            reply
        }));
    }
    // Every slot is filled: served from cache, answered, or cut.
    let replies: Vec<SectionReply> = replies.into_iter().flatten().collect();
    for (section, reply) in route.sections.iter().zip(&replies) {
        section.sources.record(reply.source);
    }
    replies
}

/// A section whose backend looks in the shared tier before it calls.
struct SharedAsk<'r> {
    slot: usize,
    section: &'r SectionRuntime,
    spec: CallSpec,
    /// Its local stale entry, if any.
    stale: Option<Arc<CachedResponse>>,
}

/// The sections that ask the shared tier: one `MGET` for all of them (one
/// round trip per page, not per section), then the calls of those it could
/// not answer fresh, each cut at the deadline like any other. The replies
/// with their slots.
async fn shared_sections<T: Transport, E: SectionEvents>(
    asks: Vec<SharedAsk<'_>>,
    asked: Instant,
    deadline: Instant,
    transport: &T,
    events: &E,
) -> Vec<(usize, SectionReply)> {
    // Every backend of one runtime has the same tier (`Runtime::build`); a
    // section whose tier were another's would skip the lookup, not ask the
    // wrong Redis.
    let tier = asks.iter().find_map(|a| a.section.backend.shared()).map(|s| s.tier().clone());
    let keys: Vec<Option<Vec<u8>>> = asks
        .iter()
        .map(|ask| match (ask.section.backend.shared(), &ask.spec.cache_key, &tier) {
            (Some(slot), Some(key), Some(tier)) if Arc::ptr_eq(slot.tier(), tier) => {
                Some(slot.key(key))
            }
            _ => None,
        })
        .collect();
    let wanted: Vec<&[u8]> = keys.iter().flatten().map(Vec::as_slice).collect();
    let mut found = match &tier {
        Some(tier) => tier.get_many(&wanted, deadline).await.into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut out = Vec::with_capacity(asks.len());
    let mut waiting = Vec::with_capacity(asks.len());
    let mut calls = Vec::with_capacity(asks.len());
    for (ask, key) in asks.into_iter().zip(&keys) {
        let value = if key.is_some() { found.next().flatten() } else { None };
        let backend = &ask.section.backend;
        let step = match &ask.spec.cache_key {
            Some(local_key) => backend.adopt_shared(local_key, value, ask.stale, asked),
            None => CacheStep::Call { stale: ask.stale },
        };
        match step {
            CacheStep::Served(reply) => {
                if E::LISTENS {
                    events.section(ask.slot, &reply);
                }
                out.push((ask.slot, reply));
            }
            CacheStep::Call { stale } | CacheStep::AskShared { stale } => {
                let shared_stale = stale.clone().filter(|entry| entry.tier == Tier::Shared);
                waiting.push((ask.slot, ask.section, ask.spec.cache_key.clone(), shared_stale));
                calls.push(Box::pin(
                    backend.fetch_uncached(ask.spec, stale, asked, deadline, transport),
                ));
            }
        }
    }
    let answered = |i: usize, reply: &SectionReply| {
        if E::LISTENS {
            if let Some((slot, ..)) = waiting.get(i) {
                events.section(*slot, reply);
            }
        }
    };
    let answers = join_until_each(calls.into_iter(), deadline, answered).await;
    for ((slot, section, key, shared_stale), answer) in waiting.into_iter().zip(answers) {
        let reply = answer.unwrap_or_else(|| {
            let reply = section.backend.fallback_for_key(
                FetchError::Deadline,
                key.as_deref(),
                shared_stale,
                asked.elapsed(),
            );
            if E::LISTENS {
                events.section(slot, &reply);
            }
            reply
        });
        out.push((slot, reply));
    }
    out
}

/// What a section asks its backend: the rendered path, the forwarded and
/// per-request headers, and the cache key.
fn call_spec(
    section: &SectionRuntime,
    params: &Params<'_>,
    request_headers: RequestHeaders<'_>,
    per_request: &[(HeaderName, HeaderValue)],
) -> CallSpec {
    let path = section.template.render(params);
    let mut headers = Vec::with_capacity(per_request.len() + section.forward_headers.len());
    for name in &section.forward_headers {
        match request_headers.identity {
            // An identity header comes from the gate, never from the
            // client: it is in the cache key with mosaic's value.
            Some(identity) if identity.is_reserved(name) => {
                for value in identity.values(name) {
                    headers.push((name.clone(), value.clone()));
                }
            }
            _ => {
                for value in request_headers.client.get_all(name) {
                    headers.push((name.clone(), value.clone()));
                }
            }
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
/// that completes in the same poll as the deadline fires still counts. The
/// futures come `Unpin` (a section call is boxed where it is made: the crate
/// has no `unsafe` to pin them in one slice, and boxing at the call site
/// moves each large future once, not into a list and then into its box);
/// that is cheaper than the per-section timers it replaces.
pub async fn join_until<F: Future + Unpin>(
    futures: impl Iterator<Item = F>,
    deadline: Instant,
) -> Vec<Option<F::Output>> {
    join_until_each(futures, deadline, |_, _| {}).await
}

/// [`join_until`], calling `done(index, output)` the moment each future
/// completes (for a streamed page, which sends each section as it is
/// ready); a future the deadline cuts is not reported.
pub async fn join_until_each<F: Future + Unpin>(
    futures: impl Iterator<Item = F>,
    deadline: Instant,
    mut done: impl FnMut(usize, &F::Output),
) -> Vec<Option<F::Output>> {
    let mut running: Vec<MaybeDone<F>> = futures.map(maybe_done).collect();
    let expiry = tokio::time::sleep_until(deadline);
    tokio::pin!(expiry);
    poll_fn(|cx| {
        let mut all_done = true;
        for (i, future) in running.iter_mut().enumerate() {
            let was_running = matches!(future, MaybeDone::Future(_));
            let ready = Pin::new(&mut *future).poll(cx).is_ready();
            if was_running && ready {
                if let Some(output) = Pin::new(&mut *future).output_mut() {
                    done(i, output);
                }
            }
            all_done &= ready;
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

    use super::{join_until, join_until_each};
    use tokio::time::{sleep, Instant};

    /// Futures that sleep `delays` (ms) and return them, joined until
    /// `deadline` (ms): the outputs and the time it took.
    async fn sleepers(delays: &[u64], deadline: u64) -> (Vec<Option<u64>>, Duration) {
        let started = Instant::now();
        let outputs = join_until(
            delays.iter().map(|&ms| {
                Box::pin(async move {
                    sleep(Duration::from_millis(ms)).await;
                    ms
                })
            }),
            started + Duration::from_millis(deadline),
        )
        .await;
        (outputs, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn all_done_before_the_deadline_returns_at_once_in_order() {
        let (outputs, took) = sleepers(&[30, 10, 20], 5_000).await;
        assert_eq!(outputs, vec![Some(30), Some(10), Some(20)]);
        // It waited for the slowest, not for the deadline.
        assert_eq!(took, Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_cuts_only_what_is_still_pending() {
        let (outputs, took) = sleepers(&[10, 500, 40], 100).await;
        assert_eq!(outputs, vec![Some(10), None, Some(40)]);
        assert_eq!(took, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn each_future_is_reported_as_it_completes_and_a_cut_one_never() {
        let started = Instant::now();
        let mut reported = Vec::new();
        let outputs = join_until_each(
            [30u64, 10, 500, 20].into_iter().map(|ms| {
                Box::pin(async move {
                    sleep(Duration::from_millis(ms)).await;
                    ms
                })
            }),
            started + Duration::from_millis(100),
            |i, &ms| reported.push((i, ms, started.elapsed())),
        )
        .await;
        assert_eq!(outputs, vec![Some(30), Some(10), None, Some(20)]);
        let at = |ms| Duration::from_millis(ms);
        assert_eq!(reported, vec![(1, 10, at(10)), (3, 20, at(20)), (0, 30, at(30))]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_ready_when_the_deadline_fires_still_counts() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        let outputs =
            join_until([Box::pin(sleep(Duration::from_millis(50)))].into_iter(), deadline).await;
        assert_eq!(outputs, vec![Some(())]);
    }
}
