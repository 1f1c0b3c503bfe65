//! `mosaic demo` end to end: the real binary starts the seven services as
//! processes and the gateway; the page is complete; after one service is
//! SIGKILLed the next page is still 200 with that section labelled.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM first so the demo kills its services; SIGKILL if it lingers.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn http_get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).expect("connect gateway");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").expect("send");
    let mut raw = String::new();
    if let Err(e) = stream.read_to_string(&mut raw) {
        panic!("GET {path} from {addr}: {e} after {raw:?}");
    }
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn demo_serves_a_complete_page_and_survives_a_killed_service() {
    let child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--base-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosaic demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    let mut gateway = None;
    let mut reviews_pid = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        if let Some(rest) = line.trim().strip_prefix("curl -s http://") {
            if gateway.is_none() && rest.contains("/products/42") {
                gateway = rest.split('/').next().map(str::to_string);
            }
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"reviews") && words.get(2) == Some(&"pid") {
            reviews_pid = words.get(3).map(|p| p.to_string());
        }
        if line.starts_with("Inject faults") {
            break;
        }
    }
    // Keep reading so the demo never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let gateway = gateway.expect("banner names the gateway");
    let reviews_pid = reviews_pid.expect("banner names the reviews pid");

    let (status, page) = http_get(&gateway, "/products/42");
    assert_eq!(status, 200);
    assert_eq!(page["_mosaic"]["complete"], true, "{page}");
    assert_eq!(page["product"]["id"], "42");
    for section in ["product", "price", "reviews", "cart", "orders", "inventory", "recommendations"]
    {
        assert!(!page[section].is_null(), "{section} present");
    }

    let killed = Command::new("kill").args(["-9", &reviews_pid]).status().expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(200));
    let (status, page) = http_get(&gateway, "/products/42");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["_mosaic"]["complete"], false);
    assert!(page["reviews"].is_null());
    assert_eq!(page["_mosaic"]["sections"]["reviews"]["source"], "none");
    assert_eq!(page["_mosaic"]["sections"]["reviews"]["error"], "connect");
    assert_eq!(page["_mosaic"]["sections"]["product"]["source"], "live");
    drop(demo);
}
