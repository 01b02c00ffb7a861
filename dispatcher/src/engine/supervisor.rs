//! The supervisor: sees one attempt through, from machine to outcome.
//!
//! 1. Create the attempt's machine (deterministic name, runner as
//!    `init.exec`, `auto_destroy`, `restart: no`) and record its id.
//! 2. Wait for whichever comes first: the runner's report (pub/sub, the
//!    fast path), the machine going down (the Machines API `wait`, which
//!    catches crashes and OOM kills at once), the runner's silence on a
//!    machine that is no longer running, a cancel request, or the deadline.
//!    A `wait` is an open connection for the machine's whole life, so only
//!    `--max-watches` machines get one; in a larger fleet the others learn
//!    of a crash from the silence, a heartbeat interval or so later.
//! 3. Turn that into the attempt's [`Outcome`] and finish the attempt,
//!    which moves the job on (succeeded, retry later, dead letter, ...).
//! 4. Destroy the machine, retrying until it is gone (unless the API
//!    already showed it destroyed: `auto_destroy` does that when the
//!    runner exits), and free the slot.
//!
//! A supervisor can also resume an attempt another dispatcher started and
//! abandoned (it died, or handed the lease back on shutdown): it picks up
//! the recorded machine, or finds it by its metadata when the crash came
//! between "create" and "record", and carries on from step 2.
//!
//! **Fencing.** A supervisor acts for its attempt only while it owns it
//! ([`Owned`]: the epoch of its claim or takeover). Every store write it
//! makes carries the epoch, and it confirms ownership right before each
//! Machines API call with side effects (create, stop). When the store
//! refuses one, or a lease renewal is refused, a peer has taken the
//! attempt over (this dispatcher was paused or cut off past its lease):
//! the supervisor stops where it is, leaving the machine and the job to
//! the new owner. A create that meets the attempt's own machine (the name
//! is taken) adopts it rather than failing the attempt.
//!
//! **Cancels are state.** The job's `cancel_requested` flag, not only the
//! cancel message, decides: it is read back when the machine is about to
//! be created and when it is recorded (so an owner that took over after
//! the message went out still honours it), and the store ends an attempt
//! of a job whose cancel was requested as `cancelled` however it ended.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use jobs::{
    AttemptRef, EventKind, Fenced, Job, JobId, JobStatus, Outcome, Owned, Recorded, ReportKind,
    Store, StoreError,
};
use machines::{
    CreateMachineRequest, GoDuration, Guest, Init, ListFilter, MachineConfig, MachineState,
    MachinesClient, MachinesError, Restart, RestartPolicy, StopConfig, StopRequest, WaitOutcome,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::configuration::LaunchSettings;
use crate::engine::hub::{EventHub, Subscription};
use crate::engine::leases::{Held, Leases, Renewal};
use crate::engine::pool::source::{self as pooled, MachineSource};
use crate::engine::pool::PoolSpec;

/// Everything supervisors share.
pub struct Supervision {
    pub store: Store,
    pub machines: MachinesClient,
    pub hub: EventHub,
    pub leases: Arc<Leases>,
    pub launch: LaunchSettings,
    pub owner: String,
    pub callbacks: crate::engine::callbacks::Callbacks,
    /// Free watch slots (`--max-watches`): machines watched at once with a
    /// `wait` long-poll.
    pub watches: Arc<Semaphore>,
}

impl Supervision {
    /// Whether `attempt` is still this dispatcher's, asked right before a
    /// step that acts on its machine (a create try, a pooled start, a
    /// stop); extends the lease. `Done(true)`: still ours, cancel asked.
    /// Store errors are retried a while: acting on a machine without the
    /// store's word could touch one a peer now owns.
    pub(crate) async fn confirm(&self, attempt: &Owned) -> Result<Fenced<bool>, StoreError> {
        with_store_retries(|| self.store.confirm(attempt, self.launch.lease)).await
    }
}

/// How the attempt ended, before it is written down.
#[derive(Debug)]
struct Ending {
    outcome: Outcome,
    exit_code: Option<i32>,
    error: Option<String>,
    /// The API showed the machine destroyed, so no destroy call is needed.
    machine_destroyed: bool,
}

/// Where a supervisor starts.
#[derive(Debug)]
pub enum Start {
    /// A freshly claimed attempt: create its machine.
    Fresh,
    /// An attempt taken over from another dispatcher.
    Resume,
}

/// What the supervisor saw first.
enum Signal {
    Reported,
    MachineDown,
    /// The runner went silent and the machine is not running.
    Silent,
    CancelRequested,
    Deadline,
}

/// What a supervisor keeps of its job once the machine is asked for. The
/// job itself (params, history) is dropped then, so ten thousand
/// supervisors stay small.
struct Terms {
    timeout_secs: u64,
    /// The wait before the next attempt, should this one fail.
    retry_delay: Duration,
    has_callback: bool,
}

impl Terms {
    fn of(job: &Job, attempt: &AttemptRef) -> Self {
        let failures = attempt.attempt.saturating_sub(job.attempt_base).max(1);
        Self {
            timeout_secs: job.timeout_secs,
            retry_delay: crate::engine::retry::delay(&job.backoff, failures),
            has_callback: job.callback_url.is_some(),
        }
    }
}

/// The supervisor no longer owns its attempt: a peer took it over. Names
/// the step whose write (or confirmation) the store refused.
#[derive(Debug)]
pub(crate) struct Lost(&'static str);

/// Counts a refusal as it is met.
pub(crate) fn lost(step: &'static str) -> Lost {
    crate::metrics::fence_refused(step);
    Lost(step)
}

/// Sees `attempt` of `job` through to the end, or until a peer takes it
/// over. Never panics on API or store errors: every path that still owns
/// the attempt ends with the machine destroyed.
/// Logs carry the job, attempt and kind through the launcher's span.
///
/// Each step is boxed: a task is as large as its largest step, and only
/// the watch lasts, so boxing keeps the thousands of sleeping supervisors
/// of a large fleet to the watch's size.
pub async fn supervise(shared: Arc<Supervision>, job: Job, attempt: Owned, start: Start) {
    let began = std::time::Instant::now();
    // Subscribe before anything happens so no event can slip by.
    let mut events = shared.hub.subscribe(job.id);
    // Renewed from the start: creating the machine can take longer than
    // a lease when the Machines API is slow or many attempts start at once.
    let lease = shared.leases.hold(&attempt);
    let taken_over = lease.lost();
    let seen_through = see_through(&shared, job, &attempt, start, &mut events, lease, began);
    let refused = tokio::select! {
        biased;
        () = taken_over => "renew",
        done = Box::pin(seen_through) => match done {
            Ok(()) => return,
            Err(Lost(step)) => step,
        },
    };
    tracing::warn!(
        refused = refused,
        "a peer took this attempt over; leaving its machine and its job to it"
    );
}

/// The steps, for as long as the attempt is this dispatcher's.
async fn see_through(
    shared: &Supervision,
    job: Job,
    attempt: &Owned,
    start: Start,
    events: &mut Subscription,
    mut lease: Held,
    began: std::time::Instant,
) -> Result<(), Lost> {
    let terms = Terms::of(&job, attempt);
    let machine = Box::pin(machine_of(shared, job, attempt, start)).await?;
    let (ending, machine) = match machine {
        Err(ending) => (ending, None),
        Ok((machine_id, region, instance_id, source)) => {
            crate::metrics::machine_started(source, began.elapsed());
            let recorded = Box::pin(with_store_retries(|| {
                shared.store.record_machine(attempt, &machine_id, &region)
            }))
            .await;
            let ending = match recorded {
                Ok(Fenced::Lost) => return Err(lost("record_machine")),
                Ok(Fenced::Done(Recorded::Recorded { cancel_requested })) => {
                    let watching = Watching {
                        shared,
                        terms: &terms,
                        attempt,
                        machine_id: &machine_id,
                        instance_id: instance_id.as_deref(),
                    };
                    Box::pin(watching.watch(events, &mut lease, cancel_requested)).await?
                }
                // Superseded meanwhile: finishing is a no-op.
                Ok(Fenced::Done(Recorded::Stale)) | Err(_) => Ending {
                    outcome: Outcome::Cancelled,
                    exit_code: None,
                    error: None,
                    machine_destroyed: false,
                },
            };
            (ending, Some((machine_id, source)))
        }
    };
    Box::pin(finish(
        shared, &terms, attempt, ending, machine, lease, began,
    ))
    .await
}

/// Step 1: the attempt's machine (id, region, source): a pooled one
/// claimed and started, else one created afresh, or, for an attempt taken
/// over, the one already there. Consumes the job: nothing later needs it.
/// No machine is created for a job whose cancel was requested, nor by a
/// dispatcher that no longer owns the attempt.
async fn machine_of(
    shared: &Supervision,
    job: Job,
    attempt: &Owned,
    start: Start,
) -> Result<Result<(String, String, Option<String>, MachineSource), Ending>, Lost> {
    let known = match start {
        Start::Fresh => pooled::claim(shared, &job, attempt)
            .await?
            .map(|(id, region)| (id, region, MachineSource::Pooled)),
        Start::Resume => match resumable_machine(shared, &job, attempt).await {
            Some(id) => {
                let source = pooled::resume(shared, attempt, &id).await?;
                Some((id, String::new(), source))
            }
            None => None,
        },
    };
    match known {
        Some((id, region, source)) => Ok(Ok((id, region, None, source))),
        None => Ok(create_machine(shared, &job, attempt)
            .await?
            .map(|(id, region, instance_id)| (id, region, instance_id, MachineSource::Created))),
    }
}

/// Step 3 and 4: writes the attempt's end down (which moves the job on),
/// destroys the machine (or returns a pooled one to its pool) and frees
/// the slot.
async fn finish(
    shared: &Supervision,
    terms: &Terms,
    attempt: &Owned,
    ending: Ending,
    machine: Option<(String, MachineSource)>,
    lease: Held,
    began: std::time::Instant,
) -> Result<(), Lost> {
    let machine_id = machine.as_ref().map(|(id, _)| id.clone());
    let finished = with_store_retries(|| {
        shared.store.finish_attempt(
            attempt,
            ending.outcome,
            ending.exit_code,
            ending.error.as_deref(),
            terms.retry_delay,
        )
    })
    .await;
    match finished {
        Ok(Fenced::Lost) => return Err(lost("finish_attempt")),
        Ok(Fenced::Done(Some(jobs::Finished { status, log }))) => {
            // The store ends the attempts of a cancelled job `cancelled`.
            let outcome = match status {
                JobStatus::Cancelled => Outcome::Cancelled,
                _ => ending.outcome,
            };
            crate::engine::terminal::on_terminal(
                &shared.store,
                &shared.callbacks,
                attempt.job_id,
                status,
                terms.has_callback,
            )
            .await;
            crate::metrics::attempt_finished(outcome, began.elapsed(), !status.is_terminal());
            crate::metrics::attempt_logged(&log);
            tracing::info!(
                %outcome,
                exit_code = ending.exit_code,
                machine = machine_id.as_deref().unwrap_or("-"),
                %status,
                "attempt finished"
            );
        }
        Ok(Fenced::Done(None)) => {
            tracing::info!(outcome = %ending.outcome, "attempt was no longer current")
        }
        Err(e) => tracing::error!(error = %e, "could not record the attempt's end"),
    }

    // The attempt is closed: a peer that takes it over from here on only
    // cleans up, so destroying the machine needs no further confirmation.
    match &machine {
        Some((id, MachineSource::Pooled)) => {
            pooled::dispose(
                shared,
                attempt,
                id,
                ending.outcome,
                ending.machine_destroyed,
            )
            .await
        }
        Some((id, MachineSource::Created)) if ending.machine_destroyed => {
            tracing::info!(machine = %id, "machine destroyed itself (auto_destroy)")
        }
        Some((id, MachineSource::Created)) => destroy(&shared.machines, id).await,
        None => {}
    }
    release(shared, attempt, lease).await
}

/// Frees the attempt's slot. The lease goes first, so no renewal that
/// races the release can report the freed slot as lost.
async fn release(shared: &Supervision, attempt: &Owned, lease: Held) -> Result<(), Lost> {
    drop(lease);
    match with_store_retries(|| shared.store.release(attempt)).await {
        Ok(Fenced::Done(())) => Ok(()),
        Ok(Fenced::Lost) => Err(lost("release")),
        Err(e) => {
            tracing::error!(error = %e, "could not free the machine slot");
            Ok(())
        }
    }
}

/// Step 1: create the attempt's machine. The client retries 429/5xx, and
/// the store confirms before every try that the attempt is still this
/// dispatcher's and its job not cancelled: a retry can come long after the
/// claim. A confirmation holds for half a lease from when it was asked
/// (no peer can take the attempt over before the lease it just extended
/// runs out), so a try the process was paused before sending, past that,
/// is not sent but confirmed afresh. The client adopts the attempt's own
/// machine when a create finds its name taken or its answer was lost (an
/// earlier try, or a previous owner's), so an attempt never fails for its
/// own machine. A failure here ends the attempt as `boot_failed`.
/// Returns the machine's id, region and `instance_id` (for `wait`).
async fn create_machine(
    shared: &Supervision,
    job: &Job,
    attempt: &Owned,
) -> Result<Result<(String, String, Option<String>), Ending>, Lost> {
    /// Confirmations that ran out before their try was sent, in a row.
    const STALE_CONFIRMATIONS: usize = 5;
    let still_wanted = || async {
        let asked = Instant::now();
        matches!(shared.confirm(attempt).await, Ok(Fenced::Done(false)))
            .then(|| asked + shared.launch.lease / 2)
    };
    let ending = |outcome, error: String| Ending {
        outcome,
        exit_code: None,
        error: Some(error),
        machine_destroyed: false,
    };
    let request = machine_request(shared, job, attempt);
    let mut created = Err(MachinesError::Withdrawn);
    for _ in 0..STALE_CONFIRMATIONS {
        let fallback = &job.machine.fallback_regions;
        created =
            crate::engine::placement::create(&shared.machines, &request, fallback, &still_wanted)
                .await;
        let Err(MachinesError::Withdrawn) = created else {
            break;
        };
        match shared.confirm(attempt).await {
            Ok(Fenced::Lost) => return Err(lost("create")),
            Ok(Fenced::Done(true)) => {
                return Ok(Err(ending(
                    Outcome::Cancelled,
                    "cancelled before its machine was created".into(),
                )))
            }
            // Still ours: the confirmation ran out before the try was sent.
            Ok(Fenced::Done(false)) => continue,
            Err(_) => break,
        }
    }
    Ok(match created {
        Ok(machine) => {
            tracing::info!(machine = %machine.id, region = %machine.region, "machine created");
            if let Some(pause) = shared.launch.pause_after_create {
                tracing::warn!(?pause, "test hook: pausing between create and record");
                tokio::time::sleep(pause).await;
            }
            let instance_id = Some(machine.instance_id).filter(|i| !i.is_empty());
            Ok((machine.id, machine.region, instance_id))
        }
        // Without the store's word, creating could boot a second machine
        // for an attempt a peer already owns.
        Err(MachinesError::Withdrawn) => Err(ending(
            Outcome::BootFailed,
            "could not confirm with the job store that the attempt was still this dispatcher's"
                .into(),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "machine could not be created");
            Err(ending(
                Outcome::BootFailed,
                format!("machine could not be created: {e}"),
            ))
        }
    })
}

/// The machine of an attempt taken over: the recorded one, else the one
/// carrying the attempt's metadata (the previous owner died between
/// "create" and "record"). `None` means it was never created.
async fn resumable_machine(
    shared: &Supervision,
    job: &Job,
    attempt: &AttemptRef,
) -> Option<String> {
    let recorded = job
        .attempts
        .iter()
        .find(|a| a.number == attempt.attempt)
        .and_then(|a| a.machine_id.clone());
    if recorded.is_some() {
        return recorded;
    }
    let found = find_machine(&shared.machines, &shared.store, job.id, attempt.attempt).await;
    if let Some(id) = &found {
        tracing::info!(machine = %id, "adopted a machine created but never recorded");
    }
    found
}

/// Finds an attempt's machine by its metadata: a live one if any, else a
/// destroyed one (it ran and ended; its exit and the runner's report tell
/// how), else `None` (it was never created).
pub async fn find_machine(
    machines: &MachinesClient,
    store: &Store,
    job: JobId,
    attempt: u32,
) -> Option<String> {
    let filter = ListFilter {
        include_deleted: true,
        metadata: vec![
            ("job_id".into(), job.to_string()),
            ("attempt".into(), attempt.to_string()),
            ("jobs_namespace".into(), store.namespace().to_string()),
        ],
        ..ListFilter::default()
    };
    let found = (|| machines.list(&filter))
        .retry(ExponentialBuilder::default().with_max_times(5))
        .await;
    match found {
        Ok(list) => list
            .iter()
            .find(|m| m.state != MachineState::Destroyed)
            .or(list.first())
            .map(|m| m.id.clone()),
        Err(e) => {
            tracing::warn!(error = %e, "could not look for the attempt's machine");
            None
        }
    }
}

/// An attempt taken over that is no longer current (its job moved on
/// before the previous owner could clean up): destroy its machine, if any,
/// and free the slot.
pub async fn clean_up(
    shared: Arc<Supervision>,
    job: JobId,
    attempt: Owned,
    machine: Option<String>,
) {
    let lease = shared.leases.hold(&attempt);
    let machine = match machine {
        Some(id) => Some(id),
        None => find_machine(&shared.machines, &shared.store, job, attempt.attempt).await,
    };
    if let Some(id) = &machine {
        // A pooled machine is destroyed too (never reused: how its attempt
        // ended is unknown); a created one has no pool record.
        pooled::dispose(&shared, &attempt, id, Outcome::Lost, false).await;
    }
    let released = release(&shared, &attempt, lease).await;
    tracing::info!(
        machine = machine.as_deref().unwrap_or("-"),
        lost = released.is_err(),
        "cleaned up an abandoned attempt"
    );
}

/// One recorded machine being watched (steps 2 and 3).
struct Watching<'a> {
    shared: &'a Supervision,
    terms: &'a Terms,
    attempt: &'a Owned,
    machine_id: &'a str,
    /// The version `wait` waits on, when the create answer gave it (a
    /// resumed attempt waits without one).
    instance_id: Option<&'a str>,
}

impl Watching<'_> {
    /// Waits for the end of the running machine and judges it.
    ///
    /// The machine is watched with a `wait` long-poll only while a watch
    /// slot is free (`--max-watches`); none is waited for. Unwatched, a
    /// crash shows as the runner's silence, confirmed with one `get`.
    /// `cancel_requested`: the store already said so, so no message is
    /// waited for.
    async fn watch(
        self,
        events: &mut Subscription,
        lease: &mut Held,
        cancel_requested: bool,
    ) -> Result<Ending, Lost> {
        let shared = self.shared;
        let deadline = Instant::now()
            + Duration::from_secs(self.terms.timeout_secs)
            + shared.launch.timeout_grace;
        // Held until the watch ends, with this function.
        let slot = shared.watches.clone().try_acquire_owned().ok();
        let mut down = slot.is_some().then(|| {
            Box::pin(wait_until_down(
                &shared.machines,
                self.machine_id,
                self.instance_id,
            ))
        });
        let signal = match cancel_requested {
            true => Signal::CancelRequested,
            false => self.first_signal(deadline, events, lease, &mut down).await,
        };
        // Boxed: what follows is large and short-lived (see `supervise`).
        Box::pin(self.conclude(signal, down)).await
    }

    /// Waits for whichever comes first: the runner's report, the machine
    /// going down, its runner's silence, a cancel request or the deadline.
    /// After the event hub dropped messages, the report and the cancel
    /// flag are re-read from the store.
    async fn first_signal(
        &self,
        deadline: Instant,
        events: &mut Subscription,
        lease: &mut Held,
        down: &mut Option<Pin<Box<impl Future<Output = ()>>>>,
    ) -> Signal {
        let (shared, attempt, machine_id) = (self.shared, self.attempt, self.machine_id);
        let deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(deadline);
        loop {
            // Events first: when the machine is already down, the runner's
            // queued events (running, its report) are still seen in order.
            tokio::select! {
                biased;
                e = events.recv() => match e {
                    e if e.kind == EventKind::Report && e.attempt == Some(attempt.attempt) => return Signal::Reported,
                    e if e.kind == EventKind::Cancel => return Signal::CancelRequested,
                    e if e.kind == EventKind::Resync => {
                        match shared.store.missed_signals(attempt).await {
                            Ok((Some(_), _)) => return Signal::Reported,
                            Ok((None, true)) => return Signal::CancelRequested,
                            Ok((None, false)) => {}
                            Err(e) => tracing::warn!(error = %e, "could not re-read the attempt after the event hub lagged"),
                        }
                    }
                    e if e.kind == EventKind::Status
                        && e.status == Some(JobStatus::Running)
                        && e.attempt == Some(attempt.attempt) =>
                    {
                        tracing::info!(machine = machine_id, status = %JobStatus::Running, "attempt running");
                    }
                    _ => {}
                },
                _ = until_down(down) => return Signal::MachineDown,
                _ = &mut deadline => return Signal::Deadline,
                renewal = lease.renewed() => match renewal {
                    Renewal::Renewed { silent } if silent > shared.launch.lost_after => {
                        if !Box::pin(machine_running(&shared.machines, machine_id)).await {
                            return Signal::Silent;
                        }
                    }
                    // A lost lease ends the whole supervisor (see `supervise`).
                    Renewal::Renewed { .. } | Renewal::Failed | Renewal::Lost => {}
                },
            }
        }
    }

    /// Turns what was seen first into the attempt's [`Ending`]; `down` is
    /// the watch, if the machine had one. The machine is stopped only
    /// while the attempt is still this dispatcher's.
    async fn conclude(
        &self,
        signal: Signal,
        down: Option<Pin<Box<impl Future<Output = ()>>>>,
    ) -> Result<Ending, Lost> {
        let (shared, attempt, machine_id) = (self.shared, self.attempt, self.machine_id);
        match signal {
            Signal::Reported => {
                // The runner exits right after reporting; its exit code
                // completes the record. Don't wait forever for it.
                let exited = async {
                    match down {
                        Some(down) => down.await,
                        None => {
                            wait_until_down(&shared.machines, machine_id, self.instance_id).await
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(30), exited).await;
                Ok(judge(shared, attempt, machine_id).await)
            }
            Signal::MachineDown | Signal::Silent => Ok(judge(shared, attempt, machine_id).await),
            Signal::CancelRequested | Signal::Deadline => {
                if let Ok(Fenced::Lost) = shared.confirm(attempt).await {
                    return Err(lost("stop"));
                }
                // A report that raced the cancel or deadline wins: the work is done.
                if let Ok(Some(_)) = shared.store.report_kind(attempt).await {
                    stop(&shared.machines, machine_id, self.instance_id).await;
                    return Ok(judge(shared, attempt, machine_id).await);
                }
                stop(&shared.machines, machine_id, self.instance_id).await;
                let remains = remains_of(&shared.machines, machine_id).await;
                let exit_code = remains.exit.map(|e| e.exit_code);
                let (outcome, error) = match signal {
                    Signal::Deadline => (
                        Outcome::TimedOut,
                        format!(
                            "timed out after {}s; machine stopped",
                            self.terms.timeout_secs
                        ),
                    ),
                    _ => (
                        Outcome::Cancelled,
                        "cancelled by request; machine stopped".into(),
                    ),
                };
                Ok(Ending {
                    outcome,
                    exit_code,
                    error: Some(error),
                    machine_destroyed: remains.destroyed,
                })
            }
        }
    }
}

/// Resolves when the watch sees the machine down; never, unwatched.
async fn until_down(down: &mut Option<Pin<Box<impl Future<Output = ()>>>>) {
    match down {
        Some(down) => down.await,
        None => std::future::pending().await,
    }
}

/// Reads the runner's report and the machine's exit and names the outcome.
async fn judge(shared: &Supervision, attempt: &AttemptRef, machine_id: &str) -> Ending {
    let Remains {
        exit,
        destroyed,
        unreadable,
    } = remains_of(&shared.machines, machine_id).await;
    let exit_code = exit.as_ref().map(|e| e.exit_code);
    let report = with_store_retries(|| shared.store.report_kind(attempt)).await;
    let outcome = match report {
        Ok(Some(ReportKind::Result)) => Outcome::Succeeded,
        Ok(Some(ReportKind::Error)) => Outcome::Error,
        Ok(Some(ReportKind::TimedOut)) => Outcome::TimedOut,
        Ok(None) | Err(_) => match (&exit, &unreadable) {
            (Some(e), _) if e.oom_killed => Outcome::Oom,
            (Some(_), _) | (None, Some(_)) => Outcome::Crashed,
            (None, None) => Outcome::Lost,
        },
    };
    let error = match (outcome, &exit) {
        (Outcome::Oom, _) => Some("the machine ran out of memory and was killed".to_string()),
        (Outcome::Crashed, Some(e)) if e.signal > 0 => Some(format!(
            "the runner was killed by signal {} without reporting",
            e.signal
        )),
        (Outcome::Crashed, Some(e)) => Some(format!(
            "the runner exited with code {} without reporting",
            e.exit_code
        )),
        (Outcome::Crashed, None) => unreadable.map(|detail| {
            format!(
                "the runner did not report, and its machine's record could not be read ({detail})"
            )
        }),
        (Outcome::Lost, _) => {
            Some("the machine disappeared without an exit event or report".to_string())
        }
        _ => None,
    };
    Ending {
        outcome,
        exit_code,
        error,
        machine_destroyed: destroyed,
    }
}

/// Resolves when the machine is stopped, destroyed, failed or gone. Waits
/// are long-polls capped at 60 s by the API, so this loops.
async fn wait_until_down(machines: &MachinesClient, id: &str, instance_id: Option<&str>) {
    loop {
        match machines
            .wait(id, instance_id, &["stopped", "destroyed", "failed"], 60)
            .await
        {
            Ok(WaitOutcome::Reached(_)) | Ok(WaitOutcome::Gone) => return,
            Ok(WaitOutcome::TimedOut) => continue,
            Err(e) => {
                tracing::warn!(machine = id, error = %e, "waiting on the machine failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Whether the API says the machine is (still) up. Unknown counts as up:
/// only a clear answer may declare an attempt lost.
async fn machine_running(machines: &MachinesClient, id: &str) -> bool {
    match machines.get(id).await {
        Ok(machine) => !machine.state.is_down(),
        Err(e) if e.is_not_found() => false,
        Err(_) => true,
    }
}

/// What the API still knows of a machine that went down.
struct Remains {
    /// Its newest exit event.
    exit: Option<machines::ExitEvent>,
    /// Whether it is destroyed already (`auto_destroy` after the exit).
    destroyed: bool,
    /// The API answered with a machine lacking what a judgement needs
    /// (`MachinesError::Decode`): the machine did not vanish, so the
    /// attempt must not be called `lost`.
    unreadable: Option<String>,
}

async fn remains_of(machines: &MachinesClient, id: &str) -> Remains {
    match machines.get(id).await {
        Ok(machine) => Remains {
            exit: machine.last_exit().cloned(),
            destroyed: machine.state == MachineState::Destroyed,
            unreadable: None,
        },
        Err(e) => {
            let unreadable = matches!(e, machines::MachinesError::Decode { .. });
            if unreadable {
                tracing::error!(machine = id, error = %e, "the Machines API's answer lacks what judging the attempt needs");
            } else {
                tracing::debug!(machine = id, error = %e, "no exit event");
            }
            Remains {
                exit: None,
                destroyed: false,
                unreadable: unreadable.then(|| e.to_string()),
            }
        }
    }
}

/// Asks the machine to stop (SIGTERM, then SIGKILL after 5 s) and waits
/// for it to be down, so its exit is recorded before destruction.
pub(crate) async fn stop(machines: &MachinesClient, id: &str, instance_id: Option<&str>) {
    let request = StopRequest {
        signal: Some("SIGTERM".into()),
        timeout: Some(GoDuration(Duration::from_secs(5))),
    };
    if let Err(e) = machines.stop(id, &request).await {
        tracing::debug!(machine = id, error = %e, "stop failed; destroying with force");
        return;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(15),
        wait_until_down(machines, id, instance_id),
    )
    .await;
}

/// Destroys the machine, retrying until the API confirms it is gone: no
/// path may leave a machine behind.
pub(crate) async fn destroy(machines: &MachinesClient, id: &str) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let _ = (|| machines.destroy(id, true))
        .retry(backoff)
        .notify(|e, _| tracing::warn!(machine = id, error = %e, "destroy failed; retrying"))
        .await;
    tracing::info!(machine = id, "machine destroyed");
}

/// Store calls a supervisor must not give up on lightly (the store may be
/// restarting): a few quick retries.
async fn with_store_retries<T, F, Fut>(call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(8);
    call.retry(backoff).await
}

/// The create request for an attempt's machine.
fn machine_request(shared: &Supervision, job: &Job, attempt: &AttemptRef) -> CreateMachineRequest {
    let launch = &shared.launch;
    // The machine's environment is the runner's alone: the job's `env`
    // and `secrets` reach job code through the runner (read from the
    // store), so no job-supplied variable can configure the runner.
    let mut env: BTreeMap<String, String> = runner_env(shared).collect();
    env.extend([
        ("JOB_ID".to_string(), job.id.to_string()),
        ("JOB_ATTEMPT".to_string(), attempt.attempt.to_string()),
        ("JOB_TOKEN".to_string(), attempt.token.clone()),
    ]);
    // Job machines carry no `fly_*` metadata, so `fly deploy` never
    // manages (or destroys) them; `role=job` is how the sweeper finds them.
    let metadata = BTreeMap::from([
        ("role".to_string(), "job".to_string()),
        (
            "jobs_namespace".to_string(),
            shared.store.namespace().to_string(),
        ),
        ("job_id".to_string(), job.id.to_string()),
        ("attempt".to_string(), attempt.attempt.to_string()),
        ("dispatcher".to_string(), shared.owner.clone()),
    ]);
    let image = job
        .machine
        .image
        .clone()
        .unwrap_or_else(|| launch.image.clone());
    let guest = Guest::new(
        &job.machine.cpu_kind,
        job.machine.cpus,
        job.machine.memory_mb,
    );
    CreateMachineRequest {
        name: Some(
            crate::engine::machine_name::JobMachineName {
                job: job.id,
                attempt: attempt.attempt,
            }
            .to_string(),
        ),
        region: job.machine.region.clone(),
        skip_secrets: true,
        config: runner_config(shared, image, guest, env, metadata, true),
        ..CreateMachineRequest::default()
    }
}

/// The create request for a machine of a warm pool: no attempt in its
/// environment (`JOB_POOLED=1`: the runner asks the store), no
/// `auto_destroy` (it stops between jobs), `role=pool` metadata.
pub(crate) fn pooled_machine_request(
    shared: &Supervision,
    spec: &PoolSpec,
    name: &str,
) -> CreateMachineRequest {
    let mut env: BTreeMap<String, String> = runner_env(shared).collect();
    env.insert("JOB_POOLED".into(), "1".into());
    let metadata = BTreeMap::from([
        ("role".to_string(), "pool".to_string()),
        (
            "jobs_namespace".to_string(),
            shared.store.namespace().to_string(),
        ),
        ("pool".to_string(), spec.key()),
        ("dispatcher".to_string(), shared.owner.clone()),
    ]);
    let guest = Guest::new(&spec.cpu_kind, spec.cpus, spec.memory_mb);
    CreateMachineRequest {
        name: Some(name.to_string()),
        region: spec.region.clone(),
        skip_secrets: true,
        config: runner_config(
            shared,
            shared.launch.image.clone(),
            guest,
            env,
            metadata,
            false,
        ),
        ..CreateMachineRequest::default()
    }
}

/// What every runner needs besides its attempt: the store and how to talk
/// to it.
fn runner_env(shared: &Supervision) -> impl Iterator<Item = (String, String)> + '_ {
    let launch = &shared.launch;
    launch.runner_env.iter().cloned().chain([
        (
            "JOBS_STORE_URL".to_string(),
            launch.runner_store_url.clone(),
        ),
        (
            "JOBS_NAMESPACE".to_string(),
            shared.store.namespace().to_string(),
        ),
        (
            "JOB_HEARTBEAT_MS".to_string(),
            launch.heartbeat.as_millis().to_string(),
        ),
    ])
}

/// A runner machine's config: the runner as `init.exec`, `restart: no`,
/// SIGTERM with a 5 s grace to stop.
fn runner_config(
    shared: &Supervision,
    image: String,
    guest: Guest,
    env: BTreeMap<String, String>,
    metadata: BTreeMap<String, String>,
    auto_destroy: bool,
) -> MachineConfig {
    MachineConfig {
        image,
        env,
        guest: Some(guest),
        auto_destroy,
        restart: Some(Restart {
            policy: RestartPolicy::No,
            max_retries: None,
        }),
        init: Some(Init {
            exec: Some(shared.launch.runner_exec.clone()),
            ..Init::default()
        }),
        metadata,
        stop_config: Some(StopConfig {
            signal: Some("SIGTERM".into()),
            timeout: Some(GoDuration(Duration::from_secs(5))),
        }),
        ..MachineConfig::default()
    }
}
