//! The cart service's store: one cart per user, in memory, bounded.
//!
//! Bounded so that a load test with random `Authorization` headers cannot
//! grow the demo without limit: at most [`MAX_USERS`] carts (the cart touched
//! longest ago is dropped to make room) and [`MAX_ITEMS`] distinct products
//! per cart (one more is refused).

use std::collections::HashMap;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::data::{product_summary, CURRENCY};

/// Carts kept at once.
pub const MAX_USERS: usize = 10_000;
/// Distinct products per cart.
pub const MAX_ITEMS: usize = 100;
/// Units of one product per cart line.
pub const MAX_QUANTITY: u32 = 99;

/// One cart line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CartLine {
    /// The product, a valid product id.
    pub product_id: u32,
    /// Units, `1..=MAX_QUANTITY`.
    pub quantity: u32,
}

/// Why a cart change was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum CartError {
    /// The cart already holds `MAX_ITEMS` distinct products.
    Full,
    /// The product is not in the cart.
    NotInCart,
}

struct Cart {
    lines: Vec<CartLine>,
    /// Value of the store's clock at the last change: the eviction order.
    touched: u64,
}

/// All carts. A `parking_lot::Mutex` because nothing awaits while it is held
/// and the service runs on one worker anyway.
#[derive(Default)]
pub struct CartStore {
    inner: Mutex<Carts>,
}

#[derive(Default)]
struct Carts {
    by_user: HashMap<String, Cart>,
    clock: u64,
}

impl CartStore {
    /// The user's cart lines (empty for a user without a cart).
    pub fn lines(&self, user: &str) -> Vec<CartLine> {
        self.inner.lock().by_user.get(user).map(|c| c.lines.clone()).unwrap_or_default()
    }

    /// Adds `quantity` units (capped at `MAX_QUANTITY` per line).
    pub fn add(&self, user: &str, line: CartLine) -> Result<Vec<CartLine>, CartError> {
        let mut carts = self.inner.lock();
        carts.clock += 1;
        let now = carts.clock;
        if !carts.by_user.contains_key(user) && carts.by_user.len() >= MAX_USERS {
            // O(n) scan, only when full: cheaper than keeping an LRU list for a demo.
            let oldest =
                carts.by_user.iter().min_by_key(|(_, cart)| cart.touched).map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                carts.by_user.remove(&oldest);
            }
        }
        let cart = carts
            .by_user
            .entry(user.to_owned())
            .or_insert(Cart { lines: Vec::new(), touched: now });
        cart.touched = now;
        let full = cart.lines.len() >= MAX_ITEMS;
        match cart.lines.iter_mut().find(|l| l.product_id == line.product_id) {
            Some(existing) => {
                existing.quantity = (existing.quantity + line.quantity).min(MAX_QUANTITY);
            }
            None if full => return Err(CartError::Full),
            None => cart.lines.push(line),
        }
        Ok(cart.lines.clone())
    }

    /// Removes the product's line.
    pub fn remove(&self, user: &str, product_id: u32) -> Result<Vec<CartLine>, CartError> {
        let mut carts = self.inner.lock();
        let cart = carts.by_user.get_mut(user).ok_or(CartError::NotInCart)?;
        let before = cart.lines.len();
        cart.lines.retain(|l| l.product_id != product_id);
        if cart.lines.len() == before {
            return Err(CartError::NotInCart);
        }
        Ok(cart.lines.clone())
    }

    /// Number of carts held.
    pub fn users(&self) -> usize {
        self.inner.lock().by_user.len()
    }
}

/// The cart as JSON: lines with product name and price, counts, subtotal.
pub fn cart_json(user: &str, lines: &[CartLine]) -> Value {
    let mut subtotal = 0u64;
    let items: Vec<Value> = lines.iter().map(|line| line_json(line, &mut subtotal)).collect();
    json!({
        "user": user,
        "items": items,
        "item_count": lines.iter().map(|l| u64::from(l.quantity)).sum::<u64>(),
        "subtotal": { "amount": subtotal, "currency": CURRENCY },
    })
}

/// `GET /cart/items`: the lines only.
pub fn items_json(lines: &[CartLine]) -> Value {
    let mut subtotal = 0u64;
    let items: Vec<Value> = lines.iter().map(|line| line_json(line, &mut subtotal)).collect();
    json!({ "items": items })
}

fn line_json(line: &CartLine, subtotal: &mut u64) -> Value {
    let mut entry = product_summary(line.product_id);
    let unit = entry["price"]["amount"].as_u64().unwrap_or(0);
    let total = unit * u64::from(line.quantity);
    *subtotal += total;
    entry["product_id"] = json!(line.product_id.to_string());
    entry["quantity"] = json!(line.quantity);
    entry["line_total"] = json!({ "amount": total, "currency": CURRENCY });
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: u32, quantity: u32) -> CartLine {
        CartLine { product_id, quantity }
    }

    /// Adding the same product twice merges lines; carts are per user.
    #[test]
    fn per_user_lines() {
        let store = CartStore::default();
        store.add("alice", line(1, 1)).ok();
        store.add("alice", line(1, 2)).ok();
        store.add("bob", line(2, 1)).ok();
        assert_eq!(store.lines("alice"), vec![line(1, 3)]);
        assert_eq!(store.lines("bob"), vec![line(2, 1)]);
        assert_eq!(store.remove("bob", 3), Err(CartError::NotInCart));
        assert_eq!(store.remove("bob", 2), Ok(vec![]));
    }

    /// A cart holds at most MAX_ITEMS products; the store at most MAX_USERS carts.
    #[test]
    fn bounded() {
        let store = CartStore::default();
        for id in 1..=MAX_ITEMS as u32 {
            assert!(store.add("alice", line(id, 1)).is_ok());
        }
        assert_eq!(store.add("alice", line(5000, 1)), Err(CartError::Full));
        for n in 0..MAX_USERS {
            store.add(&format!("user{n}"), line(1, 1)).ok();
        }
        assert_eq!(store.users(), MAX_USERS);
        // alice was touched first, so she made room for the others.
        assert!(store.lines("alice").is_empty());
    }
}
