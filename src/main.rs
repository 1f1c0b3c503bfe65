//! The `mosaic` command: `run`, `check`, `demo`, `demo-service`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use mosaic::demo::{Faults, Service};

#[derive(Parser)]
#[command(
    name = "mosaic",
    version,
    about = "An edge API gateway that composes pages from many services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        /// Config file.
        #[arg(long, short, default_value = "config/mosaic.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 with a summary, or 1 with every error.
    Check {
        /// Config file.
        #[arg(long, short, default_value = "config/mosaic.toml")]
        config: PathBuf,
    },
    /// Run one demo shop service (used by `mosaic demo` and the chaos tests).
    DemoService {
        /// catalog, pricing, reviews, cart, orders, inventory or recommendations.
        #[arg(long)]
        service: Service,
        /// Address to listen on; port 0 picks a free port (printed on start).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        faults: FaultArgs,
    },
}

/// Faults to start with; `PUT /_fault` changes them at run time.
#[derive(Args)]
struct FaultArgs {
    /// Delay before answering: "200ms", "2s".
    #[arg(long, value_parser = mosaic::demo::fault::parse_millis, default_value = "0ms")]
    latency: u64,
    /// The delay varies by up to this much either way.
    #[arg(long, value_parser = mosaic::demo::fault::parse_millis, default_value = "0ms")]
    jitter: u64,
    /// Fraction (0..1) of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Accept requests and never answer (until the client leaves; at most 10 min).
    #[arg(long)]
    hang: bool,
    /// Close every connection without a response.
    #[arg(long)]
    reset: bool,
    /// Fraction (0..1) of requests whose connection is closed without a response.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// Send the body in small chunks with this delay before each.
    #[arg(long, value_parser = mosaic::demo::fault::parse_millis, default_value = "0ms")]
    drip: u64,
    /// Chunk size for --drip.
    #[arg(long, default_value_t = mosaic::demo::fault::DEFAULT_DRIP_BYTES)]
    drip_bytes: usize,
    /// Answer 200 with HTML instead of JSON.
    #[arg(long)]
    non_json: bool,
}

impl FaultArgs {
    fn into_faults(self) -> Faults {
        Faults {
            latency_ms: self.latency,
            jitter_ms: self.jitter,
            error_rate: self.error_rate,
            hang: self.hang,
            reset: self.reset,
            reset_rate: self.reset_rate,
            drip_ms: self.drip,
            drip_bytes: self.drip_bytes,
            non_json: self.non_json,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let _ = config;
            ExitCode::FAILURE
        }
        Command::DemoService { service, listen, faults } => {
            demo_service(service, listen, faults.into_faults())
        }
    }
}

/// Binds first, so the printed address is the real one (port 0 included)
/// and a busy port is reported before any runtime starts.
fn demo_service(service: Service, listen: SocketAddr, faults: Faults) -> ExitCode {
    if let Err(errors) = faults.validate() {
        for e in errors {
            eprintln!("demo-service: {e}");
        }
        return ExitCode::FAILURE;
    }
    let listener = match std::net::TcpListener::bind(listen) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("demo service {service}: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bound = listener.local_addr().unwrap_or(listen);
    // `DemoServices` waits for this exact line; print it in one write and flush.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "demo service {service} listening on {bound}");
        let _ = out.flush();
    }
    match actix_rt::System::new().block_on(mosaic::demo::service::serve(service, listener, faults))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo service {service}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match mosaic::config::load_file(path) {
        Ok(_config) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.errors {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
