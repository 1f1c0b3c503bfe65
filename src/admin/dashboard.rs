//! `GET /dashboard`: the live dashboard, one self-contained HTML page
//! (markup, style and script in `dashboard.html`, embedded in the binary:
//! nothing to build, nothing fetched from elsewhere).
//!
//! The page holds no secret and needs no token; it reads
//! `/admin/events` and calls the admin API with the token the operator
//! types in (kept in the tab's `sessionStorage`, sent as a bearer header).

use actix_web::http::header;
use actix_web::HttpResponse;

/// The page, as shipped.
pub const PAGE: &str = include_str!("dashboard.html");

/// The page may only run its own inline script and style, talk to its own
/// origin, and not be framed (its buttons force breakers).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Serves the page.
pub async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(PAGE)
}
