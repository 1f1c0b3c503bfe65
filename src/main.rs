//! The `mosaic` command: `run`, `check`, `demo`, `demo-service`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// Log line format: human or json (also MOSAIC_LOG_FORMAT). Level: RUST_LOG.
    #[arg(long, global = true, env = "MOSAIC_LOG_FORMAT", default_value = "human")]
    log_format: mosaic::telemetry::LogFormat,
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
    /// Start the demo shop (seven services, each its own process) and the gateway in front.
    Demo(DemoArgs),
    /// Run one demo shop service (used by `mosaic demo` and the chaos tests).
    DemoService {
        /// catalog, pricing, reviews, cart, orders, inventory or recommendations.
        #[arg(long)]
        service: Service,
        /// Address to listen on; port 0 picks a free port (printed on start).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Serve over AMQP: consume a queue on this broker
        /// (amqp://user:password@host:port/vhost) and reply to `reply_to`;
        /// `--listen` then serves /health and /_fault.
        #[arg(long, value_name = "URL")]
        amqp: Option<String>,
        /// The queue to declare and consume with --amqp [default: SERVICE.rpc].
        #[arg(long, value_name = "NAME", requires = "amqp")]
        queue: Option<String>,
        #[command(flatten)]
        faults: FaultArgs,
    },
}

/// `mosaic demo`'s flags.
#[derive(Args)]
struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the admin listener listens.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// First demo service port; the seven use this and the next six.
    #[arg(long, default_value_t = mosaic::demo::DEFAULT_BASE_PORT)]
    base_port: u16,
    /// Gateway config; the built-in demo config (or demo-amqp config with
    /// --amqp) when absent.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Register the services with this Consul agent (http://HOST:PORT) and
    /// discover them through it; the token comes from CONSUL_HTTP_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with = "amqp")]
    consul: Option<String>,
    /// Serve inventory through this RabbitMQ broker
    /// (amqp://user:password@host:port/vhost) instead of HTTP; replaces the
    /// config's [amqp] url.
    #[arg(long, value_name = "URL")]
    amqp: Option<String>,
    /// The queue inventory consumes with --amqp.
    #[arg(long, value_name = "NAME", default_value = mosaic::demo::amqp::DEFAULT_QUEUE, requires = "amqp")]
    amqp_queue: String,
    /// Keep the cached backends' answers in this Redis too (the shared
    /// tier, keys under "mosaic-demo:"), e.g. redis://127.0.0.1:6379/0;
    /// replaces the config's [redis].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
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

/// jemalloc instead of glibc's malloc: in paired runs (`BENCHMARKS.md`) it
/// cost 1-8 % less CPU per page; memory per idle connection is the same.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run(&config, cli.log_format),
        Command::Demo(args) => demo(args, cli.log_format),
        Command::DemoService { service, listen, amqp, queue, faults } => {
            let amqp = amqp.map(|url| (url, queue.unwrap_or_else(|| format!("{service}.rpc"))));
            demo_service(service, listen, amqp, faults.into_faults(), cli.log_format)
        }
    }
}

fn print_errors(errors: &mosaic::config::ConfigErrors) {
    for e in &errors.errors {
        eprintln!("{e}");
    }
}

fn check(path: &Path) -> ExitCode {
    match mosaic::config::load_file(path) {
        Ok(config) => {
            println!("{}: valid", path.display());
            println!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path, log_format: mosaic::telemetry::LogFormat) -> ExitCode {
    let _log = mosaic::telemetry::init_logging(log_format);
    let outcome = actix_rt::System::new().block_on(async move {
        let gateway = mosaic::gateway::start_from_file(path).await?;
        // One stdout line with the real addresses (port 0 included), for
        // people, scripts and the chaos tests; logs go to stderr.
        mosaic::chaos::announce(gateway.addr, gateway.admin_addr);
        mosaic::gateway::serve_until_shutdown(gateway).await;
        Ok::<(), mosaic::gateway::StartError>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosaic: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo config shipped in the binary, so `mosaic demo` works from any directory.
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// The same shop with inventory behind RabbitMQ (`mosaic demo --amqp`).
const DEMO_AMQP_CONFIG: &str = include_str!("../config/demo-amqp.toml");

/// The gateway config `mosaic demo` serves: the file or the built-in one,
/// with the listeners and (with --amqp) the broker and queue from the flags.
/// Errors are whole messages, ready to print.
fn demo_config(
    args: &DemoArgs,
    amqp: Option<&mosaic::demo::AmqpInventory>,
) -> Result<mosaic::config::Config, String> {
    let parsed = match (&args.config, amqp) {
        (Some(path), _) => mosaic::config::load_file(path),
        (None, None) => mosaic::config::parse_str(DEMO_CONFIG),
        (None, Some(_)) => mosaic::config::parse_str(DEMO_AMQP_CONFIG),
    };
    let mut config = parsed.map_err(|errors| {
        let lines: Vec<String> = errors.errors.iter().map(ToString::to_string).collect();
        format!("demo config invalid:\n{}", lines.join("\n"))
    })?;
    config.server.listen = args.listen;
    config.admin.listen = args.admin;
    if let Some(amqp) = amqp {
        mosaic::demo::route_inventory_through(&mut config, amqp)
            .map_err(|e| format!("mosaic demo: {e}"))?;
    }
    if let Some(url) = &args.redis {
        let redis = mosaic::config::redis_from_url(url, mosaic::demo::REDIS_PREFIX)
            .map_err(|errors| format!("mosaic demo --redis: {errors}"))?;
        config.redis = Some(redis);
    }
    Ok(config)
}

fn demo(args: DemoArgs, log_format: mosaic::telemetry::LogFormat) -> ExitCode {
    let _log = mosaic::telemetry::init_logging(log_format);
    let consul = args
        .consul
        .as_deref()
        .map(mosaic::demo::consul::consul_config)
        .transpose()
        .map_err(|e| format!("mosaic demo: {e}"));
    let amqp = args
        .amqp
        .as_deref()
        .map(|url| mosaic::demo::AmqpInventory::new(url, &args.amqp_queue))
        .transpose()
        .map_err(|e| format!("mosaic demo: {e}"));
    let prepared = consul.and_then(|consul| {
        let amqp = amqp?;
        let config = demo_config(&args, amqp.as_ref())?;
        Ok((consul, amqp, config))
    });
    let (consul, amqp, mut config) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let base_port = args.base_port;
    let through_broker = amqp.is_some();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("mosaic demo: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = actix_rt::System::new().block_on(async move {
        let services = mosaic::demo::DemoServices::start_with(exe, base_port, amqp)
            .await
            .map_err(|e| format!("demo services: {e}"))?;
        let registered = match consul {
            Some(consul) => Some(
                mosaic::demo::consul::register_and_discover(&mut config, &services, consul)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            None => {
                mosaic::demo::point_config_at(&mut config, &services);
                None
            }
        };
        let gateway = match mosaic::gateway::start(config).await {
            Ok(gateway) => gateway,
            Err(e) => {
                if let Some(registered) = registered {
                    registered.deregister().await;
                }
                return Err(e.to_string());
            }
        };
        // Through Consul or the broker, the gateway needs a moment before it
        // can reach every service: the banner waits for it (bounded), so a
        // `curl` right after it sees the whole page.
        if (registered.is_some() || through_broker)
            && !mosaic::demo::consul::wait_until_discovered(gateway.gateway()).await
        {
            eprintln!("mosaic demo: not every service reachable yet; see /readyz");
        }
        let token = mosaic::demo::demo_token(&gateway.gateway().runtime().config);
        println!(
            "{}",
            mosaic::demo::banner(gateway.addr, gateway.admin_addr, &services, token.as_deref())
        );
        if let Some(redis) = &gateway.gateway().runtime().config.redis {
            println!("{}", mosaic::demo::shared_tier_banner(gateway.admin_addr, redis));
        }
        mosaic::gateway::shutdown_signal().await;
        gateway.stop(true).await;
        if let Some(registered) = registered {
            registered.deregister().await;
        }
        drop(services);
        Ok::<(), String>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosaic demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the fault flags, then runs one demo service as this process: over
/// HTTP, or over AMQP when `amqp` holds the broker URL and queue.
fn demo_service(
    service: Service,
    listen: SocketAddr,
    amqp: Option<(String, String)>,
    faults: Faults,
    log_format: mosaic::telemetry::LogFormat,
) -> ExitCode {
    if let Err(errors) = faults.validate() {
        for e in errors {
            eprintln!("demo-service: {e}");
        }
        return ExitCode::FAILURE;
    }
    let outcome = match amqp {
        None => mosaic::demo::service::run_standalone(service, listen, faults),
        Some((url, queue)) => {
            // Dropped requests and failed replies are logged (stderr).
            let _log = mosaic::telemetry::init_logging_at(log_format, "warn");
            mosaic::demo::amqp::AmqpOptions::new(&url, &queue).and_then(|options| {
                mosaic::demo::amqp::run_standalone(service, listen, faults, options)
                    .map_err(|e| format!("demo service {service}: {e}"))
            })
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
