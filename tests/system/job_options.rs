//! Job options end to end: priority, delay and run_at, idempotency,
//! per-job machines, per-kind caps, long-poll, Server-Sent Events, signed
//! callbacks, cursor pagination and recurring schedules across dispatchers.

use std::time::Duration;

use crate::support::{spawn_system, spawn_system_with, Options, TestSystem};
use chrono::{DateTime, Utc};
use dispatcher::cli::client::JobPage;
use jobs::{Job, JobStatus};
use serde_json::{json, Value};
use tokio::time::Instant;

const WITHIN: Duration = Duration::from_secs(60);

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

fn claimed_at(job: &Job) -> DateTime<Utc> {
    job.attempts[0].claimed_at.expect("a timestamp")
}

async fn with_args(args: &[&str]) -> TestSystem {
    spawn_system_with(Options {
        max_machines: 4,
        extra_args: args.iter().map(|a| a.to_string()).collect(),
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_priority_numbers_run_first_under_a_cap_of_one() {
    let system = spawn_system_with(Options {
        max_machines: 1,
        ..Options::default()
    })
    .await;
    let blocker = system
        .submit(json!({"kind": "sleep", "params": {"ms": 800}}))
        .await;
    system
        .wait_for(&blocker.id, JobStatus::Running, WITHIN)
        .await;
    let mut submitted = Vec::new();
    for priority in [5, -5, 0, -5] {
        let job = system
            .submit(json!({"kind": "echo", "priority": priority, "params": {"p": priority}}))
            .await;
        submitted.push((priority, job.id));
    }
    let mut done = Vec::new();
    for (priority, job) in &submitted {
        done.push((
            *priority,
            claimed_at(&system.wait_for(job, JobStatus::Succeeded, WITHIN).await),
            *job,
        ));
    }
    done.sort_by_key(|(_, at, _)| *at);
    let order: Vec<i32> = done.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(order, [-5, -5, 0, 5]);
    assert_eq!(done[0].2, submitted[1].1, "FIFO within a priority");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_jobs_wait_in_scheduled_until_due() {
    let system = spawn_system().await;
    let run_at = (Utc::now() + chrono::Duration::milliseconds(2500)).to_rfc3339();
    let late = system
        .submit(json!({"kind": "echo", "run_at": run_at}))
        .await;
    let soon = system
        .submit(json!({"kind": "echo", "delay_secs": 1}))
        .await;
    for job in [&late, &soon] {
        assert_eq!(job.status, JobStatus::Scheduled);
        assert!(job.run_at.is_some());
    }
    let soon = system
        .wait_for(&soon.id, JobStatus::Succeeded, WITHIN)
        .await;
    let late = system
        .wait_for(&late.id, JobStatus::Succeeded, WITHIN)
        .await;
    assert!(
        claimed_at(&soon) < claimed_at(&late),
        "order follows due times"
    );
    let soon_wait = claimed_at(&soon) - soon.created_at;
    assert!(
        soon_wait >= chrono::Duration::milliseconds(1000),
        "ran early: {soon_wait}"
    );
    assert!(
        soon_wait < chrono::Duration::milliseconds(1800),
        "ran late: {soon_wait}"
    );
    assert!(
        claimed_at(&late) >= run_at.parse::<DateTime<Utc>>().unwrap(),
        "not before run_at"
    );
    system.stop().await;
}

/// The answers' status codes (202 first, 200 for a repeat, 409 naming
/// the field for a conflict) are the contract here: raw HTTP and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_resubmission_returns_the_first_job() {
    let system = spawn_system().await;
    let body = json!({"kind": "echo", "params": {"order": 42}});
    let send = |key: &str, body: &Value| {
        system
            .http
            .post(system.url("/jobs"))
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let first = send("order-42", &body).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send("order-42", &body).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let other = send(
        "order-42",
        &json!({"kind": "echo", "params": {"order": 43}}),
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 409);
    assert_eq!(
        other.json::<Value>().await.unwrap()["field"],
        "idempotency_key"
    );
    // The field works like the header.
    let by_field = json!({"kind": "echo", "idempotency_key": "field-1"});
    let a: Value = system.submit_raw(by_field.clone()).await;
    let b = system
        .http
        .post(system.url("/jobs"))
        .json(&by_field)
        .send()
        .await
        .unwrap();
    assert_eq!(b.status(), 200);
    assert_eq!(b.json::<Value>().await.unwrap()["id"], a["id"]);
    system.wait_for_raw(&id(&first), "succeeded", WITHIN).await;
    assert_eq!(system.mock_stats().created, 2, "repeats created nothing");
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_job_machine_size_image_and_env_reach_the_machine() {
    let system = with_args(&["--allowed-images=local/runner:gpu"]).await;
    let job = system
        .submit(json!({
            "kind": "echo",
            "machine": {"cpus": 2, "memory_mb": 1024, "image": "local/runner:gpu", "env": {"MODEL": "small"}}
        }))
        .await;
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    let machine = &system.machines(true).await[0];
    let guest = machine.config.guest.as_ref().unwrap();
    assert_eq!(
        (guest.cpus, guest.memory_mb, guest.cpu_kind.as_str()),
        (2, 1024, "shared")
    );
    assert_eq!(machine.config.image, "local/runner:gpu");
    // Job variables reach job code through the runner, never the
    // machine's own environment (where they could configure the runner).
    assert!(!machine.config.env.contains_key("MODEL"));
    assert_eq!(machine.config.env["JOB_ID"], job.id.to_string());

    // A refusal names the field: the error body is the contract.
    let refused = system
        .http
        .post(system.url("/jobs"))
        .json(&json!({"kind": "echo", "machine": {"image": "someone/else"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["field"],
        "machine.image"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_caps_limit_one_kind_only() {
    let system = with_args(&["--kind-caps=sleep=1"]).await;
    let mut sleepers = Vec::new();
    for _ in 0..3 {
        sleepers.push(
            system
                .submit(json!({"kind": "sleep", "params": {"ms": 400}}))
                .await,
        );
    }
    let echo = system.submit(json!({"kind": "echo"})).await;
    let echo = system
        .wait_for(&echo.id, JobStatus::Succeeded, WITHIN)
        .await;
    let mut spans = Vec::new();
    for job in &sleepers {
        let job = system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
        spans.push((claimed_at(&job), job.attempts[0].finished_at.unwrap()));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two sleep jobs overlapped: {pair:?}"
        );
    }
    assert!(
        claimed_at(&echo) < spans[2].0,
        "echo did not wait behind the capped kind"
    );
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_when_the_job_finishes() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "sleep", "params": {"ms": 700}}))
        .await;
    let started = Instant::now();
    let polled: Job = system.get_typed(&format!("/jobs/{}?wait=30", job.id)).await;
    assert_eq!(polled.status, JobStatus::Succeeded);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    // Without a change, the wait runs out and returns the job as it is.
    let waiting = system
        .submit(json!({"kind": "echo", "delay_secs": 3600}))
        .await;
    let started = Instant::now();
    let polled: Job = system
        .get_typed(&format!("/jobs/{}?wait=1", waiting.id))
        .await;
    assert_eq!(polled.status, JobStatus::Scheduled);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let too_long = system
        .http
        .get(system.url(&format!("/jobs/{}?wait=61", waiting.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_follow_the_job_to_its_end() {
    let system = spawn_system().await;
    let job = system
        .submit(json!({"kind": "sleep", "params": {"ms": 500}}))
        .await;
    // The stream's framing (content type, event names) is the contract:
    // read as text, each event's job decoded.
    let mut response = system
        .http
        .get(system.url(&format!("/jobs/{}/events", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("the stream ends after `done`");
    let events: Vec<(String, Job)> = text
        .split("\n\n")
        .filter_map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_string(), serde_json::from_str(data).unwrap()))
        })
        .collect();
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "done");
    assert_eq!(last.status, JobStatus::Succeeded);
    assert_eq!(last.result, Some(json!({"slept_ms": 500})));
    let statuses: Vec<JobStatus> = events.iter().map(|(_, job)| job.status).collect();
    assert!(statuses.contains(&JobStatus::Running), "{statuses:?}");
    assert!(events
        .iter()
        .take(events.len() - 1)
        .all(|(name, _)| name == "status" || name == "progress"));
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_posted_once_with_a_valid_signature() {
    let target = crate::support::listener().await;
    let (hook, received) = (target.url.clone(), target.calls.clone());

    let system = with_args(&[
        "--callback-secret=s3cret",
        "--callback-allow-hosts=127.0.0.1",
    ])
    .await;
    let job = system
        .submit(json!({"kind": "echo", "params": {"n": 1}, "callback_url": hook}))
        .await;
    system.wait_for(&job.id, JobStatus::Succeeded, WITHIN).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no callback arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wall time is the point: a second (duplicate) delivery would follow
    // within moments of the first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = received.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "exactly one callback");
    let (headers, body) = &calls[0];
    let view: Job = serde_json::from_slice(body).unwrap();
    assert_eq!(view.id, job.id);
    assert_eq!(view.status, JobStatus::Succeeded);
    assert_eq!(view.result, Some(json!({"n": 1})));
    let expected = dispatcher::engine::callbacks::sign("s3cret", body);
    assert_eq!(
        headers[dispatcher::engine::callbacks::SIGNATURE_HEADER],
        expected.as_str()
    );
    assert_ne!(dispatcher::engine::callbacks::sign("wrong", body), expected);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_filters_by_kind_and_pages_with_a_cursor() {
    let system = spawn_system().await;
    for i in 0..5 {
        system
            .submit(json!({"kind": "echo", "delay_secs": 3600, "params": {"i": i}}))
            .await;
        system
            .submit(json!({"kind": "sleep", "delay_secs": 3600, "params": {"ms": i}}))
            .await;
    }
    let mut seen = Vec::new();
    // `full=true`: listings leave `params` out otherwise.
    let mut path = "/jobs?kind=echo&status=scheduled&limit=2&full=true".to_string();
    loop {
        let page: JobPage = system.get_typed(&path).await;
        for job in &page.jobs {
            assert_eq!(job.kind.as_str(), "echo");
            seen.push(job.params["i"].as_i64().unwrap());
        }
        match page.next_cursor.as_deref() {
            Some(cursor) => {
                path = format!("/jobs?kind=echo&status=scheduled&limit=2&full=true&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, [4, 3, 2, 1, 0]);
    let bad = system
        .http
        .get(system.url("/jobs?cursor=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    system.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_tick_across_three_dispatchers() {
    let system = spawn_system().await;
    let peers = [system.spawn_peer().await, system.spawn_peer().await];
    let created = system
        .http
        .post(system.url("/schedules"))
        .json(&json!({"name": "heartbeat", "every_secs": 1, "job": {"kind": "echo", "params": {"from": "schedule"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let schedule: Value = created.json().await.unwrap();
    let schedule_id = schedule["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed: JobPage = system.get_typed("/jobs?kind=echo&limit=100").await;
        if listed.jobs.len() >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "fewer than 4 ticks in 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deleted = system
        .http
        .delete(system.url(&format!("/schedules/{schedule_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);

    let listed: JobPage = system.get_typed("/jobs?kind=echo&limit=100").await;
    let mut ticks: Vec<i64> = listed
        .jobs
        .iter()
        .map(|job| {
            let key = job.idempotency_key.as_deref().unwrap();
            let (prefix, tick) = key.rsplit_once(':').unwrap();
            assert_eq!(prefix, format!("schedule:{schedule_id}"));
            tick.parse().unwrap()
        })
        .collect();
    ticks.sort();
    assert!(
        ticks.len() >= 4,
        "{} jobs of a 1 s schedule: {ticks:?}",
        ticks.len()
    );
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            1000,
            "one job per tick, none twice: {ticks:?}"
        );
    }
    let gone = system
        .http
        .get(system.url(&format!("/schedules/{schedule_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let bad = system
        .http
        .post(system.url("/schedules"))
        .json(&json!({"cron": "every tuesday", "job": {"kind": "echo"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "cron");
    let bad_job = system
        .http
        .post(system.url("/schedules"))
        .json(&json!({"every_secs": 60, "job": {"kind": "echo", "priority": 9999}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bad_job.json::<Value>().await.unwrap()["field"],
        "job.priority"
    );
    for peer in peers {
        peer.trigger();
    }
    system.stop().await;
}
