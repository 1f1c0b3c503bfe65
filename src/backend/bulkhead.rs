//! The bulkhead: a cap on calls in flight to one backend, shared by all
//! workers. A call over the cap is rejected at once rather than queued, so a
//! slow backend cannot pile up requests (and memory) in the gateway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts calls in flight against `max_in_flight`.
#[derive(Debug)]
pub struct Bulkhead {
    in_flight: AtomicUsize,
    max_in_flight: usize,
}

/// A slot in the bulkhead, released on drop. It owns its bulkhead, so it can
/// outlive the request handler (a streamed proxy body holds it to the end).
#[derive(Debug)]
pub struct BulkheadSlot {
    bulkhead: Arc<Bulkhead>,
}

impl Bulkhead {
    /// A bulkhead admitting up to `max_in_flight` calls at once.
    pub fn new(max_in_flight: usize) -> Arc<Self> {
        Arc::new(Self { in_flight: AtomicUsize::new(0), max_in_flight })
    }

    /// Takes a slot, or `None` when full.
    pub fn try_enter(self: &Arc<Self>) -> Option<BulkheadSlot> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= self.max_in_flight {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(BulkheadSlot { bulkhead: self.clone() }),
                Err(seen) => current = seen,
            }
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for BulkheadSlot {
    fn drop(&mut self) {
        self.bulkhead.in_flight.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_over_the_cap_and_frees_on_drop() {
        let bulkhead = Bulkhead::new(2);
        let a = bulkhead.try_enter();
        let b = bulkhead.try_enter();
        assert!(a.is_some() && b.is_some());
        assert!(bulkhead.try_enter().is_none());
        drop(a);
        assert_eq!(bulkhead.in_flight(), 1);
        assert!(bulkhead.try_enter().is_some());
    }
}
