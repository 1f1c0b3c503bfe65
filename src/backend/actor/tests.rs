//! The actor runs its discovery watch, applies what it reports, and
//! survives a panicking watch or handler by restarting the watch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;

use super::*;
use crate::backend::Backend;
use crate::config::{BackendConfig, InstanceSource};

fn consul_backend() -> (Arc<Backend>, BackendControl) {
    let source = InstanceSource::Consul { service: "reviews".into(), tag: None };
    Backend::new(
        Arc::new(BackendConfig::for_tests("reviews", source)),
        1 << 20,
        None,
        None,
        None,
        Default::default(),
    )
}

/// A scripted watch: generation `g` panics on its first step when `panics`
/// says so, else reports `127.0.0.1:{g}` and then the scripted events.
struct Scripted {
    generation: usize,
    panics: bool,
    events: Vec<Event>,
}

impl Watch for Scripted {
    fn next(&mut self) -> LocalBoxFuture<'_, Event> {
        Box::pin(async move {
            if self.panics {
                panic!("watch generation {} fails", self.generation);
            }
            if self.events.is_empty() {
                // Nothing more to say: hold like a blocking query.
                futures_util::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.events.remove(0)
        })
    }
}

fn healthy(addresses: &[&str]) -> Event {
    Event::Healthy { instances: addresses.iter().map(|a| a.to_string()).collect(), index: 1 }
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// Events are applied in order: instance swaps, a failure that keeps the
/// list and degrades the state, a recovery.
#[actix_rt::test]
async fn watch_events_are_applied_by_the_actor() {
    let (backend, control) = consul_backend();
    let script = vec![
        healthy(&["127.0.0.1:1"]),
        healthy(&["127.0.0.1:1", "127.0.0.1:2"]),
        Event::Failed { error: "consul unreachable".into(), index: 1 },
    ];
    let factory: WatchFactory = Arc::new(move || {
        Box::new(Scripted { generation: 0, panics: false, events: script.clone() })
    });
    let restarts = Arc::new(AtomicU64::new(0));
    let _addr = BackendActor::start_watched(
        control,
        restarts.clone(),
        &actix::Arbiter::current(),
        Some(factory),
    );
    assert!(eventually(|| backend.status().discovery.state == WatchState::Degraded).await);
    assert_eq!(backend.addresses(), ["127.0.0.1:1", "127.0.0.1:2"], "last known set kept");
    assert_eq!(restarts.load(Ordering::Relaxed), 0);
}

/// A panic inside the watch stops the actor; the supervisor restarts it,
/// `started` runs again and a fresh watch follows the source.
#[actix_rt::test]
async fn a_panicking_watch_restarts_the_actor_and_the_watch() {
    let (backend, control) = consul_backend();
    let generations = Arc::new(AtomicUsize::new(0));
    let counter = generations.clone();
    let factory: WatchFactory = Arc::new(move || {
        let generation = counter.fetch_add(1, Ordering::SeqCst);
        Box::new(Scripted {
            generation,
            panics: generation == 0,
            events: vec![healthy(&[&format!("127.0.0.1:{}", generation + 1)])],
        })
    });
    let restarts = Arc::new(AtomicU64::new(0));
    let addr = BackendActor::start_watched(
        control,
        restarts.clone(),
        &actix::Arbiter::current(),
        Some(factory),
    );
    assert!(eventually(|| backend.addresses() == ["127.0.0.1:2"]).await, "second watch follows");
    assert_eq!(restarts.load(Ordering::Relaxed), 1);

    // A panicking handler restarts the watch too.
    assert_eq!(addr.send(Crash).await.ok(), Some(Err(ActorFailed)));
    assert!(eventually(|| backend.addresses() == ["127.0.0.1:3"]).await, "third watch follows");
    assert_eq!(restarts.load(Ordering::Relaxed), 2);
    assert_eq!(generations.load(Ordering::SeqCst), 3);
}

/// A watch that reports the same instance every few milliseconds, counting
/// its steps and the watches the actor made; its drop is counted too.
struct Ticking {
    steps: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

impl Watch for Ticking {
    fn next(&mut self) -> LocalBoxFuture<'_, Event> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.steps.fetch_add(1, Ordering::SeqCst);
            healthy(&["127.0.0.1:1"])
        })
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

/// Once nobody holds the actor's address (its backend was replaced by a
/// reload), the watch stops after its current step and the actor ends.
#[actix_rt::test]
async fn an_unreachable_actor_stops_watching() {
    let (_backend, control) = consul_backend();
    let steps = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let made = Arc::new(AtomicUsize::new(0));
    let factory: WatchFactory = {
        let (steps, dropped, made) = (steps.clone(), dropped.clone(), made.clone());
        Arc::new(move || {
            made.fetch_add(1, Ordering::SeqCst);
            Box::new(Ticking { steps: steps.clone(), dropped: dropped.clone() })
        })
    };
    let addr = BackendActor::start_watched(
        control,
        Arc::new(AtomicU64::new(0)),
        &actix::Arbiter::current(),
        Some(factory),
    );
    assert!(eventually(|| steps.load(Ordering::SeqCst) >= 3).await);
    drop(addr);
    assert!(eventually(|| dropped.load(Ordering::SeqCst) == 1).await, "the watch ends");
    let steps_at_end = steps.load(Ordering::SeqCst);
    // The stopped actor's arbiter has nothing left of it to run: no new
    // watch, no further step.
    actix_rt::task::yield_now().await;
    assert_eq!(made.load(Ordering::SeqCst), 1, "no watch made again");
    assert_eq!(steps.load(Ordering::SeqCst), steps_at_end, "no more calls");
}
