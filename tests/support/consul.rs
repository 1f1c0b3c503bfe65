//! `ConsulDouble`: a Consul agent's HTTP API, as far as mosaic uses it, on a
//! real loopback port (its own thread and actix system, like a separate
//! process). Consul itself cannot be installed here, so this follows
//! HashiCorp's API documentation for:
//!
//! - `GET /v1/health/service/:service`: the documented entry shape
//!   (`Node{ID,Node,Address,Datacenter,TaggedAddresses,Meta,..}`,
//!   `Service{ID,Service,Tags,Address,Meta,Port,Weights,..}`,
//!   `Checks[{Node,CheckID,Name,Status,ServiceID,ServiceName,..}]`, each
//!   entry with the node's `serfHealth` check); `passing` (every check
//!   passing), `tag` (repeatable, all required), `dc` (another datacenter
//!   is a 500 "No path to datacenter"); blocking with `index` + `wait` (held
//!   while the index is not above the one asked, up to `wait`, then answered
//!   with the current `X-Consul-Index`; Consul's extra wait/16 jitter is
//!   left out); an index that went backwards is answered only when `wait`
//!   elapses, as a snapshot restore would look.
//! - `PUT /v1/agent/service/register` (`ID` defaulting to `Name`, `Check`
//!   with `HTTP`/`Interval`, initial `Status` or `critical`) and
//!   `PUT /v1/agent/service/deregister/:id` (404 when unknown). HTTP checks
//!   are really run: the double GETs the URL every `Interval` and marks the
//!   check passing on 2xx, critical otherwise.
//! - ACL: when built with a token, a missing or wrong `X-Consul-Token` gets
//!   403 "Permission denied".
//!
//! Test controls: register/deregister directly, set a check's status, force
//! the index (backwards), answer 500 or garbage, stop (connection refused)
//! and restart on the same port with the same state, count calls.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use serde_json::{json, Value};

mod api;

/// How the double answers health queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As Consul does.
    Normal,
    /// 500 "No cluster leader" (an agent without servers).
    Error500,
    /// 200 with an HTML body (a proxy in the way, say).
    Garbage,
}

/// One registered service instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    /// `Service.Address`; empty means the node's.
    pub address: String,
    pub port: u16,
    pub node: String,
    pub node_address: String,
    /// The service check's status: `passing`, `warning`, `critical`.
    pub status: String,
    /// An HTTP check (URL, interval) the double runs.
    pub http_check: Option<(String, Duration)>,
    pub meta: Value,
    create_index: u64,
    modify_index: u64,
}

impl Instance {
    /// A passing instance of `service` at `addr`, on its own node (whose
    /// address is unroutable, so a client that ignores `Service.Address` fails).
    pub fn new(id: &str, service: &str, addr: SocketAddr) -> Instance {
        Instance {
            id: id.to_string(),
            service: service.to_string(),
            tags: Vec::new(),
            address: addr.ip().to_string(),
            port: addr.port(),
            node: format!("node-{id}"),
            node_address: "192.0.2.1".to_string(),
            status: "passing".to_string(),
            http_check: None,
            meta: json!({}),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// With tags.
    pub fn tags(mut self, tags: &[&str]) -> Instance {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    /// With an empty `Service.Address`: the node's address is the instance's.
    pub fn on_node_address(mut self) -> Instance {
        self.node_address = std::mem::take(&mut self.address);
        self
    }
}

#[derive(Debug)]
struct State {
    index: u64,
    instances: BTreeMap<String, Instance>,
    mode: Mode,
    token: Option<String>,
    datacenter: String,
    registrations: Vec<Value>,
    health_targets: Vec<(String, Option<String>)>,
}

struct Shared {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
    health_calls: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change under a new index and wakes blocked queries.
    fn change(&self, f: impl FnOnce(&mut State, u64)) {
        let mut state = self.lock();
        state.index += 1;
        let index = state.index;
        f(&mut state, index);
        drop(state);
        self.changed.send_modify(|n| *n += 1);
    }
}

/// A running (or stopped) Consul API double.
pub struct ConsulDouble {
    /// Where it listens (kept across stop/restart).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<(actix_rt::System, std::thread::JoinHandle<()>)>,
}

impl ConsulDouble {
    /// A double without ACLs, datacenter `dc1`.
    pub fn start() -> ConsulDouble {
        Self::build(None)
    }

    /// A double that requires `X-Consul-Token: token`.
    pub fn with_token(token: &str) -> ConsulDouble {
        Self::build(Some(token.to_string()))
    }

    fn build(token: Option<String>) -> ConsulDouble {
        let state = State {
            index: 10,
            instances: BTreeMap::new(),
            mode: Mode::Normal,
            token,
            datacenter: "dc1".into(),
            registrations: Vec::new(),
            health_targets: Vec::new(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: tokio::sync::watch::channel(0).0,
            health_calls: AtomicUsize::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind consul double");
        let addr = listener.local_addr().expect("addr");
        let mut double = ConsulDouble { addr, shared, running: None };
        double.serve(listener);
        double
    }

    fn serve(&mut self, listener: std::net::TcpListener) {
        let shared = self.shared.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            system.block_on(async {
                let data = web::Data::from(shared.clone());
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/v1/health/service/{service}", web::get().to(api::health))
                        .route("/v1/agent/service/register", web::put().to(api::register))
                        .route("/v1/agent/service/deregister/{id}", web::put().to(api::deregister))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(0)
                .listen(listener)
                .expect("listen")
                .run();
                actix_rt::spawn(server);
                actix_rt::spawn(api::run_http_checks(shared));
                let _ = tx.send(actix_rt::System::current());
            });
            system.run().ok();
        });
        let system = rx.recv().expect("double started");
        self.running = Some((system, thread));
    }

    /// `http://127.0.0.1:PORT`, for `[discovery.consul] address`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers (or replaces) an instance.
    pub fn register(&self, mut instance: Instance) {
        self.shared.change(|state, index| {
            instance.create_index = index;
            instance.modify_index = index;
            state.instances.insert(instance.id.clone(), instance);
        });
    }

    /// Removes an instance.
    pub fn deregister(&self, id: &str) {
        self.shared.change(|state, _| {
            state.instances.remove(id);
        });
    }

    /// Sets an instance's check status (`passing`, `warning`, `critical`).
    pub fn set_check(&self, id: &str, status: &str) {
        self.shared.change(|state, index| {
            if let Some(instance) = state.instances.get_mut(id) {
                instance.status = status.to_string();
                instance.modify_index = index;
            }
        });
    }

    /// Forces the index (e.g. backwards, as after a snapshot restore).
    /// Blocked queries waiting on a higher index keep waiting, as in Consul.
    pub fn force_index(&self, index: u64) {
        self.shared.lock().index = index;
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// The current index.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// Answers health queries normally, with 500s or with garbage.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().mode = mode;
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// Health queries received so far.
    pub fn health_calls(&self) -> usize {
        self.shared.health_calls.load(Ordering::SeqCst)
    }

    /// Each health query's target and `X-Consul-Token`.
    pub fn health_requests(&self) -> Vec<(String, Option<String>)> {
        self.shared.lock().health_targets.clone()
    }

    /// Registration bodies received over HTTP.
    pub fn registrations(&self) -> Vec<Value> {
        self.shared.lock().registrations.clone()
    }

    /// Registered instance ids.
    pub fn instance_ids(&self) -> Vec<String> {
        self.shared.lock().instances.keys().cloned().collect()
    }

    /// An instance's check status.
    pub fn status_of(&self, id: &str) -> Option<String> {
        self.shared.lock().instances.get(id).map(|i| i.status.clone())
    }

    /// Stops listening: connections are closed, new ones refused.
    pub fn stop(&mut self) {
        if let Some((system, thread)) = self.running.take() {
            system.stop();
            let _ = thread.join();
        }
    }

    /// Listens again on the same port, with the same state.
    pub fn restart(&mut self) {
        self.stop();
        let listener = std::net::TcpListener::bind(self.addr).expect("rebind consul double");
        self.serve(listener);
    }
}

impl Drop for ConsulDouble {
    fn drop(&mut self) {
        self.stop();
    }
}
