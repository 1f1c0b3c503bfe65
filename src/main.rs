//! The `mosaic` command: `run`, `check`, `demo`, `demo-service`.
//! Thin on purpose: parse flags, call the library, map errors to exit codes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mosaic", version, about = "An edge API gateway that composes pages from many services")]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).try_init();
}

fn check(path: &Path) -> ExitCode {
    match mosaic::config::load_file(path) {
        Ok(config) => {
            let _ = config; // summary() lands with the config parser
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

fn run(path: &Path) -> ExitCode {
    init_logging();
    let config = match mosaic::config::load_file(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}: refusing to start:", path.display());
            for e in &errors.errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let system = actix_rt::System::new();
    let outcome = system.block_on(async move {
        let gateway = mosaic::edge::start(config).await?;
        tracing::info!(edge = %gateway.addr, admin = %gateway.admin_addr, "serving; SIGTERM or Ctrl-C to stop");
        mosaic::edge::shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in flight");
        gateway.stop(true).await;
        tracing::info!("stopped");
        Ok::<(), mosaic::edge::StartError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosaic: {e}");
            ExitCode::FAILURE
        }
    }
}
