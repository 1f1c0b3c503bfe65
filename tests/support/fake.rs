//! `FakeBackend`: a real HTTP/1.1 server on a loopback port, on its own
//! thread and tokio runtime (like a separate service), whose answers a test
//! scripts: JSON, any status, delays, hangs, connection resets, slow bodies,
//! non-JSON. It records every request it receives.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// The request target exactly as sent (path and query, still encoded).
    pub target: String,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Recorded {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the fake answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `status` with a JSON body.
    Json(u16, String),
    /// Any status, content type and body.
    Raw { status: u16, content_type: &'static str, body: Vec<u8> },
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// Never answer (the connection stays open).
    Hang,
    /// Close the connection without answering.
    Reset,
    /// Headers, then the body one byte per `every`.
    Drip { body: String, every: Duration },
    /// 200 with this JSON and one more header line.
    JsonWithHeader { body: String, name: &'static str, value: &'static str },
}

impl Reply {
    /// 200 with this JSON.
    pub fn ok(json: &str) -> Reply {
        Reply::Json(200, json.to_string())
    }

    /// 200 with this JSON and the header `name: value`.
    pub fn ok_with_header(json: &str, name: &'static str, value: &'static str) -> Reply {
        Reply::JsonWithHeader { body: json.to_string(), name, value }
    }
}

type Script = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// A scripted back-end service.
pub struct FakeBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeBackend {
    /// Starts a fake answering every request with `reply`.
    pub fn start(reply: Reply) -> FakeBackend {
        Self::scripted(move |_| reply.clone())
    }

    /// Starts a fake whose answer depends on the request.
    pub fn scripted(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeBackend {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind fake");
        Self::on_listener(std_listener, Arc::new(script))
    }

    /// Starts a fake on a given address (to bring a "killed" service back).
    pub fn start_on(addr: SocketAddr, reply: Reply) -> FakeBackend {
        let std_listener = std::net::TcpListener::bind(addr).expect("rebind fake");
        Self::on_listener(std_listener, Arc::new(move |_| reply.clone()))
    }

    fn on_listener(std_listener: std::net::TcpListener, script: Script) -> FakeBackend {
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let calls = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (c, r, s) = (calls.clone(), requests.clone(), script.clone());
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        let (c, r, s) = (c.clone(), r.clone(), s.clone());
                        tokio::spawn(serve_connection(stream, c, r, s));
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime closes every connection: like a killed process.
        });
        FakeBackend { addr, calls, requests, script, stop: Some(stop_tx), thread: Some(thread) }
    }

    /// `host:port`, as written in `instances`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// Changes the answer from now on.
    pub fn set(&self, reply: Reply) {
        *self.script.lock().expect("lock") = Arc::new(move |_| reply.clone());
    }

    /// Stops the service: the port refuses connections afterwards.
    pub fn kill(mut self) -> SocketAddr {
        self.shutdown();
        self.addr
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeBackend {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    script: Arc<Mutex<Script>>,
) {
    // Like a real service: without it, Nagle holds a body written after its
    // head until the gateway's delayed ACK (40 ms per exchange).
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else { return };
        calls.fetch_add(1, Ordering::SeqCst);
        requests.lock().expect("lock").push(request.clone());
        let reply = {
            let script = script.lock().expect("lock").clone();
            script(&request)
        };
        if !write_reply(&mut stream, reply).await {
            return;
        }
    }
}

/// Reads what the peer sent next into `buf`; `None` once it closed or failed.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end + 4);
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some(Recorded { method, target, headers, body })
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break pos;
            }
            read_more(stream, buf).await?;
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        while buf.len() < size + 2 {
            read_more(stream, buf).await?;
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
        if size == 0 {
            return Some(body);
        }
    }
}

/// Writes a reply; false when the connection must close.
async fn write_reply(stream: &mut TcpStream, reply: Reply) -> bool {
    match reply {
        Reply::Json(status, body) => {
            write_full(stream, status, "application/json", body.as_bytes()).await
        }
        Reply::Raw { status, content_type, body } => {
            write_full(stream, status, content_type, &body).await
        }
        Reply::JsonWithHeader { body, name, value } => {
            let content_type = format!("application/json\r\n{name}: {value}");
            write_full(stream, 200, &content_type, body.as_bytes()).await
        }
        Reply::Delay(wait, inner) => {
            tokio::time::sleep(wait).await;
            Box::pin(write_reply(stream, *inner)).await
        }
        Reply::Hang => {
            // Hold the connection until the peer goes away.
            let mut sink = [0u8; 1024];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            false
        }
        Reply::Reset => {
            // SO_LINGER 0 makes the close an RST, as a crashed peer would.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            false
        }
        Reply::Drip { body, every } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return false;
            }
            for byte in body.as_bytes() {
                tokio::time::sleep(every).await;
                if stream.write_all(&[*byte]).await.is_err() {
                    return false;
                }
            }
            true
        }
    }
}

async fn write_full(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) -> bool {
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut answer = head.into_bytes();
    answer.extend_from_slice(body);
    stream.write_all(&answer).await.is_ok()
}
