//! What goes in a request message and what is read from a reply (SPEC.md,
//! "Messaging backends"): the properties (`correlation_id`, `reply_to`,
//! `expiration`, `message_id`, `content_type`, `delivery_mode`) and the
//! `headers` table (`method`, `path`, the per-request and forwarded
//! headers, lower-case names and string values); a reply's body, its
//! `content_type` and its integer `status` header.
//!
//! Every value a client or a service chose is checked on the way: AMQP
//! short strings hold at most 255 bytes (lapin panics on a longer one, so
//! nothing here builds one unchecked), and a reply's `status` must be an
//! integer from 100 to 599.

use std::time::Duration;

use bytes::Bytes;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

/// Direct reply-to: RabbitMQ routes the reply to the publishing channel's
/// consumer of this pseudo-queue; no reply queue is declared.
pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Longest name in a `headers` table (an AMQP short string).
const MAX_NAME: usize = 255;

/// Table entries mosaic sets itself; a forwarded header never takes them.
const RESERVED: [&str; 2] = ["method", "path"];

/// One request, as the call builds it.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET` for sections; the client's method for proxy routes.
    pub method: &'a str,
    /// The rendered service path, with its query.
    pub path: &'a str,
    /// Headers to carry: per-request (request id, trace context) and forwarded.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The request's `X-Request-Id`, also the `message_id`.
    pub request_id: Option<&'a [u8]>,
    /// The body's `Content-Type`, when a body is sent.
    pub content_type: Option<&'a [u8]>,
    /// The body (empty for sections).
    pub body: Bytes,
}

/// A header name AMQP cannot carry (longer than a short string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a header name longer than 255 bytes cannot be carried in an AMQP headers table")]
pub struct NameTooLong;

impl Request<'_> {
    /// The `headers` table. `method` and `path` are mosaic's: a forwarded
    /// header of either name is left out, never taken for them. A header
    /// sent more than once becomes one entry, its values joined by ", "
    /// (as HTTP allows), since a table holds one value per name.
    pub fn table(&self) -> Result<FieldTable, NameTooLong> {
        self.check()?;
        let mut joined: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for (name, value) in &self.headers {
            let name = name.to_ascii_lowercase();
            if RESERVED.contains(&name.as_str()) {
                continue;
            }
            let entry = joined.entry(name).or_default();
            if !entry.is_empty() {
                entry.extend_from_slice(b", ");
            }
            entry.extend_from_slice(value);
        }
        let mut table = FieldTable::default();
        for (name, value) in joined {
            table.insert(ShortString::try_new(name).map_err(|_| NameTooLong)?, long(&value));
        }
        table.insert("method".into(), long(self.method.as_bytes()));
        table.insert("path".into(), long(self.path.as_bytes()));
        Ok(table)
    }

    /// Whether every header can be carried (its name fits a short string),
    /// without building the table.
    pub fn check(&self) -> Result<(), NameTooLong> {
        if self.headers.iter().any(|(name, _)| name.len() > MAX_NAME) {
            return Err(NameTooLong);
        }
        Ok(())
    }

    /// The properties of a request/reply call with `correlation_id`, which
    /// the broker drops unconsumed after `remaining`.
    pub fn rpc_properties(
        &self,
        correlation_id: String,
        remaining: Duration,
    ) -> Result<BasicProperties, NameTooLong> {
        Ok(self
            .common_properties()?
            .with_correlation_id(short_or_empty(correlation_id))
            .with_reply_to(REPLY_TO.into())
            .with_expiration(expiration(remaining)))
    }

    /// The properties of a one-way publish: persistent, with `message_id`.
    pub fn one_way_properties(&self) -> Result<BasicProperties, NameTooLong> {
        Ok(self.common_properties()?.with_delivery_mode(2))
    }

    fn common_properties(&self) -> Result<BasicProperties, NameTooLong> {
        let mut properties = BasicProperties::default().with_headers(self.table()?);
        if let Some(id) = self.request_id.and_then(short) {
            properties = properties.with_message_id(id);
        }
        if let Some(content_type) = self.content_type.and_then(short) {
            properties = properties.with_content_type(content_type);
        }
        Ok(properties)
    }
}

/// The `expiration` property: whole milliseconds, at least 1 (0 would mean
/// "deliver now or drop", which a consumer a moment busy would miss).
pub fn expiration(remaining: Duration) -> ShortString {
    let ms = remaining.as_millis().clamp(1, u128::from(u32::MAX));
    ms.to_string().into()
}

/// A service's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Its `status` header: 200 when absent, `None` when it is not an
    /// integer from 100 to 599 (an invalid reply).
    pub status: Option<u16>,
    /// Its `content_type` property.
    pub content_type: Option<String>,
    /// Its body.
    pub body: Bytes,
}

impl Reply {
    /// Reads a delivered reply.
    pub fn read(properties: &BasicProperties, body: Vec<u8>) -> Self {
        let status = match properties.headers().as_ref().and_then(|h| h.inner().get("status")) {
            None => Some(200),
            Some(value) => integer(value)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..=599).contains(n)),
        };
        let content_type = properties.content_type().as_ref().map(|c| c.as_str().to_string());
        Reply { status, content_type, body: Bytes::from(body) }
    }
}

/// Any AMQP integer kind (services in other languages pick different ones).
fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

fn long(bytes: &[u8]) -> AMQPValue {
    AMQPValue::LongString(LongString::from(bytes.to_vec()))
}

/// A short string from bytes, if they are UTF-8 and short enough.
fn short(bytes: &[u8]) -> Option<ShortString> {
    std::str::from_utf8(bytes).ok().and_then(|s| ShortString::try_new(s).ok())
}

fn short_or_empty(s: String) -> ShortString {
    ShortString::try_new(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(headers: Vec<(&'a str, &'a [u8])>) -> Request<'a> {
        Request {
            method: "GET",
            path: "/inventory/42?x=1",
            headers,
            request_id: Some(b"req-1"),
            content_type: None,
            body: Bytes::new(),
        }
    }

    fn string(table: &FieldTable, key: &str) -> Option<Vec<u8>> {
        match table.inner().get(key) {
            Some(AMQPValue::LongString(s)) => Some(s.as_bytes().to_vec()),
            _ => None,
        }
    }

    #[test]
    fn a_request_carries_method_path_and_headers_as_strings() {
        let request = request(vec![("X-Request-Id", b"req-1"), ("authorization", b"Bearer a")]);
        let properties =
            request.rpc_properties("abc.1".into(), Duration::from_micros(150_700)).unwrap();
        let table = properties.headers().clone().unwrap();
        assert_eq!(string(&table, "method").as_deref(), Some(&b"GET"[..]));
        assert_eq!(string(&table, "path").as_deref(), Some(&b"/inventory/42?x=1"[..]));
        assert_eq!(string(&table, "x-request-id").as_deref(), Some(&b"req-1"[..]), "lower-case");
        assert_eq!(string(&table, "authorization").as_deref(), Some(&b"Bearer a"[..]));
        assert_eq!(properties.correlation_id().as_ref().map(|s| s.as_str()), Some("abc.1"));
        assert_eq!(properties.reply_to().as_ref().map(|s| s.as_str()), Some(REPLY_TO));
        assert_eq!(properties.expiration().as_ref().map(|s| s.as_str()), Some("150"));
        assert_eq!(properties.message_id().as_ref().map(|s| s.as_str()), Some("req-1"));
        assert_eq!(*properties.delivery_mode(), None, "an RPC request is not persistent");
        let one_way = request.one_way_properties().unwrap();
        assert_eq!(*one_way.delivery_mode(), Some(2));
        assert!(one_way.reply_to().is_none() && one_way.expiration().is_none());
    }

    #[test]
    fn forwarded_headers_never_take_mosaics_entries_and_repeats_are_joined() {
        let request = request(vec![
            ("Path", b"/admin"),
            ("method", b"DELETE"),
            ("accept", b"a/b"),
            ("Accept", b"c/d"),
        ]);
        let table = request.table().unwrap();
        assert_eq!(string(&table, "path").as_deref(), Some(&b"/inventory/42?x=1"[..]));
        assert_eq!(string(&table, "method").as_deref(), Some(&b"GET"[..]));
        assert_eq!(string(&table, "accept").as_deref(), Some(&b"a/b, c/d"[..]));
    }

    #[test]
    fn what_amqp_cannot_carry_is_refused_or_left_out_never_a_panic() {
        let long_name = "x".repeat(256);
        let refused = request(vec![(long_name.as_str(), b"v")]);
        assert_eq!(refused.table().err(), Some(NameTooLong));
        let long_id = vec![b'a'; 300];
        let mut kept = request(vec![]);
        kept.request_id = Some(&long_id);
        kept.content_type = Some(b"\xff");
        let properties = kept.one_way_properties().unwrap();
        assert!(properties.message_id().is_none() && properties.content_type().is_none());
        assert_eq!(expiration(Duration::ZERO).as_str(), "1", "0 would mean deliver-now-or-drop");
    }

    #[test]
    fn a_reply_status_is_an_integer_from_100_to_599_else_invalid() {
        let with = |value: Option<AMQPValue>| {
            let mut headers = FieldTable::default();
            if let Some(value) = value {
                headers.insert("status".into(), value);
            }
            Reply::read(&BasicProperties::default().with_headers(headers), b"{}".to_vec()).status
        };
        assert_eq!(with(None), Some(200), "absent: 200");
        assert_eq!(with(Some(AMQPValue::LongInt(404))), Some(404));
        assert_eq!(with(Some(AMQPValue::ShortUInt(503))), Some(503));
        assert_eq!(with(Some(AMQPValue::LongLongInt(201))), Some(201));
        assert_eq!(with(Some(AMQPValue::LongInt(600))), None);
        assert_eq!(with(Some(AMQPValue::LongInt(-200))), None);
        assert_eq!(with(Some(AMQPValue::LongString("200".into()))), None, "a string is not one");
    }
}
