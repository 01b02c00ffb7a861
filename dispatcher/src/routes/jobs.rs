//! The `/jobs` routes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use futures::Stream;
use jobs::{CancelResult, Enqueued, EventKind, Job, JobId, JobStatus, ListFilter, RetryResult};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::configuration::SubmitReplicas;
use crate::request::{idempotency_key, JobRequest};

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 1000;
/// Longest `?wait=` a long-poll may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// Consumers re-read the record this often in case a pub/sub message was
/// missed (it is best effort).
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// `POST /jobs`: validate, store, answer 202. Nothing slow happens here:
/// the launcher picks the job up. A repeat under the same idempotency key
/// answers 200 with the first job; a different request under it, 409.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "same as the idempotency_key field")),
    responses(
        (status = 202, description = "stored; runs when a machine slot is free", body = Job),
        (status = 200, description = "a repeat under the same idempotency key: the first job", body = Job),
        (status = 400, description = "malformed JSON", body = ApiError),
        (status = 409, description = "idempotency key used for another request", body = ApiError),
        (status = 413, description = "body too large", body = ApiError),
        (status = 415, description = "not JSON", body = ApiError),
        (status = 422, description = "invalid job; `field` names the problem", body = ApiError),
        (status = 503, description = "shutting down or store unavailable", body = ApiError)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this dispatcher is shutting down; submit to another one",
        ));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the job as JSON with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let mut request = parse_json::<JobRequest>(&body)?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| unprocessable("Idempotency-Key", "must be visible ASCII".into()))?;
    match (&header_key, &request.idempotency_key) {
        (Some(h), Some(f)) if h != f => {
            return Err(unprocessable(
                "idempotency_key",
                "differs from the Idempotency-Key header".into(),
            ))
        }
        (Some(h), _) => {
            request.idempotency_key =
                Some(idempotency_key(h.clone()).map_err(|e| unprocessable(&e.field, e.message))?)
        }
        _ => {}
    }
    let submission = request
        .into_submission(&state.api.defaults, chrono::Utc::now())
        .map_err(|e| unprocessable(&e.field, e.message))?;
    // The raw body identifies the request: a retry sends the same bytes.
    let request_hash = crate::callbacks::hex(&Sha256::digest(&body));
    match submission
        .enqueue(&state.store, request_hash, state.api.idempotency_ttl)
        .await?
    {
        Enqueued::Created(job) => {
            if let Some(durability) = state.api.submit_replicas {
                await_replicas(&state, durability, job.id).await?;
            }
            tracing::info!(job = %job.id, kind = %job.kind, status = %job.status, "job submitted");
            state.launcher_wakeup.notify_one();
            let location = format!("/jobs/{}", job.id);
            Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, location)],
                Json(job),
            )
                .into_response())
        }
        Enqueued::Existing(id) => {
            // A retry after a 503 above: confirm the first write now.
            if let Some(durability) = state.api.submit_replicas {
                await_replicas(&state, durability, id).await?;
            }
            let location = format!("/jobs/{id}");
            let job = find(&state, id).await?;
            Ok((StatusCode::OK, [(header::LOCATION, location)], Json(job)).into_response())
        }
        Enqueued::Conflict(id) => Err(ApiError::conflict(format!(
            "idempotency key already used by job {id} for a different request"
        ))
        .with_field("idempotency_key")),
    }
}

/// Durability mode: the job counts as accepted only once it reached the
/// replicas, so a failover right after the 202 cannot lose it. When they
/// do not confirm in time the job may still exist, so the answer asks the
/// client to retry with the same idempotency key (which finds it) rather
/// than to give up.
async fn await_replicas(
    state: &AppState,
    durability: SubmitReplicas,
    id: JobId,
) -> Result<(), ApiError> {
    let acknowledged = state
        .store
        .wait_for_replicas(durability.replicas, durability.timeout)
        .await?;
    if acknowledged >= durability.replicas {
        return Ok(());
    }
    tracing::warn!(
        job = %id,
        acknowledged,
        wanted = durability.replicas,
        "job not replicated in time; answering 503"
    );
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "job {id} was not confirmed by {} store replica(s) in time; retry with the same Idempotency-Key",
            durability.replicas
        ),
    ))
}

pub(crate) fn unprocessable(field: &str, message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("{field}: {message}"),
    )
    .with_field(field)
}

/// Parses a JSON body; syntax errors are 400, well-formed JSON of the
/// wrong shape is 422, and both name the field when there is one.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if !inner.is_data() {
            return ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {message}"));
        }
        // At the top level the path is "."; serde names the field in
        // backticks: "missing field `kind`", "unknown field `x`, expected ...".
        let field = if path != "." {
            Some(path)
        } else {
            message.split('`').nth(1).map(str::to_string)
        };
        let error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid job: {message}"),
        );
        match field {
            Some(field) => error.with_field(field),
            None => error,
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    Ok(value)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Long-poll: answer as soon as the job is finished, or after this
    /// many seconds (at most [`MAX_WAIT_SECS`]).
    wait: Option<u64>,
}

/// `GET /jobs/{id}`, optionally long-polling with `?wait=N`. A browser
/// (`Accept: text/html`) gets the dashboard's job page instead.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id"), GetQuery),
    responses(
        (status = 200, description = "the job; HTML (the dashboard's job page) when `Accept` names text/html",
            content((Job = "application/json"), (String = "text/html"))),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // The answer depends on `Accept`: caches must keep the two apart.
    let vary = [(header::VARY, "accept")];
    if super::wants_html(&headers) {
        let job = find(&state, id).await?;
        return Ok((vary, Html(crate::dashboard::pages::job_page(&job))).into_response());
    }
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("wait is at most {MAX_WAIT_SECS} seconds"),
        )
        .with_field("wait"));
    }
    // Subscribe before reading, so a change in between is not missed.
    let mut events = state.hub.subscribe(id);
    let mut job = find(&state, id).await?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    while !job.status.is_terminal() && Instant::now() < deadline {
        let next = deadline.min(Instant::now() + REREAD_EVERY);
        let _ = tokio::time::timeout_at(next, events.recv()).await;
        job = find(&state, id).await?;
    }
    Ok((vary, Json(job)).into_response())
}

/// `GET /jobs/{id}/events`: Server-Sent Events. Each event carries the
/// whole job view: `status` on every status change (the first one at
/// once), `progress` when the handler reports progress, and `done` once
/// the job is finished, after which the stream ends.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "text/event-stream of `status`, `progress` and `done` events, each with the job as data", content_type = "text/event-stream", body = Job),
        (status = 404, body = ApiError)))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&id)?;
    let subscription = state.hub.subscribe(id);
    let first = find(&state, id).await?;

    struct Cursor {
        state: AppState,
        subscription: crate::hub::Subscription,
        last: Option<Job>,
        pending: Option<Job>,
        done: bool,
    }
    let cursor = Cursor {
        state,
        subscription,
        last: None,
        pending: Some(first),
        done: false,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            if let Some(job) = c.pending.take() {
                let name = match &c.last {
                    _ if job.status.is_terminal() => "done",
                    Some(last) if last.status == job.status => "progress",
                    _ => "status",
                };
                c.done = job.status.is_terminal();
                let event = Event::default()
                    .event(name)
                    .json_data(&job)
                    .expect("a job serializes");
                c.last = Some(job);
                return Some((Ok(event), c));
            }
            let wake = tokio::time::timeout(REREAD_EVERY, c.subscription.recv()).await;
            if let Ok(e) = &wake {
                if !matches!(
                    e.kind,
                    EventKind::Status | EventKind::Progress | EventKind::Report
                ) {
                    continue;
                }
            }
            let Ok(Some(job)) = c.state.store.get(id).await else {
                continue;
            };
            let changed = c
                .last
                .as_ref()
                .is_none_or(|last| last.status != job.status || last.progress != job.progress);
            if changed {
                c.pending = Some(job);
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /jobs`: newest first. `?status=failed` lists the dead letters.
/// Pages are stable: follow `next_cursor` until it is null.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "`{\"jobs\": [Job], \"next_cursor\": id or null}`", body = Object), (status = 400, body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = list_filter(query.status, query.kind, query.cursor)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIST_LIMIT}"),
        )
        .with_field("limit"));
    }
    let page = state.store.list(&filter, limit).await?;
    Ok(Json(json!({ "jobs": page.jobs, "next_cursor": page.next })).into_response())
}

/// The filters of a job listing, as the API and the dashboard take them;
/// a bad one is a 400 naming it.
pub(crate) fn list_filter(
    status: Option<String>,
    kind: Option<String>,
    cursor: Option<String>,
) -> Result<ListFilter, ApiError> {
    let bad = |field: &str, message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, message).with_field(field)
    };
    Ok(ListFilter {
        status: status
            .map(|s| s.parse::<JobStatus>())
            .transpose()
            .map_err(|e| bad("status", e.to_string()))?,
        kind: kind
            .map(|k| jobs::Kind::parse(&k))
            .transpose()
            .map_err(|e| bad("kind", e.to_string()))?,
        after: cursor
            .map(|c| c.parse::<JobId>())
            .transpose()
            .map_err(|_| bad("cursor", "not a cursor from a previous page".into()))?,
    })
}

/// `POST /jobs/{id}/cancel`.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "cancelled before it ran", body = Job),
        (status = 202, description = "its machine is being stopped", body = Job),
        (status = 404, body = ApiError),
        (status = 409, description = "already finished", body = ApiError)))]
pub async fn cancel(state: State<AppState>, id: Path<String>) -> Result<Response, ApiError> {
    cancel_job(state, id).await
}

/// `DELETE /jobs/{id}`: the same as cancel.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "cancelled before it ran", body = Job),
        (status = 202, description = "its machine is being stopped", body = Job),
        (status = 404, body = ApiError),
        (status = 409, description = "already finished", body = ApiError)))]
pub async fn delete(state: State<AppState>, id: Path<String>) -> Result<Response, ApiError> {
    cancel_job(state, id).await
}

async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let status = match state.store.cancel(id).await? {
        CancelResult::Cancelled => StatusCode::OK,
        // The supervisor stops the machine; the job ends `cancelled`.
        CancelResult::Cancelling => StatusCode::ACCEPTED,
        CancelResult::AlreadyFinished => {
            let job = find(&state, id).await?;
            return Err(ApiError::conflict(format!(
                "job {id} already {}; nothing to cancel",
                job.status
            )));
        }
        CancelResult::Missing => return Err(ApiError::not_found(format!("no job {id}"))),
    };
    let job = find(&state, id).await?;
    tracing::info!(job = %id, attempt = job.attempts.len(), status = %job.status, "cancel requested");
    if job.status.is_terminal() {
        state.callbacks.deliver(&job);
    }
    Ok((status, Json(job)).into_response())
}

/// `POST /jobs/{id}/retry`: failed or cancelled jobs only.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ApiError), (status = 409, description = "not failed or cancelled", body = ApiError)))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.retry(id).await? {
        RetryResult::Queued => {
            state.launcher_wakeup.notify_one();
            let job = find(&state, id).await?;
            tracing::info!(job = %id, status = %job.status, "retried by request");
            Ok(Json(job).into_response())
        }
        RetryResult::NotFinished => Err(ApiError::conflict(format!(
            "job {id} is neither failed nor cancelled; only those can be retried"
        ))),
        RetryResult::Missing => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

pub(crate) async fn find(state: &AppState, id: JobId) -> Result<Job, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|e: jobs::InvalidValue| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).with_field("id")
    })
}
