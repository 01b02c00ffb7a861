//! `GET /metrics`: Prometheus text. Behind the API token like every data
//! route (Prometheus sends it with `authorization.credentials`).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, AppState};

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text: the store's gauges and this dispatcher's counters and histograms", content_type = "text/plain", body = String),
        (status = 503, description = "store unavailable", body = ApiError)))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = crate::metrics::render(&state.store).await?;
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], text))
}
