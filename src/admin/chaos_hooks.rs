//! Test-only hooks for chaos experiments, mounted only when the gateway was
//! started with `MOSAIC_CHAOS_HOOKS=1` (a 404 otherwise, like any unknown
//! path), so a production gateway cannot be crashed through its admin port.
//!
//! - `POST /admin/backends/{name}/crash`: sends the backend's actor the
//!   [`Crash`] message, so its handler panics as a bug would and its
//!   supervisor restarts it. Token-protected like every `/admin/*` call.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{unauthorized, AdminState};
use crate::backend::actor::Crash;

/// The environment variable that enables the hooks; only the value `1` does.
pub const CHAOS_HOOKS_ENV: &str = "MOSAIC_CHAOS_HOOKS";

/// True when this process was started with the hooks enabled.
pub fn enabled() -> bool {
    std::env::var(CHAOS_HOOKS_ENV).is_ok_and(|v| v == "1")
}

/// Adds the hook routes when [`enabled`]; nothing otherwise.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    if enabled() {
        cfg.route("/admin/backends/{name}/crash", web::post().to(crash));
    }
}

/// 202 once the actor has panicked (it is restarting); 404 for an unknown backend.
async fn crash(
    req: HttpRequest,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    let Some(handle) = state.gateway.backend(&name) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "error": "no such backend" }));
    };
    tracing::warn!(backend = %name, "chaos hook: crashing the backend actor");
    // The handler answers `Err(ActorFailed)` when it panicked as asked; a
    // mailbox error means it was already restarting. Either way it restarts.
    let crashed = handle.actor.send(Crash).await.is_ok_and(|r| r.is_err());
    HttpResponse::Accepted().json(serde_json::json!({ "backend": *name, "crashed": crashed }))
}
