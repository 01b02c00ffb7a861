//! Demo handlers built into the `runner` binary, for trying the system and
//! for its tests:
//!
//! | kind | params | does |
//! | --- | --- | --- |
//! | `echo` | anything | returns the params |
//! | `sleep` | `{"ms": N, "trace_dir": D}` | sleeps N ms (stops early when asked to stop), returns `{"slept_ms": N}`; with `trace_dir`, first writes an empty file `D/{job}-{attempt}-{pid}` |
//! | `fail` | `{"permanent": bool, "message": "..."}` | returns an error, permanent if asked |
//! | `crash` | `{"code": N}` | exits at once with code N (default 3), reporting nothing |
//! | `flaky` | `{"succeed_on_attempt": N}` | fails (retryably) until attempt N, then returns `{"attempt": N}` |
//! | `allocate` | `{"mb": N, "hold_ms": M, "delay_ms": D}` | logs `allocating N MiB`, waits D ms (default 0), fills N MiB of memory and holds it M ms (to see OOM kills) |
//! | `fan_out` | `{"count": N, "child": {..}, "crash_after": M, "zombie_ms": Z}` | enqueues N children, each the `child` request (default `{"kind": "echo"}`) with params `{"index": i}`, and returns their ids; on its first attempt, with `crash_after`, exits (code 3) after enqueuing M; with `zombie_ms`, sleeps Z ms before each child (to be superseded meanwhile) |
//! | `fan_out_batch` | `{"count": N, "child": {..}, "then": {..}, "crash": true}` | enqueues one batch of N members, each the `child` request (default `{"kind": "echo"}`) with params `{"index": i}`, and the `then` job if given; returns `{"batch": id, "existing": bool}`; on its first attempt, with `crash`, exits (code 3) right after enqueuing |
//! | `print` | `{"lines": N, "stream": "stdout"\|"stderr"}` | prints N numbered lines (`line 1 of N`, ...) to its log as that stream (default stdout), returns `{"printed": N}` |

use std::time::Duration;

use serde_json::{json, Value};

use jobs::LogStream;
use serde::Deserialize;

use crate::{Context, JobError, Json, Runner};

pub(crate) fn register(runner: Runner) -> Runner {
    runner
        .handler("echo", echo)
        .handler("sleep", sleep)
        .handler("fail", fail)
        .handler("crash", crash)
        .handler("flaky", flaky)
        .handler("allocate", allocate)
        .handler("print", print)
        .handler("fan_out", fan_out)
        .handler("fan_out_batch", fan_out_batch)
}

async fn echo(_: Context, params: Value) -> Result<Value, JobError> {
    Ok(params)
}

async fn sleep(ctx: Context, params: Value) -> Result<Value, JobError> {
    let ms = params
        .get("ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| JobError::permanent("sleep needs {\"ms\": <non-negative integer>}"))?;
    // `trace_dir` leaves one file per execution, so tests can check from
    // the runner's side that no job ran twice.
    if let Some(dir) = params.get("trace_dir").and_then(Value::as_str) {
        let name = format!("{}-{}-{}", ctx.job_id(), ctx.attempt(), std::process::id());
        std::fs::write(std::path::Path::new(dir).join(name), b"")
            .map_err(|e| JobError::permanent(format!("trace_dir: {e}")))?;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms})),
        _ = ctx.cancelled() => Err(JobError::retryable(match ctx.stop_reason() {
            Some(reason) => format!("stopped while sleeping: {reason}"),
            None => "stopped while sleeping".to_string(),
        })),
    }
}

async fn fail(_: Context, params: Value) -> Result<Value, JobError> {
    let message = params
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the fail handler failed, as asked")
        .to_string();
    if params
        .get("permanent")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        Err(JobError::Permanent(message))
    } else {
        Err(JobError::Retryable(message))
    }
}

async fn crash(_: Context, params: Value) -> Result<Value, JobError> {
    let code = params.get("code").and_then(Value::as_i64).unwrap_or(3) as i32;
    std::process::exit(code)
}

async fn flaky(ctx: Context, params: Value) -> Result<Value, JobError> {
    let succeed_on = params
        .get("succeed_on_attempt")
        .and_then(Value::as_u64)
        .unwrap_or(2);
    if u64::from(ctx.attempt()) < succeed_on {
        return Err(JobError::retryable(format!(
            "attempt {} fails on purpose (succeeds on attempt {succeed_on})",
            ctx.attempt()
        )));
    }
    Ok(json!({"attempt": ctx.attempt()}))
}

async fn allocate(ctx: Context, params: Value) -> Result<Value, JobError> {
    let mb = params.get("mb").and_then(Value::as_u64).unwrap_or(64) as usize;
    let hold_ms = params
        .get("hold_ms")
        .and_then(Value::as_u64)
        .unwrap_or(1000);
    // `delay_ms` lets the log line below reach the store before an OOM
    // kill can take the machine (the log ships every 200 ms).
    ctx.log(format!("allocating {mb} MiB"));
    if let Some(delay) = params.get("delay_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Touch every page so the memory is really resident.
    let block = vec![1u8; mb << 20];
    tokio::time::sleep(Duration::from_millis(hold_ms)).await;
    Ok(
        json!({"allocated_mb": mb, "checksum": block.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>()}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Print {
    lines: u64,
    #[serde(default = "stdout")]
    stream: OutputStream,
}

/// The streams a job prints to (the log's other streams are not output).
#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutputStream {
    Stdout,
    Stderr,
}

fn stdout() -> OutputStream {
    OutputStream::Stdout
}

async fn print(ctx: Context, Json(p): Json<Print>) -> Result<Value, JobError> {
    let stream = match p.stream {
        OutputStream::Stdout => LogStream::Stdout,
        OutputStream::Stderr => LogStream::Stderr,
    };
    for i in 1..=p.lines {
        ctx.output(stream, format!("line {i} of {}", p.lines).as_bytes());
        // Let the shipper and the heartbeat run, and stop when asked.
        if i % 1000 == 0 {
            if ctx.is_cancelled() {
                return Err(JobError::retryable(format!("stopped after {i} lines")));
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(json!({"printed": p.lines}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOut {
    count: u32,
    #[serde(default)]
    child: Option<Value>,
    #[serde(default)]
    crash_after: Option<u32>,
    #[serde(default)]
    zombie_ms: Option<u64>,
}

async fn fan_out(ctx: Context, Json(p): Json<FanOut>) -> Result<Value, JobError> {
    let template = p.child.unwrap_or_else(|| json!({"kind": "echo"}));
    let mut ids = Vec::with_capacity(p.count as usize);
    for index in 0..p.count {
        if ctx.attempt() == 1 && p.crash_after == Some(index) {
            // A crash mid-way: the retry must not enqueue these twice.
            std::process::exit(3);
        }
        if let Some(ms) = p.zombie_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let child = ctx
            .enqueue(child_request(&template, index))
            .await
            .map_err(enqueue_failed)?;
        ids.push(child.id.to_string());
    }
    Ok(json!({"children": ids}))
}

/// The `child` template of [`fan_out`] and [`fan_out_batch`], told its
/// index.
fn child_request(template: &Value, index: u32) -> Value {
    let mut request = template.clone();
    request["params"] = json!({"index": index});
    request
}

/// A refused request fails the demo for good; anything else is retried.
fn enqueue_failed(e: crate::EnqueueError) -> JobError {
    match e {
        crate::EnqueueError::Invalid { .. } => JobError::permanent(e.to_string()),
        other => JobError::retryable(other.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutBatch {
    count: u32,
    #[serde(default)]
    child: Option<Value>,
    #[serde(default)]
    then: Option<Value>,
    #[serde(default)]
    crash: bool,
}

async fn fan_out_batch(ctx: Context, Json(p): Json<FanOutBatch>) -> Result<Value, JobError> {
    let template = p.child.unwrap_or_else(|| json!({"kind": "echo"}));
    let members: Vec<Value> = (0..p.count)
        .map(|index| child_request(&template, index))
        .collect();
    let mut request = json!({"jobs": members});
    if let Some(then) = p.then {
        request["then"] = then;
    }
    let batch = ctx.enqueue_batch(request).await.map_err(enqueue_failed)?;
    if ctx.attempt() == 1 && p.crash {
        // A crash after the batch is stored: the retry must find it.
        std::process::exit(3);
    }
    Ok(json!({"batch": batch.id, "existing": batch.existing}))
}
