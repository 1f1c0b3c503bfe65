//! The vendored actix-http dispatcher's handling of a handler that has to
//! wait (vendor/README.md): it polls the handler when the request arrives
//! and then only when the handler's wake-up fires, not a second time
//! straight after the first. On a page that second poll walked every
//! in-flight backend call for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A handler that waits for a timer and counts how often it is polled.
struct CountedWait {
    polls: Arc<AtomicUsize>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Future for CountedWait {
    type Output = HttpResponse;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<HttpResponse> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(HttpResponse::Ok().body("waited")),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[actix_rt::test]
async fn a_waiting_handler_is_polled_on_arrival_and_on_its_wake_up_only() {
    let polls = Arc::new(AtomicUsize::new(0));
    let counter = polls.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new().default_service(web::to(move || CountedWait {
            polls: counter.clone(),
            timer: Box::pin(tokio::time::sleep(Duration::from_millis(50))),
        }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = server.addrs()[0];
    let running = server.run();
    let handle = running.handle();
    actix_rt::spawn(running);

    for round in 1..=3 {
        polls.store(0, Ordering::SeqCst);
        let mut stream =
            tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect: {e}"));
        stream
            .write_all(b"GET /wait HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap_or_else(|e| panic!("read: {e}"));
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("waited"), "{answer}");
        // Once when the request arrived (Pending), once when the timer
        // fired (Ready). Stock actix-http polls three times.
        assert_eq!(polls.load(Ordering::SeqCst), 2, "round {round}");
    }
    handle.stop(false).await;
}
