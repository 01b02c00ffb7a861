//! The life of a booted machine: one task per run.
//!
//! [`boot`] starts a run. Its task waits out the latency model, enters
//! `starting`, launches the guest, enters `started`, awaits the guest's end,
//! records the `exit` event and then applies, in this order: a pending
//! stop/suspend/reboot request, the restart policy, and `auto_destroy`.
//!
//! The API side never touches processes except through [`GuestControl`]
//! signals; all state changes of a run happen here, under the store lock,
//! after checking that the run is still the machine's current one
//! (`generation`), so a destroyed or re-booted machine is never changed by
//! a stale task.

use std::sync::Arc;
use std::time::Duration;

use machines::{EventRequest, ExitEvent, MachineState, RestartPolicy};
use rand::Rng;
use tokio::sync::watch;

use crate::faults::BootFault;
use crate::guest::{self, Exit, GuestControl, LaunchSpec};
use crate::launch;
use crate::scratch;
use crate::server::Shared;
use crate::state::{MachineEntry, Run, StopIntent};

/// Fly's default for `restart.max_retries` under `on-failure`.
const DEFAULT_MAX_RETRIES: u32 = 10;

/// Starts a new run of `entry` (which must not be running). The first boot
/// of a machine waits out the create latency; later ones only the start
/// latency.
pub fn boot(shared: &Arc<Shared>, entry: &mut MachineEntry, first_boot: bool) {
    entry.generation += 1;
    entry.restart_count = 0;
    let (done_tx, done_rx) = watch::channel(false);
    entry.run = Some(Run {
        attempt: 0,
        guest: None,
        stop: None,
        done: done_rx,
    });
    let task = run(
        shared.clone(),
        Current {
            app: entry.app.clone(),
            id: entry.id().to_string(),
            generation: entry.generation,
        },
        first_boot,
    );
    let (shared, app, id) = (shared.clone(), entry.app.clone(), entry.id().to_string());
    tokio::spawn(async move {
        task.await;
        let gone = shared
            .with_machine(&app, &id, |e| e.state() == MachineState::Destroyed)
            .unwrap_or(true);
        if gone {
            let root = shared.scratch.path_of(&id);
            let _ = tokio::task::spawn_blocking(move || scratch::remove(&root)).await;
        }
        done_tx.send_replace(true);
    });
}

/// Asks a running machine to go down: sends `signal` now and SIGKILL after
/// `timeout` if the same guest is still there.
pub fn request_stop(
    shared: &Arc<Shared>,
    entry: &mut MachineEntry,
    intent: StopIntent,
    signal: i32,
    timeout: Duration,
) {
    let Some(run) = entry.run.as_mut() else {
        return;
    };
    run.stop = Some(intent);
    let Some(guest) = run.guest.clone() else {
        return;
    };
    let attempt = run.attempt;
    guest.signal(signal);
    let current = Current {
        app: entry.app.clone(),
        id: entry.id().to_string(),
        generation: entry.generation,
    };
    let shared = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        shared.with_machine(&current.app, &current.id, |e| {
            let run = e
                .run
                .as_ref()
                .filter(|r| r.attempt == attempt && r.stop.is_some());
            if let (true, Some(guest)) = (current.is(e), run.and_then(|r| r.guest.as_ref())) {
                tracing::info!(machine_id = %current.id, "stop timeout passed; sending SIGKILL");
                guest.signal(libc::SIGKILL);
            }
        });
    });
}

/// Identifies the run a task belongs to.
struct Current {
    app: String,
    id: String,
    generation: u64,
}

impl Current {
    /// Whether `entry`'s current run is still this one.
    fn is(&self, entry: &MachineEntry) -> bool {
        entry.generation == self.generation && entry.run.is_some()
    }
}

/// What the run does after its guest ended.
enum Next {
    /// Launch again after this pause (restart backoff; zero for reboots).
    LaunchAgain(Duration),
    Finish,
}

async fn run(shared: Arc<Shared>, current: Current, first_boot: bool) {
    let fault = shared.faults.draw_boot_fault();
    if fault == BootFault::NeverBoot {
        tracing::info!(machine_id = %current.id, "fault: this machine never boots");
        return;
    }
    if first_boot {
        tokio::time::sleep(shared.config.latency.create.draw()).await;
    }
    loop {
        // `starting`, and what to launch.
        let spec = shared.with_machine(&current.app, &current.id, |e| {
            if !current.is(e) {
                return None;
            }
            // A start through the API entered `starting` already.
            if e.state() != MachineState::Starting {
                e.enter(MachineState::Starting, "start", "flyd");
            }
            Some(launch_spec(&shared, e))
        });
        let Some(Some(spec)) = spec else { return };
        let root = shared.scratch.path_of(&current.id);
        let wiped = tokio::task::spawn_blocking(move || scratch::wipe(&root)).await;
        if let Ok(Err(e)) | Err(e) = wiped.map_err(std::io::Error::other) {
            tracing::warn!(machine_id = %current.id, error = %e, "could not wipe the scratch root");
        }
        tokio::time::sleep(shared.config.latency.start.draw()).await;

        let guest = match guest::launch(&shared.config.boot, spec, &shared.watchdog) {
            Ok(guest) => guest,
            Err(reason) => {
                shared.with_machine(&current.app, &current.id, |e| {
                    if current.is(e) {
                        launch_failed(e, &reason);
                    }
                });
                return;
            }
        };
        shared.counters.boot();
        let control = guest.control.clone();
        let adopted = shared
            .with_machine(&current.app, &current.id, |e| {
                adopt(e, &current, control.clone())
            })
            .unwrap_or(false);
        if !adopted {
            // Destroyed or cancelled while launching.
            control.signal(libc::SIGKILL);
        } else if matches!(fault, BootFault::Crash | BootFault::Oom) {
            schedule_crash(control, fault);
        }

        let exit = guest.exit.await;
        shared.counters.exit(exit.oom_killed);
        let next =
            shared.with_machine(&current.app, &current.id, |e| after_exit(e, &current, exit));
        match next {
            Some(Next::LaunchAgain(pause)) => tokio::time::sleep(pause).await,
            _ => return,
        }
    }
}

/// Hands the launched guest to the machine; `started` unless a stop came
/// in meanwhile (then the guest gets the stop signal right away).
fn adopt(entry: &mut MachineEntry, current: &Current, control: GuestControl) -> bool {
    if !current.is(entry) {
        return false;
    }
    let run = entry.run.as_mut().expect("checked by Current::is");
    run.attempt += 1;
    run.guest = Some(control.clone());
    if run.stop.is_some() {
        // Asked to go down before it was even up: no grace period.
        control.signal(libc::SIGKILL);
    } else {
        entry.enter(MachineState::Started, "start", "flyd");
    }
    true
}

fn schedule_crash(control: GuestControl, fault: BootFault) {
    let after = Duration::from_millis(rand::rng().random_range(0..200));
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        if fault == BootFault::Oom {
            control.kill_for_memory();
        } else {
            control.signal(libc::SIGKILL);
        }
    });
}

/// What to launch for the machine as it is now.
fn launch_spec(shared: &Shared, entry: &MachineEntry) -> LaunchSpec {
    let machine = &entry.machine;
    LaunchSpec {
        app: entry.app.clone(),
        machine_id: machine.id.clone(),
        command: launch::command(machine, &shared.config),
        env: with_scratch_root(
            launch::environment(
                &entry.app,
                machine,
                &shared.config.image_env,
                &entry.secrets,
            ),
            &shared.scratch.path_of(&machine.id),
        ),
        memory_limit_bytes: shared
            .config
            .enforce_memory
            .then(|| u64::from(launch::memory_mb(machine)) * 1024 * 1024),
    }
}

/// The machine's private root as its `$HOME` and `$TMPDIR`.
fn with_scratch_root(
    mut env: std::collections::BTreeMap<String, String>,
    root: &std::path::Path,
) -> std::collections::BTreeMap<String, String> {
    let root = root.display().to_string();
    env.insert("HOME".into(), root.clone());
    env.insert("TMPDIR".into(), root);
    env
}

/// No guest could be launched: the machine is `failed`, and the exit event
/// says why (exit code 127, like a shell that cannot find a command).
fn launch_failed(entry: &mut MachineEntry, reason: &str) {
    tracing::warn!(machine_id = %entry.id(), %reason, "machine failed to launch");
    let exit = ExitEvent {
        exit_code: 127,
        signal: -1,
        error: reason.to_string(),
        exited_at: exited_at(),
        ..ExitEvent::default()
    };
    entry.record(
        "exit",
        "failed",
        "flyd",
        Some(exit_request(exit, entry.restart_count)),
    );
    entry.set_state(MachineState::Failed);
    entry.run = None;
}

/// Records the exit and decides what comes next.
fn after_exit(entry: &mut MachineEntry, current: &Current, exit: Exit) -> Next {
    let ours = current.is(entry);
    let intent = entry.run.as_ref().filter(|_| ours).and_then(|r| r.stop);
    let restart = ours && intent.is_none() && should_restart(entry, &exit);
    let again = restart || intent == Some(StopIntent::Reboot);
    let termination = exit.termination;
    let event = ExitEvent {
        exit_code: termination.exit_code,
        guest_exit_code: termination.exit_code,
        guest_signal: termination.signal.unwrap_or(-1),
        signal: termination.signal.unwrap_or(-1),
        oom_killed: exit.oom_killed,
        requested_stop: !ours || intent.is_some(),
        restarting: again,
        exited_at: exited_at(),
        ..ExitEvent::default()
    };
    let status = if intent == Some(StopIntent::Suspend) {
        MachineState::Suspended
    } else {
        MachineState::Stopped
    };
    tracing::info!(
        machine_id = %entry.id(),
        exit_code = termination.exit_code,
        signal = ?termination.signal,
        oom_killed = exit.oom_killed,
        restarting = again,
        "machine process exited"
    );
    entry.record(
        "exit",
        status.as_str(),
        "flyd",
        Some(exit_request(event, entry.restart_count)),
    );
    if !ours {
        return Next::Finish;
    }
    let run = entry.run.as_mut().expect("checked by Current::is");
    run.guest = None;
    if again {
        run.stop = None;
        if !restart {
            return Next::LaunchAgain(Duration::ZERO);
        }
        entry.restart_count += 1;
        return Next::LaunchAgain(restart_backoff(entry.restart_count));
    }
    settle(entry, status);
    Next::Finish
}

/// The run is over: the machine rests in `state` (`stopped` or
/// `suspended`), and a stopped `auto_destroy` machine destroys itself.
pub fn settle(entry: &mut MachineEntry, state: MachineState) {
    entry.set_state(state);
    entry.run = None;
    if state == MachineState::Stopped && entry.machine.config.auto_destroy {
        entry.finish_destroy("flyd");
    }
}

/// Pause before the n-th automatic restart, so a process that exits at
/// once under `restart: always` does not spin: 100 ms doubling to 5 s.
fn restart_backoff(restarts: u32) -> Duration {
    Duration::from_millis(100u64 << restarts.min(6)).min(Duration::from_secs(5))
}

/// The restart policy's verdict on an exit nobody asked for.
fn should_restart(entry: &MachineEntry, exit: &Exit) -> bool {
    let restart = entry.machine.config.restart.as_ref();
    let policy = restart.map(|r| r.policy).unwrap_or_default();
    let max_retries = restart
        .and_then(|r| r.max_retries)
        .unwrap_or(DEFAULT_MAX_RETRIES);
    let failed = exit.termination.exit_code != 0 || exit.oom_killed;
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed && entry.restart_count < max_retries,
    }
}

fn exit_request(exit: ExitEvent, restart_count: u32) -> EventRequest {
    EventRequest {
        exit_event: Some(exit),
        monitor_event: None,
        restart_count: Some(restart_count),
    }
}

fn exited_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
