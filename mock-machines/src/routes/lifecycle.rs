//! Start, stop, suspend, restart, signal and cordon a machine.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use machines::{GoDuration, MachineState, OkResponse, SignalRequest, StartResponse, StopRequest};

use super::machines::cannot;
use super::{json_body, lease_nonce, optional_json_body, query_value};
use crate::error::ApiError;
use crate::server::Shared;
use crate::signals;
use crate::state::{MachineEntry, StopIntent};
use crate::supervisor;

/// `POST .../{id}/start`: boots a `stopped`, `suspended` or `failed`
/// machine. Anything else (including `created`: a `skip_launch` machine is
/// launched by an update) is a 412.
pub async fn start(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<StartResponse>, ApiError> {
    shared.rate_limit("start", &id)?;
    shared.with_machine_result(&app, &id, |e| {
        e.check_lease(lease_nonce(&headers))?;
        let previous = e.state();
        if !matches!(
            previous,
            MachineState::Stopped | MachineState::Suspended | MachineState::Failed
        ) {
            return Err(cannot("start", previous));
        }
        supervisor::boot(&shared, e, false);
        // Like flyd: the answer comes once the machine is starting, so a
        // `wait` for `stopped` right after it waits for this run's end.
        e.enter(MachineState::Starting, "start", "user");
        Ok(Json(StartResponse {
            previous_state: previous.to_string(),
            migrated: false,
            new_host: String::new(),
        }))
    })
}

/// `POST .../{id}/stop` with optional `{"signal": .., "timeout": ..}`.
pub async fn stop(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("stop", &id)?;
    let request: StopRequest = optional_json_body(&body)?;
    bring_down(&shared, &app, &id, &headers, StopIntent::Stop, request)
}

/// `POST .../{id}/suspend`: like stop, but the machine rests in `suspended`.
pub async fn suspend(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("suspend", &id)?;
    bring_down(
        &shared,
        &app,
        &id,
        &headers,
        StopIntent::Suspend,
        StopRequest::default(),
    )
}

/// `POST .../{id}/restart?signal=..&timeout=..`: stop, then boot again.
pub async fn restart(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("restart", &id)?;
    let timeout = query_value(&query, "timeout")
        .map(parse_timeout)
        .transpose()?
        .map(GoDuration);
    let request = StopRequest {
        signal: query_value(&query, "signal").map(str::to_string),
        timeout,
    };
    bring_down(&shared, &app, &id, &headers, StopIntent::Reboot, request)
}

/// A Go duration or a number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, ApiError> {
    text.parse::<u64>()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| GoDuration::parse(text))
        .ok_or_else(|| ApiError::BadRequest(format!("invalid timeout {text:?}")))
}

/// Stop, suspend and restart: signal a running machine and let the
/// supervisor settle it; cancel a boot that has not launched anything yet.
fn bring_down(
    shared: &Arc<Shared>,
    app: &str,
    id: &str,
    headers: &HeaderMap,
    intent: StopIntent,
    request: StopRequest,
) -> Result<Json<OkResponse>, ApiError> {
    shared.with_machine_result(app, id, |e| {
        e.check_lease(lease_nonce(headers))?;
        let (signal, timeout) = signals::stop_defaults(
            &e.machine.config,
            request.signal.as_deref(),
            request.timeout.map(|t| t.0),
        )?;
        let state = e.state();
        if matches!(state, MachineState::Destroying | MachineState::Destroyed) {
            return Err(cannot(action(intent), state));
        }
        let launched = e.run.as_ref().is_some_and(|r| r.guest.is_some());
        match (launched, e.is_running(), intent) {
            (true, _, _) => {
                let (transient, event) = match intent {
                    StopIntent::Stop => (MachineState::Stopping, "stop"),
                    StopIntent::Suspend => (MachineState::Suspending, "suspend"),
                    StopIntent::Reboot => (MachineState::Restarting, "restart"),
                };
                supervisor::request_stop(shared, e, intent, signal, timeout);
                e.enter(transient, event, "user");
            }
            // A pending boot: nothing to signal, the boot itself is
            // called off (a restart lets it go on).
            (false, true, StopIntent::Reboot) => {}
            (false, true, _) => cancel_boot(e, intent),
            // Not running: a restart boots it; stop and suspend are no-ops.
            (false, false, StopIntent::Reboot) => supervisor::boot(shared, e, false),
            (false, false, _) => {}
        }
        Ok(Json(OkResponse { ok: true }))
    })
}

fn action(intent: StopIntent) -> &'static str {
    match intent {
        StopIntent::Stop => "stop",
        StopIntent::Suspend => "suspend",
        StopIntent::Reboot => "restart",
    }
}

fn cancel_boot(entry: &mut MachineEntry, intent: StopIntent) {
    entry.generation += 1;
    entry.record(action(intent), "stopping", "user", None);
    let rest = if intent == StopIntent::Suspend {
        MachineState::Suspended
    } else {
        MachineState::Stopped
    };
    supervisor::settle(entry, rest);
}

/// `POST .../{id}/signal` with `{"signal": "SIGKILL"}`: delivered to the
/// whole process group; the restart policy then applies as to any exit.
pub async fn signal(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("signal", &id)?;
    let request: SignalRequest = json_body(&body)?;
    let signal = signals::parse(&request.signal)?;
    shared.with_machine_result(&app, &id, |e| {
        e.check_lease(lease_nonce(&headers))?;
        match e.run.as_ref().and_then(|r| r.guest.as_ref()) {
            Some(guest) => {
                guest.signal(signal);
                Ok(Json(OkResponse { ok: true }))
            }
            None => Err(cannot("signal", e.state())),
        }
    })
}

/// `POST .../{id}/cordon` and `/uncordon`: the mock has no proxy to take
/// the machine out of, so these only check the machine and the lease.
pub async fn cordon(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<OkResponse>, ApiError> {
    shared.rate_limit("cordon", &id)?;
    shared.with_machine_result(&app, &id, |e| {
        e.check_lease(lease_nonce(&headers))?;
        Ok(Json(OkResponse { ok: true }))
    })
}
