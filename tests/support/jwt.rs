//! Signing test tokens and serving JWK sets: the keys are the PEM fixtures
//! in `tests/fixtures/jwt/` (test-only keys, generated with openssl), the
//! JWKS server is a `FakeBackend` (it counts requests).

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// The issuer and audience test configs expect.
pub const ISSUER: &str = "https://id.test";
/// The audience test configs expect.
pub const AUDIENCE: &str = "shop";

pub const RSA_K1: &[u8] = include_bytes!("../fixtures/jwt/rsa-k1.pem");
pub const RSA_K1_PUBLIC: &[u8] = include_bytes!("../fixtures/jwt/rsa-k1.pub.pem");
pub const RSA_K2: &[u8] = include_bytes!("../fixtures/jwt/rsa-k2.pem");
pub const EC_E1: &[u8] = include_bytes!("../fixtures/jwt/ec-e1.pem");

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Good claims for `sub`: right issuer and audience, ten minutes left,
/// scope `orders:read`.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "scope": "orders:read profile" })
}

/// Claims with `changes` laid over [`claims`] (a null removes the claim).
pub fn claims_with(sub: &str, changes: Value) -> Value {
    let mut claims = claims(sub);
    for (k, v) in changes.as_object().expect("object").clone() {
        if v.is_null() {
            claims.as_object_mut().expect("object").remove(&k);
        } else {
            claims[k] = v;
        }
    }
    claims
}

/// A token signed with `pem` (RSA or EC by `alg`) under `kid`.
pub fn sign(alg: Algorithm, pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .expect("fixture key");
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, &key).expect("signs")
}

/// An unsigned token (`alg: none`).
pub fn unsigned(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT", "kid": "k1" })), b64(claims))
}

/// A token whose header names `kid` and whose signature is junk.
pub fn forged(kid: &str) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({ "alg": "RS256", "typ": "JWT", "kid": kid })),
        b64(&claims("mallory"))
    )
}

/// The public JWK of a fixture key.
pub fn jwk(alg: Algorithm, pem: &[u8], kid: &str) -> Jwk {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_rsa_pem(pem),
    }
    .expect("fixture key");
    let mut jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
    jwk.common.key_id = Some(kid.to_string());
    jwk
}

/// A JWK set of these keys, as JSON.
pub fn jwks(keys: &[Jwk]) -> String {
    serde_json::to_string(&JwkSet { keys: keys.to_vec() }).expect("json")
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
