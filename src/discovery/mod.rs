//! Discovery: where a backend's instances come from and how changes reach it.
//!
//! A static backend's list is its configuration; nothing watches it. A
//! Consul backend has a [`Watch`] ([`consul::ConsulWatch`]) that its
//! supervised actor runs (`backend/actor.rs`): each call to the source ends
//! in an [`Event`], which the actor applies, as the only writer, by swapping
//! the instance list (calls in flight keep their snapshot) and recording the
//! watch state in [`DiscoveryStatus`] (admin API, metrics, logs).
//!
//! Failures never clear the list: with the agent down or answering garbage
//! the backend keeps serving its last known instances, the state turns
//! `degraded` (logged once, `mosaic_discovery_up{backend}` 0) and the watch
//! retries at the pace of [`pace`].

pub mod consul;
pub mod pace;

use crate::clock::unix_ms;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;
use metrics::{Counter, Gauge};
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{BackendConfig, ConsulConfig, InstanceSource};

/// Where a backend's instances come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// The configured `instances` list.
    Static,
    /// A Consul service, watched.
    Consul,
}

/// How the watch is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchState {
    /// No answer and no failure yet.
    Starting,
    /// The last call answered (static backends are always `ok`).
    Ok,
    /// The last call failed; the last known instances are kept.
    Degraded,
}

impl WatchState {
    /// As shown in the admin API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchState::Starting => "starting",
            WatchState::Ok => "ok",
            WatchState::Degraded => "degraded",
        }
    }
}

/// The outcome of one call to a discovery source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The source answered: every healthy instance (`host:port`, sorted,
    /// without duplicates; possibly none) and the index to wait on next.
    Healthy {
        /// `host:port` of each healthy instance.
        instances: Vec<String>,
        /// The blocking-query index now in use.
        index: u64,
    },
    /// The call failed: keep the last known instances.
    Failed {
        /// What went wrong, for the admin API and the log.
        error: String,
        /// The blocking-query index still in use.
        index: u64,
    },
}

/// A source of instance lists: each `next` makes (at most) one paced call
/// and reports how it went. Runs on the backend actor's arbiter, so it need
/// not be `Send` (awc's client is not).
pub trait Watch {
    /// The outcome of the next call.
    fn next(&mut self) -> LocalBoxFuture<'_, Event>;
}

/// Builds a backend's watch on the actor's own thread, at every (re)start.
pub type WatchFactory = Arc<dyn Fn() -> Box<dyn Watch> + Send + Sync>;

/// The watch factory for `backend`: `None` for a static list (or a Consul
/// backend without `[discovery.consul]`, which validation refuses).
pub fn watch_factory(
    backend: &BackendConfig,
    consul: Option<&ConsulConfig>,
) -> Option<WatchFactory> {
    let InstanceSource::Consul { service, tag } = &backend.instances else { return None };
    let consul = consul?.clone();
    let (service, tag) = (service.clone(), tag.clone());
    Some(Arc::new(move || {
        Box::new(consul::ConsulWatch::new(&consul, &service, tag.as_deref())) as Box<dyn Watch>
    }))
}

/// The `discovery` member of a `/admin/backends` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryInfo {
    /// `static` or `consul`.
    pub kind: DiscoveryKind,
    /// `starting`, `ok` or `degraded`.
    pub state: WatchState,
    /// The Consul service followed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The last failure, kept until the next answer.
    pub last_error: Option<String>,
    /// The blocking-query index in use (0 for static backends).
    pub index: u64,
    /// When the state last changed (Unix ms).
    pub since_unix_ms: u64,
}

/// A backend's discovery state, shared with the admin API. Only its actor
/// writes it (through [`DiscoveryStatus::record`]).
#[derive(Debug)]
pub struct DiscoveryStatus {
    info: Mutex<DiscoveryInfo>,
    up: Gauge,
    errors: Counter,
}

impl DiscoveryStatus {
    /// The status of a backend named `backend` whose instances come from `source`.
    pub fn new(backend: &str, source: &InstanceSource) -> Self {
        let (kind, state, service) = match source {
            InstanceSource::Static(_) => (DiscoveryKind::Static, WatchState::Ok, None),
            InstanceSource::Consul { service, .. } => {
                (DiscoveryKind::Consul, WatchState::Starting, Some(service.clone()))
            }
        };
        let up = metrics::gauge!("mosaic_discovery_up", "backend" => backend.to_string());
        up.set(if state == WatchState::Ok { 1.0 } else { 0.0 });
        let info = DiscoveryInfo {
            kind,
            state,
            service,
            last_error: None,
            index: 0,
            since_unix_ms: unix_ms(),
        };
        Self {
            info: Mutex::new(info),
            up,
            errors: metrics::counter!("mosaic_discovery_errors_total", "backend" => backend.to_string()),
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> DiscoveryInfo {
        self.info.lock().clone()
    }

    /// Records one call's outcome; returns the previous state when it changed
    /// (the caller logs transitions, never retries).
    pub fn record(&self, event: &Event) -> Option<WatchState> {
        let mut info = self.info.lock();
        let before = info.state;
        match event {
            Event::Healthy { index, .. } => {
                info.state = WatchState::Ok;
                info.index = *index;
                info.last_error = None;
            }
            Event::Failed { error, index } => {
                self.errors.increment(1);
                info.state = WatchState::Degraded;
                info.index = *index;
                info.last_error = Some(error.clone());
            }
        }
        if info.state == before {
            return None;
        }
        info.since_unix_ms = unix_ms();
        self.up.set(if info.state == WatchState::Ok { 1.0 } else { 0.0 });
        Some(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consul_source() -> InstanceSource {
        InstanceSource::Consul { service: "reviews".into(), tag: None }
    }

    /// Only transitions are reported: a failure after a failure, or an
    /// answer after an answer, is recorded silently.
    #[test]
    fn record_reports_state_changes_once() {
        let status = DiscoveryStatus::new("reviews", &consul_source());
        assert_eq!(status.snapshot().state, WatchState::Starting);
        let failed = Event::Failed { error: "connect".into(), index: 0 };
        assert_eq!(status.record(&failed), Some(WatchState::Starting));
        assert_eq!(status.record(&failed), None);
        assert_eq!(status.snapshot().last_error.as_deref(), Some("connect"));
        let healthy = Event::Healthy { instances: vec!["a:1".into()], index: 7 };
        assert_eq!(status.record(&healthy), Some(WatchState::Degraded));
        assert_eq!(status.record(&healthy), None);
        let info = status.snapshot();
        assert_eq!((info.state, info.index, info.last_error), (WatchState::Ok, 7, None));
    }

    /// Static backends are `ok` from the start and have no watch.
    #[test]
    fn static_backends_are_ok_and_unwatched() {
        let status = DiscoveryStatus::new("catalog", &InstanceSource::Static(vec!["a:1".into()]));
        let info = status.snapshot();
        assert_eq!((info.kind, info.state), (DiscoveryKind::Static, WatchState::Ok));
        let json = serde_json::to_value(&info).unwrap_or_default();
        assert_eq!(json["kind"], "static");
        assert_eq!(json["state"], "ok");
    }
}
