//! Auth for the API and the dashboard. Off when no tokens are configured
//! (the `dev` command then binds to loopback only).
//!
//! A request is let in with `Authorization: Bearer <token>` (API clients,
//! Prometheus; the scheme is matched without regard to case, RFC 7235) or
//! with the dashboard's session cookie ([`COOKIE`]), which holds a random
//! session id stored with an expiry ([`jobs::sessions`]), never the token:
//! logout deletes the session, so a copied cookie stops working.
//!
//! One credential per request: two `Authorization` headers, or two
//! session cookies, are refused (400) rather than tried in turn, so one
//! request cannot test many guesses; with a bearer token present the
//! cookie is not looked at.
//!
//! The middleware leaves a [`Caller`] in the request's extensions: rate
//! limits and stream caps are counted per caller ([`crate::api::limits`]).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::routes::{ApiError, AppState};
use crate::configuration::ApiSettings;

/// The dashboard's session cookie: a session id, see [`jobs::sessions`].
pub const COOKIE: &str = "dispatcher_session";

/// Where browsers without a valid session are sent.
pub const LOGIN_PATH: &str = "/login";

/// Who made a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The holder of the configured token at this position (by bearer
    /// token or by a session opened with it).
    Token(usize),
    /// Anyone: no tokens are configured.
    Open,
}

/// The one credential a request carries.
#[derive(Debug, PartialEq, Eq)]
enum Credential<'a> {
    Bearer(&'a str),
    Session(&'a str),
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match identify(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    if let Err(refusal) = state.limits.admit(caller) {
        return refusal.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    if state.api.tokens.is_empty() {
        return Ok(Caller::Open);
    }
    let found = match credential(headers) {
        Err(problem) => return Err(ApiError::new(StatusCode::BAD_REQUEST, problem).into_response()),
        Ok(None) => None,
        Ok(Some(Credential::Bearer(token))) => state.api.token_index(token),
        Ok(Some(Credential::Session(id))) => match state.store.session(id).await {
            Ok(digest) => digest.and_then(|d| state.api.token_index_by_digest(&d)),
            Err(e) => return Err(ApiError::from(e).into_response()),
        },
    };
    match found {
        Some(index) => Ok(Caller::Token(index)),
        None => Err(unauthorized(headers)),
    }
}

fn unauthorized(headers: &HeaderMap) -> Response {
    if crate::api::routes::wants_html(headers) {
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

/// The request's one credential: the bearer token if there is an
/// `Authorization` header, else the session cookie. More than one of a
/// kind is an error (its message says what to send).
fn credential(headers: &HeaderMap) -> Result<Option<Credential<'_>>, &'static str> {
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorizations.next() {
        if authorizations.next().is_some() {
            return Err("send one Authorization header");
        }
        // Another scheme, or no token, is simply not a valid credential.
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map_or("", |(_, token)| token.trim());
        return Ok(Some(Credential::Bearer(token)));
    }
    let mut sessions = session_cookies(headers);
    let Some(id) = sessions.next() else {
        return Ok(None);
    };
    if sessions.next().is_some() {
        return Err("send one session cookie");
    }
    Ok(Some(Credential::Session(id)))
}

/// Every value of the session cookie, across all `Cookie` headers.
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// What a session stores of its token: enough to tell which token it was,
/// useless to anyone who reads the store.
pub fn token_digest(token: &str) -> String {
    crate::engine::callbacks::hex(&Sha256::digest(token.as_bytes()))
}

impl ApiSettings {
    /// The position of `token` among the configured tokens.
    pub fn token_index(&self, token: &str) -> Option<usize> {
        self.find_token(|t| t.as_bytes().ct_eq(token.as_bytes()).into())
    }

    /// The position of the token whose [`token_digest`] is `digest`.
    pub fn token_index_by_digest(&self, digest: &str) -> Option<usize> {
        self.find_token(|t| token_digest(t).as_bytes().ct_eq(digest.as_bytes()).into())
    }

    /// Checks every token, even after a match, so the time taken does not
    /// tell which one matched; `matches` compares in constant time
    /// (`subtle`), so it does not tell how much of a token was right.
    fn find_token(&self, matches: impl Fn(&str) -> bool) -> Option<usize> {
        self.tokens.iter().enumerate().fold(
            None,
            |found, (i, t)| if matches(t) { Some(i) } else { found },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_wins_over_the_cookie() {
        for value in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            let h = headers(&[
                (header::AUTHORIZATION, value),
                (header::COOKIE, "dispatcher_session=xyz"),
            ]);
            assert_eq!(credential(&h), Ok(Some(Credential::Bearer("abc"))));
        }
        let basic = headers(&[(header::AUTHORIZATION, "Basic abc")]);
        assert_eq!(credential(&basic), Ok(Some(Credential::Bearer(""))));
    }

    #[test]
    fn one_credential_per_request() {
        let cookie = headers(&[(header::COOKIE, "theme=dark; dispatcher_session=xyz")]);
        assert_eq!(credential(&cookie), Ok(Some(Credential::Session("xyz"))));
        let two_cookies = headers(&[
            (header::COOKIE, "dispatcher_session=a"),
            (header::COOKIE, "dispatcher_session=b"),
        ]);
        assert!(credential(&two_cookies).is_err());
        let two_headers = headers(&[
            (header::AUTHORIZATION, "Bearer a"),
            (header::AUTHORIZATION, "Bearer b"),
        ]);
        assert!(credential(&two_headers).is_err());
        assert_eq!(credential(&HeaderMap::new()), Ok(None));
    }
}
