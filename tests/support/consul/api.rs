//! The double's HTTP endpoints and its HTTP check runner (see `../consul.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{Instance, Mode, Shared, State};

fn parse_wait(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

fn denied(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let expected = state.token.as_deref()?;
    let given = req.headers().get("x-consul-token").and_then(|v| v.to_str().ok());
    (given != Some(expected)).then(|| HttpResponse::Forbidden().body("Permission denied"))
}

pub(super) async fn health(
    req: HttpRequest,
    shared: web::Data<Shared>,
    service: web::Path<String>,
) -> HttpResponse {
    shared.health_calls.fetch_add(1, Ordering::SeqCst);
    let query: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let token = req.headers().get("x-consul-token").and_then(|v| v.to_str().ok()).map(String::from);
    {
        let mut state = shared.lock();
        state.health_targets.push((req.uri().to_string(), token));
        if let Some(denied) = denied(&req, &state) {
            return denied;
        }
        if param("dc").is_some_and(|dc| dc != state.datacenter) {
            return HttpResponse::InternalServerError().body("No path to datacenter");
        }
    }
    let index: u64 = param("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    let wait = param("wait").and_then(parse_wait).unwrap_or(Duration::from_secs(300));
    if index > 0 {
        let until = tokio::time::Instant::now() + wait.min(Duration::from_secs(600));
        let mut changes = shared.changed.subscribe();
        loop {
            let hold = {
                let state = shared.lock();
                state.index <= index && state.mode == Mode::Normal
            };
            if !hold {
                break;
            }
            if tokio::time::timeout_at(until, changes.changed()).await.is_err() {
                break;
            }
        }
    }
    let passing = param("passing").is_some_and(|v| v != "false" && v != "0");
    let tags: Vec<&str> =
        query.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.as_str()).collect();
    let state = shared.lock();
    match state.mode {
        Mode::Error500 => return HttpResponse::InternalServerError().body("No cluster leader"),
        Mode::Garbage => {
            return HttpResponse::Ok()
                .insert_header(("X-Consul-Index", state.index.to_string()))
                .content_type("text/html")
                .body("<html><body>502 Bad Gateway</body></html>")
        }
        Mode::Normal => {}
    }
    let entries: Vec<Value> = state
        .instances
        .values()
        .filter(|i| i.service == *service)
        .filter(|i| tags.iter().all(|t| i.tags.iter().any(|have| have == t)))
        .filter(|i| !passing || i.status == "passing")
        .map(|i| entry(i, &state.datacenter))
        .collect();
    HttpResponse::Ok()
        .insert_header(("X-Consul-Index", state.index.to_string()))
        .insert_header(("X-Consul-KnownLeader", "true"))
        .insert_header(("X-Consul-LastContact", "0"))
        .json(entries)
}

fn entry(i: &Instance, dc: &str) -> Value {
    let node_check = json!({
        "Node": i.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
        "CreateIndex": i.create_index, "ModifyIndex": i.create_index
    });
    let service_check = json!({
        "Node": i.node, "CheckID": format!("service:{}", i.id),
        "Name": format!("Service '{}' check", i.service), "Status": i.status,
        "Notes": "", "Output": "", "ServiceID": i.id, "ServiceName": i.service,
        "ServiceTags": i.tags, "Type": if i.http_check.is_some() { "http" } else { "" },
        "CreateIndex": i.create_index, "ModifyIndex": i.modify_index
    });
    json!({
        "Node": {
            "ID": format!("00000000-0000-4000-8000-{:012}", i.create_index),
            "Node": i.node, "Address": i.node_address, "Datacenter": dc,
            "TaggedAddresses": { "lan": i.node_address, "wan": i.node_address },
            "Meta": { "consul-network-segment": "" },
            "CreateIndex": i.create_index, "ModifyIndex": i.create_index
        },
        "Service": {
            "ID": i.id, "Service": i.service, "Tags": i.tags, "Address": i.address,
            "Meta": i.meta, "Port": i.port, "Weights": { "Passing": 1, "Warning": 1 },
            "EnableTagOverride": false, "Proxy": { "MeshGateway": {}, "Expose": {} },
            "Connect": {}, "CreateIndex": i.create_index, "ModifyIndex": i.modify_index
        },
        "Checks": [node_check, service_check]
    })
}

pub(super) async fn register(
    req: HttpRequest,
    shared: web::Data<Shared>,
    body: web::Bytes,
) -> HttpResponse {
    if let Some(denied) = denied(&req, &shared.lock()) {
        return denied;
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("Request decode failed");
    };
    let Some(name) = value["Name"].as_str().filter(|n| !n.is_empty()) else {
        return HttpResponse::BadRequest().body("Missing service name");
    };
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let check = &value["Check"];
    let http_check = check["HTTP"].as_str().map(|url| {
        let interval = check["Interval"].as_str().and_then(parse_wait);
        (url.to_string(), interval.unwrap_or(Duration::from_secs(10)))
    });
    let status = check["Status"].as_str().unwrap_or("critical").to_string();
    let instance = Instance {
        id: value["ID"].as_str().filter(|i| !i.is_empty()).unwrap_or(name).to_string(),
        service: name.to_string(),
        tags: value["Tags"].as_array().into_iter().flatten().map(text).collect(),
        address: text(&value["Address"]),
        port: value["Port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        node: "double-agent".into(),
        node_address: "127.0.0.1".into(),
        status,
        http_check,
        meta: value.get("Meta").cloned().unwrap_or_else(|| json!({})),
        create_index: 0,
        modify_index: 0,
    };
    shared.lock().registrations.push(value);
    shared.change(|state, index| {
        let mut instance = instance;
        instance.create_index = index;
        instance.modify_index = index;
        state.instances.insert(instance.id.clone(), instance);
    });
    HttpResponse::Ok().finish()
}

pub(super) async fn deregister(
    req: HttpRequest,
    shared: web::Data<Shared>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Some(denied) = denied(&req, &shared.lock()) {
        return denied;
    }
    if !shared.lock().instances.contains_key(id.as_str()) {
        return HttpResponse::NotFound().body(format!("Unknown service ID {:?}", id.as_str()));
    }
    shared.change(|state, _| {
        state.instances.remove(id.as_str());
    });
    HttpResponse::Ok().finish()
}

/// Runs every HTTP check when its interval comes round, like the agent.
pub(super) async fn run_http_checks(shared: Arc<Shared>) {
    let mut last_run: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let due: Vec<(String, String)> = {
            let state = shared.lock();
            let now = tokio::time::Instant::now();
            state
                .instances
                .values()
                .filter_map(|i| {
                    let (url, every) = i.http_check.clone()?;
                    let due = last_run.get(&i.id).is_none_or(|t| now.duration_since(*t) >= every);
                    due.then(|| (i.id.clone(), url))
                })
                .collect()
        };
        for (id, url) in due {
            last_run.insert(id.clone(), tokio::time::Instant::now());
            let status = if probe(&url).await { "passing" } else { "critical" };
            let differs = shared.lock().instances.get(&id).is_some_and(|i| i.status != status);
            if differs {
                shared.change(|state, index| {
                    if let Some(i) = state.instances.get_mut(&id) {
                        i.status = status.to_string();
                        i.modify_index = index;
                    }
                });
            }
        }
    }
}

/// GET `http://host:port/path`; true on 2xx within a second.
async fn probe(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let (host, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(
            head.starts_with(b"HTTP/1.1 2") || head.starts_with(b"HTTP/1.0 2"),
        )
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Ok(true)))
}
