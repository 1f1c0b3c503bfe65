//! The chaos experiment: the demo shop's seven services and the gateway as
//! separate processes, steady keep-alive load, services SIGKILLed,
//! restarted, hung, slowed and failed on a seeded schedule, and a report.
//!
//! ```sh
//! cargo run --release --example chaos -- --duration 60s
//! cargo run --release --example chaos -- --duration 60s --seed 42   # the same plan again
//! ```
//!
//! Writes `report.txt`, `report.svg`, the generated gateway config and the
//! gateway's log into `--out` (default `target/chaos/`); exits 1 when one of
//! the experiment's assertions fails. See `docs/chaos.md`.
//!
//! The example re-executes itself as the gateway and the services
//! (`mosaic::chaos::child`), so they are built from the same source;
//! `--mosaic PATH` runs a given `mosaic` binary instead.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mosaic::chaos::experiment::{self, Options};
use mosaic::chaos::{report, svg};

#[derive(Parser)]
#[command(name = "chaos", about = "Kill mosaic's back ends under load and report what clients saw")]
struct Cli {
    /// Length of the run: "60s", "2m".
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule; random (and printed) when absent.
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Total requests per second.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Gateway workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where the report, chart, config and gateway log go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// A `mosaic` binary to run instead of this example itself.
    #[arg(long)]
    mosaic: Option<PathBuf>,
    /// A RabbitMQ URL: inventory is served through it, and the plan also
    /// cuts the gateway's broker connection.
    #[arg(long)]
    amqp: Option<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    mosaic::demo::fault::parse_millis(text).map(Duration::from_millis)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = mosaic::chaos::child::main_if_child(&args) {
        return code;
    }
    let cli = Cli::parse();
    if cli.duration < Duration::from_secs(10) || cli.rate <= 0.0 || cli.clients == 0 {
        eprintln!("chaos: --duration must be at least 10s, --rate and --clients positive");
        return ExitCode::FAILURE;
    }
    let exe = match cli.mosaic.map_or_else(std::env::current_exe, Ok) {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("chaos: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = cli.seed.unwrap_or_else(|| fastrand::u64(..1_000_000));
    eprintln!("chaos: seed {seed} (re-run with --seed {seed})");
    let options = Options {
        exe,
        out: cli.out.clone(),
        duration: cli.duration,
        seed,
        clients: cli.clients,
        rate: cli.rate,
        workers: cli.workers,
        broker: cli.amqp.clone(),
    };
    let outcome = actix_rt::System::new()
        .block_on(experiment::run(options, &mut |line| eprintln!("chaos: {line}")));
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = report::analyse(&outcome);
    println!("{}", report.text);
    let files =
        [("report.txt", report.text.clone()), ("report.svg", svg::render(&outcome, &report))];
    for (name, text) in files {
        let path = cli.out.join(name);
        match std::fs::write(&path, text) {
            Ok(()) => eprintln!("chaos: wrote {}", path.display()),
            Err(e) => eprintln!("chaos: cannot write {}: {e}", path.display()),
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
