//! The flow-control routes (docs/flow-control.md): concurrency limits per
//! key, rate limits and pauses per kind or key, all held in the store so
//! every dispatcher applies them at its next claim.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobs::{FlowKey, FlowOverview, RateLimit, Scope};
use serde::Deserialize;
use serde_json::json;

use super::jobs::{json_body, unprocessable};
use super::{ApiError, AppState};

/// Keys `GET /flow` lists by machines held.
pub const OVERVIEW_TOP_KEYS: usize = 50;
/// Highest concurrency limit a key may be given.
pub const MAX_KEY_LIMIT: u32 = 100_000;
/// Most starts a rate limit may allow per interval, and its longest
/// interval.
pub const MAX_RATE_PER: u32 = 1_000_000;
pub const MAX_RATE_INTERVAL_SECS: u64 = 86_400;

/// The body of `PUT /concurrency/{key}` and `PUT /concurrency`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Machines the key's jobs may hold at once, across dispatchers.
    #[schema(minimum = 1, maximum = 100000)]
    pub limit: u32,
}

/// The body of `PUT /rate-limits/{scope}/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRequest {
    /// Starts allowed per interval.
    #[schema(minimum = 1, maximum = 1000000)]
    pub per: u32,
    #[schema(minimum = 1, maximum = 86400)]
    pub interval_secs: u64,
    /// Starts allowed back to back (default 1: then never more than
    /// `per` in any interval; more allows up to `per + burst - 1`).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000000)]
    pub burst: Option<u32>,
}

impl LimitRequest {
    fn limit(body: Result<Bytes, BytesRejection>, headers: &HeaderMap) -> Result<u32, ApiError> {
        let (request, _) = json_body::<LimitRequest>(headers, body)?;
        if request.limit == 0 || request.limit > MAX_KEY_LIMIT {
            return Err(unprocessable(
                "limit",
                format!("must be between 1 and {MAX_KEY_LIMIT} (pause a key to stop it)"),
            ));
        }
        Ok(request.limit)
    }
}

impl RateLimitRequest {
    fn into_limit(self) -> Result<RateLimit, ApiError> {
        let check = |field: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(unprocessable(field, format!("must be between 1 and {max}")))
            } else {
                Ok(value)
            }
        };
        let per = check("per", self.per.into(), MAX_RATE_PER.into())? as u32;
        let interval = check("interval_secs", self.interval_secs, MAX_RATE_INTERVAL_SECS)?;
        let burst = check("burst", self.burst.unwrap_or(1).into(), MAX_RATE_PER.into())? as u32;
        Ok(RateLimit {
            per,
            interval_ms: interval * 1000,
            burst,
        })
    }
}

fn key(key: &str) -> Result<FlowKey, ApiError> {
    FlowKey::parse(key).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.0).with_field("key"))
}

fn scope(scope: &str, name: &str) -> Result<Scope, ApiError> {
    Scope::parse(scope, name).map_err(|e| {
        let field = if matches!(scope, "kind" | "key") {
            "name"
        } else {
            "scope"
        };
        ApiError::new(StatusCode::BAD_REQUEST, e.0).with_field(field)
    })
}

/// `GET /flow`: every flow-control setting, and the keys holding the most
/// machines.
#[utoipa::path(get, path = "/flow", tag = "flow",
    responses((status = 200, body = FlowOverview)))]
pub async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    let overview = state.store.flow_overview(OVERVIEW_TOP_KEYS).await?;
    Ok(Json(overview).into_response())
}

/// `PUT /concurrency/{key}`: the key's jobs hold at most `limit` machines
/// at once, across dispatchers (instead of the default limit).
#[utoipa::path(put, path = "/concurrency/{key}", tag = "flow", request_body = LimitRequest,
    params(("key" = String, Path, description = "a concurrency key")),
    responses(
        (status = 200, description = "`{\"key\", \"limit\"}`", body = Object),
        (status = 400, description = "not a valid key", body = ApiError)))]
pub async fn set_limit(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key(&name)?;
    let limit = LimitRequest::limit(body, &headers)?;
    state.store.set_key_limit(&key, Some(limit)).await?;
    tracing::info!(%key, limit, "concurrency limit set");
    Ok(Json(json!({ "key": key, "limit": limit })).into_response())
}

/// `DELETE /concurrency/{key}`: the key is back to the default limit.
#[utoipa::path(delete, path = "/concurrency/{key}", tag = "flow",
    params(("key" = String, Path, description = "a concurrency key")),
    responses(
        (status = 204, description = "removed (or there was none)"),
        (status = 400, description = "not a valid key", body = ApiError)))]
pub async fn remove_limit(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let key = key(&name)?;
    state.store.set_key_limit(&key, None).await?;
    tracing::info!(%key, "concurrency limit removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /concurrency`: the limit of every key without its own.
#[utoipa::path(put, path = "/concurrency", tag = "flow", request_body = LimitRequest,
    responses((status = 200, description = "`{\"default_limit\"}`", body = Object)))]
pub async fn set_default_limit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = LimitRequest::limit(body, &headers)?;
    state.store.set_default_key_limit(Some(limit)).await?;
    tracing::info!(limit, "default concurrency limit set");
    Ok(Json(json!({ "default_limit": limit })).into_response())
}

/// `DELETE /concurrency`: keys without their own limit have none.
#[utoipa::path(delete, path = "/concurrency", tag = "flow",
    responses((status = 204, description = "removed (or there was none)")))]
pub async fn remove_default_limit(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.store.set_default_key_limit(None).await?;
    tracing::info!("default concurrency limit removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /rate-limits/{scope}/{name}`: jobs of a kind (`kind/{kind}`) or a
/// key (`key/{key}`) start at most `per` each `interval_secs`, across
/// dispatchers. The bucket starts full.
#[utoipa::path(put, path = "/rate-limits/{scope}/{name}", tag = "flow", request_body = RateLimitRequest,
    params(
        ("scope" = String, Path, description = "`kind` or `key`"),
        ("name" = String, Path, description = "the kind or the concurrency key")),
    responses(
        (status = 200, description = "`{\"scope\", \"rate_limit\"}`", body = Object),
        (status = 400, description = "bad scope or name", body = ApiError)))]
pub async fn set_rate(
    State(state): State<AppState>,
    Path((scope_name, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let scope = scope(&scope_name, &name)?;
    let (request, _) = json_body::<RateLimitRequest>(&headers, body)?;
    let limit = request.into_limit()?;
    state.store.set_rate_limit(&scope, Some(limit)).await?;
    tracing::info!(%scope, per = limit.per, interval_ms = limit.interval_ms, burst = limit.burst, "rate limit set");
    Ok(Json(json!({ "scope": scope.to_string(), "rate_limit": limit })).into_response())
}

/// `DELETE /rate-limits/{scope}/{name}`.
#[utoipa::path(delete, path = "/rate-limits/{scope}/{name}", tag = "flow",
    params(
        ("scope" = String, Path, description = "`kind` or `key`"),
        ("name" = String, Path, description = "the kind or the concurrency key")),
    responses(
        (status = 204, description = "removed (or there was none)"),
        (status = 400, description = "bad scope or name", body = ApiError)))]
pub async fn remove_rate(
    State(state): State<AppState>,
    Path((scope_name, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let scope = scope(&scope_name, &name)?;
    state.store.set_rate_limit(&scope, None).await?;
    tracing::info!(%scope, "rate limit removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /pauses/{scope}/{name}`: no job of the kind or key starts until
/// it is resumed; its jobs stay queued, and running ones run on.
#[utoipa::path(put, path = "/pauses/{scope}/{name}", tag = "flow",
    params(
        ("scope" = String, Path, description = "`kind` or `key`"),
        ("name" = String, Path, description = "the kind or the concurrency key")),
    responses(
        (status = 204, description = "paused (or already was)"),
        (status = 400, description = "bad scope or name", body = ApiError)))]
pub async fn pause(
    State(state): State<AppState>,
    Path((scope_name, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_paused(&state, &scope_name, &name, true).await
}

/// `DELETE /pauses/{scope}/{name}`: resume.
#[utoipa::path(delete, path = "/pauses/{scope}/{name}", tag = "flow",
    params(
        ("scope" = String, Path, description = "`kind` or `key`"),
        ("name" = String, Path, description = "the kind or the concurrency key")),
    responses(
        (status = 204, description = "resumed (or was not paused)"),
        (status = 400, description = "bad scope or name", body = ApiError)))]
pub async fn resume(
    State(state): State<AppState>,
    Path((scope_name, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    set_paused(&state, &scope_name, &name, false).await
}

async fn set_paused(
    state: &AppState,
    scope_name: &str,
    name: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    let scope = scope(scope_name, name)?;
    state.store.set_paused(&scope, paused).await?;
    tracing::info!(%scope, paused, "pause changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
