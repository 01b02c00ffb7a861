//! Part 5, under the mock's **default** limits and latencies (Fly's rate
//! limits, creates of 1-3 s, starts of 100-400 ms; nothing turned off),
//! with the dispatcher pacing its calls as it does by default:
//!
//! - cold: `echo` jobs at once with no pool: jobs/s, and create POSTs per
//!   machine created (429s make a create cost several POSTs);
//! - warm: the same with `--warm-pool N --max-machines N` once the pool is
//!   full: jobs/s, and the share of all Machines API calls of that system
//!   (filling the pool included) answered 429;
//! - one warm job at a time: submit → succeeded p50/p99.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use tokio::time::Instant;

use crate::api;
use crate::latency::Latencies;
use crate::system::{Binaries, BootWith, System, SystemOptions};

const CREATE_ROUTE: &str = "POST /v1/apps/{app}/machines";

pub struct WarmPoolSizes {
    pub cold_jobs: u64,
    pub cold_max_machines: u32,
    /// The pool's size and the machine cap of the warm runs.
    pub pool: u32,
    pub warm_jobs: u64,
    pub sequential_jobs: u64,
    pub limit: Duration,
}

pub struct WarmPoolResult {
    pub cold_jobs: u64,
    pub cold_per_second: f64,
    pub creates_per_machine: f64,
    pub pool: u32,
    pub warm_jobs: u64,
    pub warm_per_second: f64,
    /// Share of the warm system's API calls answered 429.
    pub rate_limited_share: f64,
    pub sequential: Latencies,
}

pub async fn run(binaries: &Binaries, sizes: &WarmPoolSizes) -> anyhow::Result<WarmPoolResult> {
    let cold = start(binaries, sizes.cold_max_machines, Vec::new()).await?;
    let measured = batch(&cold, sizes.cold_jobs, sizes.limit).await;
    let stats = cold.mock.stats();
    cold.stop().await;
    let cold_per_second = measured?;
    let creates = stats.calls.get(CREATE_ROUTE).copied().unwrap_or(0);
    let creates_per_machine = creates as f64 / stats.created.max(1) as f64;

    let pool = vec!["--warm-pool".to_string(), sizes.pool.to_string()];
    let warm = start(binaries, sizes.pool, pool).await?;
    let measured = async {
        wait_pool_full(&warm, sizes.pool, sizes.limit).await?;
        let per_second = batch(&warm, sizes.warm_jobs, sizes.limit).await?;
        let sequential = sequential(&warm, sizes.sequential_jobs).await?;
        anyhow::Ok((per_second, sequential))
    }
    .await;
    let stats = warm.mock.stats();
    warm.stop().await;
    let (warm_per_second, sequential) = measured?;
    let calls: u64 = stats.calls.values().sum();
    Ok(WarmPoolResult {
        cold_jobs: sizes.cold_jobs,
        cold_per_second,
        creates_per_machine,
        pool: sizes.pool,
        warm_jobs: sizes.warm_jobs,
        warm_per_second,
        rate_limited_share: stats.rate_limited as f64 / calls.max(1) as f64,
        sequential,
    })
}

async fn start(
    binaries: &Binaries,
    max_machines: u32,
    extra_args: Vec<String>,
) -> anyhow::Result<System> {
    System::start(
        binaries,
        SystemOptions {
            max_machines,
            boot: BootWith::Process,
            count_commands: false,
            faithful_mock: true,
            extra_args,
            durable: false,
            image_env: Vec::new(),
        },
    )
    .await
}

/// Waits until every machine of the (only) pool is ready.
async fn wait_pool_full(system: &System, size: u32, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let pools = system.store.pool_stats().await?;
        if pools.values().any(|p| p.ready >= u64::from(size)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pool did not fill in {limit:?}: {pools:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits `jobs` echo jobs at once; jobs/s from the first submit to the
/// last success.
async fn batch(system: &System, jobs: u64, limit: Duration) -> anyhow::Result<f64> {
    let before = system_succeeded(system).await?;
    let started = Instant::now();
    let http = reqwest::Client::new();
    let submits = (0..jobs).map(|n| {
        let (http, base) = (&http, &system.base);
        async move { api::submit(http, base, &json!({"kind": "echo", "params": {"n": n}})).await }
    });
    futures::future::try_join_all(submits).await?;
    api::wait_succeeded(system, before + jobs, limit).await?;
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

async fn system_succeeded(system: &System) -> anyhow::Result<u64> {
    system.jobs_in(jobs::JobStatus::Succeeded).await
}

/// One job at a time, long-polling each to its end.
async fn sequential(system: &System, jobs: u64) -> anyhow::Result<Latencies> {
    let http = reqwest::Client::new();
    let mut latencies = Latencies::default();
    for n in 0..jobs {
        let (job, took) = api::echo_to_end(&http, &system.base, n).await?;
        latencies.record(took);
        job["attempts"][0]["machine_id"]
            .as_str()
            .context("a job without a machine")?;
    }
    Ok(latencies)
}
