//! `Hostile`: a raw-socket HTTP/1.1 "service" that misbehaves on purpose,
//! for the gateway's HTTP/1 client to be tested against.
//!
//! Like `FakeBackend` it runs on its own thread and tokio runtime, on a
//! loopback port chosen by the OS. It reads each request properly (request
//! line, headers, a `Content-Length` or chunked body) and records it; what it
//! then does on the connection is a *script*: a function of the request
//! (which carries the connection number and its position on that
//! connection) returning a list of [`Action`]s: bytes to write, pauses, a
//! close or a hang. Anything goes on the wire: stray bytes after an answer,
//! a `408` on an idle connection, heads and bodies in pieces, lies about the
//! length. The building blocks below ([`echo`], [`empty`], [`POISON`],
//! [`in_pieces`], ...) make the usual scripts one line each.
//!
//! ```ignore
//! // 30 ms to answer; every 204 is followed, 100 ms later, by a stray answer.
//! let service = Hostile::start(|req| {
//!     vec![sleep(30), Write(empty(204, req)), sleep(100), Write(POISON.to_vec())]
//! });
//! ```

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A stray answer that belongs to no request: whoever reads it as theirs
/// has been handed someone else's (or nobody's) response.
pub const POISON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"poisoned\":true}";

/// The body of [`POISON`].
pub const POISON_BODY: &str = r#"{"poisoned":true}"#;

/// A request as the service parsed it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The connection it came on: 1 for the first accepted, 2 for the next...
    pub conn: usize,
    /// Its place on that connection: 1 for the first request, 2 for the next...
    pub on_conn: usize,
    /// Method.
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// Header lines, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `x-request-id` the gateway sent (empty when none).
    pub fn id(&self) -> &str {
        self.header("x-request-id").unwrap_or("")
    }
}

/// One step of what the service does after reading a request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write these bytes (one `write_all`; `TCP_NODELAY` is on, so small
    /// writes leave as they are).
    Write(Vec<u8>),
    /// Pause.
    Sleep(Duration),
    /// Close the connection (what was written is still delivered).
    Close,
    /// Write nothing more and keep the connection open until the peer closes
    /// it; later requests on it are read and ignored.
    Hang,
}

/// `Action::Sleep` of `ms` milliseconds.
pub fn sleep(ms: u64) -> Action {
    Action::Sleep(Duration::from_millis(ms))
}

/// What the service does with a request.
type Script = Arc<dyn Fn(&Request) -> Vec<Action> + Send + Sync>;

/// A scripted misbehaving service.
pub struct Hostile {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    accepted: Arc<AtomicUsize>,
    ended: Arc<AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    /// Starts a service that runs `script` for every request it reads. When
    /// the actions run out (without `Close` or `Hang`), it reads the next
    /// request on the same connection.
    pub fn start(script: impl Fn(&Request) -> Vec<Action> + Send + Sync + 'static) -> Hostile {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind hostile");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let script: Script = Arc::new(script);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let shared = Shared { script, requests: requests.clone(), ended: ended.clone() };
        let count = accepted.clone();
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let conn = count.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::spawn(serve(stream, conn, shared.clone()));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime closes every connection still open.
        });
        Hostile { addr, requests, accepted, ended, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// `host:port`, as written in `instances`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Every request parsed so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the service is done with (it closed them, or the peer did).
    pub fn ended_connections(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Clone)]
struct Shared {
    script: Script,
    requests: Arc<Mutex<Vec<Request>>>,
    ended: Arc<AtomicUsize>,
}

/// Serves one connection: read a request, run its actions, repeat.
async fn serve(mut stream: TcpStream, conn: usize, shared: Shared) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut on_conn = 0;
    'requests: while let Some(mut request) = read_request(&mut stream, &mut buf).await {
        on_conn += 1;
        request.conn = conn;
        request.on_conn = on_conn;
        shared.requests.lock().expect("lock").push(request.clone());
        for action in (shared.script)(&request) {
            match action {
                Action::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        break 'requests;
                    }
                }
                Action::Sleep(pause) => tokio::time::sleep(pause).await,
                Action::Close => break 'requests,
                Action::Hang => {
                    let mut sink = [0u8; 4096];
                    while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                    break 'requests;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
    drop(stream);
    shared.ended.fetch_add(1, Ordering::SeqCst);
}

/// Reads more of what the peer sent into `buf`; `None` once it closed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Reads one request (head and body); `None` when the peer closed first or
/// sent something that is not HTTP/1.1.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let (mut request, head_len) = loop {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Request::new(&mut slots);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let request = Request {
                    conn: 0,
                    on_conn: 0,
                    method: parsed.method?.to_string(),
                    target: parsed.path?.to_string(),
                    headers: parsed
                        .headers
                        .iter()
                        .map(|h| {
                            let value = String::from_utf8_lossy(h.value).to_string();
                            (h.name.to_ascii_lowercase(), value)
                        })
                        .collect(),
                    body: Vec::new(),
                };
                break (request, len);
            }
            Ok(httparse::Status::Partial) => read_more(stream, buf).await?,
            Err(_) => return None,
        }
    };
    buf.drain(..head_len);
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    request.body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        let len: usize = request.header("content-length").map_or(Some(0), |v| v.parse().ok())?;
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some(request)
}

/// Reads a chunked body (trailers skipped).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size_text = line.split(';').next()?.trim().to_string();
        let size = usize::from_str_radix(&size_text, 16).ok()?;
        if size == 0 {
            // Trailer lines until the empty one.
            while !read_line(stream, buf).await?.is_empty() {}
            return Some(body);
        }
        while buf.len() < size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend(buf.drain(..size));
        if buf.drain(..2).as_slice() != b"\r\n" {
            return None;
        }
    }
}

/// One CRLF-terminated line, without its CRLF.
async fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..end]).to_string();
            buf.drain(..end + 2);
            return Some(line);
        }
        read_more(stream, buf).await?;
    }
}

// ---------------------------------------------------------------------------
// Building blocks for scripts

/// A complete answer: status line, `headers`, `Content-Length` and `body`.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The JSON that identifies a request: `{"id": <its x-request-id>,
/// "target": <its target>}`.
pub fn echo_body(req: &Request) -> String {
    serde_json::json!({ "id": req.id(), "target": req.target }).to_string()
}

/// A normal `200` whose JSON body ([`echo_body`]) and `x-answer-to` header
/// say which request it answers.
pub fn echo(req: &Request) -> Vec<u8> {
    response(
        200,
        &[("Content-Type", "application/json"), ("x-answer-to", req.id())],
        echo_body(req).as_bytes(),
    )
}

/// An answer without a body (`204`, `304`) that says which request it
/// answers (`x-answer-to`); no `Content-Length`, as such answers are sent.
pub fn empty(status: u16, req: &Request) -> Vec<u8> {
    format!("HTTP/1.1 {status} {}\r\nx-answer-to: {}\r\n\r\n", reason(status), req.id())
        .into_bytes()
}

/// `bytes` as `pieces` writes of about equal size, `pause` apart.
pub fn in_pieces(bytes: &[u8], pieces: usize, pause: Duration) -> Vec<Action> {
    let size = bytes.len().div_ceil(pieces.max(1)).max(1);
    let mut actions = Vec::new();
    for (i, piece) in bytes.chunks(size).enumerate() {
        if i > 0 {
            actions.push(Action::Sleep(pause));
        }
        actions.push(Action::Write(piece.to_vec()));
    }
    actions
}

/// A `200` whose head is at least `head_bytes` long: `headers` headers of
/// equal size, then a small JSON body.
pub fn big_head(head_bytes: usize, headers: usize) -> Vec<u8> {
    let value_len = head_bytes / headers.max(1);
    let value = "v".repeat(value_len);
    let mut out = String::from("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n");
    for i in 0..headers {
        out.push_str(&format!("x-filler-{i:03}: {value}\r\n"));
    }
    out.push_str("Content-Length: 2\r\n\r\n{}");
    out.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        408 => "Request Timeout",
        _ => "Whatever",
    }
}
