//! The sweeper: orphaned job machines are destroyed after a grace period
//! (and nothing else is touched), and finished jobs are removed once their
//! retention has passed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::{spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::{ClientError, ListQuery};
use jobs::JobId;
use machines::{CreateMachineRequest, Init, MachineConfig, MachineState};
use serde_json::json;

async fn system() -> TestSystem {
    spawn_system_with(Options {
        extra_args: vec![
            "--sweep-interval-secs=1".into(),
            "--orphan-grace-secs=1".into(),
            "--retention-secs=2".into(),
        ],
        ..Options::default()
    })
    .await
}

async fn boot(system: &TestSystem, name: Option<String>, metadata: &[(&str, &str)]) -> String {
    let request = CreateMachineRequest {
        name,
        config: MachineConfig {
            image: "local/sleeper".into(),
            init: Some(Init {
                exec: Some(vec!["sleep".into(), "300".into()]),
                ..Init::default()
            }),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..MachineConfig::default()
        },
        ..CreateMachineRequest::default()
    };
    system.machines.create(&request).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_job_machines_are_destroyed_and_others_are_left_alone() {
    let system = system().await;
    let job = |namespace| [("role", "job"), ("jobs_namespace", namespace)];
    // The sweeper reads whose a machine is from its name.
    let name = || Some(format!("job-{}-1", jobs::JobId::new()));
    let orphan = boot(&system, name(), &job("jobs")).await;
    let web = boot(
        &system,
        None,
        &[("role", "web"), ("fly_process_group", "app")],
    )
    .await;
    let other_namespace = boot(&system, name(), &job("staging")).await;
    let not_named_as_a_job = boot(&system, None, &job("jobs")).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = system.machines.get(&orphan).await.unwrap().state;
        if state == MachineState::Destroyed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan is still {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two more sweeps pass; the machines it must not touch are still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in [&web, &other_namespace, &not_named_as_a_job] {
        assert_eq!(
            system.machines.get(id).await.unwrap().state,
            MachineState::Started,
            "{id}"
        );
        system.machines.destroy(id, true).await.unwrap();
    }
    system.stop().await;
}

/// Fly's spec does not promise `name` or `created_at` in a `summary=true`
/// list: the sweeper reads such machines in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_swept_when_summaries_leave_out_name_and_created_at() {
    let system = system().await;
    system.set_faults(json!({"lean_summaries": true})).await;
    let name = Some(format!("job-{}-1", jobs::JobId::new()));
    let orphan = boot(
        &system,
        name,
        &[("role", "job"), ("jobs_namespace", "jobs")],
    )
    .await;
    let summaries = system
        .machines
        .list_summaries(&Default::default())
        .await
        .unwrap();
    assert!(summaries[0].name.is_empty() && summaries[0].created_at.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while system.machines.get(&orphan).await.unwrap().state != MachineState::Destroyed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the orphan was never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_removed_after_their_retention() {
    let system = system().await;
    let job = system.submit(json!({"kind": "echo"})).await;
    let id = job.id;
    system
        .wait_for(&id, jobs::JobStatus::Succeeded, Duration::from_secs(30))
        .await;
    let waiting = system
        .submit(json!({"kind": "echo", "delay_secs": 3600}))
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match system.api.get(&id.to_string()).await {
            Err(ClientError::Api { status, .. }) if status == 404 => break,
            Err(other) => panic!("reading job {id}: {other}"),
            Ok(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} was kept past its retention"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = system.store.stats().await.unwrap().by_status;
    assert_eq!(
        counts[&jobs::JobStatus::Succeeded],
        0,
        "the index entry went with it"
    );
    let listed = system.api.list(&ListQuery::default()).await.unwrap();
    let listed: Vec<JobId> = listed.jobs.iter().map(|j| j.id).collect();
    assert_eq!(listed, [waiting.id], "unfinished jobs are kept");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_machines_are_stock_and_strays_are_destroyed() {
    let system = spawn_system_with(Options {
        extra_args: vec![
            "--sweep-interval-secs=1".into(),
            "--orphan-grace-secs=1".into(),
            "--warm-pool=2".into(),
        ],
        ..Options::default()
    })
    .await;
    let pool_key = "shared-1x-256-any";
    // A pool machine whose creator died before the pool knew it.
    let stray = boot(
        &system,
        Some(format!("pool-{pool_key}-0123456789ab")),
        &[("role", "pool"), ("jobs_namespace", "jobs")],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = system.machines.get(&stray).await.unwrap().state;
        if state == MachineState::Destroyed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stray is still {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pool's own stopped machines are stock, not orphans: still there
    // after more sweeps.
    loop {
        let stats = system.store.pool_stats().await.unwrap();
        if stats.get(pool_key).is_some_and(|p| p.ready == 2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pooled: Vec<_> = system
        .machines(false)
        .await
        .into_iter()
        .filter(|m| m.name.starts_with("pool-"))
        .collect();
    assert_eq!(pooled.len(), 2, "{pooled:#?}");
    assert!(pooled.iter().all(|m| m.state == MachineState::Stopped));
    system.stop().await;
}
