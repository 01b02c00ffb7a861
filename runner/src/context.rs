//! [`Context`]: what a handler gets besides its params.

use std::collections::BTreeMap;
use std::sync::Arc;

use jobs::{AttemptRef, JobId, Store};
use tokio::sync::watch;

use crate::StopReason;

/// The handler's view of its attempt: who it is, a way to report progress,
/// and the signal to stop. Cheap to clone (to hand to spawned tasks).
#[derive(Clone)]
pub struct Context {
    store: Store,
    attempt: AttemptRef,
    stop: watch::Receiver<Option<StopReason>>,
    span: tracing::Span,
    /// The job's `machine.env`, read from its record in the store.
    env: Arc<BTreeMap<String, String>>,
}

impl Context {
    pub(crate) fn new(
        store: Store,
        attempt: AttemptRef,
        stop: watch::Receiver<Option<StopReason>>,
        span: tracing::Span,
        env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            store,
            attempt,
            stop,
            span,
            env: Arc::new(env),
        }
    }

    /// A variable of the job's `machine.env`, else of the process. On a
    /// machine created for the job they are the same; on a pooled machine
    /// (created before the job existed) the job's variables come from the
    /// store, so read them here rather than with `std::env::var`.
    pub fn env(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// The job's `machine.env`; commands get these in their environment.
    pub fn job_env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn job_id(&self) -> JobId {
        self.attempt.job_id
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt.attempt
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
