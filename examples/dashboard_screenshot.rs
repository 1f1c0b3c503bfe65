//! Takes a PNG of a running gateway's dashboard in headless Chromium
//! (Debian's `chromium` and `chromium-driver`), e.g. during a chaos run:
//!
//! ```sh
//! cargo run --release --example chaos -- --duration 60s &   # prints the dashboard's URL
//! cargo run --example dashboard_screenshot -- http://127.0.0.1:PORT/dashboard docs/dashboard.png 20
//! ```
//!
//! Arguments: the dashboard's URL, the PNG to write, how many seconds to
//! let the page stream before the picture (default 5) and, optionally,
//! `open`: then the picture waits (as long again at most) until a tile
//! shows an open breaker. With `MOSAIC_ADMIN_TOKEN` set, the page is given
//! that token first.

#[path = "../tests/support/browser.rs"]
mod browser;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(out)) = (args.first(), args.get(1)) else {
        eprintln!("usage: dashboard_screenshot URL OUT.png [SECONDS]");
        return ExitCode::from(2);
    };
    let wait = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5u64);
    let until_open = args.get(3).is_some_and(|s| s == "open");
    let token = std::env::var("MOSAIC_ADMIN_TOKEN").ok().filter(|t| !t.is_empty());
    let out = PathBuf::from(out);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dashboard_screenshot: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let browser = browser::Browser::start().await;
        browser.client.goto(url).await.expect("open the dashboard");
        if let Some(token) = token {
            browser.type_into("#token-input", &token).await;
            browser.click("#token-submit").await;
        }
        browser.client.set_window_size(1400, 1250).await.expect("window size");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        if until_open {
            let script = "return !!document.querySelector('.tile.breaker-open');";
            if browser.until(Duration::from_secs(wait), script).await.is_none() {
                eprintln!("no breaker opened within {wait} s more; taking the picture anyway");
            }
            // One more snapshot, so the figures show the failure too.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        browser.screenshot(&out).await;
        let errors = browser.console_errors().await;
        browser.close().await;
        if !errors.is_empty() {
            eprintln!("JavaScript errors on the page: {errors:#?}");
        }
    });
    eprintln!("wrote {}", out.display());
    ExitCode::SUCCESS
}
