//! `mosaic run` as a real child process, and a plain blocking HTTP/1.1
//! client for it (one request per connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `mosaic run` child: killed on drop, stderr lines collected.
pub struct MosaicProcess {
    pub child: Child,
    pub addr: String,
    pub admin: String,
    stderr: mpsc::Receiver<String>,
}

impl MosaicProcess {
    pub fn start(config: &std::path::Path, extra_args: &[&str]) -> MosaicProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mosaic"))
            .args(extra_args)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mosaic run");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || lines.for_each(drop));
        // "mosaic listening on http://A (admin http://B)"
        let mut urls = first
            .split("http://")
            .skip(1)
            .map(|s| s.trim_end_matches([')', ' ']).split(' ').next().unwrap_or("").to_string());
        let addr = urls.next().unwrap_or_else(|| panic!("no address in {first:?}"));
        let admin = urls.next().unwrap_or_else(|| panic!("no admin address in {first:?}"));
        MosaicProcess { child, addr, admin, stderr: rx }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -s {name}");
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stderr_lines(&self, within: Duration, stop: impl Fn(&str) -> bool) -> Vec<String> {
        let until = Instant::now() + within;
        let mut out = Vec::new();
        while let Ok(line) =
            self.stderr.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            let done = stop(&line);
            out.push(line);
            if done {
                break;
            }
        }
        out
    }
}

impl Drop for MosaicProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a new connection (`Connection: close`): status and body.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    let _ = stream.read_to_string(&mut raw);
    let status = raw.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Writes `body` as `mosaic.toml` in `dir`.
pub fn write_config(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("mosaic.toml");
    std::fs::write(&path, body).expect("write config");
    path
}
