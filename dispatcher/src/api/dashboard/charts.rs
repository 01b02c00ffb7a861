//! The front page's charts of the last hour: one small bar chart per
//! series (attempts started, jobs succeeded, failed, cancelled), a bar per
//! minute, from the store's per-minute counters ([`jobs::Activity`]).
//! Drawn here as inline SVG: no script, nothing fetched, and only numbers
//! and our own labels go in, so nothing needs escaping. Colours come from
//! classes in the stylesheet (the CSP allows no inline styles).

use std::fmt::Write as _;

use jobs::{Activity, MinuteCounts};

/// How far back the charts look.
pub const CHART_MINUTES: u32 = 60;

const BAR_WIDTH: usize = 4;
const HEIGHT: u64 = 48;

/// How a series reads its value from a minute's counters.
type Reading = fn(&MinuteCounts) -> u64;

/// The series, each with its name, label and reading.
const SERIES: [(&str, &str, Reading); 4] = [
    ("started", "attempts started", |m| m.started),
    ("succeeded", "succeeded", |m| m.succeeded),
    ("failed", "failed", |m| m.failed),
    ("cancelled", "cancelled", |m| m.cancelled),
];

/// The section of charts, swapped in by the page's live refresh.
pub fn activity_charts(activity: &Activity) -> String {
    let mut out = String::from(
        "<section id=\"activity\" class=\"charts\" data-live>\n<h2>Last hour, per minute</h2>\n",
    );
    for (name, label, value) in SERIES {
        out.push_str(&chart(activity, name, label, value));
    }
    out.push_str("</section>\n");
    out
}

fn chart(activity: &Activity, name: &str, label: &str, value: Reading) -> String {
    let values: Vec<u64> = activity.minutes.iter().map(value).collect();
    let total: u64 = values.iter().sum();
    let peak = values.iter().copied().max().unwrap_or(0);
    let width = values.len() * BAR_WIDTH;
    let mut svg = format!(
        "<figure class=\"chart\" data-series=\"{name}\" data-total=\"{total}\">\
         <figcaption>{label} <b>{total}</b> <small>peak {peak}/min</small></figcaption>\
         <svg viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{label} per minute over the last hour: {total} in all, at most {peak} in a minute\">\
         <line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{width}\" y2=\"{HEIGHT}\"/>"
    );
    for (i, &count) in values.iter().enumerate() {
        if count == 0 {
            continue;
        }
        // The tallest bar fills the chart; every non-empty minute shows.
        let height = (count * HEIGHT).div_ceil(peak.max(1));
        let minute = activity.first_minute + i as i64;
        let _ = write!(
            svg,
            "<rect class=\"bar bar-{name}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{height}\">\
             <title>{at}: {count}</title></rect>",
            x = i * BAR_WIDTH,
            y = HEIGHT - height,
            w = BAR_WIDTH - 1,
            at = minute_label(minute),
        );
    }
    let _ = writeln!(
        svg,
        "</svg><div class=\"chart-axis\"><span>{} min ago</span><span>now</span></div></figure>",
        values.len()
    );
    svg
}

/// `14:05 UTC` for a minute since the epoch.
fn minute_label(minute: i64) -> String {
    chrono::DateTime::from_timestamp(minute * 60, 0)
        .map_or_else(String::new, |t| t.format("%H:%M UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_peak_and_empty_minutes_draw_nothing() {
        let minute = |started, failed| MinuteCounts {
            started,
            failed,
            ..MinuteCounts::default()
        };
        let activity = Activity {
            // 2026-12-01 20:00 UTC
            first_minute: 1_796_155_200 / 60,
            minutes: vec![minute(4, 0), minute(0, 0), minute(1, 2)],
        };
        let html = activity_charts(&activity);
        assert!(html.contains("data-series=\"started\" data-total=\"5\""));
        assert!(html.contains("data-series=\"failed\" data-total=\"2\""));
        assert!(html.contains("data-series=\"succeeded\" data-total=\"0\""));
        // The peak minute fills the height; a quarter of it rounds up.
        assert!(html.contains(
            "<rect class=\"bar bar-started\" x=\"0\" y=\"0\" width=\"3\" height=\"48\"><title>20:00 UTC: 4</title>"
        ));
        assert!(html.contains(
            "<rect class=\"bar bar-started\" x=\"8\" y=\"36\" width=\"3\" height=\"12\"><title>20:02 UTC: 1</title>"
        ));
        assert_eq!(html.matches("<rect").count(), 3);
        assert_eq!(html.matches("<svg").count(), SERIES.len());
        assert!(html.contains("<span>3 min ago</span><span>now</span>"));
    }
}
