//! The chaos run: three dispatchers under a mixed workload while one at a
//! time is frozen past its lease or killed, then every invariant checked
//! from the store, the mock and the runners' traces. Two independent runs
//! of 20 s each (their own cluster and seed) rather than one of 40 s: the
//! same fault time, in half the wall time, since they mostly wait. Their
//! own module so they start first: they are the longest tests, and the
//! harness starts tests in name order.

use std::collections::HashMap;
use std::time::Duration;

use crate::scale_out::{handler_runs, kill_9, signal, Cluster};
use fred::prelude::*;
use jobs::JobStatus;
use serde_json::{json, Value};
use tokio::time::Instant;

/// A small deterministic generator (xorshift), so a failing chaos run can
/// be replayed from the seed it prints.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// A bounded chaos run: three dispatchers take a mixed workload (short
/// and long sleeps, failures that retry, cancels) while one at a time is
/// frozen past its lease or killed and restarted. Afterwards the store,
/// the mock and the runners' traces must agree: every job final exactly
/// once and in the status its kind implies, no handler run twice for an
/// attempt, never two machines of one attempt alive at once, no spurious
/// retry, and no machine left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pausing_and_killing_dispatchers_breaks_no_invariant_run_1() {
    chaos_run(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pausing_and_killing_dispatchers_breaks_no_invariant_run_2() {
    chaos_run(2).await;
}

/// One run of 20 s; `run` tells the two runs' seeds apart.
async fn chaos_run(run: u64) {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()) ^ (run << 32));
    eprintln!("chaos seed {seed} (CHAOS_SEED={seed} replays it)");
    let mut dice = Dice(seed.max(1));
    let cluster = Cluster::start().await;
    let args = ["--max-machines", "6"];
    let mut dispatchers = vec![
        cluster.dispatcher("c0", &args).await,
        cluster.dispatcher("c1", &args).await,
        cluster.dispatcher("c2", &args).await,
    ];
    let traces = cluster.dir.path.join("traces");
    std::fs::create_dir_all(&traces).unwrap();
    let finals = FinalStatuses::record(&cluster.store.url()).await;

    // kind of each job: sleeps must succeed, fails must fail, cancelled
    // ones must end cancelled (or succeeded, when the cancel came late).
    let mut expected: HashMap<String, &str> = HashMap::new();
    let mut cancels = Vec::new();
    let chaos_until = Instant::now() + Duration::from_secs(20);
    let mut round = 0u64;
    while Instant::now() < chaos_until {
        round += 1;
        let alive: Vec<usize> = (0..dispatchers.len()).collect();
        let via = &dispatchers[alive[dice.roll(3) as usize]];
        for _ in 0..4 {
            let (body, kind) = match dice.roll(10) {
                0..=5 => (
                    json!({"kind": "sleep", "max_attempts": 1,
                    "params": {"ms": 200 + dice.roll(2500), "trace_dir": traces}}),
                    "sleep",
                ),
                6 | 7 => (
                    json!({"kind": "fail", "max_attempts": 2,
                    "backoff": {"base_ms": 200, "max_ms": 500}}),
                    "fail",
                ),
                _ => (
                    json!({"kind": "sleep", "max_attempts": 3,
                    "params": {"ms": 20000, "trace_dir": traces}}),
                    "cancel",
                ),
            };
            let id = cluster.submit(via, body).await;
            if kind == "cancel" {
                cancels.push(id.clone());
            }
            expected.insert(id, kind);
        }
        // One fault per round, on a random dispatcher; the others serve.
        let victim = dice.roll(3) as usize;
        match dice.roll(3) {
            0 => {
                // Frozen past its lease (3 s), then woken.
                signal(&dispatchers[victim], libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(3500 + dice.roll(2000))).await;
                signal(&dispatchers[victim], libc::SIGCONT);
            }
            1 => {
                kill_9(&dispatchers[victim]);
                let _ = dispatchers[victim].child.wait().await;
                let name = format!("c{victim}-{round}");
                dispatchers[victim] = cluster.dispatcher(&name, &args).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(500 + dice.roll(1500))).await,
        }
        // Cancel the long sleeps submitted so far, through any dispatcher.
        for id in cancels.drain(..) {
            let via = &dispatchers[dice.roll(3) as usize];
            let _ = cluster
                .http
                .post(format!("{}/jobs/{id}/cancel", via.base))
                .send()
                .await;
        }
    }

    let ids: Vec<String> = expected.keys().cloned().collect();
    let jobs = cluster
        .wait_all(&dispatchers[0], &ids, Duration::from_secs(240))
        .await;
    for (id, job) in &jobs {
        use JobStatus::{Cancelled, Failed, Succeeded};
        let (status, attempts) = (job.status, job.attempts.len());
        match expected[id] {
            "sleep" => assert!(status == Succeeded && attempts == 1, "{job:#?}"),
            "fail" => assert!(status == Failed && attempts == 2, "{job:#?}"),
            _ => assert!(
                status == Cancelled || status == Succeeded,
                "a cancelled job never fails: {job:#?}"
            ),
        }
    }
    let finals = finals.counts().await;
    for id in &ids {
        assert_eq!(
            finals.get(id),
            Some(&1),
            "{id} reached a final status exactly once: {finals:?}"
        );
    }
    let runs = handler_runs(&traces, true);
    assert!(
        runs.values().all(|&n| n == 1),
        "a handler ran twice for one attempt: {runs:?}"
    );
    // No attempt ever had two machines alive at once. A later one can
    // exist only when a dispatcher froze between confirming its create and
    // sending it, and woke after the new owner's machine was gone: Fly has
    // no conditional create, so that window cannot be closed from here.
    // Its runner finds the attempt taken and never runs the handler (the
    // traces above), and the frozen dispatcher leaves it at once.
    let lives = cluster.machine_lives().await;
    for (name, mut spans) in lives.clone() {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{name} had two machines alive at once: {spans:?}"
            );
        }
    }
    let strays = lives.values().filter(|spans| spans.len() > 1).count();
    cluster.assert_no_live_machines().await;
    let mut refusals = 0.0;
    for d in &dispatchers {
        refusals += d
            .counter(&cluster.http, "dispatcher_fence_refusals_total")
            .await;
    }
    eprintln!(
        "{} jobs; stale writes refused by the survivors: {refusals}; attempts with a late second machine: {strays}",
        ids.len()
    );
}

/// Counts, per job, the final statuses the store announces (a job must
/// reach one exactly once, whichever dispatcher moves it).
struct FinalStatuses {
    counts: std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
    _subscriber: fred::clients::SubscriberClient,
}

impl FinalStatuses {
    async fn record(url: &str) -> Self {
        let subscriber = Builder::from_config(Config::from_url(url).unwrap())
            .build_subscriber_client()
            .unwrap();
        subscriber.init().await.unwrap();
        subscriber.subscribe("{jobs}:events").await.unwrap();
        let counts = std::sync::Arc::<std::sync::Mutex<HashMap<String, usize>>>::default();
        let mut messages = subscriber.message_rx();
        let sink = counts.clone();
        tokio::spawn(async move {
            while let Ok(message) = messages.recv().await {
                let Some(text) = message.value.as_str() else {
                    continue;
                };
                let event: Value = serde_json::from_str(&text).unwrap_or_default();
                let final_status = ["succeeded", "failed", "cancelled"]
                    .contains(&event["status"].as_str().unwrap_or_default());
                if event["type"] == "status" && final_status {
                    *sink
                        .lock()
                        .unwrap()
                        .entry(event["id"].as_str().unwrap().to_string())
                        .or_default() += 1;
                }
            }
        });
        Self {
            counts,
            _subscriber: subscriber,
        }
    }

    async fn counts(&self) -> HashMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}
