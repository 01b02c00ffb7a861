//! The `machines` client against the mock, where the real API is hard on
//! clients: answers lost after the work was done, errors after which it is
//! unknown whether anything happened, taken names, waits with a version.

use crate::common::{exec_config, start, Mock};
use machines::{CreateMachineRequest, MachineState, MachinesError, WaitOutcome};
use serde_json::json;

const APP: &str = "client-app";
const CREATE: &str = "POST /v1/apps/{app}/machines";

/// A named create request for a machine that runs until stopped.
fn named(name: &str) -> CreateMachineRequest {
    let mut config = exec_config(&["sleep", "300"]);
    config["metadata"] = json!({"role": "job", "name": name});
    serde_json::from_value(json!({"name": name, "config": config})).unwrap()
}

fn creates(mock: &Mock) -> u64 {
    mock.server.stats().calls.get(CREATE).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_adopts_the_machine_it_made() {
    let mock = start().await;
    let client = mock.client(APP);
    mock.set_faults(json!({"drop_next_create_answers": 1}))
        .await;
    let machine = client.create(&named("job-lost-1")).await.unwrap();
    let stats = mock.server.stats();
    assert_eq!(stats.created, 1, "exactly one machine");
    assert_eq!(creates(&mock), 1, "the create was not sent again");
    assert_eq!(stats.live, 1);
    assert_eq!(machine.name, "job-lost-1");
    assert!(!machine.instance_id.is_empty());
    mock.server.shutdown().await;
}

#[tokio::test]
async fn a_create_that_failed_before_any_machine_existed_is_tried_again() {
    let mock = start().await;
    let client = mock.client(APP);
    mock.set_faults(json!({"fail_next_creates": 2, "fail_status": 503}))
        .await;
    let machine = client.create(&named("job-retry-1")).await.unwrap();
    assert_eq!(mock.server.stats().created, 1);
    assert_eq!(creates(&mock), 3, "two 503s looked up, then created");
    assert_eq!(machine.name, "job-retry-1");
    mock.server.shutdown().await;
}

#[tokio::test]
async fn a_taken_name_adopts_the_machine_that_has_it() {
    let mock = start().await;
    let client = mock.client(APP);
    let first = client.create(&named("job-twice-1")).await.unwrap();
    let second = client.create(&named("job-twice-1")).await.unwrap();
    assert_eq!(first.id, second.id);
    assert_eq!(mock.server.stats().created, 1);
    mock.server.shutdown().await;
}

#[tokio::test]
async fn an_unnamed_create_is_never_sent_twice_after_an_ambiguous_failure() {
    let mock = start().await;
    let client = mock.client(APP);
    mock.set_faults(json!({"drop_next_create_answers": 1}))
        .await;
    let mut request = named("unused");
    request.name = None;
    let error = client.create(&request).await.unwrap_err();
    assert!(error.is_ambiguous(), "{error}");
    assert_eq!(creates(&mock), 1, "not retried");
    assert_eq!(mock.server.stats().created, 1, "Fly made it; nobody knows");
    mock.server.shutdown().await;
}

#[tokio::test]
async fn a_refused_create_is_returned_at_once() {
    let mock = start().await;
    let client = mock.client(APP);
    let mut request = named("job-bad-1");
    request.config.image = String::new();
    let error = client.create(&request).await.unwrap_err();
    assert!(
        matches!(error, MachinesError::Api { status: 422, .. }),
        "{error}"
    );
    assert_eq!(creates(&mock), 1);
    mock.server.shutdown().await;
}

#[tokio::test]
async fn waits_for_stopped_with_and_without_instance_id() {
    let mock = start().await;
    let client = mock.client(APP);
    let request: CreateMachineRequest =
        serde_json::from_value(json!({"config": exec_config(&["sh", "-c", "exit 0"])})).unwrap();
    let machine = client.create(&request).await.unwrap();
    let with = client
        .wait(&machine.id, Some(&machine.instance_id), &["stopped"], 30)
        .await
        .unwrap();
    assert!(
        matches!(&with, WaitOutcome::Reached(r) if r.state.as_deref() == Some("stopped")),
        "{with:?}"
    );
    let without = client
        .wait(&machine.id, None, &["stopped"], 30)
        .await
        .unwrap();
    assert!(matches!(without, WaitOutcome::Reached(_)), "{without:?}");
    let stale = client
        .wait(
            &machine.id,
            Some("01HXXXXXXXXXXXXXXXXXXXXXXX"),
            &["stopped"],
            1,
        )
        .await
        .unwrap_err();
    assert_eq!(
        stale.status(),
        Some(412),
        "a wrong version is refused: {stale}"
    );
    assert_eq!(
        client.get(&machine.id).await.unwrap().state,
        MachineState::Stopped
    );
    mock.server.shutdown().await;
}
