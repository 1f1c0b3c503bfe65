//! `[server.tls]`: the certificate and key the edge listener serves HTTPS
//! with, and the oldest TLS version it accepts (SPEC.md, "Edge security").
//!
//! The PEM files are read and the pair checked here (the key must be the
//! certificate's), so `mosaic check` and a reload refuse an unreadable or
//! mismatched pair with the TOML path, and the pair in service is never
//! replaced by one that cannot complete a handshake.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::sink::Sink;

/// Largest certificate chain or key file: a PEM chain is a few KiB.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// The crypto provider every TLS handshake of the edge uses: *ring*.
///
/// rustls 0.23.48 deprecates its *ring* provider for lacking post-quantum
/// key exchange; the alternative, aws-lc-rs, builds aws-lc-sys, which needs
/// cmake and a C toolchain on every machine that builds mosaic. lapin's
/// rustls already uses *ring*, so this adds no second crypto library.
/// Chosen explicitly (not installed as the process default), so no other
/// crate's features can change it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    #[allow(deprecated)]
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// `[server.tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub min_version: Option<String>,
}

/// The oldest protocol version a client may negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }
}

/// `[server.tls]`, validated, with the pair it names already loaded.
#[derive(Clone)]
pub struct TlsConfig {
    /// `cert`: the PEM chain, leaf first.
    pub cert_path: PathBuf,
    /// `key`: the PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_path: PathBuf,
    /// `min_version`.
    pub min_version: TlsVersion,
    /// The chain and the key, checked to belong together.
    pub certified: Arc<CertifiedKey>,
    /// SHA-256 over the two files' bytes: two configs with the same paths
    /// but rotated files are different configs.
    fingerprint: [u8; 32],
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.min_version == other.min_version
            && self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for TlsConfig {
    // The key never appears in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("min_version", &self.min_version)
            .finish_non_exhaustive()
    }
}

/// Validates `[server.tls]`; `None` after reporting every problem.
pub(crate) fn tls(raw: RawTls, sink: &mut Sink) -> Option<TlsConfig> {
    let min_version = match raw.min_version.as_deref() {
        None | Some("1.2") => Some(TlsVersion::Tls12),
        Some("1.3") => Some(TlsVersion::Tls13),
        Some(other) => {
            sink.push(
                "server.tls.min_version",
                format!("{other:?} is not a TLS version mosaic speaks: \"1.2\" or \"1.3\""),
            );
            None
        }
    };
    let cert_path = required(raw.cert, "server.tls.cert", "\"/etc/mosaic/cert.pem\"", sink);
    let key_path = required(raw.key, "server.tls.key", "\"/etc/mosaic/key.pem\"", sink);
    let cert_pem = cert_path.as_ref().and_then(|p| read_pem(p, "server.tls.cert", sink));
    let key_pem = key_path.as_ref().and_then(|p| read_pem(p, "server.tls.key", sink));
    let chain = match (&cert_pem, &cert_path) {
        (Some(pem), Some(path)) => chain(pem, path, sink),
        _ => None,
    };
    let key = match (&key_pem, &key_path) {
        (Some(pem), Some(path)) => private_key(pem, path, sink),
        _ => None,
    };
    let (chain, key) = (chain?, key?);
    let certified = match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(certified) => certified,
        Err(e) => {
            sink.push(
                "server.tls.key",
                format!("does not belong to the certificate in server.tls.cert: {e}"),
            );
            return None;
        }
    };
    let mut fingerprint = Sha256::new();
    fingerprint.update(cert_pem.as_deref()?);
    fingerprint.update(key_pem.as_deref()?);
    Some(TlsConfig {
        cert_path: PathBuf::from(cert_path?),
        key_path: PathBuf::from(key_path?),
        min_version: min_version?,
        certified: Arc::new(certified),
        fingerprint: fingerprint.finalize().into(),
    })
}

fn required(value: Option<String>, at: &str, example: &str, sink: &mut Sink) -> Option<String> {
    match value {
        Some(path) if !path.is_empty() => Some(path),
        _ => {
            sink.push(at, format!("required with [server.tls]: a PEM file, e.g. {example}"));
            None
        }
    }
}

fn read_pem(path: &str, at: &str, sink: &mut Sink) -> Option<Vec<u8>> {
    super::fields::read_bounded_file(path, MAX_PEM_FILE, "a PEM file", at, sink)
}

fn chain(pem: &[u8], path: &str, sink: &mut Sink) -> Option<Vec<CertificateDer<'static>>> {
    let at = "server.tls.cert";
    let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match chain {
        Ok(chain) if chain.is_empty() => {
            sink.push(at, format!("{path:?} holds no CERTIFICATE block"));
            None
        }
        Ok(chain) => Some(chain),
        Err(e) => {
            sink.push(at, format!("{path:?} is not a PEM certificate chain: {e}"));
            None
        }
    }
}

fn private_key(pem: &[u8], path: &str, sink: &mut Sink) -> Option<PrivateKeyDer<'static>> {
    let at = "server.tls.key";
    let key = match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => key,
        Err(e) => {
            sink.push(at, format!("{path:?} holds no PEM private key (PKCS#8, RSA or EC): {e}"));
            return None;
        }
    };
    // The key must be one the provider can sign with (RSA, ECDSA P-256 or
    // P-384, Ed25519).
    match provider().key_provider.load_private_key(key.clone_key()) {
        Ok(_) => Some(key),
        Err(e) => {
            sink.push(at, format!("{path:?}: not a usable private key: {e}"));
            None
        }
    }
}
