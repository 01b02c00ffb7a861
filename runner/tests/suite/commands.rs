//! Command mode through `Runner::run` against a real store: shell and
//! Python programs as handlers, their results, progress, exit codes, and
//! that nothing they start outlives the attempt.

use crate::common::{processes_with, spec, wait_until, TestStore};
use jobs::{JobId, JobSpec, JobStatus, Outcome};
use runner::{exit, Runner};
use serde_json::{json, Value};

fn sh(kind: &str, script: &str) -> Runner {
    Runner::new().command(kind, ["sh", "-c", script])
}

fn outcomes(job: &jobs::Job) -> Vec<Option<Outcome>> {
    job.attempts.iter().map(|a| a.outcome).collect()
}

/// Starts a process in the background that only the test can name: its
/// command line holds `stray-{job id}`, the script's text does not.
const STRAY: &str = r#"sh -c 'sleep 300; :' "stray-$JOB_ID" &"#;

fn stray_marker(id: JobId) -> String {
    format!("stray-{id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_json_line_on_stdout_is_the_result() {
    let store = TestStore::start().await;
    let runner = sh(
        "shout",
        r#"read -r params
           echo "working on $params"
           echo '{"draft": true}'
           echo "log line" >&2
           echo "{\"job\": \"$JOB_ID\", \"attempt\": $JOB_ATTEMPT, \"params\": $params}"
           echo "bye""#,
    );
    let ended = store
        .run_to_end(&runner, &spec("shout", json!({"n": 1})))
        .await;
    let id = ended.job.id.to_string();
    assert_eq!(ended.job.status, JobStatus::Succeeded);
    assert_eq!(
        ended.job.result,
        Some(json!({"job": id, "attempt": 1, "params": {"n": 1}}))
    );
    assert_eq!(ended.exit_codes, [exit::SUCCEEDED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_json_on_stdout_is_a_null_result() {
    let store = TestStore::start().await;
    let ended = store
        .run_to_end(
            &sh("quiet", "echo done, nothing to return"),
            &spec("quiet", json!({})),
        )
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded);
    assert_eq!(ended.job.result, Some(Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_on_stderr_are_visible_while_it_runs() {
    let store = TestStore::start().await;
    let go = std::env::temp_dir().join(format!("runner-go-{}", uuid::Uuid::new_v4()));
    let runner = Runner::new().command(
        "steps",
        [
            "sh",
            "-c",
            r#"echo "PROGRESS 40 rendering page 2" >&2
               while [ ! -e "$1" ]; do sleep 0.02; done
               echo '{"pages": 5}'"#,
            "steps",
            go.to_str().unwrap(),
        ],
    );
    let id = store.submit(&spec("steps", json!({}))).await;
    let env = store.claim().await;
    let attempt = env.attempt.clone();
    let run = tokio::spawn(async move { runner.run(env).await });
    wait_until("progress recorded", || async {
        store.job(id).await.progress.is_some()
    })
    .await;
    let progress = store.job(id).await.progress.unwrap();
    assert_eq!(
        (progress.percent, progress.message.as_str()),
        (40, "rendering page 2")
    );

    std::fs::write(&go, b"").unwrap();
    assert_eq!(run.await.unwrap(), exit::SUCCEEDED);
    let _ = std::fs::remove_file(&go);
    let job = store.finish(&attempt, exit::SUCCEEDED).await;
    assert_eq!(job.result, Some(json!({"pages": 5})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_65_fails_the_job_at_once_with_the_last_stderr_line() {
    let store = TestStore::start().await;
    let runner = sh(
        "strict",
        r#"echo "checking params" >&2; echo "params.month is required" >&2; exit 65"#,
    );
    let mut job = spec("strict", json!({}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&runner, &job).await;
    assert_eq!(ended.job.status, JobStatus::Failed);
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error)], "not retried");
    assert_eq!(ended.error(), "exit code 65: params.month is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_exit_code_is_retried() {
    let store = TestStore::start().await;
    let runner = sh(
        "flaky",
        r#"if [ "$JOB_ATTEMPT" -lt 2 ]; then echo "database busy" >&2; exit 3; fi
           echo '{"ok": true}'"#,
    );
    let mut job = spec("flaky", json!({}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&runner, &job).await;
    assert_eq!(ended.job.status, JobStatus::Succeeded);
    assert_eq!(
        outcomes(&ended.job),
        [Some(Outcome::Error), Some(Outcome::Succeeded)]
    );
    assert_eq!(
        ended.job.attempts[0].error.as_deref(),
        Some("exit code 3: database busy")
    );
    assert_eq!(ended.exit_codes, [exit::HANDLER_FAILED, exit::SUCCEEDED]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_by_a_signal_is_retried_and_named() {
    let store = TestStore::start().await;
    let mut job = spec("segv", json!({}));
    job.max_attempts = 2;
    let ended = store.run_to_end(&sh("segv", "kill -SEGV $$"), &job).await;
    assert_eq!(outcomes(&ended.job), [Some(Outcome::Error); 2]);
    assert_eq!(ended.error(), "killed by signal 11 (SIGSEGV)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_fails_permanently() {
    let store = TestStore::start().await;
    let runner = Runner::new().command("ghost", ["/nonexistent/program"]);
    let mut job = spec("ghost", json!({}));
    job.max_attempts = 3;
    let ended = store.run_to_end(&runner, &job).await;
    assert_eq!(
        outcomes(&ended.job),
        [Some(Outcome::Error)],
        "{:#?}",
        ended.job.attempts
    );
    assert!(
        ended
            .error()
            .starts_with("cannot start \"/nonexistent/program\""),
        "{}",
        ended.error()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_of_output_on_both_streams_do_not_block_it() {
    let store = TestStore::start().await;
    // 5 MB of noise on stdout and 1 MB on stderr, interleaved, then the
    // result; the params (1 MB) are read only at the end.
    let script = r#"
import json, sys
for i in range(100_000):
    print(f"noise line {i:06} " + "x" * 36)
    if i % 5 == 0:
        print(f"stderr noise {i:06} " + "y" * 36, file=sys.stderr)
params = json.load(sys.stdin)
print(json.dumps({"lines": 100_000, "params_bytes": len(params["blob"])}))
"#;
    let runner = Runner::new().command("noisy", ["python3", "-c", script]);
    let blob = "z".repeat(1 << 20);
    let ended = store
        .run_to_end(&runner, &spec("noisy", json!({"blob": blob})))
        .await;
    assert_eq!(ended.job.status, JobStatus::Succeeded, "{}", ended.error());
    assert_eq!(
        ended.job.result,
        Some(json!({"lines": 100_000, "params_bytes": 1 << 20}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_it_does_not_read_do_not_block_it() {
    let store = TestStore::start().await;
    let blob = "z".repeat(4 << 20);
    let ended = store
        .run_to_end(
            &sh("deaf", r#"echo '{"read": false}'"#),
            &spec("deaf", json!({"blob": blob})),
        )
        .await;
    assert_eq!(ended.job.result, Some(json!({"read": false})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_it_leaves_running_is_killed_when_it_exits() {
    let store = TestStore::start().await;
    // The background process keeps stdout open: the result must not wait
    // for it.
    let runner = sh("leaky", &format!(r#"{STRAY} echo '{{"left": "a child"}}'"#));
    let ended = store.run_to_end(&runner, &spec("leaky", json!({}))).await;
    assert_eq!(ended.job.result, Some(json!({"left": "a child"})));
    let marker = stray_marker(ended.job.id);
    wait_until("the leftover is killed", || async {
        processes_with(&marker).is_empty()
    })
    .await;
}

/// Runs one attempt of `job` with `runner` in the background, checks the
/// stray child it starts is alive, lets `stop` end the attempt, and checks
/// the stray is gone. Returns the job's attempt error and the exit code.
async fn stray_is_killed(
    store: &TestStore,
    runner: Runner,
    job: JobSpec,
    stop: impl AsyncFnOnce(JobId),
) -> (jobs::Job, i32) {
    let id = store.submit(&job).await;
    let env = store.claim().await;
    let attempt = env.attempt.clone();
    let run = tokio::spawn(async move { runner.run(env).await });
    let marker = stray_marker(id);
    wait_until("the stray child runs", || async {
        !processes_with(&marker).is_empty()
    })
    .await;
    stop(id).await;
    let code = tokio::time::timeout(crate::common::WITHIN, run)
        .await
        .expect("the attempt ends")
        .unwrap();
    wait_until("the stray child is killed", || async {
        processes_with(&marker).is_empty()
    })
    .await;
    (store.finish(&attempt, code).await, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_timeout_its_whole_process_group_is_stopped() {
    let store = TestStore::start().await;
    let runner = sh("slow", &format!("{STRAY} wait"));
    let mut job = spec("slow", json!({}));
    job.timeout_secs = 1;
    let (job, code) = stray_is_killed(&store, runner, job, async |_| {}).await;
    assert_eq!(code, exit::HANDLER_FAILED);
    assert_eq!(outcomes(&job), [Some(Outcome::TimedOut)]);
    let error = job.error.unwrap();
    assert!(
        error.ends_with("stopped because the job's timeout is near: killed by signal 15 (SIGTERM)"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_ignores_sigterm_is_killed_at_the_timeout() {
    let store = TestStore::start().await;
    // Ignored signals are inherited: the whole group ignores SIGTERM.
    let runner = sh("stubborn", &format!("trap '' TERM; {STRAY} wait"));
    let mut job = spec("stubborn", json!({}));
    job.timeout_secs = 1;
    let (job, _) = stray_is_killed(&store, runner, job, async |_| {}).await;
    assert_eq!(outcomes(&job), [Some(Outcome::TimedOut)]);
    assert_eq!(
        job.error.unwrap(),
        "timed out after 1s (runner's own guard)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_job_stops_its_whole_process_group() {
    let store = TestStore::start().await;
    let runner = sh("endless", &format!("{STRAY} wait"));
    let (job, _) = stray_is_killed(&store, runner, spec("endless", json!({})), async |id| {
        store.store.cancel(id).await.unwrap();
    })
    .await;
    assert_eq!(
        job.attempts[0].error.as_deref(),
        Some("stopped because the job was cancelled: killed by signal 15 (SIGTERM)")
    );
}

/// Two attempts running at once in one process (virtual machines run
/// in-process) each get a children socket of their own, there for as
/// long as the command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_running_in_one_process_have_their_own_children_sockets() {
    let store = TestStore::start().await;
    // The socket exists at the start and still after a pause long enough
    // for the other attempt to have opened (and closed) its own.
    let runner = sh(
        "socket",
        r#"test -S "$JOB_CHILDREN_SOCKET" || exit 3
           sleep 1
           test -S "$JOB_CHILDREN_SOCKET" || exit 4
           printf '"%s"\n' "$JOB_CHILDREN_SOCKET""#,
    );
    let job = spec("socket", json!({}));
    let (a, b) = tokio::join!(
        store.run_to_end(&runner, &job),
        store.run_to_end(&runner, &job)
    );
    for ended in [&a, &b] {
        assert_eq!(ended.job.status, JobStatus::Succeeded, "{:#?}", ended.job);
    }
    assert_ne!(a.job.result, b.job.result, "one socket path for both");
}
