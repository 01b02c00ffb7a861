//! The supervisor's `MachineSource` step for pooled machines: claim and
//! start one, resume one after a takeover, and after the attempt return
//! it to the pool or destroy it.
//!
//! Crash safety rests on two store facts: the claim records the machine
//! on the attempt in the same step (so a successor finds it), and the
//! runner takes the claim once (so a machine started twice runs the job's
//! code once). A successor that finds the runner has not taken the claim
//! and the machine stopped starts it; if the dead owner's start lands too,
//! one of the two is refused (the machine is no longer stopped).

use jobs::{AttemptRef, Fenced, Job, Outcome, Owned, Released};
use machines::MachineState;

use super::{pool_for, target_of};
use crate::engine::supervisor::{destroy, lost, stop, Lost, Supervision};

/// Where an attempt's machine came from, which decides its end: a created
/// machine is destroyed, a pooled one goes back to its pool if it ended
/// cleanly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineSource {
    Created,
    Pooled,
}

impl MachineSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "cold",
            Self::Pooled => "warm",
        }
    }
}

/// Claims a ready machine of the pool `job` fits and starts it. Returns
/// its id and region; `None` sends the attempt down the create path (no
/// pool fits, none is ready, or the start failed: that machine is
/// destroyed and replaced, never reused). The start waits for the store
/// to confirm the attempt is still this dispatcher's: the machine is
/// bound to the attempt already, so a peer that took it over starts it.
pub(crate) async fn claim(
    shared: &Supervision,
    job: &Job,
    attempt: &Owned,
) -> Result<Option<(String, String)>, Lost> {
    let Some(spec) = pool_for(&shared.launch, job) else {
        return Ok(None);
    };
    let claimed = shared
        .store
        .pool_claim(&spec.key(), &shared.launch.image, attempt)
        .await;
    let id = match claimed {
        Ok(Some(id)) => id,
        Ok(None) => {
            tracing::debug!(pool = %spec.key(), "no pooled machine ready; creating one");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "claiming a pooled machine failed; creating one");
            return Ok(None);
        }
    };
    if let Some(pause) = shared.launch.pause_after_create {
        tracing::warn!(?pause, "test hook: pausing between claim and start");
        tokio::time::sleep(pause).await;
    }
    let region = spec.region.clone().unwrap_or_default();
    match shared.confirm(attempt).await {
        Ok(Fenced::Lost) => return Err(lost("start")),
        // Not started: the watch sees the cancel, and the machine is
        // replaced afterwards like any machine whose job did not report.
        Ok(Fenced::Done(true)) => return Ok(Some((id, region))),
        Ok(Fenced::Done(false)) | Err(_) => {}
    }
    match shared.machines.start(&id).await {
        Ok(()) => {
            tracing::info!(machine = %id, pool = %spec.key(), "pooled machine started");
            Ok(Some((id, region)))
        }
        Err(e) => {
            tracing::warn!(machine = %id, error = %e, "pooled machine failed to start; replacing it");
            retire(shared, &id).await;
            Ok(None)
        }
    }
}

/// The source of the recorded machine of an attempt taken over. A pooled
/// machine whose runner has not taken the claim and that is stopped was
/// never started (or its boot failed before the runner ran): start it.
pub(crate) async fn resume(
    shared: &Supervision,
    attempt: &Owned,
    id: &str,
) -> Result<MachineSource, Lost> {
    let record = match shared.store.pool_machine(id).await {
        Ok(Some(record)) if record.bound_to(attempt.job_id, attempt.attempt) => record,
        _ => return Ok(MachineSource::Created),
    };
    if !record.booted {
        if let Ok(Fenced::Lost) = shared.confirm(attempt).await {
            return Err(lost("start"));
        }
        match shared.machines.get(id).await {
            Ok(machine) if machine.state == MachineState::Stopped => {
                tracing::info!(
                    machine = id,
                    "starting the pooled machine the previous owner claimed"
                );
                if let Err(e) = shared.machines.start(id).await {
                    // Refused when the dead owner's start landed first;
                    // the watch tells either way.
                    tracing::info!(machine = id, error = %e, "start of a resumed pooled machine refused");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(machine = id, error = %e, "could not read a resumed pooled machine")
            }
        }
    }
    Ok(MachineSource::Pooled)
}

/// After the attempt: back to the pool when the runner reported and the
/// machine stopped by itself (a start boots it fresh from its image);
/// destroyed and replaced otherwise (crashed, oom, lost, timed out, won't
/// stop), or when its image is old or the pool is above its target.
pub async fn dispose(
    shared: &Supervision,
    attempt: &AttemptRef,
    id: &str,
    outcome: Outcome,
    destroyed: bool,
) {
    if destroyed {
        forget(shared, id).await;
        return;
    }
    let record = match shared.store.pool_machine(id).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            // Not the pool's (any more): an ordinary machine to destroy.
            destroy(&shared.machines, id).await;
            return;
        }
        Err(e) => {
            // The pool's upkeep retires machines bound to attempts that
            // hold no slot, so nothing leaks.
            tracing::warn!(machine = id, error = %e, "could not read the pooled machine's record");
            return;
        }
    };
    let reported = matches!(outcome, Outcome::Succeeded | Outcome::Error);
    let clean = reported && is_stopped(shared, id).await;
    let target = target_of(&shared.launch, &record.pool);
    let released = shared
        .store
        .pool_release(id, attempt, &shared.launch.image, target, clean)
        .await;
    match released {
        Ok(Released::Ready) => {
            tracing::info!(machine = id, pool = %record.pool, "machine back in the pool")
        }
        Ok(Released::Retire) => retire(shared, id).await,
        Ok(Released::Unknown) => {
            tracing::warn!(
                machine = id,
                "pooled machine no longer bound to this attempt; left alone"
            )
        }
        Err(e) => {
            tracing::warn!(machine = id, error = %e, "could not return the machine to its pool")
        }
    }
}

/// Whether the machine is stopped, stopping it first if it is not.
async fn is_stopped(shared: &Supervision, id: &str) -> bool {
    let state = |m: machines::Machine| m.state;
    match shared.machines.get(id).await.map(state) {
        Ok(MachineState::Stopped) => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    stop(&shared.machines, id, None).await;
    matches!(
        shared.machines.get(id).await.map(state),
        Ok(MachineState::Stopped)
    )
}

/// Destroys a pooled machine and takes it out of its pool (which is then
/// refilled).
pub async fn retire(shared: &Supervision, id: &str) {
    destroy(&shared.machines, id).await;
    forget(shared, id).await;
}

async fn forget(shared: &Supervision, id: &str) {
    if let Err(e) = shared.store.pool_forget(id).await {
        tracing::warn!(machine = id, error = %e, "could not take the machine out of its pool");
    }
}
