//! The `/jobs` routes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobs::{CancelResult, JobId, JobStatus, RetryResult};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};
use crate::request::JobRequest;

pub const DEFAULT_LIST_LIMIT: usize = 50;
pub const MAX_LIST_LIMIT: usize = 1000;

/// `POST /jobs`: validate, store, answer 202. Nothing slow happens here:
/// the launcher picks the job up.
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
    let request = parse_json::<JobRequest>(&body)?;
    let (spec, delay) = request.into_spec(&state.api.defaults).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).with_field(e.field)
    })?;
    let job = state.store.enqueue(JobId::new(), &spec, delay).await?;
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

/// Parses a JSON body; syntax errors are 400, well-formed JSON of the
/// wrong shape is 422, and both name the field when there is one.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.get(id).await? {
        Some(job) => Ok(Json(job).into_response()),
        None => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /jobs`: newest first. `?status=failed` lists the dead letters.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let status = query
        .status
        .map(|s| s.parse::<JobStatus>())
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).with_field("status"))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIST_LIMIT}"),
        )
        .with_field("limit"));
    }
    let jobs = state.store.list(status, limit).await?;
    Ok(Json(json!({ "jobs": jobs })).into_response())
}

/// `POST /jobs/{id}/cancel` and `DELETE /jobs/{id}`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let status = match state.store.cancel(id).await? {
        CancelResult::Cancelled => StatusCode::OK,
        // The supervisor stops the machine; the job ends `cancelled`.
        CancelResult::Cancelling => StatusCode::ACCEPTED,
        CancelResult::AlreadyFinished => {
            let job = state.store.get(id).await?;
            let status = job.map_or("finished".to_string(), |j| j.status.to_string());
            return Err(ApiError::conflict(format!(
                "job {id} already {status}; nothing to cancel"
            )));
        }
        CancelResult::Missing => return Err(ApiError::not_found(format!("no job {id}"))),
    };
    tracing::info!(job = %id, "cancel requested");
    job_response(&state, id, status).await
}

/// `POST /jobs/{id}/retry`: failed or cancelled jobs only.
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.retry(id).await? {
        RetryResult::Queued => {
            tracing::info!(job = %id, "retried by request");
            state.launcher_wakeup.notify_one();
            job_response(&state, id, StatusCode::OK).await
        }
        RetryResult::NotFinished => Err(ApiError::conflict(format!(
            "job {id} is neither failed nor cancelled; only those can be retried"
        ))),
        RetryResult::Missing => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

async fn job_response(
    state: &AppState,
    id: JobId,
    status: StatusCode,
) -> Result<Response, ApiError> {
    match state.store.get(id).await? {
        Some(job) => Ok((status, Json(job)).into_response()),
        None => Err(ApiError::not_found(format!("no job {id}"))),
    }
}

fn parse_id(id: &str) -> Result<JobId, ApiError> {
    id.parse().map_err(|e: jobs::InvalidValue| {
        ApiError::new(StatusCode::BAD_REQUEST, e.to_string()).with_field("id")
    })
}
