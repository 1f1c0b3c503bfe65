//! A TCP relay between the gateway and RabbitMQ that the experiment can
//! cut: the broker going away as the gateway sees it (its connection
//! closed, new ones refused) while the broker itself, and the services
//! connected to it directly, carry on. `restore` lets connections through
//! again, and the gateway must reconnect on its own. `freeze` keeps the
//! connections open but holds every byte: a broker that stopped answering.
//!
//! Bytes are copied as they are; nothing here reads AMQP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How often a relayed connection looks whether it was cut.
const CUT_CHECK: Duration = Duration::from_millis(10);
/// Longest wait for the broker to accept a relayed connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct BrokerRelay {
    /// Where the gateway connects.
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerRelay {
    /// Relays connections on a free loopback port to `broker`.
    pub async fn start(broker: SocketAddr) -> std::io::Result<BrokerRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU64::new(0));
        let state = Shared { open: open.clone(), frozen: frozen.clone(), cuts: cuts.clone() };
        let task = tokio::spawn(accept(listener, broker, state));
        Ok(BrokerRelay { addr, open, frozen, cuts, task })
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Relays again (and thaws).
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// Holds every byte in both directions, connections kept open.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// What the relay's tasks share with its handle.
#[derive(Clone)]
struct Shared {
    open: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
}

impl Drop for BrokerRelay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, broker: SocketAddr, state: Shared) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if !state.open.load(Ordering::SeqCst) {
            continue; // dropped: refused
        }
        tokio::spawn(relay(client, broker, state.clone()));
    }
}

async fn relay(mut client: TcpStream, broker: SocketAddr, state: Shared) {
    let born = state.cuts.load(Ordering::SeqCst);
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(broker)).await
    else {
        return;
    };
    let cut = async {
        while state.cuts.load(Ordering::SeqCst) == born {
            tokio::time::sleep(CUT_CHECK).await;
        }
    };
    let (client_read, client_write) = client.split();
    let (broker_read, broker_write) = upstream.split();
    tokio::select! {
        _ = pump(client_read, broker_write, &state.frozen) => {}
        _ = pump(broker_read, client_write, &state.frozen) => {}
        _ = cut => {}
    }
}

/// Copies `from` to `to`, holding each chunk while the relay is frozen.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    frozen: &AtomicBool,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(CUT_CHECK).await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
