//! [`Context`]: what a handler gets besides its params.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobs::{AttemptRef, JobId, LogStream, Secrets, Store};
use tokio::sync::watch;

use crate::logs::LogSink;
use crate::StopReason;

/// The handler's view of its attempt: who it is, a way to report progress,
/// and the signal to stop. Cheap to clone (to hand to spawned tasks).
#[derive(Clone)]
pub struct Context {
    store: Store,
    attempt: AttemptRef,
    vars: Arc<JobVars>,
    stop: watch::Receiver<Option<StopReason>>,
    span: tracing::Span,
    log: LogSink,
    /// Children enqueued so far without a key: the next one's order.
    pub(crate) child_order: Arc<std::sync::atomic::AtomicU32>,
    /// The same for batches, keyed apart.
    pub(crate) batch_order: Arc<std::sync::atomic::AtomicU32>,
}

/// The job's `machine.env` and `machine.secrets`, as far as
/// [`jobs::job_env::allowed`] lets them through: the runner never puts
/// them in its own environment, so they cannot configure it.
#[derive(Default)]
pub(crate) struct JobVars {
    pub(crate) env: BTreeMap<String, String>,
    pub(crate) secrets: Secrets,
    /// Its batch and place in it, and what it waited for (`inputs`).
    pub(crate) batch: Option<(jobs::BatchId, u32)>,
    pub(crate) inputs: Option<serde_json::Value>,
}

impl JobVars {
    pub(crate) fn new(job: &jobs::Job, secrets: &Secrets) -> Arc<Self> {
        let env = &job.machine.env;
        let keep = |map: &BTreeMap<String, String>| {
            jobs::job_env::allowed(map)
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        Arc::new(Self {
            env: keep(env),
            secrets: Secrets(keep(&secrets.0)),
            batch: job.batch_id.zip(job.batch_index),
            inputs: job.inputs.clone(),
        })
    }

    /// Both maps, for a command's environment.
    pub(crate) fn all(&self) -> impl Iterator<Item = (&String, &String)> {
        self.env.iter().chain(self.secrets.0.iter())
    }
}

impl Context {
    pub(crate) fn new(
        store: Store,
        attempt: AttemptRef,
        vars: Arc<JobVars>,
        stop: watch::Receiver<Option<StopReason>>,
        span: tracing::Span,
        log: LogSink,
    ) -> Self {
        Self {
            store,
            attempt,
            vars,
            stop,
            span,
            log,
            child_order: Arc::default(),
            batch_order: Arc::default(),
        }
    }

    pub fn job_id(&self) -> JobId {
        self.attempt.job_id
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt.attempt
    }

    /// A variable of the job's `machine.env` (shown in the job's views).
    /// Job variables are not in the runner's process environment:
    /// commands get them in theirs, Rust handlers read them here.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.vars.env.get(name).map(String::as_str)
    }

    /// A variable of the job's write-only `machine.secrets`. Don't log it.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.vars.secrets.0.get(name).map(String::as_str)
    }

    /// The job's batch and its index in it (from 0), when it is a member.
    pub fn batch(&self) -> Option<(jobs::BatchId, u32)> {
        self.vars.batch
    }

    /// What the job waited for (`after`, or its batch as a `then` job):
    /// `{"jobs": [{"id", "status", "result", "error", "index"}]}`, plus
    /// `batch` and `counts` for a batch. `None` for a job that waited for
    /// nothing.
    pub fn inputs(&self) -> Option<&serde_json::Value> {
        self.vars.inputs.as_ref()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn attempt_ref(&self) -> &AttemptRef {
        &self.attempt
    }

    pub(crate) fn vars(&self) -> &JobVars {
        &self.vars
    }

    /// The `attempt` span (fields `job` and `attempt`) the handler runs in.
    /// The handler's own logs are already inside it; instrument tasks it
    /// spawns with it (`task.instrument(ctx.span().clone())`) so their logs
    /// say which job they belong to as well.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Reports progress (`percent` is clamped to 0..=100), shown by
    /// `GET /jobs/{id}` as `"progress": {"percent": .., "message": ..}`. A
    /// failure to record it is logged, not fatal: progress is advisory.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) {
        match self
            .store
            .progress(&self.attempt, percent, &message.into())
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("progress not recorded: the attempt is no longer current"),
            Err(e) => tracing::warn!(error = %e, "progress not recorded"),
        }
    }

    /// Adds a line to the attempt's log (`GET /jobs/{id}/logs`), as
    /// `tracing` events in the handler's span are. Never waits: see
    /// [`crate::logs::sink`] for the bounds.
    pub fn log(&self, line: impl AsRef<str>) {
        self.log.push(LogStream::Log, line.as_ref());
    }

    /// A line as a command's stdout or stderr line would be stored.
    pub(crate) fn output(&self, stream: LogStream, line: &[u8]) {
        self.log.push_bytes(stream, line);
    }

    /// Whether the handler was asked to stop; see [`Context::cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.stop.borrow().is_some()
    }

    /// Why the handler was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.stop.borrow()
    }

    /// Resolves once the handler should stop: the job was cancelled, the
    /// attempt is no longer current, the machine is stopping, or the job's
    /// timeout is near ([`crate::wrap_up_window`] before it). Long handlers
    /// `select!` on it to return early, with a result or an error.
    pub async fn cancelled(&self) {
        let mut rx = self.stop.clone();
        // An error means the attempt is over (the sender is gone): a task
        // that outlives its handler must stop too.
        let _ = rx.wait_for(Option::is_some).await;
    }
}
