//! This worker's idle keep-alive connections, per instance address.
//!
//! Each actix-web worker is one thread running one event loop, and a
//! section call runs on the worker that serves its page, so the pool is a
//! thread-local: no lock, no atomic, no thread hop. It is bounded: at most
//! [`MAX_IDLE_PER_ADDRESS`] idle connections per address, none kept longer
//! than [`KEEP_ALIVE`] idle or [`CONN_LIFETIME`] open (so backend restarts
//! and discovery changes are picked up).
//!
//! Every [`SWEEP_EVERY`] a sweep closes expired connections, even for
//! addresses no longer called, and takes the read buffer from connections
//! idle for [`RELEASE_AFTER`]: a burst of pages can leave hundreds of
//! connections per service idle, each holding 8 KiB. On actix workers the
//! sweep runs on a timer, so it happens without traffic too; elsewhere (unit
//! tests) it runs when a connection is returned.

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
/// How often the pool is swept (expired connections, idle buffers).
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A connection idle this long gives its read buffer back at the next
/// sweep. Busy connections keep theirs: taking a fresh 8 KiB buffer for
/// every exchange showed in the allocator's slow paths under load.
pub const RELEASE_AFTER: Duration = Duration::from_secs(1);

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

/// The pool is looked up twice per backend call (check out, check in),
/// fourteen times per page: std's SipHash of an address cost ~190
/// instructions a lookup (callgrind), foldhash a fraction of that. The keys
/// are instance addresses from the config or Consul, not client input.
type IdleByAddress = HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>;

struct Pool {
    idle: IdleByAddress,
    last_sweep: Instant,
    /// Whether this thread runs the sweep on a timer.
    timed: bool,
}

impl Pool {
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.idle.retain(|_, list| {
            list.retain_mut(|idle| {
                if now.duration_since(idle.idle_since) >= RELEASE_AFTER {
                    idle.conn.release_idle_buffers();
                }
                !idle.expired(now)
            });
            !list.is_empty()
        });
    }
}

thread_local! {
    static POOL: RefCell<Pool> =
        RefCell::new(Pool { idle: IdleByAddress::default(), last_sweep: Instant::now(), timed: false });
}

/// Sweeps this thread's pool now (see the module doc).
pub fn sweep() {
    let _ = POOL.try_with(|pool| {
        if let Ok(mut pool) = pool.try_borrow_mut() {
            pool.sweep(Instant::now());
        }
    });
}

/// A connection from the pool: the most recently used one that is still
/// idle and open (checked with one non-blocking read, see
/// `Conn::is_idle_and_open`), with when it was opened. `now`:
/// the caller's reading of the clock (one read serves a whole exchange).
pub fn checkout(address: &str, now: Instant) -> Option<(Conn, Instant)> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.idle.get_mut(address)?;
        // Expired, closed by the service, or holding bytes nobody asked
        // for: closed (dropped) rather than used.
        while let Some(idle) = list.pop() {
            if !idle.expired(now) && idle.conn.is_idle_and_open() {
                return Some((idle.conn, idle.opened_at));
            }
        }
        None
    })
}

/// Returns a connection after a complete exchange (`now`: when it ended).
pub fn checkin(address: &str, mut conn: Conn, opened_at: Instant, now: Instant) {
    conn.shrink_write_buf();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if !pool.timed && actix_rt::Arbiter::try_current().is_some() {
            // An actix worker: sweep on a timer from now on, for as long as
            // the worker runs.
            pool.timed = true;
            actix_rt::spawn(async {
                let mut tick = tokio::time::interval(SWEEP_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    sweep();
                }
            });
        }
        if !pool.timed && now.duration_since(pool.last_sweep) >= SWEEP_EVERY {
            pool.sweep(now);
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

/// Sweeps this thread's pool as if it were `now`.
#[cfg(test)]
pub fn sweep_at(now: Instant) {
    POOL.with(|pool| pool.borrow_mut().sweep(now));
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
