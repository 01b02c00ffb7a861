//! The client side of the job API, as the scenarios use it, and waiting
//! for a batch of jobs to finish.

use std::time::Duration;

use anyhow::{bail, Context as _};
use jobs::JobStatus;
use serde_json::Value;
use tokio::time::Instant;

use crate::system::System;

/// `POST /jobs`; returns the new job's id.
pub async fn submit(http: &reqwest::Client, base: &str, job: &Value) -> anyhow::Result<String> {
    let answer = http.post(format!("{base}/jobs")).json(job).send().await?;
    let status = answer.status();
    if status != reqwest::StatusCode::ACCEPTED {
        bail!("POST /jobs answered {status}: {}", answer.text().await?);
    }
    let body: Value = answer.json().await?;
    body["id"]
        .as_str()
        .map(str::to_string)
        .context("POST /jobs answered no id")
}

/// Long-polls `GET /jobs/{id}?wait=30` until the job is finished and
/// returns its view.
pub async fn wait_finished(http: &reqwest::Client, base: &str, id: &str) -> anyhow::Result<Value> {
    loop {
        let job: Value = http
            .get(format!("{base}/jobs/{id}?wait=30"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match job["status"].as_str() {
            Some("succeeded" | "failed" | "cancelled") => return Ok(job),
            Some(_) => continue,
            None => bail!("job view without a status: {job}"),
        }
    }
}

/// Submits echo job `n` and long-polls it to its end: the finished job
/// and the time from submit to its end. Fails unless it succeeded.
pub async fn echo_to_end(
    http: &reqwest::Client,
    base: &str,
    n: u64,
) -> anyhow::Result<(Value, std::time::Duration)> {
    let sent = std::time::Instant::now();
    let id = submit(
        http,
        base,
        &serde_json::json!({"kind": "echo", "params": {"n": n}}),
    )
    .await?;
    let job = wait_finished(http, base, &id).await?;
    let took = sent.elapsed();
    anyhow::ensure!(
        job["status"] == "succeeded",
        "job {id} did not succeed: {job}"
    );
    Ok((job, took))
}

/// Waits until `expected` jobs have succeeded, polling the store's
/// counters. Any failed or cancelled job, or `limit` passing, is an error.
pub async fn wait_succeeded(system: &System, expected: u64, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let failed =
            system.jobs_in(JobStatus::Failed).await? + system.jobs_in(JobStatus::Cancelled).await?;
        if failed > 0 {
            bail!("{failed} jobs failed or were cancelled");
        }
        let succeeded = system.jobs_in(JobStatus::Succeeded).await?;
        if succeeded >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {succeeded} of {expected} jobs succeeded within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
