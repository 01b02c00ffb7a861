//! [`ApiError`]: every way a call can fail, and the status code and
//! `{"error": "...", "status": "..."}` body the real API answers with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use machines::ErrorResponse;

/// A failed call. The `Display` text is the `error` field of the body;
/// like flyd's, most messages start with a gRPC-style code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Authenticate: token validation error")]
    Unauthorized,
    #[error("not_found: {0}")]
    NotFound(String),
    /// Malformed query or body (400).
    #[error("invalid_argument: {0}")]
    BadRequest(String),
    /// A well-formed body that describes an impossible machine (422).
    #[error("invalid_argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("failed_precondition: {0}")]
    Precondition(String),
    /// `wait` gave up (408).
    #[error(
        "deadline_exceeded: machine failed to reach desired state, {want}, currently {current}"
    )]
    WaitTimeout { want: String, current: String },
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// The region has no room for another machine (`status: insufficient_capacity`).
    #[error("insufficient resources available to fulfill request: could not reserve resource for machine")]
    InsufficientCapacity,
    /// An error injected through the fault settings.
    #[error("{message}")]
    Injected { status: StatusCode, message: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Precondition(_) | Self::InsufficientCapacity => StatusCode::PRECONDITION_FAILED,
            Self::WaitTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Injected { status, .. } => *status,
        }
    }

    /// The machine `id` does not exist in `app`.
    pub fn machine_not_found(id: &str) -> Self {
        Self::NotFound(format!("machine {id} not found"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.to_string(),
            status: matches!(self, Self::InsufficientCapacity)
                .then(|| "insufficient_capacity".to_string()),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::RateLimited { retry_after_secs } = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}
