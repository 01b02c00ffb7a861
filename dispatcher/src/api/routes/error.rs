//! [`ApiError`]: every error answer is JSON, `{"error": ..., "field": ...}`,
//! with `field` naming the offending part of the request when there is one.
//!
//! An error has two messages, as Dropshot's `HttpError` has: `error`, for
//! the client, and `detail`, for the dispatcher's log only. What the store
//! holds or answered that it should not (a corrupt record, an unexpected
//! script reply) is detail: it names keys and values the client has no
//! business seeing and could not act on.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jobs::StoreError;
use serde::Serialize;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For the log, never sent: logged once, when the answer is made.
    #[serde(skip)]
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
            detail: None,
        }
    }

    /// A `500` whose cause (`detail`) goes to the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            detail: Some(detail.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the dispatcher's log has the details",
            )
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn conflict(error: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, error)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self {
                detail: Some(e.to_string()),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the job store is unavailable; try again shortly",
                )
            },
            StoreError::Corrupt(_) => Self::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        if let Some(detail) = &self.detail {
            if status == StatusCode::SERVICE_UNAVAILABLE {
                tracing::warn!(%status, error = %self.error, %detail, "request refused");
            } else {
                tracing::error!(%status, error = %self.error, %detail, "request failed");
            }
        }
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
