//! The HTTP surface: the Machines API under `/v1/apps/{app}/machines` and
//! the mock's own `/_mock/*` controls, plus the middleware every route
//! shares (request ids, call counting, auth, slow-response faults).

mod lease;
mod lifecycle;
mod machines;
mod mock;
mod ps;
mod wait;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth;
use crate::error::ApiError;
use crate::ids;
use crate::server::Shared;

/// The whole API.
pub fn router(shared: Arc<Shared>) -> Router {
    let base = "/v1/apps/{app}/machines";
    let machine = "/v1/apps/{app}/machines/{id}";
    let api = Router::new()
        .route(base, get(machines::list).post(machines::create))
        .route(
            machine,
            get(machines::get)
                .post(machines::update)
                .delete(machines::destroy),
        )
        .route(&format!("{machine}/start"), post(lifecycle::start))
        .route(&format!("{machine}/stop"), post(lifecycle::stop))
        .route(&format!("{machine}/suspend"), post(lifecycle::suspend))
        .route(&format!("{machine}/restart"), post(lifecycle::restart))
        .route(&format!("{machine}/signal"), post(lifecycle::signal))
        .route(&format!("{machine}/cordon"), post(lifecycle::cordon))
        .route(&format!("{machine}/uncordon"), post(lifecycle::cordon))
        .route(&format!("{machine}/wait"), get(wait::wait))
        .route(&format!("{machine}/events"), get(machines::events))
        .route(&format!("{machine}/ps"), get(ps::ps))
        .route(&format!("{machine}/versions"), get(machines::versions))
        .route(
            &format!("{machine}/lease"),
            get(lease::show).post(lease::acquire).delete(lease::release),
        )
        .route(&format!("{machine}/metadata"), get(machines::metadata))
        .route(
            &format!("{machine}/metadata/{{key}}"),
            post(machines::set_metadata).delete(machines::delete_metadata),
        )
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            slow_responses,
        ));
    let control = Router::new()
        .route("/_mock/stats", get(mock::stats))
        .route("/_mock/faults", get(mock::faults).post(mock::set_faults));
    api.merge(control)
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            auth::require_token,
        ))
        .route_layer(middleware::from_fn_with_state(shared.clone(), count_calls))
        .layer(middleware::from_fn(request_id))
        .with_state(shared)
}

/// A path the API does not have: a JSON error like every other, so
/// clients that decode error bodies never meet an empty one.
async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("not found: no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Every answer carries a `fly-request-id`, as the real API's do.
async fn request_id(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&format!("{}-lcl", ids::ulid())) {
        response.headers_mut().insert("fly-request-id", value);
    }
    response
}

/// Counts calls per route for [`crate::Stats::calls`].
async fn count_calls(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(path) = request.extensions().get::<MatchedPath>() {
        shared
            .counters
            .call(format!("{} {}", request.method(), path.as_str()));
    }
    next.run(request).await
}

/// The `slow_response_ms` fault (API routes only, never `/_mock/*`).
async fn slow_responses(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let delay = shared.faults.response_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

/// The lease nonce a mutating call presents.
fn lease_nonce(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(::machines::LEASE_NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
}

/// A required JSON body; 400 when it does not parse.
fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

/// An optional JSON body: empty means `T::default()`.
fn optional_json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(body)
    }
}

/// The value of query parameter `name` in a parsed query.
fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A boolean query flag (`true`/`1`; absent is false).
fn query_flag(query: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match query_value(query, name) {
        None => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}
