//! Batches, `then` jobs and dependencies (`after`), end to end: real
//! Valkey, real dispatchers and runner processes, the mock Machines API.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{spawn_system_with, Options, TestSystem};
use dispatcher::cli::client::{BatchSubmitted, JobPage};
use fred::prelude::*;
use jobs::{Batch, BatchId, JobStatus};
use serde_json::{json, Value};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(120);

async fn system(max_machines: u32, extra: &[&str]) -> TestSystem {
    spawn_system_with(Options {
        max_machines,
        extra_args: extra.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .await
}

/// `POST path` with `body`: the status and the JSON answer, as on the
/// wire (refusals naming a field, repeats answered 200).
async fn post(system: &TestSystem, path: &str, body: Value) -> (u16, Value) {
    let response = system
        .request(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Submits a new batch (checking the 202) and decodes the answer.
async fn submit_batch(system: &TestSystem, body: Value) -> BatchSubmitted {
    let (status, answer) = post(system, "/batches", body).await;
    assert_eq!(status, 202, "{answer}");
    serde_json::from_value(answer).unwrap()
}

/// Polls the batch until it completed; checks on every read that its
/// counts add up to its total (they are kept, not recomputed).
pub(crate) async fn until_complete(system: &TestSystem, id: &BatchId) -> Batch {
    let deadline = Instant::now() + WITHIN;
    loop {
        let batch = system.api.batch(&id.to_string()).await.unwrap();
        let sum: u64 = batch.counts.values().sum();
        assert_eq!(sum, batch.total, "{batch:?}");
        if batch.completed_at.is_some() {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch not complete: {batch:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many jobs and batches the store holds.
pub(crate) async fn stored(system: &TestSystem) -> (u64, u64) {
    let raw = system.raw_store().await;
    let jobs: u64 = raw.zcard("{jobs}:jobs").await.unwrap();
    let batches: u64 = raw.zcard("{jobs}:batches").await.unwrap();
    (jobs, batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_finishes_with_exact_counts_and_its_then_job_gets_every_result() {
    let system = system(16, &[]).await;
    const N: usize = 200;
    const FAILING: usize = 10;
    let jobs: Vec<Value> = (0..N)
        .map(|i| match i % (N / FAILING) {
            0 => json!({"kind": "fail", "max_attempts": 1, "params": {"i": i}}),
            _ => json!({"kind": "echo", "params": {"i": i}}),
        })
        .collect();
    let answer = submit_batch(
        &system,
        json!({"jobs": jobs, "then": {"kind": "echo"}, "then_policy": "all_finished"}),
    )
    .await;
    let batch_id = answer.batch.id;
    let job_ids = &answer.job_ids;
    assert_eq!(job_ids.len(), N);
    assert_eq!(answer.batch.total, N as u64);

    let batch = until_complete(&system, &batch_id).await;
    let count = |status: JobStatus| batch.counts[&status] as usize;
    assert_eq!(count(JobStatus::Succeeded), N - FAILING, "{batch:?}");
    assert_eq!(count(JobStatus::Failed), FAILING, "{batch:?}");
    assert_eq!(batch.finished, N as u64);
    assert_eq!(batch.progress_percent, 100.0);

    // Each member knows its batch and index, in the order submitted.
    for (index, id) in job_ids.iter().enumerate().step_by(37) {
        let job = system.job(id).await;
        assert_eq!(job.batch_id, Some(batch_id));
        assert_eq!(job.batch_index, Some(index as u32));
    }

    // The members page through, filtered by status, with the cursor.
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/batches/{batch_id}/jobs?status=succeeded&limit=50");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: JobPage = system.get_typed(&path).await;
        for job in &page.jobs {
            assert_eq!(job.status, JobStatus::Succeeded);
            seen.insert(job.id);
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), N - FAILING);

    // The then job ran anyway (all_finished) and received every member.
    let then = batch.then.expect("a then job");
    let then = system.wait_for(&then, JobStatus::Succeeded, WITHIN).await;
    // What a then job receives is free-form JSON for its handler.
    let inputs = then.inputs.as_ref().expect("inputs");
    assert_eq!(inputs["batch"], batch_id.to_string());
    assert_eq!(inputs["counts"]["failed"], FAILING);
    let members = inputs["jobs"].as_array().unwrap();
    assert_eq!(members.len(), N);
    let echoed = members
        .iter()
        .find(|m| m["index"] == 1)
        .expect("member 1 is among the inputs");
    assert_eq!(echoed["status"], "succeeded");
    assert_eq!(echoed["result"]["i"], 1, "{echoed}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_then_job_is_skipped_when_a_member_failed_and_all_must_succeed() {
    let system = system(4, &[]).await;
    let answer = submit_batch(
        &system,
        json!({
            "jobs": [{"kind": "echo"}, {"kind": "fail", "max_attempts": 1}],
            "then": {"kind": "echo"},
        }),
    )
    .await;
    let batch = until_complete(&system, &answer.batch.id).await;
    assert_eq!(batch.then_policy, jobs::RunIf::AllSucceeded);
    let then = system
        .wait_for(&batch.then.unwrap(), JobStatus::Cancelled, WITHIN)
        .await;
    let error = then.error.as_deref().unwrap();
    assert!(error.contains(&batch.id.to_string()), "{error}");
    assert!(then.attempts.is_empty(), "it never ran");

    // The dashboard's pages show the batch, complete, and its members.
    let id = batch.id;
    let html = |path: String| {
        let request = system
            .request(reqwest::Method::GET, &path)
            .header("accept", "text/html");
        crate::support::send_text(request)
    };
    let list = html("/batches".into()).await;
    assert!(list.contains(&format!("data-batch=\"{id}\"")), "{list}");
    let page = html(format!("/batches/{id}")).await;
    assert!(page.contains("data-complete=\"true\""), "{page}");
    assert!(page.contains("data-status=\"failed\""), "{page}");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_callback_fires_once_with_two_dispatchers() {
    let target = crate::support::listener().await;
    let (hook, received) = (target.url.clone(), target.calls.clone());

    let system = system(16, &["--callback-allow-hosts=127.0.0.1"]).await;
    let peer = system.spawn_peer().await;
    // Both dispatchers claim members, so the last ones of each batch end
    // on either, often at the same moment.
    const BATCHES: usize = 6;
    let mut batch_ids = BTreeSet::new();
    for _ in 0..BATCHES {
        let answer = submit_batch(
            &system,
            json!({"jobs": [{"kind": "echo"}, {"kind": "echo"}, {"kind": "echo"}, {"kind": "echo"}],
                   "callback_url": hook}),
        )
        .await;
        batch_ids.insert(answer.batch.id.to_string());
    }
    for id in &batch_ids {
        until_complete(&system, &id.parse().unwrap()).await;
    }
    let deadline = Instant::now() + WITHIN;
    while received.lock().unwrap().len() < BATCHES {
        assert!(Instant::now() < deadline, "callbacks missing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The outbox is empty: nothing more can be sent. Then a moment for a
    // duplicate already in flight to land (none may).
    let raw = system.raw_store().await;
    let left: u64 = raw.llen("{jobs}:batch_callbacks").await.unwrap();
    assert_eq!(left, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls = received.lock().unwrap().clone();
    let named: Vec<String> = calls
        .iter()
        .map(|(headers, _)| headers["x-batch-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(named.len(), BATCHES, "{named:?}");
    assert_eq!(named.iter().cloned().collect::<BTreeSet<_>>(), batch_ids);
    let body: Batch = serde_json::from_slice(&calls[0].1).unwrap();
    assert_eq!(body.counts[&JobStatus::Succeeded], 4);
    peer.trigger();
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_three_runs_in_order_and_a_failure_cancels_what_waits() {
    let system = system(8, &[]).await;
    let a = system
        .submit(json!({"kind": "sleep", "params": {"ms": 500}}))
        .await
        .id;
    let b = system
        .submit(json!({"kind": "echo", "params": {"step": "b"}, "after": [a]}))
        .await;
    assert_eq!(b.status, JobStatus::Waiting);
    let b = b.id;
    let c = system
        .submit(json!({"kind": "echo", "params": {"step": "c"}, "after": [b]}))
        .await;
    assert_eq!(c.status, JobStatus::Waiting);

    let c = system.wait_for(&c.id, JobStatus::Succeeded, WITHIN).await;
    let (a, b) = (system.job(&a).await, system.job(&b).await);
    assert_eq!(a.status, JobStatus::Succeeded);
    assert_eq!(b.status, JobStatus::Succeeded);
    assert!(a.finished_at.unwrap() <= b.attempts[0].claimed_at.unwrap());
    assert!(b.finished_at.unwrap() <= c.attempts[0].claimed_at.unwrap());
    let inputs = c.inputs.as_ref().expect("inputs");
    assert_eq!(inputs["jobs"][0]["id"], b.id.to_string());
    assert_eq!(inputs["jobs"][0]["result"]["step"], "b");

    // A dependency that fails for good cancels its dependents, naming it,
    // and theirs in turn.
    let d = system
        .submit(json!({"kind": "fail", "max_attempts": 1}))
        .await
        .id;
    let e = system
        .submit(json!({"kind": "echo", "after": [d]}))
        .await
        .id;
    let f = system
        .submit(json!({"kind": "echo", "after": [e]}))
        .await
        .id;
    let e_job = system.wait_for(&e, JobStatus::Cancelled, WITHIN).await;
    let names =
        |job: &jobs::Job, id: &jobs::JobId| job.error.as_deref().unwrap().contains(&id.to_string());
    assert!(names(&e_job, &d), "{e_job:?}");
    let f_job = system.wait_for(&f, JobStatus::Cancelled, WITHIN).await;
    assert!(names(&f_job, &e), "{f_job:?}");

    // Submitted after its dependency already failed: cancelled at once.
    let late = system.submit(json!({"kind": "echo", "after": [d]})).await;
    assert_eq!(late.status, JobStatus::Cancelled);
    // So is a batch member, counted as such; its sibling waits for `c`.
    let answer = submit_batch(
        &system,
        json!({"jobs": [{"kind": "echo", "after": [d]}, {"kind": "echo", "after": [c.id]}]}),
    )
    .await;
    assert_eq!(answer.batch.counts[&JobStatus::Cancelled], 1, "{answer:?}");
    let batch = until_complete(&system, &answer.batch.id).await;
    assert_eq!(batch.counts[&JobStatus::Succeeded], 1, "{batch:?}");

    // A waiting job is cancelled like a queued one (the cancel route's
    // status is the contract: raw).
    let slow = system
        .submit(json!({"kind": "sleep", "params": {"ms": 60000}}))
        .await;
    let waiting = system
        .submit(json!({"kind": "echo", "after": [slow.id]}))
        .await;
    let (status, cancelled) =
        post(&system, &format!("/jobs/{}/cancel", waiting.id), json!({})).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, _) = post(&system, &format!("/jobs/{}/cancel", slow.id), json!({})).await;
    assert!(status == 200 || status == 202, "{status}");

    // A job's own then job runs after it, with its result.
    let parent = system
        .submit(json!({"kind": "echo", "params": {"p": 1}, "then": {"kind": "echo"}}))
        .await;
    let then = parent.then.expect("a then job");
    let then = system.wait_for(&then, JobStatus::Succeeded, WITHIN).await;
    let inputs = then.inputs.as_ref().expect("inputs");
    assert_eq!(inputs["jobs"][0]["result"]["p"], 1);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_naming_the_field_and_store_nothing() {
    // No machines: nothing runs, so the store holds only what was accepted.
    let system = system(0, &["--max-batch-jobs=5"]).await;
    let missing = jobs::JobId::new().to_string();
    let cases = [
        (json!({"jobs": []}), "jobs"),
        (json!({"jobs": vec![json!({"kind": "echo"}); 6]}), "jobs"),
        (
            json!({"jobs": [{"kind": "echo"}, {"kind": "Not A Kind"}]}),
            "jobs[1].kind",
        ),
        (
            json!({"jobs": [{"kind": "echo"}, {"kind": "echo", "machine": {"memory_mb": 300}}]}),
            "jobs[1].machine.memory_mb",
        ),
        (
            json!({"jobs": [{"kind": "echo"}, {"kind": "echo", "after": [missing]}]}),
            "jobs[1].after",
        ),
        (
            json!({"jobs": [{"kind": "echo", "nope": 1}]}),
            "jobs[0].nope",
        ),
        (
            json!({"jobs": [{"kind": "echo"}], "then": {"kind": "echo", "then": {"kind": "echo"}}}),
            "then",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = post(&system, "/batches", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert_eq!(answer["field"], field, "{answer}");
    }
    let (status, answer) = post(
        &system,
        "/jobs",
        json!({"kind": "echo", "after": [missing]}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["field"], "after");
    assert!(
        answer["error"].as_str().unwrap().contains(&missing),
        "{answer}"
    );
    assert_eq!(stored(&system).await, (0, 0), "nothing stored");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_and_member_idempotency_keys() {
    let system = system(0, &[]).await;
    let body =
        json!({"idempotency_key": "nightly-1", "jobs": [{"kind": "echo"}, {"kind": "echo"}]});
    let first = submit_batch(&system, body.clone()).await;
    let batch_id = first.batch.id;

    // The same body again: the first batch, nothing new stored.
    let (status, again) = post(&system, "/batches", body).await;
    assert_eq!(status, 200, "{again}");
    let again: BatchSubmitted = serde_json::from_value(again).unwrap();
    assert_eq!(again.batch.id, batch_id);
    // Another body under the key: refused.
    let (status, other) = post(
        &system,
        "/batches",
        json!({"idempotency_key": "nightly-1", "jobs": [{"kind": "echo"}]}),
    )
    .await;
    assert_eq!(status, 409, "{other}");
    assert_eq!(other["field"], "idempotency_key");
    assert_eq!(stored(&system).await, (2, 1));

    // The Idempotency-Key header is the same as the field.
    let with_header = || async {
        let response = system
            .request(reqwest::Method::POST, "/batches")
            .header("idempotency-key", "nightly-2")
            .json(&json!({"jobs": [{"kind": "echo"}]}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (first_status, first) = with_header().await;
    let (again_status, again) = with_header().await;
    assert_eq!((first_status, again_status), (202, 200));
    assert_eq!(first["batch"]["id"], again["batch"]["id"]);
    assert_eq!(stored(&system).await, (3, 2));

    // Members' own keys: a repeated member is the job stored before.
    let member = json!({"kind": "echo", "idempotency_key": "user-7"});
    let one = submit_batch(&system, json!({"jobs": [member.clone()]})).await;
    let two = submit_batch(&system, json!({"jobs": [{"kind": "echo"}, member]})).await;
    assert_eq!(two.existing, [1]);
    assert_eq!(two.job_ids[1], one.job_ids[0]);
    assert_eq!(two.batch.total, 1, "the repeat is not a member");
    // A member key used for another request refuses the whole batch.
    let (status, conflict) = post(
        &system,
        "/batches",
        json!({"jobs": [{"kind": "echo"}, {"kind": "other", "idempotency_key": "user-7"}]}),
    )
    .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["field"], "jobs[1].idempotency_key");
    assert_eq!(
        stored(&system).await,
        (5, 4),
        "nothing of the refused batch"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_submits_a_jsonl_file_as_one_batch_and_watches_it() {
    let system = system(8, &[]).await;
    let dir = crate::support::TempDir::new();
    let file = dir.path.join("batch.jsonl");
    let lines: Vec<String> = (0..5)
        .map(|i| json!({"kind": "echo", "params": {"i": i}}).to_string())
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["jobs", "submit", "--batch"])
        .arg(&file)
        .args(["--max-attempts", "2", "--wait", "--json"])
        .env("DISPATCHER_URL", &system.base)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let batch: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(batch["total"], 5);
    assert_eq!(batch["counts"]["succeeded"], 5, "{batch}");
    // The options filled what the lines left out.
    let page: JobPage = system
        .get_typed(&format!("/batches/{}/jobs", batch["id"].as_str().unwrap()))
        .await;
    assert!(page.jobs.iter().all(|job| job.max_attempts == 2));

    // A bad line is named before anything is sent.
    std::fs::write(&file, "{\"kind\": \"echo\"}\nnot json\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_dispatcher"))
        .args(["jobs", "submit", "--batch"])
        .arg(&file)
        .env("DISPATCHER_URL", &system.base)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("batch.jsonl:2"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_announced_once_and_admitted_as_slots_free() {
    const MAX: u32 = 4;
    const N: usize = 300;
    let system = system(MAX, &[]).await;
    let subscriber = system.store.subscriber().await.unwrap();
    subscriber
        .subscribe(system.store.events_channel())
        .await
        .unwrap();
    // Every `queued` announcement, collected as it comes.
    let mut messages = subscriber.message_rx();
    let queued: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = queued.clone();
    let collector = tokio::spawn(async move {
        loop {
            match messages.recv().await {
                Ok(message) => {
                    let text = message.value.as_string().unwrap();
                    let event: Value = serde_json::from_str(&text).unwrap();
                    if event["type"] == "status" && event["status"] == "queued" {
                        sink.lock()
                            .unwrap()
                            .push(event["id"].as_str().unwrap().into());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    panic!("missed {n} events")
                }
                Err(_) => return,
            }
        }
    });
    let answer = submit_batch(&system, json!({"jobs": vec![json!({"kind": "echo"}); N]})).await;
    let batch_id = answer.batch.id.to_string();
    let members: BTreeSet<String> = answer.job_ids.iter().map(|id| id.to_string()).collect();
    until_complete(&system, &answer.batch.id).await;

    // No member was announced as queued on its own: the launchers were
    // woken once, by the batch's own event, not N times.
    let _ = subscriber.quit().await;
    collector.await.unwrap();
    let queued = queued.lock().unwrap().clone();
    let member_queued = queued.iter().filter(|id| members.contains(*id)).count();
    let batch_queued = queued.iter().filter(|id| **id == batch_id).count();
    assert_eq!((member_queued, batch_queued), (0, 1));
    // The machine cap held across the whole batch.
    let stats = system.mock_stats();
    assert!(stats.peak_live <= MAX as usize, "{stats:?}");
    assert_eq!(stats.created, N as u64);
    system.stop().await;
}

/// The store step that completes a batch, twice at the same moment: two
/// dispatchers close the last two members' attempts concurrently, each on
/// its own connection. The batch completes once and queues its callback
/// once (the outbox holds one entry), whichever finishes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_the_last_two_members_at_once_completes_the_batch_once() {
    use jobs::{Claim, Fenced, NewBatch, NewJob, Outcome, Store, StoreConfig, Submit, Submitted};

    let dir = crate::support::TempDir::new();
    let mut valkey = crate::support::start_valkey(&dir.path.join("valkey"), None).await;
    let connect = || Store::connect(StoreConfig::new(valkey.address()));
    let (first, second) = (connect().await.unwrap(), connect().await.unwrap());
    for round in 0..20 {
        let member = || NewJob {
            id: jobs::JobId::new(),
            spec: jobs::JobSpec {
                kind: jobs::Kind::parse("echo").unwrap(),
                params: json!({"round": round}),
                priority: 0,
                max_attempts: 1,
                timeout_secs: 60,
                backoff: jobs::Backoff::default(),
                machine: jobs::MachineSpec::default(),
            },
            delay: Duration::ZERO,
            callback_url: None,
            idempotency: None,
            secrets: jobs::Secrets::default(),
            after: Vec::new(),
            run_if: jobs::RunIf::AllSucceeded,
            then: None,
            concurrency_key: None,
            run: Default::default(),
        };
        let batch = NewBatch {
            id: jobs::BatchId::new(),
            callback_url: Some("https://example.com/hook".into()),
            idempotency: None,
            then: None,
            parent: None,
        };
        let id = batch.id;
        let submit = Submit {
            jobs: vec![member(), member()],
            batch: Some(batch),
        };
        assert!(matches!(
            first.submit(&submit).await.unwrap(),
            Submitted::Stored { .. }
        ));
        let mut owned = Vec::new();
        // Slots stay held (no machine is ever destroyed here): a cap
        // above every round's claims.
        for store in [&first, &second] {
            match store
                .claim(100, "{}", "test", Duration::from_secs(30))
                .await
                .unwrap()
            {
                Claim::Claimed { attempt, .. } => owned.push(attempt),
                other => panic!("round {round}: a member to claim, got {other:?}"),
            }
        }
        let finish = |store: &Store, attempt: &jobs::Owned| {
            let (store, attempt) = (store.clone(), attempt.clone());
            async move {
                store
                    .finish_attempt(&attempt, Outcome::Succeeded, Some(0), None, Duration::ZERO)
                    .await
                    .unwrap()
            }
        };
        let (a, b) = tokio::join!(finish(&first, &owned[0]), finish(&second, &owned[1]));
        assert_eq!(a.status(), Fenced::Done(Some(jobs::JobStatus::Succeeded)));
        assert_eq!(b.status(), Fenced::Done(Some(jobs::JobStatus::Succeeded)));
        let batch = first.batch(id).await.unwrap().unwrap();
        assert!(batch.is_complete(), "round {round}");
        assert_eq!(batch.finished, 2);
        assert_eq!(first.pop_batch_callback().await.unwrap(), Some(id));
        assert_eq!(second.pop_batch_callback().await.unwrap(), None, "once");
    }
    first.quit().await;
    second.quit().await;
    valkey.stop().await;
}
