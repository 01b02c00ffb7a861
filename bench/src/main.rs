//! `bench`: starts the real system locally and prints one table of how
//! fast it is. See `bench/README.md` for what each number means and how
//! to reproduce it; `scripts/bench` builds the binaries and runs it.
//!
//! 1. [`submit`]: `POST /jobs` throughput and latency, launching off;
//!    [`batch_submit`]: `POST /batches` (one 10,000-job batch, and jobs/s
//!    accepted through batches).
//! 2. and 3. [`end_to_end`]: jobs/s and latency with a runner process per
//!    job, and how fast a runner's exit becomes a terminal status.
//! 4. [`fleet`]: thousands of sleeping jobs on virtual machines: the
//!    dispatcher's memory, idle CPU, and API and store calls per job.
//! 5. [`streams`]: memory with 1,000 open event streams, and store
//!    commands with few streams against many.
//! 5. [`warm_pool`]: cold against warm (`--warm-pool`) under the mock's
//!    default, Fly-like rate limits and latencies.
//! 6. [`logs`]: a command printing 10 MB, its output captured against
//!    discarded: the cost of job logs.
//! 7. [`flow`]: flow control: claim cost with 10,000 keys × 10 queued
//!    jobs, and submits with and without keys (printed under the table).

mod api;
mod batch_submit;
mod commands;
mod end_to_end;
mod fleet;
mod flow;
mod host;
mod latency;
mod logs;
mod streams;
mod submit;
mod system;
mod table;
mod usage;
mod warm_pool;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::end_to_end::EndToEndSizes;
use crate::fleet::FleetSizes;
use crate::logs::LogSizes;
use crate::streams::StreamSizes;
use crate::submit::SubmitSizes;
use crate::system::Binaries;
use crate::warm_pool::WarmPoolSizes;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks the dispatcher and prints one table."
)]
struct Args {
    /// Tiny sizes, to check the benchmark works (CI): about a minute.
    #[arg(long)]
    quick: bool,
    /// Where the `dispatcher` and `runner` binaries are; defaults to this
    /// binary's own directory.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Keep each dispatcher's log in this directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Jobs in the fleet scenario (default 10,000; 200 with --quick).
    #[arg(long)]
    fleet_jobs: Option<u64>,
    /// Run only these parts (default: all), e.g. `--only fleet` while
    /// profiling one of them.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Part>,
    /// Measure the submit part in durability mode: a replica next to the
    /// store, and `POST /jobs` answering once the job reached it.
    #[arg(long)]
    durable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Submit,
    Batch,
    EndToEnd,
    Fleet,
    Streams,
    WarmPool,
    Logs,
    Flow,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .to_path_buf(),
    };
    let binaries = Binaries {
        dir,
        log_dir: args.log_dir,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let host = host::Host::describe();
        eprintln!("bench on {host}");
        let (mut submit_sizes, end_to_end_sizes, mut fleet_sizes) = sizes(args.quick);
        submit_sizes.durable = args.durable;
        let stream_sizes = stream_sizes(args.quick);
        if let Some(jobs) = args.fleet_jobs {
            fleet_sizes.jobs = jobs;
        }
        let runs = |part| args.only.is_empty() || args.only.contains(&part);
        let mut submit = None;
        if runs(Part::Submit) {
            eprintln!("submit throughput");
            submit = Some(submit::run(&binaries, &submit_sizes).await?);
        }
        let mut batch = None;
        if runs(Part::Batch) {
            eprintln!("batch submit");
            batch = Some(batch_submit::run(&binaries, &batch_sizes(args.quick)).await?);
        }
        let mut end_to_end = None;
        if runs(Part::EndToEnd) {
            eprintln!("end to end and detection");
            end_to_end = Some(end_to_end::run(&binaries, &end_to_end_sizes).await?);
        }
        let mut fleet = None;
        if runs(Part::Fleet) {
            eprintln!("fleet of {} virtual machines", fleet_sizes.jobs);
            fleet = Some(fleet::run(&binaries, &fleet_sizes).await?);
        }
        let mut streams = None;
        if runs(Part::Streams) {
            eprintln!("{} event streams", stream_sizes.many);
            streams = Some(streams::run(&binaries, &stream_sizes).await?);
        }
        let mut warm_pool = None;
        if runs(Part::WarmPool) {
            eprintln!("cold and warm pool under the mock's default limits");
            warm_pool = Some(warm_pool::run(&binaries, &warm_pool_sizes(args.quick)).await?);
        }
        let mut logs = None;
        if runs(Part::Logs) {
            eprintln!("job logs: a 10 MB command, captured against discarded");
            logs = Some(logs::run(&binaries, &log_sizes(args.quick)).await?);
        }
        let mut flow = None;
        if runs(Part::Flow) {
            let sizes = flow_sizes(args.quick);
            eprintln!("flow control: {} keys x {} jobs", sizes.keys, sizes.per_key);
            flow = Some(flow::run(&binaries, &sizes).await?);
        }
        let results = table::Results {
            host,
            quick: args.quick,
            submit,
            batch,
            end_to_end,
            fleet,
            streams,
            warm_pool,
            logs,
        };
        println!("{}", table::render(&results));
        if let Some(flow) = &flow {
            println!("{}", flow::render(flow));
        }
        if let Some(fleet) = &results.fleet {
            eprintln!(
                "fleet: store commands by name: {:?}",
                fleet.commands_by_name
            );
        }
        anyhow::Ok(())
    })
}

fn log_sizes(quick: bool) -> LogSizes {
    LogSizes {
        lines: 100_000,
        // Rounds of 0.1 to 0.3 s: enough for a median on a noisy machine.
        rounds: if quick { 3 } else { 15 },
        limit: Duration::from_secs(120),
    }
}

fn batch_sizes(quick: bool) -> batch_submit::BatchSizes {
    match quick {
        true => batch_submit::BatchSizes {
            jobs: 1_000,
            batches: 3,
        },
        false => batch_submit::BatchSizes {
            jobs: 10_000,
            batches: 10,
        },
    }
}

fn warm_pool_sizes(quick: bool) -> WarmPoolSizes {
    if quick {
        return WarmPoolSizes {
            cold_jobs: 6,
            cold_max_machines: 8,
            pool: 4,
            warm_jobs: 20,
            sequential_jobs: 5,
            limit: Duration::from_secs(120),
        };
    }
    WarmPoolSizes {
        cold_jobs: 20,
        cold_max_machines: 16,
        pool: 64,
        warm_jobs: 300,
        sequential_jobs: 50,
        limit: Duration::from_secs(600),
    }
}

fn sizes(quick: bool) -> (SubmitSizes, EndToEndSizes, FleetSizes) {
    let connections = vec![1, 16, 64];
    if quick {
        return (
            SubmitSizes {
                connections,
                duration: Duration::from_secs(10),
                max_requests: 200,
                durable: false,
            },
            EndToEndSizes {
                throughput: vec![(4, 20), (16, 20)],
                sequential_jobs: 10,
                limit: Duration::from_secs(60),
            },
            FleetSizes {
                jobs: 200,
                sleep: Duration::from_secs(5),
                window: Duration::from_secs(2),
                limit: Duration::from_secs(60),
            },
        );
    }
    (
        SubmitSizes {
            connections,
            duration: Duration::from_secs(8),
            max_requests: 1_000_000,
            durable: false,
        },
        EndToEndSizes {
            throughput: vec![(4, 400), (16, 1000)],
            sequential_jobs: 200,
            limit: Duration::from_secs(300),
        },
        FleetSizes {
            jobs: 10_000,
            sleep: Duration::from_secs(60),
            window: Duration::from_secs(10),
            limit: Duration::from_secs(300),
        },
    )
}

fn flow_sizes(quick: bool) -> flow::FlowSizes {
    if quick {
        return flow::FlowSizes {
            keys: 1_000,
            per_key: 2,
            claims: 500,
            rounds: 1,
            round: Duration::from_secs(2),
            connections: 16,
        };
    }
    flow::FlowSizes {
        keys: 10_000,
        per_key: 10,
        claims: 5_000,
        rounds: 3,
        round: Duration::from_secs(4),
        connections: 16,
    }
}

fn stream_sizes(quick: bool) -> StreamSizes {
    StreamSizes {
        jobs: 100,
        few: 10,
        many: if quick { 100 } else { 1000 },
        window: Duration::from_secs(if quick { 2 } else { 10 }),
        limit: Duration::from_secs(120),
    }
}
