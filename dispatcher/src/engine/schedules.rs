//! Recurring schedules: `POST /schedules` with a cron expression (5 fields,
//! or 6 with seconds first, UTC) or `every_secs`, and a job template (the
//! body of a `POST /jobs`). Every dispatcher runs the [`run`] loop; each
//! tick submits exactly one job however many dispatchers there are (see
//! [`jobs::schedules`] for how).
//!
//! A dispatcher that was down for several ticks fires the latest missed
//! one once on its return, not every missed one.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use croner::Cron;
use jobs::{Enqueued, Schedule, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::api::request::JobRequest;
use crate::api::routes::jobs::{json_body, unprocessable};
use crate::api::routes::{ApiError, AppState};
use crate::configuration::ApiSettings;
use crate::shutdown::Shutdown;

/// The shortest interval `every_secs` accepts.
pub const MIN_EVERY_SECS: u64 = 1;
/// The longest: a year (366 days). Every tick time is computed with
/// checked arithmetic as well, so no value can wrap or panic.
pub const MAX_EVERY_SECS: u64 = 366 * 24 * 3600;
/// Schedules one store may hold, across all dispatchers.
pub const MAX_SCHEDULES: u64 = 1000;
/// The longest `name`, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// The longest `cron` expression, in bytes.
pub const MAX_CRON_LEN: usize = 200;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// 1 to 100 characters, no control characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// 5 fields, or 6 with seconds first; UTC. Exclusive with `every_secs`.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub cron: Option<String>,
    /// 1 to 31,622,400 (366 days).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31622400)]
    pub every_secs: Option<u64>,
    /// The body of the `POST /jobs` each tick submits.
    #[schema(value_type = Object)]
    pub job: Value,
}

/// When a schedule ticks.
enum Cadence {
    Cron(Box<Cron>),
    Every(chrono::Duration),
}

impl Cadence {
    fn parse(cron: Option<&str>, every_secs: Option<u64>) -> Result<Self, ApiError> {
        match (cron, every_secs) {
            (Some(expression), None) if expression.len() > MAX_CRON_LEN => Err(unprocessable(
                "cron",
                format!("at most {MAX_CRON_LEN} bytes"),
            )),
            (Some(expression), None) => expression
                .parse::<Cron>()
                .map(|c| Self::Cron(Box::new(c)))
                .map_err(|e| unprocessable("cron", format!("not a cron expression: {e}"))),
            (None, Some(secs)) if (MIN_EVERY_SECS..=MAX_EVERY_SECS).contains(&secs) => {
                Ok(Self::Every(chrono::Duration::seconds(secs as i64)))
            }
            (None, Some(secs)) => Err(unprocessable(
                "every_secs",
                format!("must be between {MIN_EVERY_SECS} and {MAX_EVERY_SECS}, got {secs}"),
            )),
            _ => Err(unprocessable(
                "cron",
                "give exactly one of cron and every_secs".into(),
            )),
        }
    }

    fn of(schedule: &Schedule) -> Result<Self, ApiError> {
        Self::parse(schedule.cron.as_deref(), schedule.every_secs)
    }

    /// The first tick strictly after `t`.
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.find_next_occurrence(&t, false).ok(),
            Self::Every(every) => t.checked_add_signed(*every),
        }
    }

    /// The tick after `tick` that is still ahead of `now`. Intervals stay
    /// on their grid (no drift), skipping ticks missed while no
    /// dispatcher ran.
    fn following(&self, tick: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(_) => self.next_after(tick.max(now)),
            Self::Every(every) => {
                let every_ms = every.num_milliseconds().max(1);
                let missed = ((now - tick).num_milliseconds() / every_ms).max(0);
                let ahead = every_ms.checked_mul(missed.checked_add(1)?)?;
                tick.checked_add_signed(chrono::TimeDelta::try_milliseconds(ahead)?)
            }
        }
    }
}

/// Checks a job template the way `POST /jobs` would check it.
fn check_template(job: &Value, api: &ApiSettings) -> Result<(), ApiError> {
    let request: JobRequest = serde_json::from_value(job.clone())
        .map_err(|e| unprocessable("job", format!("not a valid job: {e}")))?;
    if request.idempotency_key.is_some() {
        return Err(unprocessable(
            "job.idempotency_key",
            "each tick gets its own key; leave it out".into(),
        ));
    }
    if request
        .machine
        .as_ref()
        .is_some_and(|m| m.secrets.as_ref().is_some_and(|s| !s.is_empty()))
    {
        return Err(unprocessable(
            "job.machine.secrets",
            "a schedule's template is shown in every view of it, so it cannot hold secrets".into(),
        ));
    }
    request
        .into_submission(&api.defaults, Utc::now())
        .map(drop)
        .map_err(|e| unprocessable(&format!("job.{}", e.field), e.message))
}

/// `POST /schedules`.
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = ScheduleRequest,
    responses(
        (status = 201, body = Schedule),
        (status = 400, description = "malformed JSON", body = ApiError),
        (status = 409, description = "the store holds the most schedules it may", body = ApiError),
        (status = 413, description = "body too large", body = ApiError),
        (status = 415, description = "not JSON", body = ApiError),
        (status = 422, description = "invalid schedule; `field` names the problem", body = ApiError),
        (status = 503, description = "store unavailable", body = ApiError)))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (request, _) = json_body::<ScheduleRequest>(&headers, body)?;
    if let Some(name) = &request.name {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(unprocessable(
                "name",
                format!("use 1 to {MAX_NAME_CHARS} characters, no control characters"),
            ));
        }
    }
    let cadence = Cadence::parse(request.cron.as_deref(), request.every_secs)?;
    check_template(&request.job, &state.api)?;
    let now = Utc::now();
    let first = cadence
        .next_after(now)
        .ok_or_else(|| unprocessable("cron", "never matches".into()))?;
    let schedule = Schedule {
        id: Uuid::now_v7(),
        name: request.name,
        cron: request.cron,
        every_secs: request.every_secs,
        job: request.job,
        created_at: now,
        next_run_at: None,
        last_job_id: None,
        last_run_at: None,
    };
    let created = state
        .store
        .create_schedule(&schedule, first.timestamp_millis(), MAX_SCHEDULES)
        .await?;
    if !created {
        return Err(ApiError::conflict(format!(
            "this store holds {MAX_SCHEDULES} schedules, the most it may; delete one first"
        )));
    }
    tracing::info!(schedule = %schedule.id, next = %first, "schedule created");
    let stored = find(&state.store, schedule.id).await?;
    let location = format!("/schedules/{}", schedule.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(stored),
    )
        .into_response())
}

/// `GET /schedules`.
#[utoipa::path(get, path = "/schedules", tag = "schedules",
    responses((status = 200, description = "`{\"schedules\": [Schedule]}`", body = Object)))]
pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let schedules = state.store.list_schedules().await?;
    Ok(Json(json!({ "schedules": schedules })).into_response())
}

/// `GET /schedules/{id}`.
#[utoipa::path(get, path = "/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 200, body = Schedule), (status = 404, body = ApiError)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(find(&state.store, parse_id(&id)?).await?).into_response())
}

/// `DELETE /schedules/{id}`: no more ticks; jobs already submitted stay.
#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules",
    params(("id" = String, Path, description = "schedule id")),
    responses((status = 204, description = "deleted"), (status = 404, body = ApiError)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if state.store.delete_schedule(id).await? {
        tracing::info!(schedule = %id, "schedule deleted");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no schedule {id}")))
    }
}

async fn find(store: &Store, id: Uuid) -> Result<Schedule, ApiError> {
    store
        .get_schedule(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a schedule id"),
        )
        .with_field("id")
    })
}

/// Fires due ticks until shutdown, sleeping until the next one is due.
pub async fn run(store: Store, api: Arc<ApiSettings>, launcher: Arc<Notify>, shutdown: Shutdown) {
    loop {
        let now = Utc::now();
        match store.due_schedules(now.timestamp_millis(), 50).await {
            Ok(due) => {
                for (schedule, tick) in due {
                    if let Err(e) = fire(&store, &api, &schedule, tick, now).await {
                        tracing::warn!(schedule = %schedule.id, error = %e.error, "schedule tick failed");
                    }
                }
                launcher.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "reading due schedules failed"),
        }
        let next = store.next_schedule_tick().await.ok().flatten();
        let sleep = next
            .map(|ms| Duration::from_millis((ms - Utc::now().timestamp_millis()).max(0) as u64))
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Submits the job of one tick (idempotently) and moves to the next tick.
async fn fire(
    store: &Store,
    api: &ApiSettings,
    schedule: &Schedule,
    tick: i64,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let cadence = Cadence::of(schedule)?;
    let mut request: JobRequest = serde_json::from_value(schedule.job.clone())
        .map_err(|e| unprocessable("job", e.to_string()))?;
    request.idempotency_key = Some(format!("schedule:{}:{tick}", schedule.id));
    let submission = request
        .into_submission(&api.defaults, now)
        .map_err(|e| unprocessable(&e.field, e.message))?;
    let job = match submission
        .enqueue(store, format!("tick {tick}"), api.idempotency_ttl)
        .await?
    {
        Enqueued::Created(job) => {
            tracing::info!(schedule = %schedule.id, job = %job.id, "schedule fired");
            job.id
        }
        // Another dispatcher fired this tick first.
        Enqueued::Existing(id) | Enqueued::Conflict(id) => id,
        // The tick joined the job waiting under its singleton key.
        Enqueued::Joined(job) => job.id,
    };
    let next = cadence
        .following(jobs::millis_to_time(tick), now)
        .ok_or_else(|| unprocessable("cron", "never matches again".into()))?;
    store
        .advance_schedule(schedule.id, tick, next.timestamp_millis(), job)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_secs_is_bounded() {
        for bad in [0, MAX_EVERY_SECS + 1, 10_000_000_000_000, u64::MAX] {
            let err = Cadence::parse(None, Some(bad)).err().expect("refused");
            assert_eq!(err.field.as_deref(), Some("every_secs"), "{bad}");
        }
        assert!(Cadence::parse(None, Some(MAX_EVERY_SECS)).is_ok());
        let long = "* ".repeat(MAX_CRON_LEN);
        assert!(Cadence::parse(Some(&long), None).is_err());
    }

    #[test]
    fn tick_arithmetic_never_wraps_or_panics() {
        let Ok(every) = Cadence::parse(None, Some(MAX_EVERY_SECS)) else {
            panic!()
        };
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(every.next_after(end), None);
        assert_eq!(every.following(end, end), None);
        let start = DateTime::<Utc>::MIN_UTC;
        let Ok(second) = Cadence::parse(None, Some(1)) else {
            panic!()
        };
        // Ticks missed for the whole range of time: far ahead, or none.
        let _ = second.following(start, end);
        let now = Utc::now();
        let next = second.following(now - chrono::Duration::seconds(10), now);
        assert!(next.is_some_and(|t| t > now && t <= now + chrono::Duration::seconds(1)));
    }
}
