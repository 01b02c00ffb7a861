//! Auth for the API and the dashboard. Off when no tokens are configured
//! (the `dev` command then binds to loopback only).
//!
//! A request is let in with `Authorization: Bearer <token>` (API clients,
//! Prometheus) or with the [`COOKIE`] the dashboard's login form sets
//! (browsers). The cookie is `HttpOnly` (page scripts cannot read it) and
//! `SameSite=Strict` (other sites cannot make the browser send it, so
//! they cannot press Cancel on the user's behalf).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::configuration::ApiSettings;
use crate::routes::ApiError;

/// The dashboard's session cookie: it holds the API token itself.
pub const COOKIE: &str = "dispatcher_token";

/// Where browsers without a valid token are sent.
pub const LOGIN_PATH: &str = "/login";

pub async fn require_token(
    State(api): State<Arc<ApiSettings>>,
    request: Request,
    next: Next,
) -> Response {
    if api.tokens.is_empty() || presented_tokens(request.headers()).any(|t| api.accepts(t)) {
        return next.run(request).await;
    }
    if crate::routes::wants_html(request.headers()) {
        return Redirect::to(LOGIN_PATH).into_response();
    }
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or invalid API token (Authorization: Bearer <token>)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The bearer token and every value of the session cookie.
fn presented_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookies = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value);
    bearer.into_iter().chain(cookies)
}

impl ApiSettings {
    /// Whether `token` is one of the configured tokens.
    pub fn accepts(&self, token: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }
}

/// Compares without stopping at the first difference, so response times
/// do not reveal how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn finds_the_token_in_the_header_or_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        headers.append(
            header::COOKIE,
            "theme=dark; dispatcher_token=xyz".parse().unwrap(),
        );
        assert_eq!(
            presented_tokens(&headers).collect::<Vec<_>>(),
            ["abc", "xyz"]
        );
    }
}
