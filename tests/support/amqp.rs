//! A scripted service behind the real RabbitMQ on 127.0.0.1:5672: it
//! declares its own queue (unique per test, auto-deleted when it stops, as
//! the demo's services do), consumes it and answers each request as its
//! script says, on its own thread and runtime like `FakeBackend`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The broker every AMQP test uses.
pub const BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A queue name no other test (or run) uses.
pub fn unique(name: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "mosaic-test.{name}.{}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        fastrand::u32(..)
    )
}

/// `[amqp]` for test configs.
pub fn amqp_section() -> String {
    amqp_section_at(BROKER)
}

/// `[amqp]` naming the broker at `url`.
pub fn amqp_section_at(url: &str) -> String {
    format!("[amqp]\nurl = \"{url}\"\nconnect_timeout = \"2s\"\n")
}

/// A request as the service received it.
#[derive(Debug, Clone)]
pub struct AmqpRequest {
    /// String headers of the `headers` table.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
    /// `reply_to`.
    pub reply_to: Option<String>,
    /// `expiration`.
    pub expiration: Option<String>,
    /// `message_id`.
    pub message_id: Option<String>,
    /// `content_type`.
    pub content_type: Option<String>,
    /// `delivery_mode`.
    pub delivery_mode: Option<u8>,
}

impl AmqpRequest {
    /// A string header of the table.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the service does with one request.
#[derive(Debug, Clone)]
pub enum AmqpAnswer {
    /// Replies with this status header (`None`: no header) and body, after `delay`.
    Reply { status: Option<i32>, body: Vec<u8>, delay: Duration },
    /// Replies twice with the same correlation id (the second is a duplicate).
    Twice { body: Vec<u8> },
    /// Never replies.
    Silent,
}

impl AmqpAnswer {
    /// A 200 with a JSON body, at once.
    pub fn ok(json: &str) -> AmqpAnswer {
        AmqpAnswer::Reply {
            status: Some(200),
            body: json.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// A reply with `status` and `body`, at once.
    pub fn status(status: i32, body: &str) -> AmqpAnswer {
        AmqpAnswer::Reply {
            status: Some(status),
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// `answer` after `delay`.
    pub fn after(delay: Duration, json: &str) -> AmqpAnswer {
        AmqpAnswer::Reply { status: Some(200), body: json.as_bytes().to_vec(), delay }
    }
}

type Script = Arc<dyn Fn(&AmqpRequest) -> AmqpAnswer + Send + Sync>;

/// A scripted consumer of one queue.
pub struct AmqpService {
    /// Its queue.
    pub queue: String,
    requests: Arc<Mutex<Vec<AmqpRequest>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AmqpService {
    /// Starts a service answering every request with `answer`.
    pub fn start(queue: &str, answer: AmqpAnswer) -> AmqpService {
        Self::scripted(queue, move |_| answer.clone())
    }

    /// Starts a service whose answer depends on the request; returns once
    /// it consumes.
    pub fn scripted(
        queue: &str,
        script: impl Fn(&AmqpRequest) -> AmqpAnswer + Send + Sync + 'static,
    ) -> AmqpService {
        let script: Script = Arc::new(script);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (name, recorded) = (queue.to_string(), requests.clone());
        let thread = std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(serve(name, script, recorded, ready_tx, stop_rx));
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("AMQP test service consumes");
        AmqpService {
            queue: queue.to_string(),
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<AmqpRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// How many requests it received.
    pub fn calls(&self) -> usize {
        self.requests.lock().expect("lock").len()
    }

    /// Stops consuming and deletes the queue (as a killed service's
    /// auto-delete queue goes away).
    pub fn kill(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AmqpService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens a connection of its own (a test's, not the gateway's).
pub async fn connect() -> Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(BROKER, ConnectionProperties::default()),
    )
    .await
    .expect("broker answers in time")
    .expect("broker connection")
}

/// Declares `queue` (non-durable, auto-delete) and returns how many
/// messages wait in it.
pub async fn declare(channel: &lapin::Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions { auto_delete: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("declare queue")
        .message_count()
}

async fn serve(
    queue: String,
    script: Script,
    requests: Arc<Mutex<Vec<AmqpRequest>>>,
    ready: std::sync::mpsc::Sender<()>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let connection = connect().await;
    let channel = connection.create_channel().await.expect("channel");
    declare(&channel, &queue).await;
    channel.basic_qos(64, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let _ = ready.send(());
    let channel = Arc::new(channel);
    let serving = async {
        while let Some(Ok(delivery)) = consumer.next().await {
            let request = read(&delivery.properties, delivery.data.clone());
            requests.lock().expect("lock").push(request.clone());
            let answer = script(&request);
            let _ = delivery.ack(BasicAckOptions::default()).await;
            tokio::spawn(answer_request(channel.clone(), request, answer));
        }
    };
    tokio::select! {
        _ = serving => {}
        _ = stop => {}
    }
    let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
    let _ = connection.close(200, "test service stops".into()).await;
}

async fn answer_request(channel: Arc<lapin::Channel>, request: AmqpRequest, answer: AmqpAnswer) {
    let (Some(reply_to), Some(id)) = (request.reply_to.clone(), request.correlation_id.clone())
    else {
        return;
    };
    let (status, body, delay, times) = match answer {
        AmqpAnswer::Silent => return,
        AmqpAnswer::Reply { status, body, delay } => (status, body, delay, 1),
        AmqpAnswer::Twice { body } => (Some(200), body, Duration::ZERO, 2),
    };
    tokio::time::sleep(delay).await;
    let mut headers = FieldTable::default();
    if let Some(status) = status {
        headers.insert("status".into(), AMQPValue::LongInt(status));
    }
    let properties = BasicProperties::default()
        .with_correlation_id(id.into())
        .with_content_type("application/json".into())
        .with_headers(headers);
    for _ in 0..times {
        let _ = channel
            .basic_publish(
                "".into(),
                reply_to.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await;
    }
}

fn read(properties: &BasicProperties, body: Vec<u8>) -> AmqpRequest {
    let text = |s: &Option<lapin::types::ShortString>| s.as_ref().map(|s| s.as_str().to_string());
    let headers = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::LongString(s) => Some((
                        k.as_str().to_string(),
                        String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    )),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    AmqpRequest {
        headers,
        body,
        correlation_id: text(properties.correlation_id()),
        reply_to: text(properties.reply_to()),
        expiration: text(properties.expiration()),
        message_id: text(properties.message_id()),
        content_type: text(properties.content_type()),
        delivery_mode: *properties.delivery_mode(),
    }
}

/// The chaos experiment's relay in front of the broker (cut, freeze,
/// restore), with the URL and metrics label a test needs.
pub struct BrokerRelay {
    /// `amqp://` URL through the relay.
    pub url: String,
    relay: mosaic::chaos::relay::BrokerRelay,
}

impl BrokerRelay {
    /// Starts relaying to 127.0.0.1:5672 (on the calling test's runtime).
    pub async fn start() -> BrokerRelay {
        let broker = "127.0.0.1:5672".parse().expect("address");
        let relay = mosaic::chaos::relay::BrokerRelay::start(broker).await.expect("relay");
        BrokerRelay { url: format!("amqp://guest:guest@{}/%2f", relay.addr), relay }
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.relay.cut();
    }

    /// Relays again.
    pub fn restore(&self) {
        self.relay.restore();
    }

    /// Holds every byte: a broker that stopped answering.
    pub fn freeze(&self) {
        self.relay.freeze();
    }

    /// The port the gateway sees the broker on (its metrics label).
    pub fn port(&self) -> String {
        self.relay.addr.port().to_string()
    }
}
