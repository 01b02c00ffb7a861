//! `GET .../{id}/wait`: long-poll until the machine is in a wanted state.
//!
//! Event-driven: the handler subscribes to the machine's state changes and
//! re-checks only when one happens, reading the machine's change log so
//! that a state it passed through since the last look counts too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use machines::{MachineState, WaitResponse};

use super::query_value;
use crate::error::ApiError;
use crate::server::Shared;
use crate::state::{MachineEntry, StateChange};

/// The server-side cap on one wait, as Fly's proxy enforces it.
const MAX_WAIT_SECS: u64 = 60;

/// States a waiter may ask for. `settled` means any state the machine rests
/// in without anyone acting: started, stopped, suspended, failed, destroyed.
fn wanted_states(name: &str) -> Result<&'static [MachineState], ApiError> {
    use MachineState::*;
    Ok(match name {
        "started" => &[Started],
        "stopped" => &[Stopped],
        "suspended" => &[Suspended],
        "destroyed" => &[Destroyed],
        "failed" => &[Failed],
        "settled" => &[Started, Stopped, Suspended, Failed, Destroyed],
        other => {
            return Err(ApiError::BadRequest(format!(
                "invalid state {other:?}: must be one of started, stopped, suspended, destroyed, failed, settled"
            )))
        }
    })
}

/// The parsed query of a wait.
struct WaitRequest {
    /// As the caller wrote them, for the timeout message.
    names: Vec<String>,
    wanted: Vec<MachineState>,
    timeout: Duration,
    version: Option<String>,
    from_event_id: Option<String>,
}

impl WaitRequest {
    fn parse(query: &[(String, String)]) -> Result<Self, ApiError> {
        let mut names: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "state")
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            names.push("started".to_string());
        }
        let mut wanted = Vec::new();
        for name in &names {
            wanted.extend_from_slice(wanted_states(name)?);
        }
        let timeout = match query_value(query, "timeout") {
            None => MAX_WAIT_SECS,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(0) => MAX_WAIT_SECS,
                Ok(secs) if secs <= MAX_WAIT_SECS => secs,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid timeout {text:?}: must be an integer number of seconds, at most {MAX_WAIT_SECS}"
                    )))
                }
            },
        };
        let non_empty = |name| {
            query_value(query, name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Ok(Self {
            names,
            wanted,
            timeout: Duration::from_secs(timeout),
            version: non_empty("version").or_else(|| non_empty("instance_id")),
            from_event_id: non_empty("from_event_id"),
        })
    }

    fn answer(&self, change: &StateChange) -> Json<WaitResponse> {
        Json(WaitResponse {
            ok: true,
            state: Some(change.state.to_string()),
            version: Some(change.version.clone()),
            event_id: Some(change.event_id.clone()),
        })
    }
}

/// What one look at the machine found.
enum Look {
    Reached(Json<WaitResponse>),
    /// Not yet; look again at changes after this sequence number.
    NotYet(u64),
}

pub async fn wait(
    State(shared): State<Arc<Shared>>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<WaitResponse>, ApiError> {
    shared.rate_limit("wait", &id)?;
    let request = WaitRequest::parse(&query)?;
    let deadline = tokio::time::Instant::now() + request.timeout;
    let (mut changes, mut seen) = shared.with_machine_result(&app, &id, |e| {
        if let Some(version) = &request.version {
            if version != e.version() {
                return Err(ApiError::Precondition(format!(
                    "machine version {version} is not the current version {}",
                    e.version()
                )));
            }
        }
        // With `from_event_id`, only changes after that event count;
        // otherwise the current state counts as well.
        let after = match request
            .from_event_id
            .as_deref()
            .and_then(|ev| e.seq_of_event(ev))
        {
            Some(seq) => seq,
            None => e.seq().saturating_sub(1),
        };
        Ok((e.subscribe(), after))
    })?;
    loop {
        match shared.with_machine_result(&app, &id, |e| look(e, &request, seen))? {
            Look::Reached(answer) => return Ok(answer),
            Look::NotYet(seq) => seen = seq,
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            // The machine's record is gone: nothing will ever change.
            Ok(Err(_)) => return Err(ApiError::machine_not_found()),
            Err(_) => {
                let current = shared.with_machine_result(&app, &id, |e| Ok(e.state()))?;
                return Err(ApiError::WaitTimeout {
                    want: request.names.join(","),
                    current: current.to_string(),
                });
            }
        }
    }
}

fn look(entry: &MachineEntry, request: &WaitRequest, seen: u64) -> Result<Look, ApiError> {
    if let Some(change) = entry
        .changes_after(seen)
        .find(|c| request.wanted.contains(&c.state))
    {
        return Ok(Look::Reached(request.answer(change)));
    }
    if entry.state() == MachineState::Destroyed {
        // It can never get there now.
        return Err(ApiError::NotFound(format!(
            "machine not found: it was destroyed and will not reach state {}",
            request.names.join(",")
        )));
    }
    Ok(Look::NotYet(entry.seq()))
}
