//! Bearer-token authentication, in the three forms Fly accepts:
//! `Bearer X`, `FlyV1 X` and `Bearer FlyV1 X`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::server::Shared;

/// Rejects requests without the configured token with 401.
pub async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_of);
    if presented.is_some_and(|t| t == shared.config.token) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The token in an `Authorization` header value.
fn token_of(header: &str) -> Option<&str> {
    let header = header.trim();
    let rest = strip_scheme(header, "Bearer").unwrap_or(header);
    let rest = strip_scheme(rest, "FlyV1").unwrap_or(rest);
    (rest != header && !rest.is_empty()).then_some(rest)
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (word, rest) = value.split_once(' ')?;
    word.eq_ignore_ascii_case(scheme).then(|| rest.trim_start())
}

#[cfg(test)]
mod tests {
    use super::token_of;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(token_of("Bearer abc"), Some("abc"));
        assert_eq!(token_of("FlyV1 fm2_abc"), Some("fm2_abc"));
        assert_eq!(token_of("Bearer FlyV1 fm2_abc"), Some("fm2_abc"));
        assert_eq!(token_of("abc"), None);
        assert_eq!(token_of("Basic abc"), None);
        assert_eq!(token_of("Bearer "), None);
    }
}
