//! A machine's main "process", real or virtual, behind one interface: the
//! supervisor awaits its [`Termination`], the API signals it through a
//! [`GuestControl`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::config::{Boot, VirtualFn, VirtualMachineEnv};
use crate::process::{signal_group, Process, Termination};
use crate::watchdog::Watchdog;

/// What to run, resolved from the machine's config.
pub struct LaunchSpec {
    pub app: String,
    pub machine_id: String,
    /// `Err` explains why no command could be found for the machine.
    pub command: Result<Vec<String>, String>,
    pub env: BTreeMap<String, String>,
    /// RSS limit, when memory is enforced.
    pub memory_limit_bytes: Option<u64>,
}

/// A running main process.
pub struct Guest {
    pub control: GuestControl,
    /// Resolves when the main process has ended and (for processes) its
    /// whole group has been killed and reaped.
    pub exit: BoxFuture<'static, Exit>,
}

/// How a guest ended, including whether it was killed for memory.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub termination: Termination,
    pub oom_killed: bool,
}

/// Sends signals to a running guest. Cheap to clone.
#[derive(Clone)]
pub struct GuestControl {
    target: Target,
    oom: Arc<AtomicBool>,
}

#[derive(Clone)]
enum Target {
    Process {
        pgid: i32,
    },
    Virtual {
        signals: mpsc::UnboundedSender<i32>,
        kill: watch::Sender<Option<i32>>,
    },
}

impl GuestControl {
    /// Delivers `signal` (to the whole process group of a process guest).
    pub fn signal(&self, signal: i32) {
        match &self.target {
            Target::Process { pgid } => signal_group(*pgid, signal),
            Target::Virtual { signals, kill } => {
                // A virtual guest that dropped its receiver dies of any signal.
                if signal == libc::SIGKILL || signals.send(signal).is_err() {
                    kill.send_replace(Some(signal));
                }
            }
        }
    }

    /// The process group of a process guest; `None` for a virtual one.
    pub fn process_group(&self) -> Option<i32> {
        match &self.target {
            Target::Process { pgid } => Some(*pgid),
            Target::Virtual { .. } => None,
        }
    }

    /// Kills the guest and records the kill as out-of-memory.
    pub fn kill_for_memory(&self) {
        self.oom.store(true, Ordering::SeqCst);
        self.signal(libc::SIGKILL);
    }
}

/// Starts the guest described by `spec` the way `boot` says.
pub fn launch(boot: &Boot, spec: LaunchSpec, watchdog: &Watchdog) -> Result<Guest, String> {
    match boot {
        Boot::Process => launch_process(spec, watchdog),
        Boot::Virtual(body) => Ok(launch_virtual(body, spec)),
    }
}

fn launch_process(spec: LaunchSpec, watchdog: &Watchdog) -> Result<Guest, String> {
    let command = spec.command?;
    let process = Process::spawn(&command, &spec.env, &spec.machine_id)
        .map_err(|e| format!("failed to spawn {:?}: {e}", command[0]))?;
    let pgid = process.pgid();
    let oom = Arc::new(AtomicBool::new(false));
    let guard = spec
        .memory_limit_bytes
        .map(|limit| watchdog.watch(pgid, limit, oom.clone()));
    let oom_flag = oom.clone();
    let exit = async move {
        let termination = process.wait().await;
        drop(guard);
        Exit {
            termination,
            oom_killed: oom_flag.load(Ordering::SeqCst),
        }
    }
    .boxed();
    Ok(Guest {
        control: GuestControl {
            target: Target::Process { pgid },
            oom,
        },
        exit,
    })
}

fn launch_virtual(body: &VirtualFn, spec: LaunchSpec) -> Guest {
    let (signals_tx, signals_rx) = mpsc::unbounded_channel();
    let (kill_tx, mut kill_rx) = watch::channel(None);
    let oom = Arc::new(AtomicBool::new(false));
    let main = body(VirtualMachineEnv {
        app: spec.app,
        machine_id: spec.machine_id,
        command: spec.command.ok(),
        env: spec.env,
        signals: signals_rx,
    });
    let oom_flag = oom.clone();
    let exit = async move {
        let termination = tokio::select! {
            code = main => Termination { exit_code: code, signal: None },
            signal = killed(&mut kill_rx) => Termination::from_signal(signal),
        };
        Exit {
            termination,
            oom_killed: oom_flag.load(Ordering::SeqCst),
        }
    }
    .boxed();
    Guest {
        control: GuestControl {
            target: Target::Virtual {
                signals: signals_tx,
                kill: kill_tx,
            },
            oom,
        },
        exit,
    }
}

/// Resolves with the signal that kills a virtual guest; never resolves if
/// every [`GuestControl`] is gone (nobody can kill it any more).
async fn killed(kill: &mut watch::Receiver<Option<i32>>) -> i32 {
    let signal = kill
        .wait_for(Option::is_some)
        .await
        .map(|signal| signal.unwrap_or(libc::SIGKILL));
    match signal {
        Ok(signal) => signal,
        Err(_) => futures::future::pending().await,
    }
}
