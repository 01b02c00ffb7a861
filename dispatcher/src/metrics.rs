//! Prometheus metrics, served at `GET /metrics`.
//!
//! Code records through the `metrics` facade (the [`machines`] client does
//! too, without knowing about Prometheus); `metrics-exporter-prometheus`
//! renders it all as Prometheus text. Two kinds of numbers:
//!
//! - **Gauges of the whole system** (jobs by status, queue depth per kind,
//!   machines in flight) are read from Valkey at scrape time, in one round
//!   trip ([`jobs::Store::stats`]), so every dispatcher reports the same
//!   truth however many there are.
//! - **Flow control's per-key gauges** ([`crate::flow_metrics`]): only the
//!   keys holding the most machines, so label cardinality stays bounded.
//! - **Counters and histograms of this process** (attempt outcomes, time in
//!   queue, attempt duration, retries, and the Machines API client's calls,
//!   retries and rate-limit waits): sum them across dispatchers in queries.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use jobs::{Outcome, Stats, Store, StoreError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const JOBS: &str = "dispatcher_jobs";
pub const QUEUE_DEPTH: &str = "dispatcher_queue_depth";
pub const MACHINES_IN_FLIGHT: &str = "dispatcher_machines_in_flight";
pub const ATTEMPTS: &str = "dispatcher_attempts_total";
pub const QUEUE_WAIT: &str = "dispatcher_queue_wait_seconds";
pub const ATTEMPT_DURATION: &str = "dispatcher_attempt_duration_seconds";
pub const RETRIES: &str = "dispatcher_retries_total";
pub const FENCE_REFUSALS: &str = "dispatcher_fence_refusals_total";
pub const LOG_BYTES: &str = "dispatcher_log_bytes_total";
pub const LOG_LINES_DROPPED: &str = "dispatcher_log_lines_dropped_total";
pub const LOGS_TRUNCATED: &str = "dispatcher_logs_truncated_total";
pub const MACHINE_START: &str = "dispatcher_machine_start_seconds";
pub const POOL_MACHINES: &str = "dispatcher_pool_machines";
pub const CAPACITY_ERRORS: &str = "dispatcher_capacity_errors_total";
pub const JOBS_FINISHED: &str = "dispatcher_jobs_finished_total";

/// Histogram buckets in seconds: machines boot in about a second, jobs
/// run for seconds to an hour.
const BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// How often the exporter compacts histogram samples between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide exporter: the `metrics` facade has one global
/// recorder, so every dispatcher in a process (tests run several) shares it.
struct Exporter {
    handle: PrometheusHandle,
    /// Setting the store gauges and rendering is one step, so two
    /// concurrent scrapes never mix their readings.
    scrape: Mutex<()>,
}

fn exporter() -> &'static Exporter {
    static EXPORTER: OnceLock<Exporter> = OnceLock::new();
    EXPORTER.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics shows only the store's gauges");
        }
        describe();
        machines::metrics::describe();
        let upkeep = handle.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        });
        Exporter {
            handle,
            scrape: Mutex::new(()),
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(JOBS, "Jobs in each status, across all dispatchers");
    describe_gauge!(QUEUE_DEPTH, "Jobs queued for a machine slot, per kind");
    describe_gauge!(MACHINES_IN_FLIGHT, "Attempts holding a machine slot");
    describe_counter!(ATTEMPTS, "Finished attempts, by outcome");
    describe_counter!(RETRIES, "Failed attempts that were given another try");
    describe_counter!(
        JOBS_FINISHED,
        "Jobs this dispatcher moved to a final state, by status"
    );
    describe_counter!(
        FENCE_REFUSALS,
        "Writes this dispatcher tried for attempts a peer had taken over, refused by the store, by operation"
    );
    describe_histogram!(
        MACHINE_START,
        Unit::Seconds,
        "Time from claim to a machine the API accepted: created (cold) or a pooled one started (warm)"
    );
    describe_counter!(
        CAPACITY_ERRORS,
        "Machine creates Fly refused for lack of capacity (not rate limits), by region"
    );
    describe_gauge!(
        POOL_MACHINES,
        "Warm pool machines per pool and state (ready, in_use, warming; total), across all dispatchers"
    );
    describe_histogram!(QUEUE_WAIT, Unit::Seconds, "Time from due to claimed");
    describe_counter!(
        LOG_BYTES,
        Unit::Bytes,
        "Log bytes the runners of finished attempts shipped to the store"
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines runners dropped because the store could not keep up"
    );
    describe_counter!(LOGS_TRUNCATED, "Attempt logs that reached their cap");
    describe_histogram!(
        ATTEMPT_DURATION,
        Unit::Seconds,
        "Time from claim to recorded end, machine boot included, by outcome"
    );
}

/// Installs the recorder; call once at startup so counts start at once.
pub fn install() {
    exporter();
}

/// The Prometheus text for a scrape: the store's gauges, then everything
/// this process recorded.
pub async fn render(store: &Store) -> Result<String, StoreError> {
    let stats = store.stats().await?;
    let pools = store.pool_stats().await?;
    let flow = store.flow_overview(crate::flow_metrics::TOP_KEYS).await?;
    let exporter = exporter();
    let _one_at_a_time = exporter.scrape.lock().unwrap_or_else(|e| e.into_inner());
    set_store_gauges(&stats);
    set_pool_gauges(&pools);
    let mut text = exporter.handle.render();
    text.push_str(&crate::flow_metrics::render(&flow));
    Ok(text)
}

fn set_store_gauges(stats: &Stats) {
    for (status, count) in &stats.by_status {
        metrics::gauge!(JOBS, "status" => status.as_str()).set(*count as f64);
    }
    for (kind, depth) in &stats.queued_by_kind {
        metrics::gauge!(QUEUE_DEPTH, "kind" => kind.clone()).set(*depth as f64);
    }
    metrics::gauge!(MACHINES_IN_FLIGHT).set(stats.in_flight as f64);
}

fn set_pool_gauges(pools: &std::collections::BTreeMap<String, jobs::PoolStats>) {
    for (pool, p) in pools {
        for (state, count) in [
            ("total", p.machines),
            ("ready", p.ready),
            ("in_use", p.in_use),
            ("warming", p.warming),
        ] {
            metrics::gauge!(POOL_MACHINES, "pool" => pool.clone(), "state" => state)
                .set(count as f64);
        }
    }
}

/// A create was refused for lack of capacity in `region`.
pub fn capacity_error(region: &str) {
    metrics::counter!(CAPACITY_ERRORS, "region" => region.to_string()).increment(1);
}

/// An attempt's machine was obtained `took` after its claim, cold
/// (created) or warm (a pooled one started).
pub fn machine_started(source: crate::engine::pool::source::MachineSource, took: Duration) {
    metrics::histogram!(MACHINE_START, "source" => source.as_str()).record(took.as_secs_f64());
}

/// A job left the queue for a machine after waiting `waited` since it
/// became due.
pub fn job_claimed(waited: Duration) {
    metrics::histogram!(QUEUE_WAIT).record(waited.as_secs_f64());
}

/// An attempt ended; `took` runs from its claim (machine boot included;
/// for a taken-over attempt, from the takeover) to its recorded end. `retrying` when the job will get another attempt.
pub fn attempt_finished(outcome: Outcome, took: Duration, retrying: bool) {
    let outcome = outcome.as_str();
    metrics::counter!(ATTEMPTS, "outcome" => outcome).increment(1);
    metrics::histogram!(ATTEMPT_DURATION, "outcome" => outcome).record(took.as_secs_f64());
    if retrying {
        metrics::counter!(RETRIES).increment(1);
    }
}

/// This dispatcher moved a job to a final `status` ([`crate::engine::terminal`]).
pub fn job_finished(status: jobs::JobStatus) {
    metrics::counter!(JOBS_FINISHED, "status" => status.as_str()).increment(1);
}

/// The store refused a write for an attempt this dispatcher no longer
/// owns (it was paused or cut off past its lease and a peer took over).
/// Not an error: fencing working as designed, and worth watching.
pub fn fence_refused(op: &'static str) {
    metrics::counter!(FENCE_REFUSALS, "op" => op).increment(1);
}

/// What a finished attempt's runner shipped to its log (counted once, by
/// the dispatcher that closed the attempt).
pub fn attempt_logged(log: &jobs::LogSummary) {
    metrics::counter!(LOG_BYTES).increment(log.bytes);
    metrics::counter!(LOG_LINES_DROPPED).increment(log.dropped);
    if log.truncated {
        metrics::counter!(LOGS_TRUNCATED).increment(1);
    }
}
