//! The real Machines API, survived: creates whose answers are lost,
//! errors after which nobody knows whether a machine exists, dropped
//! connections, and app secrets the platform hands every machine.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{spawn_system_with, Options, TestSystem};
use clap::CommandFactory;
use jobs::{Job, JobId, JobStatus, Outcome};
use mock_machines::MockConfig;
use serde_json::{json, Value};

/// Prints the variables named in `params.names` as job code sees them.
const PRINT_ENV_PY: &str = r#"
import json, os, sys
names = json.load(sys.stdin)["names"]
print(json.dumps({name: os.environ.get(name) for name in names}))
"#;

/// App secrets as `fly secrets set` would have them: the dispatcher's
/// own, one ordinary app setting, and (standing in for the job image's
/// `ENV`) the runner's command configuration.
fn with_app_secrets(config: &mut MockConfig) {
    let mut secrets: BTreeMap<String, String> = runner::DISPATCHER_SECRETS
        .iter()
        .map(|name| (name.to_string(), format!("secret-value-of-{name}")))
        .collect();
    secrets.insert("APP_SETTING".into(), "visible".into());
    let commands = json!({"print-env": ["python3", "-c", PRINT_ENV_PY]});
    secrets.insert("RUNNER_COMMANDS".into(), commands.to_string());
    config.app_secrets = secrets;
    // Play a platform that ignores `skip_secrets` (its effect is
    // undocumented): the runner alone must keep job code clean.
    config.honour_skip_secrets = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatchers_secrets_never_reach_job_code() {
    let system = spawn_system_with(Options {
        mock: with_app_secrets,
        ..Options::default()
    })
    .await;
    let mut names: Vec<&str> = runner::DISPATCHER_SECRETS.to_vec();
    names.push("APP_SETTING");
    let job = system
        .submit(json!({"kind": "print-env", "params": {"names": names}}))
        .await;
    let job = system
        .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    let seen = job.result.as_ref().unwrap().as_object().unwrap();
    assert_eq!(
        seen["APP_SETTING"], "visible",
        "the mock injected secrets: {job:#?}"
    );
    for name in runner::DISPATCHER_SECRETS {
        assert_eq!(seen[name], Value::Null, "{name} reached job code");
    }
    system.stop().await;
}

/// Every secret the dispatcher reads from its environment (the flags whose
/// values `--help` hides) is one the runner removes.
#[test]
fn the_runner_removes_every_secret_the_dispatcher_reads() {
    fn hidden_envs(command: &clap::Command, found: &mut Vec<String>) {
        for arg in command.get_arguments() {
            if let (true, Some(env)) = (arg.is_hide_env_values_set(), arg.get_env()) {
                found.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            hidden_envs(sub, found);
        }
    }
    let mut found = Vec::new();
    hidden_envs(&dispatcher::cli::Cli::command(), &mut found);
    assert!(found.contains(&"FLY_API_TOKEN".to_string()), "{found:?}");
    for name in found {
        assert!(
            runner::DISPATCHER_SECRETS.contains(&name.as_str()),
            "{name} is a dispatcher secret the runner does not remove"
        );
    }
}

/// Jobs in the test run; `FIDELITY_JOBS=200` for the full measurement.
fn job_count() -> usize {
    std::env::var("FIDELITY_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
}

/// Submits `count` single-attempt jobs that each leave a trace file per
/// runner start, and waits until all are finished; returns their ids.
async fn run_traced_jobs(
    system: &TestSystem,
    count: usize,
    traces: &std::path::Path,
) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let job = system
            .submit(json!({
                "kind": "sleep", "max_attempts": 1,
                "params": {"ms": 20, "trace_dir": traces},
            }))
            .await;
        ids.push(job.id);
    }
    let within = Duration::from_secs(60 + 2 * count as u64);
    let deadline = tokio::time::Instant::now() + within;
    for id in &ids {
        loop {
            let job = system.job(id).await;
            use JobStatus::{Cancelled, Failed, Succeeded};
            if [Succeeded, Failed, Cancelled].contains(&job.status) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} unfinished: {job:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    ids
}

/// Runner starts per job, from the trace files (`{job}-{attempt}-{pid}`).
fn starts_per_job(traces: &std::path::Path) -> BTreeMap<String, usize> {
    let mut starts = BTreeMap::new();
    for entry in std::fs::read_dir(traces).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let job = name.rsplitn(3, '-').nth(2).unwrap().to_string();
        *starts.entry(job).or_insert(0) += 1;
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_and_create_errors_leave_one_machine_and_one_run_per_job() {
    let system = spawn_system_with(Options {
        max_machines: 16,
        ..Options::default()
    })
    .await;
    let traces = crate::support::TempDir::new();
    system
        .set_faults(json!({
            "drop_connection_rate": 0.2,
            "drop_answer_rate": 0.2,
            "create_error_rate": 0.2,
        }))
        .await;
    let count = job_count();
    let began = std::time::Instant::now();
    let ids = run_traced_jobs(&system, count, &traces.path).await;
    let took = began.elapsed();
    system
        .set_faults(
            json!({"drop_connection_rate": 0.0, "drop_answer_rate": 0.0, "create_error_rate": 0.0}),
        )
        .await;

    let mut failed = Vec::new();
    for id in &ids {
        let job = system.job(id).await;
        if job.status != JobStatus::Succeeded || job.attempts.len() != 1 {
            failed.push(job);
        }
    }
    assert!(
        failed.is_empty(),
        "{} jobs did not succeed at the first attempt: {failed:#?}",
        failed.len()
    );
    let starts = starts_per_job(&traces.path);
    for id in &ids {
        assert_eq!(
            starts.get(&id.to_string()),
            Some(&1),
            "runner starts of {id}"
        );
    }
    let stats = system.mock_stats();
    assert_eq!(
        stats.created as usize, count,
        "one machine per job: {stats:#?}"
    );
    system.assert_all_machines_destroyed().await;
    eprintln!(
        "{count} jobs under faults in {took:?}: {} faults injected, {} create calls for {} machines",
        stats.faults_injected,
        stats.calls.get("POST /v1/apps/{app}/machines").copied().unwrap_or(0),
        stats.created
    );
    system.stop().await;
}

/// The machine is made, its answer lost: the dispatcher adopts it, so the
/// job runs once, on one machine, in one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_is_lost_runs_the_job_once() {
    let system = spawn_system_with(Options::default()).await;
    let traces = crate::support::TempDir::new();
    system
        .set_faults(json!({"drop_next_create_answers": 1}))
        .await;
    let ids = run_traced_jobs(&system, 1, &traces.path).await;
    let job = system.job(&ids[0]).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:#?}");
    assert_eq!(job.attempts.len(), 1, "{job:#?}");
    assert_eq!(
        starts_per_job(&traces.path).get(&ids[0].to_string()),
        Some(&1)
    );
    let stats = system.mock_stats();
    assert_eq!(stats.created, 1, "{stats:#?}");
    assert_eq!(stats.faults_injected, 1, "the answer was dropped");
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}

/// Runs a single-attempt job whose runner exits with `code` without
/// reporting; returns the failed job, its one attempt judged `crashed`.
async fn crashed_once(system: &TestSystem, code: i32) -> Job {
    let job = system
        .submit(json!({"kind": "crash", "params": {"code": code}, "max_attempts": 1}))
        .await;
    let job = system
        .wait_for(&job.id, JobStatus::Failed, Duration::from_secs(30))
        .await;
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Crashed), "{job:#?}");
    job
}

/// Go's `omitempty` leaves out an exit code of 0 (and writes empty maps as
/// `null`): a runner that exits 0 without reporting is a crash with exit
/// code 0, not a machine that vanished (`lost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_omitted_exit_code_reads_as_exit_0() {
    let system = spawn_system_with(Options::default()).await;
    system.set_faults(json!({"go_omitempty": true})).await;
    let job = crashed_once(&system, 0).await;
    assert_eq!(job.attempts[0].exit_code, Some(0), "{job:#?}");
    let echo = system.submit(json!({"kind": "echo"})).await;
    let echo = system
        .wait_for(&echo.id, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(echo.attempts[0].exit_code, Some(0), "{echo:#?}");
    system.stop().await;
}

/// A machine record that lacks what a judgement needs (here `state`) is
/// reported as such, loudly, never guessed to be a vanished machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_machine_record_is_never_judged_lost() {
    let system = spawn_system_with(Options::default()).await;
    system.set_faults(json!({"stateless_gets": true})).await;
    let job = crashed_once(&system, 3).await;
    assert!(
        job.error.as_deref().unwrap().contains("could not be read"),
        "{job:#?}"
    );
    system.set_faults(json!({"stateless_gets": false})).await;
    system.assert_all_machines_destroyed().await;
    system.stop().await;
}
