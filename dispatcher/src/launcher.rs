//! The launcher: claims queued jobs while machine slots are free and hands
//! each claimed attempt to a [`supervisor`](crate::supervisor).
//!
//! It sleeps until something may have changed: a job was queued, a slot
//! was freed (both announced by the store's events), a scheduled job comes
//! due, or a one-second safety tick in case an event was missed.

use std::sync::Arc;
use std::time::Duration;

use jobs::Claim;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::shutdown::Shutdown;
use crate::supervisor::{self, Supervision};

/// Longest sleep between claims when nothing announces work.
const SAFETY_TICK: Duration = Duration::from_secs(1);

/// Runs until `shutdown`; returns the supervisors still at work so the
/// caller can decide how long to wait for them.
pub async fn run(shared: Arc<Supervision>, shutdown: Shutdown) -> JoinSet<()> {
    let wakeup = shared.hub.launcher_wakeup();
    let mut supervisors = JoinSet::new();
    loop {
        if shutdown.is_triggered() {
            break;
        }
        // Reap finished supervisors so the set does not grow.
        while supervisors.try_join_next().is_some() {}

        let claim = shared
            .store
            .claim(
                shared.launch.max_machines,
                &shared.owner,
                shared.launch.lease,
            )
            .await;
        let sleep = match claim {
            Ok(Claim::Claimed { job, attempt }) => {
                let span = tracing::info_span!("attempt", job = %job.id, attempt = attempt.attempt, kind = %job.kind);
                span.in_scope(|| tracing::info!("starting"));
                supervisors
                    .spawn(supervisor::supervise(shared.clone(), *job, attempt).instrument(span));
                continue;
            }
            Ok(Claim::Full) => SAFETY_TICK,
            Ok(Claim::Empty { next_due_in }) => {
                next_due_in.map_or(SAFETY_TICK, |due| due.min(SAFETY_TICK))
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming failed; will retry");
                SAFETY_TICK
            }
        };
        tokio::select! {
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.wait() => {}
        }
    }
    supervisors
}
