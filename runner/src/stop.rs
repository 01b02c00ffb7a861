//! When and why a handler is asked to stop: the attempt's watchdog.
//!
//! One task per attempt heartbeats (which is also how the runner learns of
//! a cancel request), fires the wrap-up signal shortly before the job's
//! timeout and turns a stop request from the platform (SIGTERM) into the
//! same signal. Handlers see all of them through
//! [`Context::cancelled`](crate::Context::cancelled), so one `select!`
//! covers every reason to stop.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use jobs::{AttemptRef, Heartbeat, Store};
use tokio::sync::watch;

/// Why a handler is asked to stop. The first reason sticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The job was cancelled (`POST /jobs/{id}/cancel`).
    Cancelled,
    /// The attempt is no longer current (the dispatcher gave up on it), so
    /// whatever it reports is discarded.
    Superseded,
    /// The job's timeout is near: wrap up now. The runner stops waiting at
    /// the timeout itself; see [`wrap_up_window`].
    Deadline,
    /// The machine is being stopped: the runner got SIGTERM or SIGINT.
    Shutdown,
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cancelled => "the job was cancelled",
            Self::Superseded => "the attempt is no longer current",
            Self::Deadline => "the job's timeout is near",
            Self::Shutdown => "the machine is stopping",
        })
    }
}

/// How long before the job's timeout the [`StopReason::Deadline`] signal
/// comes: a tenth of the timeout, at most 5 s. Long enough to save work,
/// short enough not to waste much of the budget of a job that ignores it.
pub fn wrap_up_window(timeout: Duration) -> Duration {
    (timeout / 10).min(Duration::from_secs(5))
}

/// The sending side of a stop signal.
pub(crate) type StopSender = watch::Sender<Option<StopReason>>;

/// Records `reason` unless a stop was already requested.
fn request(stop: &StopSender, reason: StopReason) {
    stop.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            tracing::info!(%reason, "asking the handler to stop");
            *current = Some(reason);
        }
        first
    });
}

/// Heartbeats every `every` and turns a cancel request, a stale attempt,
/// the wrap-up time and `shutdown` into a stop request. Runs until it is
/// dropped (or aborted) when the handler is done.
pub(crate) async fn watch_attempt(
    store: Store,
    attempt: AttemptRef,
    every: Duration,
    wrap_up_in: Duration,
    shutdown: impl Future<Output = ()>,
    stop: StopSender,
) -> Infallible {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    let wrap_up = tokio::time::sleep(wrap_up_in);
    tokio::pin!(wrap_up, shutdown);
    let (mut wrap_up_pending, mut shutdown_pending) = (true, true);
    loop {
        tokio::select! {
            _ = tick.tick() => match store.heartbeat(&attempt).await {
                Ok(Heartbeat::Alive) => {}
                Ok(Heartbeat::CancelRequested) => request(&stop, StopReason::Cancelled),
                Ok(Heartbeat::Stale) => request(&stop, StopReason::Superseded),
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            },
            _ = &mut wrap_up, if wrap_up_pending => {
                wrap_up_pending = false;
                request(&stop, StopReason::Deadline);
            }
            _ = &mut shutdown, if shutdown_pending => {
                shutdown_pending = false;
                request(&stop, StopReason::Shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrap_up_window_is_a_tenth_of_the_timeout_at_most_five_seconds() {
        let secs = Duration::from_secs;
        assert_eq!(wrap_up_window(secs(1)), Duration::from_millis(100));
        assert_eq!(wrap_up_window(secs(30)), secs(3));
        assert_eq!(wrap_up_window(secs(50)), secs(5));
        assert_eq!(wrap_up_window(secs(600)), secs(5));
    }

    #[test]
    fn the_first_reason_sticks() {
        let (tx, rx) = watch::channel(None);
        request(&tx, StopReason::Deadline);
        request(&tx, StopReason::Cancelled);
        assert_eq!(*rx.borrow(), Some(StopReason::Deadline));
    }
}
