//! Starting and stopping the gateway: the shared [`Gateway`], then the edge
//! listener and the admin listener on it, as one [`RunningGateway`].

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::dev::ServerHandle;

use super::Gateway;
use crate::admin;
use crate::config::{Config, ConfigErrors};
use crate::edge;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The config file is invalid.
    #[error("{path}: refusing to start:\n{errors}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Every error in it.
        errors: ConfigErrors,
    },
}

/// How long a graceful stop waits, no longer accepting, for the workers to
/// take the connections already accepted (see [`RunningGateway::stop`]).
const HANDOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// A started gateway: its addresses and how to stop it.
pub struct RunningGateway {
    /// Where the edge listens (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    gateway: Arc<Gateway>,
    edge: ServerHandle,
    admin: ServerHandle,
    edge_done: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    /// The shared gateway state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Stops both listeners; `graceful` lets requests in flight finish
    /// (within `server.shutdown_grace`).
    ///
    /// A graceful stop first stops accepting and waits [`HANDOFF`] before
    /// it stops the workers: actix-server drops the connections its accept
    /// thread has handed to a worker that the worker has not taken yet when
    /// the worker is told to stop (seen as an empty answer during a rolling
    /// restart). Connections that arrive meanwhile wait in the listener's
    /// queue: with `reuse_port` (and `tcp_migrate_req`) the kernel moves
    /// them to the new process when the socket closes.
    pub async fn stop(self, graceful: bool) {
        if graceful {
            self.edge.pause().await;
            self.admin.pause().await;
            tokio::time::sleep(HANDOFF).await;
        }
        self.admin.stop(graceful).await;
        self.edge.stop(graceful).await;
        let _ = self.edge_done.await;
    }

    /// Waits until the edge listener stops.
    pub async fn wait(self) {
        let _ = self.edge_done.await;
    }
}

/// Starts the edge and admin listeners with a config that has no file
/// behind it (so it cannot be reloaded). Must run inside an actix system.
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    start_with(config, None).await
}

/// Reads `path` and starts the gateway from it; `POST /admin/reload` and
/// SIGHUP re-read the same file.
pub async fn start_from_file(path: &Path) -> Result<RunningGateway, StartError> {
    let config = crate::config::load_file(path)
        .map_err(|errors| StartError::Config { path: path.to_path_buf(), errors })?;
    start_with(config, Some(path.to_path_buf())).await
}

/// Starts the edge and admin listeners; `config_path` is where reloads read.
pub async fn start_with(
    config: Config,
    config_path: Option<PathBuf>,
) -> Result<RunningGateway, StartError> {
    let metrics = admin::metrics::install();
    let server_config = config.server.clone();
    let admin_config = config.admin.clone();
    let gateway = Gateway::new(config, config_path);
    // A read of a /proc file (memory, never a wait on a device).
    super::listener::warn_if_queue_not_migrated(server_config.reuse_port);
    let edge = edge::listen(gateway.clone(), &server_config)
        .map_err(|source| StartError::Bind { addr: server_config.listen, source })?;
    let (admin_addr, admin_handle) =
        match admin::start(gateway.clone(), &admin_config, metrics, server_config.reuse_port) {
            Ok(started) => started,
            Err(source) => {
                edge.handle.stop(false).await;
                return Err(StartError::Bind { addr: admin_config.listen, source });
            }
        };
    tracing::info!(addr = %edge.addr, %admin_addr, "mosaic listening");
    Ok(RunningGateway {
        addr: edge.addr,
        admin_addr,
        gateway,
        edge: edge.handle,
        admin: admin_handle,
        edge_done: edge.done,
    })
}
