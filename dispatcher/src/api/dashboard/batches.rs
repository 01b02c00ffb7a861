//! The dashboard's batch pages: `/batches` (every batch with its
//! progress) and `/batches/{id}` (one batch's counts and its members),
//! served when a browser asks those routes for HTML. Both refresh in
//! place like the other pages (`data-live`).

use std::fmt::Write as _;

use jobs::{Batch, BatchPage, Page};

use super::html::{self, escape};
use super::pages::status_badge;
use crate::cli::output::timestamp;

/// `/batches` in a browser: newest first, with a link to older ones.
pub fn batches_page(page: &BatchPage) -> String {
    let mut body = String::from(
        "<h1>Batches</h1>\n<table id=\"batches\" data-live>\n<thead><tr><th>id</th><th>progress</th>\
         <th>counts</th><th>created</th><th>completed</th></tr></thead>\n<tbody>\n",
    );
    for batch in &page.batches {
        let id = escape(&batch.id.to_string());
        let _ = writeln!(
            body,
            "<tr data-batch=\"{id}\"><td class=\"mono\"><a href=\"/batches/{id}\">{id}</a></td>\
             <td>{progress}</td><td>{counts}</td><td>{created}</td><td>{completed}</td></tr>",
            progress = progress(batch),
            counts = counts(batch),
            created = timestamp(batch.created_at),
            completed = batch.completed_at.map(timestamp).unwrap_or_default(),
        );
    }
    if page.batches.is_empty() {
        body.push_str("<tr><td colspan=\"5\">no batches</td></tr>\n");
    }
    body.push_str("</tbody>\n</table>\n");
    if let Some(next) = page.next {
        let _ = writeln!(
            body,
            "<p><a id=\"older\" href=\"/batches?cursor={next}\">older batches</a></p>"
        );
    }
    html::page("batches", &body)
}

/// `/batches/{id}` in a browser: its progress and counts, then a page of
/// its members (newest first).
pub fn batch_page(batch: &Batch, members: &Page) -> String {
    let id = escape(&batch.id.to_string());
    let mut body = format!(
        "<section id=\"batch\" data-live data-batch=\"{id}\" data-complete=\"{complete}\">\n\
         <h1>Batch</h1>\n<p class=\"mono\">{id}</p>\n<p>{progress}</p>\n<p>{counts}</p>\n<dl>\n",
        complete = batch.is_complete(),
        progress = progress(batch),
        counts = counts(batch),
    );
    let mut fact = |label: &str, value: String| {
        let _ = writeln!(body, "<dt>{label}</dt><dd>{value}</dd>");
    };
    fact("created", timestamp(batch.created_at));
    if let Some(at) = batch.completed_at {
        fact("completed", timestamp(at));
    }
    if let Some(then) = batch.then {
        fact(
            "then",
            format!(
                "<a class=\"mono\" href=\"/jobs/{then}\">{then}</a> ({policy})",
                policy = serde_json::to_value(batch.then_policy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ),
        );
    }
    body.push_str("</dl>\n</section>\n");
    body.push_str(
        "<table id=\"members\" data-live>\n<thead><tr><th>index</th><th>id</th><th>kind</th>\
         <th>status</th><th>attempts</th></tr></thead>\n<tbody>\n",
    );
    for job in &members.jobs {
        let job_id = escape(&job.id.to_string());
        let _ = writeln!(
            body,
            "<tr data-job=\"{job_id}\" data-status=\"{status}\"><td>{index}</td>\
             <td class=\"mono\"><a href=\"/jobs/{job_id}\">{job_id}</a></td><td>{kind}</td>\
             <td>{badge}</td><td>{attempts}/{max}</td></tr>",
            status = job.status,
            index = job.batch_index.map(|i| i.to_string()).unwrap_or_default(),
            kind = escape(job.kind.as_str()),
            badge = status_badge(job.status),
            attempts = job.attempts.len(),
            max = job.max_attempts,
        );
    }
    body.push_str("</tbody>\n</table>\n");
    if members.next.is_some() {
        let _ = writeln!(
            body,
            "<p>Showing the newest {} members; <a href=\"/batches/{id}/jobs\">all of them (JSON)</a>.</p>",
            members.jobs.len()
        );
    }
    html::page("batch", &body)
}

fn progress(batch: &Batch) -> String {
    format!(
        "<progress max=\"{total}\" value=\"{finished}\"></progress> {finished}/{total} ({percent}%)",
        total = batch.total,
        finished = batch.finished,
        percent = batch.progress_percent,
    )
}

/// The non-zero counts, as status badges.
fn counts(batch: &Batch) -> String {
    batch
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(status, n)| format!("{} {n}", status_badge(*status)))
        .collect::<Vec<_>>()
        .join(" ")
}
