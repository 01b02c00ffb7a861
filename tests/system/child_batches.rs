//! Jobs that enqueue batches, end to end: a real runner process enqueues
//! through the runner library (`Context::enqueue_batch`, the demo handler
//! `fan_out_batch`) and a command through the runner's children socket;
//! the write is fenced by the parent's attempt and keyed within it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::batches::{stored, until_complete};
use crate::run_management::{
    children_of, crashed_once, list_all, over_the_socket, system_with_socket_command, RunningParent,
};
use crate::support::{spawn_system, spawn_system_with, Options};
use jobs::{AttemptRef, Batch, BatchId, ChildBatchEnqueued, JobStatus};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(60);

/// The batch id a result or a socket answer names (their wire format is
/// JSON).
fn batch_id(value: &Value) -> BatchId {
    value
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a batch id: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_that_crashes_after_enqueuing_a_100_member_batch_ends_with_one_batch_of_100() {
    const MAX: u32 = 8;
    const MEMBERS: usize = 100;
    let system = spawn_system_with(Options {
        max_machines: MAX,
        ..Options::default()
    })
    .await;
    let parent = crashed_once(
        &system,
        "fan_out_batch",
        json!({"count": MEMBERS, "crash": true, "then": {"kind": "echo"}}),
    )
    .await;
    let result = parent.result.clone().expect("a result");
    assert_eq!(
        result["existing"], true,
        "the retry found the batch the crashed attempt stored: {parent:#?}"
    );

    let batch_id = batch_id(&result["batch"]);
    let batch = until_complete(&system, &batch_id).await;
    assert_eq!(batch.total, MEMBERS as u64, "{batch:#?}");
    assert_eq!(
        batch.counts[&JobStatus::Succeeded],
        MEMBERS as u64,
        "{batch:#?}"
    );
    assert_eq!(
        batch.parent,
        Some(parent.id),
        "the batch records its parent"
    );
    assert_eq!(batch.child_key.as_deref(), Some("#1"));
    // One batch, its members and its then job: nothing twice.
    assert_eq!(stored(&system).await, (1 + MEMBERS as u64 + 1, 1));

    // The parent's children: every member (known by batch and index) and
    // the batch's then job.
    let children = list_all(&system, children_of(parent.id)).await;
    assert_eq!(children.len(), MEMBERS + 1);
    assert!(children.iter().all(|c| c.parent == Some(parent.id)));
    let indexes: BTreeSet<u32> = children
        .iter()
        .filter(|c| c.batch_id == Some(batch_id))
        .map(|c| c.batch_index.expect("a member's index"))
        .collect();
    assert_eq!(indexes, (0..MEMBERS as u32).collect());
    let then = system
        .wait_for(
            &batch.then.expect("a then job"),
            JobStatus::Succeeded,
            WITHIN,
        )
        .await;
    assert_eq!(then.parent, Some(parent.id));
    let inputs = then.inputs.as_ref().expect("the then job's inputs");
    assert_eq!(inputs["counts"]["succeeded"], MEMBERS, "{then:#?}");

    // Admitted like any batch: under the machine cap, one machine per
    // member, the then job and the parent's two attempts.
    let stats = system.mock_stats();
    assert!(stats.peak_live <= MAX as usize, "{stats:?}");
    assert_eq!(stats.created, MEMBERS as u64 + 3, "{stats:?}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_attempt_cannot_enqueue_a_batch() {
    let system = spawn_system().await;
    let parent = RunningParent::start(&system).await;
    let (parent_id, token, policy) = (parent.id, &parent.token, &parent.policy);
    let attempt = |token: &str| parent.attempt(token);
    let enqueue = |a: AttemptRef, key: &'static str| {
        let parked = json!({"kind": "echo", "delay_secs": 3600});
        let batch = dispatcher::api::children::parse_child_batch(
            json!({"jobs": [parked, parked]}),
            policy,
            chrono::Utc::now(),
        )
        .unwrap();
        let store = system.store.clone();
        async move { store.enqueue_child_batch(&a, key, batch).await.unwrap() }
    };

    let ChildBatchEnqueued::Created { batch, jobs } = enqueue(attempt(token), "a").await else {
        panic!("the current attempt enqueues");
    };
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        enqueue(attempt(token), "a").await,
        ChildBatchEnqueued::Existing(batch),
        "the same key finds the same batch"
    );
    assert_eq!(
        enqueue(attempt("not-the-token"), "b").await,
        ChildBatchEnqueued::Stale
    );
    system
        .wait_for(&parent_id, JobStatus::Succeeded, WITHIN)
        .await;
    assert_eq!(
        enqueue(attempt(token), "c").await,
        ChildBatchEnqueued::Stale,
        "a finished attempt is a zombie"
    );
    assert_eq!(stored(&system).await, (1 + 2, 1), "only the first stored");

    let view: Batch = system.get_typed(&format!("/batches/{batch}")).await;
    assert_eq!(view.parent, Some(parent_id));
    assert_eq!(view.child_key.as_deref(), Some("a"));
    let member = system.job(&jobs[1]).await;
    assert_eq!(member.parent, Some(parent_id));
    assert_eq!(member.batch_index, Some(1));
    system.stop().await;
}

/// A command enqueuing batches (and a child) over the runner's socket:
/// a keyed batch twice, an unkeyed one, a child (keyed apart), then what
/// must be refused: a bad member, too many members (the dispatchers'
/// `--max-batch-jobs`), a line with both a job and a batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_enqueues_batches_through_the_runners_socket() {
    let system = system_with_socket_command(vec!["--max-batch-jobs=5".into()]).await;
    let parked = json!({"kind": "echo", "delay_secs": 3600});
    let pages = json!({"jobs": [parked, parked, parked], "then": {"kind": "echo"}});
    let (parent, answers) = over_the_socket(
        &system,
        json!([
            {"key": "pages", "batch": pages},
            {"key": "pages", "batch": pages},
            {"batch": {"jobs": [parked]}},
            {"job": parked},
            {"batch": {"jobs": [parked, parked, parked, {"kind": "Bad"}]}},
            {"batch": {"jobs": vec![parked.clone(); 6]}},
            {"job": parked, "batch": {"jobs": [parked]}},
        ]),
    )
    .await;
    assert_eq!(answers[0]["key"], "pages", "{answers:#?}");
    assert_eq!(answers[0]["existing"], false);
    assert_eq!(answers[1]["existing"], true, "the same key, the same batch");
    assert_eq!(answers[1]["batch_id"], answers[0]["batch_id"]);
    assert_eq!(answers[2]["key"], "#1", "{answers:#?}");
    assert_eq!(answers[3]["key"], "#1", "children are keyed apart");
    assert!(answers[3]["id"].is_string(), "{answers:#?}");
    assert_eq!(answers[4]["field"], "jobs[3].kind", "{answers:#?}");
    assert_eq!(answers[5]["field"], "jobs", "{answers:#?}");
    assert!(answers[6]["error"].is_string(), "{answers:#?}");

    // Two batches (3 members and a then job, 1 member) and one child:
    // nothing of the refused ones.
    assert_eq!(stored(&system).await, (1 + 4 + 1 + 1, 2));
    let pages: Batch = system
        .get_typed(&format!("/batches/{}", batch_id(&answers[0]["batch_id"])))
        .await;
    assert_eq!(pages.total, 3, "{pages:#?}");
    assert_eq!(pages.parent, Some(parent.id));
    assert_eq!(pages.child_key.as_deref(), Some("pages"));
    let children = list_all(&system, children_of(parent.id)).await;
    assert_eq!(children.len(), 6);
    system.stop().await;
}
