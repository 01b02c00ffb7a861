//! [`Runner`]: the handler registry and the life of one attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jobs::{Heartbeat, Report, Store, StoreConfig};
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::{Context, JobError, RunnerEnv};

/// The runner's exit codes. The dispatcher does not rely on them (it reads
/// the report from the store), but they make a machine's log readable.
pub mod exit {
    /// The handler succeeded and its result is recorded.
    pub const SUCCEEDED: i32 = 0;
    /// The handler failed (or timed out) and its error is recorded.
    pub const HANDLER_FAILED: i32 = 1;
    /// The attempt was no longer current (cancelled, timed out, superseded):
    /// nothing was run or written.
    pub const STALE: i32 = 3;
    /// The job store could not be reached.
    pub const STORE_UNAVAILABLE: i32 = 75;
    /// The environment is incomplete (see [`crate::RunnerEnv`]).
    pub const BAD_ENVIRONMENT: i32 = 78;
}

type Handler =
    Arc<dyn Fn(Context, Value) -> BoxFuture<'static, Result<Value, JobError>> + Send + Sync>;

/// Handlers by kind, and the loop that runs one attempt.
#[derive(Clone, Default)]
pub struct Runner {
    handlers: HashMap<String, Handler>,
}

impl Runner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A runner with the demo handlers of [`crate::demo`].
    pub fn with_demo_handlers() -> Self {
        crate::demo::register(Self::new())
    }

    /// Registers `handler` for jobs of `kind`.
    pub fn handler<F, Fut>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, JobError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |ctx, params| Box::pin(handler(ctx, params)));
        self.handlers.insert(kind.to_string(), handler);
        self
    }

    /// Reads the environment, runs the attempt and exits the process with
    /// one of the [`exit`] codes. Call it from your `main`.
    pub fn main(self) -> ! {
        init_logging();
        let env = match RunnerEnv::from_env() {
            Ok(env) => env,
            Err(e) => {
                tracing::error!(error = %e, "runner cannot start");
                std::process::exit(exit::BAD_ENVIRONMENT);
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let code = runtime.block_on(self.run(env));
        std::process::exit(code)
    }

    /// Runs one attempt and returns the exit code. Every log line carries
    /// the job id and attempt number.
    pub async fn run(&self, env: RunnerEnv) -> i32 {
        let span = tracing::info_span!("attempt", job = %env.attempt.job_id, attempt = env.attempt.attempt);
        self.run_attempt(env).instrument(span).await
    }

    async fn run_attempt(&self, env: RunnerEnv) -> i32 {
        let attempt = env.attempt.clone();
        let mut config = StoreConfig::new(&env.store_url);
        config.namespace = env.namespace.clone();
        let store = match Store::connect(config).await {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the job store");
                return exit::STORE_UNAVAILABLE;
            }
        };
        let job = match store.start_attempt(&attempt).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                tracing::warn!("attempt is no longer current; nothing to do");
                return exit::STALE;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot claim the attempt");
                return exit::STORE_UNAVAILABLE;
            }
        };
        let started = Instant::now();
        tracing::info!(kind = %job.kind, timeout_secs = job.timeout_secs, "attempt started");

        let (cancel_tx, cancel_rx) = watch::channel(false);
        let heartbeat = tokio::spawn(heartbeat_loop(
            store.clone(),
            attempt.clone(),
            Duration::from_millis(env.heartbeat_ms.max(10)),
            cancel_tx,
        ));

        let report = match self.handlers.get(job.kind.as_str()) {
            None => Report::Error {
                message: format!("no handler for kind {:?} in this runner", job.kind.as_str()),
                permanent: true,
            },
            Some(handler) => {
                let ctx = Context::new(store.clone(), attempt.clone(), cancel_rx);
                let timeout = Duration::from_secs(job.timeout_secs);
                match tokio::time::timeout(timeout, handler(ctx, job.params.clone())).await {
                    Ok(Ok(value)) => Report::Result(value),
                    Ok(Err(e)) => Report::Error {
                        message: e.to_string(),
                        permanent: e.is_permanent(),
                    },
                    Err(_) => Report::TimedOut {
                        message: format!(
                            "timed out after {}s (runner's own guard)",
                            job.timeout_secs
                        ),
                    },
                }
            }
        };
        heartbeat.abort();

        let (outcome, code) = match &report {
            Report::Result(_) => ("succeeded", exit::SUCCEEDED),
            Report::Error { .. } => ("error", exit::HANDLER_FAILED),
            Report::TimedOut { .. } => ("timed_out", exit::HANDLER_FAILED),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        match store.report(&attempt, &report).await {
            Ok(true) => {
                tracing::info!(outcome, duration_ms, "attempt finished");
                code
            }
            Ok(false) => {
                tracing::warn!(
                    outcome,
                    duration_ms,
                    "attempt no longer current; report discarded"
                );
                exit::STALE
            }
            Err(e) => {
                tracing::error!(error = %e, outcome, duration_ms, "cannot record the report");
                exit::STORE_UNAVAILABLE
            }
        }
    }
}

/// Tells the store we are alive, and learns of cancellation from it.
async fn heartbeat_loop(
    store: Store,
    attempt: jobs::AttemptRef,
    every: Duration,
    cancel: watch::Sender<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match store.heartbeat(&attempt).await {
            Ok(Heartbeat::Alive) => {}
            Ok(Heartbeat::CancelRequested) | Ok(Heartbeat::Stale) => {
                let _ = cancel.send(true);
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Logs go to stderr; `LOG_FORMAT=json` for one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
