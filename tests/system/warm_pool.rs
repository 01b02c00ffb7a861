//! The warm pool (`--warm-pool`): machines created ahead and stopped, each
//! claimed by one attempt at a time, returned after a clean run, replaced
//! after a crash or a deploy. Real Valkey, real runner processes, the mock
//! Machines API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::{pool_until, spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::{ApiClient, SubmitOptions};
use jobs::{Job, JobStatus, Outcome};
use machines::{Machine, MachineState};
use serde_json::json;
use tokio::time::Instant;

fn with_pool(size: u32, max_machines: u32) -> Options {
    Options {
        max_machines,
        extra_args: vec![format!("--warm-pool={size}")],
        ..Options::default()
    }
}

/// The pool's live machines.
async fn pool_machines(system: &TestSystem) -> Vec<Machine> {
    system
        .machines(false)
        .await
        .into_iter()
        .filter(|m| m.config.metadata.get("role").map(String::as_str) == Some("pool"))
        .collect()
}

fn machine_of(job: &Job) -> String {
    job.attempts.last().unwrap().machine_id.clone().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_fills_serves_jobs_and_takes_its_machines_back() {
    let system = spawn_system_with(with_pool(2, 4)).await;
    pool_until(&system.store, "2 ready", |p| {
        p.ready == 2 && p.machines == 2
    })
    .await;
    let pooled: BTreeSet<String> = pool_machines(&system)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(system.mock_stats().created, 2);

    for n in 0..3 {
        let job = system
            .submit(json!({"kind": "echo", "params": {"n": n}}))
            .await;
        let job = system
            .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(30))
            .await;
        assert_eq!(job.result, Some(json!({"n": n})));
        assert!(
            pooled.contains(&machine_of(&job)),
            "ran on a pooled machine: {job:#?}"
        );
        pool_until(&system.store, "its machine back", |p| {
            p.ready == 2 && p.in_use == 0
        })
        .await;
    }
    // Three jobs, no create and no destroy beyond the pool's own two.
    let stats = system.mock_stats();
    assert_eq!((stats.created, stats.destroyed), (2, 0), "{stats:?}");
    let live: BTreeSet<String> = pool_machines(&system)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(live, pooled);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_job_crashed_is_replaced_not_reused() {
    let system = spawn_system_with(with_pool(1, 2)).await;
    pool_until(&system.store, "1 ready", |p| p.ready == 1).await;
    let job = system
        .submit(json!({"kind": "crash", "params": {"code": 9}, "max_attempts": 1}))
        .await;
    let job = system
        .wait_for(&job.id, JobStatus::Failed, Duration::from_secs(30))
        .await;
    let crashed = machine_of(&job);
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Crashed), "{job:#?}");

    pool_until(&system.store, "a replacement", |p| {
        p.ready == 1 && p.machines == 1
    })
    .await;
    let live = pool_machines(&system).await;
    assert_eq!(live.len(), 1);
    assert_ne!(
        live[0].id, crashed,
        "the crashed machine went back to the pool"
    );
    let gone = system.machines.get(&crashed).await.unwrap();
    assert_eq!(gone.state, MachineState::Destroyed);

    let next = system.submit(json!({"kind": "echo", "params": {}})).await;
    let next = system
        .wait_for(&next.id, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_eq!(machine_of(&next), live[0].id);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_never_hand_one_machine_to_two_attempts() {
    // As many slots as pooled machines: every job runs warm.
    let system = spawn_system_with(with_pool(3, 3)).await;
    let peer = system.spawn_peer().await;
    pool_until(&system.store, "3 ready", |p| p.ready == 3).await;

    let mut ids = Vec::new();
    for n in 0..24 {
        let job = system
            .submit(json!({"kind": "sleep", "params": {"ms": 50 + (n * 37) % 200}}))
            .await;
        ids.push(job.id);
    }
    let mut runs: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for id in &ids {
        let job = system
            .wait_for(id, JobStatus::Succeeded, Duration::from_secs(90))
            .await;
        let attempt = &job.attempts[0];
        let millis = |at: Option<chrono::DateTime<chrono::Utc>>| at.unwrap().timestamp_millis();
        runs.entry(machine_of(&job))
            .or_default()
            .push((millis(attempt.started_at), millis(attempt.finished_at)));
    }
    assert!(
        runs.len() <= 3,
        "only the pool's machines ran jobs: {runs:?}"
    );
    for (machine, mut spans) in runs {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "machine {machine} ran two attempts at once: {pair:?}"
            );
        }
    }
    assert_eq!(system.mock_stats().created, 3, "no job created a machine");
    peer.trigger();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_replaces_the_pool_and_no_job_runs_old_code() {
    let system = spawn_system_with(with_pool(2, 2)).await;
    pool_until(&system.store, "2 ready", |p| p.ready == 2).await;
    let old: BTreeSet<String> = pool_machines(&system)
        .await
        .into_iter()
        .map(|m| m.id)
        .collect();

    // A deploy: the old dispatcher goes, one with a new image comes.
    system.shutdown.trigger();
    let (deployed, base) = system
        .spawn_peer_with(|s| s.launch.image = "local/runner:v2".into())
        .await;
    let submitted = ApiClient::new(&base, None)
        .submit("echo", json!({}), &SubmitOptions::default())
        .await
        .unwrap();
    let id = submitted.id;
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = system.store.get(id).await.unwrap().unwrap();
        if job.status == jobs::JobStatus::Succeeded {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not succeed: {job:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ran_on = job.attempts[0].machine_id.clone().unwrap();
    assert!(!old.contains(&ran_on), "the job ran on an old machine");

    // Replaced within 20 s: a second or two on the mock, and below the
    // store's 30 s check for abandoned machines, so an old machine a claim
    // skipped must be retired by the upkeep's next tick, not found later.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let live = pool_machines(&system).await;
        let ready = system.store.pool_stats().await.unwrap();
        let all_new = live.len() == 2
            && live
                .iter()
                .all(|m| m.config.image == "local/runner:v2" && !old.contains(&m.id));
        if all_new && ready.values().all(|p| p.ready == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "pool not replaced: {live:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    deployed.trigger();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_machine_that_fails_to_start_is_replaced_and_the_job_still_runs() {
    let system = spawn_system_with(with_pool(1, 2)).await;
    pool_until(&system.store, "1 ready", |p| p.ready == 1).await;
    let gone = pool_machines(&system).await[0].id.clone();
    // Destroyed behind the pool's back: its start will be refused.
    system.machines.destroy(&gone, true).await.unwrap();

    let job = system.submit(json!({"kind": "echo", "params": {}})).await;
    let job = system
        .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    assert_ne!(machine_of(&job), gone, "{job:#?}");
    assert_eq!(job.attempts.len(), 1, "one attempt: {job:#?}");
    let pool = pool_until(&system.store, "a replacement", |p| {
        p.ready == 1 && p.machines == 1
    })
    .await;
    assert_eq!(pool.in_use, 0);
    let live = pool_machines(&system).await;
    assert_eq!(live.len(), 1);
    assert_ne!(live[0].id, gone);
    system.stop().await;
}

/// A command, from the runner image's `RUNNER_COMMANDS`, that answers
/// whether an earlier job left a file in the machine's home (its scratch
/// root), then leaves one itself.
fn with_snooping_command(config: &mut mock_machines::MockConfig) {
    let snoop = r#"if [ -e "$HOME/left-behind" ]; then echo '{"saw": true}'; else echo '{"saw": false}'; fi; echo secret > "$HOME/left-behind""#;
    let commands = json!({"snoop": ["sh", "-c", snoop]});
    config
        .image_env
        .insert("RUNNER_COMMANDS".into(), commands.to_string());
}

/// Job B on a pooled machine cannot see what job A wrote there: every
/// start boots the machine fresh (the mock wipes its scratch root, as a
/// stop wipes a Fly machine's root filesystem).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_on_a_pooled_machine_never_sees_what_the_previous_job_left() {
    let system = spawn_system_with(Options {
        mock: with_snooping_command,
        ..with_pool(1, 1)
    })
    .await;
    pool_until(&system.store, "1 ready", |p| p.ready == 1).await;
    let mut machines = Vec::new();
    for _ in 0..2 {
        let job = system.submit(json!({"kind": "snoop"})).await;
        let job = system
            .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(30))
            .await;
        assert_eq!(job.result, Some(json!({"saw": false})), "{job:#?}");
        machines.push(machine_of(&job));
        pool_until(&system.store, "its machine back", |p| p.ready == 1).await;
    }
    assert_eq!(
        machines[0], machines[1],
        "both jobs ran on the one pooled machine"
    );
    system.stop().await;
}
