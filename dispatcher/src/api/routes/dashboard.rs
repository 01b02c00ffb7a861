//! The dashboard's routes: `/` and the login form. `/jobs/{id}` serves
//! the job page from [`super::jobs::get`] when a browser asks for HTML.

use std::net::IpAddr;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::jobs::{list_filter, FilterText};
use super::{ApiError, AppState};
use crate::api::auth::{session_cookies, token_digest, COOKIE};
use crate::api::dashboard::charts::CHART_MINUTES;
use crate::api::dashboard::pages::{self, Filter};

/// Jobs on the index page.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IndexQuery {
    /// Only jobs in this status (empty: any).
    status: Option<String>,
    /// Only jobs of this kind (empty: any).
    kind: Option<String>,
    /// Only jobs with this tag (empty: any).
    tag: Option<String>,
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
    let list = list_filter(FilterText {
        status: given(query.status),
        kind: given(query.kind),
        tag: given(query.tag),
        parent: None,
        cursor: given(query.cursor),
    })?;
    let (page, stats, pools, activity, flow) = tokio::try_join!(
        state.store.list(&list, PAGE_SIZE),
        state.store.stats(),
        state.store.pool_stats(),
        state.store.activity(CHART_MINUTES),
        state
            .store
            .flow_overview(crate::api::dashboard::flow::TOP_KEYS)
    )?;
    let filter = Filter {
        status: list.status,
        kind: list.kind.as_ref().map(|k| k.to_string()),
        tag: list.tag.clone(),
    };
    let mut html = pages::jobs_page(&filter, &page, &stats, &pools, &activity);
    // Flow control's section goes above the filters; spliced in here so
    // the page builder keeps its signature for its other users.
    if let Some(at) = html.find("<form class=\"filters\"") {
        html.insert_str(at, &crate::api::dashboard::flow::flow_section(&flow));
    }
    Ok(Html(html))
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

/// `POST /login`: checks the token and opens a session: a random id,
/// stored with an expiry, goes in the cookie (never the token). Attempts
/// are limited per client address, and a cross-site post is refused.
#[utoipa::path(post, path = "/login", tag = "dashboard",
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "logged in: the session cookie is set; to the dashboard"),
        (status = 401, description = "wrong token: the form again", content_type = "text/html", body = String),
        (status = 403, description = "posted from another site", body = ApiError),
        (status = 415, description = "not a form (`application/x-www-form-urlencoded`)"),
        (status = 422, description = "the form lacks `token`"),
        (status = 429, description = "too many attempts from this address; see Retry-After", body = ApiError),
        (status = 503, description = "store unavailable", body = ApiError)))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(refused) = same_site(&headers) {
        return refused.into_response();
    }
    if state.api.tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    let client = client_address(&headers, &extensions, state.api.limits.trust_fly_client_ip);
    if let Err(refused) = state.limits.admit_login(client) {
        return refused.into_response();
    }
    let token = form.token.trim();
    if state.api.token_index(token).is_none() {
        tracing::info!(%client, "dashboard login refused: wrong token");
        let page = pages::login_page(Some(
            "That token is not one of this dispatcher's API tokens.",
        ));
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }
    let session = crate::engine::callbacks::hex(&rand::random::<[u8; 32]>());
    let ttl = state.api.limits.session_ttl;
    if let Err(e) = state
        .store
        .open_session(&session, &token_digest(token), ttl)
        .await
    {
        return ApiError::from(e).into_response();
    }
    let max_age = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
    let cookie = session_cookie(&session, behind_https(&headers), max_age);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// `POST /logout`: ends the session in the store (the cookie stops
/// working everywhere, copies included) and clears the cookie.
#[utoipa::path(post, path = "/logout", tag = "dashboard",
    responses(
        (status = 303, description = "the session is ended and its cookie cleared; to the login form"),
        (status = 403, description = "posted from another site", body = ApiError),
        (status = 503, description = "store unavailable", body = ApiError)))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refused) = same_site(&headers) {
        return refused.into_response();
    }
    for session in session_cookies(&headers) {
        if let Err(e) = state.store.close_session(session).await {
            return ApiError::from(e).into_response();
        }
    }
    let cookie = session_cookie("", behind_https(&headers), 0);
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(crate::api::auth::LOGIN_PATH),
    )
        .into_response()
}

/// Refuses a form posted from another site. Browsers say where a request
/// comes from in `Sec-Fetch-Site` (all current ones) or `Origin`; a
/// request with neither is not from a browser's cross-site form.
fn same_site(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let cross_site = match (text("sec-fetch-site"), text("origin")) {
        (Some(site), _) => !matches!(site, "same-origin" | "none"),
        (None, Some(origin)) => {
            let host = origin.split_once("://").map(|(_, host)| host);
            host.is_none() || host != text("host")
        }
        (None, None) => false,
    };
    if cross_site {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "posted from another site; use the dashboard's own form",
        ));
    }
    Ok(())
}

/// The client's address: Fly's proxy names it in `Fly-Client-IP` (trusted
/// only when configured: anyone can send that header elsewhere), else the
/// connection's peer.
fn client_address(headers: &HeaderMap, extensions: &Extensions, trust_fly: bool) -> IpAddr {
    let from_fly = || {
        headers
            .get("fly-client-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
    };
    trust_fly
        .then(from_fly)
        .flatten()
        .or_else(|| crate::api::server::peer(extensions).map(|addr| addr.ip()))
        .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// `HttpOnly` so page scripts cannot read the session id; `SameSite=Strict`
/// so other sites cannot use it; `Secure` when the request came over
/// HTTPS (Fly's proxy says so in `X-Forwarded-Proto`).
fn session_cookie(value: &str, secure: bool, max_age: u32) -> String {
    let mut cookie =
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}
