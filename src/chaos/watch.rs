//! Watches the gateway's breakers: polls `GET /admin/backends` every
//! `every` and records each change of a backend's `breaker` state and of its
//! `actor_restarts` count. A poll that fails (the admin listener is busy or
//! the call times out) is counted and skipped, never fatal: the watch is an
//! observer, the load is the experiment.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::lab::{call, ADMIN_TOKEN};

/// One observed breaker change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When the poll saw it, since the epoch.
    pub at: Duration,
    /// The backend.
    pub backend: String,
    /// State before (`closed`, `open`, `half_open`).
    pub from: String,
    /// State now.
    pub to: String,
}

/// Everything the watch saw.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Breaker changes, in order.
    pub transitions: Vec<Transition>,
    /// Latest breaker state per backend.
    pub last_state: BTreeMap<String, String>,
    /// Latest `actor_restarts` per backend.
    pub actor_restarts: BTreeMap<String, u64>,
    /// Polls answered.
    pub polls: u64,
    /// Polls that failed.
    pub failed_polls: u64,
}

impl Watched {
    /// Applies one `/admin/backends` answer.
    pub fn observe(&mut self, at: Duration, backends: &[Value]) {
        self.polls += 1;
        for backend in backends {
            let (Some(name), Some(state)) = (backend["name"].as_str(), backend["breaker"].as_str())
            else {
                continue;
            };
            let previous = self.last_state.insert(name.to_owned(), state.to_owned());
            if let Some(from) = previous.filter(|from| from != state) {
                self.transitions.push(Transition {
                    at,
                    backend: name.to_owned(),
                    from,
                    to: state.to_owned(),
                });
            }
            if let Some(restarts) = backend["actor_restarts"].as_u64() {
                self.actor_restarts.insert(name.to_owned(), restarts);
            }
        }
    }
}

/// A running watch; [`WatchHandle::finish`] stops it.
pub struct WatchHandle {
    watched: Rc<RefCell<Watched>>,
    stop: Rc<std::cell::Cell<bool>>,
    task: actix_rt::task::JoinHandle<()>,
}

impl WatchHandle {
    /// What was seen so far.
    pub fn snapshot(&self) -> Watched {
        self.watched.borrow().clone()
    }

    /// Stops polling and returns what was seen.
    pub async fn finish(self) -> Watched {
        self.stop.set(true);
        let _ = self.task.await;
        self.watched.take()
    }
}

/// Polls `admin` every `every` until stopped or `max_duration` passes.
pub fn start(admin: SocketAddr, every: Duration, epoch: Instant, max: Duration) -> WatchHandle {
    let watched = Rc::new(RefCell::new(Watched::default()));
    let stop = Rc::new(std::cell::Cell::new(false));
    let (w, s) = (watched.clone(), stop.clone());
    let until = Instant::now() + max;
    let task = actix_rt::spawn(async move {
        let url = format!("http://{admin}/admin/backends");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !s.get() && Instant::now() < until {
            tick.tick().await;
            let at = epoch.elapsed();
            match call("GET", &url, Some(ADMIN_TOKEN), None).await {
                Ok((200, body)) => {
                    let list = body["backends"].as_array().cloned().unwrap_or_default();
                    w.borrow_mut().observe(at, &list);
                }
                _ => w.borrow_mut().failed_polls += 1,
            }
        }
    });
    WatchHandle { watched, stop, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Only changes are transitions; the first sight of a backend is not one.
    #[test]
    fn records_changes_only() {
        let mut w = Watched::default();
        let poll =
            |state: &str| vec![json!({"name": "reviews", "breaker": state, "actor_restarts": 0})];
        w.observe(Duration::from_millis(0), &poll("closed"));
        w.observe(Duration::from_millis(200), &poll("closed"));
        w.observe(Duration::from_millis(400), &poll("open"));
        w.observe(Duration::from_millis(600), &poll("closed"));
        let states: Vec<_> =
            w.transitions.iter().map(|t| (t.from.as_str(), t.to.as_str())).collect();
        assert_eq!(states, [("closed", "open"), ("open", "closed")]);
        assert_eq!(w.transitions[0].at, Duration::from_millis(400));
        assert_eq!(w.polls, 4);
    }
}
