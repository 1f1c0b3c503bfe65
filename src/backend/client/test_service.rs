//! Raw HTTP services on loopback for the client's unit tests: every byte
//! they send is written by the test, so each framing case is exact.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Serves every accepted connection with `handler(n, stream)`, `n` counting
/// from 0. Returns the address and the number of connections accepted.
pub async fn server<F, Fut>(handler: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(handler(n, stream));
        }
    });
    (address, accepted)
}

/// Reads a request head, then `body_len` body bytes; `None` when the client
/// closed first.
pub async fn read_request(stream: &mut TcpStream, body_len: usize) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let mut body = vec![0u8; body_len];
    stream.read_exact(&mut body).await.ok()?;
    Some((String::from_utf8(head).unwrap(), body))
}

/// Tells a test that the service closed a connection, so it can go on once
/// the close is visible to the client instead of sleeping and hoping.
#[derive(Clone)]
pub struct Closes(mpsc::Sender<()>);

/// The receiving end of [`Closes`].
pub struct CloseSeen(mpsc::Receiver<()>);

pub fn closes() -> (Closes, CloseSeen) {
    let (tx, rx) = mpsc::channel(64);
    (Closes(tx), CloseSeen(rx))
}

impl Closes {
    /// Closes the service's side of `stream` (a FIN) and reports it.
    pub async fn close(&self, mut stream: TcpStream) {
        let _ = stream.shutdown().await;
        drop(stream);
        let _ = self.0.send(()).await;
    }
}

impl CloseSeen {
    /// Returns once the service closed one more connection and this
    /// worker's event loop has turned since, so the client's pooled socket
    /// has seen the FIN (on loopback the kernel delivers it within the
    /// service's `shutdown`).
    pub async fn next(&mut self) {
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), self.0.recv());
        closed.await.expect("the service closed within 5 s").expect("the service is running");
        // A yielded task runs after the scheduler has polled the reactor.
        tokio::task::yield_now().await;
    }
}
