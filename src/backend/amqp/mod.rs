//! An AMQP backend's side of the broker (SPEC.md, "Messaging backends"):
//! its own channel on the gateway's one connection, the consumer of its
//! replies (direct reply-to), and the two kinds of call made over it.
//!
//! - [`AmqpLink::call`]: request/reply. Publishes one message (mandatory,
//!   `correlation_id` per attempt, `expiration` = the attempt's remaining
//!   time) and waits for the reply with that id, or for the broker to return
//!   the message as unroutable (`no_instances`). The caller bounds the wait.
//! - [`AmqpLink::publish`]: one-way. Publishes a persistent message and
//!   waits for the broker's confirm.
//!
//! The channel is opened, and reopened after it or the connection dies, by
//! [`AmqpLink::maintain`], which the backend's supervised actor runs; while
//! there is no channel every call fails at once with `connect`. Which
//! resilience rules apply (timeouts, breaker, retries, cache...) is the
//! call procedure's business, exactly as for HTTP: this module is only the
//! transport.
//!
//! Every publisher confirm is awaited to its end, by the call or, when the
//! call ends first, by a small task: lapin keeps a confirm dropped unfinished
//! (and any message it returned) until `wait_for_confirms`, which a gateway
//! never calls, so dropping them would grow without bound.

pub mod message;
pub mod replies;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue};
use arc_swap::ArcSwapOption;
use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, Consumer, PublisherConfirm};
use tokio::sync::watch;
use tokio::time::Instant;

use super::client::Reply as HttpReply;
use super::section::Transport;
use super::FetchError;
use crate::broker::{backoff, Broker};
use crate::config::AmqpTarget;
pub use message::{Reply, Request};
use replies::Replies;

/// Longest wait for a channel to open (the connection is up, so this only
/// bites on a broker that stopped answering).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a confirm left behind by a finished call is waited for; a broker
/// that has not confirmed by then has a channel the link will replace.
const CONFIRM_DRAIN: Duration = Duration::from_secs(60);

/// One AMQP backend's channel and where it publishes.
#[derive(Debug)]
pub struct AmqpLink {
    backend: Arc<str>,
    target: AmqpTarget,
    broker: Arc<Broker>,
    open: ArcSwapOption<OpenChannel>,
}

/// A channel that is up, with the calls waiting on it.
#[derive(Debug)]
struct OpenChannel {
    channel: Channel,
    replies: Arc<Replies>,
}

impl AmqpLink {
    /// The link of `backend`, publishing to `target` through `broker`; it
    /// has no channel until [`AmqpLink::maintain`] opens one.
    pub fn new(backend: &str, target: AmqpTarget, broker: Arc<Broker>) -> Arc<Self> {
        Arc::new(Self { backend: backend.into(), target, broker, open: ArcSwapOption::empty() })
    }

    /// Where it publishes.
    pub fn target(&self) -> &AmqpTarget {
        &self.target
    }

    /// The broker it goes through.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Whether it has a channel now.
    pub fn is_open(&self) -> bool {
        self.open.load().is_some()
    }

    /// One request/reply exchange: the reply, or why there is none. The
    /// broker drops the message if no consumer took it by `until`; the
    /// caller stops waiting then too (`tokio::time::timeout_at`).
    pub async fn call(&self, request: &Request<'_>, until: Instant) -> Result<Reply, FetchError> {
        let open = self.open.load_full().ok_or(FetchError::Connect)?;
        let mut waiting = open.replies.wait().ok_or(FetchError::Connect)?;
        let remaining = until.saturating_duration_since(Instant::now());
        let properties = request
            .rpc_properties(waiting.correlation_id(), remaining)
            .map_err(|_| FetchError::Internal)?;
        let confirm = self.send(&open.channel, request, properties).await?;
        let mut confirm = Confirm(Some(confirm));
        loop {
            tokio::select! {
                biased;
                reply = waiting.reply() => return reply.ok_or(FetchError::Connect),
                confirmation = confirm.wait(), if confirm.pending() => match confirmation {
                    Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                    // Mandatory and unroutable: no queue is bound.
                    Ok(Confirmation::Ack(Some(_))) => return Err(FetchError::NoInstances),
                    Ok(Confirmation::Nack(_)) => return Err(FetchError::Nacked),
                    Err(_) => return Err(FetchError::Connect),
                },
            }
        }
    }

    /// One one-way publish, persistent, done once the broker confirms it.
    pub async fn publish(&self, request: &Request<'_>) -> Result<(), FetchError> {
        let open = self.open.load_full().ok_or(FetchError::Connect)?;
        let properties = request.one_way_properties().map_err(|_| FetchError::Internal)?;
        let confirm = self.send(&open.channel, request, properties).await?;
        match Confirm(Some(confirm)).wait().await {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => Err(FetchError::NoInstances),
            Ok(Confirmation::Nack(_)) => Err(FetchError::Nacked),
            // Confirms are always selected on the link's channel.
            Ok(Confirmation::NotRequested) => Err(FetchError::Internal),
            Err(_) => Err(FetchError::Connect),
        }
    }

    async fn send(
        &self,
        channel: &Channel,
        request: &Request<'_>,
        properties: lapin::BasicProperties,
    ) -> Result<PublisherConfirm, FetchError> {
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let exchange = self.target.exchange.as_str().into();
        let routing_key = self.target.routing_key.as_str().into();
        channel
            .basic_publish(exchange, routing_key, options, &request.body, properties)
            .await
            .map_err(|_| FetchError::Connect)
    }

    /// Keeps a channel open while the broker connection is: opens one on
    /// every new connection, hands replies to the calls waiting for them,
    /// and when the channel dies (the broker closed it, the connection
    /// dropped) fails the waiting calls at once and opens another. Runs for
    /// as long as its future is polled (the backend actor's context).
    pub async fn maintain(self: Arc<Self>) {
        let mut connections = self.broker.follow();
        let mut failures = 0u32;
        loop {
            let Some(connection) = next_connection(&mut connections).await else { return };
            match open_channel(&connection).await {
                Ok((open, consumer)) => {
                    failures = 0;
                    let open = Arc::new(open);
                    self.open.store(Some(open.clone()));
                    // Also when this future is dropped (the actor restarts
                    // or stops): nobody would read its replies any more.
                    let _in_use = InUse { link: &self, open: &open };
                    tracing::debug!(backend = %self.backend, "AMQP channel open");
                    let why = self.dispatch(consumer, &open.replies, &mut connections).await;
                    tracing::warn!(backend = %self.backend, reason = why, "AMQP channel closed; reopening");
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(backend = %self.backend, %error, "cannot open an AMQP channel; retrying");
                }
            }
            tokio::time::sleep(backoff::delay(failures, fastrand::f64())).await;
        }
    }

    /// Hands each reply to its call until the channel or connection ends.
    async fn dispatch(
        &self,
        mut consumer: Consumer,
        replies: &Replies,
        connections: &mut watch::Receiver<Option<Arc<Connection>>>,
    ) -> &'static str {
        loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let id = delivery.properties.correlation_id().clone().unwrap_or_default();
                        let reply = Reply::read(&delivery.properties, delivery.data);
                        if replies.deliver(id.as_str(), reply).is_err() {
                            self.broker.late_reply();
                            tracing::debug!(backend = %self.backend, "AMQP reply matches no waiting call; dropped");
                        }
                    }
                    Some(Err(_)) | None => return "the channel closed",
                },
                changed = connections.changed() => {
                    if changed.is_err() {
                        return "the broker is gone";
                    }
                    return "the connection changed";
                }
            }
        }
    }
}

/// A channel in use by the link: when it ends, calls stop using it and
/// the calls waiting on it end at once (`connect`).
struct InUse<'a> {
    link: &'a AmqpLink,
    open: &'a Arc<OpenChannel>,
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        // Only if it is still the link's channel (a newer one is left alone).
        let current = self.link.open.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, self.open)) {
            self.link.open.store(None);
        }
        self.open.replies.close();
    }
}

/// The next open connection; `None` once the broker is gone.
async fn next_connection(
    connections: &mut watch::Receiver<Option<Arc<Connection>>>,
) -> Option<Arc<Connection>> {
    loop {
        let current = connections.borrow_and_update().clone();
        if let Some(connection) = current.filter(|c| c.status().connected()) {
            return Some(connection);
        }
        connections.changed().await.ok()?;
    }
}

/// A channel with publisher confirms and a consumer of direct replies
/// (consuming before the first publish, on the same channel, as direct
/// reply-to requires; auto-ack, which it requires too).
async fn open_channel(connection: &Connection) -> Result<(OpenChannel, Consumer), String> {
    let open = async {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(message::REPLY_TO.into(), "".into(), options, FieldTable::default())
            .await?;
        Ok::<_, lapin::Error>((channel, consumer))
    };
    match tokio::time::timeout(OPEN_TIMEOUT, open).await {
        Ok(Ok((channel, consumer))) => {
            Ok((OpenChannel { channel, replies: Arc::new(Replies::new()) }, consumer))
        }
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no channel within {OPEN_TIMEOUT:?}")),
    }
}

/// A publisher confirm that is always awaited to its end (see the module doc).
struct Confirm(Option<PublisherConfirm>);

impl Confirm {
    fn pending(&self) -> bool {
        self.0.is_some()
    }

    async fn wait(&mut self) -> lapin::Result<Confirmation> {
        let Some(confirm) = self.0.as_mut() else {
            return Ok(Confirmation::NotRequested);
        };
        let confirmation = confirm.await;
        self.0 = None;
        confirmation
    }
}

impl Drop for Confirm {
    fn drop(&mut self) {
        let Some(confirm) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CONFIRM_DRAIN, confirm).await;
            });
        }
    }
}

/// A section's GET over the link ([`Transport`] for the call procedure).
#[derive(Debug, Clone)]
pub struct AmqpTransport(pub Arc<AmqpLink>);

impl Transport for AmqpTransport {
    async fn get(
        &self,
        _broker: &str,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        max_body: usize,
        until: Instant,
    ) -> Result<HttpReply, FetchError> {
        let request = Request {
            method: "GET",
            path,
            headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect(),
            request_id: headers
                .iter()
                .find(|(name, _)| name == "x-request-id")
                .map(|(_, value)| value.as_bytes()),
            content_type: None,
            body: bytes::Bytes::new(),
        };
        let reply = self.0.call(&request, until).await?;
        let status = reply.status.ok_or(FetchError::InvalidBody)?;
        if reply.body.len() > max_body {
            return Err(FetchError::TooLarge);
        }
        Ok(HttpReply { status, body: reply.body })
    }
}
