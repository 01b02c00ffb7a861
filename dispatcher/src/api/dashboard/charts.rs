//! The front page's charts of the last hour, a bar per minute, from the
//! store's per-minute buckets ([`jobs::Activity`]): attempts started, jobs
//! succeeded, failed and cancelled (counts); the queue's depth and the
//! machines in flight (the minute's peak as sampled); and the queue wait,
//! p95 with p50 drawn over it (from each minute's wait histogram).
//! Drawn here as inline SVG: no script, nothing fetched, and only numbers
//! and our own labels go in, so nothing needs escaping. Colours come from
//! classes in the stylesheet (the CSP allows no inline styles).

use std::fmt::Write as _;

use jobs::{Activity, MinuteCounts, MinuteLoad};

use crate::cli::output::duration;

/// How far back the charts look.
pub const CHART_MINUTES: u32 = 60;

const BAR_WIDTH: usize = 4;
const HEIGHT: u64 = 48;

/// How a counter series reads its value from a minute's counts.
type Reading = fn(&MinuteCounts) -> u64;

/// The counters, each with its name, label and reading.
const COUNTERS: [(&str, &str, Reading); 4] = [
    ("started", "attempts started", |m| m.started),
    ("succeeded", "succeeded", |m| m.succeeded),
    ("failed", "failed", |m| m.failed),
    ("cancelled", "cancelled", |m| m.cancelled),
];

/// How a gauge series reads its sample from a minute's load.
type Sample = fn(&MinuteLoad) -> Option<u64>;

/// The sampled gauges: name, label, reading.
const GAUGES: [(&str, &str, Sample); 2] = [
    ("queue_depth", "queue depth", |m| m.queue_depth),
    ("in_flight", "machines in flight", |m| m.in_flight),
];

/// One chart: a bar per minute (none where the value is `None` or 0),
/// optionally a second series drawn over the first on the same scale.
struct Chart {
    name: &'static str,
    /// The `<figcaption>`'s content (our own text and numbers only).
    caption: String,
    /// What a screen reader says instead of the bars.
    summary: String,
    /// Extra `data-*` attributes for scripts and tests.
    data: String,
    bars: Vec<Option<u64>>,
    over: Option<(&'static str, Vec<Option<u64>>)>,
    /// A bar's value as its tooltip shows it.
    show: fn(u64) -> String,
}

/// The section of charts, swapped in by the page's live refresh.
pub fn activity_charts(activity: &Activity) -> String {
    let mut out = String::from(
        "<section id=\"activity\" class=\"charts\" data-live>\n<h2>Last hour, per minute</h2>\n",
    );
    for (name, label, value) in COUNTERS {
        out.push_str(&counter_chart(activity, name, label, value).render(activity.first_minute));
    }
    for (name, label, sample) in GAUGES {
        out.push_str(&gauge_chart(activity, name, label, sample).render(activity.first_minute));
    }
    out.push_str(&wait_chart(activity).render(activity.first_minute));
    out.push_str("</section>\n");
    out
}

fn counter_chart(activity: &Activity, name: &'static str, label: &str, value: Reading) -> Chart {
    let values: Vec<u64> = activity.minutes.iter().map(value).collect();
    let total: u64 = values.iter().sum();
    let peak = values.iter().copied().max().unwrap_or(0);
    Chart {
        name,
        caption: format!("{label} <b>{total}</b> <small>peak {peak}/min</small>"),
        summary: format!(
            "{label} per minute over the last hour: {total} in all, at most {peak} in a minute"
        ),
        data: format!(" data-total=\"{total}\""),
        bars: values.into_iter().map(Some).collect(),
        over: None,
        show: |n| n.to_string(),
    }
}

fn gauge_chart(activity: &Activity, name: &'static str, label: &str, sample: Sample) -> Chart {
    let values: Vec<Option<u64>> = activity.load.iter().map(sample).collect();
    let peak = values.iter().flatten().copied().max().unwrap_or(0);
    // The current minute's peak so far, or the last sampled one.
    let latest = values.iter().rev().flatten().next().copied().unwrap_or(0);
    Chart {
        name,
        caption: format!("{label} <b>{latest}</b> <small>peak {peak}</small>"),
        summary: format!(
            "{label}, the most at once in each minute of the last hour: at most {peak}, lately {latest}"
        ),
        data: format!(" data-peak=\"{peak}\" data-latest=\"{latest}\""),
        bars: values,
        over: None,
        show: |n| n.to_string(),
    }
}

fn wait_chart(activity: &Activity) -> Chart {
    let quantile = |histogram: &[u64], q| {
        activity
            .wait_quantile_ms(histogram, q)
            .map(|ms| ms.round() as u64)
    };
    let per_minute = |q| -> Vec<Option<u64>> {
        activity
            .load
            .iter()
            .map(|m| quantile(&m.queue_wait, q))
            .collect()
    };
    let hour = activity.total_queue_wait();
    let claims: u64 = hour.iter().sum();
    let (p50, p95) = (quantile(&hour, 0.5), quantile(&hour, 0.95));
    let show = |ms: Option<u64>| ms.map_or_else(|| "-".to_string(), show_ms);
    let data = match (p50, p95) {
        (Some(p50), Some(p95)) => {
            format!(" data-claims=\"{claims}\" data-p50-ms=\"{p50}\" data-p95-ms=\"{p95}\"")
        }
        _ => format!(" data-claims=\"{claims}\""),
    };
    Chart {
        name: "queue_wait",
        caption: format!(
            "queue wait p50 <b>{}</b> <small>p95 {}</small>",
            show(p50),
            show(p95)
        ),
        summary: format!(
            "time from queued to claimed per minute over the last hour, p95 with p50 over it: \
             {claims} claims, p50 {}, p95 {}",
            show(p50),
            show(p95)
        ),
        data,
        bars: per_minute(0.95),
        over: Some(("p50", per_minute(0.5))),
        show: show_ms,
    }
}

fn show_ms(ms: u64) -> String {
    duration(chrono::Duration::milliseconds(ms as i64))
}

impl Chart {
    fn render(&self, first_minute: i64) -> String {
        let name = self.name;
        let peak = self.bars.iter().flatten().copied().max().unwrap_or(0);
        let width = self.bars.len() * BAR_WIDTH;
        let mut svg = format!(
            "<figure class=\"chart\" data-series=\"{name}\"{data}>\
             <figcaption>{caption}</figcaption>\
             <svg viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
             aria-label=\"{summary}\">\
             <line class=\"axis\" x1=\"0\" y1=\"{HEIGHT}\" x2=\"{width}\" y2=\"{HEIGHT}\"/>",
            data = self.data,
            caption = self.caption,
            summary = self.summary,
        );
        let mut layers = vec![(name, &self.bars)];
        if let Some((over, bars)) = &self.over {
            layers.push((*over, bars));
        }
        for (class, bars) in layers {
            for (i, value) in bars.iter().enumerate() {
                let Some(value) = value.filter(|&v| v > 0) else {
                    continue;
                };
                // The tallest bar fills the chart; every non-empty minute shows.
                let height = (value * HEIGHT).div_ceil(peak.max(1)).min(HEIGHT);
                let _ = write!(
                    svg,
                    "<rect class=\"bar bar-{class}\" x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{height}\">\
                     <title>{at}: {shown}</title></rect>",
                    x = i * BAR_WIDTH,
                    y = HEIGHT - height,
                    w = BAR_WIDTH - 1,
                    at = minute_label(first_minute + i as i64),
                    shown = (self.show)(value),
                );
            }
        }
        let _ = writeln!(
            svg,
            "</svg><div class=\"chart-axis\"><span>{} min ago</span><span>now</span></div></figure>",
            self.bars.len()
        );
        svg
    }
}

/// `14:05 UTC` for a minute since the epoch.
fn minute_label(minute: i64) -> String {
    chrono::DateTime::from_timestamp(minute * 60, 0)
        .map_or_else(String::new, |t| t.format("%H:%M UTC").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01 20:00 UTC
    const FIRST_MINUTE: i64 = 1_796_155_200 / 60;

    fn activity() -> Activity {
        let minute = |started, failed| MinuteCounts {
            started,
            failed,
            ..MinuteCounts::default()
        };
        let load = |queue_depth, in_flight, queue_wait: Vec<u64>| MinuteLoad {
            queue_depth,
            in_flight,
            queue_wait,
        };
        Activity {
            first_minute: FIRST_MINUTE,
            minutes: vec![minute(4, 0), minute(0, 0), minute(1, 2)],
            load: vec![
                load(Some(7), Some(2), vec![4, 0, 0]),
                load(None, None, vec![0, 0, 0]),
                load(Some(0), Some(3), vec![0, 1, 0]),
            ],
            wait_bounds_ms: vec![100, 1000],
        }
    }

    #[test]
    fn bars_scale_to_the_peak_and_empty_minutes_draw_nothing() {
        let html = activity_charts(&activity());
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
        assert_eq!(
            html.matches("<svg").count(),
            COUNTERS.len() + GAUGES.len() + 1
        );
        assert!(html.contains("<span>3 min ago</span><span>now</span>"));
    }

    #[test]
    fn gauges_show_each_minutes_peak_and_skip_unsampled_minutes() {
        let html = activity_charts(&activity());
        let queue = section(&html, "queue_depth");
        assert!(
            queue.contains("data-peak=\"7\" data-latest=\"0\""),
            "{queue}"
        );
        assert_eq!(queue.matches("<rect").count(), 1, "{queue}");
        let flying = section(&html, "in_flight");
        assert!(
            flying.contains("data-peak=\"3\" data-latest=\"3\""),
            "{flying}"
        );
        assert!(flying.contains("<title>20:02 UTC: 3</title>"), "{flying}");
        assert_eq!(flying.matches("<rect").count(), 2, "{flying}");
    }

    #[test]
    fn queue_wait_draws_p50_over_p95_per_minute() {
        let html = activity_charts(&activity());
        let wait = section(&html, "queue_wait");
        // The hour: 4 claims within 100 ms, 1 within 1 s.
        assert!(
            wait.contains("data-claims=\"5\" data-p50-ms=\"63\" data-p95-ms=\"775\""),
            "{wait}"
        );
        assert!(
            wait.contains("p50 <b>0.06s</b> <small>p95 0.78s</small>"),
            "{wait}"
        );
        // 20:00: p95 95 ms, p50 50 ms; 20:02 (one claim in 100..1000 ms):
        // p95 955 ms (the peak), p50 550 ms.
        assert!(wait.contains("bar-queue_wait\" x=\"8\" y=\"0\""), "{wait}");
        assert!(wait.contains("<title>20:02 UTC: 0.95s</title>"), "{wait}");
        assert!(
            wait.contains("<rect class=\"bar bar-p50\" x=\"0\""),
            "{wait}"
        );
        assert_eq!(wait.matches("<rect").count(), 4, "{wait}");
    }

    #[test]
    fn no_claims_means_no_wait_numbers() {
        let html = activity_charts(&Activity {
            first_minute: FIRST_MINUTE,
            minutes: vec![MinuteCounts::default()],
            load: vec![MinuteLoad::default()],
            wait_bounds_ms: vec![100],
        });
        let wait = section(&html, "queue_wait");
        assert!(wait.contains("data-claims=\"0\">"), "{wait}");
        assert!(wait.contains("p50 <b>-</b>"), "{wait}");
        assert!(!wait.contains("<rect"), "{wait}");
    }

    /// The figure of one series.
    fn section<'a>(html: &'a str, series: &str) -> &'a str {
        let start = html
            .find(&format!("data-series=\"{series}\""))
            .expect(series);
        let end = start + html[start..].find("</figure>").unwrap();
        &html[start..end]
    }
}
