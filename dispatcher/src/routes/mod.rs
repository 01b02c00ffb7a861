//! The HTTP API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /jobs` | submit a job (202 + `Location`) |
//! | `GET /jobs` | list jobs, newest first (`status`, `kind`, `limit`, `cursor`) |
//! | `GET /jobs/{id}` | one job with its attempts; `?wait=N` long-polls |
//! | `GET /jobs/{id}/events` | Server-Sent Events: status, progress, done |
//! | `POST /jobs/{id}/cancel`, `DELETE /jobs/{id}` | cancel |
//! | `POST /jobs/{id}/retry` | a fresh set of attempts for a failed or cancelled job |
//! | `POST /schedules`, `GET /schedules`, `GET`/`DELETE /schedules/{id}` | recurring jobs |
//! | `GET /healthz` | liveness and store reachability (no auth) |

mod error;
mod health;
pub(crate) mod jobs;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

pub use error::ApiError;

use crate::configuration::ApiSettings;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: ::jobs::Store,
    pub api: Arc<ApiSettings>,
    /// Poked after a submit so this dispatcher's launcher reacts at once.
    pub launcher_wakeup: Arc<Notify>,
    /// Once triggered, new jobs are refused with 503 so clients retry
    /// against a peer.
    pub shutdown: crate::shutdown::Shutdown,
    /// Job events, for long-polls and SSE streams.
    pub hub: crate::hub::EventHub,
    pub callbacks: crate::callbacks::Callbacks,
}

/// Liveness path, unauthenticated (fly.toml's health check uses it).
pub const HEALTH_PATH: &str = "/healthz";

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/events", get(jobs::events))
        .route(
            "/schedules",
            post(crate::schedules::create).get(crate::schedules::list),
        )
        .route(
            "/schedules/{id}",
            get(crate::schedules::get).delete(crate::schedules::delete),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.api.clone(),
            crate::auth::require_token,
        ));
    Router::new()
        .route(HEALTH_PATH, get(health::healthz))
        .merge(protected)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(state.api.body_limit))
        .with_state(state)
}
