//! `GET /jobs/events`: Server-Sent Events of every job a filter matches
//! (`status`, `kind`, `tag`, `parent`), one `status` event per status
//! change, so a client can follow a tag or a parent's children without
//! a stream per job. The hub hands the stream every job's status events;
//! each is checked against the filter with one store read. A client too
//! slow to keep up gets a `resync` event (it missed changes: list again)
//! instead of unbounded buffering.

use std::convert::Infallible;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use jobs::{EventKind, ListFilter};
use serde::Deserialize;

use super::jobs::{list_filter, FilterText};
use super::{ApiError, AppState};
use crate::api::auth::Caller;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Only changes into this status.
    status: Option<String>,
    kind: Option<String>,
    tag: Option<String>,
    /// Only the children of this job.
    parent: Option<String>,
}

/// `GET /jobs/events?tag=...`: status changes of the matching jobs.
#[utoipa::path(get, path = "/jobs/events", tag = "jobs", params(WatchQuery),
    responses(
        (status = 200, description = "text/event-stream: `status` events, each a job as `GET /jobs` lists it (without `params` and `result`); `resync` when changes were missed", content_type = "text/event-stream", body = String),
        (status = 429, description = "this token holds its most event streams; see Retry-After", body = ApiError),
        (status = 503, description = "this dispatcher holds its most event streams; see Retry-After", body = ApiError)))]
pub async fn watch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = list_filter(FilterText {
        status: query.status,
        kind: query.kind,
        tag: query.tag,
        parent: query.parent,
        cursor: None,
    })?;
    let slot = match state.limits.streams.acquire(caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    let events = state.hub.subscribe_all();
    let stream = futures::stream::unfold(
        (state, events, filter, slot),
        |(state, mut events, filter, slot)| async move {
            loop {
                let event = events.recv().await;
                if let Some(sent) = next_event(&state, &filter, event).await {
                    return Some((Ok::<_, Infallible>(sent), (state, events, filter, slot)));
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The SSE event for a hub event, when the client should get one.
async fn next_event(state: &AppState, filter: &ListFilter, event: jobs::JobEvent) -> Option<Event> {
    if event.kind == EventKind::Resync {
        return Some(Event::default().event("resync").data("{}"));
    }
    // The status the event names, checked before reading the job.
    if filter.status.is_some() && event.status != filter.status {
        return None;
    }
    let job = match state.store.get(event.id).await {
        Ok(Some(job)) => job,
        Ok(None) => return None,
        Err(error) => {
            tracing::warn!(job = %event.id, %error, "reading a watched job failed");
            return None;
        }
    };
    // The job may have moved on since: the event's status is what changed.
    let status_now = job.status;
    let mut matching = filter.clone();
    matching.status = None;
    if !matching.matches(&job) {
        return None;
    }
    let mut value = serde_json::to_value(&job).expect("a job serializes");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("params");
        fields.remove("result");
        if let Some(status) = event.status.filter(|s| *s != status_now) {
            fields.insert("status".into(), status.as_str().into());
        }
    }
    Some(Event::default().event("status").data(value.to_string()))
}
