//! Part 1, intake: `POST /jobs` requests/s and latency at several
//! connection counts, with launching off (`--max-machines 0`) so only the
//! request path is measured.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::api;
use crate::latency::Latencies;
use crate::system::{Binaries, System, SystemOptions};

pub struct SubmitSizes {
    pub connections: Vec<usize>,
    /// Each level runs this long, or until `max_requests` were sent.
    pub duration: Duration,
    pub max_requests: u64,
    /// Durability mode: a replica next to the store and the dispatcher
    /// answering only once a job reached it (`--submit-replicas 1`).
    pub durable: bool,
}

pub struct SubmitResult {
    pub connections: usize,
    pub durable: bool,
    pub requests: u64,
    pub per_second: f64,
    pub latencies: Latencies,
}

pub async fn run(binaries: &Binaries, sizes: &SubmitSizes) -> anyhow::Result<Vec<SubmitResult>> {
    let system = System::start(
        binaries,
        SystemOptions {
            durable: sizes.durable,
            ..SystemOptions::intake_only()
        },
    )
    .await?;
    let mut results = Vec::new();
    let mut stored = 0;
    for &connections in &sizes.connections {
        let result = level(&system.base, connections, sizes).await?;
        stored += result.requests;
        results.push(result);
    }
    let queued = system.jobs_in(jobs::JobStatus::Queued).await?;
    system.stop().await;
    anyhow::ensure!(
        queued == stored,
        "{stored} submits were accepted but {queued} jobs are queued"
    );
    Ok(results)
}

/// `connections` clients, each on its own connection, submitting back to
/// back until the time or the request budget runs out.
async fn level(
    base: &str,
    connections: usize,
    sizes: &SubmitSizes,
) -> anyhow::Result<SubmitResult> {
    let plain = |_| json!({"kind": "echo", "params": {"bench": true}});
    let mut result =
        submit_at(base, connections, sizes.duration, sizes.max_requests, plain).await?;
    result.durable = sizes.durable;
    Ok(result)
}

/// `connections` clients submitting `job(n)` (n counts each client's
/// submits) back to back for `duration` or `max_requests` in all. The flow
/// part submits with concurrency keys through it too.
pub async fn submit_at(
    base: &str,
    connections: usize,
    duration: Duration,
    max_requests: u64,
    job: fn(u64) -> serde_json::Value,
) -> anyhow::Result<SubmitResult> {
    let per_connection = max_requests.div_ceil(connections as u64);
    let started = Instant::now();
    let deadline = started + duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let base = base.to_string();
        clients.spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut latencies = Latencies::default();
            while latencies.count() < per_connection && Instant::now() < deadline {
                let body = job(latencies.count());
                let sent = Instant::now();
                api::submit(&http, &base, &body).await?;
                latencies.record(sent.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Latencies::default();
    while let Some(done) = clients.join_next().await {
        latencies.add(&done??);
    }
    let elapsed = started.elapsed();
    Ok(SubmitResult {
        connections,
        durable: false,
        requests: latencies.count(),
        per_second: latencies.count() as f64 / elapsed.as_secs_f64(),
        latencies,
    })
}
