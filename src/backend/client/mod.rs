//! One HTTP attempt against one instance, on this worker's connections:
//! what the service sent, not what it means for a section (that is
//! `backend::answer`).
//!
//! Section calls use mosaic's own HTTP/1.1 exchange ([`wire`]) over a
//! thread-local keep-alive pool ([`pool`]): backend I/O stays on the worker
//! that serves the page, connections are reused across that worker's
//! requests, and no lock or thread hop sits on the path. Proxy routes use the
//! same connections and stream any method and body both ways ([`forward`]).
//!
//! Why not a general-purpose client (awc, hyper): a section call is always
//! the same small exchange, and building header maps and request objects for
//! it was a third of a page's instructions (`BENCHMARKS.md`).

pub mod forward;
mod pool;
pub mod wire;

#[cfg(test)]
mod test_service;

use std::time::Instant;

use actix_web::http::header::{HeaderName, HeaderValue};
use bytes::Bytes;

use super::error::FetchError;
use wire::{Conn, WireError};

/// What a service answered a section's GET: its status, and for a 2xx its
/// body read whole (empty otherwise). Judged by `backend::answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status (a final one: 1xx interim answers are skipped).
    pub status: u16,
    /// The body of a 2xx answer, at most `max_body` bytes.
    pub body: Bytes,
}

/// GETs `path` from the instance at `address` (`host:port`) once, on a
/// pooled connection of this worker. The caller bounds the time
/// (`tokio::time::timeout_at`); a connection dropped mid-exchange is closed,
/// never returned to the pool.
pub async fn get(
    address: &str,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    max_body: usize,
) -> Result<Reply, FetchError> {
    if !wire::is_request_target(path) {
        // `template` never renders such a path; refuse rather than send it.
        return Err(FetchError::Internal);
    }
    let (mut conn, mut opened_at) = match pool::checkout(address, Instant::now()) {
        Some(pooled) => pooled,
        None => (connect(address).await?, Instant::now()),
    };
    let answer = loop {
        match conn.get(address, path, headers, max_body).await {
            Ok(answer) => break answer,
            // The service closed an idle connection as we reused it: the GET
            // never reached it, so it goes out again on a new connection
            // (once: a new connection is not `reused`).
            Err(WireError::ClosedBeforeAnswer) if conn.reused => {
                conn = connect(address).await?;
                opened_at = Instant::now();
            }
            Err(WireError::TooLarge) => return Err(FetchError::TooLarge),
            Err(_) => return Err(FetchError::Connect),
        }
    };
    if answer.reusable {
        pool::checkin(address, conn, opened_at, Instant::now());
    }
    Ok(Reply { status: answer.status, body: answer.body })
}

async fn connect(address: &str) -> Result<Conn, FetchError> {
    Conn::connect(address).await.map_err(|_| FetchError::Connect)
}

/// Validates JSON without building values (see `json_check`).
pub use super::json_check::is_json;

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    use super::test_service::{closes, read_request, server};
    use super::*;

    /// Answers every request on the connection with `answer`.
    async fn answer_all(mut stream: TcpStream, answer: &'static str) {
        while read_request(&mut stream, 0).await.is_some() {
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    const OK_JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"id\":\"42\"}";

    async fn get(address: &str) -> Result<Reply, FetchError> {
        super::get(address, "/products/42", &[], 1024).await
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused() {
        let (address, accepted) = server(|_, s| answer_all(s, OK_JSON)).await;
        for _ in 0..5 {
            let fetched = get(&address).await.unwrap();
            assert_eq!((fetched.status, &fetched.body[..]), (200, &b"{\"id\":\"42\"}"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool::idle_count(&address), 1);
    }

    #[tokio::test]
    async fn the_sweep_frees_idle_buffers_and_closes_expired_connections() {
        let (address, accepted) = server(|_, s| answer_all(s, OK_JSON)).await;
        get(&address).await.unwrap();
        // A connection just returned keeps its buffer for the next exchange.
        assert!(pool::idle_read_capacities(&address)[0] > 0);
        let now = std::time::Instant::now();
        pool::sweep_at(now);
        assert!(pool::idle_read_capacities(&address)[0] > 0, "not idle long enough yet");
        // Idle past RELEASE_AFTER: the buffer goes (the body the caller
        // held shares its allocation; the pool no longer pins it).
        pool::sweep_at(now + pool::RELEASE_AFTER);
        assert_eq!(pool::idle_read_capacities(&address), vec![0]);
        // The connection still serves the next exchange.
        assert_eq!(&get(&address).await.unwrap().body[..], b"{\"id\":\"42\"}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Idle past KEEP_ALIVE: the sweep closes it.
        pool::sweep_at(std::time::Instant::now() + pool::KEEP_ALIVE);
        assert_eq!(pool::idle_count(&address), 0);
    }

    #[tokio::test]
    async fn request_carries_host_accept_and_section_headers() {
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(1);
        let (address, _) = server(move |_, mut s| {
            let seen_tx = seen_tx.clone();
            async move {
                let request = read_request(&mut s, 0).await.unwrap().0;
                seen_tx.send(request).await.unwrap();
                s.write_all(OK_JSON.as_bytes()).await.unwrap();
            }
        })
        .await;
        let headers = [(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r1"))];
        super::get(&address, "/cart?x=1", &headers, 1024).await.unwrap();
        let request = seen_rx.recv().await.unwrap();
        assert!(request.starts_with("GET /cart?x=1 HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("host: {address}\r\n")), "{request}");
        assert!(request.contains("accept: application/json\r\n"), "{request}");
        assert!(request.contains("x-request-id: r1\r\n"), "{request}");
    }

    #[tokio::test]
    async fn chunked_bodies_are_joined_and_trailers_skipped() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      4;ext=1\r\n{\"a\"\r\n3\r\n:[1\r\n2\r\n]}\r\n0\r\nx-trailer: y\r\n\r\n";
        let (address, accepted) = server(move |_, s| answer_all(s, answer)).await;
        for _ in 0..2 {
            assert_eq!(&get(&address).await.unwrap().body[..], b"{\"a\":[1]}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused after a chunked body");
    }

    #[tokio::test]
    async fn answers_written_a_byte_at_a_time_are_read_whole() {
        let (address, accepted) = server(|_, mut s| async move {
            while read_request(&mut s, 0).await.is_some() {
                for byte in OK_JSON.as_bytes() {
                    s.write_all(&[*byte]).await.unwrap();
                    s.flush().await.unwrap();
                }
            }
        })
        .await;
        for _ in 0..2 {
            assert_eq!(&get(&address).await.unwrap().body[..], b"{\"id\":\"42\"}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_ended_by_close_is_read_and_the_connection_not_kept() {
        let (address, accepted) = server(|_, mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n[1,2,3]").await.unwrap();
        })
        .await;
        for _ in 0..2 {
            assert_eq!(&get(&address).await.unwrap().body[..], b"[1,2,3]");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool::idle_count(&address), 0);
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let answer = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
        let (address, accepted) = server(move |_, s| answer_all(s, answer)).await;
        get(&address).await.unwrap();
        get(&address).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_service_closed_while_idle_is_replaced_transparently() {
        // Each connection serves one exchange, then the service closes it
        // (as a service with a short keep-alive timeout does).
        let (service_closes, mut close_seen) = closes();
        let (address, accepted) = server(move |_, mut s| {
            let service_closes = service_closes.clone();
            async move {
                read_request(&mut s, 0).await;
                s.write_all(OK_JSON.as_bytes()).await.unwrap();
                service_closes.close(s).await;
            }
        })
        .await;
        get(&address).await.unwrap();
        // The pooled connection is really dead before the next call.
        close_seen.next().await;
        let fetched = get(&address).await.unwrap();
        assert_eq!(fetched.status, 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_fresh_connection_closed_before_answering_is_a_connect_error() {
        let (address, accepted) = server(|_, mut s| async move {
            read_request(&mut s, 0).await;
        })
        .await;
        assert_eq!(get(&address).await.unwrap_err(), FetchError::Connect);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "no resend on a new connection");
    }

    #[tokio::test]
    async fn an_answer_cut_mid_body_is_a_connect_error() {
        let (address, _) = server(|_, mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\":").await.unwrap();
        })
        .await;
        assert_eq!(get(&address).await.unwrap_err(), FetchError::Connect);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        assert_eq!(get(&address).await.unwrap_err(), FetchError::Connect);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_too_large() {
        let long = "HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n";
        let (address, _) = server(move |_, s| answer_all(s, long)).await;
        assert_eq!(get(&address).await.unwrap_err(), FetchError::TooLarge);

        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                       300\r\n";
        let (address, _) = server(move |_, mut s| async move {
            read_request(&mut s, 0).await;
            s.write_all(chunked.as_bytes()).await.unwrap();
            let chunk = format!("{}\r\n300\r\n", "x".repeat(0x300));
            for _ in 0..4 {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert_eq!(get(&address).await.unwrap_err(), FetchError::TooLarge);
    }

    #[tokio::test]
    async fn client_errors_are_answers_and_keep_the_connection() {
        let answer =
            "HTTP/1.1 404 Not Found\r\ncontent-length: 21\r\n\r\n{\"error\":\"not_found\"}";
        let (address, accepted) = server(move |_, s| answer_all(s, answer)).await;
        for _ in 0..3 {
            let fetched = get(&address).await.unwrap();
            assert_eq!((fetched.status, fetched.body.len()), (404, 0));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// The client reports what came (the section policy is `answer`'s); a
    /// broken head is the only status-line fault it reports itself.
    #[tokio::test]
    async fn any_final_status_is_reported_with_a_2xx_body_only() {
        for (answer, status, body) in [
            ("HTTP/1.1 503 Busy\r\ncontent-length: 4\r\n\r\n{}{}", 503, &b""[..]),
            ("HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n", 302, b""),
            ("HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n<html>", 200, b"<html>"),
        ] {
            let (address, _) = server(move |_, s| answer_all(s, answer)).await;
            let reply = get(&address).await.unwrap();
            assert_eq!((reply.status, &reply.body[..]), (status, body), "{answer:?}");
        }
        let broken = "HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n";
        let (address, _) = server(move |_, s| answer_all(s, broken)).await;
        assert_eq!(get(&address).await.unwrap_err(), FetchError::Connect);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let answer = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                      HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        let (address, _) = server(move |_, s| answer_all(s, answer)).await;
        assert_eq!(&get(&address).await.unwrap().body[..], b"[]");
    }

    #[tokio::test]
    async fn paths_that_could_split_the_request_are_never_sent() {
        let (address, accepted) = server(|_, s| answer_all(s, OK_JSON)).await;
        let result = super::get(&address, "/a b HTTP/1.1\r\nx: y", &[], 1024).await;
        assert_eq!(result.unwrap_err(), FetchError::Internal);
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }
}
