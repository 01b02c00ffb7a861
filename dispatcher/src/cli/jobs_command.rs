//! `dispatcher jobs ...`: a command-line client of a running dispatcher.
//! Human output by default, `--json` for scripts. A command that waits for
//! a job exits 1 when the job ends failed or cancelled, so shell scripts
//! can chain on it.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use jobs::{Job, JobStatus};
use serde_json::Value;

use crate::cli::client::{ApiClient, BulkFilter, ListQuery, RetryOptions, SubmitOptions, Update};
use crate::cli::output;

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The dispatcher's base URL.
    #[arg(
        long,
        env = "DISPATCHER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// One of the dispatcher's API tokens.
    #[arg(long, env = "DISPATCHER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// `jobs submit`'s arguments (boxed in [`JobsCommand`]: they dwarf the
/// other commands').
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[arg(required_unless_present = "batch")]
    kind: Option<String>,
    /// The job's params, as JSON.
    #[arg(long, default_value = "{}", value_parser = parse_json)]
    params: Value,
    #[command(flatten)]
    options: SubmitOptions,
    /// Follow the job (or the batch) until it finishes, with a
    /// progress bar.
    #[arg(long)]
    wait: bool,
    /// Submit every line of this JSON Lines file (a `POST /jobs` body
    /// each) as one batch. The options above fill what a line leaves
    /// out; `--idempotency-key` and `--callback-url` are the batch's.
    #[arg(long, conflicts_with_all = ["kind", "params"])]
    batch: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job, or a batch of them (`--batch FILE.jsonl`).
    Submit(Box<SubmitArgs>),
    /// Show a batch: counts per status and progress.
    Batch {
        id: String,
        /// Follow it until every member is final, with a progress bar;
        /// exits 1 unless all succeeded.
        #[arg(long)]
        watch: bool,
    },
    /// Show one job with its attempts.
    Get { id: String },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        status: Option<JobStatus>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tag: Option<String>,
        /// Only the children of this job.
        #[arg(long)]
        parent: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Cancel a job (its machine is stopped if it is running).
    Cancel { id: String },
    /// Give a failed, cancelled or expired job a fresh set of attempts,
    /// optionally on another machine size, region, env or timeout.
    Retry {
        id: String,
        #[command(flatten)]
        options: RetryOptions,
    },
    /// Cancel every job the filters match (at least one filter), a page
    /// per request; `--dry-run` only counts.
    CancelAll {
        #[command(flatten)]
        filter: BulkFilter,
        #[arg(long)]
        dry_run: bool,
    },
    /// Retry every failed, cancelled or expired job the filters match;
    /// `--dry-run` only counts.
    RetryAll {
        #[command(flatten)]
        filter: BulkFilter,
        #[arg(long)]
        dry_run: bool,
    },
    /// Follow a job until it finishes, with a progress bar.
    Wait { id: String },
    /// Print what the job's attempts printed (stdout, stderr, handler
    /// logs), oldest first; `--json` for one JSON object per line.
    Logs {
        id: String,
        /// Only this attempt (from 1).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new lines until the attempt (or the job) ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Flow control: pause and resume a kind or a key, concurrency and
    /// rate limits (docs/flow-control.md).
    #[command(subcommand)]
    Flow(crate::cli::flow_command::FlowCommand),
}

fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// Runs the command; errors are printed as one line on stderr (exit 1).
pub async fn run(args: JobsArgs) -> ExitCode {
    match execute(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(args: JobsArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.url, args.token.clone());
    let show = |job: &Job| print_job(job, args.json);
    match args.command {
        JobsCommand::Submit(submit) if submit.batch.is_some() => {
            let SubmitArgs {
                batch,
                options,
                wait,
                ..
            } = *submit;
            let path = batch.expect("matched on it");
            crate::cli::batch_command::submit(&client, &path, &options, wait, args.json).await
        }
        JobsCommand::Batch { id, watch } => {
            crate::cli::batch_command::show(&client, &id, watch, args.json).await
        }
        JobsCommand::Submit(submit) => {
            let SubmitArgs {
                kind,
                params,
                options,
                wait,
                ..
            } = *submit;
            let kind = kind.context("give the job's kind")?;
            let job = client.submit(&kind, params, &options).await?;
            if !wait {
                show(&job);
                return Ok(ExitCode::SUCCESS);
            }
            if !args.json {
                eprintln!("submitted {} ({})", job.id, job.kind);
            }
            follow(&client, &job.id.to_string(), args.json).await
        }
        JobsCommand::Get { id } => {
            show(&client.get(&id).await?);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::List {
            status,
            kind,
            tag,
            parent,
            limit,
            cursor,
        } => {
            let query = ListQuery {
                status,
                kind,
                tag,
                parent,
                limit,
                cursor,
            };
            let page = client.list(&query).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", output::page(&page));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Cancel { id } => {
            show(&client.cancel(&id).await?);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Retry { id, options } => {
            show(&client.retry(&id, &options).await?);
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::CancelAll { filter, dry_run } => {
            bulk(&client, "cancel", &filter, dry_run, args.json).await
        }
        JobsCommand::RetryAll { filter, dry_run } => {
            bulk(&client, "retry", &filter, dry_run, args.json).await
        }
        JobsCommand::Wait { id } => follow(&client, &id, args.json).await,
        JobsCommand::Flow(command) => {
            crate::cli::flow_command::execute(&client, command, args.json).await?;
            Ok(ExitCode::SUCCESS)
        }
        JobsCommand::Logs {
            id,
            attempt,
            follow,
        } => {
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            client
                .logs(&id, attempt, follow, |entry| {
                    let _ = if args.json {
                        writeln!(
                            stdout,
                            "{}",
                            serde_json::to_string(entry).expect("an entry serializes")
                        )
                    } else {
                        write!(stdout, "{}", entry.text())
                    };
                })
                .await
                .with_context(|| format!("reading the logs of job {id}"))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs a bulk action page by page until the filter is done, and prints
/// the totals.
async fn bulk(
    client: &ApiClient,
    action: &str,
    filter: &BulkFilter,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (mut matched, mut changed) = (0, 0);
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .bulk(action, filter, dry_run, cursor.as_deref())
            .await?;
        matched += page.matched;
        changed += page.changed;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    if json {
        let totals =
            serde_json::json!({"dry_run": dry_run, "matched": matched, "changed": changed});
        println!("{totals}");
    } else {
        let verb = match (action, dry_run) {
            ("cancel", true) => "would cancel",
            ("cancel", false) => "cancelled",
            (_, true) => "would retry",
            (_, false) => "retried",
        };
        println!("{verb} {changed} of {matched} matching jobs");
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows the job's events with a progress bar (on stderr, drawn only on
/// a terminal), prints the finished job, and turns its status into the
/// exit code.
async fn follow(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(100)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:<9} [{bar:30}] {pos:>3}% {wide_msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let job = client
        .follow(id, |update| {
            let (Update::Changed(job) | Update::Done(job)) = update;
            bar.set_prefix(job.status.to_string());
            if let Some(progress) = &job.progress {
                bar.set_position(progress.percent.into());
                bar.set_message(progress.message.clone());
            }
        })
        .await
        .with_context(|| format!("following job {id}"))?;
    bar.finish_and_clear();
    print_job(&job, json);
    Ok(match job.status {
        JobStatus::Succeeded => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn print_job(job: &Job, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(job).expect("a job serializes")
        );
    } else {
        print!("{}", output::job(job));
    }
}
