//! The job store's transitions against a real Valkey-compatible server:
//! caps, ordering, fencing of stale attempts, retries and cancellation.

use std::time::Duration;

use devkit::valkey::LocalValkey;
use fred::interfaces::KeysInterface as _;
use jobs::{
    Backoff, CancelResult, Claim, EnqueueOptions, Enqueued, Fenced, Heartbeat, Idempotency, JobId,
    JobSpec, JobStatus, Kind, ListFilter, MachineSpec, MinuteCounts, Outcome, Owned, Recorded,
    Report, RetryResult, Store, StoreConfig, ACTIVITY_MAX_MINUTES,
};
use serde_json::json;

use crate::support::topology;
use topology::{free_port, Cluster};

const LEASE: Duration = Duration::from_secs(30);

/// The store under test and the servers behind it (kept alive until the
/// test ends): one server, or a 3-node cluster when
/// `STORE_TEST_TOPOLOGY=cluster` (CI runs both).
async fn store() -> (Box<dyn std::any::Any>, Store) {
    if std::env::var("STORE_TEST_TOPOLOGY").as_deref() == Ok("cluster") {
        let cluster = Cluster::start().await;
        let store = Store::connect(StoreConfig::new(cluster.url().parse().unwrap()))
            .await
            .unwrap();
        return (Box::new(cluster), store);
    }
    for _ in 0..5 {
        let port = free_port();
        let dir = topology::scratch("store-test");
        if let Ok(server) = LocalValkey::start(port, &dir, false).await {
            let store = Store::connect(StoreConfig::new(server.address()))
                .await
                .unwrap();
            // The server stops before its directory goes.
            return (Box::new((server, dir)), store);
        }
    }
    panic!("no Valkey-compatible server could be started");
}

fn spec(kind: &str, priority: i32, max_attempts: u32) -> JobSpec {
    JobSpec {
        kind: Kind::parse(kind).unwrap(),
        params: json!({"p": priority}),
        priority,
        max_attempts,
        timeout_secs: 60,
        backoff: Backoff::default(),
        machine: MachineSpec::default(),
    }
}

async fn enqueue(store: &Store, id: JobId, spec: &JobSpec, delay: Duration) -> jobs::Job {
    let options = EnqueueOptions {
        delay,
        ..EnqueueOptions::default()
    };
    match store.enqueue(id, spec, &options).await.unwrap() {
        Enqueued::Created(job) => *job,
        other => panic!("not created: {other:?}"),
    }
}

async fn claim(store: &Store, cap: u32) -> Claim {
    store.claim(cap, "{}", "test", LEASE).await.unwrap()
}

async fn claimed(store: &Store) -> (jobs::Job, Owned) {
    match claim(store, 100).await {
        Claim::Claimed { job, attempt } => (*job, attempt),
        other => panic!("expected a claim, got {other:?}"),
    }
}

#[tokio::test]
async fn claims_follow_priority_then_arrival_and_respect_the_cap() {
    let (_server, store) = store().await;
    let mut ids = Vec::new();
    for priority in [5, 0, 5, -3] {
        let id = JobId::new();
        enqueue(&store, id, &spec("echo", priority, 1), Duration::ZERO).await;
        ids.push(id);
    }
    let mut order = Vec::new();
    for _ in 0..3 {
        let Claim::Claimed { job, .. } = claim(&store, 3).await else {
            panic!("claim")
        };
        assert_eq!(job.status, JobStatus::Starting);
        order.push(job.id);
    }
    assert_eq!(order, [ids[3], ids[1], ids[0]]);
    assert!(
        matches!(claim(&store, 3).await, Claim::Full),
        "the cap of 3 holds"
    );
    let Claim::Claimed { job, .. } = claim(&store, 4).await else {
        panic!("claim")
    };
    assert_eq!(job.id, ids[2]);
    assert!(matches!(
        claim(&store, 10).await,
        Claim::Empty { next_due_in: None }
    ));
}

#[tokio::test]
async fn a_stale_attempt_can_write_nothing() {
    let (_server, store) = store().await;
    let id = JobId::new();
    enqueue(&store, id, &spec("echo", 0, 3), Duration::ZERO).await;
    let (_, first) = claimed(&store).await;
    assert!(store.start_attempt(&first).await.unwrap().is_some());

    // The supervisor gives up on attempt 1 (say, it timed out): retry at once.
    let status = store
        .finish_attempt(
            &first,
            Outcome::TimedOut,
            None,
            Some("too slow"),
            Duration::ZERO,
        )
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Scheduled)));

    // The zombie runner of attempt 1 wakes up late.
    assert_eq!(store.heartbeat(&first).await.unwrap(), Heartbeat::Stale);
    assert!(!store
        .report(&first, &Report::Result(json!("late")))
        .await
        .unwrap());
    assert!(store.start_attempt(&first).await.unwrap().is_none());

    // Attempt 2 runs; the zombie still can't touch it, even with its old token.
    store.release(&first).await.unwrap();
    let (_, second) = claimed(&store).await;
    assert_eq!(second.attempt, 2);
    let forged = Owned {
        attempt_ref: jobs::AttemptRef {
            attempt: 2,
            ..first.attempt_ref.clone()
        },
        epoch: second.epoch,
    };
    assert_eq!(
        store.record_machine(&forged, "m", "r").await.unwrap(),
        Fenced::Done(Recorded::Stale),
        "the right epoch with the wrong token is still refused"
    );
    assert!(store.start_attempt(&forged).await.unwrap().is_none());
    assert!(store.start_attempt(&second).await.unwrap().is_some());
    assert!(!store
        .report(&forged, &Report::Result(json!("forged")))
        .await
        .unwrap());
    assert!(store
        .report(&second, &Report::Result(json!("real")))
        .await
        .unwrap());
    assert!(
        !store
            .report(&second, &Report::Result(json!("twice")))
            .await
            .unwrap(),
        "one report per attempt"
    );
    let status = store
        .finish_attempt(&second, Outcome::Succeeded, Some(0), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Succeeded)));
    assert_eq!(
        store
            .finish_attempt(&first, Outcome::Crashed, None, None, Duration::ZERO)
            .await
            .unwrap()
            .status(),
        Fenced::Lost,
        "attempt 1's slot was released: its owner owns nothing"
    );

    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.result, Some(json!("real")));
    assert_eq!(job.attempts.len(), 2);
    assert_eq!(job.attempts[0].outcome, Some(Outcome::TimedOut));
    assert_eq!(job.attempts[0].error.as_deref(), Some("too slow"));
    assert_eq!(job.attempts[1].outcome, Some(Outcome::Succeeded));
}

#[tokio::test]
async fn failures_back_off_then_dead_letter_and_retry_by_hand_keeps_history() {
    let (_server, store) = store().await;
    let id = JobId::new();
    enqueue(&store, id, &spec("fail", 0, 2), Duration::ZERO).await;

    let (_, first) = claimed(&store).await;
    let status = store
        .finish_attempt(
            &first,
            Outcome::Crashed,
            Some(3),
            None,
            Duration::from_millis(300),
        )
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Scheduled)));
    store.release(&first).await.unwrap();
    match claim(&store, 10).await {
        Claim::Empty {
            next_due_in: Some(due),
        } => assert!(due <= Duration::from_millis(300), "{due:?}"),
        other => panic!("the job waits for its backoff, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, second) = claimed(&store).await;
    let status = store
        .finish_attempt(&second, Outcome::Crashed, Some(3), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(
        status,
        Fenced::Done(Some(JobStatus::Failed)),
        "two attempts were allowed"
    );
    store.release(&second).await.unwrap();
    assert_eq!(
        store
            .list(
                &ListFilter {
                    status: Some(JobStatus::Failed),
                    ..ListFilter::default()
                },
                10
            )
            .await
            .unwrap()
            .jobs[0]
            .id,
        id
    );

    assert_eq!(
        store.retry(id, &Default::default()).await.unwrap(),
        RetryResult::Queued
    );
    assert_eq!(
        store.retry(id, &Default::default()).await.unwrap(),
        RetryResult::NotFinished
    );
    let (job, third) = claimed(&store).await;
    assert_eq!(third.attempt, 3);
    assert_eq!(job.attempts.len(), 3, "history is kept");
    // A fresh budget of two: one failure schedules a retry again.
    let status = store
        .finish_attempt(
            &third,
            Outcome::Crashed,
            Some(3),
            None,
            Duration::from_secs(60),
        )
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Scheduled)));
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let (_server, store) = store().await;
    let id = JobId::new();
    enqueue(&store, id, &spec("fail", 0, 5), Duration::ZERO).await;
    let (_, attempt) = claimed(&store).await;
    store.start_attempt(&attempt).await.unwrap();
    let report = Report::Error {
        message: "bad input".into(),
        permanent: true,
    };
    assert!(store.report(&attempt, &report).await.unwrap());
    let status = store
        .finish_attempt(&attempt, Outcome::Error, Some(1), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Failed)));
    assert_eq!(
        store.get(id).await.unwrap().unwrap().error.as_deref(),
        Some("bad input")
    );
}

#[tokio::test]
async fn cancel_in_each_state() {
    let (_server, store) = store().await;
    let queued = JobId::new();
    let scheduled = JobId::new();
    let running = JobId::new();
    enqueue(&store, running, &spec("sleep", -1, 1), Duration::ZERO).await;
    enqueue(&store, queued, &spec("sleep", 0, 1), Duration::ZERO).await;
    enqueue(
        &store,
        scheduled,
        &spec("sleep", 0, 1),
        Duration::from_secs(3600),
    )
    .await;
    let (job, attempt) = claimed(&store).await;
    assert_eq!(job.id, running);
    store.start_attempt(&attempt).await.unwrap();

    assert_eq!(store.cancel(queued).await.unwrap(), CancelResult::Cancelled);
    assert_eq!(
        store.cancel(scheduled).await.unwrap(),
        CancelResult::Cancelled
    );
    assert_eq!(
        store.cancel(running).await.unwrap(),
        CancelResult::Cancelling
    );
    assert_eq!(
        store.heartbeat(&attempt).await.unwrap(),
        Heartbeat::CancelRequested
    );
    assert_eq!(
        store.cancel(JobId::new()).await.unwrap(),
        CancelResult::Missing
    );
    // Nothing is left to claim: both waiting jobs are gone from the queues.
    assert!(matches!(
        claim(&store, 10).await,
        Claim::Empty { next_due_in: None }
    ));

    let status = store
        .finish_attempt(&attempt, Outcome::Cancelled, None, None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(status, Fenced::Done(Some(JobStatus::Cancelled)));
    assert_eq!(
        store.cancel(running).await.unwrap(),
        CancelResult::AlreadyFinished
    );
    let counts = store.stats().await.unwrap().by_status;
    assert_eq!(counts[&JobStatus::Cancelled], 3);
    assert_eq!(counts[&JobStatus::Queued], 0);
    assert_eq!(counts[&JobStatus::Scheduled], 0);
}

#[tokio::test]
async fn idempotency_keys_return_the_first_job_or_conflict() {
    let (_server, store) = store().await;
    let options = |hash: &str| EnqueueOptions {
        idempotency: Some(Idempotency {
            key: "order-42".into(),
            request_hash: hash.into(),
            ttl: Duration::from_secs(60),
        }),
        ..EnqueueOptions::default()
    };
    let first = JobId::new();
    let Enqueued::Created(job) = store
        .enqueue(first, &spec("echo", 0, 1), &options("a"))
        .await
        .unwrap()
    else {
        panic!("first submit creates")
    };
    assert_eq!(job.idempotency_key.as_deref(), Some("order-42"));
    match store
        .enqueue(JobId::new(), &spec("echo", 0, 1), &options("a"))
        .await
        .unwrap()
    {
        Enqueued::Existing(id) => assert_eq!(id, first),
        other => panic!("a repeat returns the first job, got {other:?}"),
    }
    match store
        .enqueue(JobId::new(), &spec("echo", 0, 1), &options("b"))
        .await
        .unwrap()
    {
        Enqueued::Conflict(id) => assert_eq!(id, first),
        other => panic!("another request under the key conflicts, got {other:?}"),
    }
    let all = store.list(&ListFilter::default(), 10).await.unwrap();
    assert_eq!(all.jobs.len(), 1, "nothing else was stored");
}

#[tokio::test]
async fn kind_caps_hold_back_only_their_kind() {
    let (_server, store) = store().await;
    for kind in ["report", "report", "echo"] {
        enqueue(&store, JobId::new(), &spec(kind, 0, 1), Duration::ZERO).await;
    }
    let caps = r#"{"report": 1}"#;
    let mut kinds = Vec::new();
    let mut attempts = Vec::new();
    while let Claim::Claimed { job, attempt } = store.claim(10, caps, "test", LEASE).await.unwrap()
    {
        kinds.push(job.kind.to_string());
        attempts.push(attempt);
    }
    assert_eq!(
        kinds,
        ["report", "echo"],
        "the second report waits for the first"
    );
    store.release(&attempts[0]).await.unwrap();
    let Claim::Claimed { job, .. } = store.claim(10, caps, "test", LEASE).await.unwrap() else {
        panic!("a freed report slot lets the next report run")
    };
    assert_eq!(job.kind.as_str(), "report");
}

#[tokio::test]
async fn slots_are_checked_many_at_once_in_order() {
    let (_server, store) = store().await;
    for _ in 0..2 {
        enqueue(&store, JobId::new(), &spec("echo", 0, 1), Duration::ZERO).await;
    }
    let (a, a1) = claimed(&store).await;
    let (b, b1) = claimed(&store).await;
    store.release(&b1).await.unwrap();

    let asked = [
        (b.id, 1),
        (a.id, 1),
        (a.id, 2),
        (JobId::new(), 1),
        (a.id, 1),
    ];
    assert_eq!(
        store.holds_slots(&asked).await.unwrap(),
        [false, true, false, false, true]
    );
    assert_eq!(
        store.holds_slots(&[(a.id, a1.attempt)]).await.unwrap(),
        [true]
    );
    assert!(store.holds_slots(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn listing_pages_are_stable_and_filter_by_status_and_kind() {
    let (_server, store) = store().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        let id = JobId::new();
        enqueue(&store, id, &spec(kind, 0, 1), Duration::ZERO).await;
        ids.push(id);
    }
    let mut seen = Vec::new();
    let mut filter = ListFilter::default();
    loop {
        let page = store.list(&filter, 3).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        // A job added mid-pagination does not shift later pages.
        if seen.len() == 3 {
            enqueue(&store, JobId::new(), &spec("odd", 0, 1), Duration::ZERO).await;
        }
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let even = ListFilter {
        kind: Some(Kind::parse("even").unwrap()),
        status: Some(JobStatus::Queued),
        ..ListFilter::default()
    };
    let page = store.list(&even, 10).await.unwrap();
    assert_eq!(page.jobs.len(), 4);
    assert!(page.jobs.iter().all(|j| j.kind.as_str() == "even"));
    assert!(page.next.is_none());
}

/// A takeover issues a new epoch: from then on every write of the previous
/// owner is refused, whatever it tries, while the new owner's go through.
#[tokio::test]
async fn a_dispatcher_whose_attempt_was_taken_over_can_write_nothing() {
    let (_server, store) = store().await;
    let id = JobId::new();
    enqueue(&store, id, &spec("echo", 0, 1), Duration::ZERO).await;
    // A lease that ends at once, as if its owner froze right after the claim.
    let Claim::Claimed { attempt: old, .. } =
        store.claim(10, "{}", "old", Duration::ZERO).await.unwrap()
    else {
        panic!("claim")
    };
    let taken = store
        .take_over(id, old.attempt, "new", LEASE)
        .await
        .unwrap()
        .expect("the expired lease is taken over");
    let new = taken.owned;
    assert!(taken.current);
    assert_eq!(new.attempt_ref, old.attempt_ref, "same attempt, same token");
    assert!(
        new.epoch > old.epoch,
        "a new epoch: {} after {}",
        new.epoch,
        old.epoch
    );
    assert!(
        store
            .take_over(id, old.attempt, "third", LEASE)
            .await
            .unwrap()
            .is_none(),
        "the new owner's lease is live"
    );

    assert_eq!(
        store.renew(&[(id, 1, old.epoch)], LEASE).await.unwrap(),
        [None]
    );
    assert_eq!(store.confirm(&old, LEASE).await.unwrap(), Fenced::Lost);
    assert_eq!(
        store.record_machine(&old, "stale", "r").await.unwrap(),
        Fenced::Lost
    );
    let finished = store
        .finish_attempt(&old, Outcome::BootFailed, None, Some("409"), Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(finished, Fenced::Lost);
    assert_eq!(store.hand_back(&old).await.unwrap(), Fenced::Lost);
    assert_eq!(store.release(&old).await.unwrap(), Fenced::Lost);
    assert_eq!(
        store.holds_slots(&[(id, 1)]).await.unwrap(),
        [true],
        "the slot is still held, by the new owner"
    );

    assert!(store.renew(&[(id, 1, new.epoch)], LEASE).await.unwrap()[0].is_some());
    assert_eq!(
        store.confirm(&new, LEASE).await.unwrap(),
        Fenced::Done(false)
    );
    assert_eq!(
        store.record_machine(&new, "m1", "r").await.unwrap(),
        Fenced::Done(Recorded::Recorded {
            cancel_requested: false
        })
    );
    assert!(store.start_attempt(&new).await.unwrap().is_some());
    assert!(store.report(&new, &Report::Result(json!(1))).await.unwrap());
    let finished = store
        .finish_attempt(&new, Outcome::Succeeded, Some(0), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(finished, Fenced::Done(Some(JobStatus::Succeeded)));
    assert_eq!(store.release(&new).await.unwrap(), Fenced::Done(()));
    let job = store.get(id).await.unwrap().unwrap();
    assert_eq!(job.attempts[0].machine_id.as_deref(), Some("m1"));
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Succeeded));
}

/// A cancel is stored state: an owner that never saw the message learns it
/// from the store, a runner that has not begun never starts, and an
/// attempt that ended any other way than success ends `cancelled`, with no
/// retry however many attempts are left.
#[tokio::test]
async fn a_requested_cancel_decides_however_the_attempt_ends() {
    let (_server, store) = store().await;
    let (before_start, while_running) = (JobId::new(), JobId::new());
    enqueue(&store, before_start, &spec("sleep", 0, 5), Duration::ZERO).await;
    enqueue(&store, while_running, &spec("sleep", 1, 5), Duration::ZERO).await;

    let (_, first) = claimed(&store).await;
    assert_eq!(
        store.cancel(before_start).await.unwrap(),
        CancelResult::Cancelling
    );
    assert_eq!(
        store.confirm(&first, LEASE).await.unwrap(),
        Fenced::Done(true)
    );
    assert_eq!(
        store.record_machine(&first, "m", "r").await.unwrap(),
        Fenced::Done(Recorded::Recorded {
            cancel_requested: true
        })
    );
    assert!(
        store.start_attempt(&first).await.unwrap().is_none(),
        "the handler never starts"
    );
    let finished = store
        .finish_attempt(&first, Outcome::Crashed, Some(1), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(finished, Fenced::Done(Some(JobStatus::Cancelled)));

    let (_, second) = claimed(&store).await;
    assert!(store.start_attempt(&second).await.unwrap().is_some());
    assert_eq!(
        store.cancel(while_running).await.unwrap(),
        CancelResult::Cancelling
    );
    // The runner stops on the cancel with a retryable error.
    let stopped = Report::Error {
        message: "stopped while sleeping: cancelled".into(),
        permanent: false,
    };
    assert!(store.report(&second, &stopped).await.unwrap());
    let finished = store
        .finish_attempt(&second, Outcome::Error, Some(1), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(
        finished,
        Fenced::Done(Some(JobStatus::Cancelled)),
        "no retry"
    );
    let job = store.get(while_running).await.unwrap().unwrap();
    assert_eq!(job.attempts.len(), 1);
    assert_eq!(job.attempts[0].outcome, Some(Outcome::Cancelled));
}

#[tokio::test]
async fn secrets_are_read_with_the_attempt_token_only_and_go_with_the_job() {
    let (_server, store) = store().await;
    let id = JobId::new();
    let secrets = jobs::Secrets([("API_KEY".to_string(), "v".to_string())].into());
    let options = EnqueueOptions {
        secrets: secrets.clone(),
        ..EnqueueOptions::default()
    };
    let Enqueued::Created(job) = store
        .enqueue(id, &spec("echo", 0, 1), &options)
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    assert!(
        !format!("{job:?}").contains("\"v\""),
        "not in the job record"
    );
    let (_, attempt) = claimed(&store).await;
    assert_eq!(store.secrets(&attempt).await.unwrap(), Some(secrets));
    let forged = jobs::AttemptRef {
        token: "forged".into(),
        ..attempt.attempt_ref.clone()
    };
    assert_eq!(store.secrets(&forged).await.unwrap(), None);
    store
        .finish_attempt(&attempt, Outcome::Crashed, Some(1), None, Duration::ZERO)
        .await
        .unwrap()
        .status();
    assert_eq!(
        store.retry(id, &Default::default()).await.unwrap(),
        RetryResult::SecretsGone
    );
}

#[tokio::test]
async fn schedules_stop_at_the_cap() {
    let (_server, store) = store().await;
    let schedule = || jobs::Schedule {
        id: uuid::Uuid::now_v7(),
        name: None,
        cron: None,
        every_secs: Some(60),
        job: json!({"kind": "echo"}),
        created_at: chrono::Utc::now(),
        next_run_at: None,
        last_job_id: None,
        last_run_at: None,
    };
    let due = chrono::Utc::now().timestamp_millis() + 60_000;
    for _ in 0..2 {
        assert!(store.create_schedule(&schedule(), due, 2).await.unwrap());
    }
    assert!(!store.create_schedule(&schedule(), due, 2).await.unwrap());
    assert_eq!(store.list_schedules().await.unwrap().len(), 2);
}

#[tokio::test]
async fn activity_counts_claims_and_final_states_per_minute() {
    let (_server, store) = store().await;
    let before = store.activity(60).await.unwrap();
    assert_eq!(before.minutes.len(), 60);
    assert!(before.minutes.iter().all(|m| *m == MinuteCounts::default()));
    let now_minute = chrono::Utc::now().timestamp() / 60;
    assert!(
        (before.first_minute + 59 - now_minute).abs() <= 1,
        "the last minute is the current one"
    );

    // Three attempts start; one job succeeds, one fails for good, one is
    // cancelled; a retried attempt counts as a start, not a final state.
    for _ in 0..3 {
        enqueue(&store, JobId::new(), &spec("echo", 0, 1), Duration::ZERO).await;
    }
    let retried = JobId::new();
    enqueue(&store, retried, &spec("echo", 0, 2), Duration::ZERO).await;
    let mut attempts = Vec::new();
    for _ in 0..4 {
        attempts.push(claimed(&store).await.1);
    }
    let outcomes = [
        Outcome::Succeeded,
        Outcome::Error,
        Outcome::Cancelled,
        Outcome::Error,
    ];
    for (attempt, outcome) in attempts.iter().zip(outcomes) {
        let done = store
            .finish_attempt(attempt, outcome, None, None, Duration::ZERO)
            .await
            .unwrap()
            .status();
        assert!(matches!(done, Fenced::Done(_)), "{done:?}");
    }
    let (again, _) = claimed(&store).await;
    assert_eq!(again.id, retried);

    let after = store.activity(60).await.unwrap();
    let total = after
        .minutes
        .iter()
        .fold(MinuteCounts::default(), |sum, m| MinuteCounts {
            started: sum.started + m.started,
            succeeded: sum.succeeded + m.succeeded,
            failed: sum.failed + m.failed,
            cancelled: sum.cancelled + m.cancelled,
        });
    assert_eq!(
        total,
        MinuteCounts {
            started: 5,
            succeeded: 1,
            failed: 1,
            cancelled: 1
        }
    );
    // Bounded: each minute's hash expires within the two hours it is read.
    let first_used = after.minutes.iter().position(|m| m.started > 0).unwrap();
    let key = format!(
        "{{{}}}:minute:{}",
        store.namespace(),
        after.first_minute + first_used as i64
    );
    let ttl: i64 = store.raw_client().ttl(&key).await.unwrap();
    assert!((1..=7200).contains(&ttl), "{key} expires in {ttl} s");
    // Asking for more than the counters keep is clamped, never an error.
    assert_eq!(
        store.activity(100_000).await.unwrap().minutes.len(),
        ACTIVITY_MAX_MINUTES as usize
    );
    assert_eq!(store.activity(0).await.unwrap().minutes.len(), 1);
}

/// Runs `body` behind the scripts' prelude in the store's namespace, as a
/// transition script runs.
async fn eval_with_prelude(store: &Store, body: &str) -> Result<String, fred::error::Error> {
    use fred::interfaces::LuaInterface as _;
    let prefix = format!("{{{}}}:", store.namespace());
    store
        .raw_client()
        .eval(
            format!("{}\n{body}", jobs::store::PRELUDE),
            vec![prefix.clone()],
            vec![prefix],
        )
        .await
}

#[tokio::test]
async fn the_store_enforces_the_state_machine_that_job_status_mirrors() {
    use std::collections::BTreeMap;
    let (_servers, store) = store().await;
    let table = eval_with_prelude(&store, "return cjson.encode(TRANSITIONS)")
        .await
        .unwrap();
    let table: BTreeMap<String, BTreeMap<String, bool>> = serde_json::from_str(&table).unwrap();
    let targets = |statuses: &[JobStatus]| -> Vec<String> {
        let mut names: Vec<String> = statuses.iter().map(|s| s.to_string()).collect();
        names.sort();
        names
    };
    let mut mirrored = BTreeMap::new();
    mirrored.insert(String::new(), targets(&JobStatus::INITIAL));
    for status in JobStatus::ALL {
        mirrored.insert(status.to_string(), targets(status.successors()));
    }
    let stored: BTreeMap<String, Vec<String>> = table
        .into_iter()
        .map(|(from, to)| (from, to.into_keys().collect()))
        .collect();
    assert_eq!(
        stored, mirrored,
        "prelude.lua TRANSITIONS vs JobStatus::successors"
    );

    // A pair outside the table is refused with an error, before any write.
    let job = enqueue(&store, JobId::new(), &spec("echo", 0, 1), Duration::ZERO).await;
    let refused = eval_with_prelude(
        &store,
        &format!(
            "set_status('{0}', job_key('{0}'), 'queued', 'running')",
            job.id
        ),
    )
    .await
    .expect_err("queued -> running is not an edge");
    assert!(
        refused
            .to_string()
            .contains("is not in the job state machine"),
        "{refused}"
    );
    let job = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
}

#[tokio::test]
async fn activity_samples_queue_depth_machines_in_flight_and_queue_wait() {
    use fred::interfaces::HashesInterface as _;
    let (_server, store) = store().await;
    let before = store.activity(60).await.unwrap();
    assert_eq!(before.load.len(), 60);
    assert!(before.load.iter().all(|m| m.queue_depth.is_none()));
    let job_key = |id: JobId| format!("{{{}}}:job:{id}", store.namespace());

    // Three queued jobs; the first has waited about 4 s, the second was
    // queued before `queued_at` existed (it counts no wait).
    let ids: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for &id in &ids {
        enqueue(&store, id, &spec("echo", 0, 1), Duration::ZERO).await;
    }
    let waited_since = chrono::Utc::now().timestamp_millis() - 4_000;
    let raw = store.raw_client();
    let _: () = raw
        .hset(job_key(ids[0]), ("queued_at", waited_since))
        .await
        .unwrap();
    let _: () = raw.hdel(job_key(ids[1]), "queued_at").await.unwrap();

    // Cap 1: the first claim samples 3 queued and none in flight, the
    // next (full) one 2 queued and 1 in flight.
    let (first, _) = match claim(&store, 1).await {
        Claim::Claimed { job, attempt } => (*job, attempt),
        other => panic!("{other:?}"),
    };
    assert_eq!(first.id, ids[0]);
    assert!(matches!(claim(&store, 1).await, Claim::Full));
    let (second, _) = claimed(&store).await;
    assert_eq!(second.id, ids[1]);

    let after = store.activity(60).await.unwrap();
    let peak =
        |sample: fn(&jobs::MinuteLoad) -> Option<u64>| after.load.iter().filter_map(sample).max();
    assert_eq!(peak(|m| m.queue_depth), Some(3));
    assert_eq!(peak(|m| m.in_flight), Some(1));
    let waits = after.total_queue_wait();
    assert_eq!(waits.len(), after.wait_bounds_ms.len() + 1);
    assert_eq!(waits.iter().sum::<u64>(), 1, "{waits:?}");
    let p50 = after.wait_quantile_ms(&waits, 0.5).unwrap();
    assert!((2_500.0..=5_000.0).contains(&p50), "{p50} from {waits:?}");
}
