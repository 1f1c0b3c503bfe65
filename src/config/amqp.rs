//! `[amqp]` (the broker) and a backend's `amqp = { ... }` table (where its
//! calls are published), validated into [`AmqpConfig`] and [`AmqpTarget`].
//! SPEC.md, "Messaging backends (AMQP 0-9-1, RabbitMQ)".

use std::collections::BTreeMap;
use std::sync::Arc;

use lapin::uri::AMQPUri;

use super::fields::{duration_or, required};
use super::model::{
    AmqpConfig, AmqpTarget, BackendConfig, RouteConfig, DEFAULT_AMQP_CONNECT_TIMEOUT,
};
use super::raw::{RawAmqp, RawAmqpTarget};
use super::sink::{index_path, key_path, Sink};

/// Longest AMQP short string (exchange names, routing keys): 255 bytes.
const MAX_SHORT_STRING: usize = 255;

/// `[amqp]`.
pub(crate) fn broker(raw: RawAmqp, sink: &mut Sink) -> Option<AmqpConfig> {
    let path = "amqp.url";
    let url = required(sink, path, raw.url, "url = \"amqp://guest:guest@127.0.0.1:5672/%2f\"")?;
    let uri = match parse_uri(&url) {
        Ok(uri) => Some(uri),
        Err(why) => {
            // The URL may hold a password: say what is wrong, not what it is.
            sink.push(
                path,
                format!("not an AMQP URL ({why}): use amqp://user:password@host:port/vhost, e.g. \"amqp://guest:guest@127.0.0.1:5672/%2f\""),
            );
            None
        }
    };
    let connect_timeout = duration_or(
        sink,
        "amqp.connect_timeout",
        raw.connect_timeout.as_ref(),
        DEFAULT_AMQP_CONNECT_TIMEOUT,
    )
    .filter(|d| {
        if d.is_zero() {
            sink.push("amqp.connect_timeout", "must be more than zero, e.g. \"5s\"");
        }
        !d.is_zero()
    });
    let uri = uri?;
    // The vhost as the URL writes it ("/" is "%2f"), so it reads as one.
    let vhost = uri.vhost.replace('%', "%25").replace('/', "%2f");
    let broker = format!("{}:{}/{vhost}", uri.authority.host, uri.authority.port);
    Some(AmqpConfig { url, broker, connect_timeout: connect_timeout? })
}

/// Parses an `amqp://` or `amqps://` URL as lapin connects with it.
///
/// lapin's own parser reads the host with `Url::domain`, which is `None`
/// for an IP address, and then falls back to `localhost`; the host is
/// taken from the URL here instead, so `127.0.0.1` means 127.0.0.1.
pub fn parse_uri(url: &str) -> Result<AMQPUri, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(format!("the scheme must be amqp or amqps, not {:?}", parsed.scheme()));
    }
    let host = match parsed.host() {
        Some(url::Host::Domain(name)) => name.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("no host".into()),
    };
    let mut uri: AMQPUri = url.parse()?;
    uri.authority.host = host;
    Ok(uri)
}

/// A backend's `amqp = { queue }` or `{ exchange, routing_key }`, with `reply`.
pub(crate) fn target(path: &str, raw: &RawAmqpTarget, sink: &mut Sink) -> Option<AmqpTarget> {
    let mut ok = true;
    let mut short = |sink: &mut Sink, key: &str, value: &Option<String>| {
        if value.as_ref().is_some_and(|v| v.len() > MAX_SHORT_STRING || v.contains('\0')) {
            sink.push(key_path(path, key), "too long or holds NUL: at most 255 bytes");
            ok = false;
        }
    };
    short(sink, "queue", &raw.queue);
    short(sink, "exchange", &raw.exchange);
    short(sink, "routing_key", &raw.routing_key);
    let empty = |v: &Option<String>| v.as_deref().is_some_and(str::is_empty);
    if empty(&raw.queue) {
        sink.push(key_path(path, "queue"), "empty: name the queue the service consumes");
        ok = false;
    }
    let routing_key = match (&raw.queue, &raw.routing_key) {
        (Some(_), Some(_)) => {
            sink.push(
                path,
                "set either queue (the default exchange routes to it) or routing_key, not both",
            );
            None
        }
        (Some(queue), None) => Some(queue.clone()),
        (None, Some(key)) => Some(key.clone()),
        (None, None) => {
            sink.push(
                path,
                "nowhere to publish: set queue = \"NAME\" or exchange = \"NAME\" with routing_key = \"KEY\"",
            );
            None
        }
    };
    let exchange = raw.exchange.clone().unwrap_or_default();
    if exchange.starts_with("amq.rabbitmq.") {
        sink.push(key_path(path, "exchange"), "the amq.rabbitmq.* names are the broker's own");
        ok = false;
    }
    let target =
        AmqpTarget { exchange, routing_key: routing_key?, reply: raw.reply.unwrap_or(true) };
    ok.then_some(target)
}

/// A section needs an answer: a one-way (`reply = false`) backend cannot
/// serve one.
pub(crate) fn sections_need_replies(
    routes: &[Arc<RouteConfig>],
    backends: &BTreeMap<String, Arc<BackendConfig>>,
    sink: &mut Sink,
) {
    for (r, route) in routes.iter().enumerate() {
        for (s, section) in route.sections.iter().enumerate() {
            let one_way = backends
                .get(&section.backend)
                .and_then(|b| b.amqp.as_ref())
                .is_some_and(|target| !target.reply);
            if one_way {
                sink.push(
                    key_path(&index_path(&key_path(&index_path("routes", r), "sections"), s), "backend"),
                    format!(
                        "backend {:?} publishes one-way (amqp.reply = false) and has no answer for a section: use it from a [[proxy]] route",
                        section.backend
                    ),
                );
            }
        }
    }
}
