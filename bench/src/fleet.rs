//! Part 4, supervision at scale: many concurrent `sleep` jobs on the
//! mock's virtual machines. Each virtual machine runs the real runner
//! in-process ([`runner::Runner::run_in_process`]): it claims its attempt,
//! heartbeats and reports through the job store, so the dispatcher's
//! supervision path is exactly the one real machines get.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use jobs::{JobStatus, Store};
use mock_machines::{Boot, VirtualMachineEnv};
use runner::{Runner, RunnerEnv};
use serde_json::json;
use tokio::time::Instant;

use crate::api;
use crate::system::{Binaries, BootWith, System, SystemOptions};

/// Concurrent submitters.
const SUBMITTERS: usize = 64;

pub struct FleetSizes {
    pub jobs: u64,
    /// How long each job sleeps: longer than it takes to start them all
    /// plus the measuring window.
    pub sleep: Duration,
    /// CPU is measured over this window once every job is running.
    pub window: Duration,
    pub limit: Duration,
}

pub struct FleetResult {
    pub jobs: u64,
    /// Time from the first submit until every job was running.
    pub ramp: Duration,
    pub peak_rss: u64,
    /// The dispatcher's CPU while every job sleeps, in % of one core.
    pub idle_cpu_percent: f64,
    /// The CPU window as measured: shorter than asked when a job
    /// finished before it ended.
    pub window: Duration,
    pub machines_calls_per_job: f64,
    /// Store commands per job sent by the dispatcher, and by the runners.
    pub dispatcher_commands_per_job: f64,
    pub runner_commands_per_job: f64,
    /// How long each job slept (the runners' share grows with it).
    pub sleep: Duration,
    /// All commands of the run by name (for the profile).
    pub commands_by_name: std::collections::BTreeMap<String, u64>,
}

pub async fn run(binaries: &Binaries, sizes: &FleetSizes) -> anyhow::Result<FleetResult> {
    let system = System::start(
        binaries,
        SystemOptions {
            max_machines: sizes.jobs as u32,
            boot: BootWith::Virtual(Box::new(virtual_runner)),
            count_commands: true,
            durable: false,
            image_env: Vec::new(),
            faithful_mock: false,
            extra_args: Vec::new(),
        },
    )
    .await?;
    let measured = measure(&system, sizes).await;
    system.stop().await;
    measured
}

/// A virtual machine that is the runner: the demo handlers, one shared
/// store connection, and signals to the machine asking the handler to
/// stop as SIGTERM would.
fn virtual_runner(store: Store) -> Boot {
    let runner = Runner::with_demo_handlers();
    Boot::Virtual(Arc::new(move |machine: VirtualMachineEnv| {
        let runner = runner.clone();
        let store = store.clone();
        async move {
            let env = match RunnerEnv::from_lookup(|name| machine.env.get(name).cloned()) {
                Ok(env) => env,
                Err(_) => return runner::exit::BAD_ENVIRONMENT,
            };
            let mut signals = machine.signals;
            let stop = async move {
                signals.recv().await;
            }
            .boxed();
            runner.run_in_process(&store, env, stop).await
        }
        .boxed()
    }))
}

async fn measure(system: &System, sizes: &FleetSizes) -> anyhow::Result<FleetResult> {
    let commands_before = system.valkey_commands().await?;
    let calls_before = system.machines_api_calls();
    let started = Instant::now();
    submit_all(system, sizes).await?;
    let deadline = started + sizes.limit;
    while system.jobs_in(JobStatus::Running).await? < sizes.jobs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "not every job was running within {:?}",
            sizes.limit
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp = started.elapsed();

    let before = system.dispatcher_usage()?;
    let window_start = Instant::now();
    let window_end = window_start + sizes.window;
    while Instant::now() < window_end && system.jobs_in(JobStatus::Succeeded).await? == 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = system.dispatcher_usage()?;
    let window = window_start.elapsed();

    api::wait_succeeded(system, sizes.jobs, deadline - Instant::now()).await?;
    // Every machine destroyed and every slot freed: the last supervisor
    // is done, so its commands and calls are all counted.
    while system.mock.stats().live > 0 || system.slots_held().await? > 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "machines still live at the limit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let commands = system.valkey_commands().await?;
    let stats = system.mock.stats();
    anyhow::ensure!(
        stats.created == sizes.jobs && stats.destroyed == sizes.jobs,
        "{} jobs but {} machines created and {} destroyed",
        sizes.jobs,
        stats.created,
        stats.destroyed
    );
    let jobs = sizes.jobs as f64;
    let cpu = after.cpu.saturating_sub(before.cpu);
    Ok(FleetResult {
        jobs: sizes.jobs,
        ramp,
        peak_rss: system.dispatcher_usage()?.peak_rss,
        idle_cpu_percent: 100.0 * cpu.as_secs_f64() / window.as_secs_f64(),
        window,
        machines_calls_per_job: (system.machines_api_calls() - calls_before) as f64 / jobs,
        dispatcher_commands_per_job: (commands.dispatcher - commands_before.dispatcher) as f64
            / jobs,
        runner_commands_per_job: (commands.runners - commands_before.runners) as f64 / jobs,
        sleep: sizes.sleep,
        commands_by_name: commands.by_name,
    })
}

async fn submit_all(system: &System, sizes: &FleetSizes) -> anyhow::Result<()> {
    let ms = sizes.sleep.as_millis() as u64;
    let mut submitters = tokio::task::JoinSet::new();
    for submitter in 0..SUBMITTERS as u64 {
        let base = system.base.clone();
        let share = (submitter..sizes.jobs).step_by(SUBMITTERS).count();
        submitters.spawn(async move {
            let http = reqwest::Client::new();
            for _ in 0..share {
                api::submit(
                    &http,
                    &base,
                    &json!({"kind": "sleep", "params": {"ms": ms}}),
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = submitters.join_next().await {
        done??;
    }
    Ok(())
}
