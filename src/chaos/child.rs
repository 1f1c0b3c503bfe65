//! Lets any binary stand in for `mosaic` as a child of the experiment: the
//! two command lines the lab uses, `run --config FILE` and `demo-service
//! --service NAME --listen ADDR`, served from this library.
//!
//! Why: `cargo run --example chaos` builds the example but not the `mosaic`
//! binary, and a stale `target/release/mosaic` would silently test old code.
//! The example re-executes itself instead, so the gateway under test is
//! always built from the same source as the experiment.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::demo::{Faults, Service};

/// Handles `args` (without the program name) when they are one of the two
/// child command lines; `None` otherwise.
pub fn main_if_child(args: &[String]) -> Option<ExitCode> {
    let flag = |name: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str)
    };
    match args.first().map(String::as_str) {
        Some("run") => Some(run_gateway(flag("--config")?)),
        Some("demo-service") => {
            let service: Service = flag("--service")?.parse().ok()?;
            let listen: SocketAddr = flag("--listen").unwrap_or("127.0.0.1:0").parse().ok()?;
            Some(run_service(service, listen))
        }
        _ => None,
    }
}

fn run_gateway(path: &str) -> ExitCode {
    let config = match crate::config::load_file(std::path::Path::new(path)) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{path}: refusing to start:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = actix_rt::System::new().block_on(async move {
        let gateway = crate::gateway::start(config).await?;
        super::announce(gateway.addr, gateway.admin_addr);
        crate::gateway::shutdown_signal().await;
        gateway.stop(true).await;
        Ok::<(), crate::gateway::StartError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_service(service: Service, listen: SocketAddr) -> ExitCode {
    match crate::demo::service::run_standalone(service, listen, Faults::default()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
