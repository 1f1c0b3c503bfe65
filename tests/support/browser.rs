//! A real headless Chromium for the dashboard tests: Debian's `chromedriver`
//! started on a free loopback port, driven with fantoccini; the browser's
//! console is read back through chromedriver's log so any JavaScript error
//! can fail a test. Nothing is downloaded: both binaries come from the
//! `chromium` and `chromium-driver` packages (`.ci/run` installs them).

#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Debian's paths.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's paths.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Longest wait for chromedriver to listen.
const DRIVER_START: Duration = Duration::from_secs(15);

/// A browser session; chromedriver and its browser are killed on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
}

/// `POST /session/{id}/se/log {"type":"browser"}`: the console entries
/// since the last call (chromedriver keeps them with `goog:loggingPrefs`).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("free port");
    listener.local_addr().expect("port").port()
}

impl Browser {
    /// Starts chromedriver and a headless browser session.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so drop can end the browser with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("start {CHROMEDRIVER} (apt-get install chromium-driver): {e}")
            });
        let until = Instant::now() + DRIVER_START;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < until, "chromedriver did not listen within {DRIVER_START:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000"],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else { unreachable!() };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("browser session");
        Browser { client, driver }
    }

    /// Console entries that are JavaScript errors: uncaught exceptions,
    /// unhandled rejections and `console.error`. A failed request is logged
    /// by the browser too (source `network`): that is the page meeting a
    /// 401 or a dead server, which the tests cause on purpose.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.client.issue_cmd(BrowserLog).await.expect("browser log");
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Fails the test on any JavaScript error logged so far.
    pub async fn assert_no_console_errors(&self) {
        let errors = self.console_errors().await;
        assert!(errors.is_empty(), "JavaScript errors on the page: {errors:#?}");
    }

    /// Runs `script` (a function body returning a value) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.expect("script runs")
    }

    /// Polls `script` until it returns `true`, for at most `within`;
    /// returns how long it took, or `None`.
    pub async fn until(&self, within: Duration, script: &str) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.eval(script).await == Value::Bool(true) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect("element to click");
        element.click().await.expect("click");
    }

    /// Types into the element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.expect("element to type into");
        element.send_keys(text).await.expect("type");
    }

    /// Saves a PNG of the window.
    pub async fn screenshot(&self, path: &std::path::Path) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Ends the session (the browser quits) and chromedriver.
    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        self.kill_driver();
    }

    fn kill_driver(&mut self) {
        // The whole group: chromedriver and the browser it started.
        let pgid = self.driver.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            self.kill_driver();
        }
    }
}
