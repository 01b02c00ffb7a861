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
    /// flyctl matches on the text (`machine not found`, `lease not found`),
    /// so these carry no code prefix.
    #[error("{0}")]
    NotFound(String),
    /// Malformed query or body (400).
    #[error("invalid_argument: {0}")]
    BadRequest(String),
    /// A well-formed body that describes an impossible machine (422).
    #[error("invalid_argument: {0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// A known path with a method it does not serve (405).
    #[error("{0}")]
    MethodNotAllowed(String),
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
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Precondition(_) | Self::InsufficientCapacity => StatusCode::PRECONDITION_FAILED,
            Self::WaitTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Injected { status, .. } => *status,
        }
    }

    /// The machine does not exist in the app. The id is left out: the
    /// text is what flyctl matches on.
    pub fn machine_not_found() -> Self {
        Self::NotFound("machine not found".to_string())
    }

    /// The machine holds no lease.
    pub fn lease_not_found() -> Self {
        Self::NotFound("lease not found".to_string())
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
