//! `Config::summary`: what `mosaic check` prints for a valid file.

use std::fmt::Write as _;

use super::model::{Config, InstanceSource};
use super::units::format_duration;

impl Config {
    /// A few lines for operators: listeners, backends with their instance
    /// source, routes with their sections, proxies.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let token = if self.admin.token.is_some() { "token set" } else { "no token" };
        let _ = writeln!(
            out,
            "listen {} ({}), admin {} ({token})",
            self.server.listen,
            plural(self.server.workers, "worker"),
            self.admin.listen
        );
        if let Some(redis) = &self.redis {
            let shared =
                self.backends.values().filter(|b| b.cache.is_some_and(|c| c.shared)).count();
            let _ = writeln!(
                out,
                "shared cache: redis {} (prefix {:?}, timeout {}) for {}",
                redis.address,
                redis.prefix,
                format_duration(redis.timeout),
                plural(shared, "cached backend")
            );
        }
        let _ = writeln!(out, "{}", heading(self.backends.len(), "backend"));
        for backend in self.backends.values() {
            let source = match (&backend.amqp, &backend.instances) {
                (Some(target), _) => {
                    let exchange =
                        if target.exchange.is_empty() { "(default)" } else { &target.exchange };
                    let broker = self.amqp.as_ref().map_or("", |a| a.broker.as_str());
                    let kind = if target.reply { "request/reply" } else { "one-way" };
                    format!(
                        "amqp {kind} exchange {exchange} routing key {:?} via {broker}",
                        target.routing_key
                    )
                }
                (None, instances) => match instances {
                    InstanceSource::Static(list) => format!("static {}", list.join(", ")),
                    InstanceSource::Consul { service, tag: Some(tag) } => {
                        format!("consul service {service:?} tag {tag:?}")
                    }
                    InstanceSource::Consul { service, tag: None } => {
                        format!("consul service {service:?}")
                    }
                },
            };
            let _ = writeln!(out, "  {:<18} {source}", backend.name);
        }
        let _ = writeln!(out, "{}", heading(self.routes.len(), "route"));
        for route in &self.routes {
            let required = route.sections.iter().filter(|s| s.required).count();
            let _ = writeln!(
                out,
                "  {:<18} {} ({required} required), deadline {}",
                route.path,
                plural(route.sections.len(), "section"),
                format_duration(route.deadline)
            );
        }
        let _ = write!(out, "{}", heading(self.proxies.len(), "proxy"));
        for proxy in &self.proxies {
            let rewrite = proxy.rewrite.as_deref().map(|r| format!(" (rewrite {r})"));
            let _ = write!(
                out,
                "\n  {:<18} -> {}{}",
                proxy.prefix,
                proxy.backend,
                rewrite.unwrap_or_default()
            );
        }
        out
    }
}

/// `2 backends:` before a list, `0 backends` alone.
fn heading(n: usize, noun: &str) -> String {
    let colon = if n == 0 { "" } else { ":" };
    format!("{}{colon}", plural(n, noun))
}

fn plural(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "proxy") => format!("{n} proxies"),
        _ => format!("{n} {noun}s"),
    }
}
