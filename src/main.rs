//! The `mosaic` command: `run`, `check`, `demo`, `demo-service`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => {
            let _ = config;
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match mosaic::config::load_file(path) {
        Ok(config) => {
            println!("{}: valid", path.display());
            println!("{}", config.summary());
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
