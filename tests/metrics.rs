//! `GET /metrics`: the store's gauges follow the queue as jobs run, and the
//! process's counters and histograms count attempts, retries, time in
//! queue and Machines API calls. One test in this file, so this process's
//! counters hold exactly what it did.

#[path = "system/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jobs::JobStatus;
use serde_json::json;
use support::{spawn_system_with, Options, TestSystem};

const WITHIN: Duration = Duration::from_secs(60);

/// One scrape: `name{labels}` → value, labels as the exporter prints them.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn take(system: &TestSystem) -> (Self, String) {
        let response = system
            .http
            .get(system.url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = response.text().await.unwrap();
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("name value");
                (series.to_string(), value.parse().expect("a number"))
            })
            .collect();
        (Self(samples), text)
    }

    /// The sample's value; 0 when absent (a counter not yet incremented).
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_jobs_as_they_run() {
    let system = spawn_system_with(Options {
        max_machines: 1,
        ..Options::default()
    })
    .await;

    // One slot: a sleeping job holds it, an echo job waits in the queue.
    let sleeper = system
        .submit(json!({"kind": "sleep", "params": {"ms": 60_000}, "max_attempts": 1}))
        .await;
    let sleeper = sleeper.id;
    system.wait_for(&sleeper, JobStatus::Running, WITHIN).await;
    let echo = system.submit(json!({"kind": "echo"})).await.id;

    let (busy, _) = Scrape::take(&system).await;
    assert_eq!(busy.get(r#"dispatcher_jobs{status="running"}"#), 1.0);
    assert_eq!(busy.get(r#"dispatcher_jobs{status="queued"}"#), 1.0);
    assert_eq!(busy.get(r#"dispatcher_queue_depth{kind="echo"}"#), 1.0);
    assert_eq!(busy.get(r#"dispatcher_queue_depth{kind="sleep"}"#), 0.0);
    assert_eq!(busy.get("dispatcher_machines_in_flight"), 1.0);

    // Cancel the sleeper; the echo job gets the slot. Then a flaky job
    // whose first create is rate limited and whose first attempt fails.
    let cancelled = system
        .http
        .post(system.url(&format!("/jobs/{sleeper}/cancel")))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    system.wait_for(&echo, JobStatus::Succeeded, WITHIN).await;
    system
        .set_faults(json!({"fail_next_creates": 1, "fail_status": 429}))
        .await;
    let flaky = system
        .submit(json!({
            "kind": "flaky", "params": {"succeed_on_attempt": 2},
            "backoff": {"base_ms": 50, "max_ms": 100}
        }))
        .await;
    let flaky = system
        .wait_for(&flaky.id, JobStatus::Succeeded, WITHIN)
        .await;

    // The slot is freed just after the job's end is recorded.
    let deadline = tokio::time::Instant::now() + WITHIN;
    let (done, text) = loop {
        let (scrape, text) = Scrape::take(&system).await;
        if scrape.get("dispatcher_machines_in_flight") == 0.0 {
            break (scrape, text);
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done.get(r#"dispatcher_jobs{status="succeeded"}"#), 2.0);
    assert_eq!(done.get(r#"dispatcher_jobs{status="cancelled"}"#), 1.0);
    assert_eq!(done.get(r#"dispatcher_jobs{status="queued"}"#), 0.0);
    assert_eq!(done.get(r#"dispatcher_queue_depth{kind="echo"}"#), 0.0);
    assert_eq!(
        done.get(r#"dispatcher_attempts_total{outcome="succeeded"}"#),
        2.0
    );
    assert_eq!(
        done.get(r#"dispatcher_attempts_total{outcome="error"}"#),
        1.0
    );
    assert_eq!(
        done.get(r#"dispatcher_attempts_total{outcome="cancelled"}"#),
        1.0
    );
    assert_eq!(done.get("dispatcher_retries_total"), 1.0);
    // Each final state counted once, by the one on_terminal path.
    assert_eq!(
        done.get(r#"dispatcher_jobs_finished_total{status="succeeded"}"#),
        2.0
    );
    assert_eq!(
        done.get(r#"dispatcher_jobs_finished_total{status="cancelled"}"#),
        1.0
    );
    // Four attempts left the queue: sleeper, echo, flaky twice.
    assert_eq!(done.get("dispatcher_queue_wait_seconds_count"), 4.0);
    assert_eq!(
        done.get(r#"dispatcher_queue_wait_seconds_bucket{le="+Inf"}"#),
        4.0
    );
    assert_eq!(
        done.get(r#"dispatcher_attempt_duration_seconds_count{outcome="succeeded"}"#),
        2.0
    );

    // Machines API calls by route template and status: four machines
    // created, one create answered 429 and retried.
    let creates = |status: &str| {
        done.get(&format!(
            r#"machines_api_requests_total{{method="POST",endpoint="/v1/apps/{{app}}/machines",status="{status}"}}"#
        ))
    };
    assert_eq!(creates("200"), 4.0, "{text}");
    assert_eq!(creates("429"), 1.0, "{text}");
    assert_eq!(
        done.get(r#"machines_api_retries_total{method="POST",endpoint="/v1/apps/{app}/machines",reason="rate_limited"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        done.get(r#"machines_api_retry_wait_seconds_count{method="POST",endpoint="/v1/apps/{app}/machines",reason="rate_limited"}"#),
        1.0,
        "{text}"
    );
    for line in [
        "# HELP dispatcher_jobs ",
        "# TYPE dispatcher_jobs gauge",
        "# TYPE dispatcher_queue_wait_seconds histogram",
        "# HELP machines_api_requests_total ",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // Labels carry templates, never machine ids.
    for attempt in &flaky.attempts {
        let machine = attempt.machine_id.as_deref().unwrap();
        assert!(!text.contains(machine), "machine id {machine} in a label");
    }
    system.stop().await;
}
