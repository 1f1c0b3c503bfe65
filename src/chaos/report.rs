//! What a run means: totals, latency percentiles, the share of each source
//! per section, breaker transitions, recovery after each restart, a
//! per-second timeline, and the experiment's own assertions.
//!
//! Latency is client-side wall time (send to last body byte), measured by
//! the load generator on the same machine: honest, including scheduling
//! noise, which is why the budget is the deadline plus 50 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::experiment::{Event, Outcome};
use super::lab::DEADLINE;
use super::load::{quantile, Sample};
use super::watch::Watched;
use super::{section_index, Source, SECTIONS};

/// p99 must stay within the route deadline plus this much.
pub const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// Below this share the dominant source is written in lowercase.
const MIXED_BELOW: f64 = 0.9;

/// One second of the run (by request send time).
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// Answers sent in this second.
    pub count: usize,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Answers that were not a valid, honest 200.
    pub bad: usize,
    /// Per section, answers per source ([`Source::ALL`] order).
    pub sources: [[u32; 6]; 7],
}

impl Second {
    /// The section's most common source and its share.
    pub fn dominant(&self, section: usize) -> Option<(Source, f64)> {
        let counts = &self.sources[section];
        let total: u32 = counts.iter().sum();
        let (i, most) = counts.iter().enumerate().max_by_key(|(_, n)| **n)?;
        (total > 0).then(|| (Source::ALL[i], f64::from(*most) / f64::from(total)))
    }
}

/// Time from a restart or heal to the section's first `live` answer.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The restart or heal.
    pub event: Event,
    /// `None`: never live again during the run.
    pub after: Option<Duration>,
}

/// The analysed run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Per-second buckets.
    pub seconds: Vec<Second>,
    /// One per restart / heal.
    pub recoveries: Vec<Recovery>,
    /// Overall p50, p90, p99, max.
    pub latency: [Duration; 4],
    /// Failed assertions (empty: the run passed).
    pub failures: Vec<String>,
    /// The report as text.
    pub text: String,
}

impl Report {
    /// True when every assertion held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Buckets samples into seconds.
pub fn seconds(samples: &[Sample], length: Duration) -> Vec<Second> {
    let n = length.as_secs_f64().ceil().max(1.0) as usize;
    let mut latencies: Vec<Vec<Duration>> = vec![Vec::new(); n];
    let mut out = vec![Second::default(); n];
    for s in samples {
        let i = (s.at.as_secs() as usize).min(n - 1);
        latencies[i].push(s.latency);
        out[i].count += 1;
        out[i].bad += usize::from(s.status != 200 || s.problem.is_some());
        for (section, source) in s.sources.iter().enumerate() {
            let k = Source::ALL.iter().position(|x| x == source).unwrap_or(5);
            out[i].sources[section][k] += 1;
        }
    }
    for (second, mut lat) in out.iter_mut().zip(latencies) {
        second.p50 = quantile(&mut lat, 0.5);
        second.p99 = quantile(&mut lat, 0.99);
    }
    out
}

/// First live answer for each restart / heal, from samples sent after it.
pub fn recoveries(samples: &[Sample], events: &[Event]) -> Vec<Recovery> {
    events
        .iter()
        .filter(|e| e.heals)
        .map(|event| {
            let i = section_index(event.service);
            let after = samples
                .iter()
                .filter(|s| s.at >= event.at && s.sources[i] == Source::Live)
                .map(|s| s.done().saturating_sub(event.at))
                .min();
            Recovery { event: event.clone(), after }
        })
        .collect()
}

/// Milliseconds, with a decimal below 10 ms (most healthy pages are sub-millisecond).
fn ms(d: Duration) -> String {
    let millis = d.as_secs_f64() * 1000.0;
    if millis < 10.0 {
        format!("{millis:.1}ms")
    } else {
        format!("{millis:.0}ms")
    }
}

/// Analyses a run and writes its text report.
pub fn analyse(outcome: &Outcome) -> Report {
    let samples = &outcome.samples;
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let latency = [0.5, 0.9, 0.99, 1.0].map(|q| quantile(&mut lat, q));
    let seconds = seconds(samples, outcome.options.duration);
    let recoveries = recoveries(samples, &outcome.events);
    let totals = Totals::of(samples);
    let mut t = String::new();
    header(&mut t, outcome);
    requests(&mut t, outcome, &totals, &latency);
    source_shares(&mut t, &seconds);
    breakers(&mut t, &outcome.watched);
    recovery_lines(&mut t, &recoveries);
    timeline(&mut t, &seconds, outcome);
    let failures = assertions(&mut t, checks(outcome, &totals, &latency, &recoveries));
    Report { seconds, recoveries, latency, failures, text: t }
}

/// How the answers went, counted once for the totals and the assertions.
struct Totals<'a> {
    /// Answers per status, 0 for no answer.
    statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection error or client timeout).
    conn: usize,
    /// Answers with a status other than 200.
    non_200: usize,
    /// Answers that were invalid or mislabelled, in send order.
    dishonest: Vec<&'a Sample>,
}

impl<'a> Totals<'a> {
    fn of(samples: &'a [Sample]) -> Self {
        let mut statuses = BTreeMap::<u16, usize>::new();
        for s in samples {
            *statuses.entry(s.status).or_default() += 1;
        }
        Totals {
            statuses,
            conn: samples.iter().filter(|s| s.status == 0).count(),
            non_200: samples.iter().filter(|s| s.status != 200 && s.status != 0).count(),
            dishonest: samples.iter().filter(|s| s.status != 0 && s.problem.is_some()).collect(),
        }
    }
}

/// What ran, how to run it again, and the plan it played.
fn header(t: &mut String, outcome: &Outcome) {
    let o = &outcome.options;
    let _ = writeln!(
        t,
        "mosaic chaos experiment: seed {}, {}s, {} keep-alive clients at {} req/s, {} gateway workers",
        o.seed,
        o.duration.as_secs(),
        o.clients,
        o.rate,
        o.workers
    );
    let _ = writeln!(
        t,
        "re-run: cargo run --release --example chaos -- --duration {}s --seed {}\n",
        o.duration.as_secs(),
        o.seed
    );
    let _ = writeln!(t, "Plan ({} rounds):", outcome.plan.len());
    for round in &outcome.plan {
        let _ = writeln!(t, "  {round}");
    }
}

/// Request totals by status, and the overall latency against the budget.
fn requests(t: &mut String, outcome: &Outcome, totals: &Totals, latency: &[Duration; 4]) {
    let samples = &outcome.samples;
    let status_text: Vec<String> = totals
        .statuses
        .iter()
        .map(
            |(code, n)| if *code == 0 { format!("no answer x{n}") } else { format!("{code} x{n}") },
        )
        .collect();
    let _ = writeln!(
        t,
        "\nRequests: {} ({:.1}/s)  status: {}  connection errors: {}  invalid or mislabelled: {}",
        samples.len(),
        samples.len() as f64 / outcome.options.duration.as_secs_f64().max(1.0),
        status_text.join(", "),
        totals.conn,
        totals.dishonest.len()
    );
    let _ = writeln!(
        t,
        "Latency (client wall time): p50 {}  p90 {}  p99 {}  max {}  (budget: deadline {} + {} = {})",
        ms(latency[0]),
        ms(latency[1]),
        ms(latency[2]),
        ms(latency[3]),
        ms(DEADLINE),
        ms(LATENCY_SLACK),
        ms(DEADLINE + LATENCY_SLACK)
    );
}

/// Each section's share of every source over the whole run.
fn source_shares(t: &mut String, seconds: &[Second]) {
    let _ = writeln!(t, "\nSources per section (share of all answers):");
    for (i, (name, _)) in SECTIONS.iter().enumerate() {
        let mut counts = [0u32; 6];
        for second in seconds {
            for (k, n) in second.sources[i].iter().enumerate() {
                counts[k] += n;
            }
        }
        let total = f64::from(counts.iter().sum::<u32>().max(1));
        let shares: Vec<String> = Source::ALL
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{} {:.1}%", s.label(), 100.0 * f64::from(n) / total))
            .collect();
        let _ = writeln!(t, "  {name:<16} {}", shares.join("  "));
    }
}

/// Every breaker transition the watch saw, and the backend actors' restarts.
fn breakers(t: &mut String, w: &Watched) {
    let _ = writeln!(
        t,
        "\nBreaker transitions (polled every 200 ms; {} polls, {} failed):",
        w.polls, w.failed_polls
    );
    for tr in &w.transitions {
        let _ = writeln!(
            t,
            "  {:>5.1}s  {:<16} {} -> {}",
            tr.at.as_secs_f64(),
            tr.backend,
            tr.from,
            tr.to
        );
    }
    let restarts: Vec<String> =
        w.actor_restarts.iter().filter(|(_, n)| **n > 0).map(|(b, n)| format!("{b} {n}")).collect();
    let _ = writeln!(
        t,
        "Backend actor restarts (crash hook): {}",
        if restarts.is_empty() { "none".into() } else { restarts.join(", ") }
    );
}

/// How long each restarted or healed section took to answer live again.
fn recovery_lines(t: &mut String, recoveries: &[Recovery]) {
    let _ = writeln!(t, "\nRecovery (restart or heal -> first live answer for that section):");
    for r in recoveries {
        let after =
            r.after.map_or_else(|| "NEVER".to_owned(), |d| format!("{:.2}s", d.as_secs_f64()));
        let _ = writeln!(
            t,
            "  {:>5.1}s  {:<8} {:<16} live after {after}",
            r.event.at.as_secs_f64(),
            r.event.what,
            r.event.service.name()
        );
    }
}

/// The experiment's assertions, each held or not with what it says.
fn checks(
    outcome: &Outcome,
    totals: &Totals,
    latency: &[Duration; 4],
    recoveries: &[Recovery],
) -> Vec<(bool, String)> {
    let o = &outcome.options;
    let w = &outcome.watched;
    let budget = DEADLINE + LATENCY_SLACK;
    let (conn, non_200, dishonest) = (totals.conn, totals.non_200, &totals.dishonest);
    let mut checks: Vec<(bool, String)> = vec![
        (non_200 == 0, format!("every answer is 200 ({non_200} were not)")),
        (conn == 0, format!("no connection errors or client timeouts ({conn})")),
        (
            dishonest.is_empty(),
            format!("every page is valid JSON, honestly labelled ({} were not)", dishonest.len()),
        ),
        (latency[2] <= budget, format!("p99 {} <= {}", ms(latency[2]), ms(budget))),
        (
            recoveries.iter().all(|r| r.after.is_some()),
            "every restarted or healed section is live again".to_owned(),
        ),
        (
            w.last_state.values().all(|s| s == "closed") && w.polls > 0,
            "every breaker closed at the end".to_owned(),
        ),
        (
            outcome.control_errors.is_empty(),
            format!("every kill, restart and fault call worked {:?}", outcome.control_errors),
        ),
        (
            outcome.samples.len() as f64 >= 0.5 * o.rate * o.duration.as_secs_f64(),
            "the load reached at least half its target rate".to_owned(),
        ),
    ];
    if let Some(first) = dishonest.first() {
        checks.push((
            false,
            format!(
                "first bad page at {:.2}s: {}",
                first.at.as_secs_f64(),
                first.problem.as_deref().unwrap_or("")
            ),
        ));
    }
    checks
}

/// Writes each check as PASS or FAIL and the result; returns the failures.
fn assertions(t: &mut String, checks: Vec<(bool, String)>) -> Vec<String> {
    let _ = writeln!(t, "\nAssertions:");
    let mut failures = Vec::new();
    for (ok, what) in checks {
        let _ = writeln!(t, "  {} {what}", if ok { "PASS" } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    }
    let _ = writeln!(t, "\nRESULT: {}", if failures.is_empty() { "PASS" } else { "FAIL" });
    failures
}

/// One line per second: answers, p50, p99, a glyph per section, events.
fn timeline(t: &mut String, seconds: &[Second], outcome: &Outcome) {
    let _ = writeln!(
        t,
        "\nTimeline, one line per second: requests sent, p50, p99, then per section\n\
         (1 product, 2 price, 3 reviews, 4 cart, 5 orders, 6 inventory, 7 recommendations)\n\
         its most common source: L live, C cache, S stale, D default, N none; lowercase when\n\
         under 90% of that second's answers. `!N`: N bad answers. [backend state]: breaker."
    );
    let _ = writeln!(t, "    t  req    p50    p99  1 2 3 4 5 6 7  events");
    for (i, s) in seconds.iter().enumerate() {
        let glyphs: Vec<String> = (0..SECTIONS.len())
            .map(|k| match s.dominant(k) {
                Some((src, share)) if share < MIXED_BELOW => {
                    src.glyph().to_ascii_lowercase().to_string()
                }
                Some((src, _)) => src.glyph().to_string(),
                None => ".".to_owned(),
            })
            .collect();
        let mut notes: Vec<String> = outcome
            .events
            .iter()
            .filter(|e| e.at.as_secs() as usize == i)
            .map(|e| format!("{} {}", e.what, e.service.name()))
            .collect();
        notes.extend(
            outcome
                .watched
                .transitions
                .iter()
                .filter(|tr| tr.at.as_secs() as usize == i)
                .map(|tr| format!("[{} {}]", tr.backend, tr.to)),
        );
        if s.bad > 0 {
            notes.insert(0, format!("!{}", s.bad));
        }
        let line = format!(
            "  {i:>3}s {:>4} {:>6} {:>6}  {}  {}",
            s.count,
            ms(s.p50),
            ms(s.p99),
            glyphs.join(" "),
            notes.join(", ")
        );
        let _ = writeln!(t, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::Service;

    fn sample(at_ms: u64, latency_ms: u64, reviews: Source) -> Sample {
        let mut sources = [Source::Live; 7];
        sources[section_index(Service::Reviews)] = reviews;
        Sample {
            at: Duration::from_millis(at_ms),
            latency: Duration::from_millis(latency_ms),
            status: 200,
            sources,
            problem: None,
        }
    }

    /// Recovery is measured to the end of the first live answer sent after
    /// the restart; a section never live again has none.
    #[test]
    fn recovery_after_restart() {
        let samples = [
            sample(900, 5, Source::None),
            sample(1_100, 5, Source::None),
            sample(1_400, 10, Source::Live),
            sample(1_600, 1, Source::Live),
        ];
        let restart = |at_ms| Event {
            at: Duration::from_millis(at_ms),
            service: Service::Reviews,
            what: "restart",
            heals: true,
        };
        let r = recoveries(&samples, &[restart(1_000), restart(2_000)]);
        assert_eq!(r[0].after, Some(Duration::from_millis(410)));
        assert_eq!(r[1].after, None);
    }

    /// Seconds bucket by send time; the dominant source and its share.
    #[test]
    fn per_second_buckets() {
        let samples = [
            sample(100, 2, Source::Live),
            sample(200, 4, Source::None),
            sample(300, 6, Source::None),
            sample(1_500, 1, Source::Live),
        ];
        let s = seconds(&samples, Duration::from_secs(2));
        assert_eq!((s[0].count, s[1].count), (3, 1));
        let reviews = section_index(Service::Reviews);
        let (source, share) = s[0].dominant(reviews).unwrap_or((Source::Missing, 0.0));
        assert_eq!(source, Source::None);
        assert!((share - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s[0].p99, Duration::from_millis(6));
    }
}
