//! Capacity errors: a region out of capacity is retried, then the job's
//! next region (`machine.regions`) is used.

use std::time::Duration;

use crate::support::spawn_system;
use jobs::{JobStatus, Outcome};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_out_of_capacity_falls_back_to_the_next() {
    let system = spawn_system().await;
    system.set_faults(json!({"full_regions": ["iad"]})).await;
    let job = system
        .submit(json!({"kind": "echo", "params": {}, "machine": {"regions": ["iad", "ord"]}}))
        .await;
    let job = system
        .wait_for(&job.id, JobStatus::Succeeded, Duration::from_secs(60))
        .await;
    assert_eq!(job.attempts[0].region.as_deref(), Some("ord"), "{job:#?}");
    let machines = system.machines(true).await;
    assert_eq!(
        machines.len(),
        1,
        "no machine was made in iad: {machines:#?}"
    );
    assert_eq!(machines[0].region, "ord");
    // Refused creates in iad, all answered 412: not one 429.
    let stats = system.mock_stats();
    assert!(stats.faults_injected >= 3, "{stats:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_region_out_of_capacity_fails_the_attempt_as_boot_failed() {
    let system = spawn_system().await;
    system
        .set_faults(json!({"full_regions": ["iad", "ord"]}))
        .await;
    let job = system
        .submit(json!({"kind": "echo", "params": {}, "max_attempts": 1,
                       "machine": {"regions": ["iad", "ord"]}}))
        .await;
    let job = system
        .wait_for(&job.id, JobStatus::Failed, Duration::from_secs(60))
        .await;
    assert_eq!(
        job.attempts[0].outcome,
        Some(Outcome::BootFailed),
        "{job:#?}"
    );
    assert_eq!(
        system.mock_stats().faults_injected,
        6,
        "three tries per region"
    );
    system.stop().await;
}

#[tokio::test]
async fn region_and_regions_together_are_refused_naming_the_field() {
    let system = spawn_system().await;
    let answer = system
        .request(reqwest::Method::POST, "/jobs")
        .json(&json!({"kind": "echo", "machine": {"region": "iad", "regions": ["ord"]}}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("machine.regions"), "{body}");
    let answer = system
        .request(reqwest::Method::POST, "/jobs")
        .json(&json!({"kind": "echo", "machine": {"regions": ["iad", "Nope"]}}))
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("machine.regions"), "{body}");
    system.stop().await;
}
