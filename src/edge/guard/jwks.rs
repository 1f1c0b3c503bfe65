//! The keys JWTs are verified with: a JWK set parsed into verification keys
//! ([`KeySet`]), and where it comes from ([`KeyStore`]): a fixed set
//! (`jwks_file`, `secret`) or `jwks_url`, fetched in the background.
//!
//! A fetched set is replaced only by a good fetch: when the IdP is down, the
//! keys of the last good fetch stay in use. An unknown `kid` may mean the IdP
//! rotated its keys, so it asks for a fetch, but at most one such fetch runs
//! per [`ON_DEMAND_COOLDOWN`] for the whole process (a flood of forged `kid`s
//! must not become a flood of requests to the IdP); a request waits for that
//! fetch at most [`ON_DEMAND_WAIT`]. Fetches run on the control arbiter, never
//! on a request's own task, so a client that hangs up does not cancel one.
//!
//! The fetch is mosaic's own HTTP/1.1 client (`backend::client::get`): plain
//! `http://` only, body bounded by [`MAX_JWKS_BYTES`], time by
//! [`FETCH_TIMEOUT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_rt::ArbiterHandle;
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{JwtConfig, JwtKeys};

/// Between two fetches asked for by unknown `kid`s, process-wide.
pub const ON_DEMAND_COOLDOWN: Duration = Duration::from_secs(10);
/// How long a request with an unknown `kid` waits for the fetch it asked for
/// (or found running): a rotated key is accepted on its first request, and a
/// slow IdP costs that request this much at most.
pub const ON_DEMAND_WAIT: Duration = Duration::from_secs(1);
/// One fetch, connect to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest JWKS body read (real sets are a few KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one set: a token names its key by `kid`, so the set's
/// size bounds a lookup and the memory of a hostile answer.
pub const MAX_KEYS: usize = 64;
/// Next background try after a failed fetch (capped by `refresh`).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Why a JWK set gave no usable key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not `{"keys": [...]}`.
    #[error("not a JWK set (expected {{\"keys\": [...]}}): {0}")]
    Shape(String),
    /// Keys, but none for the accepted algorithms.
    #[error("no key in the set is usable with the accepted algorithms ({0})")]
    NoUsableKey(String),
}

/// Why a fetch failed (logged and counted; the last keys stay).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("request failed: {0:?}")]
    Request(crate::backend::FetchError),
    #[error("https request failed: {0}")]
    Https(String),
    #[error("status {0}")]
    Status(u16),
    #[error(transparent)]
    Keys(#[from] JwksError),
}

/// One verification key.
struct Key {
    /// Its `kid`, when the set gave one.
    kid: Option<String>,
    /// The algorithms it verifies (its type, narrowed by its own `alg`, and
    /// by `algorithms`): what stops a token from picking how its signature
    /// is checked.
    algorithms: Vec<Algorithm>,
    decoding: DecodingKey,
}

/// Verification keys, ready for requests.
pub struct KeySet {
    keys: Vec<Key>,
    /// The HS256 `secret`: its one key is used whatever `kid` a token names.
    shared_secret: bool,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish_non_exhaustive()
    }
}

/// What a lookup found for a token's header.
pub enum Lookup<'a> {
    /// The key to verify with.
    Found(&'a DecodingKey),
    /// No key has this `kid` (perhaps a rotation not fetched yet).
    UnknownKid,
    /// The key exists but is of another type than the token's `alg`.
    WrongAlgorithm,
    /// No `kid`, and not exactly one key for the `alg`.
    NeedsKid,
}

impl KeySet {
    /// The key set of an HS256 `secret`.
    pub fn secret(secret: &[u8]) -> Option<KeySet> {
        let decoding = DecodingKey::from_secret(secret).ok()?;
        let key = Key { kid: None, algorithms: vec![Algorithm::HS256], decoding };
        Some(KeySet { keys: vec![key], shared_secret: true })
    }

    /// Parses a JWK set, keeping the keys usable with `accepted` (at most
    /// [`MAX_KEYS`]). Keys for encryption, of unknown types, or symmetric
    /// (`oct`: a JWKS is public, so a secret in one is no secret) are skipped.
    pub fn parse(bytes: &[u8], accepted: &[Algorithm]) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            keys: Vec<serde_json::Value>,
        }
        let raw: Raw =
            serde_json::from_slice(bytes).map_err(|e| JwksError::Shape(e.to_string()))?;
        let keys: Vec<Key> = raw
            .keys
            .into_iter()
            // One odd key (a type this build does not know) must not cost the others.
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| key(&jwk, accepted))
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            let names: Vec<_> = accepted.iter().map(|a| format!("{a:?}")).collect();
            return Err(JwksError::NoUsableKey(names.join(", ")));
        }
        Ok(KeySet { keys, shared_secret: false })
    }

    /// The key for a token whose header says `kid` and `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let usable = |key: &&Key| key.algorithms.contains(&alg);
        if self.shared_secret {
            return match self.keys.first().filter(usable) {
                Some(key) => Lookup::Found(&key.decoding),
                None => Lookup::WrongAlgorithm,
            };
        }
        match kid {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                None => Lookup::UnknownKid,
                Some(key) if usable(&key) => Lookup::Found(&key.decoding),
                Some(_) => Lookup::WrongAlgorithm,
            },
            None => {
                let mut candidates = self.keys.iter().filter(usable);
                match (candidates.next(), candidates.next()) {
                    (Some(key), None) => Lookup::Found(&key.decoding),
                    _ => Lookup::NeedsKid,
                }
            }
        }
    }
}

/// A JWK's verification key, if it is one for `accepted`.
fn key(jwk: &Jwk, accepted: &[Algorithm]) -> Option<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        // The curve fixes the algorithm: a P-256 key never checks ES384.
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => return None,
    };
    let own = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::try_from(alg).ok()?),
        None => None,
    };
    let algorithms: Vec<Algorithm> = by_type
        .iter()
        .copied()
        .filter(|alg| accepted.contains(alg) && own.is_none_or(|own| own == *alg))
        .collect();
    if algorithms.is_empty() {
        return None;
    }
    let decoding = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key { kid: jwk.common.key_id.clone(), algorithms, decoding })
}

/// Where `jwks_url` points, split for mosaic's client.
#[derive(Debug, Clone)]
struct Remote {
    /// `jwks_url`, for logs (and the request, over HTTPS).
    url: String,
    /// How it is reached.
    via: Via,
}

/// Plain HTTP through mosaic's own client, or HTTPS through awc.
#[derive(Clone)]
enum Via {
    Http {
        /// `host:port`.
        address: String,
        /// Path and query.
        target: String,
    },
    Https(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Http { .. } => "http",
            Via::Https(_) => "https",
        })
    }
}

/// The keys of one `[auth.jwt]`, shared by every worker; kept across reloads
/// that leave `[auth.jwt]` as it is.
pub struct KeyStore {
    /// `None` for a fixed set.
    remote: Option<Remote>,
    accepted: Vec<Algorithm>,
    /// `None` until the first good fetch.
    keys: ArcSwapOption<KeySet>,
    /// Bumped after every fetch, good or not: waiters wake on it.
    fetched: watch::Sender<u64>,
    in_flight: AtomicBool,
    /// When the last on-demand fetch was started.
    last_on_demand: Mutex<Option<Instant>>,
    /// Where fetches run.
    control: ArbiterHandle,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("url", &self.remote.as_ref().map(|r| &r.url))
            .field("keys", &self.keys.load())
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// The store of `config`. A `jwks_url` store starts its refresh task on
    /// `control` (it ends when the store is dropped); a file or secret is
    /// ready at once (validation already parsed it).
    pub fn start(config: &JwtConfig, control: &ArbiterHandle) -> Arc<KeyStore> {
        let (remote, fixed) = match &config.keys {
            JwtKeys::Url { url, address, target } => (
                Some(Remote {
                    url: url.clone(),
                    via: Via::Http { address: address.clone(), target: target.clone() },
                }),
                None,
            ),
            JwtKeys::Https { url, tls } => {
                (Some(Remote { url: url.clone(), via: Via::Https(tls.config.clone()) }), None)
            }
            JwtKeys::File { jwks, .. } => (None, KeySet::parse(jwks, &config.algorithms).ok()),
            JwtKeys::Secret(secret) => (None, KeySet::secret(secret.expose())),
        };
        let store = Arc::new(KeyStore {
            remote,
            accepted: config.algorithms.clone(),
            keys: ArcSwapOption::new(fixed.map(Arc::new)),
            fetched: watch::Sender::new(0),
            in_flight: AtomicBool::new(false),
            last_on_demand: Mutex::new(None),
            control: control.clone(),
        });
        if store.remote.is_some() {
            control.spawn(keep_fresh(Arc::downgrade(&store), config.refresh));
        }
        store
    }

    /// The current keys; `None` before the first good fetch.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Asks for a fetch because a token named a key (or needed a set) that
    /// is not here, and waits for it at most [`ON_DEMAND_WAIT`]: the keys
    /// after that fetch, or the same keys when none may run now.
    pub async fn fetch_for_unknown_key(self: &Arc<Self>) -> Option<Arc<KeySet>> {
        if self.remote.is_none() {
            return self.keys();
        }
        // Subscribed before looking, so a fetch that ends in between still
        // counts as news.
        let mut news = self.fetched.subscribe();
        let wait = if self.in_flight.load(Ordering::Acquire) {
            true
        } else {
            let mut last = self.last_on_demand.lock();
            let now = Instant::now();
            if last.is_some_and(|at| now.duration_since(at) < ON_DEMAND_COOLDOWN) {
                false
            } else {
                *last = Some(now);
                let store = self.clone();
                // The control arbiter is gone only while the gateway stops.
                self.control.spawn(async move {
                    store.refresh_once().await;
                })
            }
        };
        if wait {
            let _ = tokio::time::timeout(ON_DEMAND_WAIT, news.changed()).await;
        }
        self.keys()
    }

    /// One fetch: a good set replaces the keys, anything else keeps them.
    /// Whether it was good.
    async fn refresh_once(&self) -> bool {
        let Some(remote) = &self.remote else { return true };
        if self.in_flight.swap(true, Ordering::AcqRel) {
            // One fetch at a time: the running one answers for both.
            return true;
        }
        let result = fetch(remote, &self.accepted).await;
        let good = match result {
            Ok(keys) => {
                tracing::debug!(url = %remote.url, ?keys, "JWKS fetched");
                self.keys.store(Some(Arc::new(keys)));
                metrics::counter!("mosaic_jwks_fetches_total", "result" => "ok").increment(1);
                true
            }
            Err(error) => {
                let kept =
                    if self.keys.load().is_some() { "the last keys stay" } else { "no keys yet" };
                tracing::warn!(url = %remote.url, %error, "JWKS fetch failed: {kept}");
                metrics::counter!("mosaic_jwks_fetches_total", "result" => "error").increment(1);
                false
            }
        };
        self.in_flight.store(false, Ordering::Release);
        self.fetched.send_modify(|n| *n = n.wrapping_add(1));
        good
    }
}

/// Fetches and parses the set at `remote`.
async fn fetch(remote: &Remote, accepted: &[Algorithm]) -> Result<KeySet, FetchError> {
    let (address, target) = match &remote.via {
        Via::Http { address, target } => (address, target),
        Via::Https(tls) => return fetch_https(&remote.url, tls, accepted).await,
    };
    let reply = tokio::time::timeout(
        FETCH_TIMEOUT,
        crate::backend::client::get(address, target, &[], MAX_JWKS_BYTES),
    )
    .await
    .map_err(|_| FetchError::Timeout)?
    .map_err(FetchError::Request)?;
    if reply.status != 200 {
        return Err(FetchError::Status(reply.status));
    }
    Ok(KeySet::parse(&reply.body, accepted)?)
}

/// The same over HTTPS with awc, a new connection each time (a fetch is
/// rare). No redirects are followed (the set must be where the file says),
/// the exchange is held to [`FETCH_TIMEOUT`] and the body to
/// [`MAX_JWKS_BYTES`]. awc's futures are not `Send`, and the fetch runs in
/// tasks spawned onto the control arbiter from other threads: the request
/// is its own local task on the arbiter's thread, and this future only
/// waits for its answer.
async fn fetch_https(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    accepted: &[Algorithm],
) -> Result<KeySet, FetchError> {
    let (done, answer) = tokio::sync::oneshot::channel();
    let (url, tls) = (url.to_string(), tls.clone());
    actix_rt::spawn(async move {
        let _ = done.send(https_get(&url, tls).await);
    });
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, answer)
        .await
        .map_err(|_| FetchError::Timeout)?
        .map_err(|_| FetchError::Https("the request task ended".into()))??;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    Ok(KeySet::parse(&body, accepted)?)
}

/// One GET of `url` over HTTPS: status and body.
async fn https_get(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(u16, bytes::Bytes), FetchError> {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(tls).timeout(FETCH_TIMEOUT))
        .timeout(FETCH_TIMEOUT)
        .disable_redirects()
        .finish();
    let mut response =
        client.get(url).send().await.map_err(|e| FetchError::Https(e.to_string()))?;
    let status = response.status().as_u16();
    let body = response
        .body()
        .limit(MAX_JWKS_BYTES)
        .await
        .map_err(|e| FetchError::Https(e.to_string()))?;
    Ok((status, body))
}

/// Fetches at start, then every `refresh`; after a failure sooner, until
/// the store is dropped.
async fn keep_fresh(store: Weak<KeyStore>, refresh: Duration) {
    loop {
        let Some(current) = store.upgrade() else { return };
        let good = current.refresh_once().await;
        drop(current);
        let pause = if good { refresh } else { refresh.min(RETRY_AFTER_FAILURE) };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}"#;

    #[test]
    fn a_set_keeps_the_keys_it_can_use_and_says_which_verifies_what() {
        let set = format!(
            r#"{{"keys":[{RSA_JWK},{{"kty":"oct","kid":"s","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ"}},{{"kty":"XYZ","kid":"odd"}}]}}"#
        );
        let keys = KeySet::parse(set.as_bytes(), &[Algorithm::RS256, Algorithm::ES256]).unwrap();
        assert!(matches!(keys.find(Some("r1"), Algorithm::RS256), Lookup::Found(_)));
        assert!(matches!(keys.find(None, Algorithm::RS256), Lookup::Found(_)), "the only one");
        assert!(matches!(keys.find(Some("r1"), Algorithm::PS256), Lookup::WrongAlgorithm));
        assert!(matches!(keys.find(Some("r1"), Algorithm::HS256), Lookup::WrongAlgorithm));
        assert!(
            matches!(keys.find(Some("s"), Algorithm::HS256), Lookup::UnknownKid),
            "oct skipped"
        );
        assert!(matches!(keys.find(Some("nope"), Algorithm::RS256), Lookup::UnknownKid));
        assert!(matches!(keys.find(None, Algorithm::ES256), Lookup::NeedsKid));
        assert_eq!(
            KeySet::parse(set.as_bytes(), &[Algorithm::ES256]).unwrap_err(),
            JwksError::NoUsableKey("ES256".into())
        );
        assert!(matches!(KeySet::parse(b"[]", &[Algorithm::RS256]), Err(JwksError::Shape(_))));
    }

    #[test]
    fn a_secret_verifies_hs256_only_whatever_the_kid() {
        let keys = KeySet::secret(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(matches!(keys.find(Some("any"), Algorithm::HS256), Lookup::Found(_)));
        assert!(matches!(keys.find(None, Algorithm::HS384), Lookup::WrongAlgorithm));
        assert!(matches!(keys.find(None, Algorithm::RS256), Lookup::WrongAlgorithm));
    }
}
