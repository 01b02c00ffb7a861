//! How the CLI shows jobs to people (`--json` prints the API's JSON
//! instead). Also the small formatting helpers the dashboard shares.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use jobs::{Attempt, Job};

use crate::cli::client::JobPage;

/// `claimed → started` (machine boot and runner start) and
/// `started → finished` (the handler's run) of one attempt, when known.
pub fn attempt_phases(attempt: &Attempt) -> (Option<chrono::Duration>, Option<chrono::Duration>) {
    let boot = attempt
        .claimed_at
        .zip(attempt.started_at)
        .map(|(c, s)| s - c);
    let run = attempt
        .started_at
        .zip(attempt.finished_at)
        .map(|(s, f)| f - s);
    (boot, run)
}

/// `1.25s`, `3m04s`, `2h05m`: short and readable.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    match ms {
        0..60_000 => format!("{:.2}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The whole job, one fact per line.
pub fn job(job: &Job) -> String {
    let mut out = format!("{}  {}  {}\n", job.id, job.kind, job.status);
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<9} {value}");
    };
    line("created", timestamp(job.created_at));
    if let Some(at) = job.run_at {
        line("run at", timestamp(at));
    }
    if let Some(at) = job.finished_at {
        line("finished", timestamp(at));
    }
    line("params", job.params.to_string());
    if let Some(p) = &job.progress {
        line("progress", format!("{}% {}", p.percent, p.message));
    }
    if let Some(result) = &job.result {
        line("result", result.to_string());
    }
    if let Some(error) = &job.error {
        line("error", error.clone());
    }
    line(
        "attempts",
        format!("{} of {}", job.attempts.len(), job.max_attempts),
    );
    for attempt in &job.attempts {
        let _ = writeln!(out, "    {}", attempt_line(attempt));
    }
    out
}

fn attempt_line(attempt: &Attempt) -> String {
    let outcome = attempt
        .outcome
        .map_or("in progress".to_string(), |o| o.to_string());
    let mut line = format!("#{} {outcome}", attempt.number);
    if let Some(machine) = &attempt.machine_id {
        let _ = write!(line, "  machine {machine}");
    }
    if let Some(region) = attempt.region.as_deref().filter(|r| !r.is_empty()) {
        let _ = write!(line, "  region {region}");
    }
    if let Some(code) = attempt.exit_code {
        let _ = write!(line, "  exit {code}");
    }
    let (boot, run) = attempt_phases(attempt);
    if let Some(boot) = boot {
        let _ = write!(line, "  boot {}", duration(boot));
    }
    if let Some(run) = run {
        let _ = write!(line, "  ran {}", duration(run));
    }
    if let Some(error) = &attempt.error {
        let _ = write!(line, "  error: {error}");
    }
    line
}

/// A table, newest first, and how to get the next page.
pub fn page(page: &JobPage) -> String {
    let mut out = format!(
        "{:<36}  {:<20}  {:<9}  {:>8}  CREATED\n",
        "ID", "KIND", "STATUS", "ATTEMPTS"
    );
    for job in &page.jobs {
        let _ = writeln!(
            out,
            "{:<36}  {:<20}  {:<9}  {:>8}  {}",
            job.id,
            // `as_str`: their `Display` ignores the column width.
            job.kind.as_str(),
            job.status.as_str(),
            job.attempts.len(),
            timestamp(job.created_at)
        );
    }
    if let Some(cursor) = &page.next_cursor {
        let _ = writeln!(out, "more: --cursor {cursor}");
    }
    out
}
