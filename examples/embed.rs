//! Embedding mosaic as a library: validate a config file, start the gateway
//! in-process, print where it listens, stop on Ctrl-C.
//!
//! ```sh
//! cargo run --example embed -- config/demo.toml
//! ```
//! (Start the demo services first, e.g. `mosaic demo`, or point the file at
//! your own services.)

use std::process::ExitCode;

fn main() -> ExitCode {
    let path = std::env::args().nth(1).unwrap_or_else(|| "config/demo.toml".to_string());
    let mut config = match mosaic::config::load_file(path.as_ref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    // Port 0: let the OS pick, so the example never clashes with a running demo.
    config.server.listen.set_port(0);
    config.admin.listen.set_port(0);
    println!("{}", config.summary());
    let outcome = actix_rt::System::new().block_on(async move {
        let gateway = mosaic::gateway::start(config).await?;
        println!("gateway on http://{}  admin on http://{}", gateway.addr, gateway.admin_addr);
        for route in &gateway.gateway().runtime().routes {
            println!("  route {}", route.config.path);
        }
        mosaic::gateway::shutdown_signal().await;
        gateway.stop(true).await;
        Ok::<(), mosaic::gateway::StartError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
