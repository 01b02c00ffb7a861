//! Flow control's part of `/metrics`: per-key gauges for the
//! [`TOP_KEYS`] keys holding the most machines only, so a store with
//! 10,000 tenants still yields a handful of series. They are written as
//! Prometheus text at each scrape rather than through the `metrics`
//! facade, whose gauges would keep every key ever seen.

use std::fmt::Write as _;

use jobs::FlowOverview;

/// How many keys get their own series.
pub const TOP_KEYS: usize = 10;

pub const KEY_IN_FLIGHT: &str = "dispatcher_key_machines_in_flight";
pub const KEY_QUEUED: &str = "dispatcher_key_queue_depth";
pub const KEYS: &str = "dispatcher_flow_keys";
pub const PAUSED: &str = "dispatcher_flow_paused";

/// The Prometheus text of `overview` (read with [`TOP_KEYS`]).
pub fn render(overview: &FlowOverview) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    // Keys are `[A-Za-z0-9_.:@-]`: nothing to escape in a label value.
    let key = |k: &str| format!("key=\"{k}\"");
    let top = &overview.top_keys;
    family(
        KEY_IN_FLIGHT,
        "Machines held per concurrency key, for the keys holding the most (key=\"\": jobs without one)",
        &top.iter().map(|l| (key(&l.key), l.in_flight)).collect::<Vec<_>>(),
    );
    family(
        KEY_QUEUED,
        "Queued jobs per concurrency key, for the same keys",
        &top.iter()
            .map(|l| (key(&l.key), l.queued))
            .collect::<Vec<_>>(),
    );
    family(
        KEYS,
        "Concurrency keys awaiting a turn (state=\"waiting\") and holding machines (state=\"holding\")",
        &[
            ("state=\"waiting\"".into(), overview.ring_keys),
            ("state=\"holding\"".into(), overview.keys_holding_machines),
        ],
    );
    family(
        PAUSED,
        "Paused kinds and keys, by scope",
        &[
            ("scope=\"kind\"".into(), overview.paused_kinds.len() as u64),
            ("scope=\"key\"".into(), overview.paused_keys.len() as u64),
        ],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_top_keys_get_series() {
        let overview = FlowOverview {
            top_keys: vec![jobs::flow::KeyLoad {
                key: "tenant-1".into(),
                in_flight: 3,
                queued: 7,
                limit: 0,
            }],
            ..FlowOverview::default()
        };
        let text = render(&overview);
        assert!(text.contains("dispatcher_key_machines_in_flight{key=\"tenant-1\"} 3"));
        assert!(text.contains("dispatcher_key_queue_depth{key=\"tenant-1\"} 7"));
        assert_eq!(text.matches("{key=\"").count(), 2);
    }
}
