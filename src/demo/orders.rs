//! Order histories for the orders service: generated from the user name,
//! so a user's history is the same after the service restarts.

use fastrand::Rng;
use serde_json::{json, Value};

use super::data::{date, money, pick, price_cents, product_name, rng};

/// A stable 64-bit hash of a user name (FNV-1a): the std hasher is seeded
/// per process, and order histories must survive a service restart.
fn user_seed(user: &str) -> u64 {
    user.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The products that appear in order histories. Small ids only, so the
/// demo's first pages (`/products/1`..`/products/200`) show some history.
const ORDERED_PRODUCTS: std::ops::RangeInclusive<u32> = 1..=200;

/// `GET /orders` of the orders service: the user's past orders, optionally
/// only those containing `product`. Anonymous users have no history.
pub fn orders(user: Option<&str>, product: Option<u32>) -> Value {
    let all: Vec<(Vec<u32>, Value)> = match user {
        None => Vec::new(),
        Some(user) => {
            let seed = user_seed(user);
            let mut rng = rng(9, seed);
            (0..rng.u32(2..=6)).map(|n| order(&mut rng, seed, n)).collect()
        }
    };
    let orders: Vec<Value> = all
        .into_iter()
        .filter(|(ids, _)| product.is_none_or(|p| ids.contains(&p)))
        .map(|(_, order)| order)
        .collect();
    json!({
        "user": user,
        "filter": { "product": product.map(|p| p.to_string()) },
        "count": orders.len(),
        "orders": orders,
    })
}

fn order(rng: &mut Rng, seed: u64, n: u32) -> (Vec<u32>, Value) {
    let ids: Vec<u32> = (0..rng.u32(1..=3)).map(|_| rng.u32(ORDERED_PRODUCTS)).collect();
    let mut total = 0;
    let lines: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let quantity = rng.u64(1..=2);
            total += quantity * price_cents(id);
            json!({
                "product_id": id.to_string(),
                "name": product_name(id),
                "quantity": quantity,
                "unit_price": money(price_cents(id)),
            })
        })
        .collect();
    let order = json!({
        "id": format!("ORD-{:08X}-{n}", seed as u32),
        "placed_at": date(rng),
        "status": pick(rng, &["delivered", "delivered", "delivered", "shipped", "processing"]),
        "items": lines,
        "total": money(total),
    });
    (ids, order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same user, same history; the filter keeps only orders with the product.
    #[test]
    fn history_per_user() {
        assert_eq!(orders(Some("alice"), None), orders(Some("alice"), None));
        assert_eq!(orders(None, None)["orders"], json!([]));
        let all = orders(Some("alice"), None);
        let first = all["orders"][0]["items"][0]["product_id"].as_str().unwrap_or("0");
        let id: u32 = first.parse().unwrap_or(0);
        let filtered = orders(Some("alice"), Some(id));
        assert!(filtered["count"].as_u64().unwrap_or(0) >= 1);
    }
}
