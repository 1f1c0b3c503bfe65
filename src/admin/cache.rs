//! The cache endpoints of the admin API (SPEC.md, "Shared cache (Redis)"):
//!
//! - `DELETE /admin/cache/{backend}` (optionally `?path=/prices/42`):
//!   purges the backend's entries from both tiers, every header variant of
//!   the path (every user's copy) or all of them. 200 with
//!   `{"backend", "path", "local": dropped, "shared": deleted}`; 503 with the
//!   same and `"shared": null, "shared_error"` when Redis could not be
//!   purged (the local tier is purged anyway: an operator purging a bad
//!   price must know it may still be served from Redis); 404 for an
//!   unknown backend, 409 for a backend without a cache.
//! - `GET /admin/redis`: the shared tier's state (`null` without
//!   `[redis]`): connected, usable (connected and its breaker closed),
//!   errors by kind.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{unauthorized, AdminState};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/cache/{backend}", web::delete().to(purge))
        .route("/admin/redis", web::get().to(redis));
}

#[derive(Deserialize)]
struct PurgeQuery {
    path: Option<String>,
}

async fn purge(
    req: HttpRequest,
    state: web::Data<AdminState>,
    name: web::Path<String>,
    query: web::Query<PurgeQuery>,
) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    let Some(handle) = state.gateway.backend(&name) else {
        return HttpResponse::NotFound().json(serde_json::json!({ "error": "no such backend" }));
    };
    let path = query.path.as_deref();
    if path.is_some_and(|p| !p.starts_with('/')) {
        return HttpResponse::BadRequest()
            .json(serde_json::json!({ "error": "path must start with /, e.g. ?path=/prices/42" }));
    }
    let Some(local) = handle.backend.purge_local(path) else {
        return HttpResponse::Conflict()
            .json(serde_json::json!({ "error": "this backend has no cache" }));
    };
    let mut body = serde_json::json!({ "backend": *name, "path": path, "local": local });
    let Some(slot) = handle.backend.shared() else {
        body["shared"] = serde_json::Value::Null;
        return HttpResponse::Ok().json(body);
    };
    match slot.tier().purge(&slot.pattern(path)).await {
        Ok(purged) => {
            body["shared"] = purged.deleted.into();
            tracing::info!(backend = %name, path = path.unwrap_or("*"), local, shared = purged.deleted, "cache purged");
            HttpResponse::Ok().json(body)
        }
        Err(error) => {
            body["shared"] = serde_json::Value::Null;
            body["shared_error"] = error.as_str().into();
            tracing::warn!(backend = %name, %error, local, "cache purge: the shared tier was not purged");
            HttpResponse::ServiceUnavailable().json(body)
        }
    }
}

async fn redis(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if !state.authorized(&req) {
        return unauthorized();
    }
    let runtime = state.gateway.runtime();
    let status = runtime.shared_tier.as_ref().map(|tier| tier.status());
    HttpResponse::Ok().json(serde_json::json!({ "redis": status }))
}
