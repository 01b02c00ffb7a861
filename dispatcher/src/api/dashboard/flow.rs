//! The index page's flow-control section: what is paused (each with a
//! Resume button), a form to pause a kind or a key, and the keys holding
//! the most machines. The buttons call the JSON API (`PUT`/`DELETE
//! /pauses/{scope}/{name}`) from `dashboard.js`, like Retry and Cancel.

use std::fmt::Write as _;

use jobs::{FlowOverview, Job};

use super::html::escape;

/// Keys the section lists by machines held.
pub const TOP_KEYS: usize = 10;

pub fn flow_section(overview: &FlowOverview) -> String {
    let mut out = String::from("<section id=\"flow\" data-live>\n<h2>Flow control</h2>\n");
    let paused = overview
        .paused_kinds
        .iter()
        .map(|name| ("kind", name))
        .chain(overview.paused_keys.iter().map(|name| ("key", name)));
    let mut any = false;
    for (scope, name) in paused {
        if !any {
            out.push_str("<ul class=\"paused\">\n");
            any = true;
        }
        let name = escape(name);
        let _ = writeln!(
            out,
            "<li>{scope} <b>{name}</b> paused \
             <button data-flow=\"resume\" data-scope=\"{scope}\" data-name=\"{name}\">Resume</button></li>"
        );
    }
    if any {
        out.push_str("</ul>\n");
    } else {
        out.push_str("<p>Nothing is paused.</p>\n");
    }
    if !overview.top_keys.is_empty() {
        out.push_str(
            "<table class=\"keys\"><thead><tr><th>concurrency key</th><th>in flight</th>\
             <th>limit</th><th>queued</th></tr></thead><tbody>\n",
        );
        for load in &overview.top_keys {
            let key = match load.key.as_str() {
                "" => "(no key)".to_string(),
                key => escape(key),
            };
            let limit = match load.limit {
                0 => "none".to_string(),
                n => n.to_string(),
            };
            let _ = writeln!(
                out,
                "<tr><td class=\"mono\">{key}</td><td>{}</td><td>{limit}</td><td>{}</td></tr>",
                load.in_flight, load.queued
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
    // Outside the live part, so a refresh never wipes what is being typed.
    out.push_str(
        "<form id=\"pause-form\" class=\"filters\"><label>Pause \
         <select name=\"scope\"><option value=\"kind\">kind</option><option value=\"key\">key</option></select></label> \
         <input name=\"name\" required placeholder=\"kind or concurrency key\"> \
         <button>Pause</button></form>\n",
    );
    out
}

/// The job page's flow-control facts (label, escaped HTML): its keys, and
/// what holds it back when queued.
pub fn job_facts(job: &Job) -> Vec<(&'static str, String)> {
    let mut facts = Vec::new();
    if let Some(key) = &job.concurrency_key {
        facts.push(("concurrency key", escape(key.as_str())));
    }
    if let Some(key) = &job.singleton_key {
        facts.push(("singleton key", escape(key.as_str())));
    }
    if let Some(waiting) = &job.waiting_for {
        let mut text = format!("{} ({})", waiting.reason, waiting.scope);
        if let Some(ms) = waiting.retry_in_ms {
            let _ = write!(text, ", next start in {ms} ms");
        }
        facts.push(("waiting for", escape(&text)));
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paused_names_are_escaped_and_offer_resume() {
        let overview = FlowOverview {
            paused_kinds: vec!["echo".into()],
            paused_keys: vec!["<b>x".into()],
            ..FlowOverview::default()
        };
        let html = flow_section(&overview);
        assert!(html.contains("data-scope=\"kind\" data-name=\"echo\">Resume"));
        assert!(html.contains("&lt;b&gt;x"));
        assert!(!html.contains("<b>x"));
    }
}
