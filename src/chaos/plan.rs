//! The schedule of faults: a seeded, printable plan, so a run can be
//! repeated exactly (`--seed`).
//!
//! Shape: a quiet warm-up (caches fill, breakers closed), then rounds, each
//! one fault on one or two optional services for a few seconds followed by
//! a quiet recovery gap, and a quiet cool-down at the end so the run can
//! check that everything healed by itself. `catalog` is never a victim: it
//! is the required section, and a page without its product is a 502 by
//! design (the tests cover that case on its own).

use std::fmt;
use std::time::Duration;

use crate::demo::Service;

/// Quiet time before the first round.
pub const WARM_UP: Duration = Duration::from_secs(3);
/// Quiet time after the last round.
pub const COOL_DOWN: Duration = Duration::from_secs(5);
/// The services a round may break (every optional section's): all but
/// `catalog`, which comes first in [`Service::ALL`].
pub const VICTIMS: &[Service] = match Service::ALL.split_first() {
    Some((Service::Catalog, optional)) => optional,
    _ => panic!("catalog is the first service"),
};

/// What a round does to its victims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then restart on the same port.
    Kill,
    /// `{"hang": true}`: accept and never answer.
    Hang,
    /// `{"latency_ms": 150, "jitter_ms": 120}`: sometimes past the deadline.
    Slow,
    /// `{"error_rate": 1.0}`: every answer a 503.
    Errors,
    /// Panic the gateway's backend actor (the admin hook); instantaneous.
    Crash,
    /// Cut the gateway's connection to RabbitMQ (labs with a broker only;
    /// its victim is the AMQP inventory, whose section it breaks).
    BrokerCut,
}

impl Fault {
    /// The `PUT /_fault` body, for the faults injected that way.
    pub fn settings(self) -> Option<serde_json::Value> {
        match self {
            Fault::Hang => Some(serde_json::json!({ "hang": true })),
            Fault::Slow => Some(serde_json::json!({ "latency_ms": 150, "jitter_ms": 120 })),
            Fault::Errors => Some(serde_json::json!({ "error_rate": 1.0 })),
            Fault::Kill | Fault::Crash | Fault::BrokerCut => None,
        }
    }

    /// Short name for the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Hang => "hang",
            Fault::Slow => "slow",
            Fault::Errors => "5xx",
            Fault::Crash => "crash",
            Fault::BrokerCut => "broker-cut",
        }
    }
}

/// One round of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// When the fault starts, since the epoch.
    pub start: Duration,
    /// How long it lasts (zero for a crash).
    pub length: Duration,
    /// The fault.
    pub fault: Fault,
    /// Its victims (one or two).
    pub services: Vec<Service>,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.services.iter().map(|s| s.name()).collect();
        write!(
            f,
            "{:>5.1}s  {:<5} {:<28} for {:.1}s",
            self.start.as_secs_f64(),
            self.fault.name(),
            names.join("+"),
            self.length.as_secs_f64()
        )
    }
}

/// The plan for a run of `duration` with `seed`: the same inputs always
/// give the same rounds.
pub fn plan(seed: u64, duration: Duration) -> Vec<Round> {
    plan_with(seed, duration, false)
}

/// [`plan`]; with `broker`, also rounds that cut the gateway's broker
/// connection (about one in five, drawn after the others so that a seed's
/// other rounds stay as [`plan`] draws them where it can).
pub fn plan_with(seed: u64, duration: Duration, broker: bool) -> Vec<Round> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut broker_rng = fastrand::Rng::with_seed(seed ^ 0x000b_40ce_7c07);
    let mut rounds = Vec::new();
    let mut at = WARM_UP;
    // Bounded by time and, for safety, by count.
    while rounds.len() < 1000 {
        let fault = match rng.u32(0..100) {
            0..=39 => Fault::Kill,
            40..=54 => Fault::Hang,
            55..=69 => Fault::Slow,
            70..=84 => Fault::Errors,
            _ => Fault::Crash,
        };
        let length = match fault {
            Fault::Crash => Duration::ZERO,
            _ => Duration::from_millis(rng.u64(2_000..=4_000)),
        };
        let recovery = Duration::from_millis(rng.u64(3_000..=4_500));
        if at + length + recovery + COOL_DOWN > duration {
            break;
        }
        let first = VICTIMS[rng.usize(..VICTIMS.len())];
        if broker && broker_rng.u32(0..5) == 0 {
            // In place of the round drawn above (a crash one lasts 2 s).
            let length = length.max(Duration::from_secs(2));
            if at + length + recovery + COOL_DOWN > duration {
                break;
            }
            let services = vec![Service::Inventory];
            rounds.push(Round { start: at, length, fault: Fault::BrokerCut, services });
            at += length + recovery;
            continue;
        }
        let mut services = vec![first];
        // Now and then two services die together.
        if fault == Fault::Kill && rng.u32(0..4) == 0 {
            let second = VICTIMS[rng.usize(..VICTIMS.len())];
            if second != first {
                services.push(second);
            }
        }
        rounds.push(Round { start: at, length, fault, services });
        at += length + recovery;
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same seed, same plan; rounds fit the run with quiet ends; never catalog.
    #[test]
    fn seeded_and_bounded() {
        let duration = Duration::from_secs(60);
        let a = plan(7, duration);
        assert_eq!(a, plan(7, duration));
        assert!(a.len() >= 5, "{a:?}");
        assert_ne!(a, plan(8, duration));
        for round in &a {
            assert!(round.start >= WARM_UP);
            assert!(round.start + round.length + COOL_DOWN <= duration);
            assert!(!round.services.contains(&Service::Catalog));
        }
        assert!(plan(1, Duration::from_secs(5)).is_empty());
        assert!(a.iter().all(|r| r.fault != Fault::BrokerCut), "no broker, no cut");
        let with_broker = plan_with(7, Duration::from_secs(120), true);
        assert_eq!(with_broker, plan_with(7, Duration::from_secs(120), true));
        let cuts: Vec<_> = with_broker.iter().filter(|r| r.fault == Fault::BrokerCut).collect();
        assert!(!cuts.is_empty(), "{with_broker:?}");
        assert!(cuts.iter().all(|r| r.services == [Service::Inventory] && !r.length.is_zero()));
    }
}
