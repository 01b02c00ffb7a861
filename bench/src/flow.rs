//! Part 6, flow control (docs/flow-control.md): what concurrency keys
//! cost.
//!
//! - Submit: `POST /jobs` with and without a `concurrency_key` (10,000
//!   keys), alternating rounds on one system, launching off.
//! - Claim: with `keys` × `per_key` queued jobs, each claim's round trip
//!   (the claim script: the ring's head key, its head job), the slot
//!   released after each so the fleet never fills; and the same number of
//!   jobs without keys for comparison.

use std::time::Duration;

use futures::StreamExt as _;
use jobs::{Claim, EnqueueOptions, FlowKey, FlowOptions, JobId, JobSpec, Kind};
use serde_json::json;
use tokio::time::Instant;

use crate::latency::Latencies;
use crate::submit::submit_at;
use crate::system::{Binaries, System, SystemOptions};

pub struct FlowSizes {
    pub keys: u64,
    pub per_key: u64,
    pub claims: u64,
    /// Submit rounds per variant, each this long.
    pub rounds: usize,
    pub round: Duration,
    pub connections: usize,
}

pub struct FlowResult {
    pub sizes_keys: u64,
    pub sizes_per_key: u64,
    pub submit_plain: f64,
    pub submit_keyed: f64,
    pub claim_keyed: Latencies,
    pub claim_plain: Latencies,
}

/// Keys a keyed submit spreads over.
const SUBMIT_KEYS: u64 = 10_000;

pub async fn run(binaries: &Binaries, sizes: &FlowSizes) -> anyhow::Result<FlowResult> {
    let (submit_plain, submit_keyed) = submits(binaries, sizes).await?;
    let claim_keyed = claims(binaries, sizes, true).await?;
    let claim_plain = claims(binaries, sizes, false).await?;
    Ok(FlowResult {
        sizes_keys: sizes.keys,
        sizes_per_key: sizes.per_key,
        submit_plain,
        submit_keyed,
        claim_keyed,
        claim_plain,
    })
}

/// Submits/s without and with keys: rounds alternate, so the store's
/// growth weighs on both alike.
async fn submits(binaries: &Binaries, sizes: &FlowSizes) -> anyhow::Result<(f64, f64)> {
    let system = System::start(binaries, SystemOptions::intake_only()).await?;
    let plain = |_| json!({"kind": "echo", "params": {"bench": true}});
    let keyed = |n: u64| {
        json!({"kind": "echo", "params": {"bench": true},
            "concurrency_key": format!("tenant-{}", n % SUBMIT_KEYS)})
    };
    let (mut plain_rate, mut keyed_rate) = (0.0, 0.0);
    for _ in 0..sizes.rounds {
        for (job, rate) in [
            (plain as fn(u64) -> serde_json::Value, &mut plain_rate),
            (keyed, &mut keyed_rate),
        ] {
            let result =
                submit_at(&system.base, sizes.connections, sizes.round, u64::MAX, job).await?;
            *rate += result.per_second / sizes.rounds as f64;
        }
    }
    system.stop().await;
    Ok((plain_rate, keyed_rate))
}

/// Claim round trips with `keys × per_key` jobs queued, over keys or
/// (`keyed` false) all without one.
async fn claims(binaries: &Binaries, sizes: &FlowSizes, keyed: bool) -> anyhow::Result<Latencies> {
    let system = System::start(binaries, SystemOptions::intake_only()).await?;
    let store = &system.store;
    let spec = JobSpec {
        kind: Kind::parse("echo")?,
        params: json!({}),
        priority: 0,
        max_attempts: 1,
        timeout_secs: 60,
        backoff: jobs::Backoff::default(),
        machine: jobs::MachineSpec::default(),
    };
    let total = sizes.keys * sizes.per_key;
    let mut enqueued = futures::stream::iter(0..total)
        .map(|n| {
            let concurrency_key = keyed
                .then(|| FlowKey::parse(&format!("tenant-{}", n % sizes.keys)))
                .transpose();
            let spec = &spec;
            async move {
                let options = EnqueueOptions {
                    flow: FlowOptions {
                        concurrency_key: concurrency_key?,
                        ..FlowOptions::default()
                    },
                    ..EnqueueOptions::default()
                };
                anyhow::Ok(store.enqueue(JobId::new(), spec, &options).await?)
            }
        })
        .buffer_unordered(64);
    while let Some(done) = enqueued.next().await {
        done?;
    }
    drop(enqueued);
    let mut latencies = Latencies::default();
    let lease = Duration::from_secs(60);
    for _ in 0..sizes.claims {
        let sent = Instant::now();
        let claim = store.claim(u32::MAX, "{}", "bench", lease).await?;
        latencies.record(sent.elapsed());
        let Claim::Claimed { attempt, .. } = claim else {
            anyhow::bail!("a claim found nothing with {total} jobs queued: {claim:?}");
        };
        store.release(&attempt).await?;
    }
    system.stop().await;
    Ok(latencies)
}

/// The part's lines, printed under the main table.
pub fn render(r: &FlowResult) -> String {
    let ratio = r.submit_keyed / r.submit_plain;
    format!(
        "flow control ({} keys x {} queued jobs)\n\
         | claim with keys | {} | p99 < 5 ms |\n\
         | claim without keys (same number of jobs) | {} |  |\n\
         | submit without keys | {:.0} req/s |  |\n\
         | submit with keys ({SUBMIT_KEYS} keys) | {:.0} req/s ({:+.1}%) | within 10% |\n",
        r.sizes_keys,
        r.sizes_per_key,
        r.claim_keyed.p50_p99(),
        r.claim_plain.p50_p99(),
        r.submit_plain,
        r.submit_keyed,
        (ratio - 1.0) * 100.0,
    )
}
