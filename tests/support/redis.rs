//! Real Redis for the shared-tier tests: the machine's server on
//! 127.0.0.1:6379 (a key prefix per test keeps tests apart), or a private
//! `redis-server` child on a port of its own, for tests that kill, pause
//! or count commands of the server.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{backend, FakeBackend};

/// The product page of the shared-tier tests: `head` (the `[server]` and
/// `[admin]` tables), `[redis]` at `redis` under `prefix`, a required
/// catalog section and a pricing section cached with `cache` (the inside of
/// its `cache = { ... }`).
pub fn page_with_shared_tier(
    head: &str,
    redis: &str,
    prefix: &str,
    product: &FakeBackend,
    price: &FakeBackend,
    cache: &str,
) -> String {
    format!(
        "{head}
[redis]
url = \"{redis}\"
prefix = \"{prefix}\"
timeout = \"200ms\"

[defaults]
timeout = \"200ms\"
retries = 0
{}{}
[[routes]]
path = \"/products/{{id}}\"
deadline = \"600ms\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/products/{{id}}\", required = true }},
  {{ name = \"price\", backend = \"pricing\", path = \"/prices/{{id}}\" }},
]
",
        backend("catalog", &[product.address()], ""),
        backend("pricing", &[price.address()], &format!("cache = {{ {cache} }}")),
    )
}

/// The machine's Redis (`.ci/run` starts it).
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

/// A key prefix no other test (or test run) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "mosaic-test:{test}:{}:{}:{nanos}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection to `url`.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} is not reachable ({e}); is redis-server running?")
        })
}

/// Runs one command (`["SET", key, value]`), panicking on an error.
pub async fn run(url: &str, args: &[&[u8]]) {
    let mut con = connect(url).await;
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).expect("command name"));
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd.query_async(&mut con).await.expect("redis command");
}

/// Every key under `prefix` (SCAN), with its value when it is a string.
pub async fn keys_under(url: &str, prefix: &str) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut con = connect(url).await;
    let mut cursor: u64 = 0;
    let mut out = Vec::new();
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .expect("SCAN");
        for key in keys {
            let value: Option<Vec<u8>> =
                redis::cmd("GET").arg(&key).query_async(&mut con).await.ok().flatten();
            out.push((key, value));
        }
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// Waits until `prefix` holds at least `count` keys (writes are off the
/// response path, so they land a moment after the page).
pub async fn wait_for_keys(
    url: &str,
    prefix: &str,
    count: usize,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let keys = keys_under(url, prefix).await;
        if keys.len() >= count || Instant::now() > until {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `calls` of a command in `INFO commandstats` (e.g. `mget`).
pub async fn command_calls(url: &str, command: &str) -> u64 {
    let mut con = connect(url).await;
    let info: String =
        redis::cmd("INFO").arg("commandstats").query_async(&mut con).await.expect("INFO");
    let needle = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A `redis-server` of the test's own, keeping nothing on disk; killed on
/// drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = RedisServer { child: None, port };
        server.restart();
        server
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut pong = [0u8; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut pong).is_ok()
                    && &pong == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < until, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP / SIGCONT: a Redis that stops answering, then answers again.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            let signal = if paused { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.pause(false);
        self.kill();
    }
}
