//! Part 1b, batch intake: `POST /batches` with launching off
//! (`--max-machines 0`): how long one batch of the largest size takes to
//! be accepted (stored in one script), and the jobs/s accepted when
//! batches are sent back to back, to set beside part 1's single-job rate.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::latency::Latencies;
use crate::system::{Binaries, System, SystemOptions};

pub struct BatchSizes {
    /// Jobs per batch (the dispatcher's `--max-batch-jobs` default: 10,000).
    pub jobs: usize,
    /// Batches sent back to back for the rate.
    pub batches: usize,
}

pub struct BatchResult {
    pub jobs: usize,
    /// The first batch's request, sent to an empty store.
    pub first: Duration,
    pub batches: usize,
    pub jobs_per_second: f64,
    pub latencies: Latencies,
}

pub async fn run(binaries: &Binaries, sizes: &BatchSizes) -> anyhow::Result<BatchResult> {
    let system = System::start(binaries, SystemOptions::intake_only()).await?;
    let http = reqwest::Client::new();
    let body = json!({
        "jobs": (0..sizes.jobs)
            .map(|n| json!({"kind": "echo", "params": {"n": n}}))
            .collect::<Vec<_>>(),
    });
    let mut latencies = Latencies::default();
    let mut first = None;
    let started = Instant::now();
    for _ in 0..sizes.batches.max(1) {
        let sent = Instant::now();
        submit(&http, &system.base, &body, sizes.jobs).await?;
        first.get_or_insert(sent.elapsed());
        latencies.record(sent.elapsed());
    }
    let elapsed = started.elapsed();
    let first = first.context("no batch was sent")?;
    let queued = system.jobs_in(jobs::JobStatus::Queued).await?;
    system.stop().await;
    let expected = (sizes.jobs * sizes.batches.max(1)) as u64;
    anyhow::ensure!(
        queued == expected,
        "{expected} jobs were accepted in batches but {queued} are queued"
    );
    Ok(BatchResult {
        jobs: sizes.jobs,
        first,
        batches: sizes.batches.max(1),
        jobs_per_second: expected as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    body: &Value,
    jobs: usize,
) -> anyhow::Result<()> {
    let answer = http
        .post(format!("{base}/batches"))
        .json(body)
        .send()
        .await?;
    let status = answer.status();
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("POST /batches answered {status}: {}", answer.text().await?);
    }
    let answer: Value = answer.json().await?;
    let ids = answer["job_ids"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        ids == jobs,
        "POST /batches answered {ids} ids for {jobs} jobs"
    );
    Ok(())
}
