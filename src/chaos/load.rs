//! Steady load: `clients` virtual users, each with its own keep-alive
//! connection (an awc client limited to one connection), asking for
//! `/products/{id}` at a bounded total rate, and checking every answer.
//!
//! Each client paces itself on a fixed schedule (`clients / rate` seconds
//! apart) and never bursts to catch up: a slow answer delays that client's
//! next request instead of piling up, which keeps the machine unsaturated so
//! latencies measure the gateway, not the load generator's backlog.
//!
//! The check ([`inspect`]) is what "honestly labelled" means here: every
//! section has a known `source`; a `null` body is `none` (or a live 4xx);
//! fallbacks carry an `error` and live/cache do not; `complete` and
//! `X-Mosaic-Complete` agree with the labels.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::{Source, SECTIONS};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Concurrent keep-alive connections.
    pub clients: usize,
    /// Total requests per second (all clients together).
    pub rate: f64,
    /// Product ids asked for: `1..=products` (a small set, so pricing's
    /// cache has entries to serve stale).
    pub products: u32,
    /// Client-side bound on one request; past it the request is an error.
    pub timeout: Duration,
    /// Hard stop, whatever happens.
    pub max_duration: Duration,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was sent, since the experiment's epoch.
    pub at: Duration,
    /// Send to last body byte.
    pub latency: Duration,
    /// HTTP status; 0 when no response came (connection error, timeout).
    pub status: u16,
    /// Source of each section, in [`SECTIONS`] order.
    pub sources: [Source; 7],
    /// What was wrong with the answer, if anything (besides its status).
    pub problem: Option<String>,
}

impl Sample {
    /// When the answer was complete, since the epoch.
    pub fn done(&self) -> Duration {
        self.at + self.latency
    }
}

/// A running load; [`LoadHandle::finish`] stops it and returns the samples.
pub struct LoadHandle {
    samples: Rc<RefCell<Vec<Sample>>>,
    stop: Rc<std::cell::Cell<bool>>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl LoadHandle {
    /// A copy of the samples so far.
    pub fn snapshot(&self) -> Vec<Sample> {
        self.samples.borrow().clone()
    }

    /// How many answers so far.
    pub fn count(&self) -> usize {
        self.samples.borrow().len()
    }

    /// Stops the clients (each finishes its request in flight) and returns
    /// every sample, in completion order.
    pub async fn finish(self) -> Vec<Sample> {
        self.stop.set(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.samples.take()
    }
}

/// Starts the load against `addr`; times are measured from `epoch`. Must
/// run inside an actix system (awc).
pub fn start(addr: SocketAddr, spec: &LoadSpec, epoch: Instant) -> LoadHandle {
    let samples = Rc::new(RefCell::new(Vec::new()));
    let stop = Rc::new(std::cell::Cell::new(false));
    let clients = spec.clients.max(1);
    let interval = Duration::from_secs_f64(clients as f64 / spec.rate.max(0.1));
    let hard_stop = Instant::now() + spec.max_duration;
    let tasks = (0..clients)
        .map(|index| {
            let client = awc::Client::builder()
                .connector(awc::Connector::new().limit(1))
                .timeout(spec.timeout)
                .finish();
            let (samples, stop, products) = (samples.clone(), stop.clone(), spec.products.max(1));
            // Spread the clients' first requests over one interval.
            let first = Instant::now() + interval.mul_f64(index as f64 / clients as f64);
            let user = format!("Bearer chaos-user-{index}");
            actix_rt::spawn(async move {
                let mut next = first;
                let mut rng = fastrand::Rng::with_seed(index as u64);
                while !stop.get() && next < hard_stop {
                    tokio::time::sleep_until(next).await;
                    if stop.get() {
                        break;
                    }
                    let path = format!("/products/{}", rng.u32(1..=products));
                    let sample = one_request(&client, addr, &path, &user, epoch).await;
                    samples.borrow_mut().push(sample);
                    next = (next + interval).max(Instant::now());
                }
            })
        })
        .collect();
    LoadHandle { samples, stop, tasks }
}

async fn one_request(
    client: &awc::Client,
    addr: SocketAddr,
    path: &str,
    user: &str,
    epoch: Instant,
) -> Sample {
    let sent = Instant::now();
    let mut sample = Sample {
        at: sent - epoch,
        latency: Duration::ZERO,
        status: 0,
        sources: [Source::Missing; 7],
        problem: None,
    };
    let result = client
        .get(format!("http://{addr}{path}"))
        .insert_header(("authorization", user))
        .send()
        .await;
    match result {
        Err(e) => sample.problem = Some(format!("connection: {e}")),
        Ok(mut res) => {
            sample.status = res.status().as_u16();
            let complete_header = res
                .headers()
                .get("x-mosaic-complete")
                .and_then(|v| v.to_str().ok())
                .map(|v| v == "true");
            match res.body().limit(4 * 1024 * 1024).await {
                Err(e) => sample.problem = Some(format!("connection: body: {e}")),
                Ok(body) => match inspect(&body, complete_header) {
                    Ok(sources) => sample.sources = sources,
                    Err((sources, why)) => {
                        sample.sources = sources;
                        sample.problem = Some(why);
                    }
                },
            }
        }
    }
    sample.latency = sent.elapsed();
    sample
}

/// Checks one page: the sources of its sections, or what is dishonest or
/// malformed about it (with whatever sources could be read).
pub fn inspect(
    body: &[u8],
    complete_header: Option<bool>,
) -> Result<[Source; 7], ([Source; 7], String)> {
    let mut sources = [Source::Missing; 7];
    let page: Value = match serde_json::from_slice(body) {
        Ok(page) => page,
        Err(e) => return Err((sources, format!("invalid JSON: {e}"))),
    };
    let meta = &page["_mosaic"];
    let mut problems = Vec::new();
    let mut all_fine = true;
    for (i, (name, _)) in SECTIONS.iter().enumerate() {
        let label = &meta["sections"][*name];
        let Some(source) = label["source"].as_str().and_then(Source::parse) else {
            problems.push(format!("{name}: no source label"));
            continue;
        };
        sources[i] = source;
        let has_body = page.get(*name).is_some_and(|b| !b.is_null());
        let has_error = label.get("error").is_some();
        let live_4xx = source == Source::Live && label["status"].as_u64().is_some_and(|s| s >= 400);
        if has_body == (source == Source::None) && !live_4xx {
            problems.push(format!("{name}: source {} but body {}", source.label(), page[*name]));
        }
        if has_error != matches!(source, Source::Stale | Source::Default | Source::None) {
            problems.push(format!(
                "{name}: source {} with error {}",
                source.label(),
                label["error"]
            ));
        }
        all_fine &= matches!(source, Source::Live | Source::Cache) && !has_error;
    }
    match meta["complete"].as_bool() {
        Some(complete) if complete != all_fine => {
            problems.push(format!("complete is {complete} but the labels say {all_fine}"))
        }
        None => problems.push("no _mosaic.complete".to_owned()),
        Some(complete) if complete_header.is_some_and(|h| h != complete) => {
            problems.push("X-Mosaic-Complete disagrees with _mosaic.complete".to_owned())
        }
        Some(_) => {}
    }
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err((sources, problems.join("; ")))
    }
}

/// The `q` quantile (0..=1) of `values` (sorted in place), nearest rank.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(price: &str, price_meta: &str, complete: bool) -> Vec<u8> {
        let mut sections = String::new();
        let mut bodies = String::new();
        for (name, _) in SECTIONS {
            if name == "price" {
                bodies.push_str(&format!("\"price\": {price},"));
                sections.push_str(&format!("\"price\": {price_meta},"));
            } else {
                bodies.push_str(&format!("\"{name}\": {{}},"));
                sections.push_str(&format!("\"{name}\": {{\"source\": \"live\"}},"));
            }
        }
        sections.pop();
        format!(
            "{{{bodies} \"_mosaic\": {{\"complete\": {complete}, \"sections\": {{{sections}}}}}}}"
        )
        .into_bytes()
    }

    /// Honest pages pass; a null labelled stale, or a wrong `complete`, does not.
    #[test]
    fn inspect_checks_labels() {
        let stale = page("{}", r#"{"source": "stale", "error": "connect"}"#, false);
        let sources = inspect(&stale, Some(false)).unwrap_or_else(|(_, why)| panic!("{why}"));
        assert_eq!(sources[1], Source::Stale);
        assert!(inspect(&page("null", r#"{"source": "stale", "error": "connect"}"#, false), None)
            .is_err());
        assert!(
            inspect(&page("{}", r#"{"source": "stale", "error": "connect"}"#, true), None).is_err()
        );
        assert!(inspect(&page("{}", r#"{"source": "live"}"#, true), Some(false)).is_err());
        assert!(inspect(b"<html>", None).is_err());
    }

    /// Nearest-rank quantiles.
    #[test]
    fn quantiles() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
