//! [`on_terminal`]: what follows a job's final state (`succeeded`, `failed`,
//! `cancelled`), in one place. Every call site whose store call can end a
//! job (the supervisor closing an attempt, a client cancelling a waiting
//! job) calls it with the status the store answered, so none can forget a
//! step: the finished-jobs counter, then the callback.
//!
//! Only the dispatcher whose call made the transition runs it, so each
//! finished job is counted and called back once.

use jobs::{JobId, JobStatus, Store};

use crate::engine::callbacks::Callbacks;

/// Follows the transition of job `id` to `status`; does nothing when
/// `status` is not final. `has_callback` spares a store read for the many
/// jobs without a `callback_url`: the callback carries the job's final
/// view, read fresh.
pub async fn on_terminal(
    store: &Store,
    callbacks: &Callbacks,
    id: JobId,
    status: JobStatus,
    has_callback: bool,
) {
    if !status.is_terminal() {
        return;
    }
    crate::metrics::job_finished(status);
    if !has_callback {
        return;
    }
    match store.get(id).await {
        Ok(Some(done)) => callbacks.deliver(&done),
        Ok(None) => tracing::warn!(job = %id, "finished job vanished before its callback"),
        Err(e) => {
            tracing::warn!(job = %id, error = %e, "callback not sent: the job could not be read")
        }
    }
}
