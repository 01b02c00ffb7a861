//! The mock's own controls: `GET /_mock/stats`, `GET`/`POST /_mock/faults`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;

use crate::error::ApiError;
use crate::faults::FaultSettings;
use crate::server::Shared;
use crate::Stats;

pub async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

pub async fn faults(State(shared): State<Arc<Shared>>) -> Json<FaultSettings> {
    Json(shared.faults.settings())
}

/// Merges the JSON object in the body into the fault settings and answers
/// with the result.
pub async fn set_faults(
    State(shared): State<Arc<Shared>>,
    Json(patch): Json<serde_json::Value>,
) -> Result<Json<FaultSettings>, ApiError> {
    shared
        .faults
        .update(patch)
        .map(Json)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}
