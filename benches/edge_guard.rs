//! What the edge's guard costs per request (issue 18), each step as the gate
//! runs it:
//!
//! - `jwt/rs256_cached_key`, `jwt/es256_cached_key`: `JwtVerifier::verify`
//!   of valid tokens whose key is already in the key store (a JWK set from
//!   `jwks_file`, the keys of `tests/fixtures/jwt/`): header decode, key
//!   lookup by `kid`, signature, `exp`/`iss`/`aud`, the consumer claim and
//!   one `claims_to_headers` header. 4,096 different tokens in turn, more
//!   than the verified-token cache holds, so each one is verified.
//! - `jwt/rs256_remembered`, `jwt/es256_remembered`: one token again and
//!   again, as a client sends it: the verified-token cache answers.
//! - `rate_limit/one_key`: a local GCRA check of one busy key (the bucket
//!   always has room: the limit is far above the loop's rate);
//!   `rate_limit/10k_keys`: the same over 10,000 client addresses in turn
//!   (a shard lookup that misses the CPU cache more often).
//!
//! Run: `cargo bench --bench edge_guard`. Results and dates: BENCHMARKS.md.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use mosaic::config::{LimitBy, LimitPolicy, RateLimitConfig};
use mosaic::edge::guard::jwt::JwtVerifier;
use mosaic::edge::guard::limiter::{LimitKey, Limiter, Verdict};

const RSA_K1: &[u8] = include_bytes!("../tests/fixtures/jwt/rsa-k1.pem");
const EC_E1: &[u8] = include_bytes!("../tests/fixtures/jwt/ec-e1.pem");

fn encoding_key(alg: Algorithm, pem: &[u8]) -> EncodingKey {
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .expect("fixture key")
}

fn jwk(alg: Algorithm, pem: &[u8], kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(alg, pem), alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

fn token(alg: Algorithm, pem: &[u8], kid: &str, user: usize) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let claims = serde_json::json!({
        "sub": format!("user-{user}"), "iss": "https://id.test", "aud": "shop",
        "exp": now + 3600, "scope": "orders:read",
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &encoding_key(alg, pem)).expect("signs")
}

/// A verifier over a `jwks_file` holding the RSA and the EC fixture keys.
fn verifier(dir: &std::path::Path) -> JwtVerifier {
    let set = JwkSet {
        keys: vec![jwk(Algorithm::RS256, RSA_K1, "k1"), jwk(Algorithm::ES256, EC_E1, "e1")],
    };
    let path = dir.join("jwks.json");
    std::fs::write(&path, serde_json::to_string(&set).expect("json")).expect("write jwks");
    let toml = format!(
        r#"
[auth.jwt]
jwks_file = "{}"
issuer = "https://id.test"
audiences = ["shop"]
algorithms = ["RS256", "ES256"]
claims_to_headers = {{ sub = "x-user-id" }}

[backends.shop]
instances = ["127.0.0.1:9"]

[[routes]]
path = "/orders/{{id}}"
deadline = "1s"
auth = "jwt"
sections = [{{ name = "orders", backend = "shop", path = "/orders/{{id}}" }}]
"#,
        path.display()
    );
    let config = mosaic::config::parse_str(&toml).expect("bench config");
    let jwt = config.auth.as_ref().and_then(|a| a.jwt.clone()).expect("[auth.jwt]");
    // A file's keys are ready at once; the arbiter would only run a URL's
    // refresh (an arbiter needs a system).
    let _system = actix_rt::System::new();
    let arbiter = actix_rt::Arbiter::new();
    let verifier = JwtVerifier::build(&jwt, None, &arbiter.handle());
    arbiter.stop();
    verifier
}

fn jwt(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let verifier = verifier(dir.path());
    let mut group = c.benchmark_group("jwt");
    for (name, alg, pem, kid) in [
        ("rs256_cached_key", Algorithm::RS256, RSA_K1, "k1"),
        ("es256_cached_key", Algorithm::ES256, EC_E1, "e1"),
    ] {
        let tokens: Vec<String> = (0..4096).map(|user| token(alg, pem, kid, user)).collect();
        // The keys are in memory: verify completes without waiting.
        let once = verifier.verify(&tokens[0], &[]).now_or_never().expect("no wait");
        assert!(once.is_ok(), "{name}: the bench token verifies");
        let mut next = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % tokens.len();
                verifier.verify(&tokens[next], &[]).now_or_never()
            })
        });
        let remembered = name.replace("cached_key", "remembered");
        group.bench_function(remembered.as_str(), |b| {
            b.iter(|| verifier.verify(std::hint::black_box(&tokens[0]), &[]).now_or_never())
        });
    }
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let config = RateLimitConfig {
        requests: 1_000_000_000,
        per: Duration::from_secs(1),
        burst: 1_000,
        by: LimitBy::Ip,
        policy: LimitPolicy::Local,
    };
    let limiter = Limiter::new(config);
    let mut group = c.benchmark_group("rate_limit");
    let one = LimitKey::ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)));
    assert!(matches!(limiter.check(&one), Verdict::Allowed { .. }));
    group.bench_function("one_key", |b| b.iter(|| limiter.check(std::hint::black_box(&one))));
    let many: Vec<LimitKey> =
        (0..10_000u32).map(|i| LimitKey::ip(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))).collect();
    let mut next = 0;
    group.bench_function("10k_keys", |b| {
        b.iter(|| {
            next = (next + 1) % many.len();
            limiter.check(&many[next])
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, rate_limit);
criterion_main!(benches);
