//! One chaos run: start the lab, warm up, play the plan under steady load
//! while watching the breakers, cool down, and hand everything to the
//! report. Bounded by `duration` plus start-up and the last requests'
//! client timeout; every child process dies with the [`Lab`].

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use super::lab::{Lab, LabError};
use super::load::{self, LoadSpec, Sample};
use super::plan::{self, Fault, Round};
use super::watch::{self, Watched};
use crate::demo::Service;

/// How often the breakers are polled.
pub const WATCH_EVERY: Duration = Duration::from_millis(200);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The executable that understands `run --config` and `demo-service`
    /// (the `mosaic` binary, or the chaos example itself).
    pub exe: PathBuf,
    /// Where the config, the gateway log and the reports go.
    pub out: PathBuf,
    /// Length of the load, warm-up and cool-down included.
    pub duration: Duration,
    /// Seed of the plan.
    pub seed: u64,
    /// Concurrent keep-alive clients.
    pub clients: usize,
    /// Total requests per second.
    pub rate: f64,
    /// Gateway workers.
    pub workers: usize,
    /// A RabbitMQ URL: inventory is served through it, and the plan cuts
    /// the gateway's connection now and then.
    pub broker: Option<String>,
}

/// One thing the experiment did, with the time it took effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Since the epoch.
    pub at: Duration,
    /// The service (or backend, for a crash).
    pub service: Service,
    /// `kill`, `restart`, `hang`, `slow`, `5xx`, `heal`, `crash`,
    /// `broker-cut`, `broker-back`.
    pub what: &'static str,
    /// True for the end of a fault (`restart`, `heal`): the section should
    /// turn `live` again after it.
    pub heals: bool,
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The options it ran with.
    pub options: Options,
    /// The plan it played.
    pub plan: Vec<Round>,
    /// What it did, in order.
    pub events: Vec<Event>,
    /// Every request.
    pub samples: Vec<Sample>,
    /// The breakers as polled.
    pub watched: Watched,
    /// Control calls that failed (each fails the run).
    pub control_errors: Vec<String>,
}

/// Runs the experiment; `progress` receives a line per step as it happens.
/// Must run inside an actix system.
pub async fn run(options: Options, progress: &mut dyn FnMut(String)) -> Result<Outcome, LabError> {
    let plan = plan::plan_with(options.seed, options.duration, options.broker.is_some());
    let log = options.out.join("gateway.log");
    let mut lab = Lab::start_with_broker(
        &options.exe,
        &options.out,
        true,
        options.workers,
        Some(&log),
        options.broker.as_deref(),
    )
    .await?;
    progress(format!(
        "lab up: gateway http://{} (pid {}), admin http://{}, config {}",
        lab.gateway.addr,
        lab.gateway.pid().unwrap_or(0),
        lab.gateway.admin_addr,
        lab.config_path.display()
    ));
    progress(format!(
        "watch it live: http://{}/dashboard (admin token: {})",
        lab.gateway.admin_addr,
        super::lab::ADMIN_TOKEN
    ));
    let epoch = Instant::now();
    let spec = LoadSpec {
        clients: options.clients,
        rate: options.rate,
        products: 20,
        timeout: Duration::from_secs(2),
        max_duration: options.duration + Duration::from_secs(5),
    };
    let load = load::start(lab.gateway.addr, &spec, epoch);
    let watcher = watch::start(lab.gateway.admin_addr, WATCH_EVERY, epoch, spec.max_duration);
    let mut events = Vec::new();
    let mut control_errors = Vec::new();
    for round in &plan {
        sleep_until(epoch + round.start).await;
        progress(format!("round {round}"));
        for &service in &round.services {
            let result = begin(&mut lab, round.fault, service).await;
            note(
                &mut events,
                &mut control_errors,
                epoch,
                service,
                round.fault.name(),
                false,
                result,
            );
        }
        if round.fault == Fault::Crash {
            continue;
        }
        sleep_until(epoch + round.start + round.length).await;
        for &service in &round.services {
            let (what, result) = match round.fault {
                Fault::Kill => {
                    ("restart", lab.services.restart(service.name()).await.map_err(Into::into))
                }
                Fault::BrokerCut => ("broker-back", lab.restore_broker()),
                _ => ("heal", lab.clear_fault(service).await),
            };
            note(&mut events, &mut control_errors, epoch, service, what, true, result);
        }
    }
    sleep_until(epoch + options.duration).await;
    let samples = load.finish().await;
    let watched = watcher.finish().await;
    progress(format!("done: {} requests in {:.1}s", samples.len(), epoch.elapsed().as_secs_f64()));
    Ok(Outcome { options, plan, events, samples, watched, control_errors })
}

/// Starts `fault` on `service`.
async fn begin(lab: &mut Lab, fault: Fault, service: Service) -> Result<(), LabError> {
    match fault {
        Fault::Kill => Ok(lab.services.kill(service.name()).await?),
        Fault::BrokerCut => lab.cut_broker(),
        Fault::Crash => match lab.crash(service.name()).await? {
            202 => Ok(()),
            status => Err(LabError::Control(format!("crash {service}: status {status}"))),
        },
        _ => match fault.settings() {
            Some(settings) => lab.set_fault(service, settings).await,
            None => Ok(()),
        },
    }
}

fn note(
    events: &mut Vec<Event>,
    errors: &mut Vec<String>,
    epoch: Instant,
    service: Service,
    what: &'static str,
    heals: bool,
    result: Result<(), LabError>,
) {
    match result {
        Ok(()) => events.push(Event { at: epoch.elapsed(), service, what, heals }),
        Err(e) => errors.push(format!("{what} {service}: {e}")),
    }
}
