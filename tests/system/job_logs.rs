//! Per-attempt logs end to end: command jobs on (mock) machines under the
//! shipped `runner` binary print; `GET /jobs/{id}/logs` reads what they
//! printed, also after a timeout or an OOM kill, and follows it live; a
//! job's secret values are masked; a failed attempt's last lines go with
//! its error to the job view, the dead letters and the callback.

use std::time::{Duration, Instant};

use crate::support::{listener, spawn_system_with, Listener, Options, TempDir, TestSystem};
use dispatcher::api::routes::logs::LogEntry;
use dispatcher::cli::client::ListQuery;
use jobs::{Attempt, Job, JobStatus, LogStream, Outcome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);
/// The attempt's cap for this test's runners (`JOB_LOG_MAX_BYTES`).
const CAP: u64 = 256 << 10;
/// The runner's batch interval and size (`runner::logs`).
const FLUSH_MS: f64 = 200.0;
const BATCH_BYTES: u64 = 64 << 10;

/// 100,000 numbered lines of about 100 bytes: 10 MB.
const FLOOD_PY: &str = r#"
import sys
pad = "x" * 88
for i in range(100000):
    sys.stdout.write(f"line {i:06d} {pad}\n")
"#;

/// Prints, then sleeps past its timeout.
const SLOW_SH: &str = "echo before the timeout; echo also before >&2; sleep 300";

/// Prints `woke` once the file `go` exists, then ends only once the file
/// `done` exists (the follower writes it on seeing `woke`): the line must
/// reach a follower while the job still runs. Fails after 30 s without.
const WAKE_PY: &str = r#"
import json, os, sys, time
params = json.load(sys.stdin)
def wait_for(path):
    deadline = time.time() + 30
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"{path} never appeared")
        time.sleep(0.005)
print("waiting", flush=True)
wait_for(params["go"])
print("woke", flush=True)
wait_for(params["done"])
"#;

/// A value of the job's write-only secrets, printed to both streams.
const SECRET: &str = "s3cret-4b7d-printed";
const LEAK_SH: &str = r#"echo "key=$API_KEY"; echo "also $API_KEY here" >&2"#;

/// Prints, then fails for good (exit 65) with its reason on stderr.
const LOUD_FAIL_SH: &str =
    "for i in 1 2 3; do echo \"step $i\"; done; echo 'boom: disk full' >&2; exit 65";

/// The job image's commands, as its `ENV RUNNER_COMMANDS=...` line.
fn image(mock: &mut mock_machines::MockConfig) {
    let commands = json!({
        "flood": ["python3", "-c", FLOOD_PY],
        "slow": ["sh", "-c", SLOW_SH],
        "wake": ["python3", "-c", WAKE_PY],
        "leak": ["sh", "-c", LEAK_SH],
        "loud_fail": ["sh", "-c", LOUD_FAIL_SH],
    });
    mock.image_env
        .insert("RUNNER_COMMANDS".into(), commands.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_kept_and_followed() {
    let system = spawn_system_with(Options {
        mock: image,
        extra_args: vec![
            format!("--job-log-max-bytes={CAP}"),
            "--callback-allow-hosts=127.0.0.1".into(),
        ],
        ..Options::default()
    })
    .await;
    let hook = listener().await;
    tokio::join!(
        a_flood_is_capped_in_few_store_commands(&system),
        a_timed_out_job_keeps_what_it_printed(&system),
        an_oom_killed_job_keeps_what_it_printed(&system),
        follow_sees_a_line_while_the_job_runs(&system),
        a_printed_secret_is_masked(&system),
        a_failed_attempts_last_lines_go_with_its_error(&system, &hook),
    );
    metrics_count_what_was_shipped(&system).await;
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

async fn text_log(system: &TestSystem, path: &str) -> (String, String) {
    let response = system
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let cursor = response.headers()["x-next-cursor"]
        .to_str()
        .unwrap()
        .to_string();
    (response.text().await.unwrap(), cursor)
}

/// How long the attempt ran, from its start to its end.
fn run_seconds(attempt: &Attempt) -> f64 {
    let ran = attempt.finished_at.unwrap() - attempt.started_at.unwrap();
    ran.num_milliseconds() as f64 / 1000.0
}

async fn a_flood_is_capped_in_few_store_commands(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "flood", "params": {}, "max_attempts": 1}))
        .await;
    let done = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    let attempt = &done.attempts[0];
    let log = attempt.log.as_ref().expect("a log summary");
    assert!(log.truncated, "{attempt:#?}");
    // Commands are bounded by time and size, not lines: one per batch
    // interval of the run, plus the size-triggered batches up to the cap.
    let run_secs = run_seconds(attempt);
    let bound = (run_secs * 1000.0 / FLUSH_MS).ceil() as u64 + CAP / BATCH_BYTES + 3;
    let batches = log.batches;
    eprintln!("flood: {batches} log batches over {run_secs:.2}s (bound {bound})");
    assert!(batches > 0, "the summary counts its batches: {log:#?}");
    assert!(batches <= bound, "{batches} > {bound}: {log:#?}");
    // At the cap: full to within one ~120-byte line of it.
    assert!((CAP - 200..=CAP).contains(&log.bytes), "{log:#?}");

    // Read by pages as JSON lines (the pages and their cursor header are
    // the wire contract): numbered from line 0, ending with the marker.
    let base = format!("/jobs/{}/logs?format=jsonl&limit=1000", job.id);
    let (mut lines, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}&cursor={c}"),
            None => base.clone(),
        };
        let (page, next) = text_log(system, &path).await;
        if page.is_empty() {
            break;
        }
        lines.extend(
            page.lines()
                .map(|l| serde_json::from_str::<LogEntry>(l).unwrap()),
        );
        cursor = Some(next);
    }
    let stdout: Vec<&LogEntry> = lines
        .iter()
        .filter(|l| l.stream == LogStream::Stdout)
        .collect();
    assert_eq!(stdout[0].line, format!("line 000000 {}", "x".repeat(88)));
    for (i, line) in stdout.iter().enumerate() {
        assert!(
            line.line.starts_with(&format!("line {i:06} ")),
            "line {i} out of order: {line:?}"
        );
    }
    let last = lines.last().unwrap();
    assert_eq!(last.stream, LogStream::System, "{last:?}");
    assert!(last.line.starts_with("log truncated"));
    assert_eq!(lines.len() as u64, log.lines);
}

async fn a_timed_out_job_keeps_what_it_printed(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "slow", "params": {}, "max_attempts": 1, "timeout_secs": 2}))
        .await;
    let done = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempt = &done.attempts[0];
    let (text, _) = text_log(system, &format!("/jobs/{}/logs?attempt=1", job.id)).await;
    assert!(text.contains("[1 stdout] before the timeout\n"), "{text}");
    assert!(text.contains("[1 stderr] also before\n"), "{text}");
    // The failure shows the end of the log with its error.
    let tail = &attempt.log_tail;
    assert!(!tail.is_empty(), "no log_tail: {attempt:#?}");
    assert!(tail.iter().any(|l| l == "before the timeout"), "{tail:?}");
}

async fn an_oom_killed_job_keeps_what_it_printed(system: &TestSystem) {
    // A Rust handler: the mock's memory watchdog measures the runner's
    // process group, which a command leaves.
    let job = system
        .submit(json!({
            "kind": "allocate", "params": {"mb": 700, "hold_ms": 5000, "delay_ms": 1000},
            "machine": {"memory_mb": 256}, "max_attempts": 1
        }))
        .await;
    let done = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(done.attempts[0].outcome, Some(Outcome::Oom), "{done:#?}");
    let (text, _) = text_log(system, &format!("/jobs/{}/logs", job.id)).await;
    assert!(text.contains("[1 log] allocating 700 MiB\n"), "{text}");
}

async fn follow_sees_a_line_while_the_job_runs(system: &TestSystem) {
    let dir = TempDir::new();
    let (go, done) = (dir.path.join("go"), dir.path.join("done"));
    let job = system
        .submit(json!({"kind": "wake", "params": {"go": go, "done": done}, "max_attempts": 1}))
        .await;
    let path = format!("/jobs/{}/logs?follow=true&attempt=1", job.id);
    let mut response = system
        .request(reqwest::Method::GET, &path)
        .send()
        .await
        .unwrap();
    // Wait for the attempt to exist (a 422 until it is claimed).
    while response.status() == 422 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        response = system
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .unwrap();
    }
    assert_eq!(response.status(), 200);
    let mut parser = dispatcher::cli::sse::Parser::default();
    let mut latency = None;
    let mut released = None::<Instant>;
    let mut ended = false;
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            for event in parser.push(&chunk) {
                if event.name == "end" {
                    ended = true;
                    return;
                }
                let line: LogEntry = serde_json::from_str(&event.data).unwrap();
                match line.line.as_str() {
                    "waiting" if released.is_none() => {
                        std::fs::write(&go, b"").unwrap();
                        released = Some(Instant::now());
                    }
                    // The job cannot end before this: it waits for `done`.
                    "woke" => {
                        latency = released.map(|at| at.elapsed());
                        std::fs::write(&done, b"").unwrap();
                    }
                    _ => {}
                }
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("the stream ends");
    assert!(ended, "the stream ends with an `end` event");
    let latency = latency.expect("`woke` arrived after `waiting`, before the end");
    let finished = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(finished.attempts[0].outcome, Some(Outcome::Succeeded));
    eprintln!("follow: a printed line arrived {latency:?} after its trigger (target 500ms)");
}

async fn a_printed_secret_is_masked(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "leak", "params": {}, "max_attempts": 1,
            "machine": {"secrets": {"API_KEY": SECRET}}}))
        .await;
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    for format in ["text", "jsonl"] {
        let (text, _) = text_log(system, &format!("/jobs/{}/logs?format={format}", job.id)).await;
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("key=[secret]"), "{text}");
        assert!(text.contains("also [secret] here"), "{text}");
    }
}

async fn a_failed_attempts_last_lines_go_with_its_error(system: &TestSystem, hook: &Listener) {
    let job = system
        .submit(json!({"kind": "loud_fail", "params": {}, "max_attempts": 3,
            "callback_url": hook.url}))
        .await;
    let done = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let printed = ["step 1", "step 2", "step 3", "boom: disk full"];
    // The tail holds the runner's own lines too. Each stream's lines keep
    // their order; stdout and stderr are separate pipes, so how the two
    // interleave is not fixed: the stderr line is compared as a set.
    let assert_tail = |where_: &str, view: &Job| {
        let attempt = &view.attempts[0];
        assert!(
            attempt
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("boom: disk full"),
            "{where_}: {attempt:#?}"
        );
        assert!(
            !attempt.log_tail.is_empty(),
            "{where_}: no log_tail: {attempt:#?}"
        );
        let tail: Vec<&str> = attempt
            .log_tail
            .iter()
            .map(String::as_str)
            .filter(|line| printed.contains(line))
            .collect();
        let stdout: Vec<&str> = tail
            .iter()
            .copied()
            .filter(|l| l.starts_with("step"))
            .collect();
        assert_eq!(stdout, printed[..3], "{where_}: {attempt:#?}");
        assert_eq!(tail.len(), printed.len(), "{where_}: {attempt:#?}");
    };
    assert_eq!(done.attempts.len(), 1, "not retried");
    assert_tail("the job view", &done);
    let failed = ListQuery {
        status: Some(JobStatus::Failed),
        limit: Some(100),
        ..ListQuery::default()
    };
    let dead = system.api.list(&failed).await.unwrap();
    let letter = dead
        .jobs
        .iter()
        .find(|j| j.id == job.id)
        .unwrap_or_else(|| panic!("not a dead letter: {dead:#?}"));
    assert_tail("the dead letter", letter);
    let deadline = Instant::now() + WITHIN;
    let body = loop {
        let found = hook
            .bodies()
            .iter()
            .filter_map(|b| serde_json::from_slice::<Job>(b).ok())
            .find(|b| b.id == job.id);
        if let Some(body) = found {
            break body;
        }
        assert!(Instant::now() < deadline, "no callback arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_tail("the callback body", &body);
}

async fn metrics_count_what_was_shipped(system: &TestSystem) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = system
            .request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        // The flood alone shipped more than half its cap.
        if value("dispatcher_log_bytes_total") > (CAP / 2) as f64
            && value("dispatcher_logs_truncated_total") >= 1.0
        {
            return;
        }
        assert!(Instant::now() < deadline, "log metrics missing:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
