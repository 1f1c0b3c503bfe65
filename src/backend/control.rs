//! [`BackendControl`]: the one handle that changes a [`Backend`] at run
//! time. [`Backend::new`] makes it; the backend's supervised actor holds it
//! (`actor::BackendActor`) and is thereby its only writer. Everyone else
//! (requests, the admin API, readiness) holds `Arc<Backend>`, which reads.

use std::sync::Arc;

use super::breaker::ForcedMode;
use super::Backend;
use crate::config::InstanceSource;
use crate::discovery::{Event, WatchState};

/// Changes one backend (see the module doc).
#[derive(Debug)]
pub struct BackendControl {
    backend: Arc<Backend>,
}

impl BackendControl {
    pub(super) fn new(backend: Arc<Backend>) -> Self {
        Self { backend }
    }

    /// The backend, to read.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// Replaces the instance list (calls in flight keep their snapshot).
    pub fn set_instances(&self, addresses: &[String]) {
        self.backend.balancer.set(addresses);
        self.backend.instances_gauge.set(addresses.len() as f64);
    }

    /// Puts back the instances the configuration lists (after a restart of
    /// the actor); a discovered list is kept, as the last known good set.
    pub fn apply_configured_instances(&self) {
        if let InstanceSource::Static(list) = &self.backend.config.instances {
            self.set_instances(list);
        }
    }

    /// Notes one outcome of the discovery watch; the state it leaves, when
    /// it changed.
    pub fn record_discovery(&self, event: &Event) -> Option<WatchState> {
        self.backend.discovery.record(event)
    }

    /// Sets the operator's override of the breaker.
    pub fn force_breaker(&self, mode: ForcedMode) {
        self.backend.breaker.force(mode);
    }
}
