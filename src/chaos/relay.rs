//! A TCP relay between the gateway and RabbitMQ that the experiment can
//! cut: the broker going away as the gateway sees it (its connection
//! closed, new ones refused) while the broker itself, and the services
//! connected to it directly, carry on. `restore` lets connections through
//! again, and the gateway must reconnect on its own.
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
    cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl BrokerRelay {
    /// Relays connections on a free loopback port to `broker`.
    pub async fn start(broker: SocketAddr) -> std::io::Result<BrokerRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let open = Arc::new(AtomicBool::new(true));
        let cuts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(listener, broker, open.clone(), cuts.clone()));
        Ok(BrokerRelay { addr, open, cuts, task })
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// Relays again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for BrokerRelay {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    broker: SocketAddr,
    open: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        if !open.load(Ordering::SeqCst) {
            continue; // dropped: refused
        }
        tokio::spawn(relay(client, broker, cuts.clone()));
    }
}

async fn relay(mut client: TcpStream, broker: SocketAddr, cuts: Arc<AtomicU64>) {
    let born = cuts.load(Ordering::SeqCst);
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(broker)).await
    else {
        return;
    };
    let cut = async {
        while cuts.load(Ordering::SeqCst) == born {
            tokio::time::sleep(CUT_CHECK).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = cut => {}
    }
}
