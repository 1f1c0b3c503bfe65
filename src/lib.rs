//! mosaic: an edge API gateway that composes one page from many services
//! and keeps serving, degraded and labelled, when they fail.
//!
//! # Layout
//! - [`config`]: TOML → validated [`config::Config`]; every error with its TOML path.
//! - [`template`]: route matching and safe service-path rendering.
//! - [`edge`]: the actix-web listener: request ids, routing, composed pages (JSON, or
//!   server-sent events for `Accept: text/event-stream`: `edge::stream`), proxy routes.
//! - [`coordinator`]: fans a page out to its sections and collects them under the deadline.
//! - [`page`]: the page envelope (`_mosaic`), section sources and errors, status rules.
//! - [`backend`]: one back-end service: its state (read-only to requests), the
//!   `BackendControl` its supervised actor alone holds, breaker, bulkhead, cache,
//!   shared calls, load balancing, HTTP client, the one call procedure (`call`)
//!   sections and proxy routes both go through.
//! - [`http1`]: HTTP/1.1 message rules shared by the edge and the client: hop-by-hop
//!   headers, strict `Content-Length`, the one response decoder.
//! - [`gateway`]: the running gateway: shared state, the runtime in force, reload,
//!   starting and stopping the listeners, process signals.
//! - [`discovery`]: where backends' instances come from: static lists, or Consul
//!   blocking queries run by each backend's actor.
//! - [`admin`]: the operator listener: metrics, health, admin API, the live
//!   dashboard and its event stream.
//! - [`telemetry`]: logging setup (human or JSON, non-blocking), the access log.
//! - [`counters`]: the gateway's own cumulative counters (latency, statuses, sources), read by `/metrics` and the dashboard.
//! - [`digits`]: numbers written as digits without `fmt` (decimals, hex).
//! - [`clock`]: wall-clock milliseconds for what operators read.
//! - [`chaos`]: the chaos experiment: processes, load, faults on a schedule, report.
//! - [`demo`]: the demo shop's seven services (each its own process) and `mosaic demo`.
//!
//! # The request path
//! edge (match route, request id) → coordinator (one future per section, all
//! at once, each bounded by the route deadline) → backend (cache → breaker →
//! bulkhead → attempt(s) on this worker's connection pool → fallback) → page
//! (section bodies embedded unchanged, `_mosaic` labels, status rules); a
//! streamed page sends each section as an event the moment it is final, then
//! the envelope.
//! Backend actors own each backend's state and publish it through `Arc`, so
//! the request path never hops threads (see `backend/actor.rs`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
pub mod broker;
pub mod chaos;
pub mod clock;
pub mod config;
pub mod coordinator;
pub mod counters;
pub mod demo;
pub mod digits;
pub mod discovery;
pub mod edge;
pub mod gateway;
pub mod http1;
pub mod page;
pub mod shared_cache;
pub mod telemetry;
pub mod template;
