//! Byte-exact HTTP/1.1 on raw sockets, for requests awc would refuse or
//! normalise (pipelined requests, bodies after an `Upgrade`, junk `Host`
//! values, non-UTF-8 header bytes) and for answers that must be read one
//! by one (how many responses came, and whether the server then closed).
//!
//! - [`RawConn`]: a client connection that writes bytes as given and parses
//!   each response (`Content-Length`, chunked, or until close).
//! - [`RawBackend`]: a scripted service that records every request with its
//!   header values as raw bytes (the `FakeBackend` reads them lossily).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines (names lowercased, values as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of a header, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// What the server did next on a connection.
#[derive(Debug)]
pub enum Next {
    /// A whole response.
    Response(RawResponse),
    /// The server closed (or reset) the connection; any bytes it sent that
    /// were not a whole response are kept.
    Closed(Vec<u8>),
    /// Nothing complete within the wait; the bytes read so far are kept.
    Silent(Vec<u8>),
}

/// One client connection to a server.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
    /// Whether each request sent was a HEAD (its answer has no body).
    pub head_request: bool,
}

impl RawConn {
    /// Connects to `addr` (Nagle off, so each write goes out at once).
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        RawConn { stream, buf: Vec::new(), closed: false, head_request: false }
    }

    /// Writes `bytes` as they are. A write the server refused (it closed)
    /// is reported as `false`, not a panic: closing is often the right answer.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Half-closes the connection (the server reads EOF).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Waits up to `wait` for the next response, or the server closing.
    pub async fn next(&mut self, wait: Duration) -> Next {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match parse_response(&self.buf, self.head_request, self.closed) {
                Parsed::Complete(response, used) => {
                    self.buf.drain(..used);
                    return Next::Response(response);
                }
                Parsed::Invalid => return Next::Closed(std::mem::take(&mut self.buf)),
                Parsed::Partial if self.closed => {
                    return Next::Closed(std::mem::take(&mut self.buf));
                }
                Parsed::Partial => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
                Err(_) => return Next::Silent(self.buf.clone()),
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next response within `wait`; panics (with what was read) otherwise.
    pub async fn response(&mut self, wait: Duration) -> RawResponse {
        match self.next(wait).await {
            Next::Response(response) => response,
            other => panic!("expected a response within {wait:?}, got {}", describe(&other)),
        }
    }

    /// Every response the server sends until it closes or stays silent for
    /// `quiet`, and whether it closed.
    pub async fn drain(&mut self, first: Duration, quiet: Duration) -> (Vec<RawResponse>, bool) {
        let mut responses = Vec::new();
        let mut wait = first;
        loop {
            match self.next(wait).await {
                Next::Response(response) => responses.push(response),
                Next::Closed(_) => return (responses, true),
                Next::Silent(_) => return (responses, false),
            }
            wait = quiet;
        }
    }
}

/// A readable account of what [`RawConn::next`] found.
pub fn describe(next: &Next) -> String {
    match next {
        Next::Response(r) => format!("a {} response: {}", r.status, r.text()),
        Next::Closed(bytes) => {
            format!("the connection closed after {:?}", String::from_utf8_lossy(bytes))
        }
        Next::Silent(bytes) => format!("silence after {:?}", String::from_utf8_lossy(bytes)),
    }
}

/// Sends `bytes` on a new connection and reads one response within `wait`.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.head_request = bytes.starts_with(b"HEAD ");
    conn.send(bytes).await;
    conn.response(wait).await
}

/// Sends `bytes` on a new connection: the response's status, or `None`
/// when the server closed without one (both within `wait`).
pub async fn status_of(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<u16> {
    let mut conn = RawConn::connect(addr).await;
    conn.send(bytes).await;
    match conn.next(wait).await {
        Next::Response(response) => Some(response.status),
        Next::Closed(_) => None,
        silent => panic!("no answer within {wait:?}: {}", describe(&silent)),
    }
}

enum Parsed<T> {
    Complete(T, usize),
    Partial,
    Invalid,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response at the front of `buf`; `closed`: the server has
/// closed, so a body without framing ends here.
fn parse_response(buf: &[u8], head_request: bool, closed: bool) -> Parsed<RawResponse> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Parsed::Partial;
    };
    let head = &buf[..end];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with(b"HTTP/1.") {
        return Parsed::Invalid;
    }
    let Some(status) = std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return Parsed::Invalid;
    };
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
            Some((name, line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    let body_at = end + 4;
    let rest = &buf[body_at..];
    let value = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_ascii_lowercase())
    };
    let bodiless = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    if bodiless {
        return Parsed::Complete(RawResponse { status, headers, body: Vec::new() }, body_at);
    }
    if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        return match dechunk(rest) {
            Parsed::Complete(body, used) => {
                Parsed::Complete(RawResponse { status, headers, body }, body_at + used)
            }
            Parsed::Partial => Parsed::Partial,
            Parsed::Invalid => Parsed::Invalid,
        };
    }
    if let Some(len) = value("content-length") {
        let Ok(len) = len.trim().parse::<usize>() else {
            return Parsed::Invalid;
        };
        if rest.len() < len {
            return Parsed::Partial;
        }
        let body = rest[..len].to_vec();
        return Parsed::Complete(RawResponse { status, headers, body }, body_at + len);
    }
    if closed {
        let body = rest.to_vec();
        return Parsed::Complete(RawResponse { status, headers, body }, buf.len());
    }
    Parsed::Partial
}

/// A chunked body at the front of `buf`: the body and the bytes it took.
fn dechunk(buf: &[u8]) -> Parsed<Vec<u8>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else {
            return Parsed::Partial;
        };
        let line = String::from_utf8_lossy(&buf[at..at + line_end]).to_string();
        let Ok(size) = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
        else {
            return Parsed::Invalid;
        };
        at += line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(&buf[at..], b"\r\n") else {
                    return Parsed::Partial;
                };
                at += end + 2;
                if end == 0 {
                    return Parsed::Complete(body, at);
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Parsed::Partial;
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Parsed::Invalid;
        }
        at += size + 2;
    }
}

// ---------------------------------------------------------------------------
// A service that records header bytes exactly

/// A request as [`RawBackend`] received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Method.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// Header lines: names lowercased, values as the bytes sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (Content-Length or chunked).
    pub body: Vec<u8>,
    /// When it had fully arrived.
    pub at: Instant,
}

impl RawRequest {
    /// First value of a header, as bytes.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

type RawScript = Arc<dyn Fn(&RawRequest) -> (u16, Vec<u8>) + Send + Sync>;

/// A keep-alive HTTP/1.1 service on a loopback port, on its own thread and
/// runtime, answering `application/json` bodies from a script and recording
/// every request byte-exactly.
pub struct RawBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawBackend {
    /// Starts a service answering each request with the script's status and body.
    pub fn start(script: impl Fn(&RawRequest) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: RawScript = Arc::new(script);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let recorded = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        tokio::spawn(serve(stream, recorded.clone(), script.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        RawBackend { addr, requests, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// `host:port`, as written in `instances`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// How many requests were received.
    pub fn calls(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(mut stream: TcpStream, requests: Arc<Mutex<Vec<RawRequest>>>, script: RawScript) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else { return };
        requests.lock().expect("lock").push(request.clone());
        let (status, body) = script(&request);
        let mut answer = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend_from_slice(&body);
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RawRequest> {
    let end = loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            break end;
        }
        fill(stream, buf).await?;
    };
    let head: Vec<u8> = buf.drain(..end + 4).collect();
    let mut lines = head[..end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = String::from_utf8_lossy(lines.next()?).to_string();
    let mut parts = first.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_ascii_lowercase();
            Some((name, line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    let value = |name: &str| {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    let body = if value("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        loop {
            match dechunk(buf) {
                Parsed::Complete(body, used) => {
                    buf.drain(..used);
                    break body;
                }
                Parsed::Invalid => return None,
                Parsed::Partial => fill(stream, buf).await?,
            }
        }
    } else {
        let len: usize = value("content-length").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some(RawRequest { method, target, headers, body, at: Instant::now() })
}
