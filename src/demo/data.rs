//! The demo shop's data: products, prices, reviews, stock and
//! recommendations (order histories: [`super::orders`]), all generated on the fly from the product id (or the
//! user name), so every service agrees on product 42 without sharing a
//! database, and the same request always gets the same answer.
//!
//! Every generator seeds its own `fastrand::Rng` from the id and a per-kind
//! salt: the price of product 42 does not depend on whether its reviews were
//! generated first.

use fastrand::Rng;
use serde_json::{json, Value};

/// Product ids that exist: `1..=MAX_PRODUCT_ID`; anything else is a 404.
pub const MAX_PRODUCT_ID: u32 = 100_000;

/// The only currency the demo shop sells in.
pub const CURRENCY: &str = "EUR";

/// Parses a product id as the services accept it: canonical decimal digits
/// (no sign, no leading zero) in `1..=MAX_PRODUCT_ID`. `042` is not product
/// 42: one product, one URL, so caches keyed by path never hold two copies.
pub fn parse_product_id(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 6 || text.starts_with('0') {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let id: u32 = text.parse().ok()?;
    (1..=MAX_PRODUCT_ID).contains(&id).then_some(id)
}

/// A category: its name, its parent department and the kinds of things in it.
struct Category {
    name: &'static str,
    department: &'static str,
    kinds: &'static [&'static str],
    /// Typical price range in whole euros.
    euros: (u32, u32),
}

const CATEGORIES: &[Category] = &[
    Category {
        name: "Running shoes",
        department: "Sports",
        kinds: &["Trail Running Shoe", "Road Runner", "Racing Flat"],
        euros: (60, 180),
    },
    Category {
        name: "Headphones",
        department: "Electronics",
        kinds: &["Wireless Headphones", "Earbuds", "Studio Headphones"],
        euros: (30, 350),
    },
    Category {
        name: "Coffee",
        department: "Kitchen",
        kinds: &["Espresso Machine", "Pour-Over Kettle", "Burr Grinder"],
        euros: (25, 600),
    },
    Category {
        name: "Backpacks",
        department: "Outdoor",
        kinds: &["Daypack", "Hiking Backpack", "Commuter Bag"],
        euros: (35, 220),
    },
    Category {
        name: "Lighting",
        department: "Home",
        kinds: &["LED Desk Lamp", "Architect Lamp", "Floor Lamp"],
        euros: (20, 240),
    },
    Category {
        name: "Watches",
        department: "Accessories",
        kinds: &["Field Watch", "Chronograph", "Dive Watch"],
        euros: (80, 900),
    },
    Category {
        name: "Keyboards",
        department: "Electronics",
        kinds: &["Mechanical Keyboard", "Low-Profile Keyboard", "Split Keyboard"],
        euros: (40, 260),
    },
    Category {
        name: "Cookware",
        department: "Kitchen",
        kinds: &["Cast Iron Skillet", "Saucepan", "Dutch Oven"],
        euros: (25, 320),
    },
];

const ADJECTIVES: &[&str] = &[
    "Alpine", "Urban", "Classic", "Pro", "Aero", "Summit", "Coastal", "Nordic", "Studio",
    "Everyday", "Compact", "Heritage",
];
const BRANDS: &[&str] =
    &["Nordkapp", "Helix", "Bramble & Co", "Vantor", "Kestrel", "Lumio", "Oakridge", "Tessera"];
const COLORS: &[&str] = &["Slate", "Sand", "Forest", "Midnight", "Coral", "Graphite", "Ivory"];
const MATERIALS: &[&str] =
    &["recycled polyester", "aluminium", "walnut", "stainless steel", "organic cotton", "ABS"];
const AUTHORS: &[&str] = &[
    "Anna K.",
    "Ben T.",
    "Chiara M.",
    "Dmitri P.",
    "Elif S.",
    "Finn O.",
    "Greta L.",
    "Hugo R.",
    "Ines V.",
    "Jonas W.",
    "Kaito N.",
    "Lena B.",
];
const OPINIONS: &[(&str, &str)] = &[
    ("Exactly what I needed", "Does the job every day without fuss. Would buy again."),
    ("Great value", "Feels more expensive than it is. Arrived quickly and well packed."),
    ("Good, not perfect", "Solid overall, but the finish could be better for the price."),
    ("Disappointed", "Stopped working properly after a few weeks; support was helpful though."),
    ("Love it", "Beautiful design and it fits perfectly into my routine."),
    ("Decent", "Nothing special, nothing wrong. Does what the description says."),
];
const WAREHOUSES: &[(&str, &str)] =
    &[("BER-1", "Berlin"), ("AMS-2", "Amsterdam"), ("MIL-1", "Milan"), ("WAW-3", "Warsaw")];

/// A generator for one kind of data about one subject.
pub(super) fn rng(salt: u64, subject: u64) -> Rng {
    Rng::with_seed(subject.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

pub(super) fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

/// A date in 2024–2025 as `YYYY-MM-DD`; day ≤ 28 so every month is valid.
pub(super) fn date(rng: &mut Rng) -> String {
    format!("{}-{:02}-{:02}", rng.u32(2024..=2025), rng.u32(1..=12), rng.u32(1..=28))
}

pub(super) fn money(cents: u64) -> Value {
    json!({ "amount": cents, "currency": CURRENCY })
}

fn category(id: u32) -> &'static Category {
    let mut rng = rng(1, u64::from(id));
    &CATEGORIES[rng.usize(..CATEGORIES.len())]
}

/// The product's display name, e.g. "Nordic Espresso Machine".
pub fn product_name(id: u32) -> String {
    let cat = category(id);
    let mut rng = rng(2, u64::from(id));
    format!("{} {}", pick(&mut rng, ADJECTIVES), pick(&mut rng, cat.kinds))
}

/// The price actually charged, in cents, after any discount.
pub fn price_cents(id: u32) -> u64 {
    let (list, discount) = list_price_and_discount(id);
    list - list * u64::from(discount) / 100
}

/// List price in cents (ending in 99) and discount percent (0 when none).
fn list_price_and_discount(id: u32) -> (u64, u32) {
    let cat = category(id);
    let mut rng = rng(3, u64::from(id));
    let euros = u64::from(rng.u32(cat.euros.0..=cat.euros.1));
    let discount = if rng.u8(..10) < 3 { pick(&mut rng, &[10, 15, 20, 25]) } else { 0 };
    (euros * 100 + 99, discount)
}

/// `GET /products/{id}` of the catalog service.
pub fn product(id: u32) -> Value {
    let cat = category(id);
    let name = product_name(id);
    let mut rng = rng(4, u64::from(id));
    let brand = pick(&mut rng, BRANDS);
    let color = pick(&mut rng, COLORS);
    let material = pick(&mut rng, MATERIALS);
    let images: Vec<Value> = (1..=rng.u32(2..=4))
        .map(|n| {
            json!({
                "url": format!("https://img.mosaic-demo.invalid/products/{id}/{n}.jpg"),
                "alt": format!("{name}, view {n}"),
                "width": 1200,
                "height": 1200,
            })
        })
        .collect();
    json!({
        "id": id.to_string(),
        "sku": format!("MOS-{id:06}"),
        "name": name,
        "brand": brand,
        "category": { "name": cat.name, "path": [cat.department, cat.name] },
        "description": format!(
            "The {name} by {brand} is made of {material} and built to last. \
             Designed in Europe, tested for everyday use, and backed by a two-year warranty. \
             Available in {color}."
        ),
        "images": images,
        "attributes": {
            "color": color,
            "material": material,
            "weight_g": rng.u32(120..=4000),
            "dimensions_cm": { "width": rng.u32(5..=60), "height": rng.u32(5..=60), "depth": rng.u32(2..=40) },
            "warranty_years": 2,
        },
        "tags": [cat.department.to_lowercase(), color.to_lowercase(), brand.to_lowercase()],
        "created_at": date(&mut rng),
    })
}

/// `GET /prices/{id}` of the pricing service.
pub fn price(id: u32) -> Value {
    let (list, percent) = list_price_and_discount(id);
    let discount = (percent > 0).then(|| {
        let mut rng = rng(5, u64::from(id));
        json!({
            "percent": percent,
            "original_amount": list,
            "label": format!("-{percent}%"),
            "ends_at": date(&mut rng),
        })
    });
    let amount = price_cents(id);
    json!({
        "id": id.to_string(),
        "amount": amount,
        "currency": CURRENCY,
        "formatted": format!("{},{:02} €", amount / 100, amount % 100),
        "discount": discount,
        // EU price-indication rules: show the lowest price of the last 30 days.
        "lowest_30_days": money(amount.min(list)),
        "vat_included": true,
        "vat_rate": 0.19,
        "tiers": [
            { "min_quantity": 1, "amount": amount },
            { "min_quantity": 3, "amount": amount * 95 / 100 },
        ],
    })
}

/// `GET /reviews/{id}` of the reviews service: a summary and ten reviews.
pub fn reviews(id: u32) -> Value {
    let mut rng = rng(6, u64::from(id));
    // Skewed towards good ratings, as real shops are.
    let distribution: Vec<u64> =
        [5u64, 4, 3, 2, 1].iter().map(|stars| rng.u64(0..=stars * stars * 20) + 1).collect();
    let count: u64 = distribution.iter().sum();
    let weighted: u64 = distribution.iter().zip([5u64, 4, 3, 2, 1]).map(|(n, s)| n * s).sum();
    let average = (weighted as f64 / count as f64 * 10.0).round() / 10.0;
    let reviews: Vec<Value> = (0..10u64)
        .map(|n| {
            let rating = pick(&mut rng, &[5, 5, 5, 4, 4, 4, 3, 2, 1]);
            let (title, body) = OPINIONS[match rating {
                5 => pick(&mut rng, &[0, 4]),
                4 => pick(&mut rng, &[1, 5]),
                3 => 2,
                _ => 3,
            }];
            json!({
                "id": format!("r-{id}-{n}"),
                "author": pick(&mut rng, AUTHORS),
                "rating": rating,
                "title": title,
                "body": body,
                "date": date(&mut rng),
                "verified_purchase": rng.bool(),
                "helpful_votes": rng.u32(0..=40),
            })
        })
        .collect();
    json!({
        "product_id": id.to_string(),
        "summary": {
            "average": average,
            "count": count,
            "distribution": {
                "5": distribution[0], "4": distribution[1], "3": distribution[2],
                "2": distribution[3], "1": distribution[4],
            },
        },
        "reviews": reviews,
        "next_page": format!("/reviews/{id}?page=2"),
    })
}

/// `GET /inventory/{id}` of the inventory service: stock and shipping.
pub fn inventory(id: u32) -> Value {
    let mut rng = rng(7, u64::from(id));
    let warehouses: Vec<Value> = WAREHOUSES
        .iter()
        .map(|(code, city)| {
            // One warehouse in three is out of this product.
            let available = if rng.u8(..3) == 0 { 0 } else { rng.u32(1..=60) };
            json!({ "id": code, "city": city, "available": available, "reserved": rng.u32(0..=3) })
        })
        .collect();
    let total: u64 = warehouses.iter().filter_map(|w| w["available"].as_u64()).sum();
    let status = match total {
        0 => "out_of_stock",
        1..=10 => "low_stock",
        _ => "in_stock",
    };
    let min_days = if total == 0 { 10 } else { rng.u32(1..=3) };
    json!({
        "product_id": id.to_string(),
        "status": status,
        "total_available": total,
        "warehouses": warehouses,
        "shipping": {
            "carrier": pick(&mut rng, &["DHL", "DPD", "GLS", "UPS"]),
            "estimate_days": { "min": min_days, "max": min_days + rng.u32(1..=3) },
            "cost": money(495),
            "free_over": money(5000),
        },
    })
}

/// A product as a list entry: recommendations, cart lines, order lines.
pub fn product_summary(id: u32) -> Value {
    json!({
        "id": id.to_string(),
        "name": product_name(id),
        "price": money(price_cents(id)),
        "image": format!("https://img.mosaic-demo.invalid/products/{id}/1.jpg"),
        "url": format!("/products/{id}"),
    })
}

/// `GET /recommendations/{id}`: eight other products, never the product itself.
pub fn recommendations(id: u32) -> Value {
    let mut rng = rng(8, u64::from(id));
    let items: Vec<Value> = (0..8)
        .map(|_| {
            let mut other = rng.u32(1..=MAX_PRODUCT_ID);
            if other == id {
                other = other % MAX_PRODUCT_ID + 1;
            }
            let mut entry = product_summary(other);
            entry["score"] = json!((rng.f64() * 100.0).round() / 100.0);
            entry
        })
        .collect();
    json!({ "product_id": id.to_string(), "strategy": "also_viewed", "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only canonical ids in range exist; the services 404 everything else.
    #[test]
    fn product_ids() {
        assert_eq!(parse_product_id("42"), Some(42));
        assert_eq!(parse_product_id("100000"), Some(100_000));
        for bad in ["", "0", "042", "100001", "-1", "+1", "4a", "1e3", "9999999"] {
            assert_eq!(parse_product_id(bad), None, "{bad:?}");
        }
    }

    /// Same id, same data: caches and tests can rely on it.
    #[test]
    fn deterministic() {
        assert_eq!(product(42), product(42));
        assert_eq!(price(42)["amount"].as_u64(), Some(price_cents(42)));
    }

    /// Recommendations never include the product itself.
    #[test]
    fn recommendations_exclude_self() {
        for id in 1..200 {
            let recs = recommendations(id);
            let items = recs["items"].as_array().map(Vec::len);
            assert_eq!(items, Some(8));
            assert!(recs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|i| i["id"].as_str().and_then(|s| s.parse::<u32>().ok()) != Some(id)));
        }
    }
}
