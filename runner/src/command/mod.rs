//! Command mode: a job handled by a program in any language.
//!
//! The contract with the program:
//!
//! | what | how |
//! | --- | --- |
//! | params | the job's params as one JSON document on stdin, then end of file |
//! | identity | `JOB_ID` and `JOB_ATTEMPT` (and for a batch member `JOB_BATCH_ID` and `JOB_INDEX`) in its environment (the runner's environment minus the store's URL and the attempt's token: job code cannot write to the store) |
//! | variables | the job's `machine.env` and `machine.secrets` in its environment, on top of the runner's (they can set none of the runner's own: see [`jobs::job_env`]) |
//! | result | the last line of stdout that is a JSON value. No JSON line: the result is `null` |
//! | logs | every stdout and stderr line (but progress lines) goes to the attempt's log, with its stream and time ([`crate::logs`]) |
//! | progress | stderr lines `PROGRESS <percent> [message]` ([`PROGRESS_PREFIX`]) |
//! | success | exit code 0 |
//! | permanent failure | exit code 65 ([`EXIT_PERMANENT`], `EX_DATAERR`): not retried |
//! | retryable failure | any other exit code, or death by a signal |
//! | error message | how it ended and its last stderr line, e.g. `exit code 65: month is required` |
//! | stop | on cancel, machine stop, or [`crate::wrap_up_window`] before the timeout: SIGTERM to its process group, SIGKILL [`KILL_GRACE`] later; at the timeout itself: SIGKILL |
//! | leftovers | when it exits, whatever it left running in its process group is killed |
//! | child jobs and batches | one JSON line per child or batch on the unix socket named by `JOB_CHILDREN_SOCKET`, one JSON line back ([`children`]) |

pub mod children;
mod group;
mod output;

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{watch, Notify};

use crate::env::RUNNER_ONLY;
use crate::{Context, JobError, StopReason};
use group::{signal_name, ProcessGroup};
pub use output::{MAX_LINE_BYTES, PROGRESS_PREFIX};

/// The exit code by which a command says its failure is permanent (the
/// params are wrong, the input is missing): `EX_DATAERR` of sysexits.h.
pub const EXIT_PERMANENT: i32 = 65;

/// Between SIGTERM and SIGKILL when a command is asked to stop. Shorter
/// than the 5 s the dispatcher gives the whole machine, so the runner
/// still reports after killing the command.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// After the command exits and its group is killed, its pipes normally
/// close at once; a process that left the group may hold them open, so
/// reading stops after this.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs `argv` for one attempt; see the module docs for the contract.
pub(crate) async fn run(argv: &[String], ctx: Context, params: Value) -> Result<Value, JobError> {
    // Lives as long as the command: dropped (and removed) on return.
    let socket = children::ChildSocket::open(&ctx)
        .map_err(|e| JobError::retryable(format!("cannot open the children socket: {e}")))?;
    let mut child = spawn(argv, &ctx, &socket)?;
    let pid = child.id().unwrap_or_default();
    let mut group = ProcessGroup::led_by(pid);
    tracing::info!(command = ?argv, pid, "command started");
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        unreachable!("the command is spawned with three pipes")
    };
    let wide = (output::widen(&stdout), output::widen(&stderr));
    // Pipes the reader can take out of tokio's reactor (see `output`).
    let receivers = stdout
        .into_owned_fd()
        .and_then(pipe::Receiver::from_owned_fd)
        .and_then(|out| Ok((out, pipe::Receiver::from_owned_fd(stderr.into_owned_fd()?)?)));
    let (stdout, stderr) = match receivers {
        Ok(pipes) => pipes,
        Err(e) => {
            group.signal(libc::SIGKILL);
            let _ = child.wait().await;
            return Err(JobError::retryable(format!(
                "cannot read the command's output: {e}"
            )));
        }
    };

    let (progress_tx, progress_rx) = watch::channel(None);
    let mut result = None;
    let mut last_stderr_line = Vec::new();
    let exited = Notify::new();
    let output = |stream, line: &[u8]| ctx.output(stream, line);
    let reading = async {
        let io = async {
            tokio::join!(
                feed_stdin(stdin, &params),
                output::read_stdout(stdout, wide.0, &output, &mut result),
                output::read_stderr(stderr, wide.1, &output, progress_tx, &mut last_stderr_line),
                forward_progress(&ctx, progress_rx),
            )
        };
        tokio::select! {
            _ = io => {}
            () = async { exited.notified().await; tokio::time::sleep(DRAIN).await } => {
                tracing::warn!("a process the command started still holds its output open; stopped reading");
            }
        }
    };
    let ending = async {
        let ending = wait(&mut child, &group, &ctx).await;
        group.kill_rest();
        exited.notify_one();
        ending
    };
    let (ending, ()) = tokio::join!(ending, reading);
    let (status, stopped) = ending
        .map_err(|e| JobError::retryable(format!("lost track of the command (pid {pid}): {e}")))?;
    tracing::info!(%status, "command exited");
    judge(
        status,
        stopped,
        result,
        output::error_line(&last_stderr_line).as_deref(),
    )
}

/// Starts the command in a process group of its own, with the params'
/// pipe on stdin and both outputs piped to the runner.
fn spawn(
    argv: &[String],
    ctx: &Context,
    socket: &children::ChildSocket,
) -> Result<Child, JobError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| JobError::permanent("the command is empty"))?;
    let mut command = tokio::process::Command::new(program);
    // The job's variables first; none of them can be one of the runner's
    // (see `jobs::job_env`), and the identity below is set last anyway.
    command
        .args(args)
        .envs(ctx.vars().all())
        .env("JOB_ID", ctx.job_id().to_string())
        .env("JOB_ATTEMPT", ctx.attempt().to_string())
        .envs(ctx.batch().into_iter().flat_map(|(batch, index)| {
            [
                ("JOB_BATCH_ID", batch.to_string()),
                ("JOB_INDEX", index.to_string()),
            ]
        }))
        .env(children::SOCKET_VAR, &socket.path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for name in RUNNER_ONLY {
        command.env_remove(name);
    }
    command.spawn().map_err(|e| {
        let message = format!("cannot start {program:?}: {e}");
        // Missing or not executable: the same image fails the same way on
        // every retry.
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                JobError::permanent(message)
            }
            _ => JobError::retryable(message),
        }
    })
}

/// Writes the params; dropping `stdin` then closes the pipe, so the
/// command sees the end of its input. A command that does not read its
/// params closes the pipe first: that is fine.
async fn feed_stdin(mut stdin: ChildStdin, params: &Value) {
    if let Err(e) = stdin.write_all(params.to_string().as_bytes()).await {
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::warn!(error = %e, "writing the params to the command failed");
        }
    }
}

/// Records the latest progress while the command reports it. Updates that
/// come faster than the store takes them are merged: only the latest
/// counts.
async fn forward_progress(ctx: &Context, mut updates: watch::Receiver<output::ProgressUpdate>) {
    while updates.changed().await.is_ok() {
        let update = updates.borrow_and_update().clone();
        if let Some((percent, message)) = update {
            ctx.progress(percent, message).await;
        }
    }
}

/// Waits for the command to exit. Once the handler is asked to stop, the
/// group gets SIGTERM, then SIGKILL after [`KILL_GRACE`]. Returns the exit
/// status and, when it was stopped, why.
async fn wait(
    child: &mut Child,
    group: &ProcessGroup,
    ctx: &Context,
) -> io::Result<(ExitStatus, Option<StopReason>)> {
    tokio::select! {
        status = child.wait() => return Ok((status?, None)),
        () = ctx.cancelled() => {}
    }
    let reason = ctx.stop_reason();
    tracing::info!("stopping the command: SIGTERM to its process group");
    group.signal(libc::SIGTERM);
    let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            tracing::warn!(grace = ?KILL_GRACE, "the command ignored SIGTERM: SIGKILL");
            group.signal(libc::SIGKILL);
            child.wait().await?
        }
    };
    Ok((status, reason))
}

/// The handler's outcome from how the command ended.
fn judge(
    status: ExitStatus,
    stopped: Option<StopReason>,
    result: Option<Value>,
    last_stderr_line: Option<&str>,
) -> Result<Value, JobError> {
    use std::os::unix::process::ExitStatusExt;

    // Exiting 0 after a stop request is wrapping up, not failing.
    if status.success() {
        return Ok(result.unwrap_or(Value::Null));
    }
    let mut how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name})"),
            None => format!("killed by signal {signal}"),
        },
        (None, None) => status.to_string(),
    };
    if let Some(reason) = stopped {
        how = format!("stopped because {reason}: {how}");
    }
    let message = match last_stderr_line {
        Some(line) => format!("{how}: {line}"),
        None => how,
    };
    if stopped.is_none() && status.code() == Some(EXIT_PERMANENT) {
        Err(JobError::Permanent(message))
    } else {
        Err(JobError::Retryable(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::process::ExitStatusExt;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_codes_decide_the_outcome() {
        let result = Some(json!({"ok": true}));
        assert_eq!(
            judge(exited(0), None, result.clone(), None),
            Ok(json!({"ok": true}))
        );
        assert_eq!(judge(exited(0), None, None, Some("log")), Ok(Value::Null));
        assert_eq!(
            judge(
                exited(EXIT_PERMANENT),
                None,
                result.clone(),
                Some("month is required")
            ),
            Err(JobError::permanent("exit code 65: month is required"))
        );
        assert_eq!(
            judge(exited(3), None, None, None),
            Err(JobError::retryable("exit code 3"))
        );
        assert_eq!(
            judge(
                ExitStatus::from_raw(libc::SIGSEGV),
                None,
                None,
                Some("boom")
            ),
            Err(JobError::retryable("killed by signal 11 (SIGSEGV): boom"))
        );
    }

    #[test]
    fn a_stopped_command_fails_retryably_whatever_its_code() {
        assert_eq!(
            judge(
                exited(EXIT_PERMANENT),
                Some(StopReason::Cancelled),
                None,
                None
            ),
            Err(JobError::retryable(
                "stopped because the job was cancelled: exit code 65"
            ))
        );
        assert_eq!(
            judge(
                ExitStatus::from_raw(libc::SIGTERM),
                Some(StopReason::Deadline),
                None,
                None
            ),
            Err(JobError::retryable(
                "stopped because the job's timeout is near: killed by signal 15 (SIGTERM)"
            ))
        );
        assert_eq!(
            judge(exited(0), Some(StopReason::Deadline), Some(json!(1)), None),
            Ok(json!(1)),
            "wrapping up with a result is a success"
        );
    }
}
