//! Bearer JWTs: reading `Authorization: Bearer`, verifying a token against
//! `[auth.jwt]` (signature, `alg`, `kid`, `iss`, `aud`, `exp`, `nbf`), the
//! route's `scopes`, and what the token tells services (`x-consumer`,
//! `claims_to_headers`). The answers it refuses with are SPEC.md's: 401
//! `Bearer realm="mosaic"` (no token) or with `error="invalid_token"`, 403
//! `error="insufficient_scope"`, 503 `auth_unavailable` before any key is
//! known.
//!
//! Crypto is `jsonwebtoken` 12 with its RustCrypto backend (`rust_crypto`):
//! pure Rust, no OpenSSL, no C toolchain. A token never picks how it is
//! checked: its `alg` must be in `algorithms` *and* among what the key it
//! names verifies (see `jwks::KeySet::find`), and the library is given that
//! one algorithm only.
//!
//! Verifying a signature costs 50-150 µs in pure Rust (BENCHMARKS.md: more
//! than the rest of a page), and a client sends the same token on every
//! request until it expires. Tokens that verified are remembered, as
//! Envoy's `jwt_cache_config` does: a direct-mapped cache of
//! [`TOKEN_CACHE_SLOTS`] slots (a random-seeded hash picks the slot), each
//! holding the whole token (compared in constant time), its claims, the
//! key set it was checked with and when it expires (`exp` + `leeway`). A hit
//! skips the signature and the claim checks, never the route's scopes or
//! the headers; a new key set (a JWKS refresh, a rotation) or the expiry
//! makes it a miss. Only verified tokens go in, so forged ones fill nothing.

use std::hash::BuildHasher as _;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{KeySet, KeyStore, Lookup};
use crate::config::JwtConfig;

/// Longest token read: far above any real one, and bounds the work of
/// decoding a hostile one.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest claim value copied into a header.
const MAX_CLAIM_HEADER_LEN: usize = 1024;
/// Longest consumer name taken from a token (a limit key and a log field).
const MAX_CONSUMER_LEN: usize = 256;
/// Slots of the verified-token cache.
const TOKEN_CACHE_SLOTS: usize = 1024;
/// Longest token the cache holds (longer ones are verified every time).
const MAX_CACHED_TOKEN: usize = 4096;

/// A token that verified: what a later request with the same token needs.
struct VerifiedToken {
    token: Box<[u8]>,
    /// The key set it was verified with: another set is a miss.
    keys: Arc<KeySet>,
    /// Seconds since the epoch from which it is expired (`exp` + `leeway`).
    expires: u64,
    claims: Arc<Map<String, Value>>,
}

impl std::fmt::Debug for VerifiedToken {
    // The token is a credential: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken").field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// One slot of the verified-token cache.
type TokenSlot = parking_lot::Mutex<Option<VerifiedToken>>;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `WWW-Authenticate` of a request without a token.
const CHALLENGE: &str = r#"Bearer realm="mosaic""#;
/// `WWW-Authenticate` of a bad token.
const CHALLENGE_INVALID: &str = r#"Bearer realm="mosaic", error="invalid_token""#;
/// `WWW-Authenticate` of a token without a route's scopes.
const CHALLENGE_SCOPE: &str = r#"Bearer realm="mosaic", error="insufficient_scope""#;
/// The API key challenge, offered beside the bearer one on `key_or_jwt`.
const CHALLENGE_KEY: &str = r#"ApiKey realm="mosaic""#;

/// What a verified token tells services.
#[derive(Debug)]
pub struct Verified {
    /// The `consumer_claim`: name and `x-consumer` value.
    pub consumer: Option<(Arc<str>, HeaderValue)>,
    /// `claims_to_headers`, for the claims the token has.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why a bearer token did not let a request through.
#[derive(Debug)]
pub enum TokenRefusal {
    /// No bearer token: 401. `or_key` names the key header a `key_or_jwt`
    /// route would have taken instead.
    Missing {
        /// The key header, on `key_or_jwt` routes.
        or_key: Option<HeaderName>,
    },
    /// A token that does not verify: 401 `invalid_token`.
    Invalid(String),
    /// A good token without a route scope: 403.
    InsufficientScope(String),
    /// No key known yet (the JWKS was never fetched): 503.
    Unavailable,
}

impl TokenRefusal {
    /// The answer sent for it.
    pub fn into_response(self) -> HttpResponse {
        let (status, error, detail, challenges): (_, _, String, &[&str]) = match self {
            TokenRefusal::Missing { or_key: None } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a bearer token is required (Authorization: Bearer <token>)".into(),
                &[CHALLENGE],
            ),
            TokenRefusal::Missing { or_key: Some(key) } => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("an API key in {key} or a bearer token is required"),
                &[CHALLENGE, CHALLENGE_KEY],
            ),
            TokenRefusal::Invalid(detail) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", detail, &[CHALLENGE_INVALID])
            }
            TokenRefusal::InsufficientScope(detail) => {
                (StatusCode::FORBIDDEN, "forbidden", detail, &[CHALLENGE_SCOPE])
            }
            TokenRefusal::Unavailable => {
                let mut response = crate::edge::error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    Some("no token verification key has been fetched yet"),
                );
                // The next background try is at most 10 s away.
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
                return response;
            }
        };
        let mut response = crate::edge::error_response(status, error, Some(&detail));
        for challenge in challenges {
            response
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// The bearer token of a request: `None` without one (no `Authorization`,
/// or another scheme); an error for two `Authorization` headers or a
/// token that cannot be one.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, TokenRefusal> {
    let mut values = headers.get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(TokenRefusal::Invalid("more than one Authorization header".into()));
    }
    let bytes = value.as_bytes();
    let scheme = b"bearer ";
    if bytes.len() < scheme.len() || !bytes[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return Ok(None);
    }
    let token = std::str::from_utf8(&bytes[scheme.len()..]).map(str::trim).unwrap_or_default();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(TokenRefusal::Invalid("not a JWT".into()));
    }
    Ok(Some(token))
}

/// `[auth.jwt]`, ready for requests.
#[derive(Debug)]
pub struct JwtVerifier {
    config: Arc<JwtConfig>,
    store: Arc<KeyStore>,
    /// One validation per accepted algorithm, each allowing that one only.
    validations: Vec<(Algorithm, Validation)>,
    /// `claims_to_headers` with parsed names.
    claim_headers: Vec<(String, HeaderName)>,
    /// Tokens that verified (see the module).
    verified: Box<[TokenSlot]>,
    slot_hasher: foldhash::quality::RandomState,
}

impl JwtVerifier {
    /// The verifier of `config`. The key store of `previous` is kept when
    /// `[auth.jwt]` is unchanged: a reload neither forgets fetched keys nor
    /// asks the IdP again.
    pub fn build(
        config: &Arc<JwtConfig>,
        previous: Option<&JwtVerifier>,
        control: &actix_rt::ArbiterHandle,
    ) -> JwtVerifier {
        let store = previous
            .filter(|old| *old.config == **config)
            .map(|old| old.store.clone())
            .unwrap_or_else(|| KeyStore::start(config, control));
        let validations = config
            .algorithms
            .iter()
            .map(|&alg| {
                let mut validation = Validation::new(alg);
                validation.leeway = config.leeway.as_secs();
                validation.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(issuer) = &config.issuer {
                    validation.set_issuer(&[issuer]);
                    required.push("iss");
                }
                if config.audiences.is_empty() {
                    validation.validate_aud = false;
                } else {
                    validation.set_audience(&config.audiences);
                    required.push("aud");
                }
                validation.set_required_spec_claims(&required);
                (alg, validation)
            })
            .collect();
        let claim_headers = config
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| {
                Some((claim.clone(), HeaderName::from_bytes(header.as_bytes()).ok()?))
            })
            .collect();
        JwtVerifier {
            config: config.clone(),
            store,
            validations,
            claim_headers,
            verified: (0..TOKEN_CACHE_SLOTS).map(|_| parking_lot::Mutex::new(None)).collect(),
            slot_hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// The header names tokens set (`claims_to_headers`): no client's copy
    /// of them reaches a service, on any route.
    pub fn header_names(&self) -> impl Iterator<Item = &HeaderName> {
        self.claim_headers.iter().map(|(_, name)| name)
    }

    /// Verifies `token` and checks it holds every one of `scopes`.
    pub async fn verify(&self, token: &str, scopes: &[String]) -> Result<Verified, TokenRefusal> {
        let slot = &self.verified[self.slot_hasher.hash_one(token) as usize % TOKEN_CACHE_SLOTS];
        let cached = self.store.keys().and_then(|keys| {
            let slot = slot.lock();
            let entry = slot.as_ref()?;
            let hit = Arc::ptr_eq(&entry.keys, &keys)
                && now_secs() < entry.expires
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    entry.token.as_ref(),
                    token.as_bytes(),
                ));
            hit.then(|| entry.claims.clone())
        });
        let claims = match cached {
            Some(claims) => claims,
            None => {
                let (claims, keys) = self.verify_signed(token).await?;
                let claims = Arc::new(claims);
                let exp = claims.get("exp").and_then(Value::as_u64);
                if let Some(exp) = exp.filter(|_| token.len() <= MAX_CACHED_TOKEN) {
                    *slot.lock() = Some(VerifiedToken {
                        token: token.as_bytes().into(),
                        keys,
                        expires: exp.saturating_add(self.config.leeway.as_secs()),
                        claims: claims.clone(),
                    });
                }
                claims
            }
        };
        self.admit(&claims, scopes)
    }

    /// The signature and the claims of `token` checked: its claims, and
    /// the key set that verified it.
    async fn verify_signed(
        &self,
        token: &str,
    ) -> Result<(Map<String, Value>, Arc<KeySet>), TokenRefusal> {
        let invalid = |detail: &str| TokenRefusal::Invalid(detail.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let alg = header.alg;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(TokenRefusal::Invalid(format!("algorithm {alg:?} is not accepted")));
        };
        let kid = header.kid.as_deref();
        let mut keys = match self.store.keys() {
            Some(keys) => keys,
            None => self.store.fetch_for_unknown_key().await.ok_or(TokenRefusal::Unavailable)?,
        };
        if let Lookup::UnknownKid = keys.find(kid, alg) {
            // Perhaps a rotation: one fetch may tell (at most one per 10 s).
            if let Some(fresh) = self.store.fetch_for_unknown_key().await {
                keys = fresh;
            }
        }
        let key = match keys.find(kid, alg) {
            Lookup::Found(key) => key,
            Lookup::UnknownKid => return Err(invalid("unknown key id (kid)")),
            Lookup::WrongAlgorithm => {
                return Err(TokenRefusal::Invalid(format!(
                    "algorithm {alg:?} does not fit the token's key"
                )))
            }
            Lookup::NeedsKid => return Err(invalid("the token names no key id (kid)")),
        };
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| TokenRefusal::Invalid(explain(e.kind()).to_string()))?
            .claims;
        Ok((claims, keys))
    }

    /// What a verified token's `claims` let through: the route's `scopes`
    /// checked, the consumer and the claim headers read.
    fn admit(
        &self,
        claims: &Map<String, Value>,
        scopes: &[String],
    ) -> Result<Verified, TokenRefusal> {
        if let Some(missing) = scopes.iter().find(|s| !has_scope(claims, s)) {
            return Err(TokenRefusal::InsufficientScope(format!(
                "the token lacks the scope {missing:?}"
            )));
        }
        let consumer = claims
            .get(&self.config.consumer_claim)
            .and_then(scalar)
            .filter(|name| !name.is_empty() && name.len() <= MAX_CONSUMER_LEN)
            .and_then(|name| {
                let value = HeaderValue::from_str(&name).ok()?;
                Some((Arc::<str>::from(name), value))
            });
        let headers = self
            .claim_headers
            .iter()
            .filter_map(|(claim, name)| {
                // A claim that cannot be a header value is left out, not
                // mangled: a service reads its absence plainly.
                let text = scalar(claims.get(claim)?)?;
                if text.len() > MAX_CLAIM_HEADER_LEN {
                    return None;
                }
                Some((name.clone(), HeaderValue::from_str(&text).ok()?))
            })
            .collect();
        Ok(Verified { consumer, headers })
    }
}

/// A claim as text: strings as they are, numbers and booleans written out;
/// objects, arrays and null are not a header value.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether the token's `scope` (space-separated, RFC 8693; or an array of
/// strings, as some IdPs send) holds `wanted`.
fn has_scope(claims: &Map<String, Value>, wanted: &str) -> bool {
    match claims.get("scope") {
        Some(Value::String(scopes)) => scopes.split_ascii_whitespace().any(|s| s == wanted),
        Some(Value::Array(scopes)) => scopes.iter().any(|s| s.as_str() == Some(wanted)),
        _ => false,
    }
}

/// The `detail` of a token the library refused.
fn explain(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token is for another audience (aud)",
        ErrorKind::InvalidIssuer => "the token is from another issuer (iss)",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "the algorithm does not fit the key",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "the token has no expiry (exp)",
            "iss" => "the token has no issuer (iss)",
            "aud" => "the token has no audience (aud)",
            _ => "the token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "a time or audience claim is malformed",
        _ => "malformed token",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_whole_words_of_the_scope_claim() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"scope":"orders:read  cart:write"}"#).unwrap();
        assert!(has_scope(&claims, "orders:read"));
        assert!(has_scope(&claims, "cart:write"));
        assert!(!has_scope(&claims, "orders"), "not a prefix");
        let array: Map<String, Value> = serde_json::from_str(r#"{"scope":["a","b"]}"#).unwrap();
        assert!(has_scope(&array, "b"));
        assert!(!has_scope(&Map::new(), "a"));
    }

    /// The verified-token cache: a hit still needs the route's scopes, a
    /// token that differs from a remembered one is verified (and refused),
    /// and a remembered token expires on time.
    #[actix_rt::test]
    async fn a_remembered_token_still_needs_its_scopes_and_still_expires() {
        let secret = "s".repeat(40);
        let toml = format!(
            r#"
[auth.jwt]
secret = "{secret}"
leeway = "0s"

[backends.shop]
instances = ["127.0.0.1:9"]

[[routes]]
path = "/a"
deadline = "1s"
auth = "jwt"
sections = [{{ name = "a", backend = "shop", path = "/a" }}]
"#
        );
        let config = crate::config::parse_str(&toml).unwrap();
        let jwt = config.auth.as_ref().unwrap().jwt.clone().unwrap();
        let verifier = JwtVerifier::build(&jwt, None, &actix_rt::Arbiter::current());
        let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
        let claims = serde_json::json!({ "sub": "u", "exp": now_secs() + 2, "scope": "a" });
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let scope_a = ["a".to_string()];
        for _ in 0..3 {
            assert!(verifier.verify(&token, &scope_a).await.is_ok());
        }
        let refused = verifier.verify(&token, &["b".to_string()]).await;
        assert!(matches!(refused, Err(TokenRefusal::InsufficientScope(_))), "{refused:?}");
        // Another signature on the same header and claims is not the
        // remembered token.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let first = if signature.starts_with('A') { 'B' } else { 'A' };
        let forged = format!("{signed}.{first}{}", &signature[1..]);
        assert!(matches!(verifier.verify(&forged, &[]).await, Err(TokenRefusal::Invalid(_))));
        // exp is wall-clock seconds: past it, the remembered token is refused.
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
        let expired = verifier.verify(&token, &scope_a).await;
        assert!(matches!(expired, Err(TokenRefusal::Invalid(_))), "{expired:?}");
    }

    #[test]
    fn only_a_single_bearer_authorization_is_a_token() {
        let mut headers = HeaderMap::new();
        assert!(matches!(bearer(&headers), Ok(None)));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwdw=="));
        assert!(matches!(bearer(&headers), Ok(None)), "another scheme is no token");
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  a.b.c "));
        assert!(matches!(bearer(&headers), Ok(Some("a.b.c"))));
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x.y.z"));
        assert!(matches!(bearer(&headers), Err(TokenRefusal::Invalid(_))));
    }
}
