//! The batch side of `dispatcher jobs`: `submit --batch FILE.jsonl` and
//! `batch ID [--watch]`.

use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use jobs::{Batch, JobStatus};
use serde_json::Value;

use crate::cli::client::{ApiClient, SubmitOptions};

/// Reads a JSON Lines file of `POST /jobs` bodies (blank lines skipped),
/// fills each member's unset fields from `options`, and submits them as
/// one batch; `options.idempotency_key` and `options.callback_url` are the
/// batch's own. With `wait`, follows the batch until it completed.
pub async fn submit(
    client: &ApiClient,
    path: &std::path::Path,
    options: &SubmitOptions,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut member_defaults = options.clone();
    let batch_key = member_defaults.idempotency_key.take();
    let batch_callback = member_defaults.callback_url.take();
    let defaults = serde_json::to_value(&member_defaults).expect("options serialize");
    let mut jobs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut job: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let Some(fields) = job.as_object_mut() else {
            anyhow::bail!("{}:{}: not a JSON object", path.display(), n + 1);
        };
        for (name, value) in defaults.as_object().into_iter().flatten() {
            fields.entry(name.clone()).or_insert_with(|| value.clone());
        }
        jobs.push(job);
    }
    let mut batch = serde_json::Map::new();
    if let Some(key) = batch_key {
        batch.insert("idempotency_key".into(), key.into());
    }
    if let Some(url) = batch_callback {
        batch.insert("callback_url".into(), url.into());
    }
    let submitted = client.submit_batch(jobs, batch).await?;
    if !wait {
        if json {
            println!("{}", serde_json::to_string_pretty(&submitted)?);
        } else {
            print!("{}", text_of(&submitted.batch));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        eprintln!(
            "submitted batch {} ({} jobs)",
            submitted.batch.id, submitted.batch.total
        );
    }
    watch(client, &submitted.batch.id.to_string(), json).await
}

/// Shows a batch, or follows it until it completed (`watch`): then the
/// exit code is 1 unless every member succeeded.
pub async fn show(
    client: &ApiClient,
    id: &str,
    watch_it: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if watch_it {
        return watch(client, id, json).await;
    }
    print_batch(&client.batch(id).await?, json);
    Ok(ExitCode::SUCCESS)
}

async fn watch(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let bar = if json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(1)
    };
    bar.set_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} {wide_msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let batch = client
        .follow_batch(id, |batch| {
            bar.set_length(batch.total);
            bar.set_position(batch.finished);
            bar.set_message(counts(batch));
        })
        .await
        .with_context(|| format!("following batch {id}"))?;
    bar.finish_and_clear();
    print_batch(&batch, json);
    let all_succeeded = batch.counts.get(&JobStatus::Succeeded) == Some(&batch.total);
    Ok(if all_succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_batch(batch: &Batch, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(batch).expect("a batch serializes")
        );
    } else {
        print!("{}", text_of(batch));
    }
}

/// The non-zero counts: `succeeded 190, failed 10`.
fn counts(batch: &Batch) -> String {
    batch
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(status, n)| format!("{status} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The batch, one fact per line.
pub fn text_of(batch: &Batch) -> String {
    let mut lines = vec![
        format!("batch     {}", batch.id),
        format!(
            "progress  {}/{} ({}%)",
            batch.finished, batch.total, batch.progress_percent
        ),
        format!("counts    {}", counts(batch)),
        format!(
            "created   {}",
            crate::cli::output::timestamp(batch.created_at)
        ),
    ];
    if let Some(at) = batch.completed_at {
        lines.push(format!("completed {}", crate::cli::output::timestamp(at)));
    }
    if let Some(then) = batch.then {
        lines.push(format!("then      {then}"));
    }
    lines.join("\n") + "\n"
}
