//! TLS for tests: certificates made on the spot (rcgen), written to PEM
//! files, and an HTTPS client on real sockets (tokio-rustls) that speaks
//! HTTP/1.1 or h2 through hyper's client connections, chosen by ALPN.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost` and 127.0.0.1, and its key.
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER (what a client sees as the peer's).
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A new certificate and key (ECDSA P-256).
    pub fn new() -> TestCert {
        let made =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".into()])
                .expect("certificate");
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// `[server]` with `[server.tls]` on port 0 and `[admin]`, for test
/// configs; `client_timeout` (which bounds a handshake too) is 1 s.
pub fn listen_tls(cert: &Path, key: &Path, min_version: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
client_timeout = "1s"

[server.tls]
cert = "{}"
key = "{}"
min_version = "{min_version}"

[admin]
listen = "127.0.0.1:0"
"#,
        cert.display(),
        key.display()
    )
}

/// The crypto provider mosaic uses.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    mosaic::config::tls_provider()
}

/// A client config trusting `roots` (their DER), offering `alpn`, limited
/// to `versions`.
pub fn client_config(
    roots: &[&CertificateDer<'static>],
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add((*root).clone()).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS handshake with `addr` (as `localhost`).
pub async fn handshake(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(Duration::from_secs(5), TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// What the server sent on a TLS connection: its certificate and the
/// protocol ALPN chose.
pub fn peer_of(stream: &TlsStream<TcpStream>) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let (_, session) = stream.get_ref();
    let leaf = session.peer_certificates().and_then(|c| c.first()).expect("a certificate");
    (leaf.clone().into_owned(), session.alpn_protocol().map(<[u8]>::to_vec))
}

/// A response, read whole.
#[derive(Debug)]
pub struct TlsAnswer {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl TlsAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A request body: none, whole (with `Content-Length`), or in chunks with
/// no declared length (h2 DATA frames / HTTP/1.1 chunked).
pub enum TlsBody {
    Empty,
    Whole(Vec<u8>),
    Chunks(Vec<Vec<u8>>),
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn body_of(body: TlsBody) -> BoxBody {
    match body {
        TlsBody::Empty => Full::new(Bytes::new()).boxed(),
        TlsBody::Whole(bytes) => Full::new(Bytes::from(bytes)).boxed(),
        TlsBody::Chunks(chunks) => {
            let frames = chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from(c))));
            StreamBody::new(futures_util::stream::iter(frames)).boxed()
        }
    }
}

/// An HTTPS connection, HTTP/1.1 or h2 as negotiated.
#[derive(Clone)]
pub enum TlsClient {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<BoxBody>>>),
    H2(hyper::client::conn::http2::SendRequest<BoxBody>),
}

impl TlsClient {
    /// Starts HTTP over `stream`, h2 when ALPN chose it.
    pub async fn over(stream: TlsStream<TcpStream>) -> TlsClient {
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(stream);
        if h2 {
            let (send, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.expect("h2");
            tokio::spawn(connection);
            TlsClient::H2(send)
        } else {
            let (send, connection) = hyper::client::conn::http1::handshake(io).await.expect("h1");
            tokio::spawn(connection);
            TlsClient::H1(Arc::new(tokio::sync::Mutex::new(send)))
        }
    }

    /// Connects, handshakes and starts HTTP.
    pub async fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TlsClient {
        TlsClient::over(handshake(addr, config).await.expect("TLS handshake")).await
    }

    /// One request; panics when it cannot be sent or read within 10 s.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: TlsBody,
    ) -> TlsAnswer {
        let h2 = matches!(self, TlsClient::H2(_));
        let uri = if h2 { format!("https://localhost{path}") } else { path.to_string() };
        let mut builder = http::Request::builder().method(method).uri(uri);
        if !h2 {
            builder = builder.header("host", "localhost");
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(body_of(body)).expect("request");
        let exchange = async {
            let response = match self {
                TlsClient::H1(send) => send.lock().await.send_request(request).await,
                TlsClient::H2(send) => send.clone().send_request(request).await,
            }
            .expect("response head");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("response body").to_bytes();
            TlsAnswer {
                status: parts.status.as_u16(),
                version: parts.version,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(Duration::from_secs(10), exchange).await.expect("answer within 10 s")
    }
}
