//! The process signals mosaic answers: SIGTERM and SIGINT stop it (the one
//! shutdown path: stop accepting, let requests in flight finish within
//! `server.shutdown_grace`), SIGHUP reloads the config file.

use super::RunningGateway;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves until SIGTERM/SIGINT, reloading on SIGHUP, then stops gracefully.
pub async fn serve_until_shutdown(gateway: RunningGateway) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    Some(()) = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the config file");
                        // The outcome is logged and counted by `reload` itself.
                        let _ = gateway.gateway().reload().await;
                    }
                }
            }
        } else {
            shutdown_signal().await;
        }
    }
    #[cfg(not(unix))]
    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
    gateway.stop(true).await;
    tracing::info!("stopped");
}
