//! The `/jobs` routes.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Extension;
use axum::Json;
use jobs::{CancelResult, Enqueued, EventKind, Job, JobId, JobStatus, ListFilter, RetryResult};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{ApiError, AppState};
use crate::api::auth::Caller;
use crate::api::request::{idempotency_key, JobRequest};
use crate::configuration::SubmitReplicas;

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 200;
/// A full listing (`?full=true`) stops adding jobs past this many bytes.
pub const LIST_BYTE_BUDGET: usize = 4 << 20;
/// Longest `?wait=` a long-poll may ask for, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// `POST /jobs`: validate, store, answer 202. Nothing slow happens here:
/// the launcher picks the job up. A repeat under the same idempotency key
/// answers 200 with the first job; a different request under it, 409.
#[utoipa::path(post, path = "/jobs", tag = "jobs", request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "same as the idempotency_key field")),
    responses(
        (status = 202, description = "stored; runs when a machine slot is free", body = Job),
        (status = 200, description = "a repeat under the same idempotency key: the first job; or the job waiting under the singleton key that took this submit (policy keep, or an open debounce)", body = Job),
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
    intake_open(&state)?;
    let (mut request, body) = json_body::<JobRequest>(&headers, body)?;
    with_header_key(&headers, &mut request.idempotency_key)?;
    let submission = request
        .into_submission(&state.api.defaults, chrono::Utc::now())
        .map_err(|e| unprocessable(&e.field, e.message))?;
    // The raw body identifies the request: a retry sends the same bytes.
    let request_hash = crate::engine::callbacks::hex(&Sha256::digest(&body));
    if submission.fans_in() {
        return super::batches::submit_fanned_in(&state, submission, request_hash).await;
    }
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
        Enqueued::Joined(job) => {
            tracing::info!(job = %job.id, kind = %job.kind, "submit joined the job waiting under its singleton key");
            let location = format!("/jobs/{}", job.id);
            Ok((StatusCode::OK, [(header::LOCATION, location)], Json(job)).into_response())
        }
        Enqueued::Conflict(id) => Err(ApiError::conflict(format!(
            "idempotency key already used by job {id} for a different request"
        ))
        .with_field("idempotency_key")),
    }
}

/// The `Idempotency-Key` header, the same as the body's
/// `idempotency_key` (`POST /jobs`, `POST /batches`): it fills the field,
/// and a header that differs from the field is a 422.
pub(crate) fn with_header_key(
    headers: &HeaderMap,
    field: &mut Option<String>,
) -> Result<(), ApiError> {
    let header_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| unprocessable("Idempotency-Key", "must be visible ASCII".into()))?;
    match (&header_key, &*field) {
        (Some(h), Some(f)) if h != f => Err(unprocessable(
            "idempotency_key",
            "differs from the Idempotency-Key header".into(),
        )),
        (Some(h), _) => {
            *field =
                Some(idempotency_key(h.clone()).map_err(|e| unprocessable(&e.field, e.message))?);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Durability mode: the job counts as accepted only once it reached the
/// replicas, so a failover right after the 202 cannot lose it. When they
/// do not confirm in time the job may still exist, so the answer asks the
/// client to retry with the same idempotency key (which finds it) rather
/// than to give up.
pub(crate) async fn await_replicas(
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

/// New work is refused (503) once this dispatcher is draining: the proxy
/// sends the client's retry to a peer (a submit route's first step).
pub(crate) fn intake_open(state: &AppState) -> Result<(), ApiError> {
    if state.shutdown.is_triggered() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this dispatcher is shutting down; submit to another one",
        ));
    }
    Ok(())
}

/// The one way a JSON request body is read (`POST /jobs`,
/// `POST /schedules`): `Content-Type: application/json` or 415, a body
/// over the limit is a JSON 413, then [`parse_json`]. Returns the raw
/// bytes too (they identify the request for idempotency).
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(T, Bytes), ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON with Content-Type: application/json",
        ));
    }
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    Ok((parse_json(&body)?, body))
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
        let field = crate::api::request::field_of(path, &message);
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
/// (`Accept: text/html`) gets the dashboard's job page instead. A
/// long-poll holds one of the caller's long-poll slots while it waits.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "job id"), GetQuery),
    responses(
        (status = 200, description = "the job; HTML (the dashboard's job page) when `Accept` names text/html",
            content((Job = "application/json"), (String = "text/html"))),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 429, description = "this token holds its most long-polls; see Retry-After", body = ApiError),
        (status = 503, description = "this dispatcher holds its most long-polls; see Retry-After", body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // The answer depends on `Accept`: caches must keep the two apart.
    let vary = [(header::VARY, "accept")];
    if super::wants_html(&headers) {
        let job = find(&state, id).await?;
        return Ok((vary, Html(crate::api::dashboard::pages::job_page(&job))).into_response());
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
    if wait == 0 {
        return Ok((vary, Json(find(&state, id).await?)).into_response());
    }
    let _slot = match state.limits.long_polls.acquire(caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    let mut watch = JobWatch::start(&state, id);
    let mut job = find(&state, id).await?;
    let deadline = Instant::now() + Duration::from_secs(wait);
    while !job.status.is_terminal() {
        match tokio::time::timeout_at(deadline, watch.changed(&state, id)).await {
            Ok(Some(changed)) => job = changed,
            Ok(None) => return Err(ApiError::not_found(format!("no job {id}"))),
            Err(_) => break,
        }
    }
    Ok((vary, Json(job)).into_response())
}

/// Follows one job through the hub's events: a store read happens only
/// when an event says the job changed (or the hub may have missed some),
/// never on a timer, so idle watchers cost the store nothing.
struct JobWatch {
    events: crate::engine::hub::Subscription,
}

impl JobWatch {
    /// Subscribes; read the job after this, so a change in between is
    /// not missed.
    fn start(state: &AppState, id: JobId) -> Self {
        Self {
            events: state.hub.subscribe(id),
        }
    }

    /// The job after its next change that a client can see; `None` once
    /// it is gone (purged). A store error is retried at the next event.
    /// After the hub may have missed messages (`Resync`), it re-reads too.
    async fn changed(&mut self, state: &AppState, id: JobId) -> Option<Job> {
        loop {
            let event = self.events.recv().await;
            if !matches!(
                event.kind,
                EventKind::Status | EventKind::Progress | EventKind::Report | EventKind::Resync
            ) {
                continue;
            }
            match state.store.get(id).await {
                Ok(Some(job)) => return Some(job),
                Ok(None) => return None,
                Err(error) => tracing::warn!(job = %id, %error, "re-reading a watched job failed"),
            }
        }
    }
}

/// `GET /jobs/{id}/events`: Server-Sent Events. Each event carries the
/// whole job view: `status` on every status change (the first one at
/// once), `progress` when the handler reports progress, and `done` once
/// the job is finished, after which the stream ends. A stream holds one of
/// the caller's stream slots until it ends or the client goes away.
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    responses(
        (status = 200, description = "text/event-stream of `status`, `progress` and `done` events, each with the job as data", content_type = "text/event-stream", body = String),
        (status = 404, body = ApiError),
        (status = 429, description = "this token holds its most event streams; see Retry-After", body = ApiError),
        (status = 503, description = "this dispatcher holds its most event streams; see Retry-After", body = ApiError)))]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let slot = match state.limits.streams.acquire(caller) {
        Ok(slot) => slot,
        Err(refused) => return Ok(refused.into_response()),
    };
    let watch = JobWatch::start(&state, id);
    let first = find(&state, id).await?;

    struct Cursor {
        state: AppState,
        watch: JobWatch,
        /// What the client last saw: only a change of these is sent.
        last: Option<(JobStatus, Option<jobs::Progress>)>,
        pending: Option<Job>,
        _slot: crate::api::limits::Slot,
    }
    let cursor = Cursor {
        state,
        watch,
        last: None,
        pending: Some(first),
        _slot: slot,
    };
    let stream = futures::stream::unfold(cursor, move |mut c| async move {
        loop {
            if c.last
                .as_ref()
                .is_some_and(|(status, _)| status.is_terminal())
            {
                return None;
            }
            if let Some(job) = c.pending.take() {
                let name = match &c.last {
                    _ if job.status.is_terminal() => "done",
                    Some((status, _)) if *status == job.status => "progress",
                    _ => "status",
                };
                let event = Event::default()
                    .event(name)
                    .json_data(&job)
                    .expect("a job serializes");
                c.last = Some((job.status, job.progress));
                return Some((Ok::<_, Infallible>(event), c));
            }
            let job = c.watch.changed(&c.state, id).await?;
            let changed = c.last.as_ref().is_none_or(|(status, progress)| {
                *status != job.status || *progress != job.progress
            });
            if changed {
                c.pending = Some(job);
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    status: Option<String>,
    kind: Option<String>,
    /// Only jobs with this tag.
    tag: Option<String>,
    /// Only the children of this job.
    parent: Option<String>,
    /// Jobs per page, 1 to 200 (default 50).
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Include each job's `params` and `result` (left out by default, so
    /// a page stays small whatever the jobs carry). A full page also ends
    /// early, at about 4 MiB of jobs; `next_cursor` continues it.
    full: Option<bool>,
}

/// `GET /jobs`: newest first. `?status=failed` lists the dead letters.
/// Pages are stable: follow `next_cursor` until it is null (with `tag` or
/// `parent`, a page may hold fewer than `limit` jobs before the end).
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "`{\"jobs\": [Job], \"next_cursor\": id or null}`; without `full=true` each job lacks `params` and `result`", body = Object), (status = 400, body = ApiError)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = list_filter(FilterText {
        status: query.status,
        kind: query.kind,
        tag: query.tag,
        parent: query.parent,
        cursor: query.cursor,
    })?;
    let limit = list_limit(query.limit)?;
    let page = state.store.list(&filter, limit).await?;
    let (jobs, next) = page_body(page, query.full.unwrap_or(false));
    Ok(Json(json!({ "jobs": jobs, "next_cursor": next })).into_response())
}

/// A listing's `limit`: 1 to [`MAX_LIST_LIMIT`], default [`DEFAULT_LIST_LIMIT`].
pub(crate) fn list_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIST_LIMIT}"),
        )
        .with_field("limit"));
    }
    Ok(limit)
}

/// The jobs of a listing page as JSON: summaries (no `params`, `result`),
/// or whole jobs up to [`LIST_BYTE_BUDGET`], where the page is cut and
/// its cursor moved back to the last job shown.
pub(crate) fn page_body(page: jobs::Page, full: bool) -> (Vec<serde_json::Value>, Option<JobId>) {
    let mut shown = Vec::with_capacity(page.jobs.len());
    let mut bytes = 0;
    let mut last = None;
    for job in page.jobs {
        let id = job.id;
        let mut value = serde_json::to_value(job).expect("a job serializes");
        if let Some(fields) = value.as_object_mut().filter(|_| !full) {
            fields.remove("params");
            fields.remove("result");
            fields.remove("inputs");
        }
        bytes += value.to_string().len();
        if bytes > LIST_BYTE_BUDGET && last.is_some() {
            return (shown, last);
        }
        shown.push(value);
        last = Some(id);
    }
    (shown, page.next)
}

/// The filters of a job listing as text, as the API, the dashboard and
/// the bulk actions take them.
#[derive(Debug, Default)]
pub(crate) struct FilterText {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    pub parent: Option<String>,
    pub cursor: Option<String>,
}

/// Parses [`FilterText`]; a bad filter is a 400 naming it.
pub(crate) fn list_filter(text: FilterText) -> Result<ListFilter, ApiError> {
    let FilterText {
        status,
        kind,
        tag,
        parent,
        cursor,
    } = text;
    let bad = |field: &str, message: String| {
        ApiError::new(StatusCode::BAD_REQUEST, message).with_field(field)
    };
    Ok(ListFilter {
        batch: None,
        tag: tag
            .map(|t| jobs::Tag::parse(&t))
            .transpose()
            .map_err(|e| bad("tag", e.to_string()))?,
        parent: parent
            .map(|p| p.parse::<JobId>())
            .transpose()
            .map_err(|e| bad("parent", e.to_string()))?,
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
    crate::engine::terminal::on_terminal(
        &state.store,
        &state.callbacks,
        id,
        job.status,
        job.callback_url.is_some(),
    )
    .await;
    Ok((status, Json(job)).into_response())
}

/// `POST /jobs/{id}/retry`: failed, cancelled or expired jobs only. An
/// optional JSON body changes the machine (size, region, env) or the
/// timeout of the new attempts.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs",
    params(("id" = String, Path, description = "job id")),
    request_body(content = Option<crate::api::run_request::RetryRequest>, description = "optional overrides"),
    responses((status = 200, body = Job), (status = 404, body = ApiError),
        (status = 409, description = "not failed, cancelled or expired, or its secrets are gone", body = ApiError),
        (status = 415, description = "a body that is not JSON", body = ApiError),
        (status = 422, description = "invalid overrides; `field` names the problem", body = ApiError)))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let request = match &body {
        Ok(bytes) if bytes.is_empty() => crate::api::run_request::RetryRequest::default(),
        _ => json_body::<crate::api::run_request::RetryRequest>(&headers, body)?.0,
    };
    let job = find(&state, id).await?;
    let overrides = request
        .into_overrides(&job.machine, &state.api.defaults)
        .map_err(|e| unprocessable(&e.field, e.message))?;
    retry_job(&state, id, &overrides).await
}

/// Retries one job; the one answer of `POST /jobs/{id}/retry`.
pub(crate) async fn retry_job(
    state: &AppState,
    id: JobId,
    overrides: &jobs::RetryOverrides,
) -> Result<Response, ApiError> {
    match state.store.retry(id, overrides).await? {
        RetryResult::Queued => {
            state.launcher_wakeup.notify_one();
            let job = find(state, id).await?;
            tracing::info!(job = %id, status = %job.status, "retried by request");
            Ok(Json(job).into_response())
        }
        RetryResult::NotFinished => Err(ApiError::conflict(format!(
            "job {id} is not failed, cancelled or expired; only those can be retried"
        ))),
        RetryResult::Missing => Err(ApiError::not_found(format!("no job {id}"))),
        RetryResult::SecretsGone => Err(ApiError::conflict(format!(
            "job {id} had secrets, deleted when it finished; submit it again with them"
        ))),
    }
}

/// The job's view; a queued one says what holds it back, if anything
/// does beyond its turn (flow control: a pause, a limit, a rate limit).
pub(crate) async fn find(state: &AppState, id: JobId) -> Result<Job, ApiError> {
    let mut job = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    if job.status == JobStatus::Queued {
        job.waiting_for = state
            .store
            .waiting_for(&job.kind, job.concurrency_key.as_ref())
            .await?;
    }
    Ok(job)
}

pub(crate) fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|e: jobs::InvalidValue| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).with_field("id")
    })
}
