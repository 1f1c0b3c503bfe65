//! What mosaic adds to an AMQP RPC call (issue 16's performance target).
//!
//! One responder, the demo's inventory over AMQP (`mosaic demo-service
//! --service inventory --amqp URL --queue Q`, its own process), on the local
//! RabbitMQ. Two clients call it at the same paced rate, one after the other:
//!
//! - **floor**: a plain lapin client doing the RPC itself (direct reply-to,
//!   a correlation id per call, the reply matched by id), the shortest
//!   round trip through this broker to this service;
//! - **mosaic**: keep-alive HTTP/1.1 clients asking `mosaic run` (its own
//!   process, release build) for a page with that one AMQP section.
//!
//! mosaic's added latency per call is its p50 (p99) minus the floor's.
//! Run: `cargo bench --bench amqp_rpc` (RabbitMQ on 127.0.0.1:5672; env
//! `AMQP_RPC_RATE` calls/s, default 1000, and `AMQP_RPC_SECONDS`, default 10).
//! `AMQP_RPC_RESPONDER=minimal` replaces the demo service by a bare lapin
//! responder in this process (a reply per request, nothing else): a shorter
//! round trip, so the same added latency is a larger share of it.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Mutex;

const EXE: &str = env!("CARGO_BIN_EXE_mosaic");
const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Concurrent callers, each paced at rate / CALLERS.
const CALLERS: usize = 4;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rate = env_number("AMQP_RPC_RATE", 1000.0);
    let seconds = env_number("AMQP_RPC_SECONDS", 10.0);
    let queue = format!("mosaic-bench.inventory.{}", std::process::id());
    let minimal = std::env::var("AMQP_RPC_RESPONDER").is_ok_and(|v| v == "minimal");
    let _responder = if minimal {
        minimal_responder(&queue);
        None
    } else {
        Some(responder(&queue))
    };
    let dir = std::env::temp_dir().join(format!("mosaic-amqp-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let http_service = http_responder();
    let (_gateway, addr) = gateway(&dir, &queue, http_service);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let warm = Duration::from_secs(1);
        let length = Duration::from_secs_f64(seconds);
        let _ = floor(&queue, rate, warm).await;
        let mut direct = floor(&queue, rate, length).await;
        let _ = through_mosaic(addr, rate, warm, "/p/42").await;
        let mut mosaic = through_mosaic(addr, rate, length, "/p/42").await;
        report(rate, &mut direct, &mut mosaic);
        // The same page with the section over HTTP (a bare keep-alive
        // service), for the share of the added latency that is the edge's.
        let _ = through_mosaic(addr, rate, warm, "/h/42").await;
        let mut http = through_mosaic(addr, rate, length, "/h/42").await;
        http.sort();
        println!(
            "  for scale: the page with one HTTP section instead: p50 {:.1} µs p99 {:.1} µs",
            quantile(&http, 0.5).as_secs_f64() * 1e6,
            quantile(&http, 0.99).as_secs_f64() * 1e6
        );
    });
}

/// The demo's inventory, consuming `queue`.
fn responder(queue: &str) -> Killed {
    let mut child = Command::new(EXE)
        .args(["demo-service", "--service", "inventory", "--listen", "127.0.0.1:0"])
        .args(["--amqp", BROKER, "--queue", queue])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo-service runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    assert!(line.contains("listening"), "responder did not start: {line:?}");
    Killed(child)
}

/// A bare responder on its own thread: declares `queue`, replies `{}`
/// with status 200 to each request at once.
fn minimal_responder(queue: &str) {
    let queue = queue.to_string();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let connection =
                Connection::connect(BROKER, ConnectionProperties::default()).await.expect("broker");
            let channel = connection.create_channel().await.expect("channel");
            let options =
                lapin::options::QueueDeclareOptions { auto_delete: true, ..Default::default() };
            channel
                .queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await
                .expect("queue");
            let no_ack = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
            let mut requests = channel
                .basic_consume(queue.as_str().into(), "".into(), no_ack, FieldTable::default())
                .await
                .expect("consume");
            let _ = ready.send(());
            while let Some(Ok(request)) = requests.next().await {
                let (Some(reply_to), Some(id)) = (
                    request.properties.reply_to().clone(),
                    request.properties.correlation_id().clone(),
                ) else {
                    continue;
                };
                let mut headers = FieldTable::default();
                headers.insert("status".into(), AMQPValue::LongInt(200));
                let properties =
                    BasicProperties::default().with_correlation_id(id).with_headers(headers);
                let _ = channel
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        b"{}",
                        properties,
                    )
                    .await;
            }
        });
    });
    let _ = started.recv_timeout(Duration::from_secs(10));
}

/// `mosaic run` with one route whose one section is the AMQP inventory.
/// A bare HTTP/1.1 keep-alive service answering `{}` to everything.
fn http_responder() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let _ = listener.set_nonblocking(true);
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut buffer = vec![0u8; 8192];
                    let mut have = 0;
                    loop {
                        let Ok(n) = stream.read(&mut buffer[have..]).await else { return };
                        if n == 0 {
                            return;
                        }
                        have += n;
                        while let Some(end) = buffer[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                            if stream.write_all(reply).await.is_err() {
                                return;
                            }
                            buffer.copy_within(end + 4..have, 0);
                            have -= end + 4;
                        }
                    }
                });
            }
        });
    });
    addr
}

fn gateway(dir: &std::path::Path, queue: &str, http: SocketAddr) -> (Killed, SocketAddr) {
    let config = dir.join("amqp-bench.toml");
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [amqp]\nurl = \"{BROKER}\"\n[backends.inventory]\namqp = {{ queue = \"{queue}\" }}\n\
         timeout = \"1s\"\nretries = 0\nmax_in_flight = 4096\n\
         [[routes]]\npath = \"/p/{{id}}\"\ndeadline = \"2s\"\n\
         sections = [{{ name = \"inventory\", backend = \"inventory\", path = \"/inventory/{{id}}\" }}]\n\
         [backends.plain]\ninstances = [\"{http}\"]\ntimeout = \"1s\"\nretries = 0\nmax_in_flight = 4096\n\
         [[routes]]\npath = \"/h/{{id}}\"\ndeadline = \"2s\"\n\
         sections = [{{ name = \"inventory\", backend = \"plain\", path = \"/inventory/{{id}}\" }}]\n"
    );
    std::fs::write(&config, toml).expect("config");
    let mut child = Command::new(EXE)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosaic runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| mosaic::chaos::parse_announcement(&line).map(|(addr, _)| addr))
        .expect("mosaic announces its address");
    std::thread::spawn(move || lines.for_each(drop));
    // The broker channel opens just after start.
    std::thread::sleep(Duration::from_millis(500));
    (Killed(child), addr)
}

/// Direct lapin RPC calls for `length` at `rate`: their latencies.
async fn floor(queue: &str, rate: f64, length: Duration) -> Vec<Duration> {
    let connection =
        Connection::connect(BROKER, ConnectionProperties::default()).await.expect("broker");
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let channel = connection.create_channel().await.expect("channel");
        let mut replies = channel
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("reply consumer");
        let (queue, latencies) = (queue.to_string(), latencies.clone());
        callers.push(tokio::spawn(async move {
            let mut pace = pacer(rate / CALLERS as f64);
            let until = Instant::now() + length;
            let mut n = 0u64;
            while Instant::now() < until {
                pace.tick().await;
                n += 1;
                let id = format!("{caller}.{n}");
                let mut headers = FieldTable::default();
                headers.insert("method".into(), AMQPValue::LongString("GET".into()));
                headers.insert("path".into(), AMQPValue::LongString("/inventory/42".into()));
                let properties = BasicProperties::default()
                    .with_correlation_id(id.as_str().into())
                    .with_reply_to("amq.rabbitmq.reply-to".into())
                    .with_expiration("1000".into())
                    .with_headers(headers);
                let started = Instant::now();
                let options = BasicPublishOptions { mandatory: true, ..Default::default() };
                let published = channel
                    .basic_publish("".into(), queue.as_str().into(), options, b"", properties)
                    .await;
                if published.is_err() {
                    continue;
                }
                while let Some(Ok(reply)) = replies.next().await {
                    if reply.properties.correlation_id().as_ref().map(|c| c.as_str())
                        == Some(id.as_str())
                    {
                        latencies.lock().await.push(started.elapsed());
                        break;
                    }
                }
            }
        }));
    }
    for caller in callers {
        let _ = caller.await;
    }
    let _ = connection.close(200, "done".into()).await;
    let latencies = latencies.lock().await.clone();
    latencies
}

/// Paged calls through mosaic for `length` at `rate`: their latencies.
async fn through_mosaic(
    addr: SocketAddr,
    rate: f64,
    length: Duration,
    path: &'static str,
) -> Vec<Duration> {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let latencies = latencies.clone();
        callers.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let _ = stream.set_nodelay(true);
            let mut pace = pacer(rate / CALLERS as f64);
            let until = Instant::now() + length;
            let mut buffer = vec![0u8; 64 * 1024];
            while Instant::now() < until {
                pace.tick().await;
                let started = Instant::now();
                let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
                if stream.write_all(request.as_bytes()).await.is_err() {
                    return;
                }
                match read_response(&mut stream, &mut buffer).await {
                    Some(true) => latencies.lock().await.push(started.elapsed()),
                    Some(false) => {}
                    None => return,
                }
            }
        }));
    }
    for caller in callers {
        let _ = caller.await;
    }
    let latencies = latencies.lock().await.clone();
    latencies
}

/// Reads one response (framed by `Content-Length`); whether it was a 200
/// with the section live. `None` when the connection ended.
async fn read_response(stream: &mut tokio::net::TcpStream, buffer: &mut [u8]) -> Option<bool> {
    let mut have = 0;
    loop {
        let n = stream.read(&mut buffer[have..]).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
        let text = &buffer[..have];
        let Some(head_end) = text.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = std::str::from_utf8(&text[..head_end]).ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())?;
        if have >= head_end + 4 + length {
            let body = &text[head_end + 4..head_end + 4 + length];
            let live = head.starts_with("HTTP/1.1 200")
                && body.windows(15).any(|w| w == b"\"source\":\"live\"");
            return Some(live);
        }
    }
}

fn pacer(per_second: f64) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn report(rate: f64, direct: &mut [Duration], mosaic: &mut [Duration]) {
    direct.sort();
    mosaic.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("AMQP RPC at {rate} calls/s ({CALLERS} callers), one section, direct reply-to");
    for (name, samples) in [("floor (lapin)", &*direct), ("mosaic page", &*mosaic)] {
        println!(
            "  {name:<14} n={:<6} p50 {:>7.1} µs  p99 {:>7.1} µs",
            samples.len(),
            us(quantile(samples, 0.5)),
            us(quantile(samples, 0.99))
        );
    }
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (floor, through) = (us(quantile(direct, q)), us(quantile(mosaic, q)));
        println!(
            "RESULT {label}_added_us={:.1} {label}_added_ratio={:.3}",
            through - floor,
            (through - floor) / floor
        );
    }
}
