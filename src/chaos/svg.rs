//! The run as an SVG chart, written by hand (it is text): latency per
//! second on top (p50, p99, the deadline and the budget), one strip per
//! section below showing the share of each source per second, and a marker
//! for every kill, restart, fault and heal across both.

use std::fmt::Write as _;
use std::time::Duration;

use super::experiment::{Event, Outcome};
use super::lab::DEADLINE;
use super::report::{Report, Second, LATENCY_SLACK};
use super::{Source, SECTIONS};

const WIDTH: f64 = 960.0;
const LEFT: f64 = 120.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const LATENCY_HEIGHT: f64 = 170.0;
const GAP: f64 = 34.0;
const ROW: f64 = 20.0;
/// Width of both panels.
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
/// Top of the first section's strip.
const STRIPS_TOP: f64 = TOP + LATENCY_HEIGHT + GAP;
/// Bottom of the last section's strip.
const STRIPS_BOTTOM: f64 = STRIPS_TOP + ROW * SECTIONS.len() as f64;

/// Fill colour of each source ([`Source::ALL`] order).
const COLOURS: [&str; 6] = ["#2e7d32", "#81c784", "#f9a825", "#4fc3f7", "#e53935", "#424242"];

/// Where a moment of the run and a latency land on the chart.
struct Scale {
    /// Seconds across the plot (at least one).
    seconds: f64,
    /// The latency at the top of the latency panel, in milliseconds.
    top_ms: f64,
}

impl Scale {
    /// Room for the slowest second's p99, and for the budget line with a
    /// margin above it.
    fn new(seconds: &[Second], budget: Duration) -> Self {
        let top_ms = seconds
            .iter()
            .map(|s| s.p99)
            .max()
            .unwrap_or(Duration::ZERO)
            .max(budget + Duration::from_millis(50))
            .as_millis() as f64;
        Self { seconds: seconds.len().max(1) as f64, top_ms }
    }

    /// The x of `t` seconds into the run.
    fn x(&self, t: f64) -> f64 {
        LEFT + PLOT_W * (t / self.seconds)
    }

    /// The y of latency `d` in the latency panel.
    fn y(&self, d: Duration) -> f64 {
        TOP + LATENCY_HEIGHT * (1.0 - d.as_millis() as f64 / self.top_ms)
    }
}

/// The chart for a run.
pub fn render(outcome: &Outcome, report: &Report) -> String {
    let budget = DEADLINE + LATENCY_SLACK;
    let scale = Scale::new(&report.seconds, budget);
    let mut s = String::new();
    title(&mut s, outcome, report);
    latency_panel(&mut s, &scale, &report.seconds, budget);
    // Source strips, consecutive identical single-source seconds merged.
    for (row, (name, _)) in SECTIONS.iter().enumerate() {
        strip(&mut s, &scale, &report.seconds, row, name);
    }
    markers(&mut s, &scale, &outcome.events);
    axis_and_legend(&mut s, &scale);
    s.push_str("</svg>\n");
    s
}

/// The `<svg>` element, its white background and the run's one-line summary.
fn title(s: &mut String, outcome: &Outcome, report: &Report) {
    let height = STRIPS_BOTTOM + 66.0;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let o = &outcome.options;
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="16" font-size="13">mosaic chaos: seed {} · {}s · {} clients · {} req/s · p99 {}ms</text>"#,
        o.seed,
        o.duration.as_secs(),
        o.clients,
        o.rate,
        report.latency[2].as_millis()
    );
}

/// The latency panel: its frame, the deadline and budget lines, and the
/// p50 and p99 of every second that had answers.
fn latency_panel(s: &mut String, scale: &Scale, seconds: &[Second], budget: Duration) {
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{PLOT_W}" height="{LATENCY_HEIGHT}" fill="none" stroke="#bbb"/>"##
    );
    for (label, d, colour) in [("deadline", DEADLINE, "#999"), ("budget", budget, "#e53935")] {
        let yy = scale.y(d);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" text-anchor="end" fill="{colour}">{label} {}ms</text>"#,
            LEFT + PLOT_W,
            LEFT - 4.0,
            yy + 4.0,
            d.as_millis()
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end">0ms</text>"#,
        LEFT - 4.0,
        TOP + LATENCY_HEIGHT
    );
    for (name, colour, pick) in [("p50", "#1e88e5", 0usize), ("p99", "#0d47a1", 1)] {
        let points: Vec<String> = seconds
            .iter()
            .enumerate()
            .filter(|(_, sec)| sec.count > 0)
            .map(|(i, sec)| {
                let d = if pick == 0 { sec.p50 } else { sec.p99 };
                format!("{:.1},{:.1}", scale.x(i as f64 + 0.5), scale.y(d))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        // Labelled above the panel's right end, clear of the lines.
        let lx = WIDTH - RIGHT - 70.0 + if pick == 0 { 0.0 } else { 35.0 };
        let _ = writeln!(s, r#"<text x="{lx}" y="{}" fill="{colour}">{name}</text>"#, TOP - 4.0);
    }
}

/// Seconds `start..end` in which one source served every answer.
#[derive(Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    /// Index in [`Source::ALL`].
    source: usize,
}

/// Section `row`'s strip: a second served by one source extends that
/// source's run (drawn as one bar once it ends), a mixed second is a stack
/// of its sources' shares.
fn strip(s: &mut String, scale: &Scale, seconds: &[Second], row: usize, name: &str) {
    let top = STRIPS_TOP + ROW * row as f64;
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{:.1}" text-anchor="end">{name}</text>"#,
        LEFT - 4.0,
        top + ROW - 6.0
    );
    let mut run: Option<Run> = None;
    for (i, sec) in seconds.iter().enumerate() {
        let counts = &sec.sources[row];
        let total: u32 = counts.iter().sum();
        let single = counts.iter().position(|c| *c == total && total > 0);
        if let (Some(k), Some(r)) = (single, run.as_mut()) {
            if r.source == k && r.end == i {
                r.end = i + 1;
                continue;
            }
        }
        if let Some(finished) = run.take() {
            run_bar(s, scale, top, finished);
        }
        if let Some(k) = single {
            run = Some(Run { start: i, end: i + 1, source: k });
            continue;
        }
        let mut yy = top;
        for (k, c) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let h = (ROW - 2.0) * f64::from(*c) / f64::from(total);
            let x = scale.x(i as f64);
            rect(s, x, yy, scale.x(i as f64 + 1.0) - x, h, COLOURS[k]);
            yy += h;
        }
    }
    if let Some(finished) = run {
        run_bar(s, scale, top, finished);
    }
}

/// One bar, the strip's full height, across a finished run.
fn run_bar(s: &mut String, scale: &Scale, top: f64, run: Run) {
    let x = scale.x(run.start as f64);
    rect(s, x, top, scale.x(run.end as f64) - x, ROW - 2.0, COLOURS[run.source]);
}

/// A line across both panels for every (grouped) event, coloured by kind,
/// dashed when it heals, with its label written upwards beside it.
fn markers(s: &mut String, scale: &Scale, events: &[Event]) {
    for (e, names) in grouped(events) {
        let xx = scale.x(e.at.as_secs_f64());
        let colour = match e.what {
            "kill" => "#c62828",
            "crash" => "#6a1b9a",
            _ if e.heals => "#2e7d32",
            _ => "#ef6c00",
        };
        let dash = if e.heals { r#" stroke-dasharray="3 2""# } else { "" };
        let _ = writeln!(
            s,
            r#"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{STRIPS_BOTTOM:.1}" stroke="{colour}"{dash}/><text transform="translate({:.1},{:.1}) rotate(-90)" fill="{colour}" font-size="9" text-anchor="end">{} {}</text>"#,
            xx - 2.0,
            TOP + 2.0 + 4.0,
            e.what,
            names
        );
    }
}

/// Seconds along the bottom, then the source colours and the marker key.
fn axis_and_legend(s: &mut String, scale: &Scale) {
    let ay = STRIPS_BOTTOM + 14.0;
    let step = if scale.seconds > 30.0 { 10 } else { 5 };
    for t in (0..=scale.seconds as usize).step_by(step) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{ay}" text-anchor="middle">{t}s</text>"#,
            scale.x(t as f64)
        );
    }
    let mut lx = LEFT;
    for (source, colour) in Source::ALL.iter().zip(COLOURS) {
        rect(s, lx, ay + 12.0, 10.0, 10.0, colour);
        let _ =
            writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 14.0, ay + 21.0, source.label());
        lx += 90.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">markers: red kill, orange fault, purple actor crash (solid); green restart or heal (dashed)</text>"#,
        ay + 38.0
    );
}

/// Events of the same kind within 300 ms share one marker, labelled with
/// every service (`kill cart+pricing`), so labels do not overprint.
fn grouped(events: &[Event]) -> Vec<(&Event, String)> {
    let mut out: Vec<(&Event, String)> = Vec::new();
    for e in events {
        match out.last_mut() {
            Some((first, names))
                if first.what == e.what
                    && e.at.saturating_sub(first.at) < Duration::from_millis(300) =>
            {
                names.push('+');
                names.push_str(e.service.name());
            }
            _ => out.push((e, e.service.name().to_owned())),
        }
    }
    out
}

fn rect(s: &mut String, x: f64, y: f64, w: f64, h: f64, fill: &str) {
    let _ = writeln!(
        s,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="{fill}"/>"#
    );
}
