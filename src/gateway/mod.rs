//! The gateway's shared state: the [`Runtime`] in force (swapped whole on
//! reload), the control arbiter where backend actors live, and the config
//! file it came from. Shared by the edge workers and the admin listener.
//!
//! Reload: read and validate the file first; if anything is wrong nothing
//! changes and every error is returned. Otherwise build a new runtime that
//! keeps each unchanged backend as it is (breaker state, cache, actor,
//! counters; connections are per worker and keyed by address, so they stay
//! too) and swap it in. Requests in flight finish on the runtime they
//! started with; a removed backend's actor stops when the last request
//! holding it is done (its supervisor does not restart an actor nobody
//! can address).

pub mod listener;
pub mod runtime;
pub mod signals;
mod start;

pub use signals::{serve_until_shutdown, shutdown_signal};
pub use start::{start, start_from_file, start_with, RunningGateway, StartError};

use std::path::PathBuf;
use std::sync::Arc;

use actix::Arbiter;
use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{self, Config, ConfigError, ConfigErrors};
use crate::edge::tls::CertStore;
use runtime::{BackendHandle, Runtime};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway was started from a config not read from a file.
    #[error("no config file to reload (the gateway was not started from a file)")]
    NoFile,
    /// The new file is invalid: every error, with its TOML path.
    #[error("config invalid, nothing changed:\n{0}")]
    Invalid(ConfigErrors),
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Backends that are new.
    pub added: Vec<String>,
    /// Backends whose configuration changed (rebuilt: fresh breaker and cache).
    pub changed: Vec<String>,
    /// Backends kept as they were.
    pub kept: Vec<String>,
    /// Backends no longer configured.
    pub removed: Vec<String>,
    /// Composed routes now served.
    pub routes: usize,
    /// Proxy routes now served.
    pub proxies: usize,
}

/// Shared by the edge workers and the admin listener.
pub struct Gateway {
    runtime: ArcSwap<Runtime>,
    control: Arbiter,
    config_path: Option<PathBuf>,
    /// One reload at a time (SIGHUP and the admin API may race).
    reloading: tokio::sync::Mutex<()>,
    reload_success: metrics::Counter,
    reload_failure: metrics::Counter,
    /// The certificate new TLS handshakes get, when `[server.tls]` is set.
    cert_store: Option<Arc<CertStore>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("config_path", &self.config_path).finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the runtime for `config` (read from `config_path`, if any),
    /// with the backend actors on their own arbiter.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Arc<Self> {
        let control = Arbiter::new();
        let cert_store = config.server.tls.as_ref().map(CertStore::new);
        let runtime = Runtime::build(Arc::new(config), &control.handle(), None);
        let reloads = |result: &'static str| metrics::counter!("mosaic_config_reloads_total", "result" => result);
        Arc::new(Self {
            runtime: ArcSwap::from_pointee(runtime),
            control,
            config_path,
            reloading: tokio::sync::Mutex::new(()),
            reload_success: reloads("success"),
            reload_failure: reloads("failure"),
            cert_store,
        })
    }

    /// The certificate store of the HTTPS listener, when `[server.tls]` is set.
    pub fn cert_store(&self) -> Option<&Arc<CertStore>> {
        self.cert_store.as_ref()
    }

    /// The runtime in force.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// A backend and its actor, by name.
    pub fn backend(&self, name: &str) -> Option<BackendHandle> {
        self.runtime.load().backends.get(name).cloned()
    }

    /// Re-reads the config file and, if it is valid, serves it.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload().await;
        match &result {
            Ok(report) => {
                self.reload_success.increment(1);
                tracing::info!(?report, "config reloaded");
            }
            Err(error) => {
                self.reload_failure.increment(1);
                tracing::error!(%error, "config reload refused");
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        // Read off the async thread: the file system may be slow.
        let text = tokio::fs::read_to_string(path).await.map_err(|e| {
            ReloadError::Invalid(ConfigErrors::single(
                "",
                format!("cannot read {}: {e}", path.display()),
            ))
        })?;
        // Validation reads files the config names (`auth.jwt.jwks_file`):
        // off the async thread too.
        let new = tokio::task::spawn_blocking(move || config::parse_str(&text))
            .await
            .map_err(|_| {
                ReloadError::Invalid(ConfigErrors::single("", "config validation did not finish"))
            })?
            .map_err(ReloadError::Invalid)?;
        let old = self.runtime.load_full();
        check_unchangeable(&old.config, &new).map_err(ReloadError::Invalid)?;

        let next = Runtime::build(Arc::new(new), &self.control.handle(), Some(&old));
        let mut report = ReloadReport {
            added: Vec::new(),
            changed: Vec::new(),
            kept: Vec::new(),
            removed: Vec::new(),
            routes: next.routes.len(),
            proxies: next.proxies.len(),
        };
        for (name, handle) in &next.backends {
            match old.backends.get(name) {
                None => report.added.push(name.clone()),
                Some(previous) if Arc::ptr_eq(&previous.backend, &handle.backend) => {
                    report.kept.push(name.clone())
                }
                Some(_) => report.changed.push(name.clone()),
            }
        }
        report.removed = old
            .backends
            .keys()
            .filter(|name| !next.backends.contains_key(*name))
            .cloned()
            .collect();
        // New handshakes get the reloaded pair; open connections keep theirs.
        if let (Some(store), Some(tls)) = (&self.cert_store, &next.config.server.tls) {
            store.replace(tls);
        }
        self.runtime.store(Arc::new(next));
        Ok(report)
    }
}

/// Settings bound to sockets cannot change without a restart.
fn check_unchangeable(old: &Config, new: &Config) -> Result<(), ConfigErrors> {
    let listeners = [
        ("server.listen", old.server.listen, new.server.listen),
        ("admin.listen", old.admin.listen, new.admin.listen),
    ];
    let mut errors: Vec<ConfigError> = listeners
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(path, old, new)| ConfigError {
            path: path.into(),
            message: format!(
                "cannot change on reload ({old} → {new}); restart mosaic to move the listener"
            ),
        })
        .collect();
    // The listener's protocol is fixed when it is bound; only the pair
    // (cert and key) is re-read.
    let https = |config: &Config| config.server.tls.as_ref().map(|tls| tls.min_version.as_str());
    match (https(old), https(new)) {
        (Some(_), None) | (None, Some(_)) => errors.push(ConfigError {
            path: "server.tls".into(),
            message: "cannot be added or removed on reload; restart mosaic to switch between HTTP and HTTPS".into(),
        }),
        (Some(old), Some(new)) if old != new => errors.push(ConfigError {
            path: "server.tls.min_version".into(),
            message: format!("cannot change on reload ({old} → {new}); restart mosaic to apply it"),
        }),
        _ => {}
    }
    if old.server.workers != new.server.workers {
        tracing::warn!("server.workers changed: takes effect at the next restart");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors { errors })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.control.stop();
    }
}
