//! HTTPS on the edge listener: the rustls server config built from
//! `[server.tls]`, and the certificate a new handshake gets.
//!
//! The certificate lives behind an [`ArcSwap`] that a reload replaces
//! (after `[server.tls]` was validated, so the pair is known to match): a
//! handshake that starts after the swap gets the new certificate, a
//! connection already open keeps its session. ALPN offers `h2` and
//! `http/1.1` (actix-http adds both). `min_version` is fixed for the
//! listener's life: changing it, or turning TLS on or off, needs a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{TlsConfig, TlsVersion};

/// The certificate new handshakes get; swapped by a reload.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    /// Serving `tls`'s pair.
    pub fn new(tls: &TlsConfig) -> Arc<Self> {
        Arc::new(Self { current: ArcSwap::new(tls.certified.clone()) })
    }

    /// New handshakes get `tls`'s pair from now on.
    pub fn replace(&self, tls: &TlsConfig) {
        if !Arc::ptr_eq(&self.current.load(), &tls.certified) {
            self.current.store(tls.certified.clone());
        }
    }

    /// The certificate chain served now (leaf first), as DER.
    pub fn chain(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        self.current.load().cert.clone()
    }
}

impl ResolvesServerCert for CertStore {
    // One certificate for every name: SNI is not used to choose (clients
    // that connect by IP send none).
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's rustls config: `min_version` and up, certificates from
/// `store`, no client certificates.
pub fn server_config(
    tls: &TlsConfig,
    store: Arc<CertStore>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(crate::config::tls_provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(store);
    // Session tickets and the session cache stay as rustls sets them: a
    // resumed session skips the certificate, so it is cheap and keeps the
    // certificate it was made with (expected across a rotation).
    config.ignore_client_order = true;
    Ok(config)
}
