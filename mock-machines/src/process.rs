//! Machines as local processes: spawning, signalling, reaping.
//!
//! Each machine's main process starts in a process group of its own
//! (`process_group(0)`), so stop, signal and destroy reach every process the
//! machine started, as they would reach everything inside a VM. When the
//! main process ends, whatever it left behind in its group is SIGKILLed too:
//! a real machine's VM is torn down with its main process.
//!
//! The child's stdout and stderr are read line by line into the mock's log
//! (`machine_id` field), so a chatty child never blocks on a full pipe.

use std::collections::BTreeMap;
use std::io;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// How a main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termination {
    /// The exit code, `128 + signal` when a signal ended the process.
    pub exit_code: i32,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
}

impl Termination {
    pub fn from_signal(signal: i32) -> Self {
        Self {
            exit_code: 128 + signal,
            signal: Some(signal),
        }
    }

    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (_, Some(signal)) => Self::from_signal(signal),
            (Some(code), None) => Self {
                exit_code: code,
                signal: None,
            },
            (None, None) => Self {
                exit_code: -1,
                signal: None,
            },
        }
    }
}

/// A spawned main process, leader of its own process group.
pub struct Process {
    child: Child,
    pgid: i32,
}

impl Process {
    /// Spawns `command` with exactly `env` as its environment.
    pub fn spawn(
        command: &[String],
        env: &BTreeMap<String, String>,
        machine_id: &str,
    ) -> io::Result<Self> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| io::Error::other("spawned process has no pid"))?;
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward_lines(stdout, machine_id.to_string(), "stdout"));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr, machine_id.to_string(), "stderr"));
        }
        Ok(Self { child, pgid })
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the main process to end, then kills and reaps whatever is
    /// left of its process group.
    pub async fn wait(mut self) -> Termination {
        let termination = match self.child.wait().await {
            Ok(status) => Termination::from_status(status),
            Err(error) => {
                tracing::error!(pgid = self.pgid, %error, "waiting for a machine process failed");
                signal_group(self.pgid, libc::SIGKILL);
                Termination::from_signal(libc::SIGKILL)
            }
        };
        let pgid = self.pgid;
        let _ = tokio::task::spawn_blocking(move || kill_and_reap_group(pgid)).await;
        termination
    }
}

/// Sends `signal` to every process in group `pgid`. Errors (the group is
/// already gone) are ignored: the caller wanted it dead anyway.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; it
        // has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// SIGKILLs group `pgid` and reaps members that became our children (when
/// the mock is a child subreaper, orphans of the group are reparented to
/// it). Blocks until no child of ours is left in the group.
fn kill_and_reap_group(pgid: i32) {
    loop {
        signal_group(pgid, libc::SIGKILL);
        // SAFETY: waitpid(2) on a process group we own; a null status
        // pointer is allowed.
        let reaped = unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), 0) };
        if reaped <= 0 {
            let interrupted = io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
            if !interrupted {
                break;
            }
        }
    }
}

/// Makes this process a child subreaper (Linux only; a no-op elsewhere).
pub fn become_subreaper() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only flips a process attribute.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

async fn forward_lines(stream: impl AsyncRead + Unpin, machine_id: String, name: &'static str) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    // Bytes, not `lines()`: output that is not UTF-8 must not stop the
    // draining, or the child would block on a full pipe.
    while matches!(reader.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        tracing::info!(target: "mock_machines::machine", machine_id = %machine_id, stream = name, "{text}");
        line.clear();
    }
}
