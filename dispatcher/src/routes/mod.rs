//! The HTTP API.
//!
//! | route | what |
//! | --- | --- |
//! | `POST /jobs` | submit a job (202 + `Location`) |
//! | `GET /jobs` | list jobs, newest first (`status`, `limit`) |
//! | `GET /jobs/{id}` | one job with its attempts |
//! | `POST /jobs/{id}/cancel`, `DELETE /jobs/{id}` | cancel |
//! | `POST /jobs/{id}/retry` | a fresh set of attempts for a failed or cancelled job |
//! | `GET /healthz` | liveness and store reachability (no auth) |

mod error;
mod health;
mod jobs;

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
}

/// Liveness path, unauthenticated (fly.toml's health check uses it).
pub const HEALTH_PATH: &str = "/healthz";

pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/retry", post(jobs::retry))
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
