//! Jobs that enqueue batches, end to end: a real runner process enqueues
//! through the runner library (`Context::enqueue_batch`, the demo handler
//! `fan_out_batch`) and a command through the runner's children socket;
//! the write is fenced by the parent's attempt and keyed within it.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::batches::{stored, until_complete};
use crate::run_management::list_all;
use crate::support::{spawn_system, spawn_system_with, Options};
use jobs::{AttemptRef, ChildBatchEnqueued, JobId};
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
    let parent = system
        .submit(json!({
            "kind": "fan_out_batch",
            "params": {"count": MEMBERS, "crash": true, "then": {"kind": "echo"}},
            "max_attempts": 2,
            "backoff": {"base_ms": 100, "max_ms": 100, "jitter": false}
        }))
        .await;
    let parent = system.wait_for(&id(&parent), "succeeded", WITHIN).await;
    let attempts = parent["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{parent:#}");
    assert_eq!(attempts[0]["outcome"], "crashed", "{parent:#}");
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
    let parent = system
        .submit(json!({"kind": "sleep", "params": {"ms": 1500}}))
        .await;
    let parent = system.wait_for(&id(&parent), "running", WITHIN).await;
    let parent_id: JobId = id(&parent).parse().unwrap();
    let store = system.raw_store().await;
    let token: String = fred::interfaces::HashesInterface::hget(
        &store,
        format!("{{jobs}}:job:{parent_id}"),
        "token",
    )
    .await
    .unwrap();
    let _ = fred::interfaces::ClientLike::quit(&store).await;
    let attempt = |token: &str| AttemptRef {
        job_id: parent_id,
        attempt: 1,
        token: token.to_string(),
    };
    let policy = dispatcher::api::children::load_policy(&system.store)
        .await
        .unwrap()
        .expect("the dispatcher published its policy");
    let enqueue = |a: AttemptRef, key: &'static str| {
        let parked = json!({"kind": "echo", "delay_secs": 3600});
        let batch = dispatcher::api::children::parse_child_batch(
            json!({"jobs": [parked, parked]}),
            &policy,
            chrono::Utc::now(),
        )
        .unwrap();
        let store = system.store.clone();
        async move { store.enqueue_child_batch(&a, key, batch).await.unwrap() }
    };

    let ChildBatchEnqueued::Created { batch, jobs } = enqueue(attempt(&token), "a").await else {
        panic!("the current attempt enqueues");
    };
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        enqueue(attempt(&token), "a").await,
        ChildBatchEnqueued::Existing(batch),
        "the same key finds the same batch"
    );
    assert_eq!(
        enqueue(attempt("not-the-token"), "b").await,
        ChildBatchEnqueued::Stale
    );
    system.wait_for(&id(&parent), "succeeded", WITHIN).await;
    assert_eq!(
        enqueue(attempt(&token), "c").await,
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
const BATCHES_PY: &str = r#"
import json, os, socket
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["JOB_CHILDREN_SOCKET"])
f = s.makefile("rw")
parked = {"kind": "echo", "delay_secs": 3600}
pages = {"jobs": [parked, parked, parked], "then": {"kind": "echo"}}
answers = []
for request in [
    {"key": "pages", "batch": pages},
    {"key": "pages", "batch": pages},
    {"batch": {"jobs": [parked]}},
    {"job": parked},
    {"batch": {"jobs": [parked, parked, parked, {"kind": "Bad"}]}},
    {"batch": {"jobs": [parked] * 6}},
    {"job": parked, "batch": {"jobs": [parked]}},
]:
    f.write(json.dumps(request) + "\n")
    f.flush()
    answers.append(json.loads(f.readline()))
print(json.dumps(answers))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_enqueues_batches_through_the_runners_socket() {
    let system = spawn_system_with(Options {
        extra_args: vec!["--max-batch-jobs=5".into()],
        mock: |config| {
            let commands = json!({"batches-py": ["python3", "-c", BATCHES_PY]});
            // As the job image's `ENV RUNNER_COMMANDS=...` would.
            config
                .image_env
                .insert("RUNNER_COMMANDS".into(), commands.to_string());
        },
        ..Options::default()
    })
    .await;
    let parent = system.submit(json!({"kind": "batches-py"})).await;
    let parent = system.wait_for(&id(&parent), "succeeded", WITHIN).await;
    let answers = parent["result"].as_array().expect("answers").clone();
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
