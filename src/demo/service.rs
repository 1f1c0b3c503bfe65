//! One demo service as an actix-web server: its routes, `/health`, `/_fault`,
//! JSON 404s, and the `X-Request-Id` echo.
//!
//! One worker: a demo service is a stand-in for a remote team's service, and
//! a single-threaded one keeps seven of them cheap on a laptop.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, AUTHORIZATION};
use actix_web::http::StatusCode;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::{json, Value};

use super::cart::{self, CartError, CartLine, CartStore, MAX_QUANTITY};
use super::data::{self, parse_product_id};
use super::fault::{self, FaultState, Faults};
use super::orders;
use super::Service;

/// User name for requests without an `Authorization` header.
pub const ANONYMOUS: &str = "anonymous";
/// Longest accepted user name: a cart key, not a place to store a token.
const MAX_USER_LEN: usize = 256;
/// In-flight requests at shutdown (SIGTERM) get this long; a `hang` must not
/// keep a stopping service alive for the default 30 s.
const SHUTDOWN_GRACE_SECS: u64 = 1;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Runs `service` on `listener` until the process is stopped.
pub async fn serve(service: Service, listener: TcpListener, faults: Faults) -> std::io::Result<()> {
    let faults = web::Data::new(FaultState::new(faults));
    http_server(service, listener, faults, web::Data::new(CartStore::default()))?.await
}

/// The HTTP server of `service` on `listener`, with its fault settings and
/// carts passed in so another front (AMQP, see `demo::amqp`) can share them.
/// It runs once awaited (or spawned) on an actix system.
pub fn http_server(
    service: Service,
    listener: TcpListener,
    faults: web::Data<FaultState>,
    carts: web::Data<CartStore>,
) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        routes(service, faults.clone(), carts.clone())
            .wrap(from_fn(fault::inject))
            // Outermost, so injected errors carry the request id too.
            .wrap(from_fn(echo_request_id))
    })
    .workers(1)
    // A client that closes its side has given up: drop its request (this is
    // what frees a `hang`), rather than keep answering into the void.
    .h1_allow_half_closed(false)
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .client_request_timeout(Duration::from_secs(5))
    .listen(listener)?
    .run();
    Ok(server)
}

/// The service's routes and state, without middleware: the app both the
/// HTTP server and the AMQP front serve, so they answer alike.
pub(crate) fn routes(
    service: Service,
    faults: web::Data<FaultState>,
    carts: web::Data<CartStore>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(faults)
        .app_data(carts)
        .configure(|cfg| configure(service, cfg))
        .default_service(web::to(not_found))
}

/// Routes of `service`, plus `/health` and `/_fault` which every service has.
pub fn configure(service: Service, cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health));
    fault::configure(cfg);
    match service {
        Service::Catalog => cfg.route("/products/{id}", web::get().to(product)),
        Service::Pricing => cfg.route("/prices/{id}", web::get().to(price)),
        Service::Reviews => cfg.route("/reviews/{id}", web::get().to(reviews)),
        Service::Inventory => cfg.route("/inventory/{id}", web::get().to(inventory)),
        Service::Recommendations => {
            cfg.route("/recommendations/{id}", web::get().to(recommendations))
        }
        Service::Orders => cfg.route("/orders", web::get().to(order_history)),
        Service::Cart => cfg
            .route("/cart", web::get().to(get_cart))
            // The gateway's proxy maps `/api/cart/` to `/cart/`.
            .route("/cart/", web::get().to(get_cart))
            .service(
                web::resource("/cart/items")
                    .route(web::get().to(get_items))
                    .route(web::post().to(add_item)),
            )
            .route("/cart/items/{product_id}", web::delete().to(remove_item)),
    };
}

/// A JSON error body: `{"error": code, "message": message}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": code, "message": message }))
}

/// Copies the request's `X-Request-Id` onto the response.
pub(crate) async fn echo_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req.headers().get(&REQUEST_ID).cloned();
    let mut res = next.call(req).await?;
    if let Some(id) = id {
        res.headers_mut().insert(REQUEST_ID, id);
    }
    Ok(res)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", &format!("no resource at {}", req.path()))
}

/// The product's data, or a JSON 404 when the id is not a product.
fn by_id(id: &str, make: fn(u32) -> Value) -> HttpResponse {
    match parse_product_id(id) {
        Some(id) => HttpResponse::Ok().json(make(id)),
        None => unknown_product(id),
    }
}

fn unknown_product(id: &str) -> HttpResponse {
    error_response(StatusCode::NOT_FOUND, "not_found", &format!("product {id:?} does not exist"))
}

async fn product(id: web::Path<String>) -> HttpResponse {
    by_id(&id, data::product)
}

async fn price(id: web::Path<String>) -> HttpResponse {
    by_id(&id, data::price)
}

async fn reviews(id: web::Path<String>) -> HttpResponse {
    by_id(&id, data::reviews)
}

async fn inventory(id: web::Path<String>) -> HttpResponse {
    by_id(&id, data::inventory)
}

async fn recommendations(id: web::Path<String>) -> HttpResponse {
    by_id(&id, data::recommendations)
}

/// The user named by `x-user-id` (which mosaic sets from a verified JWT's
/// `sub` on the demo's `/api/me/cart`), else by `Authorization` (`Bearer
/// alice` → `alice`; any other scheme: the whole value); `None` without
/// either. The error says why the header is unusable.
fn user_of(req: &HttpRequest) -> Result<Option<String>, &'static str> {
    let value = req.headers().get("x-user-id").or_else(|| req.headers().get(AUTHORIZATION));
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| "Authorization is not visible ASCII")?.trim();
    let user = match text.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => text[7..].trim(),
        _ => text,
    };
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err("Authorization names no user, or one over 256 bytes");
    }
    Ok(Some(user.to_owned()))
}

fn bad_authorization(why: &str) -> HttpResponse {
    error_response(StatusCode::BAD_REQUEST, "invalid_authorization", why)
}

#[derive(Deserialize)]
struct OrdersQuery {
    product: Option<String>,
}

async fn order_history(req: HttpRequest, query: web::Query<OrdersQuery>) -> HttpResponse {
    let user = match user_of(&req) {
        Ok(user) => user,
        Err(why) => return bad_authorization(why),
    };
    let product = match query.product.as_deref() {
        None => None,
        Some(id) => match parse_product_id(id) {
            Some(id) => Some(id),
            None => return unknown_product(id),
        },
    };
    HttpResponse::Ok().json(orders::orders(user.as_deref(), product))
}

fn cart_user(req: &HttpRequest) -> Result<String, &'static str> {
    Ok(user_of(req)?.unwrap_or_else(|| ANONYMOUS.to_owned()))
}

async fn get_cart(req: HttpRequest, carts: web::Data<CartStore>) -> HttpResponse {
    match cart_user(&req) {
        Ok(user) => HttpResponse::Ok().json(cart::cart_json(&user, &carts.lines(&user))),
        Err(why) => bad_authorization(why),
    }
}

async fn get_items(req: HttpRequest, carts: web::Data<CartStore>) -> HttpResponse {
    match cart_user(&req) {
        Ok(user) => HttpResponse::Ok().json(cart::items_json(&carts.lines(&user))),
        Err(why) => bad_authorization(why),
    }
}

/// `product_id` as a string (`"42"`, as the catalog writes it) or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProductRef {
    Text(String),
    Number(u64),
}

#[derive(Deserialize)]
struct AddItem {
    product_id: ProductRef,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

/// `POST /cart/items`: 201 with the cart; 400 bad JSON or quantity, 422
/// unknown product, 409 full cart.
async fn add_item(req: HttpRequest, carts: web::Data<CartStore>, body: web::Bytes) -> HttpResponse {
    let user = match cart_user(&req) {
        Ok(user) => user,
        Err(why) => return bad_authorization(why),
    };
    let item: AddItem = match serde_json::from_slice(&body) {
        Ok(item) => item,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid_json", &e.to_string()),
    };
    if !(1..=MAX_QUANTITY).contains(&item.quantity) {
        let message = format!("quantity must be between 1 and {MAX_QUANTITY}");
        return error_response(StatusCode::BAD_REQUEST, "invalid_quantity", &message);
    }
    let id_text = match item.product_id {
        ProductRef::Text(text) => text,
        ProductRef::Number(n) => n.to_string(),
    };
    let Some(product_id) = parse_product_id(&id_text) else {
        let message = format!("product {id_text:?} does not exist");
        return error_response(StatusCode::UNPROCESSABLE_ENTITY, "unknown_product", &message);
    };
    match carts.add(&user, CartLine { product_id, quantity: item.quantity }) {
        Ok(lines) => HttpResponse::Created().json(cart::cart_json(&user, &lines)),
        Err(_) => error_response(StatusCode::CONFLICT, "cart_full", "the cart is full"),
    }
}

async fn remove_item(
    req: HttpRequest,
    carts: web::Data<CartStore>,
    id: web::Path<String>,
) -> HttpResponse {
    let user = match cart_user(&req) {
        Ok(user) => user,
        Err(why) => return bad_authorization(why),
    };
    let removed =
        parse_product_id(&id).ok_or(CartError::NotInCart).and_then(|p| carts.remove(&user, p));
    match removed {
        Ok(lines) => HttpResponse::Ok().json(cart::cart_json(&user, &lines)),
        Err(_) => {
            error_response(StatusCode::NOT_FOUND, "not_in_cart", "product is not in the cart")
        }
    }
}
/// Runs one service as this whole process (`mosaic demo-service`): binds
/// first, so the announced address is the real one (port 0 included) and a
/// busy port is reported before any runtime starts; prints
/// `demo service NAME listening on ADDR` (what `DemoServices` waits for) in
/// one write; serves until killed. Errors are ready to print.
pub fn run_standalone(service: Service, listen: SocketAddr, faults: Faults) -> Result<(), String> {
    let listener = TcpListener::bind(listen)
        .map_err(|e| format!("demo service {service}: cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(listen);
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "demo service {service} listening on {bound}");
        let _ = out.flush();
    }
    actix_rt::System::new()
        .block_on(serve(service, listener, faults))
        .map_err(|e| format!("demo service {service}: {e}"))
}
