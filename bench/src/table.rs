//! The results as one markdown table, with the machine they were measured on.

use std::fmt::Write as _;

use crate::batch_submit::BatchResult;
use crate::end_to_end::EndToEndResult;
use crate::fleet::FleetResult;
use crate::host::Host;
use crate::logs::LogResult;
use crate::streams::StreamResult;
use crate::submit::SubmitResult;
use crate::warm_pool::WarmPoolResult;

pub struct Results {
    pub host: Host,
    pub quick: bool,
    pub submit: Option<Vec<SubmitResult>>,
    pub batch: Option<BatchResult>,
    pub end_to_end: Option<EndToEndResult>,
    pub fleet: Option<FleetResult>,
    pub streams: Option<StreamResult>,
    pub warm_pool: Option<WarmPoolResult>,
    pub logs: Option<LogResult>,
}

pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let mode = if r.quick {
        " (--quick: tiny sizes, not comparable)"
    } else {
        ""
    };
    let _ = writeln!(out, "Machine: {}{mode}\n", r.host);
    let _ = writeln!(out, "| measure | value | target |");
    let _ = writeln!(out, "| --- | --- | --- |");
    let mut row = |measure: String, value: String, target: &str| {
        let _ = writeln!(out, "| {measure} | {value} | {target} |");
    };
    for s in r.submit.iter().flatten() {
        let target = if s.connections == 64 {
            "≥ 10,000/s, p99 < 10 ms"
        } else {
            ""
        };
        row(
            format!(
                "submit{}, {} connections ({} requests)",
                if s.durable {
                    " (durable: WAIT 1 replica)"
                } else {
                    ""
                },
                s.connections,
                s.requests
            ),
            format!("{:.0} req/s, {}", s.per_second, s.latencies.p50_p99()),
            target,
        );
    }
    if let Some(b) = &r.batch {
        row(
            format!("one {}-job batch accepted (`POST /batches`)", b.jobs),
            format!("{} ms", b.first.as_millis()),
            "< 2 s",
        );
        row(
            format!(
                "batch submit, 1 connection ({} batches of {})",
                b.batches, b.jobs
            ),
            format!(
                "{:.0} jobs/s, per batch {}",
                b.jobs_per_second,
                b.latencies.p50_p99()
            ),
            "",
        );
    }
    if let Some(e) = &r.end_to_end {
        end_to_end_rows(e, &mut row);
    }
    if let Some(f) = &r.fleet {
        fleet_rows(f, &mut row);
    }
    if let Some(s) = &r.streams {
        stream_rows(s, &mut row);
    }
    if let Some(w) = &r.warm_pool {
        warm_pool_rows(w, &mut row);
    }
    if let Some(l) = &r.logs {
        log_rows(l, &mut row);
    }
    out
}

fn end_to_end_rows(e: &EndToEndResult, row: &mut impl FnMut(String, String, &str)) {
    for t in &e.throughput {
        let target = if t.max_machines == 16 {
            "≥ 300/s"
        } else {
            ""
        };
        row(
            format!(
                "end to end, `--max-machines {}` ({} echo jobs)",
                t.max_machines, t.jobs
            ),
            format!("{:.0} jobs/s", t.per_second),
            target,
        );
    }
    row(
        format!(
            "sequential submit → succeeded ({} jobs)",
            e.sequential.count()
        ),
        e.sequential.p50_p99(),
        "p50 < 10 ms",
    );
    row(
        format!(
            "detection: runner exit → terminal status ({} jobs)",
            e.detection.count()
        ),
        e.detection.p50_p99(),
        "p50 < 5 ms",
    );
}

fn warm_pool_rows(w: &WarmPoolResult, row: &mut impl FnMut(String, String, &str)) {
    row(
        format!(
            "default mock limits, cold ({} echo jobs, no pool)",
            w.cold_jobs
        ),
        format!("{:.2} jobs/s", w.cold_per_second),
        "",
    );
    row(
        "default mock limits, cold: create POSTs per machine".into(),
        format!("{:.2}", w.creates_per_machine),
        "≤ 1.5",
    );
    row(
        format!(
            "default mock limits, warm (`--warm-pool {0} --max-machines {0}`, {1} echo jobs)",
            w.pool, w.warm_jobs
        ),
        format!(
            "{:.1} jobs/s ({:.0}× cold)",
            w.warm_per_second,
            w.warm_per_second / w.cold_per_second
        ),
        "≥ 45/s, ≥ 30× cold",
    );
    row(
        "default mock limits, warm: API calls answered 429".into(),
        format!("{:.2} %", w.rate_limited_share * 100.0),
        "< 5 %",
    );
    row(
        format!(
            "default mock limits, warm one at a time: submit → succeeded ({} jobs)",
            w.sequential.count()
        ),
        w.sequential.p50_p99(),
        "p50 < 500 ms",
    );
}

fn fleet_rows(f: &FleetResult, row: &mut impl FnMut(String, String, &str)) {
    row(
        format!(
            "fleet: {} virtual `sleep` jobs, time until all running",
            f.jobs
        ),
        format!(
            "{:.1} s ({:.0} jobs/s)",
            f.ramp.as_secs_f64(),
            f.jobs as f64 / f.ramp.as_secs_f64()
        ),
        "",
    );
    row(
        "fleet: dispatcher peak RSS".into(),
        format!("{:.1} MB", f.peak_rss as f64 / 1e6),
        "< 200 MB",
    );
    row(
        format!(
            "fleet: dispatcher CPU while all sleep ({:.1} s window)",
            f.window.as_secs_f64()
        ),
        format!("{:.1} % of one core", f.idle_cpu_percent),
        "< 5 %",
    );
    row(
        "fleet: Machines API calls per job".into(),
        format!("{:.2}", f.machines_calls_per_job),
        "≤ 4",
    );
    // The target (issue 10) is the dispatcher's: what supervising a job
    // costs the store. A runner's own commands grow with its run time (a
    // heartbeat every 5 s), so they are shown beside it, not summed into it.
    row(
        "fleet: Valkey commands per job, dispatcher".into(),
        format!("{:.2}", f.dispatcher_commands_per_job),
        "≤ 10",
    );
    row(
        format!(
            "fleet: Valkey commands per job, runner ({} s jobs: 2 + a heartbeat per 5 s)",
            f.sleep.as_secs()
        ),
        format!("{:.2}", f.runner_commands_per_job),
        "",
    );
}

fn stream_rows(s: &StreamResult, row: &mut impl FnMut(String, String, &str)) {
    row(
        format!(
            "streams: dispatcher peak RSS with {} event streams open",
            s.many
        ),
        format!("{:.1} MB", s.peak_rss as f64 / 1e6),
        "< 100 MB",
    );
    row(
        format!(
            "streams: dispatcher store commands/s, idle jobs, {} vs {} streams",
            s.few, s.many
        ),
        format!(
            "{:.1} vs {:.1}",
            s.few_commands_per_sec, s.many_commands_per_sec
        ),
        "no growth with streams",
    );
    row(
        "streams: store commands per stream when its job is cancelled (cancels included)".into(),
        format!("{:.2}", s.commands_per_stream_on_cancel),
        "",
    );
}

fn log_rows(l: &LogResult, row: &mut impl FnMut(String, String, &str)) {
    row(
        format!(
            "logs: {} lines (~10 MB) captured vs discarded, run time ({} rounds)",
            l.lines,
            l.captured.count()
        ),
        format!(
            "{:.0} vs {:.0} ms median (+{:.0} ms): {:.2}x; median of the rounds' ratios {:.2}x (captured p99 {:.0} ms)",
            l.captured.ms(0.5),
            l.discarded.ms(0.5),
            l.captured.ms(0.5) - l.discarded.ms(0.5),
            l.ratio(),
            l.paired_ratio(),
            l.captured.ms(0.99),
        ),
        "≤ 1.2x",
    );
    // Commands are bounded by the batching: one per 200 ms of run time
    // plus one per 64 KiB shipped, whichever fills first.
    let worst = l.logs.iter().max_by_key(|r| r.batches);
    if let Some(r) = worst {
        let bound = (r.run.as_secs_f64() / 0.2).ceil() as u64 + r.bytes.div_ceil(64 << 10);
        row(
            "logs: store commands for the log (most of any round)".into(),
            format!(
                "{} for {} lines, {} bytes kept in {:.2} s (bound {bound})",
                r.batches,
                r.lines,
                r.bytes,
                r.run.as_secs_f64()
            ),
            "≤ run time / 200 ms + a few",
        );
    }
    let truncated = l.logs.iter().filter(|r| r.truncated).count();
    let dropped: u64 = l.logs.iter().map(|r| r.dropped).sum();
    row(
        "logs: rounds ending with the truncation marker; lines dropped".into(),
        format!("{truncated} of {}; {dropped} dropped", l.logs.len()),
        "all; 0",
    );
}
