//! `GET /healthz`: 200 while the store answers, 503 otherwise, and 503
//! while the dispatcher drains after SIGTERM (so Fly's proxy and load
//! balancers stop sending it work). No auth, so Fly's health checks can
//! reach it.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the store answers"), (status = 503, description = "the store does not answer, or the dispatcher is shutting down")))]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutdown.is_triggered() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "draining", "error": "this dispatcher is shutting down"})),
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": "the job store does not answer"})),
        ),
    }
}
