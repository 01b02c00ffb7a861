//! The `/batches` routes, and the store step of a `POST /jobs` that waits
//! for other jobs (`after`) or brings a `then` job.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use jobs::{Batch, BatchId, Submitted};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::jobs::{find, json_body, list_filter, list_limit, page_body, unprocessable, FilterText};
use super::{ApiError, AppState};
use crate::api::auth::Caller;
use crate::api::batch_request::BatchRequest;
use crate::api::request::Submission;

/// A batch's event stream sends at most one view per this interval: a
/// thousand members finishing at once make a handful of events, not a
/// thousand.
const STREAM_EVERY: Duration = Duration::from_millis(250);

/// `POST /batches`: validate every member, store them all in one step,
/// answer 202 with the batch and its jobs' ids (in order). A repeat under
/// the batch's idempotency key answers 200 with the first batch; a
/// different body under it, 409.
#[utoipa::path(post, path = "/batches", tag = "batches", request_body = BatchRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "same as the idempotency_key field")),
    responses(
        (status = 202, description = "`{\"batch\": Batch, \"job_ids\": [id], \"existing\": [index]}`: stored; `existing` lists members whose own idempotency key named an earlier job (its id is given)", body = Object),
        (status = 200, description = "a repeat under the batch's idempotency key: `{\"batch\": Batch}`", body = Object),
        (status = 400, description = "malformed JSON", body = ApiError),
        (status = 409, description = "an idempotency key (the batch's, or `jobs[i].idempotency_key`) used for another request", body = ApiError),
        (status = 413, description = "body too large", body = ApiError),
        (status = 415, description = "not JSON", body = ApiError),
        (status = 422, description = "invalid member or field; `field` names it (`jobs[3].machine.cpus`), or a job in `after` does not exist", body = ApiError),
        (status = 503, description = "shutting down or store unavailable", body = ApiError)))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    super::jobs::intake_open(&state)?;
    let (mut request, body) = json_body::<BatchRequest>(&headers, body)?;
    super::jobs::with_header_key(&headers, &mut request.idempotency_key)?;
    let body_hash = crate::engine::callbacks::hex(&Sha256::digest(&body));
    let submit = request
        .into_submit(
            &state.api.defaults,
            state.api.max_batch_jobs,
            state.api.idempotency_ttl,
            body_hash,
            chrono::Utc::now(),
        )
        .map_err(|e| unprocessable(&e.field, e.message))?;
    let batch_id = submit.batch.as_ref().expect("a batch").id;
    match state.store.submit(&submit).await? {
        Submitted::Stored { ids, existing } => {
            if let Some(durability) = state.api.submit_replicas {
                super::jobs::await_replicas(&state, durability, ids[0]).await?;
            }
            let batch = find_batch(&state, batch_id).await?;
            tracing::info!(batch = %batch_id, jobs = ids.len(), existing = existing.len(), "batch submitted");
            state.launcher_wakeup.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                [(header::LOCATION, format!("/batches/{batch_id}"))],
                Json(json!({ "batch": batch, "job_ids": ids, "existing": existing })),
            )
                .into_response())
        }
        Submitted::BatchExisting(id) => {
            let batch = find_batch(&state, id).await?;
            Ok((
                StatusCode::OK,
                [(header::LOCATION, format!("/batches/{id}"))],
                Json(json!({ "batch": batch })),
            )
                .into_response())
        }
        other => Err(refusal(other)),
    }
}

/// Why the store refused a submission, as the client is told.
fn refusal(answer: Submitted) -> ApiError {
    match answer {
        Submitted::BatchConflict(id) => ApiError::conflict(format!(
            "idempotency key already used by batch {id} for a different request"
        ))
        .with_field("idempotency_key"),
        Submitted::Conflict { index, id } => {
            let field = format!("jobs[{index}].idempotency_key");
            ApiError::conflict(format!(
                "{field}: already used by job {id} for a different request"
            ))
            .with_field(field)
        }
        Submitted::Missing { index, id } => {
            let field = match index {
                Some(index) => format!("jobs[{index}].after"),
                None => "then.after".to_string(),
            };
            unprocessable(
                &field,
                format!("no job {id} (a job can wait only for stored jobs)"),
            )
        }
        Submitted::Stored { .. } | Submitted::Existing(_) | Submitted::BatchExisting(_) => {
            unreachable!("answers a caller handles itself")
        }
        Submitted::Stale => {
            unreachable!("only a batch a running job enqueues is fenced by its attempt")
        }
    }
}

/// Stores a `POST /jobs` that waits for others or brings a `then` job
/// (through the same script as batches); answers like a plain submit.
pub(crate) async fn submit_fanned_in(
    state: &AppState,
    submission: Submission,
    request_hash: String,
) -> Result<Response, ApiError> {
    let jobs = submission.into_new_jobs(request_hash, state.api.idempotency_ttl);
    let answer = state
        .store
        .submit(&jobs::Submit { jobs, batch: None })
        .await?;
    let (status, id) = match answer {
        Submitted::Stored { ids, .. } => (StatusCode::ACCEPTED, ids[0]),
        Submitted::Existing(id) => (StatusCode::OK, id),
        // Job 0 is the request, job 1 its `then` job.
        Submitted::Conflict { id, .. } => {
            return Err(ApiError::conflict(format!(
                "idempotency key already used by job {id} for a different request"
            ))
            .with_field("idempotency_key"))
        }
        Submitted::Missing { index, id } => {
            let field = if index == Some(0) {
                "after"
            } else {
                "then.after"
            };
            return Err(unprocessable(
                field,
                format!("no job {id} (a job can wait only for stored jobs)"),
            ));
        }
        other => return Err(refusal(other)),
    };
    if let Some(durability) = state.api.submit_replicas {
        super::jobs::await_replicas(state, durability, id).await?;
    }
    let job = find(state, id).await?;
    if status == StatusCode::ACCEPTED {
        tracing::info!(job = %job.id, kind = %job.kind, status = %job.status, then = ?job.then, "job submitted");
        state.launcher_wakeup.notify_one();
    }
    Ok((
        status,
        [(header::LOCATION, format!("/jobs/{id}"))],
        Json(job),
    )
        .into_response())
}

/// Members on a batch's dashboard page.
const PAGE_MEMBERS: usize = 100;

/// `GET /batches/{id}`: counts per status, progress, completion. A
/// browser (`Accept: text/html`) gets the dashboard's batch page.
#[utoipa::path(get, path = "/batches/{id}", tag = "batches",
    params(("id" = String, Path, description = "batch id")),
    responses(
        (status = 200, description = "the batch; HTML (the dashboard's batch page) when `Accept` names text/html",
            content((Batch = "application/json"), (String = "text/html"))),
        (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let batch = find_batch(&state, parse_batch_id(&id)?).await?;
    let vary = [(header::VARY, "accept")];
    if !super::wants_html(&headers) {
        return Ok((vary, Json(batch)).into_response());
    }
    let filter = jobs::ListFilter {
        batch: Some(batch.id),
        ..jobs::ListFilter::default()
    };
    let members = state.store.list(&filter, PAGE_MEMBERS).await?;
    let page = crate::api::dashboard::batches::batch_page(&batch, &members);
    Ok((vary, Html(page)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchesQuery {
    /// Batches per page, 1 to 200 (default 50).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /batches`: newest first. A browser gets the dashboard's batches
/// page.
#[utoipa::path(get, path = "/batches", tag = "batches", params(BatchesQuery),
    responses(
        (status = 200, description = "`{\"batches\": [Batch], \"next_cursor\": id or null}`; HTML (the dashboard's batches page) when `Accept` names text/html",
            content((Object = "application/json"), (String = "text/html"))),
        (status = 400, body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<BatchesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = list_limit(query.limit)?;
    let after = query
        .cursor
        .map(|c| c.parse::<BatchId>())
        .transpose()
        .map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, "not a cursor from a previous page")
                .with_field("cursor")
        })?;
    let page = state.store.batches(after, limit).await?;
    let vary = [(header::VARY, "accept")];
    if super::wants_html(&headers) {
        let html = crate::api::dashboard::batches::batches_page(&page);
        return Ok((vary, Html(html)).into_response());
    }
    Ok((
        vary,
        Json(json!({ "batches": page.batches, "next_cursor": page.next })),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BatchJobsQuery {
    status: Option<String>,
    /// Jobs per page, 1 to 200 (default 50).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Include each job's `params`, `result` and `inputs`.
    full: Option<bool>,
}

/// `GET /batches/{id}/jobs`: the members, newest first, as `GET /jobs`
/// lists them (`status`, `limit`, `cursor`, `full`).
#[utoipa::path(get, path = "/batches/{id}/jobs", tag = "batches",
    params(("id" = String, Path, description = "batch id"), BatchJobsQuery),
    responses((status = 200, description = "`{\"jobs\": [Job], \"next_cursor\": id or null}`", body = Object), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub async fn jobs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<BatchJobsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_batch_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut filter = list_filter(FilterText {
        status: query.status,
        cursor: query.cursor,
        ..FilterText::default()
    })?;
    filter.batch = Some(id);
    let limit = list_limit(query.limit)?;
    find_batch(&state, id).await?;
    let page = state.store.list(&filter, limit).await?;
    let (jobs, next) = page_body(page, query.full.unwrap_or(false));
    Ok(Json(json!({ "jobs": jobs, "next_cursor": next })).into_response())
}

/// `GET /batches/{id}/events`: Server-Sent Events. A `batch` event with
/// the batch's view at once and whenever its counts change (at most four
/// a second), then `done` once it completed, and the stream ends.
#[utoipa::path(get, path = "/batches/{id}/events", tag = "batches",
    params(("id" = String, Path, description = "batch id")),
    responses(
        (status = 200, description = "text/event-stream of `batch` and `done` events, each with the batch as data", content_type = "text/event-stream", body = String),
        (status = 404, body = ApiError),
        (status = 429, description = "this token holds its most event streams; see Retry-After", body = ApiError),
        (status = 503, description = "this dispatcher holds its most event streams; see Retry-After", body = ApiError)))]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_batch_id(&id)?;
    let slot = match state.limits.streams.acquire(caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    // Subscribe before the first read, so a change in between is seen.
    let events = state.hub.subscribe(id.event_key());
    let first = find_batch(&state, id).await?;

    struct Cursor {
        state: AppState,
        events: crate::engine::hub::Subscription,
        pending: Option<Batch>,
        last: Option<Batch>,
        _slot: crate::api::limits::Slot,
    }
    let cursor = Cursor {
        state,
        events,
        pending: Some(first),
        last: None,
        _slot: slot,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| async move {
        loop {
            if c.last.as_ref().is_some_and(Batch::is_complete) {
                return None;
            }
            if let Some(batch) = c.pending.take() {
                let name = if batch.is_complete() { "done" } else { "batch" };
                let event = Event::default()
                    .event(name)
                    .json_data(&batch)
                    .expect("a batch serializes");
                c.last = Some(batch);
                return Some((Ok::<_, Infallible>(event), c));
            }
            c.events.recv().await;
            tokio::time::sleep(STREAM_EVERY).await;
            // One read covers every change announced meanwhile.
            c.events.clear();
            match c.state.store.batch(id).await {
                Ok(Some(batch)) if c.last.as_ref() != Some(&batch) => c.pending = Some(batch),
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(error) => {
                    tracing::warn!(batch = %id, %error, "re-reading a watched batch failed")
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn find_batch(state: &AppState, id: BatchId) -> Result<Batch, ApiError> {
    state
        .store
        .batch(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no batch {id}")))
}

fn parse_batch_id(id: &str) -> Result<BatchId, ApiError> {
    id.parse().map_err(|e: jobs::InvalidValue| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).with_field("id")
    })
}
