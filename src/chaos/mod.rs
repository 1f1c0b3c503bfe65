//! The chaos experiment: the demo shop and the gateway as real processes,
//! steady load from many keep-alive clients, services SIGKILLed, hung, slowed
//! and failed on a seeded schedule, and a report of what the clients saw.
//!
//! - [`lab`]: the processes (demo services + `mosaic run` on a generated
//!   config) and small admin / fault / stats clients.
//! - [`load`]: the load generator and the per-response honesty check.
//! - [`watch`]: polls `/admin/backends` and records breaker transitions.
//! - [`plan`]: the seeded schedule of faults.
//! - [`relay`]: a TCP relay to RabbitMQ the experiment can cut.
//! - [`experiment`]: runs a plan under load and collects everything.
//! - [`report`]: summary, per-second timeline, recovery times, assertions.
//! - [`svg`]: the same timeline as an SVG chart.
//! - [`child`]: lets any binary (the `chaos` example) stand in for `mosaic`.
//!
//! Everything runs on one actix system thread (awc is `!Send`): the load is
//! I/O bound and at a bounded rate, so one thread is enough and leaves the
//! cores to the gateway under test. All traffic goes to 127.0.0.1.

use std::io::Write as _;
use std::net::SocketAddr;

pub mod child;
pub mod experiment;
pub mod lab;
pub mod load;
pub mod plan;
pub mod relay;
pub mod report;
pub mod svg;
pub mod watch;

use crate::demo::Service;
use crate::page;

/// The demo page's sections and the service behind each, in
/// [`Service::ALL`] order (so index `i` is `Service::ALL[i]`).
pub const SECTIONS: [(&str, Service); 7] = [
    ("product", Service::Catalog),
    ("price", Service::Pricing),
    ("reviews", Service::Reviews),
    ("cart", Service::Cart),
    ("orders", Service::Orders),
    ("inventory", Service::Inventory),
    ("recommendations", Service::Recommendations),
];

/// The index of `service`'s section in [`SECTIONS`].
pub fn section_index(service: Service) -> usize {
    SECTIONS.iter().position(|(_, s)| *s == service).unwrap_or(0)
}

/// Where a section came from as the client saw it: the gateway's label
/// ([`page::Source`]), or [`Source::Missing`] when there was none to read.
/// Its own type (rather than an `Option`) so the report can count, order and
/// draw "missing" like any other source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// [`page::Source::Live`].
    Live,
    /// [`page::Source::Cache`].
    Cache,
    /// [`page::Source::Stale`].
    Stale,
    /// [`page::Source::Default`].
    Default,
    /// [`page::Source::None`].
    None,
    /// No page, or no label for this section.
    Missing,
}

impl Source {
    /// Every source, in the order the report lists them.
    pub const ALL: [Source; 6] = [
        Source::Live,
        Source::Cache,
        Source::Stale,
        Source::Default,
        Source::None,
        Source::Missing,
    ];

    /// Parses a `source` label; `None` for anything mosaic does not write
    /// (`missing` included).
    pub fn parse(label: &str) -> Option<Source> {
        let labelled = page::Source::parse(label)?;
        Source::ALL.into_iter().find(|s| s.labelled() == Some(labelled))
    }

    /// One letter for the timeline: `L C S D N`, `?` when missing.
    pub fn glyph(self) -> char {
        match self {
            Source::Live => 'L',
            Source::Cache => 'C',
            Source::Stale => 'S',
            Source::Default => 'D',
            Source::None => 'N',
            Source::Missing => '?',
        }
    }

    /// The label as mosaic writes it, or `missing`.
    pub fn label(self) -> &'static str {
        self.labelled().map_or("missing", page::Source::as_str)
    }

    /// The gateway's source this one stands for.
    fn labelled(self) -> Option<page::Source> {
        Some(match self {
            Source::Live => page::Source::Live,
            Source::Cache => page::Source::Cache,
            Source::Stale => page::Source::Stale,
            Source::Default => page::Source::Default,
            Source::None => page::Source::None,
            Source::Missing => return None,
        })
    }
}

/// The line `mosaic run` prints on stdout once both listeners are bound.
const ANNOUNCE_PREFIX: &str = "mosaic listening on http://";

/// Prints `mosaic listening on http://EDGE admin http://ADMIN` on stdout and
/// flushes, so a parent process learns the real ports (port 0 included).
pub fn announce(edge: SocketAddr, admin: SocketAddr) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only means nobody is listening for the addresses.
    let _ = writeln!(out, "{ANNOUNCE_PREFIX}{edge} admin http://{admin}");
    let _ = out.flush();
}

/// The edge and admin addresses from an [`announce`] line.
pub fn parse_announcement(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix(ANNOUNCE_PREFIX)?;
    let (edge, admin) = rest.split_once(" admin http://")?;
    Some((edge.parse().ok()?, admin.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The announcement round-trips, and other lines are not mistaken for it.
    #[test]
    fn announcement() {
        let line = format!("{ANNOUNCE_PREFIX}127.0.0.1:8080 admin http://127.0.0.1:9901");
        let (edge, admin) = parse_announcement(&line).unwrap_or_else(|| panic!("{line}"));
        assert_eq!((edge.port(), admin.port()), (8080, 9901));
        assert_eq!(parse_announcement("mosaic listening"), None);
    }

    /// Sections line up with the services, and every label parses.
    #[test]
    fn sections_and_sources() {
        for (i, service) in Service::ALL.into_iter().enumerate() {
            assert_eq!(section_index(service), i);
        }
        for source in Source::ALL {
            assert_eq!(Source::parse(source.label()).unwrap_or(Source::Missing), source);
        }
        assert_eq!(Source::parse("missing"), None);
    }
}
