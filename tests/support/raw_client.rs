//! A raw-socket HTTP/1.1 client, for answers awc would refuse or hide: it
//! says exactly how a response ended (framing complete, the connection
//! closed early, or nothing more within the time allowed).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a response's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its framing was satisfied (all of `Content-Length`, the last chunk,
    /// no body for HEAD/204/304, or the close that delimits a body without
    /// a length).
    Complete,
    /// The connection closed before the framing was satisfied.
    ClosedEarly,
    /// Neither within the time allowed.
    TimedOut,
}

/// Why no response came (no complete head).
#[derive(Debug)]
pub enum NoResponse {
    /// The server closed the connection first (an "empty reply" when
    /// `bytes` is empty).
    Closed {
        /// From sending the request to the close.
        after: Duration,
        /// What came before the close.
        bytes: Vec<u8>,
    },
    /// Nothing complete within the time allowed.
    TimedOut {
        /// What came meanwhile.
        bytes: Vec<u8>,
    },
}

/// A response as read from the socket.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers (names lowercased).
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked): what arrived of it.
    pub body: Vec<u8>,
    /// How it ended.
    pub ending: Ending,
    /// From sending the request to the ending.
    pub elapsed: Duration,
}

impl RawResponse {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?} {}", self.text()))
    }

    /// `_mosaic.sections.NAME` of a page.
    pub fn meta(&self, section: &str) -> serde_json::Value {
        self.json()["_mosaic"]["sections"][section].clone()
    }
}

/// `METHOD path HTTP/1.1` with a host and `headers`, no body.
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: mosaic.test\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// One client connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    sent_at: Instant,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        RawConn { stream, buf: Vec::new(), sent_at: Instant::now() }
    }

    /// Sends `bytes` (the clock of `elapsed` starts here).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.sent_at = Instant::now();
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Reads one response (`head_request`: the request was a HEAD, so no
    /// body follows). Panics when no complete head arrives within `within`.
    pub async fn read_response(&mut self, head_request: bool, within: Duration) -> RawResponse {
        match self.try_read_response(head_request, within).await {
            Ok(response) => response,
            Err(NoResponse::Closed { after, bytes }) => panic!(
                "the connection closed before a response head, after {after:?} and {} bytes: {:?}",
                bytes.len(),
                String::from_utf8_lossy(&bytes)
            ),
            Err(NoResponse::TimedOut { bytes }) => panic!(
                "no response head within {within:?}; got {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }

    /// [`RawConn::read_response`], telling rather than panicking when no
    /// head came.
    pub async fn try_read_response(
        &mut self,
        head_request: bool,
        within: Duration,
    ) -> Result<RawResponse, NoResponse> {
        let until = tokio::time::Instant::now() + within;
        let (status, headers) = loop {
            if let Some(head) = self.take_head() {
                if (100..200).contains(&head.0) {
                    continue;
                }
                break head;
            }
            match self.fill(until).await {
                Some(true) => {}
                Some(false) => {
                    let bytes = std::mem::take(&mut self.buf);
                    return Err(NoResponse::Closed { after: self.sent_at.elapsed(), bytes });
                }
                None => return Err(NoResponse::TimedOut { bytes: std::mem::take(&mut self.buf) }),
            }
        };
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let no_body = head_request || status == 204 || status == 304;
        let (body, ending) = if no_body {
            (Vec::new(), Ending::Complete)
        } else if chunked {
            self.read_chunked(until).await
        } else if let Some(length) = length {
            self.read_length(length, until).await
        } else {
            let (body, closed) = self.read_to_eof_until(until).await;
            (body, if closed { Ending::Complete } else { Ending::TimedOut })
        };
        Ok(RawResponse { status, headers, body, ending, elapsed: self.sent_at.elapsed() })
    }

    /// Everything the server sends until it closes the connection or
    /// `within` passes; and whether it closed.
    pub async fn read_to_eof(&mut self, within: Duration) -> (Vec<u8>, bool) {
        self.read_to_eof_until(tokio::time::Instant::now() + within).await
    }

    async fn read_to_eof_until(&mut self, until: tokio::time::Instant) -> (Vec<u8>, bool) {
        loop {
            match self.fill(until).await {
                Some(true) => {}
                Some(false) => return (std::mem::take(&mut self.buf), true),
                None => return (std::mem::take(&mut self.buf), false),
            }
        }
    }

    /// Reads more: `Some(true)` bytes came, `Some(false)` the server closed
    /// (or reset), `None` the time is up.
    async fn fill(&mut self, until: tokio::time::Instant) -> Option<bool> {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
            Err(_) => None,
            Ok(Ok(0)) | Ok(Err(_)) => Some(false),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(true)
            }
        }
    }

    /// A complete head at the front of the buffer, removed from it.
    fn take_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some((status, headers))
    }

    async fn read_length(
        &mut self,
        length: usize,
        until: tokio::time::Instant,
    ) -> (Vec<u8>, Ending) {
        while self.buf.len() < length {
            match self.fill(until).await {
                Some(true) => {}
                Some(false) => return (std::mem::take(&mut self.buf), Ending::ClosedEarly),
                None => return (std::mem::take(&mut self.buf), Ending::TimedOut),
            }
        }
        (self.buf.drain(..length).collect(), Ending::Complete)
    }

    async fn read_chunked(&mut self, until: tokio::time::Instant) -> (Vec<u8>, Ending) {
        let mut body = Vec::new();
        loop {
            let line = match self.line(until).await {
                Ok(line) => line,
                Err(ending) => return (body, ending),
            };
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?} from the gateway"));
            if size == 0 {
                loop {
                    match self.line(until).await {
                        Ok(trailer) if trailer.is_empty() => return (body, Ending::Complete),
                        Ok(_) => {}
                        Err(ending) => return (body, ending),
                    }
                }
            }
            while self.buf.len() < size + 2 {
                match self.fill(until).await {
                    Some(true) => {}
                    Some(false) => {
                        body.append(&mut self.buf);
                        return (body, Ending::ClosedEarly);
                    }
                    None => {
                        body.append(&mut self.buf);
                        return (body, Ending::TimedOut);
                    }
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    async fn line(&mut self, until: tokio::time::Instant) -> Result<String, Ending> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            match self.fill(until).await {
                Some(true) => {}
                Some(false) => return Err(Ending::ClosedEarly),
                None => return Err(Ending::TimedOut),
            }
        }
    }
}

/// One request on a new connection, and its response (panics when none).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send(&request_bytes(method, path, headers)).await;
    conn.read_response(method.eq_ignore_ascii_case("HEAD"), within).await
}

/// [`exchange`], telling rather than panicking when no response came.
pub async fn try_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> Result<RawResponse, NoResponse> {
    let mut conn = RawConn::connect(addr).await;
    conn.send(&request_bytes(method, path, headers)).await;
    conn.try_read_response(method.eq_ignore_ascii_case("HEAD"), within).await
}
