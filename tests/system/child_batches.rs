//! Jobs that enqueue batches, end to end: a real runner process enqueues
//! through the runner library (`Context::enqueue_batch`, the demo handler
//! `fan_out_batch`) and a command through the runner's children socket;
//! the write is fenced by the parent's attempt and keyed within it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::batches::{stored, until_complete};
use crate::run_management::{
    crashed_once, list_all, over_the_socket, system_with_socket_command, RunningParent,
};
use crate::support::{spawn_system, spawn_system_with, Options};
use jobs::{AttemptRef, ChildBatchEnqueued};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(60);

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
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
    assert_eq!(
        parent["result"]["existing"], true,
        "the retry found the batch the crashed attempt stored: {parent:#}"
    );

    let batch_id = text(&parent["result"]["batch"]).to_string();
    let batch = until_complete(&system, &batch_id).await;
    assert_eq!(batch["total"], MEMBERS, "{batch:#}");
    assert_eq!(batch["counts"]["succeeded"], MEMBERS, "{batch:#}");
    assert_eq!(
        batch["parent"], parent["id"],
        "the batch records its parent"
    );
    assert_eq!(batch["child_key"], "#1");
    // One batch, its members and its then job: nothing twice.
    assert_eq!(stored(&system).await, (1 + MEMBERS as u64 + 1, 1));

    // The parent's children: every member (known by batch and index) and
    // the batch's then job.
    let children = list_all(&system, &format!("parent={}", id(&parent))).await;
    assert_eq!(children.len(), MEMBERS + 1);
    assert!(children.iter().all(|c| c["parent"] == parent["id"]));
    let indexes: BTreeSet<u64> = children
        .iter()
        .filter(|c| c["batch_id"] == batch_id.as_str())
        .map(|c| c["batch_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, (0..MEMBERS as u64).collect());
    let then = system
        .wait_for(text(&batch["then"]), "succeeded", WITHIN)
        .await;
    assert_eq!(then["parent"], parent["id"]);
    assert_eq!(then["inputs"]["counts"]["succeeded"], MEMBERS, "{then:#}");

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
        .wait_for(&parent_id.to_string(), "succeeded", WITHIN)
        .await;
    assert_eq!(
        enqueue(attempt(token), "c").await,
        ChildBatchEnqueued::Stale,
        "a finished attempt is a zombie"
    );
    assert_eq!(stored(&system).await, (1 + 2, 1), "only the first stored");

    let view = system.get_json(&format!("/batches/{batch}")).await;
    assert_eq!(view["parent"], parent_id.to_string());
    assert_eq!(view["child_key"], "a");
    let member = system.job(&jobs[1].to_string()).await;
    assert_eq!(member["parent"], parent_id.to_string());
    assert_eq!(member["batch_index"], 1);
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
    let pages = system
        .get_json(&format!("/batches/{}", text(&answers[0]["batch_id"])))
        .await;
    assert_eq!(pages["total"], 3, "{pages:#}");
    assert_eq!(pages["parent"], parent["id"]);
    assert_eq!(pages["child_key"], "pages");
    let children = list_all(&system, &format!("parent={}", id(&parent))).await;
    assert_eq!(children.len(), 6);
    system.stop().await;
}
