//! The call procedure every backend call goes through, whatever carries it
//! (a section's GET, a proxied request): an attempt per breaker permit,
//! each one recorded (breaker, counters, latency), and a failed attempt
//! made again on another instance only while the call is repeatable, the
//! failure retryable, the retry budget and the breaker allow it, and the
//! caller's deadline leaves time. Admission (breaker, bulkhead) happens
//! before, in [`Backend::admit`]; what an attempt is and what its result
//! means is the carrier's ([`Attempts`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use super::balancer::Instance;
use super::breaker::BreakerPermit;
use super::{Backend, FetchError, Outcome};

/// One kind of call, attempt by attempt.
pub trait Attempts {
    /// What a successful call hands back.
    type Output;
    /// Why a call failed.
    type Error: From<FetchError>;

    /// Whether a failed attempt may be made again: only an idempotent call
    /// whose request can be sent twice.
    fn repeatable(&self) -> bool;

    /// One attempt at the instance at `address`, started at `started`.
    fn attempt<'s>(
        &'s mut self,
        address: &'s str,
        started: Instant,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + 's;

    /// What the attempt's result means for the breaker, the counters and
    /// the retry (see [`Judged`]).
    fn judge(
        &self,
        result: Result<Self::Output, Self::Error>,
        started: Instant,
    ) -> Judged<Self::Output, Self::Error>;

    /// Whether a retry may still start now; a caller with a deadline says
    /// no when too little of it is left.
    fn time_for_retry(&self) -> bool {
        true
    }
}

/// What one attempt's result means.
pub enum Judged<T, E> {
    /// A result to hand back, recorded now with this outcome and latency.
    Settled(T, Outcome, Duration),
    /// A result to hand back whose permit the caller records later (an
    /// answer whose body is still to stream: its end decides).
    Unsettled(T),
    /// A fault of the backend's: recorded; the call is tried again if
    /// `retryable` and allowed, else `last` is what it ends with.
    Fault {
        /// For the breaker and counters.
        outcome: Outcome,
        /// The attempt's latency.
        elapsed: Duration,
        /// Whether another instance may do better (connect, timeout, 5xx).
        retryable: bool,
        /// What the call returns if this was its last attempt.
        last: Result<T, E>,
    },
    /// Not the backend's doing (the client's): nothing is recorded, the
    /// permit is released, the call ends.
    NotTheBackends(E),
}

/// A finished call.
pub struct Called<'a, T> {
    /// The result of the last attempt.
    pub output: T,
    /// Its breaker permit when [`Judged::Unsettled`], for the caller to
    /// record; `None` when it was recorded.
    pub permit: Option<BreakerPermit<'a>>,
    /// When the last attempt started.
    pub started: Instant,
}

impl Backend {
    /// Runs `attempts` over `instances` (from this call's admission),
    /// starting with `permit`; the first attempt starts at `started`.
    pub async fn call<'a, A: Attempts>(
        &'a self,
        instances: &[Instance],
        mut permit: BreakerPermit<'a>,
        attempts: &mut A,
        mut started: Instant,
    ) -> Result<Called<'a, A::Output>, A::Error> {
        let mut retries_left = self.retry_budget(instances, attempts.repeatable());
        let mut previous = None;
        loop {
            let Some(index) = self.balancer.pick(instances, previous) else {
                return Err(FetchError::NoInstances.into());
            };
            let result = attempts.attempt(&instances[index].address, started).await;
            let (outcome, elapsed, retryable, last) = match attempts.judge(result, started) {
                Judged::Settled(output, outcome, elapsed) => {
                    self.record(permit, outcome, elapsed);
                    return Ok(Called { output, permit: None, started });
                }
                Judged::Unsettled(output) => {
                    return Ok(Called { output, permit: Some(permit), started })
                }
                Judged::NotTheBackends(error) => return Err(error),
                Judged::Fault { outcome, elapsed, retryable, last } => {
                    (outcome, elapsed, retryable, last)
                }
            };
            self.record(permit, outcome, elapsed);
            let next = if retryable && attempts.time_for_retry() {
                self.permit_retry(&mut retries_left)
            } else {
                None
            };
            match next {
                Some(next) => permit = next,
                None => return last.map(|output| Called { output, permit: None, started }),
            }
            previous = Some(index);
            started = Instant::now();
        }
    }

    /// How many retries a call may make: `retries` for a repeatable request
    /// when there is another instance to go to (behind a broker, another
    /// consumer of the queue may take it), else none.
    fn retry_budget(&self, instances: &[Instance], repeatable: bool) -> u32 {
        if repeatable && (instances.len() > 1 || self.amqp().is_some()) {
            self.config.retries
        } else {
            0
        }
    }

    /// Permission for one more attempt, if the budget and the breaker allow
    /// (every attempt needs a permit; if the last failure opened the breaker,
    /// the caller reports that failure rather than `circuit_open`).
    fn permit_retry(&self, retries_left: &mut u32) -> Option<BreakerPermit<'_>> {
        if *retries_left == 0 {
            return None;
        }
        let permit = self.breaker.try_acquire()?;
        *retries_left -= 1;
        self.stats.retry();
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{BackendConfig, InstanceSource};

    fn backend(instances: &[&str], retries: u32) -> Arc<Backend> {
        let source = InstanceSource::Static(instances.iter().map(|i| i.to_string()).collect());
        let config = BackendConfig { retries, ..BackendConfig::for_tests("svc", source) };
        Backend::new(Arc::new(config), 1 << 20, None, None, None, Default::default()).0
    }

    /// Attempts that answer from a script, one entry per attempt, noting
    /// each address tried. `Ok(n)`: an answer `n` (>= 500 a fault);
    /// `Err(None)`: the client's fault; `Err(Some(e))`: a backend fault.
    struct Scripted {
        script: Vec<Result<u16, Option<FetchError>>>,
        tried: Vec<String>,
        repeatable: bool,
        unsettled: bool,
    }

    impl Attempts for Scripted {
        type Output = u16;
        type Error = FetchError;

        fn repeatable(&self) -> bool {
            self.repeatable
        }

        fn attempt<'s>(
            &'s mut self,
            address: &'s str,
            _started: Instant,
        ) -> impl Future<Output = Result<u16, FetchError>> + 's {
            self.tried.push(address.to_string());
            let next = self.script.remove(0);
            async move { next.map_err(|e| e.unwrap_or(FetchError::InvalidBody)) }
        }

        fn judge(
            &self,
            result: Result<u16, FetchError>,
            _started: Instant,
        ) -> Judged<u16, FetchError> {
            let elapsed = Duration::from_millis(1);
            match result {
                Ok(status) if status >= 500 => Judged::Fault {
                    outcome: Outcome::Answered(status),
                    elapsed,
                    retryable: true,
                    last: Ok(status),
                },
                Ok(status) if self.unsettled => Judged::Unsettled(status),
                Ok(status) => Judged::Settled(status, Outcome::Answered(status), elapsed),
                Err(FetchError::InvalidBody) => Judged::NotTheBackends(FetchError::InvalidBody),
                Err(error) => Judged::Fault {
                    outcome: Outcome::Failed(error),
                    elapsed,
                    retryable: error.is_retryable(),
                    last: Err(error),
                },
            }
        }
    }

    fn scripted(script: Vec<Result<u16, Option<FetchError>>>, repeatable: bool) -> Scripted {
        Scripted { script, tried: Vec::new(), repeatable, unsettled: false }
    }

    async fn run(backend: &Backend, attempts: &mut Scripted) -> Result<(u16, bool), FetchError> {
        let admission = backend.admit()?;
        let called =
            backend.call(&admission.instances, admission.permit, attempts, Instant::now()).await?;
        Ok((called.output, called.permit.is_some()))
    }

    #[actix_rt::test]
    async fn a_retryable_fault_is_tried_again_on_another_instance() {
        let backend = backend(&["a:1", "b:1"], 1);
        let mut attempts = scripted(vec![Err(Some(FetchError::Connect)), Ok(200)], true);
        assert_eq!(run(&backend, &mut attempts).await, Ok((200, false)));
        assert_eq!(attempts.tried.len(), 2);
        assert_ne!(attempts.tried[0], attempts.tried[1], "another instance");
        let status = backend.status();
        assert_eq!((status.successes, status.failures), (1, 1), "both attempts recorded");
    }

    #[actix_rt::test]
    async fn the_last_fault_is_what_the_call_ends_with() {
        // Out of retries: the second 5xx answer is the result.
        let backend = backend(&["a:1", "b:1"], 1);
        let mut attempts = scripted(vec![Ok(503), Ok(502)], true);
        assert_eq!(run(&backend, &mut attempts).await, Ok((502, false)));
        assert_eq!(backend.status().failures, 2);
        // Not retryable: one attempt.
        let mut attempts = scripted(vec![Err(Some(FetchError::TooLarge))], true);
        assert_eq!(run(&backend, &mut attempts).await, Err(FetchError::TooLarge));
        assert_eq!(attempts.tried.len(), 1);
    }

    #[actix_rt::test]
    async fn a_call_that_cannot_be_repeated_gets_one_attempt() {
        let backend = backend(&["a:1", "b:1"], 3);
        let mut attempts = scripted(vec![Err(Some(FetchError::Timeout))], false);
        assert_eq!(run(&backend, &mut attempts).await, Err(FetchError::Timeout));
        assert_eq!(attempts.tried.len(), 1);
        // One instance: nowhere else to go, however many retries.
        let backend = self::backend(&["a:1"], 3);
        let mut attempts = scripted(vec![Err(Some(FetchError::Connect))], true);
        assert_eq!(run(&backend, &mut attempts).await, Err(FetchError::Connect));
        assert_eq!(attempts.tried.len(), 1);
    }

    #[actix_rt::test]
    async fn the_clients_fault_is_not_recorded_and_an_unsettled_answer_keeps_its_permit() {
        let backend = backend(&["a:1", "b:1"], 1);
        let mut attempts = scripted(vec![Err(None)], true);
        assert_eq!(run(&backend, &mut attempts).await, Err(FetchError::InvalidBody));
        let status = backend.status();
        assert_eq!((status.successes, status.failures), (0, 0));
        let mut attempts = scripted(vec![Ok(200)], true);
        attempts.unsettled = true;
        assert_eq!(run(&backend, &mut attempts).await, Ok((200, true)), "the caller records it");
        assert_eq!(backend.status().successes, 0);
    }
}
