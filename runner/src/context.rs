//! [`Context`]: what a handler gets besides its params.

use jobs::JobId;
use tokio::sync::watch;

/// The handler's view of its attempt.
#[derive(Clone, Debug)]
pub struct Context {
    job_id: JobId,
    attempt: u32,
    cancelled: watch::Receiver<bool>,
}

impl Context {
    pub(crate) fn new(job_id: JobId, attempt: u32, cancelled: watch::Receiver<bool>) -> Self {
        Self {
            job_id,
            attempt,
            cancelled,
        }
    }

    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
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
