//! `GET /admin/events`: the dashboard's server-sent event stream, one
//! `snapshot` event a second (and one at once on connect).
//!
//! One sampler task per admin listener computes each snapshot once,
//! whatever the number of streams, and hands it to them through a `watch`
//! channel: a slow reader only ever misses frames, nothing queues up for
//! it. The sampler runs while someone watches (and a minute after, so a
//! reloaded page finds its charts full), then stops. Streams are capped at
//! [`MAX_STREAMS`]; the next one is refused with 503.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::sync::watch;

use super::snapshot::{BackendNow, History, RouteShape, SectionShape};
use crate::backend::Backend;
use crate::gateway::runtime::Runtime;
use crate::gateway::Gateway;

/// Concurrent event streams allowed; each costs a connection on the admin
/// listener's one worker.
pub const MAX_STREAMS: usize = 16;

/// How often a snapshot is sent.
pub const EVERY: Duration = Duration::from_secs(1);

/// Ticks the sampler goes on with nobody watching before it stops.
const LINGER_TICKS: u32 = 60;

/// The admin listener's event streams: the latest frame, the sampler's
/// state and the count of open streams.
#[derive(Debug)]
pub struct EventsHub {
    /// The latest `event: snapshot` frame; `None` while the sampler is stopped.
    frames: watch::Sender<Option<Bytes>>,
    /// Whether a sampler task is running.
    sampling: AtomicBool,
    /// Streams open now.
    open: AtomicUsize,
}

/// A stream's place under [`MAX_STREAMS`], given back when the stream is
/// dropped (the client went away or the listener stopped).
#[derive(Debug)]
struct StreamSlot(Arc<EventsHub>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for EventsHub {
    fn default() -> Self {
        Self {
            frames: watch::Sender::new(None),
            sampling: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        }
    }
}

impl EventsHub {
    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn try_open(self: &Arc<Self>) -> Option<StreamSlot> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| StreamSlot(self.clone()))
    }

    /// Answers `GET /admin/events` (the caller checked the token): a
    /// stream of snapshot frames, or 503 when [`MAX_STREAMS`] are open.
    pub fn connect(self: &Arc<Self>, gateway: &Arc<Gateway>) -> HttpResponse {
        let Some(slot) = self.try_open() else {
            return HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, "5"))
                .json(serde_json::json!({
                    "error": format!("too many event streams (at most {MAX_STREAMS})")
                }));
        };
        // Subscribe before starting the sampler, so it sees a watcher.
        let frames = self.frames.subscribe();
        if !self.sampling.swap(true, Ordering::AcqRel) {
            actix_rt::spawn(sample(self.clone(), gateway.clone()));
        }
        let stream = futures_util::stream::unfold(
            (frames, slot, true),
            |(mut frames, slot, first)| async move {
                // The frame already there goes out at once; then each new one.
                if !first || frames.borrow_and_update().is_none() {
                    loop {
                        frames.changed().await.ok()?;
                        if frames.borrow_and_update().is_some() {
                            break;
                        }
                    }
                }
                let frame = frames.borrow().clone()?;
                Some((Ok::<_, std::convert::Infallible>(frame), (frames, slot, false)))
            },
        );
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, "text/event-stream"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .streaming(stream)
    }
}

/// Hands `sampling` back if the sampler panics, so the next stream starts
/// a new one instead of waiting for frames that never come.
struct SamplerGuard(Arc<EventsHub>);

impl Drop for SamplerGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.frames.send_replace(None);
            self.0.sampling.store(false, Ordering::Release);
        }
    }
}

/// The sampler: a reading a second, sent to every stream as one frame.
async fn sample(hub: Arc<EventsHub>, gateway: Arc<Gateway>) {
    let _guard = SamplerGuard(hub.clone());
    let mut history = History::default();
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle = 0;
    loop {
        every.tick().await;
        idle = if hub.frames.receiver_count() == 0 { idle + 1 } else { 0 };
        if idle > LINGER_TICKS {
            hub.frames.send_replace(None);
            hub.sampling.store(false, Ordering::Release);
            // A stream that subscribed after the count above, while this
            // task still held `sampling`, started no sampler: go on for it.
            if hub.frames.receiver_count() == 0 || hub.sampling.swap(true, Ordering::AcqRel) {
                return;
            }
            idle = 0;
        }
        let frame = frame(&mut history, &gateway.runtime(), Instant::now());
        hub.frames.send_replace(Some(frame));
    }
}

/// One reading of `runtime` taken into `history`, as an SSE frame.
pub fn frame(history: &mut History, runtime: &Runtime, at: Instant) -> Bytes {
    let now: Vec<BackendNow> = runtime.backends.values().map(|h| now(&h.backend)).collect();
    let routes: Vec<RouteShape> = runtime
        .routes
        .iter()
        .map(|route| RouteShape {
            route: &route.config.path,
            responses: &route.responses,
            sections: route
                .sections
                .iter()
                .map(|s| SectionShape {
                    name: &s.name,
                    backend: s.backend.name(),
                    sources: &s.sources,
                })
                .collect(),
        })
        .collect();
    encode(&history.record(at, &now, &routes))
}

/// What a backend shows now, from the same reads as `/admin/backends`.
fn now(backend: &Backend) -> BackendNow<'_> {
    let status = backend.status();
    BackendNow {
        name: status.name,
        breaker: status.breaker,
        forced: backend.forced_breaker().as_str(),
        instances: status.instances,
        in_flight: status.in_flight,
        cached: backend.has_cache(),
        successes: status.successes,
        failures: status.failures,
        rejections: status.rejections,
        series: backend.series(),
    }
}

/// `event: snapshot\ndata: JSON\n\n` (JSON has no raw newline, so one
/// `data:` line is the whole event).
pub fn encode(snapshot: &super::snapshot::Snapshot) -> Bytes {
    let mut out = b"event: snapshot\ndata: ".to_vec();
    if serde_json::to_writer(&mut out, snapshot).is_err() {
        // Plain structs of strings and numbers: cannot fail; an empty
        // object keeps the stream well-formed if it ever did.
        out.truncate(b"event: snapshot\ndata: ".len());
        out.extend_from_slice(b"{}");
    }
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}
