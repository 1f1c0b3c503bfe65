//! A demo service as an AMQP RPC server (`mosaic demo-service --service
//! inventory --amqp URL`): the broker side of SPEC.md's "Messaging
//! backends". This module owns the connection, the queue, the consumer and
//! the replies; what a request answers is `demo::rpc`'s.
//!
//! - **Queue**: declared non-durable, non-exclusive, `auto_delete`: when the
//!   process dies the broker drops the queue with its last consumer, so the
//!   gateway's mandatory publish comes back unroutable (`no_instances`)
//!   instead of waiting in a queue nobody reads. A restart declares it again.
//! - **Consumer**: manual acks, `basic.qos` prefetch [`PREFETCH`]; each
//!   delivery is handled on its own task and acked after its reply is
//!   published, so the prefetch bounds the requests in flight.
//! - **Reply**: to the default exchange with routing key = the request's
//!   `reply_to`, the same `correlation_id`, the answer's `content_type`, and
//!   a `headers` table with `status` (`LongInt`) and the echoed
//!   `x-request-id`. A request without `reply_to` or `correlation_id` is
//!   acked and dropped (logged): nobody could read its answer.
//! - **HTTP**: the process still listens (`--listen`) for `/health`,
//!   `/_fault` and `/_stats`, and the data routes too; HTTP and AMQP share
//!   one fault setting and one cart store.
//! - **Broker lost**: the process exits non-zero with the reason (no
//!   reconnect). A demo service is supervised from outside (`DemoServices`,
//!   the tests); exiting also makes its queue vanish, which is the failure
//!   the gateway is meant to see.
//!
//! Faults over AMQP, in the order a request meets them (as over HTTP):
//!
//! | fault | over AMQP |
//! |---|---|
//! | `hang` | no reply; the request is held until its `expiration` passes (the requester gave up), at most 10 min, then acked |
//! | `latency_ms` ± `jitter_ms` | the reply is published that much later |
//! | `reset`, `reset_rate` | no reply, acked at once (the service "crashed" mid-request) |
//! | `error_rate` | `status` 503 with the JSON error body, as over HTTP |
//! | `non_json` | `status` 200 with the HTML page, `content_type` text/html |
//! | `drip_ms` | one message cannot trickle: the reply leaves when the last `drip_bytes` chunk would have |

use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::time::Duration;

use actix_service::{IntoServiceFactory, ServiceFactory as _};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Service, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::web;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use tokio::time::timeout;

use super::cart::CartStore;
use super::fault::{FaultState, Faults};
use super::rpc::{Reply, Request};
use super::service::{self, echo_request_id};
use super::Service as DemoService;

/// The queue a demo service consumes when `--queue` is not given.
pub const DEFAULT_QUEUE: &str = "inventory.rpc";
/// Unacked deliveries the broker sends at once: the bound on requests in
/// flight (each holds its delivery until its reply is out).
pub const PREFETCH: u16 = 64;
/// Bound on each broker step: connect, declare, consume, publish, ack.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the service consumes.
#[derive(Clone)]
pub struct AmqpOptions {
    /// The broker, credentials included.
    pub uri: AMQPUri,
    /// The queue to declare and consume.
    pub queue: String,
}

impl AmqpOptions {
    /// Parses `url` as the gateway does (`config::parse_amqp_uri`).
    pub fn new(url: &str, queue: &str) -> Result<AmqpOptions, String> {
        let uri = crate::config::parse_amqp_uri(url).map_err(|why| {
            format!("--amqp: not an AMQP URL ({why}); e.g. amqp://guest:guest@127.0.0.1:5672/%2f")
        })?;
        if queue.is_empty() || queue.len() > 255 {
            return Err("--queue: a queue name is 1 to 255 bytes".into());
        }
        Ok(AmqpOptions { uri, queue: queue.to_owned() })
    }

    /// `host:port/vhost` without credentials, written as the config layer
    /// writes `[amqp]`'s broker (the vhost escaped, "/" as "%2f").
    pub fn broker(&self) -> String {
        broker_name(&self.uri)
    }
}

/// `host:port/vhost` of `uri`, without credentials.
pub fn broker_name(uri: &AMQPUri) -> String {
    let vhost = uri.vhost.replace('%', "%25").replace('/', "%2f");
    format!("{}:{}/{vhost}", uri.authority.host, uri.authority.port)
}

/// Why the AMQP service stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum AmqpServiceError {
    /// The HTTP port (health, faults) could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A broker step failed.
    #[error("broker {broker}: {step} failed: {source}")]
    Broker {
        /// `host:port/vhost`.
        broker: String,
        /// What was being done.
        step: &'static str,
        /// lapin's error.
        source: lapin::Error,
    },
    /// A broker step took longer than [`BROKER_TIMEOUT`].
    #[error("broker {broker}: {step} took over {BROKER_TIMEOUT:?}")]
    Timeout {
        /// `host:port/vhost`.
        broker: String,
        /// What was being done.
        step: &'static str,
    },
    /// The consumer ended: connection or channel closed, or consumer cancelled.
    #[error("broker {broker}: lost the consumer on queue {queue} ({reason}); exiting")]
    Lost {
        /// `host:port/vhost`.
        broker: String,
        /// The queue.
        queue: String,
        /// lapin's error, or the cancellation.
        reason: String,
    },
    /// The in-process app could not be built.
    #[error("the service's app did not start")]
    App,
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
}

/// Binds `listen`, consumes `options.queue` and prints `demo service NAME
/// (AMQP queue Q at BROKER) listening on ADDR` once the consumer is
/// registered (what `DemoServices` waits for); serves until killed, stopped
/// (SIGTERM) or the broker is lost.
pub fn run_standalone(
    service: DemoService,
    listen: SocketAddr,
    faults: Faults,
    options: AmqpOptions,
) -> Result<(), AmqpServiceError> {
    let listener = TcpListener::bind(listen)
        .map_err(|source| AmqpServiceError::Listen { addr: listen, source })?;
    let bound = listener.local_addr().unwrap_or(listen);
    actix_rt::System::new().block_on(serve(service, listener, bound, faults, options))
}

async fn serve(
    service: DemoService,
    listener: TcpListener,
    bound: SocketAddr,
    faults: Faults,
    options: AmqpOptions,
) -> Result<(), AmqpServiceError> {
    let faults = web::Data::new(FaultState::new(faults));
    let carts = web::Data::new(CartStore::default());
    let (connection, channel, consumer) = subscribe(service, &options).await?;
    let app = service::routes(service, faults.clone(), carts.clone())
        .wrap(from_fn(echo_request_id))
        .into_factory()
        .new_service(AppConfig::default())
        .await
        .map_err(|()| AmqpServiceError::App)?;
    let server = service::http_server(service, listener, faults.clone(), carts)
        .map_err(|source| AmqpServiceError::Listen { addr: bound, source })?;
    announce(service, &options, bound).await;
    let broker = options.broker();
    tokio::select! {
        stopped = server => {
            // Closing lets the broker drop the queue now, not at the TCP close.
            let _ = timeout(Duration::from_secs(1), connection.close(200, "stopped".into())).await;
            stopped.map_err(AmqpServiceError::Http)
        }
        lost = consume(Rc::new(app), channel, consumer, faults) => Err(AmqpServiceError::Lost {
            broker,
            queue: options.queue,
            reason: lost,
        }),
    }
}

/// Prints the readiness line, off the async thread (a write to a pipe can
/// block).
async fn announce(service: DemoService, options: &AmqpOptions, bound: SocketAddr) {
    let (queue, broker) = (&options.queue, options.broker());
    // One write; the last word is the address `spawn_service` parses.
    let line =
        format!("demo service {service} (AMQP queue {queue} at {broker}) listening on {bound}\n");
    let _ = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    })
    .await;
}

/// Runs one broker step under [`BROKER_TIMEOUT`], naming it in the error.
async fn step<T>(
    broker: &str,
    step: &'static str,
    future: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, AmqpServiceError> {
    match timeout(BROKER_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => {
            Err(AmqpServiceError::Broker { broker: broker.to_owned(), step, source })
        }
        Err(_) => Err(AmqpServiceError::Timeout { broker: broker.to_owned(), step }),
    }
}

/// Connects, opens a channel, sets the prefetch, declares the queue and
/// registers the consumer.
async fn subscribe(
    service: DemoService,
    options: &AmqpOptions,
) -> Result<(Connection, Channel, Consumer), AmqpServiceError> {
    let broker = options.broker();
    let name = format!("mosaic demo-service {service} (queue {})", options.queue);
    let props = ConnectionProperties::default().with_connection_name(name.into());
    // lapin's default runtime is the current tokio one: the actix system's,
    // which lives as long as the process.
    let connection =
        step(&broker, "connect", Connection::connect_uri(options.uri.clone(), props)).await?;
    let channel = step(&broker, "channel.open", connection.create_channel()).await?;
    step(&broker, "basic.qos", channel.basic_qos(PREFETCH, BasicQosOptions::default())).await?;
    let declare = QueueDeclareOptions {
        durable: false,
        exclusive: false,
        auto_delete: true,
        ..QueueDeclareOptions::default()
    };
    let queue = ShortString::from(options.queue.as_str());
    let declared = channel.queue_declare(queue.clone(), declare, FieldTable::default());
    step(&broker, "queue.declare", declared).await?;
    let tag = ShortString::from(format!("mosaic-demo-{service}-{}", std::process::id()));
    let consume = BasicConsumeOptions { no_ack: false, ..BasicConsumeOptions::default() };
    let consumer = channel.basic_consume(queue, tag, consume, FieldTable::default());
    let consumer = step(&broker, "basic.consume", consumer).await?;
    Ok((connection, channel, consumer))
}

/// Hands each delivery to its own task until the consumer ends; returns why
/// it ended.
async fn consume<S, B>(
    app: Rc<S>,
    channel: Channel,
    mut consumer: Consumer,
    faults: web::Data<FaultState>,
) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>
        + 'static,
    B: MessageBody + 'static,
{
    while let Some(next) = consumer.next().await {
        match next {
            // The app is `!Send` (actix's `Rc`s): tasks stay on this thread.
            Ok(delivery) => {
                actix_rt::spawn(handle(app.clone(), channel.clone(), delivery, faults.clone()));
            }
            Err(e) => return e.to_string(),
        }
    }
    "the consumer was cancelled".to_owned()
}

/// Answers one delivery (or not, under a fault), then acks it.
async fn handle<S, B>(
    app: Rc<S>,
    channel: Channel,
    delivery: Delivery,
    faults: web::Data<FaultState>,
) where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let Delivery { properties, data, acker, .. } = delivery;
    let address = properties.reply_to().clone().zip(properties.correlation_id().clone());
    if let Some((reply_to, correlation_id)) = address {
        let expiration = properties
            .expiration()
            .as_ref()
            .and_then(|e| e.as_str().parse().ok())
            .map(Duration::from_millis);
        let reply = match Request::parse(&properties, data) {
            Ok(request) => super::rpc::respond(&*app, &faults, request, expiration).await,
            Err(e) => Some(Reply::bad_request(&e).await),
        };
        if let Some(reply) = reply {
            publish(&channel, reply_to, correlation_id, reply).await;
        }
    } else {
        tracing::warn!(
            "request without reply_to or correlation_id dropped: nobody could read its answer"
        );
    }
    match timeout(BROKER_TIMEOUT, acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "ack failed"),
        Err(_) => tracing::warn!("ack took over {BROKER_TIMEOUT:?}"),
    }
}

/// Publishes `reply` to `reply_to` on the default exchange.
async fn publish(
    channel: &Channel,
    reply_to: ShortString,
    correlation_id: ShortString,
    reply: Reply,
) {
    let mut headers = FieldTable::default();
    headers.insert("status".into(), AMQPValue::LongInt(i32::from(reply.status)));
    if let Some(id) = reply.request_id {
        headers.insert("x-request-id".into(), AMQPValue::LongString(LongString::from(id)));
    }
    let mut props =
        BasicProperties::default().with_correlation_id(correlation_id).with_headers(headers);
    if let Some(content_type) = reply.content_type {
        props = props.with_content_type(content_type.into());
    }
    let sent = channel.basic_publish(
        "".into(),
        reply_to,
        BasicPublishOptions::default(),
        &reply.body,
        props,
    );
    match timeout(BROKER_TIMEOUT, sent).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "reply not published"),
        Err(_) => tracing::warn!("reply publish took over {BROKER_TIMEOUT:?}"),
    }
}
