//! Figures from differenced readings: rates, percentiles, the window, the
//! chart, source shares and the complete share. The counters are the real
//! series, moved by the same calls the request path makes.

use super::*;

fn backend(successes: u64, failures: u64, series: &BackendSeries) -> BackendNow<'_> {
    BackendNow {
        name: "pricing".into(),
        breaker: "closed",
        forced: "auto",
        instances: vec!["127.0.0.1:1".into()],
        in_flight: 0,
        cached: true,
        successes,
        failures,
        rejections: 0,
        series,
    }
}

/// Records `n` attempts of `elapsed` into `series`.
fn attempts(series: &BackendSeries, n: u64, elapsed: Duration) {
    for _ in 0..n {
        series.latency.record(elapsed);
    }
}

fn latency(counts: &[(usize, u64)]) -> Buckets {
    // Cumulative: each bound counts everything below it.
    let mut buckets = [0; LATENCY_BUCKETS.len() + 1];
    for &(index, n) in counts {
        for b in &mut buckets[index..] {
            *b += n;
        }
    }
    buckets
}

/// The first snapshot has nothing to difference: rates unknown, state
/// known. A second one a second later has rates from the counters'
/// growth, percentiles from the buckets' growth.
#[test]
fn figures_come_from_differences() {
    let start = Instant::now();
    let mut history = History::default();
    let series = BackendSeries::default();
    attempts(&series, 100, Duration::from_millis(7));
    let first = history.record(start, &[backend(100, 0, &series)], &[]);
    assert_eq!(first.backends[0].requests_per_s, None);
    assert_eq!(first.backends[0].breaker, "closed");

    // 20 more attempts in 2 s: 10 in (5, 10] ms, 10 in (0.25, 0.3] s.
    attempts(&series, 10, Duration::from_millis(7));
    attempts(&series, 10, Duration::from_millis(280));
    for _ in 0..3 {
        series.cache_hits.bump();
    }
    series.cache_misses.bump();
    let at = start + Duration::from_secs(2);
    let second = history.record(at, &[backend(115, 5, &series)], &[]);
    let b = &second.backends[0];
    assert_eq!(b.requests_per_s, Some(10.0));
    assert_eq!(b.error_rate, Some(0.25));
    assert_eq!(b.cache_hit_ratio, Some(0.75));
    let p50 = b.p50_ms.unwrap_or_default();
    assert!((5.0..=10.0).contains(&p50), "{p50}");
    let p99 = b.p99_ms.unwrap_or_default();
    assert!((250.0..=300.0).contains(&p99), "{p99}");
    assert_eq!(b.last_minute.requests_per_s, vec![10.0]);
    assert_eq!(b.last_minute.errors_per_s, vec![2.5]);
}

/// Only the last 10 s count, and the chart keeps a minute.
#[test]
fn window_and_chart_lengths() {
    let start = Instant::now();
    let mut history = History::default();
    let series = BackendSeries::default();
    let mut last = None;
    for second in 0..100u64 {
        let at = start + Duration::from_secs(second);
        // 1 attempt/s for 90 s, then 50/s.
        let total = if second < 90 { second } else { 90 + (second - 90) * 50 };
        last = Some(history.record(at, &[backend(total, 0, &series)], &[]));
    }
    let snapshot = last.unwrap_or_else(|| panic!("recorded"));
    assert_eq!(snapshot.window_s, 10.0);
    assert_eq!(snapshot.backends[0].requests_per_s, Some(45.1));
    assert_eq!(snapshot.backends[0].last_minute.requests_per_s.len(), KEPT_READINGS - 1);
    assert_eq!(snapshot.backends[0].p50_ms, None, "nothing in the histogram, no latency");
}

/// Sources per section become shares; the complete share is complete
/// pages over responses (of any status).
#[test]
fn route_mix_and_complete_share() {
    let start = Instant::now();
    let responses = ResponseSeries::default();
    let (a, b) = (SourceCounts::default(), SourceCounts::default());
    let shape = RouteShape {
        route: "/p/{id}",
        responses: &responses,
        sections: vec![
            SectionShape { name: "a", backend: "x", sources: &a },
            SectionShape { name: "b", backend: "y", sources: &b },
        ],
    };
    let mut history = History::default();
    history.record(start, &[], std::slice::from_ref(&shape));
    for status in [200, 200, 200, 200, 200, 200, 200, 200, 404, 502] {
        responses.statuses.record(status);
    }
    for _ in 0..4 {
        responses.complete_page();
    }
    let record = |counts: &SourceCounts, mix: [u64; 5]| {
        for (source, n) in Source::ALL.into_iter().zip(mix) {
            (0..n).for_each(|_| counts.record(source));
        }
    };
    record(&a, [9, 0, 1, 0, 0]);
    record(&b, [5, 3, 0, 0, 2]);
    let at = start + Duration::from_secs(1);
    let snapshot = history.record(at, &[], &[shape]);
    let route = &snapshot.routes[0];
    assert_eq!(route.pages_per_s, Some(10.0));
    assert_eq!(route.complete_share, Some(0.4));
    let b = route.sections[1].sources.unwrap_or_else(|| panic!("shares"));
    assert_eq!((b.live, b.cache, b.none), (0.5, 0.3, 0.2));
    assert_eq!(route.sections[0].backend, "x");
}

/// Interpolation inside a bucket, and the +Inf bucket's answer.
#[test]
fn quantiles() {
    assert_eq!(quantile(&latency(&[]), 0.5), None);
    let all_in_first = latency(&[(0, 10)]);
    assert_eq!(quantile(&all_in_first, 0.5), Some(0.0005));
    let all_slow = latency(&[(LATENCY_BUCKETS.len(), 10)]);
    assert_eq!(quantile(&all_slow, 0.99), LATENCY_BUCKETS.last().copied());
}
