//! `POST /jobs/bulk/cancel` and `POST /jobs/bulk/retry`: act on every job
//! a filter matches, one page per request. Each request reads at most
//! `limit` jobs (the listing index of [`jobs::Store::list`]) and answers
//! with `next_cursor` to continue, so no request does unbounded work and
//! no single store script runs long. `dry_run` counts without changing
//! anything, page by page the same way.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use jobs::{CancelResult, Job, JobStatus, RetryOverrides, RetryResult};
use serde::{Deserialize, Serialize};

use super::jobs::{json_body, list_filter, FilterText};
use super::{ApiError, AppState};

/// Jobs one bulk request reads, by default and at most.
pub const DEFAULT_BULK_LIMIT: usize = 100;
pub const MAX_BULK_LIMIT: usize = 500;
/// Store calls in flight at once within one bulk request.
const CONCURRENCY: usize = 16;

/// The body of a bulk action: the filters of `GET /jobs` (at least one),
/// the page to act on, and whether to only count.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub tag: Option<String>,
    /// Only the children of this job.
    pub parent: Option<String>,
    /// `next_cursor` of the previous answer.
    pub cursor: Option<String>,
    /// Jobs read by this request, 1 to 500 (default 100).
    #[schema(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Count what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What one bulk request did (or, with `dry_run`, would do) on its page.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkAnswer {
    pub dry_run: bool,
    /// Jobs of this page that match the filters.
    pub matched: u64,
    /// Of those, the ones cancelled or retried (would be, in a dry run).
    pub changed: u64,
    /// Where the next request continues; `null` when the filter is done.
    pub next_cursor: Option<String>,
}

#[derive(Clone, Copy)]
enum Action {
    Cancel,
    Retry,
}

impl Action {
    /// Whether the action applies to a job in `status`, as its script
    /// decides (`cancel.lua`, `retry.lua`): the dry run's answer.
    fn applies(self, status: JobStatus) -> bool {
        match self {
            Self::Cancel => !status.is_terminal(),
            Self::Retry => matches!(
                status,
                JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
            ),
        }
    }
}

/// `POST /jobs/bulk/cancel`.
#[utoipa::path(post, path = "/jobs/bulk/cancel", tag = "jobs", request_body = BulkRequest,
    responses(
        (status = 200, description = "this page done; continue with `next_cursor` until it is null", body = BulkAnswer),
        (status = 400, description = "malformed JSON or filter", body = ApiError),
        (status = 422, description = "no filter, or a bad one; `field` names it", body = ApiError)))]
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    bulk(&state, &headers, body, Action::Cancel).await
}

/// `POST /jobs/bulk/retry`: failed, cancelled and expired jobs only.
#[utoipa::path(post, path = "/jobs/bulk/retry", tag = "jobs", request_body = BulkRequest,
    responses(
        (status = 200, description = "this page done; continue with `next_cursor` until it is null", body = BulkAnswer),
        (status = 400, description = "malformed JSON or filter", body = ApiError),
        (status = 422, description = "no filter, or a bad one; `field` names it", body = ApiError)))]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    bulk(&state, &headers, body, Action::Retry).await
}

async fn bulk(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    action: Action,
) -> Result<Response, ApiError> {
    let (request, _) = json_body::<BulkRequest>(headers, body)?;
    let unprocessable = |field: &str, message: String| super::jobs::unprocessable(field, message);
    if request.status.is_none()
        && request.kind.is_none()
        && request.tag.is_none()
        && request.parent.is_none()
    {
        return Err(unprocessable(
            "status",
            "give at least one filter (status, kind, tag or parent)".into(),
        ));
    }
    let limit = request.limit.unwrap_or(DEFAULT_BULK_LIMIT);
    if !(1..=MAX_BULK_LIMIT).contains(&limit) {
        return Err(unprocessable(
            "limit",
            format!("must be between 1 and {MAX_BULK_LIMIT}, got {limit}"),
        ));
    }
    let filter = list_filter(FilterText {
        status: request.status,
        kind: request.kind,
        tag: request.tag,
        parent: request.parent,
        cursor: request.cursor,
    })
    // In a body, a bad filter is a 422 like any bad field.
    .map_err(|mut e| {
        e.status = StatusCode::UNPROCESSABLE_ENTITY;
        e
    })?;
    let page = state.store.list(&filter, limit).await?;
    let matched = page.jobs.len() as u64;
    let eligible: Vec<Job> = page
        .jobs
        .into_iter()
        .filter(|job| action.applies(job.status))
        .collect();
    let changed = if request.dry_run {
        eligible.len() as u64
    } else {
        let done: Vec<bool> = futures::stream::iter(eligible)
            .map(|job| act(state, action, job))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        if done.iter().any(|d| *d) && matches!(action, Action::Retry) {
            state.launcher_wakeup.notify_one();
        }
        done.into_iter().filter(|d| *d).count() as u64
    };
    tracing::info!(
        action = match action {
            Action::Cancel => "cancel",
            Action::Retry => "retry",
        },
        dry_run = request.dry_run,
        matched,
        changed,
        "bulk action"
    );
    Ok(Json(BulkAnswer {
        dry_run: request.dry_run,
        matched,
        changed,
        next_cursor: page.next.map(|id| id.to_string()),
    })
    .into_response())
}

/// Applies `action` to one job; whether it changed it. A job that moved
/// on meanwhile (finished, retried by someone else) is left alone.
async fn act(state: &AppState, action: Action, job: Job) -> Result<bool, ApiError> {
    Ok(match action {
        Action::Cancel => match state.store.cancel(job.id).await? {
            CancelResult::Cancelled => {
                if let Some(job) = state.store.get(job.id).await? {
                    state.callbacks.deliver(&job);
                }
                true
            }
            CancelResult::Cancelling => true,
            CancelResult::AlreadyFinished | CancelResult::Missing => false,
        },
        Action::Retry => matches!(
            state
                .store
                .retry(job.id, &RetryOverrides::default())
                .await?,
            RetryResult::Queued
        ),
    })
}
