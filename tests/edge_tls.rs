//! HTTPS on the edge listener over real TLS sockets, certificates made in
//! the test (SPEC.md, "Edge security": `[server.tls]`, ALPN h2 and
//! http/1.1, `min_version`, the pair re-read on reload).

mod support;

use std::time::Duration;

use rustls::version::{TLS12, TLS13};
use support::fake::{FakeBackend, Reply};
use support::tls::{
    client_config, handshake, listen_tls, peer_of, TestCert, TlsAnswer, TlsBody, TlsClient,
};
use support::{admin, backend};

/// A page of two sections and a proxy route, on one service that says
/// which path it was asked and echoes what it was sent.
fn routes(service: &FakeBackend) -> String {
    format!(
        r#"
{backends}
[[routes]]
path = "/products/{{id}}"
deadline = "2s"
sections = [
  {{ name = "product", backend = "shop", path = "/products/{{id}}", required = true }},
  {{ name = "price", backend = "shop", path = "/prices/{{id}}" }},
]

[[proxy]]
prefix = "/api/"
backend = "shop"
"#,
        backends = backend("shop", &[service.address()], "")
    )
}

/// The service: JSON naming the path, and a header of its own (relayed
/// header lines must reach an h2 client as fields).
fn shop() -> FakeBackend {
    FakeBackend::scripted(|request| {
        let path = request.target.split('?').next().unwrap_or("");
        Reply::ok_with_header(
            &format!(r#"{{"path":"{path}","got":{}}}"#, request.body.len()),
            "x-shop",
            "yes",
        )
    })
}

/// The shop's routes over HTTPS (`min_version = "1.2"`) with a new
/// certificate: its directory (keep it), the certificate, the service and
/// the gateway.
async fn shop_over_tls(
) -> (tempfile::TempDir, TestCert, FakeBackend, mosaic::gateway::RunningGateway) {
    let dir = tempfile::tempdir().expect("dir");
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.write(dir.path());
    let service = shop();
    let toml = format!("{}{}", listen_tls(&cert_path, &key_path, "1.2"), routes(&service));
    let gateway = support::start_gateway(&toml).await;
    (dir, cert, service, gateway)
}

fn page_is_whole(answer: &TlsAnswer) {
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let page = answer.json();
    assert_eq!(page["product"]["path"], "/products/7");
    assert_eq!(page["price"]["path"], "/prices/7");
    assert_eq!(answer.header("x-mosaic-complete"), Some("true"));
}

/// Pages and proxied requests over h2 and over HTTP/1.1 (ALPN decides), on
/// one listener: bodies with and without a declared length reach the
/// service whole, the service's headers reach the client, services see
/// `X-Forwarded-Proto: https` and the host, and h2 multiplexes.
#[actix_rt::test]
async fn pages_and_proxy_routes_over_h2_and_http1() {
    let (_dir, cert, service, gateway) = shop_over_tls().await;
    let addr = gateway.addr;

    // h2 first in the client's offer: chosen.
    let config = client_config(&[&cert.der], &[b"h2", b"http/1.1"], &[&TLS13, &TLS12]);
    let stream = handshake(addr, config.clone()).await.expect("handshake");
    assert_eq!(peer_of(&stream), (cert.der.clone(), Some(b"h2".to_vec())));
    let h2 = TlsClient::over(stream).await;
    let page = h2.send("GET", "/products/7", &[], TlsBody::Empty).await;
    assert_eq!(page.version, http::Version::HTTP_2);
    page_is_whole(&page);

    let proxied = h2.send("GET", "/api/items?x=1", &[], TlsBody::Empty).await;
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.header("x-shop"), Some("yes"), "relayed header lines over h2");
    assert_eq!(proxied.json()["path"], "/api/items");
    let seen = service.requests().pop().expect("a call");
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-host"), Some("localhost"), "from :authority");
    // A GET whose HEADERS frame ended the stream has no body: none is framed.
    assert!(seen.body.is_empty());
    assert_eq!(seen.header("transfer-encoding"), None);
    assert_eq!(seen.header("content-length"), None);

    // A body without a declared length (h2 DATA frames) is relayed whole;
    // one with Content-Length too.
    let chunks = vec![b"{\"a\":".to_vec(), vec![b'1'; 40_000], b"}".to_vec()];
    let sent: Vec<u8> = chunks.concat();
    let posted = h2.send("POST", "/api/orders", &[], TlsBody::Chunks(chunks)).await;
    assert_eq!(posted.status, 200, "{}", String::from_utf8_lossy(&posted.body));
    assert_eq!(service.requests().pop().expect("a call").body, sent);
    let whole = h2
        .send(
            "PUT",
            "/api/orders/1",
            &[("content-type", "application/json")],
            TlsBody::Whole(b"{\"b\":2}".to_vec()),
        )
        .await;
    assert_eq!(whole.status, 200);
    assert_eq!(service.requests().pop().expect("a call").body, b"{\"b\":2}");

    // Twenty pages at once on the one h2 connection.
    let pages = futures_util::future::join_all(
        (0..20).map(|_| h2.send("GET", "/products/7", &[], TlsBody::Empty)),
    )
    .await;
    pages.iter().for_each(page_is_whole);

    // A client that offers only http/1.1 gets it, on the same port.
    let config = client_config(&[&cert.der], &[b"http/1.1"], &[&TLS13, &TLS12]);
    let stream = handshake(addr, config).await.expect("handshake");
    assert_eq!(peer_of(&stream).1.as_deref(), Some(&b"http/1.1"[..]));
    let h1 = TlsClient::over(stream).await;
    for _ in 0..3 {
        // Kept alive: three on one connection.
        let page = h1.send("GET", "/products/7", &[], TlsBody::Empty).await;
        assert_eq!(page.version, http::Version::HTTP_11);
        page_is_whole(&page);
    }
    let chunked = h1
        .send("POST", "/api/orders", &[], TlsBody::Chunks(vec![b"{}".to_vec(), b" ".to_vec()]))
        .await;
    assert_eq!(chunked.status, 200);
    assert_eq!(service.requests().pop().expect("a call").body, b"{} ");

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain =
        support::raw(addr, b"GET /products/7 HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(3))
            .await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    gateway.stop(false).await;
}

/// `min_version = "1.3"` refuses a TLS 1.2 client and serves a 1.3 one;
/// the default ("1.2") serves both.
#[actix_rt::test]
async fn min_version_refuses_older_clients() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.write(dir.path());
    let service = shop();
    let only13 = format!("{}{}", listen_tls(&cert_path, &key_path, "1.3"), routes(&service));
    let gateway = support::start_gateway(&only13).await;
    let tls12 = client_config(&[&cert.der], &[b"http/1.1"], &[&TLS12]);
    let tls13 = client_config(&[&cert.der], &[b"http/1.1"], &[&TLS13]);
    assert!(handshake(gateway.addr, tls12.clone()).await.is_err(), "TLS 1.2 refused");
    let client = TlsClient::connect(gateway.addr, tls13.clone()).await;
    page_is_whole(&client.send("GET", "/products/7", &[], TlsBody::Empty).await);
    gateway.stop(false).await;

    let both = format!("{}{}", listen_tls(&cert_path, &key_path, "1.2"), routes(&service));
    let gateway = support::start_gateway(&both).await;
    for config in [tls12, tls13] {
        let client = TlsClient::connect(gateway.addr, config).await;
        page_is_whole(&client.send("GET", "/products/7", &[], TlsBody::Empty).await);
    }
    gateway.stop(false).await;
}

/// A reload re-reads the pair: new handshakes get the new certificate,
/// connections already open keep working; a mismatched pair is refused
/// with its path and the pair in service stays.
#[actix_rt::test]
async fn reload_rotates_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let first = TestCert::new();
    let (cert_path, key_path) = first.write(dir.path());
    let service = shop();
    let toml = format!("{}{}", listen_tls(&cert_path, &key_path, "1.2"), routes(&service));
    let (gateway, _file) = support::start_gateway_from_file(&toml).await;
    let second = TestCert::new();
    // A new client config each time: a config's session cache would resume
    // the earlier session, which keeps the certificate it was made with
    // (as resumption should); a full handshake is what shows the new one.
    let trusting_both = || client_config(&[&first.der, &second.der], &[b"h2"], &[&TLS13, &TLS12]);
    let h1_both = client_config(&[&first.der, &second.der], &[b"http/1.1"], &[&TLS13, &TLS12]);

    let stream = handshake(gateway.addr, trusting_both()).await.expect("handshake");
    assert_eq!(peer_of(&stream).0, first.der);
    let open_h2 = TlsClient::over(stream).await;
    let open_h1 = TlsClient::connect(gateway.addr, h1_both.clone()).await;
    page_is_whole(&open_h2.send("GET", "/products/7", &[], TlsBody::Empty).await);
    page_is_whole(&open_h1.send("GET", "/products/7", &[], TlsBody::Empty).await);

    // Rotation in place (same paths, new files), then a reload.
    second.write(dir.path());
    let reloaded = admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert_eq!(reloaded.status, 200, "{}", String::from_utf8_lossy(&reloaded.body));
    let stream = handshake(gateway.addr, trusting_both()).await.expect("handshake");
    assert_eq!(peer_of(&stream).0, second.der, "a new handshake gets the new certificate");
    page_is_whole(
        &TlsClient::over(stream).await.send("GET", "/products/7", &[], TlsBody::Empty).await,
    );
    page_is_whole(&open_h2.send("GET", "/products/7", &[], TlsBody::Empty).await);
    page_is_whole(&open_h1.send("GET", "/products/7", &[], TlsBody::Empty).await);

    // A key that is not the certificate's: refused, named, nothing changes.
    std::fs::write(&key_path, TestCert::new().key_pem).expect("write key");
    let refused = admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert!(refused.status >= 400, "a mismatched pair is refused: {}", refused.status);
    let said = String::from_utf8_lossy(&refused.body);
    assert!(said.contains("server.tls.key"), "{said}");
    let stream = handshake(gateway.addr, trusting_both()).await.expect("handshake");
    assert_eq!(peer_of(&stream).0, second.der, "the pair in service stays");
    page_is_whole(
        &TlsClient::over(stream).await.send("GET", "/products/7", &[], TlsBody::Empty).await,
    );

    // An unreadable certificate likewise.
    std::fs::remove_file(&cert_path).expect("remove cert");
    let refused = admin(gateway.admin_addr, "POST", "/admin/reload", None, None).await;
    assert!(String::from_utf8_lossy(&refused.body).contains("server.tls.cert"));
    page_is_whole(&open_h2.send("GET", "/products/7", &[], TlsBody::Empty).await);
    gateway.stop(false).await;
}

/// A large proxied answer (600 KB, more than h2's initial flow-control
/// window) streams over h2 byte for byte.
#[actix_rt::test]
async fn a_large_answer_streams_over_h2_byte_exact() {
    let dir = tempfile::tempdir().expect("dir");
    let cert = TestCert::new();
    let (cert_path, key_path) = cert.write(dir.path());
    let big: String = format!(r#"{{"blob":"{}"}}"#, "x".repeat(600_000));
    let service = FakeBackend::start(Reply::ok(&big));
    let toml = format!(
        "{}{}[[proxy]]\nprefix = \"/files/\"\nbackend = \"files\"\n",
        listen_tls(&cert_path, &key_path, "1.2"),
        backend("files", &[service.address()], "")
    );
    let gateway = support::start_gateway(&toml).await;
    let config = client_config(&[&cert.der], &[b"h2"], &[&TLS13]);
    let client = TlsClient::connect(gateway.addr, config).await;
    let answer = client.send("GET", "/files/big.json", &[], TlsBody::Empty).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.version, http::Version::HTTP_2);
    assert_eq!(answer.body.as_ref(), big.as_bytes());
    gateway.stop(false).await;
}

/// What one h2 connection may ask for is bounded, as the server's first
/// SETTINGS frame says on the wire (read raw, after the TLS handshake): at
/// most 128 concurrent streams and 64 KiB of headers; headers over
/// mosaic's 32 KiB get 431 over h2 as over HTTP/1.1.
#[actix_rt::test]
async fn h2_connections_are_bounded_in_streams_and_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, cert, _service, gateway) = shop_over_tls().await;
    let config = client_config(&[&cert.der], &[b"h2"], &[&TLS13]);

    let mut raw = handshake(gateway.addr, config.clone()).await.expect("handshake");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), raw.read_exact(&mut head))
        .await
        .expect("a frame within 5 s")
        .expect("frame header");
    let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    assert_eq!((head[3], head[4]), (0x4, 0x0), "the server's first frame is its SETTINGS");
    let mut payload = vec![0u8; length];
    raw.read_exact(&mut payload).await.expect("settings payload");
    let settings: std::collections::BTreeMap<u16, u32> = payload
        .chunks_exact(6)
        .map(|e| (u16::from_be_bytes([e[0], e[1]]), u32::from_be_bytes([e[2], e[3], e[4], e[5]])))
        .collect();
    assert_eq!(settings.get(&0x3), Some(&128), "SETTINGS_MAX_CONCURRENT_STREAMS: {settings:?}");
    assert_eq!(settings.get(&0x6), Some(&65_536), "SETTINGS_MAX_HEADER_LIST_SIZE: {settings:?}");

    let client = TlsClient::connect(gateway.addr, config).await;
    let big = "v".repeat(40_000);
    let refused = client.send("GET", "/products/7", &[("x-big", &big)], TlsBody::Empty).await;
    assert_eq!(refused.status, 431);
    page_is_whole(&client.send("GET", "/products/7", &[], TlsBody::Empty).await);
    gateway.stop(false).await;
}

/// A connection that never finishes its handshake (silent, or sending
/// bytes that are not TLS) is closed within client_timeout (1 s here),
/// and other clients are served meanwhile. Raw sockets.
#[actix_rt::test]
async fn a_handshake_that_never_completes_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, cert, _service, gateway) = shop_over_tls().await;

    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    let mut garbage = tokio::net::TcpStream::connect(gateway.addr).await.expect("connect");
    garbage.write_all(b"\x16\x03\x01\xff\xffnot a client hello").await.expect("write");
    let config = client_config(&[&cert.der], &[b"h2"], &[&TLS13]);
    let client = TlsClient::connect(gateway.addr, config).await;
    page_is_whole(&client.send("GET", "/products/7", &[], TlsBody::Empty).await);
    for stream in [&mut silent, &mut garbage] {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue, // a TLS alert, then the close
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the connection is closed");
    }
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    gateway.stop(false).await;
}

/// A streamed page (server-sent events) over h2: the same events as over
/// HTTP/1.1, section by section, then the page event.
#[actix_rt::test]
async fn a_streamed_page_over_h2() {
    let (_dir, cert, _service, gateway) = shop_over_tls().await;
    let config = client_config(&[&cert.der], &[b"h2"], &[&TLS13]);
    let client = TlsClient::connect(gateway.addr, config).await;
    let stream =
        client.send("GET", "/products/7", &[("accept", "text/event-stream")], TlsBody::Empty).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.version, http::Version::HTTP_2);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8_lossy(&stream.body).into_owned();
    let events: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("event: ")).collect();
    let mut sections = events[..events.len() - 1].to_vec();
    sections.sort_unstable();
    assert_eq!(sections, ["section", "section"], "{text}");
    assert_eq!(events.last(), Some(&"page"), "{text}");
    assert!(text.contains(r#""name":"product""#) && text.contains(r#""name":"price""#), "{text}");
    assert!(text.contains(r#""path":"/products/7""#), "bodies embedded: {text}");
    gateway.stop(false).await;
}

/// An h2 body of no declared length is held to `server.max_body` (1 MiB
/// by default) as it streams: 413, and the service gets nothing past the
/// limit.
#[actix_rt::test]
async fn an_undeclared_h2_body_over_max_body_is_refused() {
    let (_dir, cert, service, gateway) = shop_over_tls().await;
    let config = client_config(&[&cert.der], &[b"h2"], &[&TLS13]);
    let client = TlsClient::connect(gateway.addr, config).await;
    let chunks: Vec<Vec<u8>> = (0..20).map(|_| vec![b'x'; 64 * 1024]).collect();
    let refused = client.send("POST", "/api/upload", &[], TlsBody::Chunks(chunks)).await;
    assert_eq!(refused.status, 413, "{}", String::from_utf8_lossy(&refused.body));
    assert!(service.requests().iter().all(|r| r.body.len() <= 1024 * 1024));
    page_is_whole(&client.send("GET", "/products/7", &[], TlsBody::Empty).await);
    gateway.stop(false).await;
}
