//! Rust handlers through `Runner::run` against a real store: typed params,
//! typed results, permanent and retryable errors, progress, and every
//! reason to stop.

use std::sync::Arc;

use crate::common::{spec, wait_until, TestStore};
use jobs::{JobStatus, Outcome};
use runner::{exit, Context, JobError, Json, Runner, StopReason};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    image: String,
    width: u32,
}

#[derive(Serialize)]
struct Resized {
    path: String,
    job_attempt: u32,
}

async fn resize(ctx: Context, Json(p): Json<Resize>) -> Result<Resized, JobError> {
    Ok(Resized {
        path: format!("{}@{}w", p.image, p.width),
        job_attempt: ctx.attempt(),
    })
}

fn outcomes(job: &jobs::Job) -> Vec<Option<Outcome>> {
    job.attempts.iter().map(|a| a.outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_params_in_typed_result_out() {
    let store = TestStore::start().await;
    let runner = Runner::new().handler("resize", resize);
    let ended = store
        .run_to_end(
            &runner,
            &spec("resize", json!({"image": "cat.png", "width": 64})),
        )
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded);
    assert_eq!(
        ended.job.result,
        Some(json!({"path": "cat.png@64w", "job_attempt": 1}))
    );
    assert_eq!(ended.exit_codes, [exit::SUCCEEDED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_that_do_not_fit_fail_permanently_naming_the_field() {
    let store = TestStore::start().await;
    let runner = Runner::new().handler("resize", resize);
    let mut job = spec("resize", json!({"image": "cat.png", "width": "wide"}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&runner, &job).await;
    assert_eq!(ended.job.status, JobStatus::Failed);
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error)], "not retried");
    assert_eq!(
        ended.error(),
        r#"invalid params: width: invalid type: string "wide", expected u32"#
    );
    assert_eq!(ended.exit_codes, [exit::HANDLER_FAILED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closures_extract_typed_params_too() {
    let store = TestStore::start().await;
    let runner = Runner::new().handler("double", |_, Json(n): Json<u64>| async move {
        Ok::<_, JobError>(n * 2)
    });
    let ended = store.run_to_end(&runner, &spec("double", json!(21))).await;
    assert_eq!(ended.job.result, Some(json!(42)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_errors_use_every_attempt_and_permanent_ones_end_the_job() {
    let store = TestStore::start().await;
    let runner = Runner::new().handler("fail", |ctx: Context, params: Value| async move {
        let message = format!("attempt {} failed", ctx.attempt());
        if params["permanent"] == true {
            Err::<Value, _>(JobError::permanent(message))
        } else {
            Err(JobError::retryable(message))
        }
    });
    let mut retryable = spec("fail", json!({"permanent": false}));
    retryable.max_attempts = 2;
    let ended = store.run_to_end(&runner, &retryable).await;
    assert_eq!(ended.job.status, JobStatus::Failed);
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error); 2]);
    assert_eq!(ended.error(), "attempt 2 failed");

    let mut permanent = spec("fail", json!({"permanent": true}));
    permanent.max_attempts = 2;
    let ended = store.run_to_end(&runner, &permanent).await;
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error)]);
    assert_eq!(ended.error(), "attempt 1 failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kind_fails_permanently() {
    let store = TestStore::start().await;
    let mut job = spec("nobody-handles-this", json!({}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&Runner::new(), &job).await;
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error)]);
    assert!(ended.error().contains("no handler"), "{}", ended.error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_is_visible_while_the_handler_runs() {
    let store = TestStore::start().await;
    let go = Arc::new(Notify::new());
    let runner = Runner::new().handler("step", {
        let go = Arc::clone(&go);
        move |ctx: Context, _: Value| {
            let go = Arc::clone(&go);
            async move {
                ctx.progress(40, "halfway").await;
                go.notified().await;
                Ok(json!("done"))
            }
        }
    });
    let id = store.submit(&spec("step", json!({}))).await;
    let env = store.claim().await;
    let attempt = env.attempt.clone();
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.run(env).await }
    });
    wait_until("progress recorded", || async {
        store.job(id).await.progress.is_some()
    })
    .await;
    let job = store.job(id).await;
    assert_eq!(job.status, JobStatus::Running);
    let progress = job.progress.unwrap();
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (40, "halfway")
    );

    go.notify_one();
    assert_eq!(run.await.unwrap(), exit::SUCCEEDED);
    let job = store.finish(&attempt, exit::SUCCEEDED).await;
    assert_eq!(job.result, Some(json!("done")));
}

/// A handler that waits to be told to stop and says why it stopped.
fn stoppable() -> Runner {
    Runner::new().handler("wait", |ctx: Context, _: Value| async move {
        ctx.cancelled().await;
        assert!(ctx.is_cancelled());
        Err::<Value, _>(JobError::retryable(format!(
            "stopped: {:?}",
            ctx.stop_reason().unwrap()
        )))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_handler() {
    let store = TestStore::start().await;
    let id = store.submit(&spec("wait", json!({}))).await;
    let env = store.claim().await;
    let run = tokio::spawn(async move { stoppable().run(env).await });
    wait_until("running", || async {
        store.job(id).await.status == JobStatus::Running
    })
    .await;
    store.store.cancel(id).await.unwrap();
    assert_eq!(run.await.unwrap(), exit::HANDLER_FAILED);
    let job = store.job(id).await;
    let reported = job.attempts[0].error.as_deref();
    assert_eq!(
        reported,
        Some(format!("stopped: {:?}", StopReason::Cancelled).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrap_up_signal_comes_before_the_timeout() {
    let store = TestStore::start().await;
    // A handler that saves its work when told to stop ends well...
    let runner = Runner::new().handler("long", |ctx: Context, _: Value| async move {
        ctx.cancelled().await;
        Ok::<_, JobError>(json!({"saved_at": format!("{:?}", ctx.stop_reason().unwrap())}))
    });
    let ended = store
        .run_to_end(&runner, &spec_with_timeout("long", 1))
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded);
    assert_eq!(ended.job.result, Some(json!({"saved_at": "Deadline"})));

    // ...one that gives up with a retryable error timed out.
    let ended = store
        .run_to_end(&stoppable(), &spec_with_timeout("wait", 1))
        .await;
    assert_eq!(outcomes(&ended.job), [Some(Outcome::TimedOut)]);
    assert!(
        ended.error().ends_with("stopped: Deadline"),
        "{}",
        ended.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_ignores_the_signal_is_dropped_at_the_timeout() {
    let store = TestStore::start().await;
    let runner = Runner::new().handler("stuck", |_: Context, _: Value| async move {
        futures::future::pending::<()>().await;
        Ok::<_, JobError>(())
    });
    let ended = store
        .run_to_end(&runner, &spec_with_timeout("stuck", 1))
        .await;
    assert_eq!(outcomes(&ended.job), [Some(Outcome::TimedOut)]);
    assert_eq!(ended.error(), "timed out after 1s (runner's own guard)");
}

fn spec_with_timeout(kind: &str, timeout_secs: u64) -> jobs::JobSpec {
    let mut job = spec(kind, json!({}));
    job.timeout_secs = timeout_secs;
    job
}
