//! `dispatcher jobs ...`: the real binary against a running system with
//! API tokens: submit (with job options) and wait, get, list, cancel, retry, the exit codes
//! of waited jobs, and clear errors for bad input.

use std::process::Output;
use std::time::Duration;

use crate::support::{spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::ListQuery;
use jobs::{JobId, JobStatus};
use serde_json::Value;

const TOKEN: &str = "cli-test-token";
const WITHIN: Duration = Duration::from_secs(60);

async fn system() -> TestSystem {
    spawn_system_with(Options {
        api_tokens: vec![TOKEN.into()],
        ..Options::default()
    })
    .await
}

/// Runs `dispatcher jobs ARGS` with the URL and token in the environment.
async fn jobs(system: &TestSystem, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .arg("jobs")
        .args(args)
        .env("DISPATCHER_URL", &system.base)
        .env("DISPATCHER_TOKEN", TOKEN)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command was refused (exit 1) with every one of `needles` in
/// its stderr.
fn assert_refused(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    for needle in needles {
        assert!(err.contains(needle), "no {needle:?} in: {err}");
    }
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", stderr(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_get_and_list() {
    let system = system().await;

    let done = jobs(
        &system,
        &[
            "submit",
            "echo",
            "--params",
            r#"{"a":1}"#,
            "--wait",
            "--json",
        ],
    )
    .await;
    let job = json(&done);
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["result"], serde_json::json!({"a": 1}));
    let id = job["id"].as_str().unwrap();

    // Human output: the job, its attempt with machine and exit code.
    let shown = jobs(&system, &["get", id]).await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    assert!(
        text.starts_with(&format!("{id}  echo  succeeded")),
        "{text}"
    );
    let machine = job["attempts"][0]["machine_id"].as_str().unwrap();
    assert!(
        text.contains(&format!("#1 succeeded  machine {machine}")),
        "{text}"
    );
    assert!(text.contains("exit 0"), "{text}");
    assert!(text.contains(r#"result    {"a":1}"#), "{text}");

    // The same with --url and --token flags instead of the environment.
    let flags = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["jobs", "list", "--status", "succeeded", "--json"])
        .args(["--url", &system.base, "--token", TOKEN])
        .env_remove("DISPATCHER_URL")
        .env_remove("DISPATCHER_TOKEN")
        .output()
        .await
        .unwrap();
    let page = json(&flags);
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id]);

    let table = jobs(&system, &["list"]).await;
    let text = stdout(&table);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.contains("succeeded")),
        "{text}"
    );

    // A job that fails makes a waiting command exit non-zero.
    let failed = jobs(
        &system,
        &[
            "submit",
            "fail",
            "--params",
            r#"{"permanent":true,"message":"no such report"}"#,
            "--wait",
        ],
    )
    .await;
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let text = stdout(&failed);
    assert!(text.contains("failed"), "{text}");
    assert!(text.contains("no such report"), "{text}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_wait_and_retry() {
    let system = system().await;
    let submitted = jobs(
        &system,
        &["submit", "sleep", "--params", r#"{"ms":60000}"#, "--json"],
    )
    .await;
    let id = json(&submitted)["id"].as_str().unwrap().to_string();
    let job_id: JobId = id.parse().unwrap();
    system.wait_for(&job_id, JobStatus::Running, WITHIN).await;

    // `jobs wait` follows the job while another command cancels it.
    let waiting = tokio::spawn({
        let base = system.base.clone();
        let id = id.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
                .args(["jobs", "wait", &id, "--json"])
                .env("DISPATCHER_URL", base)
                .env("DISPATCHER_TOKEN", TOKEN)
                .kill_on_drop(true)
                .output()
                .await
                .unwrap()
        }
    });
    let cancelled = jobs(&system, &["cancel", &id, "--json"]).await;
    assert!(json(&cancelled)["cancel_requested"].as_bool().unwrap());
    let waited = waiting.await.unwrap();
    assert_eq!(waited.status.code(), Some(1), "{}", stderr(&waited));
    let job: Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(job["status"], "cancelled");

    let retried = jobs(&system, &["retry", &id]).await;
    assert!(retried.status.success(), "{}", stderr(&retried));
    // Queued again, or already claimed by the launcher: not cancelled.
    let first_line = stdout(&retried)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        first_line.starts_with(&format!("{id}  sleep  ")),
        "{first_line}"
    );
    assert!(!first_line.ends_with("cancelled"), "{first_line}");
    let again = jobs(&system, &["cancel", &id]).await;
    assert!(again.status.success(), "{}", stderr(&again));

    // Cancelling a finished job: the API's 409 message, exit 1.
    system.wait_for(&job_id, JobStatus::Cancelled, WITHIN).await;
    let twice = jobs(&system, &["cancel", &id]).await;
    assert_refused(&twice, &["409", "already cancelled"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_sets_job_options() {
    let system = system().await;
    let args = [
        "submit",
        "echo",
        "--priority",
        "-5",
        "--max-attempts",
        "2",
        "--timeout-secs",
        "30",
        "--delay-secs",
        "3600",
        "--idempotency-key",
        "nightly-2026-11-23",
        "--json",
    ];
    let first = json(&jobs(&system, &args).await);
    assert_eq!(first["status"], "scheduled", "{first:#}");
    assert_eq!(first["priority"], -5);
    assert_eq!(first["max_attempts"], 2);
    assert_eq!(first["timeout_secs"], 30);
    // The same key and body again: the first job, nothing new.
    let again = json(&jobs(&system, &args).await);
    assert_eq!(again["id"], first["id"]);
    let listed = system.api.list(&ListQuery::default()).await.unwrap();
    assert_eq!(listed.jobs.len(), 1, "{listed:#?}");

    let bad_time = jobs(&system, &["submit", "echo", "--run-at", "tomorrow"]).await;
    assert_refused(&bad_time, &["(field `run_at`)"]);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_bad_tokens_get_clear_errors() {
    let system = system().await;

    let bad_json = jobs(&system, &["submit", "echo", "--params", "{"]).await;
    assert_eq!(bad_json.status.code(), Some(2), "clap's usage error");
    assert!(
        stderr(&bad_json).contains("not JSON"),
        "{}",
        stderr(&bad_json)
    );

    let bad_kind = jobs(&system, &["submit", "Not A Kind!"]).await;
    assert_refused(&bad_kind, &["422", "(field `kind`)"]);

    let bad_id = jobs(&system, &["get", "nope"]).await;
    assert_refused(&bad_id, &["(field `id`)"]);

    let no_token = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["jobs", "list", "--url", &system.base])
        .env_remove("DISPATCHER_TOKEN")
        .output()
        .await
        .unwrap();
    assert_refused(&no_token, &["401"]);
    system.stop().await;
}
