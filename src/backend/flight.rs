//! Shared calls: concurrent requests for the same cold cache key make one
//! call to the service and all take its answer (request coalescing).
//!
//! The call runs in its own task so that it finishes (and fills the cache)
//! even if the request that started it goes away. Waiters on any worker get
//! the result through a `watch` channel. The map is bounded: past `capacity`
//! distinct keys in flight, calls are simply not shared.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::answer::Fetched;
use super::cache::CacheKey;
use super::error::FetchError;

/// The outcome every waiter of a shared call receives.
pub type CallResult = Result<Fetched, FetchError>;

type Slot = watch::Receiver<Option<CallResult>>;

/// Calls in flight, by cache key.
#[derive(Debug)]
pub struct Flights {
    in_flight: Mutex<HashMap<CacheKey, Slot>>,
    capacity: usize,
}

/// What a caller does for a key.
pub enum Role {
    /// Start the call, then publish it through the sender (see [`FlightLead`]).
    Lead(FlightLead),
    /// Wait for the call someone else started.
    Follow(Slot),
    /// Too many distinct calls in flight: call alone.
    Alone,
}

/// The duty of the caller who starts a shared call. Dropping it without
/// publishing (a panic) still removes the key, and waiters see an error.
pub struct FlightLead {
    flights: Arc<Flights>,
    key: CacheKey,
    sender: watch::Sender<Option<CallResult>>,
    receiver: Slot,
}

impl Flights {
    /// A table of at most `capacity` shared calls.
    pub fn new(capacity: usize) -> Self {
        Self { in_flight: Mutex::new(HashMap::new()), capacity }
    }

    /// Joins the call for `key`, or becomes its leader.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Role {
        let mut map = self.in_flight.lock();
        if let Some(slot) = map.get(key) {
            return Role::Follow(slot.clone());
        }
        if map.len() >= self.capacity {
            return Role::Alone;
        }
        let (sender, receiver) = watch::channel(None);
        map.insert(key.clone(), receiver.clone());
        Role::Lead(FlightLead { flights: self.clone(), key: key.clone(), sender, receiver })
    }

    /// Keys in flight now.
    pub fn len(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// True when no shared call is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FlightLead {
    /// A receiver for the leader itself.
    pub fn subscribe(&self) -> Slot {
        self.receiver.clone()
    }

    /// Publishes the outcome to every waiter and retires the key.
    pub fn publish(self, result: CallResult) {
        let _ = self.sender.send(Some(result));
        // Drop removes the key.
    }
}

impl Drop for FlightLead {
    fn drop(&mut self) {
        self.flights.in_flight.lock().remove(&self.key);
    }
}

/// Waits for a shared call's outcome. A leader that vanished without
/// publishing (it panicked) is reported as `internal`.
pub async fn wait(mut slot: Slot) -> CallResult {
    match slot.wait_for(|v| v.is_some()).await {
        Ok(value) => value.clone().unwrap_or(Err(FetchError::Internal)),
        Err(_) => Err(FetchError::Internal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn followers_get_the_leaders_result_and_key_is_retired() {
        let flights = Arc::new(Flights::new(8));
        let key: CacheKey = Arc::from(&b"k"[..]);
        let Role::Lead(lead) = flights.join(&key) else { panic!("first caller leads") };
        let Role::Follow(slot) = flights.join(&key) else { panic!("second caller follows") };
        let waiter = tokio::spawn(wait(slot));
        lead.publish(Ok(Fetched { status: 200, body: Bytes::from_static(b"{}") }));
        let got = waiter.await.expect("join");
        assert_eq!(got.map(|f| f.status), Ok(200));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn vanished_leader_gives_internal_and_frees_key() {
        let flights = Arc::new(Flights::new(8));
        let key: CacheKey = Arc::from(&b"k"[..]);
        let Role::Lead(lead) = flights.join(&key) else { panic!("leads") };
        let Role::Follow(slot) = flights.join(&key) else { panic!("follows") };
        drop(lead);
        assert_eq!(wait(slot).await, Err(FetchError::Internal));
        assert!(flights.is_empty());
    }

    #[test]
    fn bounded() {
        let flights = Arc::new(Flights::new(1));
        let _lead = flights.join(&Arc::from(&b"a"[..]));
        assert!(matches!(flights.join(&Arc::from(&b"b"[..])), Role::Alone));
    }
}
