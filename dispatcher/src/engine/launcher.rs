//! The launcher: claims queued jobs while machine slots are free, takes
//! over attempts whose dispatcher died (the reaper), and runs one
//! [`supervisor`] per attempt.
//!
//! It sleeps until something may have changed: a job was queued, a slot
//! was freed or a lease handed back (all announced by the store's events),
//! a scheduled job comes due, or a one-second safety tick in case an event
//! was missed. While every slot is taken, a newly queued job changes
//! nothing, so then only a freed slot (or the tick) wakes it: intake does
//! not cost a claim per job when the fleet is full or launching is off
//! (`--max-machines 0`).
//!
//! On shutdown it hands every lease back, so a peer's reaper takes the
//! attempts over at once, and stops its supervisors. Their machines keep
//! running: the attempts are not lost, only their watcher changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jobs::{Claim, Fenced, Owned, TakeOver};
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use crate::engine::supervisor::{self, Start, Supervision};
use crate::shutdown::Shutdown;

/// Longest sleep between claims when nothing announces work.
const SAFETY_TICK: Duration = Duration::from_secs(1);
/// Expired leases are looked for at most this often.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// The supervisors this dispatcher runs, and the attempt each one owns.
#[derive(Default)]
struct Supervisors {
    tasks: JoinSet<()>,
    owned: HashMap<Id, Owned>,
}

impl Supervisors {
    fn spawn(
        &mut self,
        attempt: Owned,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.owned.insert(handle.id(), attempt);
    }

    fn reap_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => {
                    if e.is_panic() {
                        tracing::error!(error = %e, "a supervisor panicked; its lease will expire and a reaper takes over");
                    }
                    e.id()
                }
            };
            self.owned.remove(&id);
        }
    }
}

pub async fn run(shared: Arc<Supervision>, shutdown: Shutdown) {
    let wakeup = shared.hub.launcher_wakeup();
    let slot_freed = shared.hub.slot_freed();
    let renewer = tokio::spawn(shared.leases.clone().run());
    let mut supervisors = Supervisors::default();
    let mut last_reap = Instant::now() - REAP_EVERY;
    loop {
        if shutdown.is_triggered() {
            break;
        }
        supervisors.reap_finished();
        if last_reap.elapsed() >= REAP_EVERY {
            last_reap = Instant::now();
            reap(&shared, &mut supervisors).await;
        }

        let claim = shared
            .store
            .claim(
                shared.launch.max_machines,
                &shared.launch.kind_caps,
                &shared.owner,
                shared.launch.lease,
            )
            .await;
        let full = matches!(claim, Ok(Claim::Full));
        let sleep = match claim {
            Ok(Claim::Claimed { job, attempt }) => {
                let span = attempt_span(&attempt, job.kind.as_str());
                span.in_scope(|| tracing::info!(status = %job.status, "attempt claimed; creating its machine"));
                crate::metrics::job_claimed(time_in_queue(
                    &job,
                    attempt.attempt,
                    chrono::Utc::now(),
                ));
                let task =
                    supervisor::supervise(shared.clone(), *job, attempt.clone(), Start::Fresh);
                supervisors.spawn(attempt, task.instrument(span));
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
            _ = wakeup.notified(), if !full => {}
            _ = slot_freed.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.wait() => {}
        }
    }
    // Stop renewing first, so no renewal can extend a lease after it was
    // handed back (a renewal already sent runs before the hand-backs: one
    // connection keeps the order).
    renewer.abort();
    let _ = renewer.await;
    hand_back(&shared, supervisors).await;
}

/// Takes over attempts whose lease expired: their dispatcher died, hung,
/// or handed them back on its way out.
async fn reap(shared: &Arc<Supervision>, supervisors: &mut Supervisors) {
    let expired = match shared.store.expired_leases(100).await {
        Ok(expired) => expired,
        Err(e) => {
            tracing::debug!(error = %e, "looking for expired leases failed");
            return;
        }
    };
    for (job_id, attempt) in expired {
        let taken = shared
            .store
            .take_over(job_id, attempt, &shared.owner, shared.launch.lease)
            .await;
        let Ok(Some(TakeOver {
            job,
            current,
            owned: attempt,
            ..
        })) = taken
        else {
            continue;
        };
        let kind = job.as_ref().map_or("?", |j| j.kind.as_str()).to_string();
        let span = attempt_span(&attempt, &kind);
        span.in_scope(|| tracing::warn!(current, "took over an attempt whose lease expired"));
        match job {
            Some(job) if current => {
                let task =
                    supervisor::supervise(shared.clone(), *job, attempt.clone(), Start::Resume);
                supervisors.spawn(attempt, task.instrument(span));
            }
            job => {
                let machine = job
                    .and_then(|j| j.attempts.into_iter().find(|a| a.number == attempt.attempt))
                    .and_then(|a| a.machine_id);
                let task = supervisor::clean_up(shared.clone(), job_id, attempt.clone(), machine);
                supervisors.spawn(attempt, task.instrument(span));
            }
        }
    }
}

/// Shutdown: every lease goes back to the pool at once, then the
/// supervisors stop. A peer resumes each attempt where it stands.
async fn hand_back(shared: &Supervision, mut supervisors: Supervisors) {
    supervisors.reap_finished();
    if supervisors.owned.is_empty() {
        return;
    }
    tracing::info!(
        attempts = supervisors.owned.len(),
        "handing leases back to peers"
    );
    supervisors.tasks.abort_all();
    while supervisors.tasks.join_next().await.is_some() {}
    for attempt in supervisors.owned.values() {
        match shared.store.hand_back(attempt).await {
            // Lost: a peer owns it already, or it was just released.
            Ok(Fenced::Done(()) | Fenced::Lost) => {}
            Err(e) => {
                tracing::warn!(job = %attempt.job_id, error = %e, "could not hand the lease back; it will expire")
            }
        }
    }
}

fn attempt_span(attempt: &jobs::AttemptRef, kind: &str) -> tracing::Span {
    tracing::info_span!("attempt", job = %attempt.job_id, attempt = attempt.attempt, kind)
}

/// How long a claimed job waited since it became due: since it was
/// submitted, its `run_at` came, or its previous attempt ended (a retry),
/// whichever is latest.
fn time_in_queue(job: &jobs::Job, attempt: u32, now: chrono::DateTime<chrono::Utc>) -> Duration {
    let previous_end = job
        .attempts
        .iter()
        .filter(|a| a.number < attempt)
        .filter_map(|a| a.finished_at)
        .max();
    let due = [Some(job.created_at), job.run_at, previous_end]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now);
    (now - due).to_std().unwrap_or_default()
}
