//! The seven demo services as child processes of one executable (`mosaic
//! demo-service ...`), for `mosaic demo` and the chaos tests.
//!
//! Each child prints `demo service NAME listening on ADDR` once bound; the
//! parent reads that line (so port 0 works: the child picks a free port and
//! says which), then polls `GET /health` until it answers 200. A restart
//! reuses the child's port, so a gateway configured for it finds it again.
//!
//! With [`AmqpInventory`] (`mosaic demo --amqp`), inventory runs as an AMQP
//! RPC consumer (`demo-service --amqp URL --queue Q`); its port then serves
//! `/health` and `/_fault`, and its announcement comes once its consumer is
//! registered, so a request published right after start is routed.
//!
//! The health check is a hand-written HTTP/1.1 GET over a tokio `TcpStream`
//! rather than `awc`: it keeps this API `Send` and usable from any tokio
//! runtime, not only actix's.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout, Instant};

use super::Service;

/// How long one service may take from spawn to answering `/health`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one `/health` probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between probes while a service starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Why the demo services could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The executable could not be run.
    #[error("cannot start demo service {service}: {source}")]
    Spawn {
        /// The service.
        service: Service,
        /// The OS error.
        source: std::io::Error,
    },
    /// The child did not announce itself or did not answer `/health` in time.
    #[error("demo service {service} did not come up on 127.0.0.1:{port}: {reason}")]
    NotReady {
        /// The service.
        service: Service,
        /// The port asked for (0: any).
        port: u16,
        /// What went wrong.
        reason: String,
    },
    /// No service has this name.
    #[error("no demo service named {0:?}")]
    Unknown(String),
}

/// One service as `DemoServices` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `catalog`, `pricing`, ...
    pub name: &'static str,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The child's process id; `None` after `kill`.
    pub pid: Option<u32>,
    /// The queue it consumes when served over AMQP.
    pub amqp_queue: Option<String>,
}

/// Inventory served through a broker instead of HTTP.
#[derive(Clone)]
pub struct AmqpInventory {
    /// The broker URL, credentials included (passed to the child as `--amqp`).
    pub url: String,
    /// `host:port/vhost`, without credentials, for the banner.
    pub broker: String,
    /// The queue inventory declares and consumes.
    pub queue: String,
}

impl AmqpInventory {
    /// Checks `url` and `queue` as the child will, so a typo fails before
    /// any process starts.
    pub fn new(url: &str, queue: &str) -> Result<AmqpInventory, String> {
        let options = super::amqp::AmqpOptions::new(url, queue)?;
        Ok(AmqpInventory { url: url.to_owned(), broker: options.broker(), queue: queue.to_owned() })
    }
}

struct Running {
    service: Service,
    port: u16,
    /// Flags after `--listen`, kept for restarts.
    extra: Vec<String>,
    /// The queue, when served over AMQP.
    amqp_queue: Option<String>,
    /// `None` once killed.
    child: Option<Child>,
}

/// The seven demo services as child processes. Dropping it kills them all.
pub struct DemoServices {
    exe: PathBuf,
    running: Vec<Running>,
    amqp: Option<AmqpInventory>,
}

impl DemoServices {
    /// Starts the services from `exe` (the `mosaic` binary) on 127.0.0.1,
    /// `base_port + i` in [`Service::ALL`] order, and waits until each answers
    /// `/health`. With `base_port` 0 each service takes any free port (tests).
    pub async fn start(exe: impl Into<PathBuf>, base_port: u16) -> Result<Self, DemoError> {
        Self::start_with(exe, base_port, None).await
    }

    /// [`DemoServices::start`], with inventory served through the broker
    /// when `amqp` is set (its port then serves `/health` and `/_fault`).
    pub async fn start_with(
        exe: impl Into<PathBuf>,
        base_port: u16,
        amqp: Option<AmqpInventory>,
    ) -> Result<Self, DemoError> {
        // Built up one by one so that on error, Drop kills those already started.
        let mut services = DemoServices { exe: exe.into(), running: Vec::new(), amqp };
        for (index, service) in Service::ALL.into_iter().enumerate() {
            let port = if base_port == 0 { 0 } else { base_port.saturating_add(index as u16) };
            let (extra, amqp_queue) = match &services.amqp {
                Some(amqp) if service == Service::Inventory => {
                    let flags = ["--amqp", &amqp.url, "--queue", &amqp.queue];
                    (flags.map(str::to_owned).to_vec(), Some(amqp.queue.clone()))
                }
                _ => (Vec::new(), None),
            };
            let (child, port) = spawn_service(&services.exe, service, port, &strs(&extra)).await?;
            services.running.push(Running { service, port, extra, amqp_queue, child: Some(child) });
        }
        Ok(services)
    }

    /// The broker inventory is served through, when it is.
    pub fn amqp(&self) -> Option<&AmqpInventory> {
        self.amqp.as_ref()
    }

    /// Every service's name, port and pid, in port order.
    pub fn services(&self) -> Vec<ServiceInfo> {
        self.running
            .iter()
            .map(|r| ServiceInfo {
                name: r.service.name(),
                port: r.port,
                pid: r.child.as_ref().and_then(Child::id),
                amqp_queue: r.amqp_queue.clone(),
            })
            .collect()
    }

    /// The service's port.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.find(name).ok().map(|r| r.port)
    }

    /// The service's address.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.port(name).map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// The service's pid, `None` when killed (or unknown).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.find(name).ok().and_then(|r| r.child.as_ref().and_then(Child::id))
    }

    /// Kills the service with SIGKILL and waits for it to exit.
    pub async fn kill(&mut self, name: &str) -> Result<(), DemoError> {
        let running = self.find_mut(name)?;
        if let Some(mut child) = running.child.take() {
            // Already exited is fine: the goal is "not running".
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Starts the service again on its port (killing it first if running)
    /// and waits until it answers `/health`.
    pub async fn restart(&mut self, name: &str) -> Result<(), DemoError> {
        self.kill(name).await?;
        let exe = self.exe.clone();
        let running = self.find_mut(name)?;
        let extra = strs(&running.extra);
        let (child, _) = spawn_service(&exe, running.service, running.port, &extra).await?;
        running.child = Some(child);
        Ok(())
    }

    fn find(&self, name: &str) -> Result<&Running, DemoError> {
        self.running
            .iter()
            .find(|r| r.service.name() == name)
            .ok_or_else(|| DemoError::Unknown(name.to_owned()))
    }

    fn find_mut(&mut self, name: &str) -> Result<&mut Running, DemoError> {
        self.running
            .iter_mut()
            .find(|r| r.service.name() == name)
            .ok_or_else(|| DemoError::Unknown(name.to_owned()))
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

impl Drop for DemoServices {
    fn drop(&mut self) {
        for running in &mut self.running {
            if let Some(child) = running.child.as_mut() {
                // SIGKILL; tokio reaps the exited child in the background.
                let _ = child.start_kill();
            }
        }
    }
}

/// Runs one service (`exe demo-service --service NAME --listen 127.0.0.1:PORT
/// EXTRA...`, e.g. fault flags as `extra`) and waits until it answers
/// `/health`; returns the child (killed on drop) and its bound port.
pub async fn spawn_service(
    exe: &Path,
    service: Service,
    port: u16,
    extra: &[&str],
) -> Result<(Child, u16), DemoError> {
    let not_ready = |reason: String| DemoError::NotReady { service, port, reason };
    let mut child = Command::new(exe)
        .args(["demo-service", "--service", service.name(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DemoError::Spawn { service, source })?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let stdout = child.stdout.take().ok_or_else(|| not_ready("no stdout pipe".to_owned()))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = match timeout(STARTUP_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None) | Err(_)) => {
            let status = timeout(PROBE_TIMEOUT, child.wait()).await;
            let how = match status {
                Ok(Ok(status)) => format!("exited ({status})"),
                _ => "closed its stdout".to_owned(),
            };
            return Err(not_ready(format!("{how} before listening; see its stderr above")));
        }
        Err(_) => return Err(not_ready(format!("no listening line in {STARTUP_TIMEOUT:?}"))),
    };
    let addr: SocketAddr = line
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| not_ready(format!("unexpected first line {line:?}")))?;
    // Keep reading so the child never blocks on a full stdout pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    loop {
        if health_ok(addr).await {
            return Ok((child, addr.port()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(not_ready(format!("exited ({status})")));
        }
        if Instant::now() >= deadline {
            return Err(not_ready(format!("GET /health not 200 within {STARTUP_TIMEOUT:?}")));
        }
        sleep(PROBE_INTERVAL).await;
    }
}

/// True when `GET /health` on `addr` answers 200 within `PROBE_TIMEOUT`.
pub async fn health_ok(addr: SocketAddr) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(&head == b"HTTP/1.1 200")
    };
    matches!(timeout(PROBE_TIMEOUT, probe).await, Ok(Ok(true)))
}
