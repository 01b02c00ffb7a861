//! Demo handlers built into the `runner` binary, for trying the system and
//! for its tests:
//!
//! | kind | params | does |
//! | --- | --- | --- |
//! | `echo` | anything | returns the params |
//! | `sleep` | `{"ms": N}` | sleeps N ms (stops early when cancelled), returns `{"slept_ms": N}` |
//! | `fail` | `{"permanent": bool, "message": "..."}` | returns an error, permanent if asked |
//! | `crash` | `{"code": N}` | exits at once with code N (default 3), reporting nothing |

use std::time::Duration;

use serde_json::{json, Value};

use crate::{Context, JobError, Runner};

pub(crate) fn register(runner: Runner) -> Runner {
    runner
        .handler("echo", echo)
        .handler("sleep", sleep)
        .handler("fail", fail)
        .handler("crash", crash)
}

async fn echo(_: Context, params: Value) -> Result<Value, JobError> {
    Ok(params)
}

async fn sleep(ctx: Context, params: Value) -> Result<Value, JobError> {
    let ms = params
        .get("ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| JobError::permanent("sleep needs {\"ms\": <non-negative integer>}"))?;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({"slept_ms": ms})),
        _ = ctx.cancelled() => Err(JobError::retryable("cancelled while sleeping")),
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
