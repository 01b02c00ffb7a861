//! [`Context`]: what a handler gets besides its params.

use jobs::{AttemptRef, JobId, Store};
use tokio::sync::watch;

/// The handler's view of its attempt.
#[derive(Clone)]
pub struct Context {
    store: Store,
    attempt: AttemptRef,
    cancelled: watch::Receiver<bool>,
}

impl Context {
    pub(crate) fn new(store: Store, attempt: AttemptRef, cancelled: watch::Receiver<bool>) -> Self {
        Self {
            store,
            attempt,
            cancelled,
        }
    }

    pub fn job_id(&self) -> JobId {
        self.attempt.job_id
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt.attempt
    }

    /// Reports progress (`percent` is clamped to 0..=100), shown by
    /// `GET /jobs/{id}`. A failure to record it is logged, not fatal.
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

    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves once the job is cancelled or the attempt is no longer
    /// current; long handlers `select!` on it to stop early.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        // An error means the runner is shutting down: treat it as cancelled.
        let _ = rx.wait_for(|c| *c).await;
    }
}
