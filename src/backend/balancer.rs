//! A backend's instances and the round-robin choice between them.
//!
//! The list is swapped atomically (`ArcSwap`) when discovery reports a new
//! healthy set: calls in flight keep the instance they picked, new calls see
//! the new list, and readers never take a lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// One instance of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `host:port`.
    pub address: String,
}

impl Instance {
    /// An instance at `host:port`.
    pub fn new(address: &str) -> Self {
        Self { address: address.to_string() }
    }
}

/// The current instances and the round-robin cursor.
#[derive(Debug)]
pub struct Balancer {
    instances: ArcSwap<Vec<Instance>>,
    cursor: AtomicUsize,
}

impl Balancer {
    /// A balancer over `addresses`.
    pub fn new(addresses: &[String]) -> Self {
        let list = addresses.iter().map(|a| Instance::new(a)).collect();
        Self { instances: ArcSwap::from_pointee(list), cursor: AtomicUsize::new(0) }
    }

    /// Replaces the instance list.
    pub fn set(&self, addresses: &[String]) {
        let list: Vec<Instance> = addresses.iter().map(|a| Instance::new(a)).collect();
        self.instances.store(Arc::new(list));
    }

    /// The current list (a snapshot: it does not change under the caller).
    pub fn snapshot(&self) -> Arc<Vec<Instance>> {
        self.instances.load_full()
    }

    /// The next index to use in `list`, skipping `avoid` when there is a choice.
    pub fn pick(&self, list: &[Instance], avoid: Option<usize>) -> Option<usize> {
        if list.is_empty() {
            return None;
        }
        let mut index = self.cursor.fetch_add(1, Ordering::Relaxed) % list.len();
        if Some(index) == avoid && list.len() > 1 {
            index = (index + 1) % list.len();
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_and_avoid() {
        let b = Balancer::new(&["a:1".to_string(), "b:2".to_string()]);
        let list = b.snapshot();
        let first = b.pick(&list, None);
        let second = b.pick(&list, None);
        assert_ne!(first, second);
        for _ in 0..10 {
            assert_eq!(b.pick(&list, Some(0)), Some(1));
        }
        b.set(&[]);
        assert_eq!(b.pick(&b.snapshot(), None), None);
        assert!(b.pick(&list, None).is_some(), "old snapshot still usable");
    }
}
