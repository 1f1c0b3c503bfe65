//! Test support: scripted back ends (`fake`), a Consul API double
//! (`consul`), a misbehaving raw-socket service (`hostile`), a gateway
//! started in-process on port 0 from TOML text, and small HTTP clients (awc,
//! raw TCP, and `raw_client`, which tells how a response ended).

#![allow(dead_code)]

pub mod amqp;
pub mod consul;
pub mod fake;
pub mod hostile;
pub mod jwt;
pub mod process;
pub mod raw_client;
pub mod raw_wire;
pub mod redis;
pub mod tls;

#[allow(unused_imports)]
pub use fake::{FakeBackend, Recorded, Reply};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mosaic::gateway::RunningGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `[server]` and `[admin]` on port 0, for every test config.
pub const LISTEN_ANY: &str = r#"
[server]
listen = "127.0.0.1:0"
workers = 1

[admin]
listen = "127.0.0.1:0"
"#;

/// Starts a gateway from TOML (which should start with [`LISTEN_ANY`]).
pub async fn start_gateway(toml: &str) -> RunningGateway {
    let config = match mosaic::config::parse_str(toml) {
        Ok(config) => config,
        Err(errors) => panic!("test config invalid:\n{errors}\n---\n{toml}"),
    };
    mosaic::gateway::start(config).await.expect("gateway starts")
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Time from sending to the full body.
    pub elapsed: Duration,
}

impl Answer {
    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `_mosaic.sections.NAME`.
    pub fn meta(&self, section: &str) -> serde_json::Value {
        self.json()["_mosaic"]["sections"][section].clone()
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(20)).finish()
}

/// GET `path` from the gateway.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, &[], None).await
}

/// Any request, with headers and an optional body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let started = Instant::now();
    let method = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client().request(method, format!("http://{addr}{path}"));
    for (n, v) in headers {
        req = req.insert_header((*n, *v));
    }
    let mut resp = match body {
        Some(body) => req.send_body(body).await,
        None => req.send().await,
    }
    .expect("gateway answers");
    let body = resp.body().limit(64 * 1024 * 1024).await.expect("body").to_vec();
    Answer {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body,
        elapsed: started.elapsed(),
    }
}

/// Sends raw bytes and returns everything read until the server closes or
/// `wait` passes (for malformed requests awc would refuse to send).
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// A backend table with a static instance list and extra keys.
pub fn backend(name: &str, instances: &[String], extra: &str) -> String {
    let list: Vec<String> = instances.iter().map(|i| format!("\"{i}\"")).collect();
    format!("\n[backends.{name}]\ninstances = [{}]\n{extra}\n", list.join(", "))
}

/// Polls `check` until it is true or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Starts a gateway whose config has AMQP backends, and waits (at most
/// 10 s) until `/readyz` says their channels are open.
pub async fn start_ready_gateway(toml: &str) -> RunningGateway {
    let gateway = start_gateway(toml).await;
    let until = Instant::now() + Duration::from_secs(10);
    while get(gateway.admin_addr, "/readyz").await.status != 200 {
        assert!(Instant::now() < until, "the gateway is not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway
}

/// Writes `toml` to a temporary file and starts the gateway from it, so
/// `POST /admin/reload` and SIGHUP have a file to re-read. Keep the file.
pub async fn start_gateway_from_file(toml: &str) -> (RunningGateway, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), toml).expect("write config");
    let gateway = mosaic::gateway::start_from_file(file.path()).await.expect("gateway starts");
    (gateway, file)
}

/// An admin call (`POST` with a JSON body, or `GET`), with an optional bearer token.
pub async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = bearer.as_deref() {
        headers.push(("authorization", b));
    }
    request(addr, method, path, &headers, body.map(|b| b.as_bytes().to_vec())).await
}
