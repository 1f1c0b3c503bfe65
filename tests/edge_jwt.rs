//! Bearer JWTs at the edge, over real sockets: a JWKS served by an
//! in-test HTTP server that counts its requests, services that record
//! what they were sent (SPEC.md, "Edge security").

mod support;

use std::time::Duration;

use futures_util::future::join_all;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::fake::{FakeBackend, Reply};
use support::jwt::*;
use support::{
    admin, backend, eventually, request, start_gateway, start_gateway_from_file, LISTEN_ANY,
};

const KEY: &str = "mobile-key-0123456789abcdef";

/// `[auth]` with one API key consumer and `[auth.jwt]` on `jwks`.
fn auth(jwks: &str, refresh: &str) -> String {
    format!(
        r#"
[auth]
[[auth.consumers]]
name = "mobile-app"
keys = ["{KEY}"]

[auth.jwt]
jwks_url = "http://{jwks}/.well-known/jwks.json"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
algorithms = ["RS256", "ES256"]
leeway = "30s"
refresh = "{refresh}"
claims_to_headers = {{ sub = "x-user-id", scope = "x-user-scopes" }}
"#
    )
}

fn config(jwks: &str, service: &FakeBackend, profiles: &FakeBackend) -> String {
    format!(
        r#"{LISTEN_ANY}
{catalog}
{profiles}
{auth}
[[routes]]
path = "/orders/{{id}}"
deadline = "2s"
auth = "jwt"
scopes = ["orders:read"]
sections = [{{ name = "order", backend = "catalog", path = "/orders/{{id}}", required = true, forward_headers = ["x-user-id", "x-consumer", "x-user-scopes"] }}]

[[routes]]
path = "/me"
deadline = "2s"
auth = "jwt"
sections = [{{ name = "profile", backend = "profiles", path = "/profile", required = true, forward_headers = ["x-user-id"] }}]

[[routes]]
path = "/limited"
deadline = "2s"
auth = "jwt"
rate_limit = {{ requests = 1, per = "60s" }}
sections = [{{ name = "order", backend = "catalog", path = "/orders/1" }}]

[[routes]]
path = "/open/{{id}}"
deadline = "2s"
sections = [{{ name = "order", backend = "catalog", path = "/orders/{{id}}", forward_headers = ["x-user-id", "x-consumer", "authorization"] }}]

[[proxy]]
prefix = "/api/"
backend = "catalog"
auth = "key_or_jwt"
"#,
        catalog = backend("catalog", &[service.address()], ""),
        profiles = backend("profiles", &[profiles.address()], "cache = { ttl = \"1h\" }"),
        auth = auth(jwks, "5m"),
    )
}

/// A JWKS server holding k1 (RS256) and e1 (ES256).
fn jwks_server() -> FakeBackend {
    FakeBackend::start(Reply::ok(&jwks(&[
        jwk(Algorithm::RS256, RSA_K1, "k1"),
        jwk(Algorithm::ES256, EC_E1, "e1"),
    ])))
}

/// A profile service that answers with the user it was told about.
fn profile_service() -> FakeBackend {
    FakeBackend::scripted(|r| {
        Reply::ok(&json!({ "user": r.header("x-user-id").unwrap_or("nobody") }).to_string())
    })
}

async fn get_with(addr: std::net::SocketAddr, path: &str, token: &str) -> support::Answer {
    request(addr, "GET", path, &[("authorization", &bearer(token))], None).await
}

/// Every way a token can be wrong is a 401 (or 403 for scopes) with the
/// right challenge, and the service is never called for one.
#[actix_rt::test]
async fn every_bad_token_is_refused_with_its_challenge() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let gateway = start_gateway(&config(&idp.address(), &service, &profiles)).await;
    let addr = gateway.addr;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert!(
        eventually(Duration::from_secs(5), || idp.calls() >= 1).await,
        "the JWKS is fetched at start"
    );

    let missing = request(addr, "GET", "/orders/1", &[], None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some(r#"Bearer realm="mosaic""#));
    assert_eq!(missing.json()["error"], "unauthorized");
    let basic = request(addr, "GET", "/orders/1", &[("authorization", "Basic dTpw")], None).await;
    assert_eq!(basic.header("www-authenticate"), Some(r#"Bearer realm="mosaic""#));

    let hs_with_public_key = sign(Algorithm::HS256, RSA_K1_PUBLIC, "k1", &claims("user-1"));
    let rs384 = sign(Algorithm::RS384, RSA_K1, "k1", &claims("user-1"));
    let ec_key_named_as_rsa = sign(Algorithm::ES256, EC_E1, "k1", &claims("user-1"));
    let other_key = sign(Algorithm::RS256, RSA_K2, "k1", &claims("user-1"));
    let now = now();
    let bad: Vec<(&str, String)> = vec![
        ("garbage", "not-a-token".to_string()),
        ("alg none", unsigned(&claims("user-1"))),
        ("HS256 signed with the RSA public key", hs_with_public_key),
        ("an algorithm outside the list", rs384),
        ("an EC signature on an RSA key", ec_key_named_as_rsa),
        ("a signature by another key", other_key),
        (
            "expired beyond the leeway",
            sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("u", json!({ "exp": now - 60 }))),
        ),
        (
            "not valid for a minute",
            sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("u", json!({ "nbf": now + 60 }))),
        ),
        (
            "without exp",
            sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("u", json!({ "exp": null }))),
        ),
        (
            "for another audience",
            sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("u", json!({ "aud": "billing" }))),
        ),
        (
            "from another issuer",
            sign(
                Algorithm::RS256,
                RSA_K1,
                "k1",
                &claims_with("u", json!({ "iss": "https://evil" })),
            ),
        ),
    ];
    for (what, token) in &bad {
        let answer = get_with(addr, "/orders/1", token).await;
        assert_eq!(answer.status, 401, "{what}: {}", String::from_utf8_lossy(&answer.body));
        assert_eq!(
            answer.header("www-authenticate"),
            Some(r#"Bearer realm="mosaic", error="invalid_token""#),
            "{what}"
        );
        assert_eq!(answer.json()["error"], "unauthorized", "{what}");
    }
    assert_eq!(service.calls(), 0, "no bad token reaches the service");

    // Within the leeway (30 s) either way, and ES256 with its own key: in.
    let edges = [
        sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("user-1", json!({ "exp": now - 10 }))),
        sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("user-1", json!({ "nbf": now + 10 }))),
        sign(Algorithm::ES256, EC_E1, "e1", &claims("user-1")),
        good.clone(),
    ];
    for token in &edges {
        assert_eq!(get_with(addr, "/orders/1", token).await.status, 200);
    }

    // A good token without the route's scope: 403.
    let no_scope =
        sign(Algorithm::RS256, RSA_K1, "k1", &claims_with("u", json!({ "scope": "profile" })));
    let forbidden = get_with(addr, "/orders/1", &no_scope).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(
        forbidden.header("www-authenticate"),
        Some(r#"Bearer realm="mosaic", error="insufficient_scope""#)
    );
    assert_eq!(forbidden.json()["error"], "forbidden");
    assert_eq!(get_with(addr, "/me", &no_scope).await.status, 200, "/me asks no scope");
    gateway.stop(false).await;
}

/// Services see the verified claims and mosaic's `x-consumer`, never a
/// client's copy of them, on every kind of route; the token itself is
/// not passed on; a per-user section is cached per user; limits are per
/// token subject.
#[actix_rt::test]
async fn services_see_verified_claims_only() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let gateway = start_gateway(&config(&idp.address(), &service, &profiles)).await;
    let addr = gateway.addr;
    let user1 = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    let user2 = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-2"));
    let spoofs = [("x-user-id", "admin"), ("x-consumer", "admin"), ("x-user-scopes", "all")];

    let mut headers = vec![("authorization", bearer(&user1))];
    headers.extend(spoofs.iter().map(|(n, v)| (*n, v.to_string())));
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let page = request(addr, "GET", "/orders/7", &headers, None).await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let seen = service.requests().pop().expect("one call");
    assert_eq!(seen.header("x-user-id"), Some("user-1"));
    assert_eq!(seen.header("x-consumer"), Some("user-1"));
    assert_eq!(seen.header("x-user-scopes"), Some("orders:read profile"));
    assert_eq!(seen.header("authorization"), None, "not listed: not forwarded");

    // An open route that lists the claim headers: the client's copies are
    // dropped (a section listing authorization gets it, as asked).
    let mut open_headers = headers.clone();
    open_headers.retain(|(n, _)| *n != "authorization");
    open_headers.push(("authorization", "Bearer whatever"));
    assert_eq!(request(addr, "GET", "/open/1", &open_headers, None).await.status, 200);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-user-id"), None);
    assert_eq!(seen.header("x-consumer"), None);
    assert_eq!(seen.header("authorization"), Some("Bearer whatever"));

    // A proxy (key_or_jwt): a token or a key, either works; neither
    // credential is passed on; the claim headers are mosaic's.
    assert_eq!(request(addr, "GET", "/api/cart", &headers, None).await.status, 200);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-user-id"), Some("user-1"));
    assert_eq!(seen.header("x-consumer"), Some("user-1"));
    assert_eq!(seen.header("authorization"), None);
    let keyed = [("x-api-key", KEY), ("x-user-id", "admin"), ("x-consumer", "admin")];
    assert_eq!(request(addr, "GET", "/api/cart", &keyed, None).await.status, 200);
    let seen = service.requests().pop().expect("call");
    assert_eq!(seen.header("x-consumer"), Some("mobile-app"));
    assert_eq!(seen.header("x-user-id"), None);
    assert_eq!(seen.header("x-api-key"), None);
    let neither = request(addr, "GET", "/api/cart", &[], None).await;
    assert_eq!(neither.status, 401);
    let challenges: Vec<&str> = neither
        .headers
        .iter()
        .filter(|(n, _)| n == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(challenges.contains(&r#"Bearer realm="mosaic""#), "{challenges:?}");
    assert!(challenges.contains(&r#"ApiKey realm="mosaic""#), "{challenges:?}");

    // Cached per user: x-user-id is in the section's cache key.
    for (token, user) in [(&user1, "user-1"), (&user2, "user-2"), (&user1, "user-1")] {
        let me = get_with(addr, "/me", token).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.json()["profile"]["user"], user);
    }
    assert_eq!(profiles.calls(), 2, "the second user-1 page is a cache hit");
    let spoofed = request(addr, "GET", "/me", &headers, None).await;
    assert_eq!(spoofed.json()["profile"]["user"], "user-1", "not the spoofed admin");

    // by = "consumer" on a JWT route: each subject has its own bucket.
    assert_eq!(get_with(addr, "/limited", &user1).await.status, 200);
    assert_eq!(get_with(addr, "/limited", &user1).await.status, 429);
    assert_eq!(get_with(addr, "/limited", &user2).await.status, 200);
    gateway.stop(false).await;
}

/// A flood of tokens naming unknown keys asks the IdP once (one fetch per
/// 10 s at most), answers 401 without waiting on the IdP beyond a second,
/// and good tokens keep working throughout.
#[actix_rt::test]
async fn unknown_kids_fetch_the_jwks_once_under_a_flood() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let gateway = start_gateway(&config(&idp.address(), &service, &profiles)).await;
    let addr = gateway.addr;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert_eq!(get_with(addr, "/orders/1", &good).await.status, 200);
    assert_eq!(idp.calls(), 1);

    let started = std::time::Instant::now();
    for batch in 0..20 {
        let answers = join_all((0..50).map(|i| {
            let token = forged(&format!("forged-{batch}-{i}"));
            async move { get_with(addr, "/orders/1", &token).await.status }
        }))
        .await;
        assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    }
    assert_eq!(idp.calls(), 2, "1,000 forged kids: one fetch");
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert_eq!(get_with(addr, "/orders/1", &good).await.status, 200);
    gateway.stop(false).await;
}

/// A key rotated in at the IdP is taken on its first token (one fetch).
#[actix_rt::test]
async fn a_rotated_key_is_fetched_on_its_first_token() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let gateway = start_gateway(&config(&idp.address(), &service, &profiles)).await;
    assert!(eventually(Duration::from_secs(5), || idp.calls() == 1).await);
    idp.set(Reply::ok(&jwks(&[jwk(Algorithm::RS256, RSA_K2, "k2")])));
    let rotated = sign(Algorithm::RS256, RSA_K2, "k2", &claims("user-1"));
    assert_eq!(get_with(gateway.addr, "/orders/1", &rotated).await.status, 200);
    assert_eq!(idp.calls(), 2);
    let retired = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert_eq!(get_with(gateway.addr, "/orders/1", &retired).await.status, 401);
    gateway.stop(false).await;
}

/// The IdP down after a good fetch: the last keys stay in use. Never
/// fetched: JWT routes answer 503 auth_unavailable, others still serve.
#[actix_rt::test]
async fn an_unreachable_jwks_keeps_the_last_keys_or_answers_503() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let toml =
        config(&idp.address(), &service, &profiles).replace("refresh = \"5m\"", "refresh = \"1s\"");
    let gateway = start_gateway(&toml).await;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert_eq!(get_with(gateway.addr, "/orders/1", &good).await.status, 200);
    let calls = idp.calls();
    let down = idp.kill();
    // At least one refresh fails meanwhile.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(calls >= 1);
    assert_eq!(get_with(gateway.addr, "/orders/1", &good).await.status, 200);
    gateway.stop(false).await;

    // A JWKS that never answered (the port refuses connections).
    let never = config(&down.to_string(), &service, &profiles);
    let gateway = start_gateway(&never).await;
    let unavailable = get_with(gateway.addr, "/orders/1", &good).await;
    assert_eq!(unavailable.status, 503);
    assert_eq!(unavailable.json()["error"], "auth_unavailable");
    assert_eq!(request(gateway.addr, "GET", "/open/1", &[], None).await.status, 200);
    gateway.stop(false).await;
}

/// A reload that leaves [auth.jwt] as it is keeps the fetched keys: the
/// IdP is not asked again, and tokens pass even with the IdP gone.
#[actix_rt::test]
async fn a_reload_keeps_the_jwks_when_auth_jwt_is_unchanged() {
    let idp = jwks_server();
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let (gateway, _file) =
        start_gateway_from_file(&config(&idp.address(), &service, &profiles)).await;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert_eq!(get_with(gateway.addr, "/orders/1", &good).await.status, 200);
    assert_eq!(idp.calls(), 1);
    idp.kill();
    let reloaded = admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    assert_eq!(get_with(gateway.addr, "/orders/1", &good).await.status, 200);
    gateway.stop(false).await;
}

/// A JWK set served over HTTPS (a TLS server made in the test, its own
/// certificate as `jwks_ca`), counting the requests it answers.
struct HttpsIdp {
    addr: std::net::SocketAddr,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn https_idp(cert: &support::tls::TestCert, body: String) -> HttpsIdp {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = vec![cert.der.clone()];
    let key =
        <rustls::pki_types::PrivateKeyDer as rustls::pki_types::pem::PemObject>::from_pem_slice(
            cert.key_pem.as_bytes(),
        )
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(mosaic::config::tls_provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, body, counted) = (acceptor.clone(), body.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    HttpsIdp { addr, calls }
}

/// `jwks_url` over HTTPS: the set is fetched through TLS, trusting
/// `jwks_ca`, and tokens verify; an IdP whose certificate no root vouches
/// for is never trusted (503 auth_unavailable, nothing fetched).
#[actix_rt::test]
async fn a_jwks_url_over_https_is_fetched_and_an_untrusted_one_is_not() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().expect("dir");
    let idp_cert = support::tls::TestCert::new();
    let (ca_path, _) = idp_cert.write(dir.path());
    let set = jwks(&[jwk(Algorithm::RS256, RSA_K1, "k1")]);
    let idp = https_idp(&idp_cert, set.clone());
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let https_config = |url: String, ca: Option<&std::path::Path>| {
        let ca =
            ca.map(|p| format!("jwks_ca = {:?}\n", p.display().to_string())).unwrap_or_default();
        config("unused", &service, &profiles).replace(
            "jwks_url = \"http://unused/.well-known/jwks.json\"\n",
            &format!("jwks_url = \"{url}\"\n{ca}"),
        )
    };
    let url = format!("https://{}/.well-known/jwks.json", idp.addr);
    let gateway = start_gateway(&https_config(url.clone(), Some(&ca_path))).await;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    assert!(
        eventually(Duration::from_secs(5), || idp.calls.load(Ordering::SeqCst) >= 1).await,
        "the JWKS is fetched over TLS at start"
    );
    let page = get_with(gateway.addr, "/orders/1", &good).await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    gateway.stop(false).await;

    // The same IdP without its CA: the handshake fails, no set is taken.
    let before = idp.calls.load(Ordering::SeqCst);
    let gateway = start_gateway(&https_config(url, None)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = get_with(gateway.addr, "/orders/1", &good).await;
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    assert_eq!(refused.json()["error"], "auth_unavailable");
    assert_eq!(idp.calls.load(Ordering::SeqCst), before, "no request got through the handshake");
    gateway.stop(false).await;
}

/// An HTTPS IdP that accepts and then never says a word (no handshake):
/// the fetch gives up within its bound, a JWT request waits at most its
/// 1 s for keys and gets 503, and nothing else waits on it.
#[actix_rt::test]
async fn a_silent_https_idp_costs_a_request_at_most_its_wait() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = support::tls::TestCert::new();
    let (ca_path, _) = ca.write(dir.path());
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    // Accepted connections are kept open and never read.
    let held = std::thread::spawn(move || silent.incoming().take(8).collect::<Vec<_>>());
    let service = FakeBackend::start(Reply::ok(r#"{"id":1}"#));
    let profiles = profile_service();
    let toml = config("unused", &service, &profiles).replace(
        "jwks_url = \"http://unused/.well-known/jwks.json\"\n",
        &format!(
            "jwks_url = \"https://{addr}/.well-known/jwks.json\"\njwks_ca = {:?}\n",
            ca_path.display().to_string()
        ),
    );
    let gateway = start_gateway(&toml).await;
    let good = sign(Algorithm::RS256, RSA_K1, "k1", &claims("user-1"));
    let started = std::time::Instant::now();
    let refused = get_with(gateway.addr, "/orders/1", &good).await;
    assert_eq!(refused.status, 503, "{}", String::from_utf8_lossy(&refused.body));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(request(gateway.addr, "GET", "/open/1", &[], None).await.status, 200);
    gateway.stop(false).await;
    drop(held);
}
