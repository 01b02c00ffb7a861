//! The attempt's log through `Runner::run` against a real store: what a
//! command and a Rust handler print is stored per attempt, masked, capped,
//! fenced by the attempt's token, and removed with the job.

use crate::common::{spec, TestStore, WITHIN};
use jobs::{Appended, JobId, LogBatch, LogCursor, LogEntry, LogLine, LogStream, Store};
use runner::logs::mask::MASK;
use runner::{Context, JobError, Runner};
use serde_json::{json, Value};

/// The runner's `main` installs the capture layer; these tests call
/// `Runner::run`, so they install it themselves (once per binary).
fn capture_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(runner::logs::CaptureLayer)
        .try_init();
}

async fn all_lines(store: &Store, id: JobId, attempt: u32) -> Vec<LogLine> {
    store
        .read_log(id, LogCursor::start_of(attempt), 1_000_000)
        .await
        .unwrap()
}

fn texts(lines: &[LogLine], stream: LogStream) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.line.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_output_is_kept_per_stream_and_secrets_are_masked() {
    capture_tracing();
    let store = TestStore::start().await;
    let runner = Runner::new().command(
        "talk",
        [
            "sh",
            "-c",
            "echo one; echo two >&2; echo 'token=hunter2-secret!'; echo PROGRESS 50 half >&2; exit 3",
        ],
    );
    store.submit(&spec("talk", json!({}))).await;
    let mut env = store.claim().await;
    env.machine.logs.secrets = vec!["hunter2-secret".into()];
    let id = env.attempt.job_id;
    let code = tokio::time::timeout(WITHIN, runner.run(env.clone()))
        .await
        .unwrap();
    let job = store.finish(&env.attempt, code).await;

    let lines = all_lines(&store.store, id, 1).await;
    assert_eq!(
        texts(&lines, LogStream::Stdout),
        ["one", &format!("token={MASK}!")]
    );
    assert_eq!(
        texts(&lines, LogStream::Stderr),
        ["two"],
        "progress is not logged"
    );
    assert!(
        !serde_json::to_string(&lines).unwrap().contains("hunter2"),
        "{lines:?}"
    );
    // The runner's own lines about the attempt are there too.
    assert!(
        texts(&lines, LogStream::Log)
            .iter()
            .any(|l| l.contains("command started")),
        "{lines:#?}"
    );
    // A failed attempt shows the end of its log with its error.
    let attempt = &job.attempts[0];
    assert!(attempt.error.as_deref().unwrap().contains("exit code 3"));
    assert!(attempt.log_tail.iter().any(|l| l == "two"), "{attempt:#?}");
    let summary = attempt.log.as_ref().expect("a log summary");
    assert_eq!(summary.lines, lines.len() as u64);
    assert!(!summary.truncated);
}

async fn chatty(ctx: Context, params: Value) -> Result<Value, JobError> {
    let n = params["lines"].as_u64().unwrap();
    for i in 0..n {
        tracing::info!(i, "traced line");
        ctx.log(format!("ctx line {i} {}", "x".repeat(100)));
    }
    Ok(json!(n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_its_cap_ends_with_a_truncation_line() {
    capture_tracing();
    let store = TestStore::start().await;
    let runner = Runner::new().handler("chatty", chatty);
    store.submit(&spec("chatty", json!({"lines": 5000}))).await;
    let mut env = store.claim().await;
    env.machine.logs.max_bytes = 50_000;
    let id = env.attempt.job_id;
    let code = tokio::time::timeout(WITHIN, runner.run(env.clone()))
        .await
        .unwrap();
    let job = store.finish(&env.attempt, code).await;
    assert_eq!(job.status, jobs::JobStatus::Succeeded);

    let lines = all_lines(&store.store, id, 1).await;
    let last = lines.last().unwrap();
    assert_eq!(last.stream, LogStream::System);
    assert!(last.line.starts_with("log truncated"), "{last:?}");
    let stored: usize = lines[..lines.len() - 1]
        .iter()
        .map(|l| LogEntry::new(l).bytes())
        .sum();
    assert!(stored <= 50_000, "{stored}");
    let summary = job.attempts[0].log.clone().unwrap();
    assert!(summary.truncated);
    assert!(
        job.attempts[0].log_tail.is_empty(),
        "a success shows no tail"
    );
    // Batches, not lines: 5000 lines of ~130 bytes cost a handful of
    // store commands before the cap stops them.
    assert!(summary.batches < 20, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_attempt_appends_and_purge_removes_the_log() {
    let store = TestStore::start().await;
    store.submit(&spec("echo", json!({}))).await;
    let env = store.claim().await;
    let id = env.attempt.job_id;
    let mut batch = LogBatch::new();
    batch.push(LogEntry::new(&LogLine {
        ts: chrono::Utc::now(),
        stream: LogStream::Stdout,
        line: "hello".into(),
    }));
    let s = &store.store;
    assert_eq!(
        s.append_log(&env.attempt, &batch, 1 << 20, 0)
            .await
            .unwrap(),
        Appended::Stored { truncated: false }
    );
    let mut zombie = env.attempt.clone();
    zombie.token = "not-the-token".into();
    assert_eq!(
        s.append_log(&zombie, &batch, 1 << 20, 0).await.unwrap(),
        Appended::Stale
    );
    zombie = env.attempt.clone();
    zombie.attempt = 2;
    assert_eq!(
        s.append_log(&zombie, &batch, 1 << 20, 0).await.unwrap(),
        Appended::Stale
    );
    assert_eq!(s.log_len(id, 1).await.unwrap(), 1);
    assert_eq!(s.log_len(id, 2).await.unwrap(), 0);

    store.finish(&env.attempt, 0).await;
    assert_eq!(s.purge(std::time::Duration::ZERO, 10).await.unwrap(), 1);
    assert_eq!(s.log_len(id, 1).await.unwrap(), 0, "purged with its job");
    assert_eq!(
        s.append_log(&env.attempt, &batch, 1 << 20, 0)
            .await
            .unwrap(),
        Appended::Stale,
        "a purged job's log is not re-created"
    );
    assert_eq!(s.log_len(id, 1).await.unwrap(), 0);
}

/// The job's write-only secrets, as the dispatcher stores them, are masked
/// in its log: job code that prints one leaks nothing through the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_printed_secret_of_the_job_is_masked() {
    capture_tracing();
    let store = TestStore::start().await;
    let runner = Runner::new().command("leak", ["sh", "-c", "echo \"key=$API_KEY\""]);
    let secrets = jobs::Secrets([("API_KEY".to_string(), "s3cr3t-value".to_string())].into());
    let options = jobs::EnqueueOptions {
        secrets,
        ..jobs::EnqueueOptions::default()
    };
    let id = store.submit_with(&spec("leak", json!({})), &options).await;
    let env = store.claim().await;
    let code = tokio::time::timeout(WITHIN, runner.run(env.clone()))
        .await
        .unwrap();
    store.finish(&env.attempt, code).await;
    let lines = all_lines(&store.store, id, 1).await;
    assert_eq!(texts(&lines, LogStream::Stdout), [format!("key={MASK}")]);
    assert!(!serde_json::to_string(&lines).unwrap().contains("s3cr3t"));
}
