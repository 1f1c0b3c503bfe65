//! This worker's idle keep-alive connections, per instance address.
//!
//! Each actix-web worker is one thread running one event loop, and a
//! section call runs on the worker that serves its page, so the pool is a
//! thread-local: no lock, no atomic, no thread hop. It is bounded: at most
//! [`MAX_IDLE_PER_ADDRESS`] idle connections per address, none kept longer
//! than [`KEEP_ALIVE`] idle or [`CONN_LIFETIME`] open (so backend restarts
//! and discovery changes are picked up), and expired ones are swept out
//! every [`SWEEP_EVERY`] even for addresses that are no longer called.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::wire::Conn;

/// Idle connections are closed after this long.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Connections are closed after this long open, busy or not.
pub const CONN_LIFETIME: Duration = Duration::from_secs(120);
/// Idle connections kept per address; more are closed on return.
pub const MAX_IDLE_PER_ADDRESS: usize = 256;
/// How often expired idle connections are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Idle {
    conn: Conn,
    opened_at: Instant,
    idle_since: Instant,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.idle_since) >= KEEP_ALIVE
            || now.duration_since(self.opened_at) >= CONN_LIFETIME
    }
}

struct Pool {
    idle: HashMap<Box<str>, Vec<Idle>>,
    last_sweep: Instant,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool { idle: HashMap::new(), last_sweep: Instant::now() });
}

/// A connection from the pool: the most recently used one (the likeliest
/// to still be open at the other end), with when it was opened.
pub fn checkout(address: &str) -> Option<(Conn, Instant)> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = Instant::now();
        let list = pool.idle.get_mut(address)?;
        while let Some(idle) = list.pop() {
            if !idle.expired(now) {
                return Some((idle.conn, idle.opened_at));
            }
        }
        None
    })
}

/// Returns a connection after a complete exchange.
pub fn checkin(address: &str, mut conn: Conn, opened_at: Instant) {
    conn.release_idle_buffers();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = Instant::now();
        if now.duration_since(pool.last_sweep) >= SWEEP_EVERY {
            pool.last_sweep = now;
            pool.idle.retain(|_, list| {
                list.retain(|idle| !idle.expired(now));
                !list.is_empty()
            });
        }
        let idle = Idle { conn, opened_at, idle_since: now };
        if idle.expired(now) {
            return;
        }
        match pool.idle.get_mut(address) {
            Some(list) if list.len() >= MAX_IDLE_PER_ADDRESS => {}
            Some(list) => list.push(idle),
            None => {
                pool.idle.insert(address.into(), vec![idle]);
            }
        }
    })
}

/// Idle connections this thread holds for `address`.
#[cfg(test)]
pub fn idle_count(address: &str) -> usize {
    POOL.with(|pool| pool.borrow().idle.get(address).map_or(0, Vec::len))
}

/// Read buffer capacity of each idle connection this thread holds for
/// `address`.
#[cfg(test)]
pub fn idle_read_capacities(address: &str) -> Vec<usize> {
    POOL.with(|pool| {
        pool.borrow()
            .idle
            .get(address)
            .map_or_else(Vec::new, |list| list.iter().map(|i| i.conn.read_buf.capacity()).collect())
    })
}
