//! End to end: a job submitted over HTTP runs on a machine booted through
//! the (mock) Machines API by a real runner process, and the machine is
//! destroyed afterwards, whatever the outcome.

use std::time::Duration;

use crate::support::{spawn_system, spawn_system_with, Options};
use jobs::{JobStatus, Outcome};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_job_runs_on_a_machine_and_the_machine_is_destroyed() {
    let system = spawn_system().await;
    let statuses = system.record_statuses().await;

    let params = json!({"hello": "world", "n": [1, 2, 3]});
    let job = system
        .submit(json!({"kind": "echo", "params": params}))
        .await;
    assert_eq!(job.status, JobStatus::Queued);
    let id = job.id;

    let seen = statuses.until(&id, JobStatus::Succeeded, WITHIN).await;
    use JobStatus::{Queued, Running, Starting, Succeeded};
    assert_eq!(seen, [Queued, Starting, Running, Succeeded]);

    let job = system.wait_for(&id, Succeeded, WITHIN).await;
    assert_eq!(job.result, Some(params));
    assert_eq!(job.attempts.len(), 1);
    let attempt = &job.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::Succeeded));
    assert_eq!(attempt.exit_code, Some(0));
    let machine_id = attempt.machine_id.as_deref().expect("machine id recorded");
    for (stamp, at) in [
        ("claimed_at", attempt.claimed_at),
        ("started_at", attempt.started_at),
        ("finished_at", attempt.finished_at),
    ] {
        assert!(at.is_some(), "{stamp} missing: {attempt:#?}");
    }
    assert!(job.finished_at.is_some());

    system.assert_all_machines_destroyed().await;
    let all = system.machines(true).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, machine_id);
    // The machine was booted as the runner with the attempt's environment.
    assert_eq!(all[0].config.env["JOB_ID"], id.to_string());
    assert_eq!(all[0].config.metadata["role"], "job");
    assert_eq!(
        all[0].config.init.as_ref().unwrap().exec.as_ref().unwrap()[0],
        env!("CARGO_BIN_EXE_runner")
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleep_job_is_running_while_it_sleeps() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "sleep", "params": {"ms": 1500}}))
        .await;
    let running = system.wait_for(&job.id, JobStatus::Running, WITHIN).await;
    assert!(running.attempts[0].started_at.is_some());
    assert_eq!(
        system.machines(false).await.len(),
        1,
        "its machine is live while it runs"
    );
    let done = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(done.result, Some(json!({"slept_ms": 1500})));
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_is_not_retried() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "fail", "params": {"permanent": true, "message": "bad input file"}}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Error));
    assert_eq!(job.attempts[0].error.as_deref(), Some("bad input file"));
    assert_eq!(job.attempts[0].exit_code, Some(1));
    assert_eq!(job.error.as_deref(), Some("bad input file"));
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failure_uses_every_attempt_then_dead_letters() {
    let system = spawn_system().await;
    let job = system
        .submit(
            json!({"kind": "fail", "max_attempts": 2, "backoff": {"base_ms": 50, "max_ms": 100}}),
        )
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempts = &job.attempts;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts.iter().all(|a| a.outcome == Some(Outcome::Error)),
        "{attempts:#?}"
    );
    // Each attempt had its own machine.
    assert_ne!(attempts[0].machine_id, attempts[1].machine_id);

    let dead = system.jobs_in(JobStatus::Failed).await;
    assert_eq!(dead[0].id, job.id);
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_is_recorded_with_its_exit_code() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "crash", "params": {"code": 7}, "max_attempts": 1}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempt = &job.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::Crashed));
    assert_eq!(attempt.exit_code, Some(7));
    assert!(
        attempt.error.as_deref().unwrap().contains("code 7"),
        "{attempt:#?}"
    );
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_guard_times_out_a_long_job() {
    let system = spawn_system().await;
    let job = system
        .submit(
            json!({"kind": "sleep", "params": {"ms": 60000}, "timeout_secs": 1, "max_attempts": 1}),
        )
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::TimedOut));
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

/// The cancel routes' answers (202, then 409 naming the state) are wire
/// format, so they are checked as HTTP; the job itself through the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_stops_its_machine() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "sleep", "params": {"ms": 60000}}))
        .await;
    let id = job.id;
    system.wait_for(&id, JobStatus::Running, WITHIN).await;
    let response = system
        .http
        .post(system.url(&format!("/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job = system.wait_for(&id, JobStatus::Cancelled, WITHIN).await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Cancelled));
    system.assert_all_machines_destroyed().await;

    // Cancelling a finished job changes nothing.
    let again = system
        .http
        .delete(system.url(&format!("/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("cancelled"),
        "{body}"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_jobs_never_exceed_four_machines() {
    let system = spawn_system_with(Options {
        max_machines: 4,
        ..Options::default()
    })
    .await;
    let submits =
        (0..50).map(|i| system.submit(json!({"kind": "sleep", "params": {"ms": 20 + i % 5 * 20}})));
    let jobs = futures::future::join_all(submits).await;
    for job in &jobs {
        system
            .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(120))
            .await;
    }
    let stats = system.mock_stats();
    assert_eq!(stats.created, 50);
    assert!(
        stats.peak_live <= 4,
        "peak {} machines live at once",
        stats.peak_live
    );
    assert!(
        stats.peak_live >= 2,
        "the cap of 4 was never used: peak {}",
        stats.peak_live
    );
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}
