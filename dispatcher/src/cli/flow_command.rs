//! `dispatcher jobs flow ...`: flow control of a running dispatcher
//! (docs/flow-control.md): show the settings, pause and resume a kind or
//! a key, set concurrency and rate limits. Every change is held in the
//! store, so it applies to every dispatcher.

use std::fmt::Write as _;

use clap::{Subcommand, ValueEnum};
use jobs::FlowOverview;
use serde_json::json;

use crate::cli::client::{ApiClient, FlowChange};

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    /// The settings, and the keys holding the most machines.
    Show,
    /// Stop starting jobs of a kind or a key (they stay queued).
    Pause { scope: ScopeArg, name: String },
    /// Start them again.
    Resume { scope: ScopeArg, name: String },
    /// Machines a key's jobs may hold at once (`--default`: every key
    /// without its own limit).
    Limit {
        /// The concurrency key.
        #[arg(long, required_unless_present = "default", conflicts_with = "default")]
        key: Option<String>,
        /// 1 or more; leave out with `--clear`.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        limit: Option<u32>,
        /// Set the default limit instead of a key's.
        #[arg(long)]
        default: bool,
        /// Remove the limit.
        #[arg(long)]
        clear: bool,
    },
    /// Start at most `--per` jobs each `--interval-secs` of a kind or key.
    Rate {
        scope: ScopeArg,
        name: String,
        #[arg(long, required_unless_present = "clear")]
        per: Option<u32>,
        #[arg(long, default_value_t = 1)]
        interval_secs: u64,
        /// Starts allowed back to back (default 1).
        #[arg(long)]
        burst: Option<u32>,
        /// Remove the rate limit.
        #[arg(long, conflicts_with_all = ["per", "burst"])]
        clear: bool,
    },
}

/// What a pause or a rate limit applies to.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    Kind,
    Key,
}

impl ScopeArg {
    fn path(self, route: &str, name: &str) -> String {
        let scope = match self {
            Self::Kind => "kind",
            Self::Key => "key",
        };
        format!("/{route}/{scope}/{name}")
    }
}

pub async fn execute(client: &ApiClient, command: FlowCommand, json: bool) -> anyhow::Result<()> {
    match command {
        FlowCommand::Show => {
            let overview = client.flow().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&overview)?);
            } else {
                print!("{}", show(&overview));
            }
        }
        FlowCommand::Pause { scope, name } => {
            client
                .flow_change(&scope.path("pauses", &name), FlowChange::Put(None))
                .await?
        }
        FlowCommand::Resume { scope, name } => {
            client
                .flow_change(&scope.path("pauses", &name), FlowChange::Remove)
                .await?
        }
        FlowCommand::Limit {
            key, limit, clear, ..
        } => {
            let path = match key {
                Some(key) => format!("/concurrency/{key}"),
                None => "/concurrency".to_string(),
            };
            let change = match limit {
                Some(limit) if !clear => FlowChange::Put(Some(json!({ "limit": limit }))),
                _ => FlowChange::Remove,
            };
            client.flow_change(&path, change).await?
        }
        FlowCommand::Rate {
            scope,
            name,
            per,
            interval_secs,
            burst,
            clear,
        } => {
            let change = match per {
                Some(per) if !clear => FlowChange::Put(Some(json!({
                    "per": per,
                    "interval_secs": interval_secs,
                    "burst": burst,
                }))),
                _ => FlowChange::Remove,
            };
            client
                .flow_change(&scope.path("rate-limits", &name), change)
                .await?
        }
    }
    Ok(())
}

/// The overview for people, one fact per line.
fn show(overview: &FlowOverview) -> String {
    let mut out = String::new();
    let none = |n: u32| match n {
        0 => "none".to_string(),
        n => n.to_string(),
    };
    let _ = writeln!(out, "default key limit: {}", none(overview.default_limit));
    for (key, limit) in &overview.limits {
        let _ = writeln!(out, "key limit:         {key} = {limit}");
    }
    for (scope, rate) in &overview.rates {
        let _ = writeln!(
            out,
            "rate limit:        {scope} = {} per {} ms, burst {}",
            rate.per, rate.interval_ms, rate.burst
        );
    }
    for kind in &overview.paused_kinds {
        let _ = writeln!(out, "paused kind:       {kind}");
    }
    for key in &overview.paused_keys {
        let _ = writeln!(out, "paused key:        {key}");
    }
    let _ = writeln!(
        out,
        "keys awaiting a turn: {}; keys holding machines: {}",
        overview.ring_keys, overview.keys_holding_machines
    );
    for load in &overview.top_keys {
        let key = if load.key.is_empty() {
            "(no key)"
        } else {
            &load.key
        };
        let _ = writeln!(
            out,
            "  {key}: {} in flight (limit {}), {} queued",
            load.in_flight,
            none(load.limit),
            load.queued
        );
    }
    out
}
