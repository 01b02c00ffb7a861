//! Command mode end to end: jobs submitted over HTTP run as Python and
//! shell programs under the shipped `runner` binary, on machines booted
//! through the (mock) Machines API, with the commands configured by
//! `RUNNER_COMMANDS` as a job image would set it.

use std::time::Duration;

use crate::common::{processes_with, wait_until};
use crate::support::{spawn_system_with, Options, TestSystem};
use jobs::{Job, JobStatus, Outcome, Progress};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(30);

const REPORT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/report.py");

/// Prints the job variables a command can see.
const ENV_PY: &str = r#"
import json, os
names = ["JOB_ID", "JOB_ATTEMPT", "JOB_TOKEN", "JOBS_STORE_URL", "JOBS_NAMESPACE", "JOB_HEARTBEAT_MS"]
print(json.dumps({name: os.environ.get(name) for name in names}))
"#;

/// Reports what of the job's variables (and the runner's own) it sees.
const VARS_PY: &str = r#"
import json, os
print(json.dumps({
    "MODEL": os.environ.get("MODEL"),
    "API_KEY_matches": os.environ.get("API_KEY") == "s3cret-value",
    "LD_PRELOAD": os.environ.get("LD_PRELOAD"),
    "PATH_is_the_runners": os.environ.get("PATH") != "/nonexistent",
    "RUNNER_COMMANDS_is_the_images": json.loads(os.environ["RUNNER_COMMANDS"])["vars"][0] == "python3",
}))
"#;

/// Reports progress, then waits for the file `params.go` to exist.
const STEPS_PY: &str = r#"
import json, os, sys, time
params = json.load(sys.stdin)
print("PROGRESS 40 halfway", file=sys.stderr, flush=True)
while not os.path.exists(params["go"]):
    time.sleep(0.02)
print(json.dumps({"steps": 2}))
"#;

/// Starts a background child named `stray-{job id}`, then waits for it.
const ENDLESS_SH: &str = r#"sh -c 'sleep 300; :' "stray-$JOB_ID" & wait"#;

/// The job image's commands, as its `ENV RUNNER_COMMANDS=...` line.
fn image(mock: &mut mock_machines::MockConfig) {
    let commands = json!({
        "report": ["python3", REPORT_PY],
        "env": ["python3", "-c", ENV_PY],
        "vars": ["python3", "-c", VARS_PY],
        "steps": ["python3", "-c", STEPS_PY],
        "endless": ["sh", "-c", ENDLESS_SH],
    });
    mock.image_env
        .insert("RUNNER_COMMANDS".into(), commands.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_jobs_run_on_machines() {
    let system = spawn_system_with(Options {
        mock: image,
        ..Options::default()
    })
    .await;
    tokio::join!(
        python_report(&system),
        permanent_exit_code(&system),
        job_code_cannot_reach_the_store(&system),
        job_variables_reach_the_command(&system),
        stored_job_variables_cannot_configure_the_runner(&system),
        progress_while_running(&system),
        cancel_kills_the_process_group(&system),
        timeout_kills_the_process_group(&system),
    );
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

async fn python_report(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "report", "params": {"month": "2026-10", "regions": ["eu", "us"]}}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(
        job.result,
        Some(json!({"month": "2026-10", "totals": {"eu": 5620, "us": 5760}, "total": 11380}))
    );
    assert_eq!(
        job.progress,
        Some(Progress {
            percent: 100,
            message: "summed us".into()
        })
    );
    assert_eq!(job.attempts[0].exit_code, Some(0));
}

async fn permanent_exit_code(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "report", "params": {"month": 10}, "max_attempts": 3}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts.len(), 1, "{job:#?}");
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Error));
    assert_eq!(
        job.error.as_deref(),
        Some(r#"exit code 65: params.month must be a month like "2026-10", got 10"#)
    );
}

async fn job_code_cannot_reach_the_store(system: &TestSystem) {
    let job = system.submit(json!({"kind": "env"})).await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(
        job.result,
        Some(json!({
            "JOB_ID": job.id.to_string(), "JOB_ATTEMPT": "1",
            "JOB_TOKEN": null, "JOBS_STORE_URL": null, "JOBS_NAMESPACE": null, "JOB_HEARTBEAT_MS": null,
        }))
    );
}

async fn job_variables_reach_the_command(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "vars", "machine": {
            "env": {"MODEL": "small"}, "secrets": {"API_KEY": "s3cret-value"}}}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(
        job.result,
        Some(
            json!({"MODEL": "small", "API_KEY_matches": true, "LD_PRELOAD": null,
               "PATH_is_the_runners": true, "RUNNER_COMMANDS_is_the_images": true})
        )
    );
}

/// Defence in depth: a job record that holds what the API refuses (as if
/// it reached the store another way) still cannot configure the runner or
/// the command's loader and search path.
async fn stored_job_variables_cannot_configure_the_runner(system: &TestSystem) {
    let spec = jobs::JobSpec {
        kind: jobs::Kind::parse("vars").unwrap(),
        params: json!({}),
        priority: 0,
        max_attempts: 1,
        timeout_secs: 60,
        backoff: jobs::Backoff::default(),
        machine: jobs::MachineSpec {
            env: [
                ("RUNNER_COMMANDS", r#"{"vars": ["sh", "-c", "echo pwned"]}"#),
                ("RUNNER_CONFIG", "/nonexistent.toml"),
                ("PATH", "/nonexistent"),
                ("MODEL", "big"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
            ..jobs::MachineSpec::default()
        },
    };
    let options = jobs::EnqueueOptions {
        secrets: jobs::Secrets(
            [
                ("LD_PRELOAD", "/nonexistent.so"),
                ("API_KEY", "s3cret-value"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ),
        ..jobs::EnqueueOptions::default()
    };
    let jobs::Enqueued::Created(job) = system
        .store
        .enqueue(jobs::JobId::new(), &spec, &options)
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(
        job.result,
        Some(
            json!({"MODEL": "big", "API_KEY_matches": true, "LD_PRELOAD": null,
               "PATH_is_the_runners": true, "RUNNER_COMMANDS_is_the_images": true})
        )
    );
}

async fn progress_while_running(system: &TestSystem) {
    let go = std::env::temp_dir().join(format!("runner-go-{}", uuid::Uuid::new_v4()));
    let job = system
        .submit(json!({"kind": "steps", "params": {"go": go}}))
        .await;
    let id = job.id;
    wait_until("progress shown", || async {
        system.job(&id).await.progress.is_some()
    })
    .await;
    let running = system.job(&id).await;
    assert_eq!(running.status, JobStatus::Running);
    assert_eq!(
        running.progress,
        Some(Progress {
            percent: 40,
            message: "halfway".into()
        })
    );
    std::fs::write(&go, b"").unwrap();
    let job = system.wait_for(&id, JobStatus::Succeeded, WITHIN).await;
    let _ = std::fs::remove_file(&go);
    assert_eq!(job.result, Some(json!({"steps": 2})));
}

/// Waits until the job's background child runs, and returns its marker.
async fn stray_of(job: &Job) -> String {
    let marker = format!("stray-{}", job.id);
    wait_until("the command's child runs", || async {
        !processes_with(&marker).is_empty()
    })
    .await;
    marker
}

async fn gone(marker: &str) {
    wait_until("the command's child is killed", || async {
        processes_with(marker).is_empty()
    })
    .await;
}

async fn cancel_kills_the_process_group(system: &TestSystem) {
    let job = system.submit(json!({"kind": "endless"})).await;
    let marker = stray_of(&job).await;
    let response = system
        .http
        .post(system.url(&format!("/jobs/{}/cancel", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job = system.wait_for(&job.id, JobStatus::Cancelled, WITHIN).await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Cancelled));
    gone(&marker).await;
}

async fn timeout_kills_the_process_group(system: &TestSystem) {
    let job = system
        .submit(json!({"kind": "endless", "timeout_secs": 1, "max_attempts": 1}))
        .await;
    let marker = stray_of(&job).await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::TimedOut));
    gone(&marker).await;
}
