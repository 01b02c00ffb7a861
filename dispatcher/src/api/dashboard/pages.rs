//! The dashboard's pages, rendered from jobs and the store's counts.
//! Elements with an `id` and `data-live` are refreshed in place by the
//! page script; `data-job` / `data-status` attributes on rows let tests
//! and scripts find a job without parsing text.

use std::fmt::Write as _;

use jobs::{Job, JobStatus, Page, Stats};

use super::html::{self, escape};
use crate::cli::output::{attempt_phases, duration, timestamp};

/// The index page's filters, as the form submits them.
#[derive(Debug, Default)]
pub struct Filter {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub tag: Option<jobs::Tag>,
}

/// `/`: the summary, the filter form and a page of jobs, newest first,
/// with a link to the next page.
pub fn jobs_page(
    filter: &Filter,
    page: &Page,
    stats: &Stats,
    pools: &std::collections::BTreeMap<String, jobs::PoolStats>,
    activity: &jobs::Activity,
) -> String {
    let jobs = &page.jobs;
    let mut body = summary(stats);
    body.push_str(&pool_summary(pools));
    body.push_str(&super::charts::activity_charts(activity));
    body.push_str(&filter_form(filter));
    body.push_str("<p id=\"flash\" role=\"status\"></p>\n");
    body.push_str(
        "<table id=\"jobs\" data-live>\n<thead><tr><th>id</th><th>kind</th><th>status</th>\
         <th>attempts</th><th>progress</th><th>created</th><th></th></tr></thead>\n<tbody>\n",
    );
    for job in jobs {
        let id = escape(&job.id.to_string());
        let _ = writeln!(
            body,
            "<tr data-job=\"{id}\" data-status=\"{status}\"><td class=\"mono\"><a href=\"/jobs/{id}\">{id}</a></td>\
             <td>{kind}{tags}</td><td>{badge}</td><td>{attempts}/{max}</td><td>{progress}</td><td>{created}</td><td>{actions}</td></tr>",
            status = job.status,
            kind = escape(job.kind.as_str()),
            tags = tag_links(&job.tags),
            badge = status_badge(job.status),
            attempts = job.attempts.len(),
            max = job.max_attempts,
            progress = job.progress.as_ref().map_or(String::new(), |p| format!("{}%", p.percent)),
            created = timestamp(job.created_at),
            actions = actions(job),
        );
    }
    if jobs.is_empty() {
        body.push_str("<tr><td colspan=\"7\">no jobs</td></tr>\n");
    }
    body.push_str("</tbody>\n</table>\n");
    if let Some(next) = page.next {
        let mut query = format!("cursor={next}");
        if let Some(status) = filter.status {
            let _ = write!(query, "&status={status}");
        }
        if let Some(kind) = &filter.kind {
            // Kinds are [a-z0-9_.-]: nothing to percent-encode.
            let _ = write!(query, "&kind={kind}");
        }
        if let Some(tag) = &filter.tag {
            let _ = write!(query, "&tag={}", tag_query(tag));
        }
        let _ = writeln!(
            body,
            "<p><a id=\"older\" href=\"/?{}\">older jobs</a></p>",
            escape(&query)
        );
    }
    html::page("jobs", &body)
}

fn summary(stats: &Stats) -> String {
    let count = |status: JobStatus| stats.by_status.get(&status).copied().unwrap_or(0);
    let cells = [
        ("queued", count(JobStatus::Queued)),
        ("scheduled", count(JobStatus::Scheduled)),
        (
            "running",
            count(JobStatus::Starting) + count(JobStatus::Running),
        ),
        ("failed", count(JobStatus::Failed)),
        ("succeeded", count(JobStatus::Succeeded)),
        ("finished in the last hour", stats.finished_last_hour),
        ("machines in flight", stats.in_flight),
    ];
    let mut out = String::from("<section id=\"summary\" class=\"summary\" data-live>\n");
    for (label, value) in cells {
        let _ = writeln!(
            out,
            "<div data-count=\"{label}\"><b>{value}</b>{label}</div>"
        );
    }
    out.push_str("</section>\n");
    out
}

/// One line per warm pool: its machines, ready, in use and warming.
fn pool_summary(pools: &std::collections::BTreeMap<String, jobs::PoolStats>) -> String {
    if pools.is_empty() {
        return String::new();
    }
    let mut out = String::from("<section id=\"pools\" class=\"summary\" data-live>\n");
    for (pool, p) in pools {
        let _ = writeln!(
            out,
            "<div data-pool=\"{pool}\"><b>{ready}/{machines}</b>ready in pool {pool} ({in_use} in use, {warming} warming)</div>",
            pool = escape(pool),
            ready = p.ready,
            machines = p.machines,
            in_use = p.in_use,
            warming = p.warming,
        );
    }
    out.push_str("</section>\n");
    out
}

fn filter_form(filter: &Filter) -> String {
    let mut options = String::from("<option value=\"\">any status</option>");
    for status in JobStatus::ALL {
        let selected = if filter.status == Some(status) {
            " selected"
        } else {
            ""
        };
        let _ = write!(options, "<option{selected}>{status}</option>");
    }
    format!(
        "<form class=\"filters\" method=\"get\" action=\"/\">\
         <select name=\"status\">{options}</select>\
         <input name=\"kind\" placeholder=\"kind\" value=\"{kind}\">\
         <input name=\"tag\" placeholder=\"tag\" value=\"{tag}\">\
         <button>Filter</button></form>\n",
        kind = escape(filter.kind.as_deref().unwrap_or("")),
        tag = escape(filter.tag.as_ref().map_or("", |t| t.as_str())),
    )
}

/// A job's tags, each a link to the jobs with that tag.
fn tag_links(tags: &[jobs::Tag]) -> String {
    let mut out = String::new();
    for tag in tags {
        let _ = write!(
            out,
            " <a class=\"tag\" href=\"/?tag={query}\">{text}</a>",
            query = escape(&tag_query(tag)),
            text = escape(tag.as_str()),
        );
    }
    out
}

/// A tag as a query value: of its characters (`[A-Za-z0-9_.:=-]`) only
/// `=` needs encoding.
fn tag_query(tag: &jobs::Tag) -> String {
    tag.as_str().replace('=', "%3D")
}

pub(crate) fn status_badge(status: JobStatus) -> String {
    format!("<span class=\"status status-{status}\">{status}</span>")
}

/// Cancel while the job can still be stopped, Retry once it failed or
/// was cancelled: the same rules as the API's.
fn actions(job: &Job) -> String {
    let id = escape(&job.id.to_string());
    let button = |action: &str, label: &str| {
        format!("<button data-action=\"{action}\" data-job=\"{id}\">{label}</button>")
    };
    match job.status {
        JobStatus::Failed | JobStatus::Cancelled => button("retry", "Retry"),
        status if !status.is_terminal() && !job.cancel_requested => button("cancel", "Cancel"),
        _ => String::new(),
    }
}

/// `/jobs/{id}` in a browser: everything about one job.
pub fn job_page(job: &Job) -> String {
    let id = escape(&job.id.to_string());
    let mut body = format!(
        "<p id=\"flash\" role=\"status\"></p>\n<section id=\"job\" data-live data-job=\"{id}\" data-status=\"{}\">\n\
         <h1>{} {}</h1>\n<p class=\"mono\">{id}</p>\n<p>{}</p>\n<dl>\n",
        job.status,
        escape(job.kind.as_str()),
        status_badge(job.status),
        actions(job),
    );
    let mut fact = |label: &str, value: String| {
        let _ = writeln!(body, "<dt>{label}</dt><dd>{value}</dd>");
    };
    fact("created", timestamp(job.created_at));
    if let Some(at) = job.run_at {
        fact("run at", timestamp(at));
    }
    if let Some(at) = job.finished_at {
        fact("finished", timestamp(at));
    }
    fact("priority", job.priority.to_string());
    fact("timeout", format!("{} s per attempt", job.timeout_secs));
    fact(
        "attempts",
        format!("{} of {}", job.attempts.len(), job.max_attempts),
    );
    if job.cancel_requested && !job.status.is_terminal() {
        fact("cancel", "requested; the machine is being stopped".into());
    }
    for (label, value) in super::flow::job_facts(job) {
        fact(label, value);
    }
    if !job.tags.is_empty() {
        fact("tags", tag_links(&job.tags));
    }
    if let Some(parent) = job.parent {
        let parent = escape(&parent.to_string());
        fact(
            "parent",
            format!("<a class=\"mono\" href=\"/jobs/{parent}\">{parent}</a>"),
        );
    }
    if let Some(at) = job.expire_at {
        fact("expires", format!("{} unless started", timestamp(at)));
    }
    if let Some(p) = &job.progress {
        fact(
            "progress",
            format!(
                "<progress max=\"100\" value=\"{0}\"></progress> {0}% {1}",
                p.percent,
                escape(&p.message)
            ),
        );
    }
    body.push_str("</dl>\n");
    let _ = writeln!(body, "<h2>Params</h2>\n<pre>{}</pre>", pretty(&job.params));
    if let Some(result) = &job.result {
        let _ = writeln!(
            body,
            "<h2>Result</h2>\n<pre id=\"result\">{}</pre>",
            pretty(result)
        );
    }
    if let Some(error) = &job.error {
        let _ = writeln!(
            body,
            "<h2>Error</h2>\n<pre id=\"error\" class=\"error\">{}</pre>",
            escape(error)
        );
    }
    body.push_str(&attempts_table(job));
    body.push_str("</section>\n");
    body.push_str(&log_pane(job));
    html::page(&format!("{} {}", job.kind, job.id), &body)
}

fn attempts_table(job: &Job) -> String {
    let mut out = String::from(
        "<h2>Attempts</h2>\n<table id=\"attempts\">\n<thead><tr><th>#</th><th>outcome</th><th>machine</th>\
         <th>region</th><th>exit code</th><th>boot</th><th>run</th><th>error</th></tr></thead>\n<tbody>\n",
    );
    for attempt in &job.attempts {
        let (boot, run) = attempt_phases(attempt);
        let text = |value: Option<&str>| escape(value.unwrap_or(""));
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td></tr>",
            attempt.number,
            attempt.outcome.map_or("in progress", |o| o.as_str()),
            text(attempt.machine_id.as_deref()),
            text(attempt.region.as_deref()),
            attempt.exit_code.map_or(String::new(), |c| c.to_string()),
            boot.map_or(String::new(), duration),
            run.map_or(String::new(), duration),
            text(attempt.error.as_deref()),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// The log pane, outside the live-swapped section so the lines the
/// script appended survive each refresh. The script fills `#log-lines`
/// from the follow endpoint (SSE): "all attempts" by default, which keeps
/// following across retries until the job ends, or one chosen attempt.
/// Attempts that start after the page loaded are reached through "all".
fn log_pane(job: &Job) -> String {
    let id = escape(&job.id.to_string());
    let mut options = String::from("<option value=\"\">all attempts</option>");
    for attempt in &job.attempts {
        let _ = write!(
            options,
            "<option value=\"{n}\">attempt {n}</option>",
            n = attempt.number
        );
    }
    format!(
        "<section id=\"logs\" data-job=\"{id}\">\n<h2>Log</h2>\n\
         <p><label>Show <select id=\"log-attempt\">{options}</select></label> \
         <span id=\"log-state\" role=\"status\"></span> \
         <a id=\"log-raw\" href=\"/jobs/{id}/logs\">plain text</a></p>\n\
         <div id=\"log-lines\" class=\"log mono\" data-ended=\"false\"></div>\n</section>\n"
    )
}

fn pretty(value: &serde_json::Value) -> String {
    escape(&serde_json::to_string_pretty(value).expect("JSON values serialize"))
}

/// The login form; `error` when the last token was refused.
pub fn login_page(error: Option<&str>) -> String {
    let error = error.map_or(String::new(), |e| {
        format!("<p class=\"error\">{}</p>", escape(e))
    });
    html::page(
        "log in",
        &format!(
            "<h1>Log in</h1>\n{error}<form method=\"post\" action=\"/login\">\
             <label>API token <input type=\"password\" name=\"token\" autocomplete=\"current-password\" autofocus></label> \
             <button>Log in</button></form>\n"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_everywhere() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "0190a3f4-0000-7000-8000-000000000000",
            "kind": "echo",
            "status": "failed",
            "params": {"html": "<img src=x onerror=alert(1)>"},
            "priority": 0, "max_attempts": 1, "timeout_secs": 60,
            "backoff": {"base_ms": 1000, "max_ms": 1000, "jitter": false},
            "machine": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "error": "<script>alert(2)</script>",
            "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z",
            "cancel_requested": false,
            "attempts": [{"number": 1, "outcome": "error", "error": "\"><b>x</b>"}]
        }))
        .unwrap();
        let html = job_page(&job);
        for raw in ["<img src=x", "<script>alert(2)", "\"><b>x</b>"] {
            assert!(!html.contains(raw), "{raw} unescaped");
        }
        assert!(html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"));
        assert!(html.contains("data-action=\"retry\""));
        let filter = Filter {
            status: None,
            kind: Some("\"><script>".into()),
            tag: None,
        };
        let page = Page {
            jobs: vec![job],
            next: None,
        };
        let list = jobs_page(
            &filter,
            &page,
            &Stats::default(),
            &Default::default(),
            &Default::default(),
        );
        assert!(!list.contains("\"><script>"));
        assert!(list.contains("<td>echo</td>"));
    }

    #[test]
    fn the_log_pane_offers_all_attempts_and_each_one() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "0190a3f4-0000-7000-8000-000000000000",
            "kind": "print", "status": "running", "params": {},
            "priority": 0, "max_attempts": 3, "timeout_secs": 60,
            "backoff": {"base_ms": 1000, "max_ms": 1000, "jitter": false},
            "machine": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z",
            "cancel_requested": false,
            "attempts": [{"number": 1, "outcome": "error"}, {"number": 2}]
        }))
        .unwrap();
        let html = job_page(&job);
        let pane = &html[html.find("<section id=\"logs\"").expect("a log pane")..];
        let pane = &pane[..pane.find("</section>").expect("the pane ends")];
        // Outside the live-swapped section: a refresh keeps its lines.
        assert!(!pane.contains("data-live"));
        assert!(pane.contains("data-job=\"0190a3f4-0000-7000-8000-000000000000\""));
        assert!(pane.contains("<option value=\"\">all attempts</option>"));
        assert!(pane.contains("<option value=\"1\">attempt 1</option>"));
        assert!(pane.contains("<option value=\"2\">attempt 2</option>"));
        assert!(pane.contains("<div id=\"log-lines\""));
    }
}
