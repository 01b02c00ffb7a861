//! What the client counts, through the `metrics` facade: the process that
//! uses the client installs an exporter (the dispatcher serves Prometheus
//! text at `/metrics`); without one these calls cost next to nothing.
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `machines_api_requests_total` | `method`, `endpoint`, `status` | every HTTP exchange, retries included; `status` is the code, or `error` when no answer came |
//! | `machines_api_retries_total` | `method`, `endpoint`, `reason` | tries repeated after `rate_limited` (429), `server_error` (5xx) or `unreachable` |
//! | `machines_api_pacing_wait_seconds` | `action` | histogram of the time a call waited for its turn under the client's own pacing ([`crate::pacing`]) |
//! | `machines_api_retry_wait_seconds` | `method`, `endpoint`, `reason` | histogram of the time slept before each retry (for `rate_limited`: the rate-limit waits) |
//! | `machines_api_creates_adopted_total` | `after` | creates settled by adopting the machine an earlier try made, after a `conflict` (409, name taken) or an `ambiguous` failure (5xx, lost answer) |
//!
//! `endpoint` is the route template (`/v1/apps/{app}/machines/{id}/wait`),
//! never a real id.

use std::time::Duration;

use reqwest::Method;

use crate::MachinesError;

pub const REQUESTS: &str = "machines_api_requests_total";
pub const RETRIES: &str = "machines_api_retries_total";
pub const RETRY_WAIT: &str = "machines_api_retry_wait_seconds";
pub const ADOPTED: &str = "machines_api_creates_adopted_total";
pub const PACING_WAIT: &str = "machines_api_pacing_wait_seconds";

/// Gives the metrics their help texts; call once after installing a
/// recorder.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "Machines API HTTP exchanges, retries included, by route template and status"
    );
    metrics::describe_counter!(
        RETRIES,
        "Machines API calls tried again, by reason (rate_limited, server_error, unreachable)"
    );
    metrics::describe_histogram!(
        RETRY_WAIT,
        metrics::Unit::Seconds,
        "Time slept before each Machines API retry (rate_limited: rate-limit waits)"
    );
    metrics::describe_counter!(
        ADOPTED,
        "Machine creates settled by adopting the machine an earlier try made, by what failed (conflict, ambiguous)"
    );
    metrics::describe_histogram!(
        PACING_WAIT,
        metrics::Unit::Seconds,
        "Time a Machines API call waited for its turn under client-side pacing, by action"
    );
}

/// A call waited `wait` for its turn under client-side pacing.
pub(crate) fn record_pacing(action: &'static str, wait: Duration) {
    metrics::histogram!(PACING_WAIT, "action" => action).record(wait.as_secs_f64());
}

/// One HTTP exchange; `status` is `None` when no answer came.
pub(crate) fn record_call(method: &Method, endpoint: &'static str, status: Option<u16>) {
    let status = status.map_or("error".to_string(), |s| s.to_string());
    metrics::counter!(REQUESTS, "method" => method.to_string(), "endpoint" => endpoint, "status" => status)
        .increment(1);
}

pub(crate) fn record_retry(
    method: &Method,
    endpoint: &'static str,
    error: &MachinesError,
    delay: Duration,
) {
    let reason = match error.status() {
        Some(429) => "rate_limited",
        Some(_) => "server_error",
        None => "unreachable",
    };
    let labels = [
        ("method", method.to_string()),
        ("endpoint", endpoint.to_string()),
        ("reason", reason.to_string()),
    ];
    metrics::counter!(RETRIES, &labels).increment(1);
    metrics::histogram!(RETRY_WAIT, &labels).record(delay.as_secs_f64());
}

/// A create settled by adopting an existing machine; `after` is
/// `conflict` (409) or `ambiguous` (5xx, lost answer).
pub(crate) fn record_adopted(after: &'static str) {
    metrics::counter!(ADOPTED, "after" => after).increment(1);
}
