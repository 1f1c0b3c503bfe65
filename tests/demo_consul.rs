//! `mosaic demo --consul URL` end to end: the real binary registers the
//! seven demo services with the agent (the Consul API double, which runs
//! their HTTP checks), the gateway discovers them through it and serves a
//! complete page, and on SIGTERM the registrations are removed.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::consul::ConsulDouble;

struct Demo(Child);

impl Demo {
    /// SIGTERM, then SIGKILL if it lingers; true if it exited on SIGTERM.
    fn stop(&mut self) -> bool {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        false
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
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
fn demo_registers_with_consul_and_discovers_the_services() {
    let consul = ConsulDouble::start();
    let child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--base-port", "0"])
        .args(["--consul", &consul.url()])
        .env_remove("CONSUL_HTTP_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosaic demo");
    let mut demo = Demo(child);
    let stdout = demo.0.stdout.take().expect("stdout");
    let mut gateway = None;
    let mut admin = None;
    let mut reviews_pid = None;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        if let Some(rest) = line.trim().strip_prefix("curl -s http://") {
            if gateway.is_none() && rest.contains("/products/42") {
                gateway = rest.split('/').next().map(str::to_string);
            }
            if rest.contains("/admin/backends") {
                admin = rest.split('/').next().map(str::to_string);
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
    let admin = admin.expect("banner names the admin listener");
    let reviews_pid = reviews_pid.expect("banner names the reviews pid");

    let registrations = consul.registrations();
    assert_eq!(registrations.len(), 7, "{registrations:?}");
    let mut names: Vec<&str> = registrations.iter().filter_map(|r| r["Name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["cart", "catalog", "inventory", "orders", "pricing", "recommendations", "reviews"]
    );
    for r in &registrations {
        let port = r["Port"].as_u64().expect("port");
        assert_eq!(r["Check"]["HTTP"], format!("http://127.0.0.1:{port}/health"), "{r}");
        assert!(r["Check"]["Interval"].is_string(), "{r}");
    }

    let (status, page) = http_get(&gateway, "/products/42");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["_mosaic"]["complete"], true, "{page}");
    assert_eq!(page["product"]["id"], "42");
    let (status, backends) = http_get(&admin, "/admin/backends");
    assert_eq!(status, 200);
    for backend in backends["backends"].as_array().expect("list") {
        assert_eq!(backend["discovery"]["kind"], "consul", "{backend}");
        assert_eq!(backend["discovery"]["state"], "ok", "{backend}");
    }
    // The double really ran the agent's HTTP checks against /health.
    let until = Instant::now() + Duration::from_secs(5);
    let ids = consul.instance_ids();
    while ids.iter().any(|id| consul.status_of(id).as_deref() != Some("passing")) {
        assert!(Instant::now() < until, "checks pass");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A killed service fails its check; the gateway stops calling it.
    let killed = Command::new("kill").args(["-9", &reviews_pid]).status().expect("kill");
    assert!(killed.success());
    let reviews_id = ids.iter().find(|id| id.contains("-reviews-")).expect("reviews id").clone();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, page) = http_get(&gateway, "/products/42");
        assert_eq!(status, 200, "{page}");
        if page["_mosaic"]["sections"]["reviews"]["error"] == "no_instances" {
            break;
        }
        assert!(Instant::now() < until, "reviews dropped after its check failed: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(consul.status_of(&reviews_id).as_deref(), Some("critical"));

    assert!(demo.stop(), "the demo exits on SIGTERM");
    assert_eq!(consul.instance_ids(), Vec::<String>::new(), "deregistered on exit");
}
