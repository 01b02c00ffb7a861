//! The dashboard's routes: `/` and the login form. `/jobs/{id}` serves
//! the job page from [`super::jobs::get`] when a browser asks for HTML.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::jobs::list_filter;
use super::{ApiError, AppState};
use crate::auth::COOKIE;
use crate::dashboard::pages::{self, Filter};

/// Jobs on the index page.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IndexQuery {
    /// Only jobs in this status (empty: any).
    status: Option<String>,
    /// Only jobs of this kind (empty: any).
    kind: Option<String>,
    /// The next page: the `older jobs` link's cursor.
    cursor: Option<String>,
}

/// `GET /`: the dashboard.
#[utoipa::path(get, path = "/", tag = "dashboard", params(IndexQuery),
    responses(
        (status = 200, description = "the jobs table with a summary, as HTML", content_type = "text/html", body = String),
        (status = 303, description = "a browser without a valid session is sent to /login"),
        (status = 400, body = ApiError)))]
pub async fn index(
    State(state): State<AppState>,
    query: Result<Query<IndexQuery>, QueryRejection>,
) -> Result<Html<String>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    // The form sends empty fields for "any".
    let given = |value: Option<String>| {
        value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let list = list_filter(given(query.status), given(query.kind), given(query.cursor))?;
    let (page, stats, pools) = tokio::try_join!(
        state.store.list(&list, PAGE_SIZE),
        state.store.stats(),
        state.store.pool_stats()
    )?;
    let filter = Filter {
        status: list.status,
        kind: list.kind.as_ref().map(|k| k.to_string()),
    };
    Ok(Html(pages::jobs_page(&filter, &page, &stats, &pools)))
}

/// `GET /login`: the form (straight to the dashboard when no tokens are
/// configured).
#[utoipa::path(get, path = "/login", tag = "dashboard",
    responses(
        (status = 200, description = "the login form", content_type = "text/html", body = String),
        (status = 303, description = "no tokens configured: to the dashboard")))]
pub async fn login_form(State(state): State<AppState>) -> Response {
    if state.api.tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    Html(pages::login_page(None)).into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginForm {
    /// One of the API tokens.
    token: String,
}

/// `POST /login`: checks the token and stores it in the session cookie.
#[utoipa::path(post, path = "/login", tag = "dashboard",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "logged in: the session cookie is set; to the dashboard"),
        (status = 401, description = "wrong token: the form again", content_type = "text/html", body = String)))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim();
    if !state.api.tokens.is_empty() && !state.api.accepts(token) {
        let page = pages::login_page(Some(
            "That token is not one of this dispatcher's API tokens.",
        ));
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    if !token.chars().all(is_cookie_safe) {
        let page = pages::login_page(Some(
            "That token has characters a cookie cannot hold; use the API with it instead.",
        ));
        return (StatusCode::BAD_REQUEST, Html(page)).into_response();
    }
    let cookie = session_cookie(token, behind_https(&headers), None);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: forgets the session cookie.
#[utoipa::path(post, path = "/logout", tag = "dashboard",
    responses((status = 303, description = "the session cookie is cleared; to the login form")))]
pub async fn logout(headers: HeaderMap) -> Response {
    let cookie = session_cookie("", behind_https(&headers), Some(0));
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(crate::auth::LOGIN_PATH),
    )
        .into_response()
}

/// `HttpOnly` so page scripts cannot read the token; `SameSite=Strict` so
/// other sites cannot use it; `Secure` when the request came over HTTPS
/// (Fly's proxy says so in `X-Forwarded-Proto`).
fn session_cookie(value: &str, secure: bool, max_age: Option<u32>) -> String {
    let mut cookie = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// RFC 6265's cookie-octet: printable ASCII but space, `"`, `,`, `;`, `\`.
fn is_cookie_safe(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | ',' | ';' | '\\')
}
