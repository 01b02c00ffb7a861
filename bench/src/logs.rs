//! Part 6, job logs: what capturing a chatty command's output costs. A
//! command job prints 100,000 lines of about 100 bytes (10 MB) through a
//! real `runner` process; the same command with its output sent to
//! `/dev/null` (nothing to capture) is the baseline. Rounds alternate
//! between the two (which goes first alternates too), after one unrecorded
//! warm-up pair (a cold page cache and a first store connection would
//! count against whichever ran first); each is timed from the attempt's
//! `started_at` to its `finished_at` (the store's clock), so the final
//! flush of the log is inside the captured time. Besides the ratio of the
//! medians, the median of each round's own ratio: a burst of load on the
//! shared machine then moves both sides of a pair. Also reported: the store commands the log
//! cost (its batches), and whether it ended truncated at the cap.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::api;
use crate::latency::Latencies;
use crate::system::{Binaries, BootWith, System, SystemOptions};

/// Prints `lines` numbered lines of about 100 bytes (its params).
const FLOOD_PY: &str = r#"
import json, sys
n = json.load(sys.stdin)["lines"]
pad = "x" * 88
write = sys.stdout.write
for i in range(n):
    write(f"line {i:06d} {pad}\n")
"#;

pub struct LogSizes {
    pub lines: u64,
    /// Rounds of each (captured, discarded), interleaved.
    pub rounds: usize,
    pub limit: Duration,
}

pub struct LogResult {
    pub lines: u64,
    pub captured: Latencies,
    pub discarded: Latencies,
    /// Each round's captured over discarded run time.
    pub paired: Vec<f64>,
    /// The captured runs' log summaries, one per round.
    pub logs: Vec<LogRun>,
}

/// One captured run's log, as its attempt's `log` summary says.
pub struct LogRun {
    pub run: Duration,
    pub batches: u64,
    pub bytes: u64,
    pub lines: u64,
    pub truncated: bool,
    pub dropped: u64,
}

impl LogResult {
    /// Median run time captured over median run time discarded.
    pub fn ratio(&self) -> f64 {
        self.captured.ms(0.5) / self.discarded.ms(0.5)
    }

    /// The median of the rounds' own ratios.
    pub fn paired_ratio(&self) -> f64 {
        let mut ratios = self.paired.clone();
        ratios.sort_by(f64::total_cmp);
        match ratios.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => ratios[n / 2],
            n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
        }
    }
}

pub async fn run(binaries: &Binaries, sizes: &LogSizes) -> anyhow::Result<LogResult> {
    let flood = ["sh", "-c", "exec python3 -c \"$0\"", FLOOD_PY];
    let discarded = ["sh", "-c", "exec python3 -c \"$0\" >/dev/null", FLOOD_PY];
    let commands = json!({"flood": flood, "flood_discarded": discarded});
    let system = System::start(
        binaries,
        SystemOptions {
            max_machines: 1,
            boot: BootWith::Process,
            count_commands: false,
            faithful_mock: false,
            extra_args: Vec::new(),
            durable: false,
            image_env: vec![(runner::COMMANDS_VAR.into(), commands.to_string())],
        },
    )
    .await?;
    let measured = rounds(&system, sizes).await;
    system.stop().await;
    measured
}

async fn rounds(system: &System, sizes: &LogSizes) -> anyhow::Result<LogResult> {
    let http = reqwest::Client::new();
    let mut result = LogResult {
        lines: sizes.lines,
        captured: Latencies::default(),
        discarded: Latencies::default(),
        paired: Vec::new(),
        logs: Vec::new(),
    };
    // Round 0 is the warm-up.
    for round in 0..=sizes.rounds {
        let order = if round % 2 == 0 {
            ["flood", "flood_discarded"]
        } else {
            ["flood_discarded", "flood"]
        };
        let mut pair = [Duration::ZERO; 2];
        for kind in order {
            let job = tokio::time::timeout(sizes.limit, flood(&http, system, kind, sizes.lines))
                .await
                .with_context(|| {
                    format!("a {kind} job did not finish within {:?}", sizes.limit)
                })??;
            let attempt = &job["attempts"][0];
            let run = run_time(attempt)?;
            if round == 0 {
                continue;
            }
            if kind == "flood_discarded" {
                pair[1] = run;
                result.discarded.record(run);
                continue;
            }
            pair[0] = run;
            result.captured.record(run);
            let log = &attempt["log"];
            let count = |field: &str| log[field].as_u64().unwrap_or(0);
            result.logs.push(LogRun {
                run,
                batches: count("batches"),
                bytes: count("bytes"),
                lines: count("lines"),
                truncated: log["truncated"] == true,
                dropped: count("dropped"),
            });
        }
        if round > 0 {
            result
                .paired
                .push(pair[0].as_secs_f64() / pair[1].as_secs_f64().max(1e-6));
        }
    }
    Ok(result)
}

/// Runs one flood job to its end; fails unless it succeeded.
async fn flood(
    http: &reqwest::Client,
    system: &System,
    kind: &str,
    lines: u64,
) -> anyhow::Result<Value> {
    let job = json!({"kind": kind, "params": {"lines": lines}, "max_attempts": 1});
    let id = api::submit(http, &system.base, &job).await?;
    let done = api::wait_finished(http, &system.base, &id).await?;
    if done["status"] != "succeeded" {
        bail!("{kind} job {id} did not succeed: {done}");
    }
    Ok(done)
}

/// From the attempt's `started_at` to its `finished_at`.
fn run_time(attempt: &Value) -> anyhow::Result<Duration> {
    let at = |field: &str| -> anyhow::Result<chrono::DateTime<chrono::FixedOffset>> {
        let text = attempt[field]
            .as_str()
            .with_context(|| format!("the attempt has no {field}: {attempt}"))?;
        Ok(chrono::DateTime::parse_from_rfc3339(text)?)
    };
    Ok((at("finished_at")? - at("started_at")?)
        .to_std()
        .unwrap_or_default())
}
