//! The streaming exchange against raw services on loopback.

use std::sync::atomic::Ordering;

use futures_util::stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::test_service::{closes, read_request, server};
use super::*;

type NoBody = stream::Empty<Result<Bytes, ForwardError>>;

const LIMITS: Limits = Limits { timeout: Duration::from_secs(2) };

/// A request without a body, started now.
async fn bodiless(
    address: &str,
    method: &'static str,
    resendable: bool,
) -> Result<Incoming, ForwardError> {
    let now = tokio::time::Instant::now();
    forward::<NoBody>(address, &get(method), None, LIMITS, resendable, now).await
}

fn get(method: &'static str) -> Outgoing<'static> {
    Outgoing { method, target: "/cart/items", header_lines: b"x-a: 1\r\n", body: RequestBody::None }
}

async fn collect(body: IncomingBody) -> Vec<u8> {
    match body {
        IncomingBody::Empty => Vec::new(),
        IncomingBody::Full(bytes) => bytes.to_vec(),
        IncomingBody::Stream(mut stream, _) => {
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.unwrap());
            }
            out
        }
    }
}

#[tokio::test]
async fn a_small_answer_arrives_whole_and_its_connection_is_reused() {
    let (address, accepted) = server(|_, mut s| async move {
        while let Some((head, _)) = read_request(&mut s, 0).await {
            assert!(head.starts_with("GET /cart/items HTTP/1.1\r\n"), "{head}");
            assert!(head.contains("x-a: 1\r\n"), "{head}");
            s.write_all(b"HTTP/1.1 200 OK\r\nx-b: 2\r\ncontent-length: 2\r\n\r\n[]").await.unwrap();
        }
    })
    .await;
    for _ in 0..3 {
        let incoming = bodiless(&address, "GET", true).await.unwrap();
        assert!(incoming.fields().any(|(n, v)| n == b"x-b" && v == b"2"));
        assert!(matches!(incoming.body, IncomingBody::Full(_)));
        assert_eq!(collect(incoming.body).await, b"[]");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn chunked_and_long_answers_stream_then_free_the_connection() {
    let big = "x".repeat(50_000);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n{:x}\r\n{big}\r\n0\r\nt: 1\r\n\r\n",
        big.len()
    );
    let long = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{big}", big.len());
    let (address, accepted) = server(move |_, mut s| {
        let (answer, long) = (answer.clone(), long.clone());
        async move {
            let mut n = 0;
            while read_request(&mut s, 0).await.is_some() {
                let reply = if n % 2 == 0 { &answer } else { &long };
                // In pieces, so the body really streams.
                for piece in reply.as_bytes().chunks(7000) {
                    s.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                n += 1;
            }
        }
    })
    .await;
    for round in 0..4 {
        let incoming = bodiless(&address, "GET", true).await.unwrap();
        let expected = if round % 2 == 0 { format!("hello{big}") } else { big.clone() };
        assert!(matches!(incoming.body, IncomingBody::Stream(..)));
        assert_eq!(collect(incoming.body).await, expected.as_bytes());
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused after streamed bodies");
}

#[tokio::test]
async fn a_body_ended_by_close_streams_to_the_end() {
    let (address, accepted) = server(|_, mut s| async move {
        read_request(&mut s, 0).await;
        s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b" close").await.unwrap();
    })
    .await;
    for _ in 0..2 {
        let incoming = bodiless(&address, "GET", true).await.unwrap();
        assert_eq!(collect(incoming.body).await, b"until close");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_stream_cut_short_ends_in_an_error() {
    let (address, _) = server(|_, mut s| async move {
        read_request(&mut s, 0).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this").await.unwrap();
    })
    .await;
    let incoming = bodiless(&address, "GET", true).await.unwrap();
    let IncomingBody::Stream(mut stream, Some(100)) = incoming.body else { panic!("a stream") };
    assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"only this");
    assert!(stream.next().await.unwrap().is_err());
}

#[tokio::test]
async fn an_answer_to_head_has_no_body_and_its_connection_is_not_reused() {
    let (address, accepted) = server(|_, mut s| async move {
        while read_request(&mut s, 0).await.is_some() {
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n").await.unwrap();
        }
    })
    .await;
    for _ in 0..2 {
        let incoming = bodiless(&address, "HEAD", true).await.unwrap();
        assert!(matches!(incoming.body, IncomingBody::Empty));
    }
    // A body a broken service sends after a HEAD answer would be read
    // as the next request's answer: such a connection is never reused.
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bodies_go_out_with_their_length_or_rechunked() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (address, _) = server(move |_, mut s| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut all = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the request is complete (length or last chunk).
            loop {
                let n = s.read(&mut buf).await.unwrap();
                all.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&all).to_string();
                if text.ends_with("0\r\n\r\n") || text.ends_with("hello world") {
                    break;
                }
            }
            seen_tx.send(String::from_utf8(all).unwrap()).unwrap();
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        }
    })
    .await;
    let chunks =
        || stream::iter([Ok::<_, ForwardError>(Bytes::from("hello")), Ok(Bytes::from(" world"))]);
    let mut post = get("POST");
    post.body = RequestBody::Length(11);
    let incoming =
        forward(&address, &post, Some(chunks()), LIMITS, false, tokio::time::Instant::now())
            .await
            .unwrap();
    assert_eq!(incoming.status, 201);
    let sent = seen_rx.recv().await.unwrap();
    assert!(
        sent.contains("content-length: 11\r\n") && sent.ends_with("\r\n\r\nhello world"),
        "{sent}"
    );

    post.body = RequestBody::Chunked;
    forward(&address, &post, Some(chunks()), LIMITS, false, tokio::time::Instant::now())
        .await
        .unwrap();
    let sent = seen_rx.recv().await.unwrap();
    assert!(sent.contains("transfer-encoding: chunked\r\n"), "{sent}");
    assert!(sent.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "{sent}");
}

#[tokio::test]
async fn client_faults_end_the_upload_and_a_silent_service_is_a_timeout() {
    let (address, _) = server(|_, mut s| async move {
        let mut sink = vec![0u8; 1 << 16];
        while s.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    let mut post = get("POST");
    post.body = RequestBody::Chunked;
    // The edge's body stream reports the client's faults; they end the
    // exchange as they are.
    let broken = stream::iter([Ok(Bytes::from("a")), Err(ForwardError::ClientStalled)]);
    let result =
        forward(&address, &post, Some(broken), LIMITS, false, tokio::time::Instant::now()).await;
    assert_eq!(result.unwrap_err(), ForwardError::ClientStalled);

    // The whole body arrived; the service never answers.
    let fast = Limits { timeout: Duration::from_millis(200) };
    let whole = stream::iter([Ok::<_, ForwardError>(Bytes::from("a"))]);
    let result =
        forward(&address, &post, Some(whole), fast, false, tokio::time::Instant::now()).await;
    assert_eq!(result.unwrap_err(), ForwardError::Upstream(FetchError::Timeout));
}

#[tokio::test]
async fn an_early_answer_is_relayed_when_the_service_stops_reading() {
    // The service answers before the body is in and reads no more of it:
    // the gateway's writes stall on full socket buffers, and the answer must
    // still come through. The service keeps its side open until the test
    // has the answer (closing with unread data would reset the connection,
    // and a reset may discard an answer the client has not read yet: that
    // is the service's fault, which nginx's lingering close avoids).
    let (release, released) = tokio::sync::watch::channel(false);
    let (address, _) = server(move |_, mut s| {
        let mut released = released.clone();
        async move {
            read_request(&mut s, 0).await;
            s.write_all(
                b"HTTP/1.1 413 Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            )
            .await
            .unwrap();
            let _ = released.wait_for(|done| *done).await;
        }
    })
    .await;
    let mut post = get("POST");
    post.body = RequestBody::Length(4_000_000);
    let big = stream::iter((0..1000).map(|_| Ok::<_, ForwardError>(Bytes::from(vec![b'x'; 4000]))));
    let incoming = forward(&address, &post, Some(big), LIMITS, false, tokio::time::Instant::now())
        .await
        .unwrap();
    assert_eq!(incoming.status, 413);
    release.send_replace(true);
}

#[tokio::test]
async fn closed_pooled_connections_are_never_a_failure() {
    // Every connection serves one exchange, then the service closes it.
    let (service_closes, mut close_seen) = closes();
    let (address, accepted) = server(move |_, mut s| {
        let service_closes = service_closes.clone();
        async move {
            if read_request(&mut s, 0).await.is_some() {
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
            }
            service_closes.close(s).await;
        }
    })
    .await;
    bodiless(&address, "GET", true).await.unwrap();
    close_seen.next().await;
    // A GET is sent again on a new connection...
    bodiless(&address, "GET", true).await.unwrap();
    close_seen.next().await;
    // ...a DELETE never is resent; the closed pooled connection is seen
    // at checkout, so it gets a new one.
    let incoming = bodiless(&address, "DELETE", false).await.unwrap();
    assert_eq!(incoming.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn chunk_sizes_are_lowercase_hex() {
    let mut buf = [0u8; 16];
    assert_eq!(hex(0, &mut buf), b"0");
    assert_eq!(hex(255, &mut buf), b"ff");
    assert_eq!(hex(0x1a2b3c, &mut buf), b"1a2b3c");
    assert_eq!(hex(u64::MAX, &mut buf), b"ffffffffffffffff");
}
