//! `--log-format json`: the real `dispatcher dev` binary logs one JSON
//! line per state change of a job, each naming the job, the attempt and
//! (once there is one) the machine.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{free_port, send_json, TempDir};
use dispatcher::cli::client::{ApiClient, SubmitOptions};
use jobs::{Job, JobStatus};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_state_change_is_one_json_line_with_job_attempt_and_machine() {
    let dir = TempDir::new();
    let (port, machines_port, store_port) =
        (free_port().await, free_port().await, free_port().await);
    let mut dev = Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["dev", "--log-format", "json"])
        .arg(format!("--port={port}"))
        .arg(format!("--machines-port={machines_port}"))
        .arg(format!("--valkey-url=redis://127.0.0.1:{store_port}"))
        .current_dir(&dir.path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("dispatcher dev starts");
    let mut lines = BufReader::new(dev.stdout.take().unwrap()).lines();

    // Every line that is a log line is JSON; dev's banner is plain text.
    let mut logs: Vec<Value> = Vec::new();
    let started = tokio::time::timeout(WITHIN, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(log) = serde_json::from_str::<Value>(&line) {
                let listening = log["fields"]["message"] == "dispatcher listening";
                logs.push(log);
                if listening {
                    return;
                }
            }
        }
        panic!("dispatcher dev exited before listening");
    })
    .await;
    assert!(started.is_ok(), "dispatcher dev did not start: {logs:#?}");

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let job = ApiClient::new(&base, None)
        .submit("sleep", json!({"ms": 300}), &SubmitOptions::default())
        .await
        .unwrap();
    let id = job.id.to_string();
    let done: Value = send_json(http.get(format!("{base}/jobs/{id}?wait=60"))).await;
    let done: Job = serde_json::from_value(done).unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:#?}");
    let machine = done.attempts[0].machine_id.clone().unwrap();

    // Stop it (SIGTERM) and read the rest of the log.
    let pid = dev.id().unwrap() as i32;
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let rest = tokio::time::timeout(WITHIN, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(log) = serde_json::from_str::<Value>(&line) {
                logs.push(log);
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "dispatcher dev did not stop");
    let _ = dev.wait().await;

    // The job's lines, by message: each exactly once.
    let of_job = |message: &str| -> Value {
        let found: Vec<&Value> = logs
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .filter(|l| l["fields"]["job"] == id.as_str() || l["span"]["job"] == id.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{message}: {found:#?}");
        found[0].clone()
    };
    let submitted = of_job("job submitted");
    assert_eq!(submitted["fields"]["status"], "queued");
    for (message, status) in [
        ("attempt claimed; creating its machine", Some("starting")),
        ("machine created", None),
        ("attempt running", Some("running")),
        ("attempt finished", Some("succeeded")),
    ] {
        let line = of_job(message);
        assert_eq!(line["span"]["attempt"], 1, "{line:#}");
        if let Some(status) = status {
            assert_eq!(line["fields"]["status"], status, "{line:#}");
        }
        if message != "attempt claimed; creating its machine" {
            assert_eq!(line["fields"]["machine"], machine.as_str(), "{line:#}");
        }
    }
}
