//! Failure semantics end to end: retries with growing backoff, dead
//! letters, crashes, OOM kills, timeouts, boot failures, Machines API rate
//! limits, cancellation in every state, and fencing against a late runner.
//! Faults come from the mock Machines API's fault injection.

use std::time::Duration;

use crate::support::{spawn_system, spawn_system_with, Options, TestSystem};
use jobs::{Job, JobStatus, Outcome};
use serde_json::json;

const WITHIN: Duration = Duration::from_secs(60);
/// The mock's key for `wait` calls in its per-route counts.
const WAIT: &str = "GET /v1/apps/{app}/machines/{id}/wait";

async fn quick_system() -> TestSystem {
    spawn_system_with(Options {
        extra_args: vec![
            "--timeout-grace-secs=1".into(),
            "--machines-retry-secs=1".into(),
        ],
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_succeeds_with_growing_gaps() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({
            "kind": "flaky",
            "params": {"succeed_on_attempt": 3},
            "backoff": {"base_ms": 400, "max_ms": 5000, "jitter": false}
        }))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    let attempts = &job.attempts;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0].outcome, Some(Outcome::Error));
    assert_eq!(attempts[1].outcome, Some(Outcome::Error));
    assert_eq!(attempts[2].outcome, Some(Outcome::Succeeded));
    assert_eq!(job.result, Some(json!({"attempt": 3})));
    let gap = |n: usize| {
        attempts[n + 1].claimed_at.expect("a timestamp")
            - attempts[n].finished_at.expect("a timestamp")
    };
    let (first, second) = (gap(0), gap(1));
    assert!(first.num_milliseconds() >= 390, "first backoff {first}");
    assert!(second.num_milliseconds() >= 790, "second backoff {second}");
    assert!(second > first, "gaps grow: {first} then {second}");
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_exhaust_attempts_and_land_in_dead_letters() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({
            "kind": "crash", "params": {"code": 42}, "max_attempts": 3,
            "backoff": {"base_ms": 50, "max_ms": 100}
        }))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts.len(), 3);
    for attempt in &job.attempts {
        assert_eq!(attempt.outcome, Some(Outcome::Crashed), "{attempt:#?}");
        assert_eq!(attempt.exit_code, Some(42));
    }
    // Each crash was seen by the machine's watch, not by the runner's
    // silence (which would take --lost-after-secs).
    let stats = system.mock_stats();
    assert!(stats.calls.get(WAIT).is_some_and(|&n| n >= 3), "{stats:#?}");
    assert!(
        job.error.as_deref().unwrap().contains("code 42"),
        "{job:#?}"
    );
    let dead = system.jobs_in(JobStatus::Failed).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, job.id);

    // A dead letter can be retried by hand: a fresh budget, history kept.
    let retried = system
        .http
        .post(system.url(&format!("/jobs/{}/retry", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(job.attempts.len(), 6);
    let not_failed = system.submit(json!({"kind": "echo"})).await;
    system
        .wait_for(&not_failed.id, JobStatus::Succeeded, WITHIN)
        .await;
    let refused = system
        .http
        .post(system.url(&format!("/jobs/{}/retry", not_failed.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_reported_as_oom() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({
            "kind": "allocate", "params": {"mb": 700, "hold_ms": 5000},
            "machine": {"memory_mb": 256}, "max_attempts": 1
        }))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempt = &job.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::Oom), "{attempt:#?}");
    assert!(attempt.error.as_deref().unwrap().contains("memory"));
    assert!(system.mock_stats().oom_kills >= 1);
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

/// With no watch slot free (a fleet larger than `--max-watches`), a crash
/// and an OOM kill are still found: the runner falls silent, and one `get`
/// confirms the machine is down and tells how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_machines_crashing_are_found_by_their_silence() {
    let system = spawn_system_with(Options {
        extra_args: vec!["--max-watches=0".into(), "--lost-after-secs=1".into()],
        ..Options::default()
    })
    .await;
    let crash = system
        .submit(json!({"kind": "crash", "params": {"code": 42}, "max_attempts": 1}))
        .await;
    let oom = system
        .submit(json!({
            "kind": "allocate", "params": {"mb": 700, "hold_ms": 5000},
            "machine": {"memory_mb": 256}, "max_attempts": 1
        }))
        .await;
    let crash = system.wait_for(&crash.id, JobStatus::Failed, WITHIN).await;
    let oom = system.wait_for(&oom.id, JobStatus::Failed, WITHIN).await;
    assert_eq!(
        crash.attempts[0].outcome,
        Some(Outcome::Crashed),
        "{crash:#?}"
    );
    assert_eq!(crash.attempts[0].exit_code, Some(42));
    assert_eq!(oom.attempts[0].outcome, Some(Outcome::Oom), "{oom:#?}");
    let stats = system.mock_stats();
    assert_eq!(
        stats.calls.get(WAIT),
        None,
        "nothing was watched: {stats:#?}"
    );

    // A job that reports still finishes at once, with its exit code.
    let echo = system.submit(json!({"kind": "echo"})).await;
    let echo = system
        .wait_for(&echo.id, JobStatus::Succeeded, WITHIN)
        .await;
    assert_eq!(echo.attempts[0].exit_code, Some(0), "{echo:#?}");
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_never_boots_times_out_and_is_destroyed() {
    let system = quick_system().await;
    system.set_faults(json!({"never_boot_rate": 1.0})).await;
    let job = system
        .submit(json!({"kind": "echo", "timeout_secs": 1, "max_attempts": 1}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempt = &job.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::TimedOut), "{attempt:#?}");
    assert!(attempt.machine_id.is_some());
    assert!(attempt.error.as_deref().unwrap().contains("timed out"));
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_creates_are_retried_by_the_client() {
    let system = spawn_system().await;
    system
        .set_faults(json!({"fail_next_creates": 2, "fail_status": 429}))
        .await;
    let job = system
        .submit(json!({"kind": "echo", "params": {"x": 1}}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    assert_eq!(
        job.attempts.len(),
        1,
        "the client retried; the job never saw the 429s"
    );
    let stats = system.mock_stats();
    assert_eq!(stats.calls["POST /v1/apps/{app}/machines"], 3, "{stats:#?}");
    assert_eq!(stats.created, 1);
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_that_keep_failing_end_as_boot_failed() {
    let system = quick_system().await;
    system
        .set_faults(json!({"create_error_rate": 1.0, "create_error_status": 503}))
        .await;
    let job = system
        .submit(json!({"kind": "echo", "max_attempts": 1}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Failed, WITHIN).await;
    let attempt = &job.attempts[0];
    assert_eq!(attempt.outcome, Some(Outcome::BootFailed), "{attempt:#?}");
    assert!(
        attempt.error.as_deref().unwrap().contains("503"),
        "{attempt:#?}"
    );
    assert!(attempt.machine_id.is_none());
    assert_eq!(system.mock_stats().created, 0);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_every_state() {
    let system = spawn_system_with(Options {
        max_machines: 1,
        ..Options::default()
    })
    .await;
    let running = system
        .submit(json!({"kind": "sleep", "params": {"ms": 60000}}))
        .await;
    let queued = system.submit(json!({"kind": "echo"})).await;
    let scheduled = system
        .submit(json!({"kind": "echo", "delay_secs": 3600}))
        .await;
    system
        .wait_for(&running.id, JobStatus::Running, WITHIN)
        .await;
    assert_eq!(
        system.job(&queued.id).await.status,
        JobStatus::Queued,
        "the cap of 1 holds it back"
    );

    // The cancel routes' status codes are the contract here: raw HTTP.
    let cancel = |job: &Job| {
        system
            .http
            .post(system.url(&format!("/jobs/{}/cancel", job.id)))
            .send()
    };
    let answer = cancel(&queued).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.json::<Job>().await.unwrap().status,
        JobStatus::Cancelled
    );
    let answer = system
        .http
        .delete(system.url(&format!("/jobs/{}", scheduled.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(cancel(&running).await.unwrap().status(), 202);
    let job = system
        .wait_for(&running.id, JobStatus::Cancelled, WITHIN)
        .await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Cancelled));
    for job in [&queued, &scheduled] {
        let job = system.job(&job.id).await;
        assert_eq!(job.status, JobStatus::Cancelled);
        assert_eq!(job.attempts.len(), 0, "never ran");
        assert_eq!(
            cancel(&job).await.unwrap().status(),
            409,
            "finished jobs can't be cancelled"
        );
    }
    assert_eq!(
        system.mock_stats().created,
        1,
        "only the running job had a machine"
    );
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_runner_cannot_overwrite_a_finished_attempt() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "echo", "params": {"real": true}}))
        .await;
    let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;

    // Boot the same attempt's runner again, as a zombie would: same env.
    let machine = &system.machines(true).await[0];
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_runner"))
        .envs(&machine.config.env)
        .env("LOG_FORMAT", "json")
        .status()
        .await
        .unwrap();
    assert_eq!(status.code(), Some(runner::exit::STALE));
    let after = system.job(&job.id).await;
    assert_eq!(after.result, Some(json!({"real": true})));
    assert_eq!(after.attempts, job.attempts, "nothing was rewritten");
    system.stop().await;
}
