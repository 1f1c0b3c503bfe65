//! `[auth.jwt]`: where JWT verification keys come from and what a token
//! must say, validated (SPEC.md, "Edge security: TLS, consumers, rate
//! limits").
//!
//! The choices that make a token trustworthy are checked here, once, so a
//! request never meets a contradictory setup: one key source only; an
//! `algorithms` allow-list without `none` whose every entry fits the source
//! (a shared `secret` is HS256 only; a JWK set is public, so no HS* may be
//! checked with it, which is what stops an HS256 token "signed" with an RSA
//! public key); `audiences` required with a JWK set (an IdP issues tokens
//! for many services: without it a token for any of them would pass).
//! A `jwks_file` is read and parsed here, so `mosaic check` and a reload
//! refuse a file that holds no usable key.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::fields::{duration_or, is_header_token, non_empty, read_bounded_file};
use super::sink::{index_path, key_path, Sink};

/// Default `leeway`: clock skew allowed on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Longest `leeway`: beyond it an expired token is simply accepted.
const MAX_LEEWAY: Duration = Duration::from_secs(300);
/// Default `refresh` of a `jwks_url`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Shortest `refresh`: the IdP is asked at most this often by the timer.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest `refresh`: a rotation must be seen within a day.
const MAX_REFRESH: Duration = Duration::from_secs(86_400);
/// Default `consumer_claim`.
pub const DEFAULT_CONSUMER_CLAIM: &str = "sub";
/// Shortest HS256 secret: RFC 7518 3.2 asks for at least the hash's 256 bits.
const MIN_SECRET_LEN: usize = 32;
/// Largest `jwks_file`.
const MAX_JWKS_FILE: u64 = 1024 * 1024;

/// Header names a claim may not be copied into: they frame or route the
/// request, carry credentials, or are set by mosaic for other reasons.
const NOT_A_CLAIM_HEADER: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "expect",
    "cookie",
    "authorization",
    "x-consumer",
    "x-request-id",
    "traceparent",
    "tracestate",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// `[auth.jwt]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwt {
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub jwks_ca: Option<String>,
    pub secret: Option<String>,
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<toml::Value>,
    pub refresh: Option<toml::Value>,
    pub consumer_claim: Option<String>,
    pub claims_to_headers: Option<BTreeMap<String, String>>,
}

/// `[auth.jwt]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtConfig {
    /// Where the verification keys come from.
    pub keys: JwtKeys,
    /// The `iss` a token must carry, when set.
    pub issuer: Option<String>,
    /// A token's `aud` must name one of these (not checked when empty,
    /// which only a `secret` allows).
    pub audiences: Vec<String>,
    /// The algorithms a token's header may name.
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`, whole seconds.
    pub leeway: Duration,
    /// How often `jwks_url` is fetched again.
    pub refresh: Duration,
    /// The claim that names the caller (`x-consumer`, rate limits, logs).
    pub consumer_claim: String,
    /// Claim → request header (lowercase), sorted by claim.
    pub claims_to_headers: Vec<(String, String)>,
}

/// `jwks_url`, `jwks_file` or `secret`.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeys {
    /// A JWK set fetched over HTTP.
    Url {
        /// As written.
        url: String,
        /// `host:port` to connect to.
        address: String,
        /// Path and query to ask for.
        target: String,
    },
    /// A JWK set fetched over HTTPS (awc with rustls): the system's roots
    /// and `jwks_ca`'s are trusted.
    Https {
        /// As written.
        url: String,
        /// The client's TLS config, built when the config is read (the
        /// system store and `jwks_ca` are files: read off the request path).
        tls: JwksTls,
    },
    /// A JWK set in a file, read when the config is.
    File {
        /// As written.
        path: PathBuf,
        /// Its bytes (a change is a new config, so a reload rereads it).
        jwks: Arc<[u8]>,
    },
    /// An HS256 shared secret.
    Secret(Secret),
}

/// The TLS client config of an `https://` `jwks_url`. Two are equal when
/// `jwks_ca` held the same bytes (the system store is taken as unchanged),
/// so a reload that changes nothing keeps the fetched keys.
#[derive(Clone)]
pub struct JwksTls {
    /// Trusting the system's roots and `jwks_ca`'s.
    pub config: Arc<rustls::ClientConfig>,
    ca_digest: Option<[u8; 32]>,
}

impl PartialEq for JwksTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_digest == other.ca_digest
    }
}

impl std::fmt::Debug for JwksTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksTls").field("jwks_ca", &self.ca_digest.is_some()).finish()
    }
}

/// A shared secret; never shown.
#[derive(Clone, PartialEq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// The bytes, for the verifier only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `[auth.jwt]` at `path` (`auth.jwt`); `key_header` is `auth.key_header`
/// (a claim may not be copied over an API key).
pub(crate) fn jwt(raw: RawJwt, key_header: Option<&str>, sink: &mut Sink) -> Option<JwtConfig> {
    const PATH: &str = "auth.jwt";
    let mut ok = true;
    let written: Vec<&str> = [
        raw.jwks_url.as_ref().map(|_| "jwks_url"),
        raw.jwks_file.as_ref().map(|_| "jwks_file"),
        raw.secret.as_ref().map(|_| "secret"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if written.is_empty() {
        sink.push(
            PATH,
            "needs a key source: jwks_url = \"http://127.0.0.1:8900/.well-known/jwks.json\", jwks_file = \"/etc/mosaic/jwks.json\" or secret = \"${JWT_SECRET}\"",
        );
        ok = false;
    } else if written.len() > 1 {
        sink.push(
            key_path(PATH, written[1]),
            format!("only one key source: {} is already set", written[0]),
        );
        ok = false;
    }
    let shared_secret = raw.secret.is_some() && written.len() == 1;
    let algorithms = algorithms(raw.algorithms, shared_secret, sink);
    let keys = if ok {
        keys(raw.jwks_url, raw.jwks_file, raw.jwks_ca, raw.secret, algorithms.as_deref(), sink)
    } else {
        None
    };
    let issuer_path = key_path(PATH, "issuer");
    let issuer = match raw.issuer {
        None => Some(None),
        Some(issuer) if issuer.is_empty() => {
            sink.push(
                issuer_path,
                "empty: the `iss` tokens carry, e.g. \"https://id.example.com\"",
            );
            None
        }
        Some(issuer) => Some(Some(issuer)),
    };
    let audiences = audiences(raw.audiences, shared_secret || written.len() != 1, sink);
    let leeway_path = key_path(PATH, "leeway");
    let leeway =
        duration_or(sink, &leeway_path, raw.leeway.as_ref(), DEFAULT_LEEWAY).filter(|leeway| {
            let problem = if leeway.subsec_nanos() != 0 {
                Some("whole seconds (token times are in seconds), e.g. \"30s\"")
            } else if *leeway > MAX_LEEWAY {
                Some("at most \"5m\": beyond that an expired token is simply accepted")
            } else {
                None
            };
            problem.map(|p| sink.push(&leeway_path, p)).is_none()
        });
    let refresh_path = key_path(PATH, "refresh");
    let refresh = match &raw.refresh {
        Some(_) if written != ["jwks_url"] && !written.is_empty() => {
            sink.push(
                &refresh_path,
                "only a jwks_url is fetched again (a jwks_file is read at start and on reload)",
            );
            None
        }
        value => duration_or(sink, &refresh_path, value.as_ref(), DEFAULT_REFRESH).filter(|d| {
            let ok = (MIN_REFRESH..=MAX_REFRESH).contains(d);
            if !ok {
                sink.push(&refresh_path, "between \"1s\" and \"24h\", e.g. \"5m\"");
            }
            ok
        }),
    };
    let consumer_claim = match raw.consumer_claim {
        None => Some(DEFAULT_CONSUMER_CLAIM.to_string()),
        Some(claim) => {
            let claim = non_empty(Some(claim));
            if claim.is_none() {
                sink.push(key_path(PATH, "consumer_claim"), "empty: a claim name, e.g. \"sub\"");
            }
            claim
        }
    };
    let claims_to_headers = claims_to_headers(raw.claims_to_headers, key_header, sink);
    Some(JwtConfig {
        keys: keys?,
        issuer: issuer?,
        audiences: audiences?,
        algorithms: algorithms?,
        leeway: leeway?,
        refresh: refresh?,
        consumer_claim: consumer_claim?,
        claims_to_headers: claims_to_headers?,
    })
}

/// `algorithms`; the default fits the source (HS256 for a secret, RS256
/// for a JWK set, the most common IdP signature).
fn algorithms(
    raw: Option<Vec<String>>,
    shared_secret: bool,
    sink: &mut Sink,
) -> Option<Vec<Algorithm>> {
    let path = "auth.jwt.algorithms";
    let Some(names) = raw else {
        return Some(vec![if shared_secret { Algorithm::HS256 } else { Algorithm::RS256 }]);
    };
    if names.is_empty() {
        sink.push(path, "empty: list what tokens may be signed with, e.g. [\"RS256\", \"ES256\"]");
        return None;
    }
    let mut ok = true;
    let mut algorithms = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let at = index_path(path, i);
        let problem = match name.parse::<Algorithm>() {
            _ if name.eq_ignore_ascii_case("none") => {
                Some("\"none\" means an unsigned token: never accepted".to_string())
            }
            Err(_) => Some(format!(
                "unknown algorithm {name:?} (use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, or HS256 with a secret)"
            )),
            Ok(alg) if algorithms.contains(&alg) => Some(format!("{name:?} is listed twice")),
            Ok(Algorithm::HS256) if shared_secret => {
                algorithms.push(Algorithm::HS256);
                None
            }
            Ok(_) if shared_secret => {
                Some(format!("{name:?} needs a JWK set: a secret verifies HS256 only"))
            }
            Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Some(format!(
                "{name:?} needs a shared secret, which a JWK set is not (its keys are public: an HS token could be signed with one)"
            )),
            Ok(alg) => {
                algorithms.push(alg);
                None
            }
        };
        if let Some(problem) = problem {
            sink.push(at, problem);
            ok = false;
        }
    }
    ok.then_some(algorithms)
}

fn keys(
    url: Option<String>,
    file: Option<String>,
    ca: Option<String>,
    secret: Option<String>,
    algorithms: Option<&[Algorithm]>,
    sink: &mut Sink,
) -> Option<JwtKeys> {
    let https = url.as_deref().is_some_and(|u| u.starts_with("https://"));
    if ca.is_some() && !https {
        sink.push("auth.jwt.jwks_ca", "only an https:// jwks_url uses a CA file");
        return None;
    }
    if let Some(url) = url {
        if https {
            return jwks_https(url, ca, sink);
        }
        return jwks_url(url, sink);
    }
    if let Some(secret) = secret {
        // The secret is never quoted.
        if secret.len() < MIN_SECRET_LEN {
            sink.push(
                "auth.jwt.secret",
                format!("too short ({} bytes): use at least {MIN_SECRET_LEN}, e.g. `openssl rand -hex 32`", secret.len()),
            );
            return None;
        }
        return Some(JwtKeys::Secret(Secret(secret.into_bytes().into())));
    }
    let path = file?;
    let at = "auth.jwt.jwks_file";
    let jwks = read_bounded_file(&path, MAX_JWKS_FILE, "a JWK set", at, sink)?;
    // Without valid algorithms there is nothing to check the keys against
    // (that error is reported already).
    let algorithms = algorithms?;
    if let Err(e) = crate::edge::guard::jwks::KeySet::parse(&jwks, algorithms) {
        sink.push(at, format!("{path:?}: {e}"));
        return None;
    }
    Some(JwtKeys::File { path: PathBuf::from(path), jwks: jwks.into() })
}

/// Largest `jwks_ca` file.
const MAX_CA_FILE: u64 = 1024 * 1024;

/// An `https://` `jwks_url`: the URL checked and the TLS client config
/// built, trusting the system's roots and the PEM certificates of `ca`.
fn jwks_https(url: String, ca: Option<String>, sink: &mut Sink) -> Option<JwtKeys> {
    let at = "auth.jwt.jwks_url";
    let parsed = url::Url::parse(&url).ok().filter(|u| {
        u.host_str().is_some_and(|h| !h.is_empty())
            && u.username().is_empty()
            && u.password().is_none()
    });
    if parsed.is_none() {
        sink.push(
            at,
            format!("invalid URL {url:?} (e.g. \"https://id.example.com/.well-known/jwks.json\")"),
        );
        return None;
    }
    let mut roots = rustls::RootCertStore::empty();
    // The system store; certificates it cannot parse are skipped (as
    // curl does), and an empty store is fine when `jwks_ca` names the CA.
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    let mut ca_digest = None;
    if let Some(path) = ca {
        let at = "auth.jwt.jwks_ca";
        let pem = read_bounded_file(&path, MAX_CA_FILE, "a PEM file", at, sink)?;
        use rustls::pki_types::pem::PemObject as _;
        let certs: Result<Vec<_>, _> =
            rustls::pki_types::CertificateDer::pem_slice_iter(&pem).collect();
        match certs {
            Ok(certs) if !certs.is_empty() => {
                let (ok, _) = roots.add_parsable_certificates(certs);
                if ok == 0 {
                    sink.push(at, format!("{path:?}: no usable CA certificate"));
                    return None;
                }
            }
            _ => {
                sink.push(at, format!("{path:?} holds no PEM CERTIFICATE block"));
                return None;
            }
        }
        use sha2::Digest as _;
        ca_digest = Some(sha2::Sha256::digest(&pem).into());
    } else if added == 0 {
        sink.push(
            at,
            "no trusted roots: the system has no CA certificates (install ca-certificates) and auth.jwt.jwks_ca is not set",
        );
        return None;
    }
    let config = rustls::ClientConfig::builder_with_provider(super::tls_provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(JwtKeys::Https { url, tls: JwksTls { config: Arc::new(config), ca_digest } })
}

fn jwks_url(url: String, sink: &mut Sink) -> Option<JwtKeys> {
    let at = "auth.jwt.jwks_url";
    let example = "e.g. \"http://127.0.0.1:8900/.well-known/jwks.json\"";
    let parsed = url::Url::parse(&url).ok().filter(|u| {
        u.scheme() == "http"
            && u.host_str().is_some_and(|h| !h.is_empty())
            && u.username().is_empty()
            && u.password().is_none()
    });
    let Some(parsed) = parsed else {
        sink.push(at, format!("invalid URL {url:?} (an http:// URL, {example})"));
        return None;
    };
    let host = parsed.host_str().unwrap_or_default();
    let port = parsed.port_or_known_default().unwrap_or(80);
    // `host_str` keeps an IPv6 address's brackets, as `host:port` needs.
    let address = format!("{host}:{port}");
    let target = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    Some(JwtKeys::Url { url, address, target })
}

fn audiences(raw: Option<Vec<String>>, optional: bool, sink: &mut Sink) -> Option<Vec<String>> {
    let path = "auth.jwt.audiences";
    let audiences = raw.unwrap_or_default();
    if let Some(i) = audiences.iter().position(String::is_empty) {
        sink.push(index_path(path, i), "empty: the `aud` tokens for mosaic carry, e.g. \"shop\"");
        return None;
    }
    if audiences.is_empty() && !optional {
        sink.push(
            path,
            "required with a JWK set: an IdP signs tokens for many services, and without an audience a token for any of them would pass (e.g. audiences = [\"shop\"])",
        );
        return None;
    }
    Some(audiences)
}

fn claims_to_headers(
    raw: Option<BTreeMap<String, String>>,
    key_header: Option<&str>,
    sink: &mut Sink,
) -> Option<Vec<(String, String)>> {
    let path = "auth.jwt.claims_to_headers";
    let mut ok = true;
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (claim, header) in raw.unwrap_or_default() {
        let at = key_path(path, &claim);
        let lower = header.to_ascii_lowercase();
        let token = is_header_token(&header);
        let problem = if claim.is_empty() {
            Some("an empty claim name".to_string())
        } else if !token {
            Some(format!("invalid header name {header:?} (e.g. \"x-user-id\")"))
        } else if NOT_A_CLAIM_HEADER.contains(&lower.as_str()) || key_header == Some(lower.as_str())
        {
            Some(format!("{header:?} cannot carry a claim (it frames, routes or identifies the request): use e.g. \"x-user-id\""))
        } else if let Some((other, _)) = pairs.iter().find(|(_, h)| *h == lower) {
            Some(format!("header {header:?} is already the claim {other:?}'s"))
        } else {
            None
        };
        match problem {
            Some(problem) => {
                sink.push(at, problem);
                ok = false;
            }
            None => pairs.push((claim, lower)),
        }
    }
    ok.then_some(pairs)
}
