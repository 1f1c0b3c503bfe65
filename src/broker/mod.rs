//! The gateway's one connection to RabbitMQ (SPEC.md, "Messaging backends"):
//! opened at start, watched, and reopened with a jittered backoff capped
//! at [`MAX_BACKOFF`] whenever it drops; a broker unreachable at start is
//! treated the same way (mosaic starts, serves, and keeps trying).
//!
//! [`Broker`] publishes the current connection through a `watch` channel:
//! each AMQP backend's link (`backend::amqp`) follows it and opens its own
//! channel on every new connection. `mosaic_amqp_up` is 1 while connected,
//! and `/readyz` is not 200 while it is 0.
//!
//! The connection is made by a task on the gateway's control arbiter, a
//! runtime that lives as long as the gateway: lapin runs its heartbeat and
//! internal RPC on the runtime that made the connection (research notes,
//! lapin PR #454), so a worker's runtime must not be that one.

pub mod backoff;

use std::sync::{Arc, Weak};
use std::time::Duration;

use actix::ArbiterHandle;
use futures_util::StreamExt as _;
use lapin::{Connection, ConnectionProperties, Event};
use tokio::sync::watch;

use crate::config::AmqpConfig;
pub use backoff::MAX_BACKOFF;

/// How often a connection that sent no event is looked at anyway.
const STATUS_CHECK: Duration = Duration::from_millis(500);

/// The broker connection and its state.
#[derive(Debug)]
pub struct Broker {
    config: AmqpConfig,
    current: watch::Sender<Option<Arc<Connection>>>,
    up: metrics::Gauge,
    connects: metrics::Counter,
    late_replies: metrics::Counter,
}

impl Broker {
    /// The broker of `config`, connecting (and reconnecting) from a task on
    /// `control`. The task ends when the broker is dropped.
    pub fn start(config: &AmqpConfig, control: &ArbiterHandle) -> Arc<Self> {
        let (current, _) = watch::channel(None);
        // Labelled by broker so that gateways sharing a process (tests) do
        // not share one gauge; a gateway has one broker.
        let label = config.broker.clone();
        let up = metrics::gauge!("mosaic_amqp_up", "broker" => label.clone());
        up.set(0.0);
        let broker = Arc::new(Self {
            config: config.clone(),
            current,
            up,
            connects: metrics::counter!("mosaic_amqp_connects_total", "broker" => label.clone()),
            late_replies: metrics::counter!("mosaic_amqp_late_replies_total", "broker" => label),
        });
        let weak = Arc::downgrade(&broker);
        control.spawn(keep_connected(weak));
        broker
    }

    /// The configuration it was started with.
    pub fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// `host:port/vhost`, without credentials.
    pub fn address(&self) -> &str {
        &self.config.broker
    }

    /// Whether the connection is open now.
    pub fn is_up(&self) -> bool {
        self.current.borrow().as_ref().is_some_and(|c| c.status().connected())
    }

    /// Follows the connection: `Some` while one is open.
    pub fn follow(&self) -> watch::Receiver<Option<Arc<Connection>>> {
        self.current.subscribe()
    }

    /// Counts a reply that matched no waiting call
    /// (`mosaic_amqp_late_replies_total`).
    pub fn late_reply(&self) {
        self.late_replies.increment(1);
    }

    fn set(&self, connection: Option<Arc<Connection>>) {
        self.up.set(if connection.is_some() { 1.0 } else { 0.0 });
        self.current.send_replace(connection);
    }
}

/// Connects, waits for the connection to drop, and again, until the
/// broker is gone.
async fn keep_connected(broker: Weak<Broker>) {
    let mut failures = 0u32;
    loop {
        let Some(strong) = broker.upgrade() else { return };
        let config = strong.config.clone();
        drop(strong);
        match connect(&config).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                let Some(strong) = broker.upgrade() else {
                    let _ = connection.close(200, "gateway stopped".into()).await;
                    return;
                };
                failures = 0;
                strong.connects.increment(1);
                tracing::info!(broker = %config.broker, "AMQP connection open");
                let events = connection.events_listener();
                strong.set(Some(connection.clone()));
                drop(strong);
                let reason = until_dropped(&broker, &connection, events).await;
                let Some(strong) = broker.upgrade() else {
                    let _ = connection.close(200, "gateway stopped".into()).await;
                    return;
                };
                strong.set(None);
                tracing::warn!(broker = %config.broker, reason = %reason, "AMQP connection lost; reconnecting");
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                if failures == 1 || failures.is_multiple_of(10) {
                    tracing::warn!(broker = %config.broker, %error, failures, "AMQP broker unreachable; retrying");
                }
            }
        }
        tokio::time::sleep(backoff::delay(failures, fastrand::f64())).await;
    }
}

/// One connection attempt, bounded by `connect_timeout`.
async fn connect(config: &AmqpConfig) -> Result<Connection, String> {
    let uri = crate::config::parse_amqp_uri(&config.url)?;
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("mosaic {}", std::process::id()).into());
    match tokio::time::timeout(config.connect_timeout, Connection::connect_uri(uri, properties))
        .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no connection within {:?}", config.connect_timeout)),
    }
}

/// Waits until `connection` reports an error or is no longer connected, or
/// the broker is dropped; says why.
async fn until_dropped(
    broker: &Weak<Broker>,
    connection: &Connection,
    events: impl futures_util::Stream<Item = Event>,
) -> String {
    let mut events = std::pin::pin!(events);
    let mut check = tokio::time::interval(STATUS_CHECK);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) => return error.to_string(),
                Some(_) => {}
                None => return "event stream ended".into(),
            },
            _ = check.tick() => {
                if broker.strong_count() == 0 {
                    return "gateway stopped".into();
                }
                if !connection.status().connected() {
                    return "connection closed".into();
                }
            }
        }
    }
}
