//! mosaic against an independent HTTP/1.1 implementation: nginx as the
//! back end (a child process with its own prefix directory, killed at the
//! end), so mosaic's own client (`src/backend/client/`) is checked against
//! a peer it was not written with, not only against the test fakes.
//!
//! nginx serves a JSON file with `Content-Length`, a JSON answer it sends
//! chunked (SSI output has no length known up front), and keeps
//! connections alive. A page with a section on each and a proxy route
//! serving both are asked 200 times each: every answer complete and
//! byte-exact, and nginx's access log (`$connection`,
//! `$connection_requests`) shows mosaic reused its connections.
//!
//! nginx is required: CI installs Debian's `nginx` (`.ci/run`). Without it
//! the test fails saying so; it never passes silently.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::raw_wire::{exchange, status_of};
use support::*;

/// A running nginx (`master_process off`: one process, so killing the
/// child leaves nothing behind).
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn access_log(&self) -> PathBuf {
        self.dir.path().join("logs/access.log")
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary, or a failure that says how to get one.
fn nginx_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/usr/local/nginx/sbin".into()])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "nginx is not installed, and this test needs it as an independent back end \
             (CI installs Debian's package in .ci/run; here: apt-get install nginx)"
        )
    })
}

/// A loopback port that was free a moment ago, taken below Linux's
/// ephemeral range (32768-60999): a port-0 listener or an outgoing
/// connection of another test running at the same time cannot take it
/// between this check and nginx's bind.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 21_000 + (std::process::id() % 4_000) as u16 * 2;
    (0..3_000)
        .map(|_| start + NEXT.fetch_add(1, Ordering::Relaxed) % 3_000)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

/// Starts nginx serving `files` (path under the root → bytes) on a free
/// loopback port; `/chunked/` runs SSI on JSON.
async fn start_nginx(files: &[(&str, Vec<u8>)]) -> Nginx {
    let binary = nginx_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    for sub in ["logs", "tmp", "www"] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
    }
    for (path, bytes) in files {
        write(&root.join("www").join(path), bytes);
    }
    let port = free_port();
    let p = root.display();
    let conf = format!(
        "master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format peer '$connection $connection_requests $status $request_method $request_uri';
    access_log {p}/logs/access.log peer;
    keepalive_requests 100000;
    keepalive_timeout 300s;
    server_tokens off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{ application/json json; }}
    default_type application/json;
    server {{
        listen 127.0.0.1:{port};
        root {p}/www;
        location /chunked/ {{
            ssi on;
            ssi_types application/json;
        }}
    }}
}}
"
    );
    write(&root.join("nginx.conf"), conf.as_bytes());
    let child = Command::new(&binary)
        .arg("-p")
        .arg(root)
        .arg("-c")
        .arg(root.join("nginx.conf"))
        .arg("-e")
        .arg(root.join("logs/error.log"))
        .arg("-g")
        .arg("daemon off;")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut nginx = Nginx { child, addr, dir };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let mut stderr = String::new();
            if let Some(mut pipe) = nginx.child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("nginx exited at start ({status}): {stderr}\n{}", nginx.error_log());
        }
        // Ready when it answers a request, not merely when its port
        // accepts: a connection made while nginx was still starting has
        // been seen closed without an answer (CI, 2026-12-08).
        let probe = b"GET /ready HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n";
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && status_of(addr, probe, Duration::from_secs(1)).await.is_some()
        {
            return nginx;
        }
        assert!(Instant::now() < until, "nginx not listening on {addr}: {}", nginx.error_log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JSON document of about `len` bytes, different for each `seed`.
fn json_doc(len: usize, seed: u32) -> String {
    let mut items = Vec::new();
    let mut size = 0;
    let mut i = 0u32;
    while size < len {
        let item = format!(
            r#"{{"id":"{seed}-{i}","name":"item {i} of {seed}","amount":{},"tags":["a","b\u00e9"]}}"#,
            i.wrapping_mul(2_654_435_761) % 100_000
        );
        size += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!(r#"{{"seed":{seed},"items":[{}]}}"#, items.join(","))
}

/// Where `needle` is in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// nginx serving a `Content-Length` JSON file and a chunked JSON answer
/// (checked on raw connections to be framed so), and a gateway with a page
/// `/shop/{id}` holding a section on each and a proxy route `/files/` →
/// nginx. Also returns the two bodies.
async fn setup() -> (Nginx, mosaic::gateway::RunningGateway, String, String) {
    let product = json_doc(24_000, 1);
    let cart = json_doc(12_000, 2);
    // The SSI command outputs nothing; what is left has no known length,
    // so nginx answers chunked.
    let (cart_head, cart_tail) = cart.split_at(cart.len() / 2);
    let cart_source = format!("{cart_head}<!--# set var=\"x\" value=\"y\" -->{cart_tail}");
    let nginx = start_nginx(&[
        ("static/product.json", product.clone().into_bytes()),
        ("chunked/cart.json", cart_source.into_bytes()),
    ])
    .await;

    // What nginx itself sends, checked on a raw connection: the framing
    // the test is about really is what it says.
    let direct = exchange(
        nginx.addr,
        b"GET /static/product.json HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(direct.status, 200);
    assert_eq!(direct.header("content-length"), Some(product.len().to_string()));
    assert_eq!(direct.body, product.as_bytes());
    let direct = exchange(
        nginx.addr,
        b"GET /chunked/cart.json HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(direct.status, 200);
    assert_eq!(direct.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(direct.header("content-length"), None);
    assert_eq!(direct.body, cart.as_bytes(), "SSI output is the file less its command");

    let peer = nginx.addr.to_string();
    let toml = format!(
        "{LISTEN_ANY}
[defaults]
timeout = \"3s\"
retries = 0
{}{}{}
[[routes]]
path = \"/shop/{{id}}\"
deadline = \"5s\"
sections = [
  {{ name = \"product\", backend = \"catalog\", path = \"/static/product.json\", required = true }},
  {{ name = \"cart\", backend = \"cart\", path = \"/chunked/cart.json\", required = true }},
]

[[proxy]]
prefix = \"/files/\"
backend = \"files\"
rewrite = \"/\"
",
        backend("catalog", std::slice::from_ref(&peer), ""),
        backend("cart", std::slice::from_ref(&peer), ""),
        backend("files", std::slice::from_ref(&peer), ""),
    );
    let gw = start_gateway(&toml).await;

    (nginx, gw, product, cart)
}

/// Sections on a `Content-Length` file and on a chunked SSI answer, and a
/// proxy route to both, each asked 200 times through mosaic: every answer
/// 200 and byte-exact, and nginx saw far fewer connections than requests
/// (mosaic keeps its back-end connections alive and reuses them).
#[actix_rt::test]
async fn nginx_as_back_end_byte_exact_and_kept_alive() {
    let (nginx, gw, product, cart) = setup().await;
    let product_member = format!("\"product\":{product}");
    let cart_member = format!("\"cart\":{cart}");
    for i in 0..200 {
        let page = get(gw.addr, &format!("/shop/{i}")).await;
        assert_eq!(page.status, 200, "page {i}: {}", String::from_utf8_lossy(&page.body));
        assert_eq!(page.header("x-mosaic-complete"), Some("true"), "page {i}");
        assert!(contains(&page.body, product_member.as_bytes()), "page {i}: product changed");
        assert!(contains(&page.body, cart_member.as_bytes()), "page {i}: cart changed");
    }
    for i in 0..200 {
        let (path, expected) = if i % 2 == 0 {
            ("/files/static/product.json", &product)
        } else {
            ("/files/chunked/cart.json", &cart)
        };
        let answer = get(gw.addr, path).await;
        assert_eq!(answer.status, 200, "proxy {i} {path}");
        assert_eq!(answer.body.len(), expected.len(), "proxy {i} {path}: length");
        assert!(answer.body == expected.as_bytes(), "proxy {i} {path}: body changed");
    }

    // nginx's view: two direct requests, 400 section calls, 200 proxied.
    let expected_lines = 2 + 400 + 200;
    // Less start_nginx's readiness probes.
    let read_log = || {
        let log = std::fs::read_to_string(nginx.access_log()).unwrap_or_default();
        log.lines()
            .filter(|line| !line.ends_with(" /ready"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    };
    assert!(
        eventually(Duration::from_secs(5), || read_log().lines().count() >= expected_lines).await,
        "nginx logged {} requests, expected {expected_lines}",
        read_log().lines().count()
    );
    let log = read_log();
    let mut per_connection: BTreeMap<u64, u64> = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for line in log.lines().skip(2) {
        let mut fields = line.split(' ');
        let connection: u64 = fields.next().and_then(|f| f.parse().ok()).expect("$connection");
        let requests: u64 =
            fields.next().and_then(|f| f.parse().ok()).expect("$connection_requests");
        *statuses.entry(fields.next().unwrap_or("?").to_string()).or_insert(0) += 1;
        let seen = per_connection.entry(connection).or_insert(0);
        *seen = (*seen).max(requests);
    }
    assert_eq!(statuses, BTreeMap::from([("200".to_string(), 600)]), "{log}");
    let connections = per_connection.len();
    let most = per_connection.values().max().copied().unwrap_or(0);
    assert!(
        connections * 20 <= 600 && most >= 100,
        "mosaic used {connections} connections for 600 requests (longest {most} requests): \
         {per_connection:?}"
    );
    gw.stop(false).await;
    drop(nginx);
}

/// A chunked answer keeps the service's one `Content-Type`: mosaic relays
/// the service's header lines, and must not add a default of its own for a
/// body of unknown length (actix-web's `streaming()` adds
/// `application/octet-stream` when its header map has none), which leaves
/// the client two conflicting `Content-Type` headers.
#[actix_rt::test]
async fn relayed_answers_keep_their_one_content_type() {
    let (nginx, gw, _, _) = setup().await;
    for path in ["/files/static/product.json", "/files/chunked/cart.json"] {
        let answer = get(gw.addr, path).await;
        assert_eq!(answer.status, 200, "{path}");
        let types: Vec<&str> = answer
            .headers
            .iter()
            .filter(|(n, _)| n == "content-type")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(types, ["application/json"], "{path}: {:?}", answer.headers);
    }
    gw.stop(false).await;
    drop(nginx);
}
