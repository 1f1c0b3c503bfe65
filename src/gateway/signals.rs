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
    let grace = gateway.gateway().runtime().config.server.shutdown_grace;
    tracing::info!(?grace, "shutting down: no new connections, finishing requests in flight");
    let started = std::time::Instant::now();
    gateway.stop(true).await;
    // actix-web closes what is left when the grace period runs out.
    if started.elapsed() >= grace {
        tracing::warn!(?grace, "grace period over: connections still open were closed");
    } else {
        tracing::info!(drained_in = ?started.elapsed(), "every request in flight finished; stopped");
    }
}
