//! Parts 2 and 3, end to end with a real `runner` process per job:
//! `echo` jobs/s at a machine cap, the sequential submit-to-`succeeded`
//! latency (one job at a time, long-polling), and detection latency: from
//! the runner's exit, as the Machines API records it, to the terminal
//! status being published by the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;
use jobs::{EventKind, JobEvent};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::api;
use crate::latency::Latencies;
use crate::system::{Binaries, BootWith, System, SystemOptions};

/// Concurrent submitters while measuring throughput, so intake is never
/// what limits it.
const SUBMITTERS: usize = 16;

pub struct EndToEndSizes {
    /// `(max_machines, jobs)` pairs for the throughput runs.
    pub throughput: Vec<(u32, u64)>,
    pub sequential_jobs: u64,
    pub limit: Duration,
}

pub struct Throughput {
    pub max_machines: u32,
    pub jobs: u64,
    pub per_second: f64,
}

pub struct EndToEndResult {
    pub throughput: Vec<Throughput>,
    pub sequential: Latencies,
    pub detection: Latencies,
}

pub async fn run(binaries: &Binaries, sizes: &EndToEndSizes) -> anyhow::Result<EndToEndResult> {
    let mut throughput = Vec::new();
    for &(max_machines, jobs) in &sizes.throughput {
        let system = start(binaries, max_machines).await?;
        let measured = batch(&system, jobs, sizes.limit).await;
        system.stop().await;
        throughput.push(Throughput {
            max_machines,
            jobs,
            per_second: measured?,
        });
    }
    let system = start(binaries, 16).await?;
    let measured = sequential(&system, sizes.sequential_jobs).await;
    system.stop().await;
    let (sequential, detection) = measured?;
    Ok(EndToEndResult {
        throughput,
        sequential,
        detection,
    })
}

async fn start(binaries: &Binaries, max_machines: u32) -> anyhow::Result<System> {
    System::start(
        binaries,
        SystemOptions {
            max_machines,
            boot: BootWith::Process,
            count_commands: false,
            durable: false,
            image_env: Vec::new(),
            faithful_mock: false,
            extra_args: Vec::new(),
        },
    )
    .await
}

/// Submits `jobs` echo jobs at once and returns jobs/s from the first
/// submit to the last success.
async fn batch(system: &System, jobs: u64, limit: Duration) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut submitters = tokio::task::JoinSet::new();
    for submitter in 0..SUBMITTERS as u64 {
        let base = system.base.clone();
        let share = (submitter..jobs).step_by(SUBMITTERS).count();
        submitters.spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..share {
                api::submit(&http, &base, &json!({"kind": "echo", "params": {"n": n}})).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = submitters.join_next().await {
        done??;
    }
    api::wait_succeeded(system, jobs, limit).await?;
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

/// One job at a time: submit, long-poll until finished. Returns the
/// submit-to-succeeded latencies and the detection latencies.
async fn sequential(system: &System, jobs: u64) -> anyhow::Result<(Latencies, Latencies)> {
    let finished_at = watch_terminal_events(system).await?;
    let http = reqwest::Client::new();
    let mut latencies = Latencies::default();
    let mut views = Vec::new();
    for n in 0..jobs {
        let (job, took) = api::echo_to_end(&http, &system.base, n).await?;
        latencies.record(took);
        views.push(job);
    }
    let mut detection = Latencies::default();
    let finished_at = finished_at.lock().expect("events lock").clone();
    for job in &views {
        let id = job["id"].as_str().unwrap_or_default();
        let seen_ms = *finished_at
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("no terminal event seen for job {id}"))?;
        let exit_ms = exit_timestamp_ms(system, job).await?;
        detection.record_micros(((seen_ms - exit_ms as f64) * 1000.0).max(0.0) as u64);
    }
    Ok((latencies, detection))
}

/// Subscribes to the store's events and notes, per job, when (Unix ms)
/// its terminal status was published.
async fn watch_terminal_events(
    system: &System,
) -> anyhow::Result<Arc<Mutex<HashMap<String, f64>>>> {
    let subscriber = system.store.subscriber().await?;
    subscriber.subscribe(system.store.events_channel()).await?;
    let mut messages = subscriber.message_rx();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let _subscriber = subscriber;
        while let Ok(message) = messages.recv().await {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let Some(event) = message.value.as_str().and_then(|t| JobEvent::parse(&t)) else {
                continue;
            };
            if event.kind == EventKind::Status && event.status.is_some_and(|s| s.is_terminal()) {
                record
                    .lock()
                    .expect("events lock")
                    .insert(event.id.to_string(), now.as_secs_f64() * 1000.0);
            }
        }
    });
    Ok(seen)
}

/// When the job's machine recorded its main process's exit (Unix ms; the
/// API's resolution is a millisecond).
async fn exit_timestamp_ms(system: &System, job: &Value) -> anyhow::Result<i64> {
    let machine_id = job["attempts"][0]["machine_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("job without a machine: {job}"))?;
    let machine = system.machines.get(machine_id).await?;
    machine
        .events
        .iter()
        .filter_map(|e| e.exit_event().map(|(at, _)| at))
        .max()
        .ok_or_else(|| anyhow::anyhow!("machine {machine_id} has no exit event"))
}
