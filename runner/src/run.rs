//! [`Runner`]: the handler registry and the life of one attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use jobs::{CaCert, Report, Store, StoreAddress, StoreConfig};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use tracing::Instrument;

use crate::context::JobVars;
use crate::extract::{erase, FromParams, Handler};
use crate::logs::{CaptureLayer, LogSink};
use crate::stop::{watch_attempt, wrap_up_window};
use crate::{
    Commands, ConfigError, Context, EnvError, JobError, MachineEnv, PooledEnv, RunnerEnv,
    StopReason,
};

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
    /// The environment is incomplete (see [`crate::RunnerEnv`]) or the
    /// command configuration is invalid (see [`crate::Commands`]).
    pub const BAD_ENVIRONMENT: i32 = 78;
}

/// The last flush of the log waits this long at most: a machine being
/// stopped has a few seconds before it is killed, and the report matters
/// more than the last lines.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// Why the runner cannot start ([`exit::BAD_ENVIRONMENT`]).
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Where the runner learns its attempt.
enum Boot {
    /// From its environment: a machine created for the attempt.
    Attempt(RunnerEnv),
    /// From the store: a machine of the warm pool.
    Pooled(PooledEnv),
}

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

    /// Registers `handler` for jobs of `kind` (replacing an earlier one).
    ///
    /// Its second argument is anything [`FromParams`]: [`Value`] for the
    /// params as they are, [`crate::Json<T>`] to deserialize them (params
    /// that don't fit fail the attempt permanently). It returns anything
    /// [`Serialize`] as the job's result.
    pub fn handler<F, P, Fut, R>(mut self, kind: &str, handler: F) -> Self
    where
        F: Fn(Context, P) -> Fut + Send + Sync + 'static,
        P: FromParams,
        Fut: Future<Output = Result<R, JobError>> + Send + 'static,
        R: Serialize,
    {
        self.handlers.insert(kind.to_string(), erase(handler));
        self
    }

    /// Runs jobs of `kind` with a command: `argv` is the program and its
    /// arguments. See [`crate::command`] for the contract with it.
    ///
    /// # Panics
    /// When `argv` is empty: a command needs a program.
    pub fn command<S: Into<String>>(self, kind: &str, argv: impl IntoIterator<Item = S>) -> Self {
        let argv: Arc<[String]> = argv.into_iter().map(Into::into).collect();
        assert!(!argv.is_empty(), "the command for kind {kind:?} is empty");
        self.handler(kind, move |ctx, params: Value| {
            let argv = Arc::clone(&argv);
            async move { crate::command::run(&argv, ctx, params).await }
        })
    }

    /// Adds configured commands. A configured kind that already has a
    /// handler (in Rust, or a command added in code) is refused with
    /// [`ConfigError::Conflict`]: code and configuration would disagree on
    /// what the kind does, and neither should win silently.
    pub fn commands(mut self, commands: Commands) -> Result<Self, ConfigError> {
        for (kind, argv) in commands {
            if self.handlers.contains_key(&kind) {
                return Err(ConfigError::Conflict(kind));
            }
            self = self.command(&kind, argv);
        }
        Ok(self)
    }

    /// Reads the environment and the command configuration, runs the
    /// attempt and exits the process with one of the [`exit`] codes. Call it
    /// from your `main`. SIGTERM or SIGINT (the machine being stopped) asks
    /// the handler to stop ([`StopReason::Shutdown`]).
    pub fn main(self) -> ! {
        keep_secrets_from_peers();
        // Single-threaded still: the only safe moment to change the env.
        let removed = crate::env::remove_dispatcher_secrets();
        init_logging();
        if !removed.is_empty() {
            tracing::warn!(
                names = ?removed,
                "the machine was given the dispatcher's secrets; removed them from the environment so job code cannot read them"
            );
        }
        let (runner, env) = match self.configure() {
            Ok(configured) => configured,
            Err(error) => {
                tracing::error!(%error, "runner cannot start");
                std::process::exit(exit::BAD_ENVIRONMENT);
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let code = runtime.block_on(async {
            let shutdown = stop_signal();
            runner.boot(env, shutdown).await
        });
        std::process::exit(code)
    }

    /// The environment and this runner with the configured commands.
    fn configure(self) -> Result<(Self, Boot), StartError> {
        let lookup = |name: &str| std::env::var(name).ok();
        let boot = match PooledEnv::from_lookup(lookup)? {
            Some(pooled) => Boot::Pooled(pooled),
            None => Boot::Attempt(RunnerEnv::from_env()?),
        };
        let runner = self.commands(Commands::from_env()?)?;
        Ok((runner, boot))
    }

    /// Runs one attempt and returns the exit code. Every log line carries
    /// the job id and attempt number.
    pub async fn run(&self, env: RunnerEnv) -> i32 {
        self.run_until(env, futures::future::pending().boxed())
            .await
    }

    /// [`Runner::run`], asking the handler to stop when `shutdown` resolves.
    async fn run_until(&self, env: RunnerEnv, shutdown: BoxFuture<'static, ()>) -> i32 {
        self.boot(Boot::Attempt(env), shutdown).await
    }

    /// Connects to the store, learns the attempt (a pooled machine asks the
    /// store for it) and runs it.
    async fn boot(&self, boot: Boot, shutdown: BoxFuture<'static, ()>) -> i32 {
        let machine = match &boot {
            Boot::Attempt(env) => &env.machine,
            Boot::Pooled(pooled) => &pooled.machine,
        };
        let config = match store_config(machine) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "bad store settings");
                return exit::STORE_UNAVAILABLE;
            }
        };
        let store = match Store::connect(config).await {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the job store");
                return exit::STORE_UNAVAILABLE;
            }
        };
        let env = match boot {
            Boot::Attempt(env) => env,
            Boot::Pooled(pooled) => match pooled.assignment(&store).await {
                Ok(Some(env)) => env,
                Ok(None) => {
                    tracing::info!(machine = %pooled.machine_id, "pooled machine has no attempt to run; stopping");
                    return exit::SUCCEEDED;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot ask the store for this machine's attempt");
                    return exit::STORE_UNAVAILABLE;
                }
            },
        };
        self.run_in_process(&store, env, shutdown).await
    }

    /// Runs one attempt through an existing store connection, asking the
    /// handler to stop when `shutdown` resolves, and returns the exit code.
    /// For hosts that run many attempts in one process (the mock's virtual
    /// machines): a connection per attempt would not scale to thousands.
    /// `env.machine.store_url` and `namespace` are not used; `store` decides.
    pub async fn run_in_process(
        &self,
        store: &Store,
        env: RunnerEnv,
        shutdown: BoxFuture<'static, ()>,
    ) -> i32 {
        let span = tracing::info_span!("attempt", job = %env.attempt.job_id, attempt = env.attempt.attempt);
        self.run_attempt(store.clone(), env, shutdown)
            .instrument(span)
            .await
    }

    async fn run_attempt(
        &self,
        store: Store,
        env: RunnerEnv,
        shutdown: BoxFuture<'static, ()>,
    ) -> i32 {
        let attempt = env.attempt.clone();
        // Read before the claim, so a store failure here leaves the
        // attempt unclaimed rather than running without its secrets.
        let secrets = match store.secrets(&attempt).await {
            Ok(Some(secrets)) => secrets,
            Ok(None) => {
                tracing::warn!("attempt is no longer current; nothing to do");
                return exit::STALE;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the job's secrets");
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

        let timeout = Duration::from_secs(job.timeout_secs);
        let (stop_tx, stop_rx) = watch::channel(None);
        let watchdog = tokio::spawn(
            watch_attempt(
                store.clone(),
                attempt.clone(),
                Duration::from_millis(env.machine.heartbeat_ms.max(10)),
                timeout.saturating_sub(wrap_up_window(timeout)),
                shutdown,
                stop_tx,
            )
            .in_current_span(),
        );

        let span = tracing::Span::current();
        // The job's write-only secrets are masked before a line leaves the machine.
        let log_settings = crate::logs::LogSettings {
            secrets: (env.machine.logs.secrets.iter().chain(secrets.0.values()))
                .cloned()
                .collect(),
            ..env.machine.logs.clone()
        };
        let (log, shipper) = LogSink::start(store.clone(), attempt.clone(), log_settings);
        crate::logs::capture::attach(&span, &log);
        let report = match self.handlers.get(job.kind.as_str()) {
            None => Report::Error {
                message: format!("no handler for kind {:?} in this runner", job.kind.as_str()),
                permanent: true,
            },
            Some(handler) => {
                let vars = JobVars::new(&job, &secrets);
                let ctx = Context::new(
                    store.clone(),
                    attempt.clone(),
                    vars,
                    stop_rx.clone(),
                    span,
                    log,
                );
                let outcome = tokio::time::timeout(timeout, handler(ctx, job.params.clone())).await;
                let stopped = *stop_rx.borrow();
                report_for(outcome.ok(), stopped, job.timeout_secs)
            }
        };
        // The log is complete before the report: whoever reads the report
        // (the dead letter, the callback) finds every line.
        match shipper.finish(FLUSH_WITHIN).await {
            Some(shipped) => tracing::info!(
                lines = shipped.lines,
                bytes = shipped.bytes,
                batches = shipped.batches,
                dropped = shipped.dropped,
                truncated = shipped.truncated,
                "log shipped"
            ),
            None => tracing::warn!("the log's last lines could not be shipped in time"),
        }
        watchdog.abort();

        let (outcome, code, error) = match &report {
            Report::Result(_) => ("succeeded", exit::SUCCEEDED, None),
            Report::Error { message, .. } => ("error", exit::HANDLER_FAILED, Some(message)),
            Report::TimedOut { message } => ("timed_out", exit::HANDLER_FAILED, Some(message)),
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        match store.report(&attempt, &report).await {
            Ok(true) => {
                tracing::info!(outcome, duration_ms, error, "attempt finished");
                code
            }
            Ok(false) => {
                tracing::warn!(
                    outcome,
                    duration_ms,
                    error,
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

/// What to report for a handler's outcome (`None`: still running at the
/// timeout). A retryable error after the wrap-up signal is the timeout
/// showing through the handler, and is reported as such.
fn report_for(
    outcome: Option<Result<Value, JobError>>,
    stopped: Option<StopReason>,
    timeout_secs: u64,
) -> Report {
    match outcome {
        Some(Ok(value)) => Report::Result(value),
        Some(Err(JobError::Retryable(message))) if stopped == Some(StopReason::Deadline) => {
            Report::TimedOut {
                message: format!(
                    "stopped before the {timeout_secs}s timeout (the runner's wrap-up signal): {message}"
                ),
            }
        }
        Some(Err(e)) => Report::Error {
            message: e.to_string(),
            permanent: e.is_permanent(),
        },
        None => Report::TimedOut {
            message: format!("timed out after {timeout_secs}s (runner's own guard)"),
        },
    }
}

/// The runner's memory and environment hold the attempt's token. A
/// non-dumpable process's `/proc/<pid>/environ` and `mem` are readable by
/// root only, so a command running as the runner's (non-root) user cannot
/// take the token from there either.
fn keep_secrets_from_peers() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_DUMPABLE) takes plain integers and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Resolves on the first SIGTERM or SIGINT: how the platform stops a
/// machine. Registered at once, so a signal that comes early still counts.
fn stop_signal() -> BoxFuture<'static, ()> {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("got SIGTERM"),
                _ = int.recv() => tracing::info!("got SIGINT"),
            }
        }
        .boxed(),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; a machine stop will kill the handler outright");
            futures::future::pending().boxed()
        }
    }
}

/// Logs go to stderr; `LOG_FORMAT=json` for one JSON object per line.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // Events in an attempt's span also go to its log (see `logs::capture`).
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().finish().with(CaptureLayer).init();
    } else {
        builder.finish().with(CaptureLayer).init();
    }
}

/// The store settings from the runner's environment: its URL and, for a
/// private TLS store, the CA file.
fn store_config(
    machine: &MachineEnv,
) -> Result<StoreConfig, Box<dyn std::error::Error + Send + Sync>> {
    let address: StoreAddress = machine.store_url.parse()?;
    let mut config = StoreConfig::new(address);
    config.namespace = machine.namespace.clone();
    config.ca_cert = machine.ca_cert.as_deref().map(CaCert::load).transpose()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_follow_the_outcome() {
        assert_eq!(
            report_for(Some(Ok(json!(1))), None, 5),
            Report::Result(json!(1))
        );
        assert_eq!(
            report_for(Some(Err(JobError::permanent("bad"))), None, 5),
            Report::Error {
                message: "bad".into(),
                permanent: true
            }
        );
        assert!(matches!(report_for(None, None, 5), Report::TimedOut { .. }));
    }

    #[test]
    fn a_retryable_error_at_the_wrap_up_signal_is_a_timeout() {
        let stopped = Some(StopReason::Deadline);
        let Report::TimedOut { message } =
            report_for(Some(Err(JobError::retryable("gave up"))), stopped, 30)
        else {
            panic!("not a timeout")
        };
        assert!(message.ends_with(": gave up"), "{message}");
        // A result, or a permanent error, still counts as such.
        assert_eq!(
            report_for(Some(Ok(json!(2))), stopped, 30),
            Report::Result(json!(2))
        );
        assert!(matches!(
            report_for(Some(Err(JobError::permanent("no"))), stopped, 30),
            Report::Error {
                permanent: true,
                ..
            }
        ));
        // Other reasons to stop don't make an error a timeout.
        assert!(matches!(
            report_for(
                Some(Err(JobError::retryable("x"))),
                Some(StopReason::Cancelled),
                30
            ),
            Report::Error { .. }
        ));
    }
}
